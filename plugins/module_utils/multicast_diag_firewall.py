# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The doctor's firewall evaluation: would the local input hook refuse a packet?

Reads the ruleset text the shell layer collected (``nft -j list ruleset`` or
``iptables-save``) and answers for one packet (protocol, addresses, port,
input interface, conntrack state) whether the ``input`` hook certainly drops
or rejects it.  Whatever the evaluator does not model makes a rule "cannot
tell", never "applies": the doctor reports a firewall only when it is sure.

Standard library only, Python 3.6 to 3.13.  The relay package uses this file
through the symlink ``files/multicast_proxy/multicast_diag_firewall.py``; the
import of ``multicast_diag_kernel`` is relative, so it resolves in the relay
package and in the collection's module_utils alike.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import shlex

from .multicast_diag_kernel import FactsError, in_prefix, ip_to_int


def _ip_matches(address, right):
    if isinstance(right, dict) and "prefix" in right:
        return in_prefix(address, right["prefix"]["addr"], right["prefix"]["len"])
    if isinstance(right, dict) and "range" in right:
        low, high = right["range"]
        return ip_to_int(low) <= ip_to_int(address) <= ip_to_int(high)
    if isinstance(right, str):
        if "/" in right:
            network, length = right.split("/")
            return in_prefix(address, network, int(length))
        return right == address
    return None


def _value_matches(kind, value, right):
    """Does one packet field match one nft right-hand side?  None = cannot tell."""
    if isinstance(right, dict) and "set" in right:
        right = right["set"]
    if isinstance(right, list):
        results = [_value_matches(kind, value, item) for item in right]
        if True in results:
            return True
        return None if None in results else False
    if value is None:
        return None
    if kind == "ip":
        return _ip_matches(value, right)
    if kind == "port":
        if isinstance(right, dict) and "range" in right:
            return right["range"][0] <= value <= right["range"][1]
        return value == right if isinstance(right, int) else None
    if kind == "name":
        if not isinstance(right, str):
            return None
        if right.endswith("*"):
            return value.startswith(right[:-1])
        return value == right
    if kind == "ct_state":
        return value == right if isinstance(right, str) else None
    if kind == "l4proto":
        return right in (value, 17) if value == "udp" else None
    return None


def _nft_left_field(left):
    """Which packet field an nft match reads: (packet key, kind) or None."""
    if not isinstance(left, dict):
        return None
    payload = left.get("payload")
    if payload is not None:
        protocol, field = payload.get("protocol"), payload.get("field")
        if protocol in ("udp", "th") and field == "dport":
            return "dport", "port"
        if protocol == "ip" and field in ("saddr", "daddr"):
            return field, "ip"
        if protocol == "ip" and field == "protocol":
            return "l4proto", "l4proto"
        return None
    meta = left.get("meta")
    if meta is not None:
        key = meta.get("key")
        if key == "l4proto":
            return "l4proto", "l4proto"
        if key == "iifname":
            return "iifname", "name"
        if key == "nfproto":
            return "nfproto", "name"
        return None
    ct = left.get("ct")
    if ct is not None and ct.get("key") == "state":
        return "ct_state", "ct_state"
    return None


def _nft_match(expression, packet):
    field = _nft_left_field(expression.get("left"))
    if field is None:
        return None
    key, kind = field
    result = _value_matches(kind, packet.get(key), expression.get("right"))
    if result is None:
        return None
    operator = expression.get("op", "==")
    if operator in ("==", "in"):
        return result
    if operator == "!=":
        return not result
    return None


_NFT_VERDICTS = ("accept", "drop", "reject", "jump", "goto", "return")


def _nft_rule_outcome(rule, packet):
    """(verdict, argument) when the rule certainly applies to the packet, else None."""
    for statement in rule.get("expr", []):
        if "match" in statement:
            if _nft_match(statement["match"], packet) is not True:
                return None
            continue
        for verdict in _NFT_VERDICTS:
            if verdict in statement:
                argument = statement[verdict]
                return verdict, argument.get("target") if isinstance(argument, dict) else None
        if set(statement) - {"counter", "log", "comment"}:
            # A statement this evaluator does not model (limit, xt, meter...):
            # do not claim the rule applies.
            return None
    return None


def _nft_describe(rule):
    return "table %s %s chain %s handle %s" % (rule.get("family"), rule.get("table"),
                                               rule.get("chain"), rule.get("handle"))


def _nft_walk(rules_by_chain, table, chain, packet, depth):
    """None when the chain falls through (or returns); ("end", None) when a goto
    chain fell through, which ends the base chain; else (verdict, where)."""
    if depth > 16:
        return None
    for rule in rules_by_chain.get((table, chain), []):
        outcome = _nft_rule_outcome(rule, packet)
        if outcome is None:
            continue
        verdict, target = outcome
        if verdict in ("jump", "goto"):
            result = _nft_walk(rules_by_chain, table, target, packet, depth + 1)
            if result is not None:
                return result
            if verdict == "goto":
                return "end", None
            continue
        if verdict == "return":
            return None
        return verdict, _nft_describe(rule)
    return None


