"""A real Prometheus scrapes the relay daemons of a VPC and loads the collection's rules.

Hosts: `srv` runs the server (`--metrics <srv>:9471 --metrics-detail member`),
`m1` and `m2` run the client (`--metrics <mN>:9472`), `mon` runs Debian's
Prometheus (scrape and rule evaluation every second, the job names the
collection uses, files/prometheus/multicast_proxy_rules.yml loaded).  After a
stream of a known size has been relayed and has stopped, what Prometheus
stored must equal what each daemon's `-P --json` says, the rules must be
healthy, `promtool check metrics` must accept every endpoint's body, and a
stopped client must show as `up == 0` with MulticastProxyDaemonDown pending.

Prometheus listens on 127.0.0.1 inside `mon`; the test reaches it (and the
endpoints) through a small urllib program run in that namespace.
"""

import json
import shutil
import sys
import time
import urllib.parse

import pytest
import yaml

from vpc import REPO, RELAY_COMMANDS
from vpc import wait_until

GROUP = "239.77.16.1"
GROUP_PORT = 5016
SERVER_PORT = 6016
SERVER_METRICS_PORT = 9471
CLIENT_METRICS_PORT = 9472
PROMETHEUS_ADDRESS = "127.0.0.1:9090"
DATAGRAMS = 3000
MEMBERS = ("m1", "m2")
RULES = REPO / "files" / "prometheus" / "multicast_proxy_rules.yml"
SERVER_JOB = "multicast_proxy_server"
CLIENT_JOB = "multicast_proxy_client"
SCRAPE_INTERVAL = 1.0

# Runs inside a namespace: GET the URL (no proxy from the environment), print one JSON line.
FETCH = """
import json, sys, urllib.error, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(sys.argv[1], timeout=5) as reply:
        out = {"status": reply.status, "content_type": reply.headers.get("Content-Type"),
               "body": reply.read().decode("utf-8")}
except urllib.error.HTTPError as error:
    out = {"status": error.code, "content_type": error.headers.get("Content-Type"),
           "body": error.read().decode("utf-8", "replace")}
except OSError as error:
    out = {"status": None, "error": str(error)}
print(json.dumps(out))
"""


def relay_edit(host, command, *args):
    """An edit made before the daemon runs is saved and reported with exit code 3."""
    result = host.relay(command, *args, check=False)
    assert result.returncode in (0, 3), (command, args, result.stdout, result.stderr)


def fetch(host, url):
    result = host.run([sys.executable, "-c", FETCH, url])
    return json.loads(result.stdout.strip().splitlines()[-1])


