# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The monitoring assets (Prometheus rules, Grafana dashboard) work and use only real metric names.

promtool (Debian package ``prometheus``) checks the rules and runs their unit
tests; every metric a rule or a dashboard panel queries must be one the daemons
export, as listed in files/prometheus/metric_names.txt.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

COLLECTION_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
PROMETHEUS_DIR = os.path.join(COLLECTION_ROOT, "files", "prometheus")
RULES = os.path.join(PROMETHEUS_DIR, "multicast_proxy_rules.yml")
RULES_TEST_NAME = "multicast_proxy_rules_test.yml"
RULES_TEST = os.path.join(PROMETHEUS_DIR, RULES_TEST_NAME)
METRIC_NAMES = os.path.join(PROMETHEUS_DIR, "metric_names.txt")
DASHBOARD = os.path.join(COLLECTION_ROOT, "files", "grafana", "multicast_proxy_dashboard.json")

ALERT_GROUP = "multicast_proxy"
# A metric name in PromQL, not part of a recording rule name (level:metric:operations).
RULE_METRIC = re.compile(r"(?<![\w:])multicast_proxy_[a-z_]+(?![\w:])")
DASHBOARD_METRIC = re.compile(r"multicast_proxy_[a-z_]+")
QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
NAME_MATCHER = re.compile(r'__name__\s*=~?\s*"([^"]*)"')


def load_yaml(path):
    with open(path) as handle:
        return yaml.safe_load(handle)


def load_dashboard():
    with open(DASHBOARD) as handle:
        return json.load(handle)


def known_metric_names():
    with open(METRIC_NAMES) as handle:
        return set(line.strip() for line in handle if line.strip())


def promtool():
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool was not found on PATH: install it with `apt-get install prometheus` "
                    "(scripts/bootstrap.sh does), then run these tests again")
    return path


def run(argv, cwd=None):
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          cwd=cwd, check=False)
    return proc.returncode, proc.stdout


def rules_of(rules_file, key):
    return [rule for group in rules_file["groups"] for rule in group["rules"] if key in rule]


def alerts():
    groups = [group for group in load_yaml(RULES)["groups"] if group["name"] == ALERT_GROUP]
    assert len(groups) == 1, "one rule group named %s holds the alerts" % ALERT_GROUP
    return [rule for rule in groups[0]["rules"] if "alert" in rule]


def metrics_in_dashboard_expr(expr):
    """Metric names an expression selects: bare names, plus names in a ``__name__`` matcher."""
    names = set(DASHBOARD_METRIC.findall(QUOTED.sub('""', expr)))
    for pattern in NAME_MATCHER.findall(expr):
        names.update(pattern.split("|"))
    return names


def dashboard_exprs():
    """(where, PromQL) of every panel target and every query variable."""
    dashboard = load_dashboard()
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            found.append(("panel %r" % panel["title"], target["expr"]))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            found.append(("variable %r" % variable["name"], variable["query"]["query"]))
    return found


def as_plain_promql(expr):
    """A dashboard expression with Grafana's variables replaced, as Prometheus would receive it.

    A variable's ``label_values(SELECTOR, LABEL)`` becomes its SELECTOR.
    """
    label_values = re.match(r"^label_values\((.*),\s*[a-z_]+\)$", expr)
    if label_values:
        expr = label_values.group(1)
    return expr.replace("$__rate_interval", "5m").replace('"$instance"', '".*"').replace('"$group"', '".*"')


def test_metric_names_file_is_one_valid_name_per_line():
    with open(METRIC_NAMES) as handle:
        lines = handle.read().splitlines()
    assert lines, "metric_names.txt is empty"
    for line in lines:
        assert re.match(r"^multicast_proxy_[a-z_]+$", line), "not a metric name: %r" % line
    assert len(lines) == len(set(lines)), "duplicate names in metric_names.txt"


def test_promtool_check_rules_accepts_the_rules():
    rc, output = run([promtool(), "check", "rules", RULES])
    assert rc == 0, output
    assert "SUCCESS" in output, output


def test_promtool_unit_tests_of_the_rules_pass():
    rc, output = run([promtool(), "test", "rules", RULES_TEST_NAME], cwd=PROMETHEUS_DIR)
    assert rc == 0, output
    assert re.search(r"Unit Testing:\s+%s\s+SUCCESS" % re.escape(RULES_TEST_NAME), output), output


def test_promtool_check_rules_rejects_a_broken_copy(tmp_path):
    with open(RULES) as handle:
        text = handle.read()
    good = 'up{job=~"multicast_proxy_(server|client)"} == 0'
    assert good in text
    broken = tmp_path / "multicast_proxy_rules.yml"
    broken.write_text(text.replace(good, 'up{job=~"multicast_proxy_(server|client)"} == (0'))
    rc, output = run([promtool(), "check", "rules", str(broken)])
    assert rc != 0, output
    assert "FAILED" in output, output


def test_promtool_unit_tests_fail_when_a_threshold_moves(tmp_path):
    with open(RULES) as handle:
        text = handle.read()
    threshold = "entry:multicast_proxy_client_loss:ratio5m > 0.01"
    assert threshold in text
    (tmp_path / "multicast_proxy_rules.yml").write_text(text.replace(threshold, threshold[:-4] + "0.05"))
    shutil.copy(RULES_TEST, str(tmp_path / RULES_TEST_NAME))
    rc, output = run([promtool(), "test", "rules", RULES_TEST_NAME], cwd=str(tmp_path))
    assert rc != 0, output
    assert "MulticastProxyMemberLoss" in output, output


