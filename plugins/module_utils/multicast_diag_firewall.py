# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The doctor's firewall evaluation: would the local input hook refuse a packet?

Reads the texts the shell layer collected - the host firewall's own view
(``firewall-cmd --list-all``, ``ufw status verbose``) and the ruleset
(``nft -j list ruleset`` or ``iptables-save``) - and answers for one packet
(protocol, addresses, port, input interface, conntrack state) whether the
``input`` hook certainly drops or rejects it, and which firewall does it:
firewalld, ufw, nftables or iptables.  Whatever the evaluator does not model
makes a rule "cannot tell", never "applies": the doctor reports a firewall
only when it is sure.

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


# The ports of firewalld's services that a default zone lists; a service not
# here makes the zone "cannot tell" for a port it might open.
_FIREWALLD_SERVICE_PORTS = {
    "ssh": [(22, "tcp")], "cockpit": [(9090, "tcp")], "dhcpv6-client": [(546, "udp")],
    "dhcp": [(67, "udp")], "http": [(80, "tcp")], "https": [(443, "tcp")], "mdns": [(5353, "udp")],
    "samba-client": [(137, "udp"), (138, "udp")], "ntp": [(123, "udp")], "dns": [(53, "tcp"), (53, "udp")],
    "prometheus": [(9090, "tcp")], "prometheus-node-exporter": [(9100, "tcp")],
}
_FIREWALLD_TARGETS = {"default": "reject", "%%REJECT%%": "reject", "REJECT": "reject", "DROP": "drop"}


def _port_spec_matches(spec, port):
    """A port, a range (a-b, a:b) or a comma list of them; None when it is not one."""
    found = False
    for part in spec.split(","):
        bounds = part.replace(":", "-").split("-")
        if not all(bound.isdigit() for bound in bounds) or len(bounds) > 2:
            return None
        if int(bounds[0]) <= port <= int(bounds[-1]):
            found = True
    return found


def _rich_rule_accepts(rule, packet):
    """Does a firewalld rich rule certainly accept the packet (True), certainly not (False), or None?"""
    words = shlex.split(rule)
    if not words or words[0] != "rule" or words[-1] != "accept":
        return False if words and words[-1] in ("reject", "drop") else None
    fields = {}
    position = 1
    while position < len(words) - 1:
        word = words[position]
        if "=" in word:
            key, value = word.split("=", 1)
            fields[key] = value
            position += 1
        elif word in ("source", "destination", "port"):
            fields["_" + word] = True
            position += 1
        else:
            return None
    if fields.get("family", "ipv4") != "ipv4" or "ipset" in fields or "service" in fields or "_destination" in fields:
        return None
    if set(fields) - {"family", "_source", "address", "_port", "port", "protocol"}:
        return None
    if "address" in fields and not _ip_matches(packet["saddr"], fields["address"]):
        return False
    if "port" in fields:
        if fields.get("protocol") != "udp":
            return False
        return _port_spec_matches(fields["port"], packet["dport"])
    return "address" in fields or None


def firewalld_input_verdict(list_all_text, packet):
    """The same question for the zone ``firewall-cmd --list-all`` prints (the default zone)."""
    lines = list_all_text.splitlines()
    if not lines:
        return None
    zone = lines[0].split()[0]
    fields, rich_rules, in_rich = {}, [], False
    for line in lines[1:]:
        if in_rich and line.startswith(("\t", "        ")) and line.strip():
            rich_rules.append(line.strip())
            continue
        in_rich = False
        key, _colon, value = line.strip().partition(":")
        fields[key.strip()] = value.strip()
        in_rich = key.strip() == "rich rules"
    target = fields.get("target", "default")
    verdict = _FIREWALLD_TARGETS.get(target)
    if verdict is None:
        return None
    for spec in fields.get("ports", "").split():
        port, _slash, protocol = spec.partition("/")
        if protocol == "udp" and _port_spec_matches(port, packet["dport"]):
            return None
    for service in fields.get("services", "").split():
        if service not in _FIREWALLD_SERVICE_PORTS:
            return None
        if (packet["dport"], "udp") in _FIREWALLD_SERVICE_PORTS[service]:
            return None
    if fields.get("sources") or fields.get("source-ports"):
        return None
    for rule in rich_rules:
        accepted = _rich_rule_accepts(rule, packet)
        if accepted is None or accepted:
            return None
    return verdict, "firewalld zone %s (target %s): udp/%d is not open to %s" % (
        zone, target, packet["dport"], packet["saddr"])


