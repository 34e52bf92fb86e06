# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""relay_firewall against recorded firewall-cmd and ufw output (run_command mocked)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.multicast.proxy.plugins.modules import relay_firewall

FW = "/usr/local/bin/firewall-cmd"
UFW = "/usr/local/bin/ufw"
RULE = 'rule family="ipv4" source ipset="multicast_proxy" port port="%d" protocol="udp" accept'
OTHER_RULE = 'rule family="ipv4" source address="192.0.2.1" service name="ssh" accept'
UFW_ADDED = """\
Added user rules (see 'ufw status' for running firewall):
ufw allow 22/tcp
ufw allow from 10.0.0.5 to any port 65535 proto udp comment 'multicast.proxy'
ufw allow from 10.0.0.9 to any port 65535 proto udp comment 'multicast.proxy'
"""
UFW_ACTIVE = "Status: active\n\nTo                         Action      From\n--                         ------      ----\n"


def firewalld_reads(ipsets, entries, rules):
    """Replies to --state, --get-default-zone, --get-ipsets[, --get-entries], --list-rich-rules."""
    replies = [(0, "running\n", ""), (0, "public\n", ""), (0, " ".join(ipsets) + "\n", "")]
    if "multicast_proxy" in ipsets:
        replies.append((0, "\n".join(entries) + "\n", ""))
    replies.append((0, "\n".join(rules) + "\n", ""))
    return replies


def test_firewalld_first_run_creates_the_ipset_and_one_rule_per_port_then_reloads(run_module):
    run_module.replies = firewalld_reads([], [], [OTHER_RULE]) + [(0, "success", "")] * 6
    result, failed = run_module(relay_firewall, {"backend": "firewalld", "sources": ["10.0.0.6", "10.0.0.5"],
                                                 "ports": [65535, 5000]}, diff=True)
    assert not failed, result
    assert result["changed"] and result["active"]
    assert run_module.commands[4:] == [
        [FW, "--permanent", "--new-ipset=multicast_proxy", "--type=hash:ip"],
        [FW, "--permanent", "--ipset=multicast_proxy", "--add-entry=10.0.0.5"],
        [FW, "--permanent", "--ipset=multicast_proxy", "--add-entry=10.0.0.6"],
        [FW, "--permanent", "--zone=public", "--add-rich-rule=" + RULE % 5000],
        [FW, "--permanent", "--zone=public", "--add-rich-rule=" + RULE % 65535],
        [FW, "--reload"]]
    assert result["diff"] == {"before": {"sources": [], "ports": []},
                              "after": {"sources": ["10.0.0.5", "10.0.0.6"], "ports": [5000, 65535]}}


def test_firewalld_second_run_changes_nothing(run_module):
    run_module.replies = firewalld_reads(["other", "multicast_proxy"], ["10.0.0.5", "10.0.0.6"],
                                         [OTHER_RULE, RULE % 5000, RULE % 65535])
    result, failed = run_module(relay_firewall, {"backend": "firewalld", "sources": ["10.0.0.5", "10.0.0.6"],
                                                 "ports": [5000, 65535]})
    assert not failed and not result["changed"], result
    assert result["commands"] == []


def test_firewalld_drops_a_server_and_a_port_that_left_and_keeps_other_rules(run_module):
    run_module.replies = firewalld_reads(["multicast_proxy"], ["10.0.0.5", "10.0.0.6"],
                                         [OTHER_RULE, RULE % 5000, RULE % 65535]) + [(0, "success", "")] * 3
    result, failed = run_module(relay_firewall, {"backend": "firewalld", "sources": ["10.0.0.5"],
                                                 "ports": [65535]})
    assert not failed, result
    assert result["commands"] == [
        [FW, "--permanent", "--zone=public", "--remove-rich-rule=" + RULE % 5000],
        [FW, "--permanent", "--ipset=multicast_proxy", "--remove-entry=10.0.0.6"],
        [FW, "--reload"]]


def test_firewalld_absent_removes_the_rules_and_the_ipset(run_module):
    run_module.replies = firewalld_reads(["multicast_proxy"], ["10.0.0.5"], [RULE % 65535]) + [(0, "", "")] * 3
    result, failed = run_module(relay_firewall, {"backend": "firewalld", "state": "absent"})
    assert not failed, result
    assert result["commands"] == [
        [FW, "--permanent", "--zone=public", "--remove-rich-rule=" + RULE % 65535],
        [FW, "--permanent", "--delete-ipset=multicast_proxy"],
        [FW, "--reload"]]
    assert (result["sources"], result["ports"]) == ([], [])


