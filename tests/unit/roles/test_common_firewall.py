# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The common role's firewall tasks, run by ansible-playbook on this machine.

This machine's own firewall is never changed: the nftables path runs in check
mode with --diff (the table file's content is read from the diff), the file
is checked with ``nft -c`` and then loaded into a network namespace of its own
(``unshare --net``), where the doctor's evaluator judges packets against the
live ruleset: the relay servers pass, anything else sent to the relay ports
is dropped by ``table inet multicast_proxy``, except multicast (a group's
re-delivered copies loop back through the hook).  On a platform whose firewall
is firewalld or ufw and not running here, the role says so and opens nothing.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from ansible_collections.multicast.proxy.plugins.module_utils.multicast_diag_firewall import nft_input_verdict

COLLECTION_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
COLLECTIONS_PATH = os.path.abspath(os.path.join(COLLECTION_ROOT, "..", "..", ".."))
SERVERS = ["10.0.0.5", "10.0.0.6"]
PORTS = [5000, 65535]
PLAYBOOK = """\
- name: The common role's firewall tasks
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Choose the platform's variables
      ansible.builtin.include_role:
        name: multicast.proxy.common
        tasks_from: set_vars
    - name: Open the relay ports
      ansible.builtin.include_role:
        name: multicast.proxy.common
        tasks_from: firewall
      vars:
        common_firewall_sources: "{{ sources }}"
        common_firewall_ports: "{{ ports }}"
"""


def run_firewall(tmp_path, distribution, os_family, sources, ports, *options):
    (tmp_path / "firewall.yml").write_text(PLAYBOOK)
    extra = {"ansible_facts": {"distribution": distribution, "distribution_major_version": "12",
                               "os_family": os_family},
             "sources": sources, "ports": ports,
             "__common_nft_file": str(tmp_path / "firewall.nft"),
             "__common_nft_unit_file": str(tmp_path / "multicast-proxy-firewall.service")}
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_PATH, ANSIBLE_STDOUT_CALLBACK="default",
               ANSIBLE_CALLBACK_RESULT_FORMAT="json", ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"), ANSIBLE_REMOTE_TEMP=str(tmp_path / "ansible-tmp"))
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,", "-c", "local",
            "-e", "ansible_python_interpreter=%s" % sys.executable, "-e", json.dumps(extra),
            str(tmp_path / "firewall.yml")] + list(options)
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          cwd=str(tmp_path), env=env, timeout=300, check=False)
    return proc.returncode, proc.stdout


def table_from_diff(output):
    """The nft file's lines as the check-mode diff of "Write the nftables table" shows them."""
    section = output.split("Write the nftables table", 1)[1].split("TASK [", 1)[0]
    lines = [line[1:] for line in section.splitlines() if line.startswith("+") and not line.startswith("+++")]
    return "\n".join(lines) + "\n"


needs_nft = pytest.mark.skipif(shutil.which("nft") is None or os.geteuid() != 0,
                               reason="needs nft and root (nft -c, unshare --net)")


@needs_nft
def test_nftables_table_lets_the_servers_in_and_drops_the_rest_on_the_relay_ports(tmp_path):
    rc, output = run_firewall(tmp_path, "Debian", "Debian", SERVERS, PORTS, "--check", "--diff")
    assert rc == 0, output
    text = table_from_diff(output)
    assert "elements = { 10.0.0.5, 10.0.0.6 }" in text and "elements = { 5000, 65535 }" in text, output
    assert not (tmp_path / "firewall.nft").exists()
    nft_file = tmp_path / "candidate.nft"
    nft_file.write_text(text)
    check = subprocess.run(["nft", "-c", "-f", str(nft_file)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           universal_newlines=True, check=False)
    assert check.returncode == 0, check.stdout
    # Loaded twice (the file replaces its own table), then listed, in a namespace of its own.
    script = "nft -f {0} && nft -f {0} && nft -j list ruleset".format(nft_file)
    loaded = subprocess.run(["unshare", "--net", "sh", "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, universal_newlines=True, check=False)
    if loaded.returncode != 0 and "unshare" in loaded.stdout:
        pytest.skip("no network namespace here: %s" % loaded.stdout)
    assert loaded.returncode == 0, loaded.stdout
    assert json.loads(loaded.stdout)["nftables"]
    ruleset = loaded.stdout

    def packet(source, port):
        return {"l4proto": "udp", "saddr": source, "daddr": "10.0.0.9", "dport": port, "iifname": "eth0",
                "ct_state": "new", "nfproto": "ipv4"}
    assert nft_input_verdict(ruleset, packet("10.0.0.5", 65535)) is None
    assert nft_input_verdict(ruleset, packet("10.0.0.6", 5000)) is None
    verdict = nft_input_verdict(ruleset, packet("10.0.0.7", 65535))
    assert verdict[0] == "drop" and "table inet multicast_proxy" in verdict[1]
    assert nft_input_verdict(ruleset, packet("10.0.0.7", 5001)) is None
    # The re-delivered copies of a group whose port is a relay port loop back through the hook.
    looped = dict(packet("10.0.0.9", 65535), daddr="224.1.2.3", iifname="lo")
    assert nft_input_verdict(ruleset, looped) is None


def test_nothing_to_open_and_no_table_installed_changes_nothing(tmp_path):
    rc, output = run_firewall(tmp_path, "Debian", "Debian", [], [], "--check")
    assert rc == 0, output
    assert re.search(r"TASK \[multicast\.proxy\.common : Write the nftables table\] \*+\nskipping", output), output
    assert "changed: [localhost]" not in output


@pytest.mark.skipif(shutil.which("firewall-cmd") is not None, reason="firewalld is installed here")
def test_a_platform_firewall_that_does_not_run_is_left_alone_with_a_message(tmp_path):
    rc, output = run_firewall(tmp_path, "RedHat", "RedHat", SERVERS, PORTS)
    assert rc == 0, output
    assert "firewalld is not running on localhost: nothing was opened" in output
    assert "changed: [localhost]" not in output


def test_the_client_role_opens_its_relay_ports_to_the_servers_of_its_entries_only_when_asked():
    """roles/client/vars/main.yml: the lists the client role passes to the firewall entry point."""
    import yaml
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar
    from ansible_collections.multicast.proxy.tests.unit.compat import trust_as_template

    with open(os.path.join(COLLECTION_ROOT, "roles", "client", "vars", "main.yml")) as handle:
        values = yaml.safe_load(handle)
    config = {"multi_server_info_array": [
        {"server_ip": "10.0.0.6", "server_port": 65535, "group_ip": "224.1.2.3", "group_port": 65535},
        {"server_ip": "10.0.0.5", "server_port": 5000, "group_ip": "224.1.2.4", "group_port": 5000},
        {"server_ip": "10.0.0.6", "server_port": 5000, "group_ip": "224.1.2.4", "group_port": 5000}]}

    def render(name, **inventory):
        variables = dict(((key, trust_as_template(value) if isinstance(value, str) else value)
                          for key, value in values.items()), __client_config=config, **inventory)
        value = Templar(loader=DataLoader(), variables=variables).template(trust_as_template(values[name]))
        return yaml.safe_load(value) if isinstance(value, str) else value

    assert render("__client_firewall_sources") == ["10.0.0.6", "10.0.0.5"]
    assert render("__client_firewall_ports") == [5000, 65535]
    assert render("__client_firewall_wanted") is False
    assert render("__client_firewall_wanted", multicast_proxy_firewall_open=True) is True
    assert render("__client_firewall_wanted", multicast_proxy_firewall_open=True, multicast_proxy_state="absent") \
        is False
