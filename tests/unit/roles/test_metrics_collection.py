# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection's metrics plumbing, run by ansible-playbook on this machine.

* ``include_role: multicast.proxy.common, tasks_from: metrics`` against
  localhost with the unit directory moved into a temporary directory: the
  textfile directory and the ``ReadWritePaths`` drop-in, idempotence, removal,
  the restart handler notified only on a change.
* ``playbooks/prometheus.yml`` against an inventory whose relay hosts are
  described by variables only, Prometheus' files written into a temporary
  directory and checked by Debian's ``promtool check config`` (which reads the
  rule files and the file_sd files the jobs name).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import grp
import json
import os
import shutil
import stat
import subprocess
import sys

import pytest
import yaml

COLLECTION_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
COLLECTIONS_PATH = os.path.abspath(os.path.join(COLLECTION_ROOT, "..", "..", ".."))
HANDLER = "Restart relay daemons for their drop-ins"
METRICS_PLAYBOOK = """\
- name: The common role's metrics tasks
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Let the daemon write its metrics textfile
      ansible.builtin.include_role:
        name: multicast.proxy.common
        tasks_from: metrics
      vars:
        common_metrics_service: multis_monitord
        common_metrics_textfile_dir: "{{ textfile_dir }}"
"""

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="the role writes root-owned files (owner: root)"),
              pytest.mark.usefixtures("service_account")]


def ansible_playbook(tmp_path, playbook, extra, *options, **kwargs):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_PATH, ANSIBLE_STDOUT_CALLBACK="default",
               ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_DISPLAY_SKIPPED_HOSTS="1",
               ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"), ANSIBLE_REMOTE_TEMP=str(tmp_path / "ansible-tmp"))
    inventory = kwargs.get("inventory", "localhost,")
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", inventory,
            "-e", json.dumps(extra), str(playbook)] + list(options)
    if inventory == "localhost,":
        argv[3:3] = ["-c", "local", "-e", "ansible_python_interpreter=%s" % sys.executable]
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          cwd=str(tmp_path), env=env, timeout=300, check=False)
    return proc.returncode, proc.stdout


def recap_changed(output):
    """The changed= count of localhost in the play recap."""
    for line in output.splitlines():
        if line.startswith("localhost") and "changed=" in line:
            return int(line.split("changed=")[1].split()[0])
    raise AssertionError("no play recap in:\n" + output)


@pytest.fixture(name="metrics_host")
def fixture_metrics_host(tmp_path):
    units = tmp_path / "units"
    units.mkdir()
    playbook = tmp_path / "metrics.yml"
    playbook.write_text(METRICS_PLAYBOOK)

    def run(textfile_dir, *options):
        return ansible_playbook(tmp_path, playbook, {"__common_unit_dir": str(units), "textfile_dir": textfile_dir},
                                *options)
    return {"tmp": tmp_path, "units": units, "run": run,
            "dropin": units / "multis_monitord.service.d" / "multicast-proxy-metrics.conf"}


def test_a_textfile_directory_gets_a_drop_in_and_the_restart(metrics_host):
    textfile_dir = metrics_host["tmp"] / "node-exporter"
    rc, output = metrics_host["run"](str(textfile_dir))
    assert rc == 0, output
    # Writable by the daemons' group (they run as an unprivileged user), sticky.
    info = os.stat(str(textfile_dir))
    assert stat.S_IMODE(info.st_mode) == 0o1775 and info.st_uid == 0
    assert info.st_gid == grp.getgrnam("multicast-proxy").gr_gid
    lines = metrics_host["dropin"].read_text().splitlines()
    assert "[Service]" in lines and "ReadWritePaths=%s" % textfile_dir in lines
    assert "RUNNING HANDLER [multicast.proxy.common : %s]" % HANDLER in output

    rc, output = metrics_host["run"](str(textfile_dir))
    assert rc == 0, output
    assert recap_changed(output) == 0 and HANDLER not in output

    # No textfile: the drop-in goes, and the daemon restarts without it.
    rc, output = metrics_host["run"]("")
    assert rc == 0, output
    assert not metrics_host["dropin"].exists() and HANDLER in output
    rc, output = metrics_host["run"]("")
    assert rc == 0 and recap_changed(output) == 0 and HANDLER not in output, output


def test_an_existing_directory_keeps_its_owner_and_mode(metrics_host):
    textfile_dir = metrics_host["tmp"] / "collector"
    textfile_dir.mkdir(mode=0o700)
    os.chown(str(textfile_dir), 65534, 65534)
    rc, output = metrics_host["run"](str(textfile_dir))
    assert rc == 0, output
    info = os.stat(str(textfile_dir))
    assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == 65534
    # ... and the run says the daemons cannot write it.
    assert "which the relay daemons (user multicast-proxy) cannot write" in " ".join(output.split())


