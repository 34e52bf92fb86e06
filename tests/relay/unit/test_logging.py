"""Issue 14.8: the daemons' logs stay bounded.

Lines that others can cause at will (a local user joining and leaving a
group, a remote sender's bad frames) are rate-limited per kind with a count of
what was suppressed, and the log file is rotated by size.
"""

import os
import socket
import stat
import struct

import pytest

from multicast_proxy import client, daemon, netinfo, relay_config as config
from multicast_proxy.client import ClientDaemon
from multicast_proxy.server import ServerDaemon

from test_daemon import free_udp_port, random_group


class Recorder:
    """A logger stand-in that keeps the formatted lines."""

    def __init__(self):
        self.lines = []

    def info(self, fmt, *args):
        self.lines.append(("INFO", fmt % args))

    def warning(self, fmt, *args):
        self.lines.append(("WARNING", fmt % args))


class FakeDeliverySocket:
    """What refresh_delivery keeps per interface; the test's interfaces do not exist."""

    def close(self):
        pass


def log_lines(directory, side="client"):
    with open(os.path.join(str(directory), "%s_log.txt" % side)) as handle:
        return handle.read().splitlines()


@pytest.fixture(autouse=True)
def default_log_limits(monkeypatch):
    monkeypatch.delenv(daemon.LOG_MAX_BYTES_ENV, raising=False)
    monkeypatch.delenv(daemon.LOG_BACKUPS_ENV, raising=False)


def test_events_are_limited_per_kind_and_the_rest_is_counted_once():
    now = [0.0]
    recorder = Recorder()
    limiter = daemon.DropLog(recorder, interval=60, clock=lambda: now[0])
    written = [limiter.event("delivery", 3, "change %d", number) for number in range(10)]
    assert written == [True] * 3 + [False] * 7
    # Another kind has its own budget.
    assert limiter.event("other", 3, "first other")
    now[0] = 59.0
    limiter.flush()
    assert [line for _level, line in recorder.lines] == ["change 0", "change 1", "change 2", "first other"]
    now[0] = 60.0
    limiter.flush()
    assert recorder.lines[4:] == [("INFO", "7 more delivery messages suppressed in the last 60 s")]
    # Reported once: a later flush and the next line carry no count.
    now[0] = 200.0
    limiter.flush()
    assert limiter.event("delivery", 3, "change %d", 10)
    assert recorder.lines[5:] == [("INFO", "change 10")]


def test_a_count_not_flushed_yet_goes_with_the_next_line():
    now = [0.0]
    recorder = Recorder()
    limiter = daemon.DropLog(recorder, interval=60, clock=lambda: now[0])
    assert limiter.drop("malformed", "a") and not limiter.drop("malformed", "b")
    now[0] = 61.0
    assert limiter.drop("malformed", "c")
    now[0] = 200.0
    limiter.flush()
    assert recorder.lines == [("WARNING", "drop malformed: a"),
                              ("WARNING", "drop malformed: c (1 more malformed drops since the last message)")]


def join_request(group_ip):
    # struct ip_mreqn: group, local address, interface index.
    return socket.inet_aton(group_ip) + socket.inet_aton("0.0.0.0") + struct.pack("=i", socket.if_nametoindex("lo"))


def test_a_local_user_joining_and_leaving_a_group_cannot_flood_the_log(tmp_path, monkeypatch):
    """1000 delivery changes, each caused by a plain socket joining or leaving, give a bounded log."""
    now = [0.0]
    relay = ClientDaemon(str(tmp_path))
    relay.log = daemon.setup_logging("client", str(tmp_path))
    relay.drop_log = daemon.DropLog(relay.log, clock=lambda: now[0])
    # Not joined, the group is delivered on its route: an interface that is not lo.
    monkeypatch.setattr(netinfo, "interface_for_group", lambda group_ip, *args: "h1xroute0")
    monkeypatch.setattr(client, "open_delivery_socket", lambda interface: FakeDeliverySocket())
    group = random_group()
    relay.cfg = config.validate_client_config({"multi_server_info_array": [
        {"server_ip": "127.0.0.1", "server_port": free_udp_port(), "group_ip": group, "group_port": 5000}]})
    member = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        relay.apply_config(relay.cfg)
        entry = next(iter(relay.entries.values()))
        assert entry.interfaces == ("h1xroute0",)
        request = join_request(group)
        for change in range(1000):
            option = socket.IP_ADD_MEMBERSHIP if change % 2 == 0 else socket.IP_DROP_MEMBERSHIP
            member.setsockopt(socket.IPPROTO_IP, option, request)
            relay.refresh_delivery(relay.cfg)
            assert entry.interfaces == (("lo",) if change % 2 == 0 else ("h1xroute0",))
        now[0] = daemon.DROP_LOG_INTERVAL
        relay.drop_log.flush()
    finally:
        member.close()
        relay.close_data_sockets()
    lines = log_lines(tmp_path)
    delivered = [line for line in lines if "group %s:5000 from 127.0.0.1 delivered on" % group in line]
    # The line of the start and 1000 changes: the first DELIVERY_LOG_LINES are written, the rest counted.
    assert len(delivered) == client.DELIVERY_LOG_LINES
    summaries = [line for line in lines if "suppressed" in line]
    assert len(summaries) == 1
    assert summaries[0].endswith("%d more delivery messages suppressed in the last %d s"
                                 % (1001 - client.DELIVERY_LOG_LINES, daemon.DROP_LOG_INTERVAL))
    assert len(lines) < client.DELIVERY_LOG_LINES + 5


