# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The doctor's firewall evaluation: nftables JSON and iptables-save rulesets against one packet."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

import pytest

from ansible_collections.multicast.proxy.plugins.module_utils.multicast_diag_firewall import firewall_verdict
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
    with pytest.raises(FactsError, match="nft-json or iptables-save"):
        firewall_verdict({"format": "pf", "text": "block all"}, {})
    with pytest.raises(FactsError, match="nft -j list ruleset"):
        firewall_verdict({"format": "nft-json", "text": "table inet x {}"}, {})
