"""The metrics endpoint and textfile of the daemons, on loopback.

The exposition is compared with what ``-P --json`` (the control socket's
stats) says at the same moment, parsed strictly (one HELP and TYPE per
family, its samples together), and checked against the names the
monitoring assets use (files/prometheus/metric_names.txt).
"""

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from multicast_proxy import cli, daemon, metrics, relay_config as config
from multicast_proxy.server import Group
from test_daemon import (FILES_DIR, drain, free_port, free_udp_port, lo_receiver, lo_sender, random_group, wait_for,
                         write_client, write_server)

NAMES_FILE = os.path.join(FILES_DIR, "prometheus", "metric_names.txt")
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def free_tcp_port():
    return free_port(socket.SOCK_STREAM)


def parse_exposition(text):
    """{name: {frozenset(labels): value}} of a text exposition; AssertionError for anything out of format."""
    families = {}
    types = {}
    current = None
    seen_families = []
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ")[2]
            assert name not in types, "second HELP for %s" % name
            current = name
            seen_families.append(name)
            continue
        if line.startswith("# TYPE "):
            _h, _t, name, kind = line.split(" ")
            assert name == current and kind in ("counter", "gauge"), line
            types[name] = kind
            families[name] = {}
            continue
        match = _SAMPLE.match(line)
        assert match, "not a sample line: %r" % line
        name, label_text, value = match.groups()
        assert name == current, "%s sample outside its family (in %s)" % (name, current)
        label_set = frozenset(_LABEL.findall(label_text or ""))
        assert label_set not in families[name], "duplicate series %s%s" % (name, label_text)
        families[name][label_set] = float(value)
    for name, kind in types.items():
        assert (kind == "counter") == name.endswith("_total"), "%s: counters and only counters end in _total" % name
    return families


def value(families, name, **label_values):
    wanted = frozenset((key, str(val)) for key, val in label_values.items())
    matches = [v for labels, v in families[name].items() if wanted <= labels]
    assert len(matches) == 1, (name, label_values, families[name])
    return matches[0]


def scrape(port, path="/metrics", method="GET"):
    request = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), method=method)
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, response.headers, response.read().decode("utf-8")


class Daemon:
    """A daemon subprocess with -R flags."""

    def __init__(self, directory, side, *flags):
        self.directory, self.side = str(directory), side
        self.env = dict(os.environ, PYTHONPATH=FILES_DIR, MULTICAST_CONF_DIR=self.directory)
        self.env.pop("NOTIFY_SOCKET", None)
        program = "multis_admin" if side == "server" else "multic_admin"
        self.program = program
        self.output = None
        self.proc = subprocess.Popen([sys.executable, "-m", "multicast_proxy", program, "-R"] + list(flags),
                                     env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     universal_newlines=True)
        wait_for(lambda: self.proc.poll() is not None or daemon.daemon_running(side, self.directory),
                 "%s daemon to answer ping" % side)
        assert self.proc.poll() is None, self.proc.communicate()

    def stats(self):
        return daemon.request(self.side, {"cmd": "stats"}, self.directory)

    def admin(self, *args):
        return subprocess.run([sys.executable, "-m", "multicast_proxy", self.program] + list(args), env=self.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, check=False)

    def stop(self):
        """Stop the daemon once (the fixture stops it again at the end); its (stdout, stderr)."""
        if self.output is not None:
            return self.output
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.output = self.proc.communicate(timeout=20)
            return self.output
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.fixture
def daemons():
    started = []

    def start(directory, side, *flags):
        started.append(Daemon(directory, side, *flags))
        return started[-1]
    yield start
    for one in started:
        one.stop()


def known_names():
    with open(NAMES_FILE) as handle:
        return set(line.strip() for line in handle if line.strip() and not line.startswith("#"))