def test_a_file_in_place_of_the_directory_fails_with_what_to_do(metrics_host):
    not_a_dir = metrics_host["tmp"] / "file"
    not_a_dir.write_text("x")
    rc, output = metrics_host["run"](str(not_a_dir))
    assert rc != 0
    assert "exists and is not a directory" in output and "multicast_proxy_metrics_textfile_dir" in output
    assert not metrics_host["dropin"].exists()


def test_check_mode_changes_nothing(metrics_host):
    textfile_dir = metrics_host["tmp"] / "node-exporter"
    rc, output = metrics_host["run"](str(textfile_dir), "--check", "--diff")
    assert rc == 0, output
    assert not textfile_dir.exists() and not metrics_host["dropin"].exists()
    assert "ReadWritePaths=%s" % textfile_dir in output, "the diff shows the drop-in"


def fleet_inventory(tmp_path, src_vars, member_vars):
    groups = [{"name": "feed", "group_ip": "239.8.1.1", "group_port": 5000, "server_port": 5500,
               "senders": "senders", "receivers": "members"}]
    inventory = {"all": {
        "vars": {"multicast_proxy_groups": groups},
        "children": {
            "senders": {"hosts": {"src": dict({"multicast_proxy_address": "10.9.0.1"}, **src_vars)}},
            "members": {"hosts": {"m1": dict({"multicast_proxy_address": "10.9.0.2"}, **member_vars),
                                  "m2": {"multicast_proxy_address": "10.9.0.3"}}},
            "multicast_proxy_prometheus": {"hosts": {"localhost": {
                "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}},
        }}}
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(inventory))
    return str(path)


def run_prometheus_playbook(tmp_path, inventory, *options):
    extra = {"multicast_proxy_hosts": "localhost", "multicast_proxy_prometheus_config_dir": str(tmp_path / "prom"),
             "multicast_proxy_prometheus_service": ""}
    return ansible_playbook(tmp_path, os.path.join(COLLECTION_ROOT, "playbooks", "prometheus.yml"), extra,
                            *options, inventory=inventory)


def test_the_prometheus_playbook_writes_targets_jobs_and_rules_promtool_accepts(tmp_path):
    inventory = fleet_inventory(tmp_path, {"multicast_proxy_metrics": True, "multicast_proxy_metrics_address": "0.0.0.0"},
                                {"multicast_proxy_metrics": True, "multicast_proxy_metrics_address": "10.9.0.2",
                                 "multicast_proxy_metrics_client_port": 19472})
    rc, output = run_prometheus_playbook(tmp_path, inventory)
    assert rc == 0, output
    prom = tmp_path / "prom"
    assert json.loads((prom / "file_sd" / "multicast_proxy_server.json").read_text()) == [
        {"targets": ["10.9.0.1:9471"], "labels": {"host": "src"}}]
    assert json.loads((prom / "file_sd" / "multicast_proxy_client.json").read_text()) == [
        {"targets": ["10.9.0.2:19472"], "labels": {"host": "m1"}}]
    jobs = yaml.safe_load((prom / "multicast_proxy_scrape.yml").read_text())["scrape_configs"]
    assert [job["job_name"] for job in jobs] == ["multicast_proxy_server", "multicast_proxy_client"]
    rules = prom / "rules" / "multicast_proxy_rules.yml"
    with open(os.path.join(COLLECTION_ROOT, "files", "prometheus", "multicast_proxy_rules.yml")) as handle:
        assert rules.read_text() == handle.read()

    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian's prometheus package, scripts/bootstrap.sh) is needed"
    config = prom / "prometheus.yml"
    config.write_text(yaml.safe_dump({"rule_files": [str(rules)], "scrape_configs": jobs}))
    check = subprocess.run([promtool, "check", "config", str(config)], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, universal_newlines=True, check=False)
    assert check.returncode == 0, check.stdout
    assert "multicast_proxy_rules.yml" in check.stdout

    rc, output = run_prometheus_playbook(tmp_path, inventory)
    assert rc == 0 and recap_changed(output) == 0, output


def test_a_loopback_endpoint_fails_before_any_prometheus_file_is_written(tmp_path):
    inventory = fleet_inventory(tmp_path, {"multicast_proxy_metrics": True}, {})
    rc, output = run_prometheus_playbook(tmp_path, inventory)
    assert rc != 0
    assert "host src" in output and "cannot scrape" in output and "multicast_proxy_metrics_address" in output
    assert not (tmp_path / "prom").exists()