def _nft_resolve_sets(value, sets, table):
    """A copy of a rule's JSON with each named set reference ("@servers") replaced by the set's
    elements; a set the ruleset does not list stays a name, which no match claims."""
    if isinstance(value, str) and value.startswith("@") and (table, value[1:]) in sets:
        return {"set": sets[(table, value[1:])]}
    if isinstance(value, dict):
        return dict((key, _nft_resolve_sets(item, sets, table)) for key, item in value.items())
    if isinstance(value, list):
        return [_nft_resolve_sets(item, sets, table) for item in value]
    return value


def nft_input_verdict(ruleset_json, packet):
    """("drop"|"reject", where) when the input hook certainly refuses the packet, else None."""
    try:
        items = json.loads(ruleset_json).get("nftables", [])
    except (ValueError, AttributeError):
        raise FactsError("the nftables ruleset is not `nft -j list ruleset` JSON")
    sets = {}
    for item in items:
        named = item.get("set")
        if named:
            sets[((named.get("family"), named.get("table")), named.get("name"))] = named.get("elem", [])
    base_chains = []
    rules_by_chain = {}
    for item in items:
        chain = item.get("chain")
        if chain and chain.get("hook") == "input" and chain.get("family") in ("ip", "inet") \
                and chain.get("type", "filter") == "filter":
            base_chains.append(chain)
        rule = item.get("rule")
        if rule:
            table = (rule.get("family"), rule.get("table"))
            if sets:
                rule = _nft_resolve_sets(rule, sets, table)
            rules_by_chain.setdefault((table, rule.get("chain")), []).append(rule)
    for chain in sorted(base_chains, key=lambda c: c.get("prio", 0)):
        table = (chain.get("family"), chain.get("table"))
        result = _nft_walk(rules_by_chain, table, chain["name"], packet, 0)
        if result is not None and result[0] in ("drop", "reject"):
            return result
        if (result is None or result[0] == "end") and chain.get("policy") == "drop":
            return "drop", "policy drop of table %s %s chain %s" % (table[0], table[1], chain["name"])
    return None


def _iptables_rule(tokens, packet):
    """(target, matched) of one iptables-save rule; matched None = cannot tell."""
    matched = True
    target = None
    negate = False
    position = 0
    while position < len(tokens):
        token = tokens[position]
        value = tokens[position + 1] if position + 1 < len(tokens) else None
        position += 2
        result = None
        if token == "!":
            negate = True
            position -= 1
            continue
        if token in ("-j", "--jump", "-g", "--goto"):
            target = value
            continue
        if token in ("-m", "--match", "--comment"):
            continue
        if token in ("-p", "--protocol"):
            result = value in ("udp", "17", "all")
        elif token in ("-s", "--source", "-d", "--destination"):
            address = packet["saddr"] if token in ("-s", "--source") else packet["daddr"]
            if address is not None:
                result = any(_ip_matches(address, part) for part in value.split(","))
            else:
                matched = None
        elif token in ("-i", "--in-interface"):
            result = _value_matches("name", packet["iifname"], value.replace("+", "*"))
            if result is None:
                matched = None
        elif token in ("--dport", "--destination-port", "--dports", "--destination-ports"):
            result = False
            for part in value.split(","):
                bounds = part.split(":")
                if int(bounds[0]) <= packet["dport"] <= int(bounds[-1]):
                    result = True
        elif token in ("--ctstate", "--state"):
            result = packet["ct_state"].upper() in value.split(",")
        else:
            matched = None
        if result is not None and matched is not None:
            if result == negate:
                matched = False
        negate = False
    return target, matched


def iptables_input_verdict(save_text, packet):
    """The same question as nft_input_verdict, for ``iptables-save`` output."""
    policies = {}
    rules = {}
    in_filter = False
    for line in save_text.splitlines():
        line = line.strip()
        if line.startswith("*"):
            in_filter = line == "*filter"
        elif in_filter and line.startswith(":"):
            name, policy = line[1:].split()[:2]
            policies[name] = policy
        elif in_filter and line.startswith("-A "):
            tokens = shlex.split(line)
            rules.setdefault(tokens[1], []).append((tokens[2:], line))

    def walk(chain, depth):
        if depth > 16:
            return None
        for tokens, text in rules.get(chain, []):
            target, matched = _iptables_rule(tokens, packet)
            if matched is not True or target is None:
                continue
            if target in ("DROP", "REJECT"):
                return target.lower(), text
            if target == "ACCEPT":
                return "accept", text
            if target == "RETURN":
                return None
            if target in rules:
                result = walk(target, depth + 1)
                if result is not None:
                    return result
        return None

    result = walk("INPUT", 0)
    if result is None and policies.get("INPUT") == "DROP":
        return "drop", "iptables filter INPUT policy DROP"
    return result if result and result[0] != "accept" else None


def firewall_verdict(firewall, packet):
    """Dispatch on the firewall text the shell layer collected."""
    if not firewall or not firewall.get("text"):
        return None
    if firewall.get("format") == "nft-json":
        return nft_input_verdict(firewall["text"], packet)
    if firewall.get("format") == "iptables-save":
        return iptables_input_verdict(firewall["text"], packet)
    raise FactsError("unknown firewall format %r (use nft-json or iptables-save)" % firewall.get("format"))