def test_server_and_client_metrics_match_their_stats(tmp_path, daemons):
    """A stream through a server and a client on loopback: every figure equals the stats at the same time."""
    group, group_port, server_port = random_group(), free_udp_port(), free_udp_port()
    write_server(tmp_path / "s", group, group_port, server_port, ["127.0.0.1", "127.0.0.2"])
    write_client(tmp_path / "c", [{"server_ip": "127.0.0.1", "server_port": server_port, "group_ip": group,
                                   "group_port": group_port}])
    server_metrics, client_metrics = free_tcp_port(), free_tcp_port()
    textfile = tmp_path / "prom" / "server.prom"
    textfile.parent.mkdir()
    server = daemons(tmp_path / "s", "server", "--metrics", "127.0.0.1:%d" % server_metrics,
                     "--metrics-detail", "member", "--metrics-textfile", str(textfile))
    client = daemons(tmp_path / "c", "client", "--metrics", str(client_metrics))
    receiver = lo_receiver(group, group_port)
    sender = lo_sender()
    try:
        for number in range(50):
            sender.sendto(b"datagram %03d" % number, (group, group_port))
        wait_for(lambda: server.stats()["groups"][0]["rx_packets"] == 50, "the server to relay 50")
        # Both members are this host: the client gets every frame twice (the second counts as a duplicate).
        wait_for(lambda: client.stats()["entries"][0]["rx_packets"] == 100, "the client to receive 100")
        drain(receiver)
    finally:
        receiver.close()
        sender.close()

    status, headers, body = scrape(server_metrics)
    stats = server.stats()
    assert status == 200 and headers["Content-Type"] == metrics.CONTENT_TYPE
    families = parse_exposition(body)
    (g,) = stats["groups"]
    assert value(families, "multicast_proxy_server_groups") == 1
    assert value(families, "multicast_proxy_server_received_datagrams_total", group=group) == g["rx_packets"] == 50
    assert value(families, "multicast_proxy_server_received_bytes_total", group=group) == g["rx_bytes"] == 50 * 12
    assert value(families, "multicast_proxy_server_group_members", group=group) == 2
    assert value(families, "multicast_proxy_server_group_up", group=group) == 1
    assert value(families, "multicast_proxy_server_group_info", group=group, interface="lo", mode="udp",
                 group_port=group_port, server_port=server_port) == 1
    for member in g["members"]:
        ip = member["member_ip"]
        assert value(families, "multicast_proxy_server_member_sent_copies_total", group=group, member=ip) \
            == member["tx_packets"]
        assert value(families, "multicast_proxy_server_member_sent_bytes_total", group=group, member=ip) \
            == member["tx_bytes"]
        assert value(families, "multicast_proxy_server_member_send_errors_total", group=group, member=ip) \
            == member["send_errors"]
    assert value(families, "multicast_proxy_server_sent_copies_total", group=group) \
        == sum(m["tx_packets"] for m in g["members"]) == 100
    for reason, count in g["drops"].items():
        assert value(families, "multicast_proxy_server_dropped_datagrams_total", group=group, reason=reason) == count
    assert value(families, "multicast_proxy_start_time_seconds", side="server") == pytest.approx(stats["started"], abs=1)
    assert value(families, "multicast_proxy_auth_keys_loaded", side="server") == 0
    assert value(families, "multicast_proxy_build_info", side="server", version=metrics.__version__) == 1

    status, _headers, body = scrape(client_metrics)
    families_c = parse_exposition(body)
    stats_c = client.stats()
    (entry,) = stats_c["entries"]
    labels = dict(server="127.0.0.1", server_port=server_port, group=group, group_port=group_port)
    for name, key in (("received_frames_total", "rx_packets"), ("received_bytes_total", "rx_bytes"),
                      ("delivered_datagrams_total", "delivered_packets"), ("delivered_bytes_total", "delivered_bytes"),
                      ("lost_frames", "lost"), ("duplicate_frames_total", "duplicates"),
                      ("reordered_frames_total", "reordered")):
        assert value(families_c, "multicast_proxy_client_" + name, **labels) == entry[key], name
    assert entry["duplicates"] == 50
    for reason, count in stats_c["drops"].items():
        assert value(families_c, "multicast_proxy_client_dropped_frames_total", reason=reason) == count
    assert value(families_c, "multicast_proxy_client_entries") == 1

    # The names are the ones the rules and the dashboard use, no more, no fewer (keys add two).
    produced = set(families) | set(families_c)
    missing = known_names() - produced - {"multicast_proxy_server_auth_send_key_id",
                                          "multicast_proxy_client_auth_accepted_frames_total"}
    assert not missing, "named in metric_names.txt, not produced: %s" % sorted(missing)
    assert not produced - known_names(), "produced, not in metric_names.txt: %s" % sorted(produced - known_names())

    # The textfile holds the same exposition, complete, readable by the collector's user.
    wait_for(textfile.exists, "the textfile")
    written = parse_exposition(textfile.read_text())
    assert value(written, "multicast_proxy_server_received_datagrams_total", group=group) == 50
    assert textfile.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in textfile.parent.iterdir()] == ["server.prom"], "no temporary file is left behind"
    reply = server.stats()["metrics"]
    assert reply["serving"] and reply["listen"] == "127.0.0.1:%d" % server_metrics and reply["detail"] == "member"
    assert reply["textfile"] == str(textfile) and reply["textfile_error"] is None and reply["textfile_written"] > 0
    text = server.admin("-P")
    assert "metrics: serving http://127.0.0.1:%d/metrics" % server_metrics in text.stdout


