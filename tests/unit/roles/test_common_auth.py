# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The common role's auth tasks, run by ansible-playbook on this machine.

``include_role: multicast.proxy.common, tasks_from: auth`` against localhost
(local connection) with the conf dir and the command dir moved into a
temporary directory by extra vars; the key file is validated by the real
relay (``multis_admin --check-auth``), as on a host.  Covers
``multicast_proxy_auth_required``: the marker ``auth_required`` written, refused
without keys, removed, in check and diff mode, with the reload handler
notified on every change.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import grp
import json
import os
import re
import stat
import subprocess
import sys

import pytest

COLLECTION_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
COLLECTIONS_PATH = os.path.abspath(os.path.join(COLLECTION_ROOT, "..", "..", ".."))
SECRET = "5e" * 32
KEYS = [{"id": 3, "secret": SECRET}]
RELOAD_HANDLER = "Collect relay service states"
# relay_contract.SERVICE_GROUP: the key file's group (the install task creates it on a host).
SERVICE_GROUP = "multicast-proxy"
# The default callback's lines: a task's header, then the host's status.
HEADER = re.compile(r"^(?:TASK|RUNNING HANDLER) \[(?:multicast\.proxy\.common : )?(.*)\] \**$")
STATUS = re.compile(r"^(ok|changed|skipping|fatal): \[localhost\](?:: FAILED! => (\{.*\}))?")
PLAYBOOK = """\
- name: The common role's auth tasks
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Write or remove the authentication keys
      ansible.builtin.include_role:
        name: multicast.proxy.common
        tasks_from: auth
"""

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="the role writes root-owned files (owner: root)"),
              pytest.mark.usefixtures("service_account")]


@pytest.fixture(name="host")
def fixture_host(tmp_path):
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # The wrapper the install task writes, pointed at this tree's relay.
    wrapper = bin_dir / "multis_admin"
    wrapper.write_text("#!/bin/sh\nPYTHONPATH=%s exec %s -m multicast_proxy multis_admin \"$@\"\n"
                       % (os.path.join(COLLECTION_ROOT, "files"), sys.executable))
    wrapper.chmod(0o755)
    playbook = tmp_path / "auth.yml"
    playbook.write_text(PLAYBOOK)
    return {"tmp": tmp_path, "conf_dir": conf_dir, "bin_dir": bin_dir, "playbook": playbook}


def run_auth(host, keys, required, *options):
    """Run the auth tasks; return (exit code, {task name: result}, raw output).

    A result is the task's status (ok, changed, skipping, fatal), its
    message when it failed, and the lines printed under it (a diff).
    """
    extra = {"__common_conf_dir": str(host["conf_dir"]), "__common_bin_dir": str(host["bin_dir"]),
             "multicast_proxy_auth_keys": keys, "multicast_proxy_auth_required": required}
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_PATH, ANSIBLE_STDOUT_CALLBACK="default",
               ANSIBLE_CALLBACK_RESULT_FORMAT="json", ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_DISPLAY_SKIPPED_HOSTS="1", ANSIBLE_LOCALHOST_WARNING="0",
               ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
               ANSIBLE_LOCAL_TEMP=str(host["tmp"] / "ansible-tmp"),
               ANSIBLE_REMOTE_TEMP=str(host["tmp"] / "ansible-tmp"))
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,", "-c", "local",
            "-e", "ansible_python_interpreter=%s" % sys.executable, "-e", json.dumps(extra),
            str(host["playbook"])] + list(options)
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          cwd=str(host["tmp"]), env=env, timeout=300, check=False)
    results = {}
    current = None
    for line in proc.stdout.splitlines():
        header = HEADER.match(line)
        if header:
            current = results.setdefault(header.group(1), {"status": None, "msg": None, "lines": []})
            continue
        if current is None:
            continue
        status = STATUS.match(line)
        if status and current["status"] is None:
            current["status"] = status.group(1)
            if status.group(2):
                current["msg"] = json.loads(status.group(2)).get("msg")
        else:
            current["lines"].append(line)
    return proc.returncode, results, proc.stdout