def test_the_event_loop_reports_suppressed_drops_when_the_interval_ends(tmp_path):
    relay = ServerDaemon(str(tmp_path))
    relay.start()
    now = [0.0]
    relay.drop_log.clock = lambda: now[0]
    for _count in range(50):
        relay.drop_log.drop("malformed", "from 192.0.2.9:4000")

    def tick():
        relay.stopping = True
    relay.tick = tick
    try:
        now[0] = daemon.DROP_LOG_INTERVAL
        assert relay.run() == 0
    finally:
        relay.shutdown()
    lines = log_lines(tmp_path, "server")
    assert sum("drop malformed: from 192.0.2.9:4000" in line for line in lines) == 1
    assert any(line.endswith("WARNING 49 more malformed drops suppressed in the last 60 s") for line in lines)


def fill(logger, lines, width=100):
    for number in range(lines):
        logger.info("%06d %s", number, "x" * width)


def test_the_log_file_is_rotated_by_size_with_its_mode(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(daemon, "LOG_MAX_BYTES", 2000)
    monkeypatch.setattr(daemon, "LOG_BACKUPS", 2)
    path = tmp_path / "client_log.txt"
    path.touch()
    os.chmod(str(path), 0o640)
    logger = daemon.setup_logging("client", str(tmp_path))
    try:
        fill(logger, 100)
    finally:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
    names = sorted(os.listdir(str(tmp_path)))
    assert names == ["client_log.txt", "client_log.txt.1", "client_log.txt.2"]
    for name in names:
        assert os.path.getsize(str(tmp_path / name)) <= 2000
        assert stat.S_IMODE(os.stat(str(tmp_path / name)).st_mode) == 0o640
    # The newest lines are in the current file, the ones just before in .1.
    current = (tmp_path / "client_log.txt").read_text().splitlines()
    assert current[-1].split()[-2] == "000099"
    previous = (tmp_path / "client_log.txt.1").read_text().splitlines()
    assert int(previous[-1].split()[-2]) + 1 == int(current[0].split()[-2])
    assert "Traceback" not in capsys.readouterr().err


def test_the_environment_sets_the_rotation_size(tmp_path, monkeypatch):
    monkeypatch.setenv(daemon.LOG_MAX_BYTES_ENV, "4096")
    monkeypatch.setenv(daemon.LOG_BACKUPS_ENV, "1")
    logger = daemon.setup_logging("server", str(tmp_path))
    try:
        fill(logger, 200)
    finally:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
    assert sorted(os.listdir(str(tmp_path))) == ["server_log.txt", "server_log.txt.1"]
    assert os.path.getsize(str(tmp_path / "server_log.txt.1")) <= 4096


@pytest.mark.parametrize("name, value", [(daemon.LOG_MAX_BYTES_ENV, "10M"), (daemon.LOG_MAX_BYTES_ENV, "100"),
                                         (daemon.LOG_BACKUPS_ENV, "0"), (daemon.LOG_BACKUPS_ENV, "-1")])
def test_a_wrong_rotation_variable_is_a_clear_error(tmp_path, monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(daemon.DaemonError) as caught:
        daemon.setup_logging("client", str(tmp_path))
    assert "%s=%r is not a whole number" % (name, value) in str(caught.value)
    assert "fix or unset it" in str(caught.value)


def test_a_log_file_that_cannot_be_opened_stops_the_start_with_a_message(tmp_path, capsys):
    # A directory where the file should be: refused for root too (a read-only directory is not).
    (tmp_path / "client_log.txt").mkdir()
    relay = ClientDaemon(str(tmp_path))
    assert daemon.run_daemon(relay) == 1
    err = capsys.readouterr().err
    assert "multic_admin: cannot open the log file %s" % (tmp_path / "client_log.txt") in err
    assert "make %s writable" % tmp_path in err
    assert "Traceback" not in err
    assert not (tmp_path / "multic.sock").exists()


def test_a_rotation_that_fails_keeps_logging_in_the_same_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(daemon, "LOG_MAX_BYTES", 2000)

    def read_only_directory(self, source, dest):
        raise PermissionError(13, "Permission denied", dest)
    monkeypatch.setattr(daemon.RotatingLogFile, "rotate", read_only_directory)
    logger = daemon.setup_logging("client", str(tmp_path))
    try:
        fill(logger, 100)
    finally:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
    assert os.listdir(str(tmp_path)) == ["client_log.txt"]
    assert len(log_lines(tmp_path)) == 100
    err = capsys.readouterr().err
    # One message until the retry, not one traceback per line.
    assert err.count("cannot rotate %s: Permission denied" % (tmp_path / "client_log.txt")) == 1
    assert "Traceback" not in err and "Logging error" not in err