def test_reloads_are_counted_and_move_the_endpoint(tmp_path, daemons):
    group = random_group()
    write_server(tmp_path, group, free_udp_port(), free_udp_port(), ["127.0.0.1"])
    first, second = free_tcp_port(), free_tcp_port()
    server = daemons(tmp_path, "server")
    assert server.stats()["metrics"] == dict(server.stats()["metrics"], listen=None, serving=False)
    result = server.admin("--set", "metrics_listen=127.0.0.1:%d" % first)
    assert result.returncode == 0, result.stderr
    families = parse_exposition(scrape(first)[2])
    assert value(families, "multicast_proxy_config_reloads_total", side="server", result="success") == 1
    assert value(families, "multicast_proxy_config_last_reload_success", side="server") == 1
    # A broken file: counted as a failure, the endpoint and the groups stay.
    (tmp_path / config.SERVER_CONFIG_NAME).write_bytes(b'{"multi_group_array": [}')
    assert not server.stats() is None and not daemon.request("server", {"cmd": "reload"}, str(tmp_path))["ok"]
    time.sleep(metrics.CACHE_SECONDS)
    families = parse_exposition(scrape(first)[2])
    assert value(families, "multicast_proxy_config_reloads_total", side="server", result="failure") == 1
    assert value(families, "multicast_proxy_config_last_reload_success", side="server") == 0
    assert value(families, "multicast_proxy_config_last_reload_timestamp_seconds", side="server") \
        == pytest.approx(time.time(), abs=5)
    assert server.stats()["reloads"]["failure"] == 1
    # Moved by a reload: the old port is closed, the new one serves.
    write_server(tmp_path, group, free_udp_port(), free_udp_port(), ["127.0.0.1"])
    cfg = json.loads((tmp_path / config.SERVER_CONFIG_NAME).read_text())
    cfg["metrics_listen"] = "127.0.0.1:%d" % second
    (tmp_path / config.SERVER_CONFIG_NAME).write_text(json.dumps(cfg))
    reply = daemon.request("server", {"cmd": "reload"}, str(tmp_path))
    assert reply["ok"] and reply["changes"]["metrics"] == "endpoint http://127.0.0.1:%d/metrics" % second
    with pytest.raises(urllib.error.URLError):
        scrape(first)
    assert scrape(second)[0] == 200
    # Removed: no endpoint at all.
    assert server.admin("--set", "metrics_listen=").returncode == 0
    with pytest.raises(urllib.error.URLError):
        scrape(second)


def test_a_taken_port_is_reported_and_the_relay_goes_on(tmp_path, daemons):
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    port = blocker.getsockname()[1]
    try:
        group, group_port = random_group(), free_udp_port()
        write_server(tmp_path, group, group_port, free_udp_port(), ["127.0.0.1"])
        server = daemons(tmp_path, "server", "--metrics", "127.0.0.1:%d" % port)
        status = server.stats()["metrics"]
        assert not status["serving"] and "Address already in use" in status["error"] and "another program" in \
            status["error"]
        assert "metrics: NOT serving on 127.0.0.1:%d" % port in server.admin("-P").stdout
        sender = lo_sender()
        sender.sendto(b"still relayed", (group, group_port))
        sender.close()
        wait_for(lambda: server.stats()["groups"][0]["rx_packets"] == 1, "the relay to go on")
    finally:
        blocker.close()