def test_firewalld_check_mode_reads_and_changes_nothing(run_module):
    run_module.replies = firewalld_reads([], [], [])
    result, failed = run_module(relay_firewall, {"backend": "firewalld", "sources": ["10.0.0.5"], "ports": [65535],
                                                 "zone": "internal"}, check_mode=True)
    assert not failed and result["changed"], result
    # No --get-default-zone: the zone is given. Reads only, then nothing run.
    assert [command[1:] for command in run_module.commands] == [
        ["--state"], ["--permanent", "--get-ipsets"], ["--permanent", "--zone=internal", "--list-rich-rules"]]
    assert result["commands"][-1] == [FW, "--reload"]


def test_firewalld_not_running_is_left_alone(run_module):
    run_module.replies = [(252, "not running\n", "")]
    result, failed = run_module(relay_firewall, {"backend": "firewalld", "sources": ["10.0.0.5"], "ports": [1]})
    assert not failed and not result["changed"] and result["active"] is False


def test_ufw_adds_the_missing_pairs_and_deletes_those_that_left(run_module):
    run_module.replies = [(0, UFW_ACTIVE, ""), (0, UFW_ADDED, ""), (0, "Rule added", ""), (0, "Rule deleted", "")]
    result, failed = run_module(relay_firewall, {"backend": "ufw", "sources": ["10.0.0.5", "10.0.0.6"],
                                                 "ports": [65535]}, diff=True)
    assert not failed, result
    assert run_module.commands[2:] == [
        [UFW, "allow", "from", "10.0.0.6", "to", "any", "port", "65535", "proto", "udp",
         "comment", "multicast.proxy"],
        [UFW, "delete", "allow", "from", "10.0.0.9", "to", "any", "port", "65535", "proto", "udp",
         "comment", "multicast.proxy"]]
    assert result["diff"]["before"] == {"sources": ["10.0.0.5", "10.0.0.9"], "ports": [65535]}
    assert result["diff"]["after"] == {"sources": ["10.0.0.5", "10.0.0.6"], "ports": [65535]}


def test_ufw_second_run_and_inactive_ufw_change_nothing(run_module):
    run_module.replies = [(0, UFW_ACTIVE, ""), (0, UFW_ADDED, "")]
    result, failed = run_module(relay_firewall, {"backend": "ufw", "sources": ["10.0.0.9", "10.0.0.5"],
                                                 "ports": [65535]})
    assert not failed and not result["changed"], result

    run_module.replies = [(0, "Status: inactive\n", "")]
    result, failed = run_module(relay_firewall, {"backend": "ufw", "sources": ["10.0.0.5"], "ports": [65535]})
    assert not failed and not result["changed"] and result["active"] is False


def test_ufw_absent_deletes_only_its_own_rules(run_module):
    run_module.replies = [(0, UFW_ACTIVE, ""), (0, UFW_ADDED, ""), (0, "", ""), (0, "", "")]
    result, failed = run_module(relay_firewall, {"backend": "ufw", "state": "absent"})
    assert not failed, result
    assert [command[1:4] for command in run_module.commands[2:]] == [["delete", "allow", "from"]] * 2
    assert "22/tcp" not in str(run_module.commands)


def test_bad_addresses_and_ports_fail_before_any_command(run_module):
    result, failed = run_module(relay_firewall, {"backend": "ufw", "sources": ["224.1.1.1"], "ports": [5]})
    assert failed and "multicast" in result["msg"] and run_module.commands == []
    result, failed = run_module(relay_firewall, {"backend": "ufw", "sources": ["10.0.0.1"], "ports": [0]})
    assert failed and "1-65535" in result["msg"] and run_module.commands == []


def test_a_failing_change_fails_naming_the_command(run_module):
    run_module.replies = [(0, UFW_ACTIVE, ""), (0, "", ""), (1, "", "ERROR: Bad port")]
    result, failed = run_module(relay_firewall, {"backend": "ufw", "sources": ["10.0.0.5"], "ports": [65535]})
    assert failed and "ERROR: Bad port" in result["msg"] and "allow from 10.0.0.5" in result["msg"]