# The application profiles of a default Ubuntu; another one is "cannot tell".
_UFW_APPLICATIONS = {"OpenSSH": "22/tcp"}


def _ufw_address_matches(text, address):
    if text.startswith("Anywhere"):
        return True
    if address is None:
        return None
    return _ip_matches(address, text)


def ufw_input_verdict(status_text, packet):
    """The same question for ``ufw status verbose``: its rules in order, then the incoming default."""
    lines = status_text.splitlines()
    if not lines or lines[0].strip() != "Status: active":
        return None
    default = None
    for line in lines:
        if line.startswith("Default:"):
            for part in line[len("Default:"):].split(","):
                words = part.split()
                if len(words) == 2 and words[1] == "(incoming)":
                    default = words[0]
    for line in lines:
        columns = [column.strip() for column in line.split("#", 1)[0].split("  ") if column.strip()]
        if len(columns) != 3 or columns[0] in ("To", "--") or "(v6)" in line:
            continue
        to, action, source = columns
        words = action.split()
        if len(words) != 2 or words[1] != "IN":
            continue
        to_words = to.split()
        port_spec = None
        if to_words[-1] != "Anywhere" and not _ufw_address_like(to_words[-1]):
            port_spec = _UFW_APPLICATIONS.get(to_words[-1], to_words[-1])
            to_words.pop()
        if len(to_words) > 1 or len(source.split()) > 1:
            return None
        if port_spec is not None:
            port, _slash, protocol = port_spec.partition("/")
            matches = _port_spec_matches(port, packet["dport"])
            if matches is None:
                return None
            if not matches or protocol not in ("", "udp"):
                continue
        destination = _ufw_address_matches(to_words[0], packet["daddr"]) if to_words else True
        origin = _ufw_address_matches(source, packet["saddr"])
        if destination is None or origin is None:
            return None
        if not (destination and origin):
            continue
        if words[0] in ("ALLOW", "LIMIT"):
            return None
        if words[0] in ("DENY", "REJECT"):
            return words[0].lower().replace("deny", "drop"), "ufw rule %r" % line.strip()
        return None
    if default in ("deny", "reject"):
        return ("drop" if default == "deny" else "reject"), (
            "ufw (default %s incoming): no rule allows udp/%d from %s" % (default, packet["dport"], packet["saddr"]))
    return None


def _ufw_address_like(word):
    return all(part.isdigit() for part in word.split("/")[0].split(".")) and word.count(".") == 3


_EVALUATORS = {
    "nft-json": nft_input_verdict,
    "iptables-save": iptables_input_verdict,
    "firewalld-list-all": firewalld_input_verdict,
    "ufw-status": ufw_input_verdict,
}


def firewall_verdict(firewall, packet):
    """Dispatch on the firewall text the shell layer collected."""
    if not firewall or not firewall.get("text"):
        return None
    evaluator = _EVALUATORS.get(firewall.get("format"))
    if evaluator is None:
        raise FactsError("unknown firewall format %r (use %s)" % (firewall.get("format"),
                                                                  ", ".join(sorted(_EVALUATORS))))
    return evaluator(firewall["text"], packet)


def firewall_name(firewall, where):
    """Which firewall a verdict of firewall_verdict comes from, for the finding's text."""
    fmt = firewall.get("format")
    if fmt == "firewalld-list-all" or (fmt == "nft-json" and " firewalld " in where):
        return "firewalld"
    if fmt == "ufw-status" or "ufw-" in where:
        return "ufw"
    if fmt == "nft-json" and " multicast_proxy " in where:
        return "nftables (the relay's own table)"
    return "nftables" if fmt == "nft-json" else "iptables"


def firewalls_verdict(firewalls, packet):
    """(verdict, where, firewall name) of the first collected firewall that certainly refuses the
    packet, else None.  ``firewalls``: one {"format", "text"} or a list of them."""
    if isinstance(firewalls, dict):
        firewalls = [firewalls]
    for firewall in firewalls or []:
        verdict = firewall_verdict(firewall, packet)
        if verdict:
            return verdict[0], verdict[1], firewall_name(firewall, verdict[1])
    return None