def test_http_answers(tmp_path, daemons):
    write_server(tmp_path, random_group(), free_udp_port(), free_udp_port(), ["127.0.0.1"])
    port = free_tcp_port()
    daemons(tmp_path, "server", "--metrics", str(port))
    status, _headers, body = scrape(port, "/")
    assert status == 200 and "/metrics" in body
    status, headers, body = scrape(port, "/metrics", "HEAD")
    assert status == 200 and body == "" and headers["Content-Type"] == metrics.CONTENT_TYPE
    assert scrape(port, "/metrics?name[]=x")[0] == 200
    for path, method, code in (("/nothing", "GET", 404), ("/metrics", "POST", 405), ("/metrics", "DELETE", 405)):
        with pytest.raises(urllib.error.HTTPError) as failure:
            scrape(port, path, method)
        assert failure.value.code == code
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    # Far more than the limit: answered, and the rest read and thrown away, so the peer reads the
    # whole answer and then the end of the connection (not a reset for the unread bytes).
    raw.sendall(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * (4 * metrics.MAX_REQUEST))
    raw.shutdown(socket.SHUT_WR)
    answer = b""
    while True:
        data = raw.recv(4096)
        if not data:
            break
        answer += data
    assert answer.startswith(b"HTTP/1.1 431 ") and answer.endswith(b"request too large\n")
    raw.close()
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    raw.sendall(b"\x00\xff garbage\r\n\r\n")
    assert raw.recv(100).startswith(b"HTTP/1.1 400 ")
    raw.close()


def test_connections_beyond_the_limit_are_closed_and_idle_ones_do_not_block(tmp_path, daemons):
    write_server(tmp_path, random_group(), free_udp_port(), free_udp_port(), ["127.0.0.1"])
    port = free_tcp_port()
    server = daemons(tmp_path, "server", "--metrics", str(port))
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _slot in range(metrics.MAX_CONNECTIONS)]
    try:
        for sock in idle:
            sock.sendall(b"GET /metr")     # half a request, held open
        extra = socket.create_connection(("127.0.0.1", port), timeout=5)
        try:
            extra.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
            answer = extra.recv(100)
        except ConnectionResetError:
            answer = b""    # closed before the request was read: a reset instead of an end of file
        assert answer == b"", "a connection beyond the limit is closed without an answer"
        extra.close()
        wait_for(lambda: server.stats()["metrics"]["refused_connections"] >= 1, "the refusal to be counted")
        assert server.stats()["ok"], "the control socket still answers"
    finally:
        for sock in idle:
            sock.close()
    wait_for(lambda: _scrapes(port), "scrapes to work again once the idle connections closed")


def _scrapes(port):
    try:
        return scrape(port)[0] == 200
    except (OSError, urllib.error.URLError):
        return False


def test_renders_are_cached_for_a_second(tmp_path, daemons):
    write_server(tmp_path, random_group(), free_udp_port(), free_udp_port(), ["127.0.0.1"])
    port = free_tcp_port()
    server = daemons(tmp_path, "server", "--metrics", str(port))
    bodies = [scrape(port)[2] for _scrape in range(5)]
    assert len(set(bodies)) == 1, "scrapes within CACHE_SECONDS get the same body"
    assert server.stats()["metrics"]["scrapes"] == 5
    time.sleep(metrics.CACHE_SECONDS + 0.1)
    families = parse_exposition(scrape(port)[2])
    assert value(families, "multicast_proxy_metrics_render_seconds", side="server") > 0


def test_a_textfile_that_cannot_be_written_is_reported(tmp_path, daemons):
    write_server(tmp_path, random_group(), free_udp_port(), free_udp_port(), ["127.0.0.1"])
    target = tmp_path / "missing-dir" / "server.prom"
    server = daemons(tmp_path, "server", "--metrics-textfile", str(target))
    wait_for(lambda: server.stats()["metrics"]["textfile_error"], "the textfile error")
    status = server.stats()["metrics"]
    assert "cannot write %s" % target in status["textfile_error"] and not target.exists()
    assert "metrics: textfile NOT written" in server.admin("-P").stdout


