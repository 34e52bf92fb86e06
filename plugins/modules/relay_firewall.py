#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: relay_firewall
short_description: Open the relay client's ports to the relay servers in firewalld or ufw
version_added: 1.0.0
description:
  - Lets UDP from the relay servers' addresses reach the relay client's ports (the groups' C(server_port)s)
    through the host firewall, and nothing else of what the firewall refuses.
  - V(firewalld) - the addresses in the permanent ipset C(multicast_proxy) (C(hash:ip)) and, per port, the
    rich rule C(rule family="ipv4" source ipset="multicast_proxy" port port="PORT" protocol="udp" accept)
    in O(zone); a change is made permanent and then applied with C(firewall-cmd --reload) (the only way
    firewalld creates an ipset at runtime; runtime-only changes of others are lost, as with any reload).
    The rich rules that name the ipset are this module's; others are left alone.
  - V(ufw) - per address and port C(ufw allow from ADDRESS to any port PORT proto udp comment multicast.proxy);
    the rules with that comment are this module's (C(ufw show added)); others are left alone.
  - A firewall that is not running (C(firewall-cmd --state), C(ufw status)) is left alone and the
    result says O(backend) is not active; nothing else opens a port there.
  - The C(multicast.proxy.client) role runs this with O(sources) and O(ports) from the membership filter
    when C(multicast_proxy_firewall_open) is true; hosts with plain nftables get the role's own table instead.
author:
  - multicast.proxy maintainers (@multicast-proxy)
attributes:
  check_mode:
    support: full
    description: Reads the firewall and reports what would change; nothing is changed.
  diff_mode:
    support: full
    description: The module's addresses and ports before and after.
  platform:
    support: full
    platforms: posix
    description: Runs on the managed Linux host that runs the relay client.
options:
  backend:
    description: The host firewall to change.
    type: str
    choices: [firewalld, ufw]
    required: true
  sources:
    description:
      - IPv4 addresses of the relay servers that send to this host. Empty with O(state=present) removes
        what the module opened (there is nothing to open).
    type: list
    elements: str
    default: []
  ports:
    description: UDP ports the relay client listens on (the groups' C(server_port)s).
    type: list
    elements: int
    default: []
  zone:
    description: The firewalld zone of the rich rules; empty for the default zone (C(firewall-cmd --get-default-zone)).
    type: str
    default: ""
  state:
    description: V(present) opens exactly O(ports) to exactly O(sources); V(absent) removes all the module opened.
    type: str
    choices: [present, absent]
    default: present
requirements:
  - firewalld (C(firewall-cmd)) or ufw, run as root
seealso:
  - module: multicast.proxy.multicast_diagnose_info
"""

EXAMPLES = r"""
- name: Let the relay servers reach the relay client on UDP 65535
  multicast.proxy.relay_firewall:
    backend: firewalld
    sources: [10.0.0.5, 10.0.0.6]
    ports: [65535]

- name: Remove what was opened
  multicast.proxy.relay_firewall:
    backend: ufw
    state: absent
"""

RETURN = r"""
active:
  description: Whether O(backend) runs on the host; when false nothing was read or changed.
  returned: always
  type: bool
  sample: true
sources:
  description: The addresses open after the change (in check mode, what would be).
  returned: always
  type: list
  elements: str
  sample: [10.0.0.5, 10.0.0.6]
ports:
  description: The ports open to them after the change.
  returned: always
  type: list
  elements: int
  sample: [65535]
commands:
  description: The commands that changed the firewall (or would, in check mode).
  returned: always
  type: list
  elements: list
  sample: [[firewall-cmd, --permanent, --ipset=multicast_proxy, --add-entry=10.0.0.5]]
"""

import re

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native
from ansible_collections.multicast.proxy.plugins.module_utils.relay_config import ConfigError, parse_unicast_ip

IPSET = "multicast_proxy"
UFW_COMMENT = "multicast.proxy"
_FIREWALLD_RULE_PORT = re.compile(r'source ipset="%s" port port="(\d+)" protocol="udp" accept' % IPSET)
_UFW_RULE = re.compile(r"^ufw allow from (\S+) to any port (\d+) proto udp comment '%s'$" % re.escape(UFW_COMMENT))


def firewalld_rule(port):
    return 'rule family="ipv4" source ipset="%s" port port="%d" protocol="udp" accept' % (IPSET, port)


def ufw_rule(source, port):
    """The words after ``ufw`` (and ``ufw delete``) of one rule of this module."""
    return ["allow", "from", source, "to", "any", "port", str(port), "proto", "udp", "comment", UFW_COMMENT]


def parse_firewalld_rules(text):
    """{port: rule text} of this module's rich rules in ``--list-rich-rules`` output."""
    found = {}
    for line in text.splitlines():
        match = _FIREWALLD_RULE_PORT.search(line)
        if match:
            found[int(match.group(1))] = line.strip()
    return found


def parse_ufw_added(text):
    """Sorted (source, port) of this module's rules in ``ufw show added`` output."""
    found = set()
    for line in text.splitlines():
        match = _UFW_RULE.match(line.strip())
        if match:
            found.add((match.group(1), int(match.group(2))))
    return sorted(found)


class Firewall(object):
    def __init__(self, module, program):
        self.module = module
        self.program = module.get_bin_path(program, opt_dirs=["/usr/sbin", "/sbin"])
        self.commands = []

    def read(self, *args):
        """Output of a command that changes nothing; fails the module when it fails."""
        rc, out, err = self.module.run_command([self.program] + list(args))
        if rc != 0:
            self.module.fail_json(msg="%s %s failed (rc %d): %s"
                                  % (self.program, " ".join(args), rc, (err or out).strip()))
        return out

    def change(self, *args):
        self.commands.append([self.program] + list(args))
        if self.module.check_mode:
            return
        rc, out, err = self.module.run_command([self.program] + list(args))
        if rc != 0:
            self.module.fail_json(msg="%s %s failed (rc %d): %s"
                                  % (self.program, " ".join(args), rc, (err or out).strip()), commands=self.commands)


def apply_firewalld(module, sources, ports):
    """(active, before, after, commands) for firewalld."""
    firewall = Firewall(module, "firewall-cmd")
    if firewall.program is None:
        return False, None, None, []
    rc, dummy, dummy = module.run_command([firewall.program, "--state"])
    if rc != 0:
        return False, None, None, []
    zone = module.params["zone"] or firewall.read("--get-default-zone").strip()
    has_ipset = IPSET in firewall.read("--permanent", "--get-ipsets").split()
    entries = sorted(firewall.read("--permanent", "--ipset=%s" % IPSET, "--get-entries").split()) if has_ipset else []
    rules = parse_firewalld_rules(firewall.read("--permanent", "--zone=%s" % zone, "--list-rich-rules"))
    before = {"sources": entries, "ports": sorted(rules)}
    wanted = bool(sources and ports)
    if wanted and not has_ipset:
        firewall.change("--permanent", "--new-ipset=%s" % IPSET, "--type=hash:ip")
    for source in sources:
        if source not in entries:
            firewall.change("--permanent", "--ipset=%s" % IPSET, "--add-entry=%s" % source)
    for port in ports:
        if port not in rules:
            firewall.change("--permanent", "--zone=%s" % zone, "--add-rich-rule=%s" % firewalld_rule(port))
    for port, rule in sorted(rules.items()):
        if port not in ports:
            firewall.change("--permanent", "--zone=%s" % zone, "--remove-rich-rule=%s" % rule)
    if wanted:
        for entry in entries:
            if entry not in sources:
                firewall.change("--permanent", "--ipset=%s" % IPSET, "--remove-entry=%s" % entry)
    elif has_ipset:
        firewall.change("--permanent", "--delete-ipset=%s" % IPSET)
    if firewall.commands:
        firewall.change("--reload")
    after = {"sources": sources if wanted else [], "ports": ports if wanted else []}
    return True, before, after, firewall.commands


def apply_ufw(module, sources, ports):
    """(active, before, after, commands) for ufw."""
    firewall = Firewall(module, "ufw")
    if firewall.program is None:
        return False, None, None, []
    status = firewall.read("status")
    if not status.strip().startswith("Status: active"):
        return False, None, None, []
    present = parse_ufw_added(firewall.read("show", "added"))
    wanted = sorted((source, port) for source in sources for port in ports)
    for source, port in wanted:
        if (source, port) not in present:
            firewall.change(*ufw_rule(source, port))
    for source, port in present:
        if (source, port) not in wanted:
            firewall.change("delete", *ufw_rule(source, port))

    def summary(pairs):
        return {"sources": sorted(set(s for s, p in pairs)), "ports": sorted(set(p for s, p in pairs))}
    return True, summary(present), summary(wanted), firewall.commands


def main():
    module = AnsibleModule(
        argument_spec=dict(
            backend=dict(type="str", choices=["firewalld", "ufw"], required=True),
            sources=dict(type="list", elements="str", default=[]),
            ports=dict(type="list", elements="int", default=[]),
            zone=dict(type="str", default=""),
            state=dict(type="str", choices=["present", "absent"], default="present"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    try:
        sources = sorted(set(parse_unicast_ip(source, "sources") for source in params["sources"]),
                         key=lambda address: [int(octet) for octet in address.split(".")])
    except ConfigError as exc:
        module.fail_json(msg="%s; give the relay servers' IPv4 addresses" % to_native(exc))
    bad = [port for port in params["ports"] if not 1 <= port <= 65535]
    if bad:
        module.fail_json(msg="ports %s are outside 1-65535; give the groups' server_port values" % bad)
    ports = sorted(set(params["ports"]))
    if params["state"] == "absent":
        sources, ports = [], []
    apply = apply_firewalld if params["backend"] == "firewalld" else apply_ufw
    active, before, after, commands = apply(module, sources, ports)
    result = {"changed": bool(commands), "active": active, "commands": commands,
              "sources": (after or {}).get("sources", []), "ports": (after or {}).get("ports", [])}
    if module._diff and active:
        result["diff"] = {"before": before, "after": after}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