class Prometheus:
    """A Prometheus server in host `mon`, queried through its HTTP API."""

    def __init__(self, host, workdir, targets):
        self.host = host
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": addresses}]}
                               for job, addresses in targets.items()],
        }
        config_path = workdir / "prometheus.yml"
        # JSON is YAML: no hand-written quoting.
        config_path.write_text(json.dumps(config, indent=2))
        check = host.run(["promtool", "check", "config", config_path], check=False)
        assert check.returncode == 0, check.stdout + check.stderr
        self.process = host.start("prometheus", [
            "prometheus", "--config.file=%s" % config_path, "--storage.tsdb.path=%s" % (workdir / "tsdb"),
            "--web.listen-address=%s" % PROMETHEUS_ADDRESS, "--log.level=warn"])
        wait_until(self.ready, "Prometheus to be ready")

    def ready(self):
        assert self.process.running(), self.process.describe()
        return fetch(self.host, "http://%s/-/ready" % PROMETHEUS_ADDRESS)["status"] == 200

    def api(self, path, **params):
        url = "http://%s/api/v1/%s" % (PROMETHEUS_ADDRESS, path)
        if params:
            url += "?" + urllib.parse.urlencode(params)
        reply = fetch(self.host, url)
        assert reply["status"] == 200, (url, reply)
        answer = json.loads(reply["body"])
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, expr):
        """The instant vector of `expr`: {frozenset of labels: value}."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return {frozenset(sample["metric"].items()): float(sample["value"][1]) for sample in data["result"]}

    def value(self, expr):
        """The one sample `expr` must select."""
        result = self.query(expr)
        assert len(result) == 1, (expr, result)
        return next(iter(result.values()))


def stats(host, side):
    result = host.relay(RELAY_COMMANDS[side], "-P", "--json")
    return json.loads(result.stdout)


def promtool_lint(host, body):
    return host.run(["promtool", "check", "metrics"], check=False, input_text=body)


def rule_names(path):
    names = []
    for group in yaml.safe_load(path.read_text())["groups"]:
        names.extend(rule.get("alert") or rule.get("record") for rule in group["rules"])
    return sorted(names)


@pytest.mark.skipif(shutil.which("prometheus") is None or shutil.which("promtool") is None,
                    reason="needs Prometheus and promtool (Debian package prometheus)")
def test_prometheus_scrapes_what_the_daemons_report(make_vpc, tmp_path):
    vpc = make_vpc({"srv": 1, "m1": 1, "m2": 1, "mon": 1})
    server, monitor = vpc["srv"], vpc["mon"]
    members = [vpc[name] for name in MEMBERS]
    relay_edit(server, "multis_admin", "-A", "-m", GROUP, "-j", ",".join(m.ip for m in members),
               "-p", SERVER_PORT, "-g", GROUP_PORT)
    server_target = "%s:%d" % (server.ip, SERVER_METRICS_PORT)
    client_targets = {m.name: "%s:%d" % (m.ip, CLIENT_METRICS_PORT) for m in members}
    for member in members:
        relay_edit(member, "multic_admin", "-A", "-i", server.ip, "-g", GROUP_PORT, "-s", SERVER_PORT, "-m", GROUP)
        member.start_relay("client", "--metrics", client_targets[member.name])
    server.start_relay("server", "--metrics", server_target, "--metrics-detail", "member")

    prometheus = Prometheus(monitor, tmp_path, {SERVER_JOB: [server_target],
                                                CLIENT_JOB: sorted(client_targets.values())})
    wait_until(lambda: sorted(prometheus.query("up == 1")) == sorted(prometheus.query("up")) and
               len(prometheus.query("up == 1")) == 3, "all three targets to be up")

    receivers = {m.name: m.start_receiver("mcrecv", GROUP, GROUP_PORT, expect=DATAGRAMS, idle_timeout=2)
                 for m in members}
    assert server.send(GROUP, GROUP_PORT, DATAGRAMS, rate=5000, size=300)["sent"] == DATAGRAMS
    for name, receiver in receivers.items():
        summary = receiver.json_result()
        assert summary["unique"] == DATAGRAMS and summary["corrupt"] == 0, (name, summary)
    stream_done = time.time()

    # Every scrape that starts a whole interval after the stream stopped read figures
    # rendered after it stopped (a body is cached for at most CACHE_SECONDS = 1 s).
    wait_until(lambda: len(prometheus.query("timestamp(up) > %f" % (stream_done + SCRAPE_INTERVAL))) == 3,
               "two scrapes of every target after the stream")
    server_stats = stats(server, "server")
    client_stats = {m.name: stats(m, "client") for m in members}

    (group,) = server_stats["groups"]
    assert group["rx_packets"] == DATAGRAMS, group
    selector = '{job="%s",instance="%s",group="%s"}' % (SERVER_JOB, server_target, GROUP)
    assert prometheus.value("multicast_proxy_server_received_datagrams_total" + selector) == group["rx_packets"]
    assert prometheus.value("multicast_proxy_server_received_bytes_total" + selector) == group["rx_bytes"]
    copies = sum(member["tx_packets"] for member in group["members"])
    assert copies == DATAGRAMS * len(members), group
    assert prometheus.value("multicast_proxy_server_sent_copies_total" + selector) == copies
    assert prometheus.value("multicast_proxy_server_send_errors_total" + selector) == 0
    assert prometheus.value("multicast_proxy_server_group_members" + selector) == len(members)
    assert prometheus.value("multicast_proxy_server_group_up" + selector) == 1
    per_member = prometheus.query('multicast_proxy_server_member_sent_copies_total{job="%s"}' % SERVER_JOB)
    assert {dict(labels)["member"]: value for labels, value in per_member.items()} == {
        member["member_ip"]: member["tx_packets"] for member in group["members"]}
    assert server_stats["metrics"]["serving"] and server_stats["metrics"]["scrapes"] >= 2, server_stats["metrics"]

    for member in members:
        (entry,) = client_stats[member.name]["entries"]
        assert entry["delivered_packets"] == DATAGRAMS and entry["lost"] == 0, entry
        selector = '{job="%s",instance="%s",group="%s"}' % (CLIENT_JOB, client_targets[member.name], GROUP)
        for metric, key in (("multicast_proxy_client_received_frames_total", "rx_packets"),
                            ("multicast_proxy_client_received_bytes_total", "rx_bytes"),
                            ("multicast_proxy_client_delivered_datagrams_total", "delivered_packets"),
                            ("multicast_proxy_client_delivered_bytes_total", "delivered_bytes"),
                            ("multicast_proxy_client_lost_frames", "lost"),
                            ("multicast_proxy_client_duplicate_frames_total", "duplicates")):
            assert prometheus.value(metric + selector) == entry[key], (member.name, metric, entry)
        assert prometheus.value('multicast_proxy_client_entries{instance="%s"}'
                                % client_targets[member.name]) == 1

    # The recording rules work on these series (rate over what was scraped).
    recorded = prometheus.query("group:multicast_proxy_server_received_datagrams:rate5m")
    assert [dict(labels)["group"] for labels in recorded] == [GROUP], recorded
    assert next(iter(recorded.values())) > 0

    rules = prometheus.api("rules")
    loaded = sorted(rule["name"] for group in rules["groups"] for rule in group["rules"])
    assert loaded == rule_names(RULES)
    unhealthy = [(rule["name"], rule.get("health"), rule.get("lastError"))
                 for group in rules["groups"] for rule in group["rules"] if rule.get("health") != "ok"]
    assert not unhealthy, unhealthy

    for host, target in [(server, server_target)] + [(m, client_targets[m.name]) for m in members]:
        reply = fetch(monitor, "http://%s/metrics" % target)
        assert reply["status"] == 200 and reply["content_type"] == "text/plain; version=0.0.4; charset=utf-8", reply
        lint = promtool_lint(host, reply["body"])
        assert lint.returncode == 0 and not (lint.stdout + lint.stderr).strip(), (target, lint.stdout, lint.stderr)

    # Negative control: a stopped client is seen down, and the rule's alert goes pending.
    stopped = members[1]
    stopped.relays["client"].stop()
    down_selector = '{job="%s",instance="%s"}' % (CLIENT_JOB, client_targets[stopped.name])
    wait_until(lambda: prometheus.query("up%s == 0" % down_selector), "up == 0 for the stopped client")
    assert prometheus.value('up{job="%s",instance="%s"}' % (CLIENT_JOB, client_targets[members[0].name])) == 1

    def daemon_down_alerts():
        return [alert for alert in prometheus.api("alerts")["alerts"]
                if alert["labels"]["alertname"] == "MulticastProxyDaemonDown"]

    (alert,) = wait_until(daemon_down_alerts, "MulticastProxyDaemonDown for the stopped client")
    assert alert["labels"]["instance"] == client_targets[stopped.name], alert
    assert alert["state"] in ("pending", "firing"), alert
    assert "multic_monitord" in alert["annotations"]["description"], alert