def test_run_flags_are_checked():
    parsed = cli.parse("multis_admin", ["-R", "--metrics", "9471", "--metrics-detail", "member"])
    assert parsed.settings == {"metrics_listen": "127.0.0.1:9471", "metrics_detail": "member"}
    assert cli.parse("multic_admin", ["-R", "--metrics=0.0.0.0:9472"]).settings == {"metrics_listen": "0.0.0.0:9472"}
    for program, argv, words in (
            ("multis_admin", ["-R", "--metrics", "300.1.1.1:80"], "not an IPv4 address"),
            ("multis_admin", ["-R", "--metrics", "[::1]:80"], "IPv6 is not supported"),
            ("multis_admin", ["-R", "--metrics", "127.0.0.1:70000"], "from 1 to 65535"),
            ("multis_admin", ["-R", "--metrics-detail", "all"], "use one of group, member"),
            ("multis_admin", ["-R", "--metrics-textfile", "relative.prom"], "absolute path ending in .prom"),
            ("multis_admin", ["-R", "--metrics-textfile", "/tmp/x.txt"], "absolute path ending in .prom"),
            ("multis_admin", ["-R", "--metrics", ""], "needs a value"),
            ("multic_admin", ["-R", "--metrics-detail", "member"], "is not used with -R"),
            ("multis_admin", ["-P", "--metrics", "9471"], "is not used with -P")):
        with pytest.raises(cli.UsageError) as failure:
            cli.parse(program, argv)
        assert words in str(failure.value), (argv, str(failure.value))


@pytest.mark.parametrize("text, error", [
    ('"metrics_listen": "localhost:80"', "not an IPv4 address"),
    ('"metrics_listen": true', "found a boolean"),
    ('"metrics_listen": "239.1.1.1:9000"', "multicast address"),
    ('"metrics_textfile": "/var/lib/x/../y.prom"', "without '.', '..'"),
    ('"metrics_textfile": "/x\\ny.prom"', "control characters"),
    ('"metrics_detail": "members"', "use one of"),
])
def test_config_settings_are_validated(text, error):
    with pytest.raises(config.ConfigError) as failure:
        config.load_server_config('{"multi_group_array": [], %s}' % text)
    assert error in str(failure.value)


def test_config_settings_round_trip():
    cfg = config.load_server_config('{"multi_group_array": [], "metrics_listen": 9471, "metrics_detail": "group", '
                                    '"metrics_textfile": "/var/lib/prometheus/node-exporter/m.prom"}')
    # A bare port is written with its address; the default detail is not written back.
    assert cfg == {"multi_group_array": [], "metrics_listen": "127.0.0.1:9471",
                   "metrics_textfile": "/var/lib/prometheus/node-exporter/m.prom"}
    assert config.set_settings(cfg, config.SERVER, {"metrics_listen": "", "metrics_textfile": ""}) \
        == {"multi_group_array": []}


class _FanOut:
    def member_set(self, members, port):
        return (members, port)


def test_group_sums_never_go_back_when_members_leave():
    group = Group("239.1.1.1", 5000, "lo", 0)
    fan_out = _FanOut()
    group.set_members(["10.0.0.1", "10.0.0.2"], 5001, fan_out)
    group.rx_packets, group.rx_bytes = 10, 1000
    group.member_failed(1, 100, "No route to host")
    assert group.totals() == (19, 1900, 1)
    group.set_members(["10.0.0.1", "10.0.0.3"], 5001, fan_out)     # .2 leaves, .3 joins late
    group.rx_packets, group.rx_bytes = 15, 1500
    as_dict = dict((m["member_ip"], m) for m in group.as_dict()["members"])
    assert (as_dict["10.0.0.1"]["tx_packets"], as_dict["10.0.0.3"]["tx_packets"]) == (15, 5)
    assert group.totals() == (15 + 5 + 9, 1500 + 500 + 900, 1)


def test_label_values_are_escaped():
    assert metrics.labels(b='x"y', a="back\\slash\nnew") == '{a="back\\\\slash\\nnew",b="x\\"y"}'
    assert metrics.labels() == ""


def test_a_textfile_nobody_updates_is_removed(tmp_path, daemons):
    """Turned off, moved or at the daemon's stop, the file it wrote goes: a collector must not export stale figures."""
    write_server(tmp_path, random_group(), free_udp_port(), free_udp_port(), ["127.0.0.1"])
    first, second = tmp_path / "first.prom", tmp_path / "second.prom"
    server = daemons(tmp_path, "server")
    assert server.admin("--set", "metrics_textfile=%s" % first).returncode == 0
    wait_for(first.exists, "the first textfile")
    assert server.admin("--set", "metrics_textfile=%s" % second).returncode == 0
    wait_for(second.exists, "the second textfile")
    assert not first.exists()
    assert server.admin("--set", "metrics_textfile=").returncode == 0
    wait_for(lambda: not second.exists(), "the textfile to go with its setting")
    assert server.admin("--set", "metrics_textfile=%s" % second).returncode == 0
    wait_for(second.exists, "the textfile again")
    server.stop()
    assert not second.exists(), "a stopped daemon's textfile is removed"
