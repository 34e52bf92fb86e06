# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The doctor's firewall evaluation: nftables JSON and iptables-save rulesets against one packet."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

import pytest

from ansible_collections.multicast.proxy.plugins.module_utils.multicast_diag_firewall import (
    firewall_verdict,
    firewalls_verdict,
)
from ansible_collections.multicast.proxy.plugins.module_utils.multicast_diag_kernel import FactsError


def nft_ruleset(rules, policy="accept", chain_type="filter"):
    items = [{"metainfo": {"json_schema_version": 1}},
             {"table": {"family": "inet", "name": "fw"}},
             {"chain": {"family": "inet", "table": "fw", "name": "input", "type": chain_type, "hook": "input",
                        "prio": 0, "policy": policy}},
             {"chain": {"family": "inet", "table": "fw", "name": "relay"}}]
    for handle, (chain, expr) in enumerate(rules, start=1):
        items.append({"rule": {"family": "inet", "table": "fw", "chain": chain, "handle": handle, "expr": expr}})
    return {"format": "nft-json", "text": json.dumps({"nftables": items})}


def dport(port, op="=="):
    return {"match": {"op": op, "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": port}}


def test_nft_verdicts_follow_jumps_policies_and_established_rules():
    packet = {"l4proto": "udp", "saddr": "10.0.0.1", "daddr": "10.0.0.5", "dport": 47001, "iifname": "eth0",
              "ct_state": "new", "nfproto": "ipv4"}
    jump = nft_ruleset([("input", [{"jump": {"target": "relay"}}]),
                        ("relay", [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                                              "right": {"prefix": {"addr": "10.0.0.0", "len": 24}}}},
                                   {"reject": None}])])
    assert firewall_verdict(jump, packet)[0] == "reject"
    established_only = nft_ruleset([("input", [{"match": {"op": "in", "left": {"ct": {"key": "state"}},
                                                          "right": {"set": ["established", "related"]}}},
                                               {"accept": None}])], policy="drop")
    assert firewall_verdict(established_only, packet)[1].startswith("policy drop")
    allowed = nft_ruleset([("input", [dport({"range": [47000, 47010]}), {"accept": None}])], policy="drop")
    assert firewall_verdict(allowed, packet) is None
    other_port = nft_ruleset([("input", [dport(47001, "!="), {"drop": None}])])
    assert firewall_verdict(other_port, packet) is None
    unknown = nft_ruleset([("input", [{"xt": {"type": "match", "name": "addrtype"}}, {"drop": None}])])
    assert firewall_verdict(unknown, packet) is None
    nat_chain = nft_ruleset([("input", [{"drop": None}])], chain_type="nat")
    assert firewall_verdict(nat_chain, packet) is None


def test_iptables_save_rules():
    packet = {"l4proto": "udp", "saddr": "10.0.0.1", "daddr": "10.0.0.5", "dport": 47001, "iifname": "eth0",
              "ct_state": "new", "nfproto": "ipv4"}

    def verdict(text):
        return firewall_verdict({"format": "iptables-save", "text": text}, packet)

    assert verdict("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p udp -m udp --dport 47001 -j DROP\nCOMMIT\n")[0] == "drop"
    assert verdict("*filter\n:INPUT DROP [0:0]\n-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"
                   "COMMIT\n") == ("drop", "iptables filter INPUT policy DROP")
    assert verdict("*filter\n:INPUT DROP [0:0]\n-A INPUT -i eth+ -p udp -m multiport --dports 47000:47002 "
                   "-m comment --comment \"relay frames\" -j ACCEPT\nCOMMIT\n") is None
    assert verdict("*filter\n:INPUT ACCEPT [0:0]\n:SVC - [0:0]\n-A INPUT -j SVC\n"
                   "-A SVC ! -s 10.0.0.0/24 -j DROP\n-A SVC -s 10.0.0.1/32 -p udp -j REJECT\nCOMMIT\n")[0] == "reject"
    assert verdict("*nat\n:INPUT DROP [0:0]\nCOMMIT\n") is None