def test_the_required_alerts_exist():
    names = set(rule["alert"] for rule in alerts())
    assert names >= {
        "MulticastProxyDaemonDown", "MulticastProxyGroupNoInput", "MulticastProxyGroupNotJoined",
        "MulticastProxyMemberLoss", "MulticastProxyAuthFailures", "MulticastProxyAuthRefusing",
        "MulticastProxyReloadFailed", "MulticastProxySendErrors",
    }


@pytest.mark.parametrize("rule", alerts(), ids=lambda rule: rule["alert"])
def test_an_alert_says_what_is_wrong_and_what_to_do(rule):
    assert rule.get("for"), "an alert needs a for: duration"
    assert rule["labels"]["severity"] in ("critical", "warning")
    annotations = rule["annotations"]
    assert "{{ $labels.instance }}" in annotations["summary"]
    assert "{{ $labels.instance }}" in annotations["description"]
    assert "ansible-playbook multicast.proxy.diagnose" in annotations["description"]
    assert re.search(r"multi[sc]_admin|multi[sc]_monitord", annotations["description"])


def test_every_alert_has_a_firing_and_a_quiet_test_case():
    cases = {}
    for test in load_yaml(RULES_TEST)["tests"]:
        for case in test.get("alert_rule_test", []):
            cases.setdefault(case["alertname"], []).append(case.get("exp_alerts") or [])
    for rule in alerts():
        name = rule["alert"]
        expected = cases.get(name, [])
        assert any(expected), "%s has no test case where it fires" % name
        assert not all(expected), "%s has no test case where it stays quiet" % name
        for alert in [alert for alerts_ in expected for alert in alerts_]:
            assert alert["exp_labels"]["severity"] == rule["labels"]["severity"], name
            assert set(alert["exp_annotations"]) == set(rule["annotations"]), name


def test_rules_query_only_exported_metrics_and_defined_recordings():
    rules_file = load_yaml(RULES)
    known = known_metric_names()
    recorded = set(rule["record"] for rule in rules_of(rules_file, "record"))
    for rule in rules_of(rules_file, "expr"):
        expr = rule["expr"]
        unknown = set(RULE_METRIC.findall(expr)) - known
        assert not unknown, "%s queries metrics the daemons do not export: %s" % (
            rule.get("alert") or rule.get("record"), sorted(unknown))
        for name in re.findall(r"[a-z_]+:[a-z_]+:[a-z0-9_]+", expr):
            assert name in recorded, "%s uses recording rule %s, which no rule records" % (
                rule.get("alert") or rule.get("record"), name)


def test_dashboard_shape_and_template_variables():
    dashboard = load_dashboard()
    assert dashboard["schemaVersion"] >= 36
    variables = dict((variable["name"], variable) for variable in dashboard["templating"]["list"])
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("instance", "group"):
        assert variables[name]["type"] == "query"
        assert variables[name]["query"]["query"].startswith("label_values(")
        assert variables[name]["query"]["query"].endswith(", %s)" % name)
        assert variables[name]["datasource"]["uid"] == "${datasource}"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"], "panel %r has no query" % panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_dashboard_queries_only_exported_metrics():
    known = known_metric_names()
    for where, expr in dashboard_exprs():
        names = metrics_in_dashboard_expr(expr)
        assert names or re.search(r"(?<![\w:])up\{job=~", expr), \
            "%s selects no multicast_proxy metric: %s" % (where, expr)
        unknown = names - known
        assert not unknown, "%s queries metrics the daemons do not export: %s" % (where, sorted(unknown))


def test_dashboard_name_check_catches_an_unknown_metric():
    expr = 'sum(rate(multicast_proxy_server_recieved_total{instance=~"$instance"}[5m])) + up{job="multicast_proxy_x"}'
    assert metrics_in_dashboard_expr(expr) - known_metric_names() == {"multicast_proxy_server_recieved_total"}


def test_dashboard_covers_every_topic():
    used = set()
    for _where, expr in dashboard_exprs():
        used |= metrics_in_dashboard_expr(expr)
    assert used >= {
        "multicast_proxy_server_received_datagrams_total", "multicast_proxy_server_received_bytes_total",
        "multicast_proxy_server_sent_copies_total", "multicast_proxy_client_lost_frames",
        "multicast_proxy_server_dropped_datagrams_total", "multicast_proxy_client_dropped_frames_total",
        "multicast_proxy_server_send_errors_total", "multicast_proxy_config_reloads_total",
        "multicast_proxy_config_last_reload_success", "multicast_proxy_auth_refusing",
        "multicast_proxy_client_auth_accepted_frames_total",
    }
    assert any(where.startswith("panel") and expr.startswith("up{job=~") for where, expr in dashboard_exprs()), \
        "no panel shows whether the daemons are up"


def test_dashboard_queries_are_valid_promql(tmp_path):
    rules = [{"record": "dashboard:query_%d:check" % number, "expr": as_plain_promql(expr)}
             for number, (_where, expr) in enumerate(dashboard_exprs())]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    rc, output = run([promtool(), "check", "rules", str(path)])
    assert rc == 0, output