def changed(results):
    return sorted(name for name, result in results.items() if result["status"] == "changed")


def marker(host):
    return host["conf_dir"] / "auth_required"


def key_file(host):
    return host["conf_dir"] / "auth_keys.json"


def test_required_writes_the_marker_after_the_keys_and_notifies_the_reload(host):
    rc, results, output = run_auth(host, KEYS, True)
    assert rc == 0, output
    assert changed(results) == ["Require authentication (fail closed without keys)",
                                "Write the authentication keys"]
    assert RELOAD_HANDLER in results
    info = os.lstat(str(marker(host)))
    assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o644 and info.st_uid == 0
    content = marker(host).read_text()
    assert content.startswith("# ") and content.count("\n") == 1 and "auth_keys.json" in content
    info = os.stat(str(key_file(host)))
    # root's, readable by the daemons' group only (they run as an unprivileged user).
    assert stat.S_IMODE(info.st_mode) == 0o640 and info.st_uid == 0
    assert info.st_gid == grp.getgrnam(SERVICE_GROUP).gr_gid

    rc, results, output = run_auth(host, KEYS, True)
    assert rc == 0, output
    assert changed(results) == []
    assert RELOAD_HANDLER not in results


def test_required_without_keys_fails_naming_the_host_and_the_variable_and_keeps_the_keys(host):
    assert run_auth(host, KEYS, True)[0] == 0
    before = key_file(host).read_text()

    rc, results, output = run_auth(host, [], True)
    assert rc != 0
    failure = results["Refuse to leave a host that requires authentication without keys"]
    assert failure["status"] == "fatal"
    assert "localhost requires authentication" in failure["msg"]
    assert "set multicast_proxy_auth_keys for localhost" in failure["msg"]
    assert "multicast_proxy_auth_required" in failure["msg"]
    assert "Remove the authentication keys" not in results
    assert key_file(host).read_text() == before
    assert marker(host).exists()


def test_required_without_keys_fails_on_a_host_never_deployed(host):
    rc, results, output = run_auth(host, [], True)
    assert rc != 0, output
    assert results["Refuse to leave a host that requires authentication without keys"]["status"] == "fatal"
    assert sorted(os.listdir(str(host["conf_dir"]))) == []


def test_not_required_removes_the_marker_keeps_the_keys_and_notifies_the_reload(host):
    assert run_auth(host, KEYS, True)[0] == 0

    rc, results, output = run_auth(host, KEYS, False)
    assert rc == 0, output
    assert changed(results) == ["Stop requiring authentication"]
    assert RELOAD_HANDLER in results
    assert not marker(host).exists()
    assert key_file(host).exists()


def test_a_marker_made_by_hand_is_removed_when_not_required(host):
    marker(host).write_text("")
    rc, results, output = run_auth(host, [], False)
    assert rc == 0, output
    assert "Stop requiring authentication" in changed(results)
    assert not marker(host).exists() and not key_file(host).exists()


def test_check_mode_reports_the_marker_writes_nothing_and_diff_shows_no_secret(host):
    rc, results, output = run_auth(host, KEYS, True, "--check", "--diff")
    assert rc == 0, output
    assert changed(results) == ["Require authentication (fail closed without keys)",
                                "Write the authentication keys"]
    diff = results["Require authentication (fail closed without keys)"]["lines"]
    assert any(line.startswith("+# ") and "auth_keys.json" in line for line in diff), diff
    assert SECRET not in output
    assert sorted(os.listdir(str(host["conf_dir"]))) == []

    assert run_auth(host, KEYS, True)[0] == 0
    rc, results, output = run_auth(host, KEYS, False, "--check", "--diff")
    assert rc == 0, output
    assert changed(results) == ["Stop requiring authentication"]
    assert marker(host).exists()