def test_unknown_firewall_format_is_refused():
    with pytest.raises(FactsError, match="firewalld-list-all, iptables-save, nft-json, ufw-status"):
        firewall_verdict({"format": "pf", "text": "block all"}, {})
    with pytest.raises(FactsError, match="nft -j list ruleset"):
        firewall_verdict({"format": "nft-json", "text": "table inet x {}"}, {})


# Captured from EL 9 (firewalld 1.3): the default zone, the relay port not open.
FIREWALLD_LIST_ALL = "\n".join([
    "public (active)",
    "  target: default",
    "  icmp-block-inversion: no",
    "  interfaces: eth0",
    "  sources: ",
    "  services: cockpit dhcpv6-client ssh",
    "  ports: 9100/tcp",
    "  protocols: ",
    "  forward: yes",
    "  masquerade: no",
    "  forward-ports: ",
    "  source-ports: ",
    "  icmp-blocks: ",
    "  rich rules: ",
    "",
])
RICH_RULE = '\trule family="ipv4" source address="%s" port port="47001" protocol="udp" accept\n'
# Captured from Ubuntu 24.04 (ufw 0.36.2).
UFW_STATUS = """\
Status: active
Logging: on (low)
Default: deny (incoming), allow (outgoing), disabled (routed)
New profiles: skip

To                         Action      From
--                         ------      ----
OpenSSH                    ALLOW IN    Anywhere
9100/tcp                   ALLOW IN    10.0.0.0/8
OpenSSH (v6)               ALLOW IN    Anywhere (v6)
"""
PACKET = {"l4proto": "udp", "saddr": "10.0.0.1", "daddr": "10.0.0.5", "dport": 47001, "iifname": "eth0",
          "ct_state": "new", "nfproto": "ipv4"}


def firewalld(text):
    return {"format": "firewalld-list-all", "text": text}


def ufw(text):
    return {"format": "ufw-status", "text": text}


def test_firewalld_rejects_a_port_its_zone_does_not_open():
    verdict = firewall_verdict(firewalld(FIREWALLD_LIST_ALL), PACKET)
    assert verdict == ("reject", "firewalld zone public (target default): udp/47001 is not open to 10.0.0.1")
    assert firewalls_verdict([firewalld(FIREWALLD_LIST_ALL)], PACKET)[2] == "firewalld"


@pytest.mark.parametrize("change", [
    ("  ports: 9100/tcp\n", "  ports: 9100/tcp 47001/udp\n"),
    ("  ports: 9100/tcp\n", "  ports: 47000-47010/udp\n"),
    ("  target: default\n", "  target: ACCEPT\n"),
    ("  rich rules: \n", "  rich rules: \n" + RICH_RULE % "10.0.0.1"),
    ("  rich rules: \n", "  rich rules: \n" + RICH_RULE % "10.0.0.0/24"),
    # Cannot tell: a service of unknown ports, the role's own ipset (entries not listed), sources.
    ("  services: cockpit dhcpv6-client ssh\n", "  services: ssh relay-custom\n"),
    ("  rich rules: \n", '  rich rules: \n\trule family="ipv4" source ipset="multicast_proxy" port port="47001" '
                         'protocol="udp" accept\n'),
    ("  sources: \n", "  sources: 10.0.0.0/8\n"),
])
def test_firewalld_opens_or_cannot_tell(change):
    assert firewall_verdict(firewalld(FIREWALLD_LIST_ALL.replace(*change)), PACKET) is None


def test_firewalld_rich_rule_for_another_server_or_a_drop_target():
    other = FIREWALLD_LIST_ALL.replace("  rich rules: \n", "  rich rules: \n" + RICH_RULE % "10.0.0.9")
    assert firewall_verdict(firewalld(other), PACKET)[0] == "reject"
    assert firewall_verdict(firewalld(FIREWALLD_LIST_ALL.replace("target: default", "target: DROP")),
                            PACKET)[0] == "drop"


def test_ufw_default_deny_without_a_rule_for_the_port():
    verdict = firewall_verdict(ufw(UFW_STATUS), PACKET)
    assert verdict == ("drop", "ufw (default deny incoming): no rule allows udp/47001 from 10.0.0.1")
    assert firewalls_verdict(ufw(UFW_STATUS), PACKET)[2] == "ufw"


@pytest.mark.parametrize("rule, expected", [
    ("47001/udp                  ALLOW IN    10.0.0.1                   # multicast.proxy", None),
    ("47001                      ALLOW IN    Anywhere", None),
    ("47000:47010/udp            ALLOW IN    10.0.0.0/24", None),
    ("Anywhere                   ALLOW IN    10.0.0.1", None),
    ("10.0.0.5 47001/udp         ALLOW IN    10.0.0.1", None),
    ("47001/tcp                  ALLOW IN    Anywhere", "drop"),
    ("47001/udp                  ALLOW IN    10.0.0.9", "drop"),
    ("47001/udp                  REJECT IN   10.0.0.1", "reject"),
    # An application profile this evaluator does not know: cannot tell.
    ("Relay                      ALLOW IN    Anywhere", None),
])
def test_ufw_rules_in_order(rule, expected):
    text = UFW_STATUS.replace("OpenSSH (v6)", rule + "\nOpenSSH (v6)")
    verdict = firewall_verdict(ufw(text), PACKET)
    assert (verdict and verdict[0]) == expected, verdict


def test_ufw_inactive_or_default_allow_blocks_nothing():
    assert firewall_verdict(ufw("Status: inactive\n"), PACKET) is None
    assert firewall_verdict(ufw(UFW_STATUS.replace("deny (incoming)", "allow (incoming)")), PACKET) is None


def test_nft_named_sets_and_the_firewall_named_by_table_and_chain():
    items = [{"table": {"family": "inet", "name": "multicast_proxy"}},
             {"set": {"family": "inet", "table": "multicast_proxy", "name": "servers", "type": "ipv4_addr",
                      "elem": ["10.0.0.7"]}},
             {"set": {"family": "inet", "table": "multicast_proxy", "name": "ports", "type": "inet_service",
                      "elem": [47001]}},
             {"chain": {"family": "inet", "table": "multicast_proxy", "name": "input", "type": "filter",
                        "hook": "input", "prio": -1, "policy": "accept"}},
             {"rule": {"family": "inet", "table": "multicast_proxy", "chain": "input", "handle": 4,
                       "expr": [dport("@ports"),
                                {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                                           "right": "@servers"}},
                                {"accept": None}]}},
             {"rule": {"family": "inet", "table": "multicast_proxy", "chain": "input", "handle": 5,
                       "expr": [dport("@ports"), {"drop": None}]}}]
    own = {"format": "nft-json", "text": json.dumps({"nftables": items})}
    verdict = firewalls_verdict(own, PACKET)
    assert verdict == ("drop", "table inet multicast_proxy chain input handle 5", "nftables (the relay's own table)")
    items[1]["set"]["elem"].append("10.0.0.1")
    assert firewalls_verdict({"format": "nft-json", "text": json.dumps({"nftables": items})}, PACKET) is None
    firewalld_table = nft_ruleset([("input", [{"drop": None}])])
    firewalld_table["text"] = firewalld_table["text"].replace('"fw"', '"firewalld"')
    assert firewalls_verdict(firewalld_table, PACKET)[2] == "firewalld"
    assert firewalls_verdict(nft_ruleset([("input", [{"drop": None}])]), PACKET)[2] == "nftables"
    iptables = {"format": "iptables-save", "text": "*filter\n:INPUT DROP [0:0]\n:ufw-user-input - [0:0]\n"
                "-A INPUT -j ufw-user-input\n-A ufw-user-input -p udp --dport 47001 -j DROP\nCOMMIT\n"}
    assert firewalls_verdict(iptables, PACKET)[2] == "ufw"
    plain = {"format": "iptables-save", "text": "*filter\n:INPUT DROP [0:0]\nCOMMIT\n"}
    assert firewalls_verdict(plain, PACKET)[2] == "iptables"


def test_the_first_firewall_that_refuses_is_named():
    allowing = ufw(UFW_STATUS.replace("deny (incoming)", "allow (incoming)"))
    assert firewalls_verdict([allowing, firewalld(FIREWALLD_LIST_ALL)], PACKET)[2] == "firewalld"
    assert firewalls_verdict([allowing], PACKET) is None
    assert firewalls_verdict(None, PACKET) is None
