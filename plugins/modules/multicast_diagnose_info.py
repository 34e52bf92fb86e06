#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: multicast_diagnose_info
short_description: Gather multicast facts and diagnose why multicast is not delivered
version_added: 1.0.0
description:
  - Reads, as structured facts, what C(netstat -gn), C(netstat -anu), C(ifconfig) and
    C(route -n) show, from the kernel's own tables (C(/proc/net/igmp), C(/proc/net/udp),
    C(/proc/net/route), C(/sys/class/net), one rtnetlink address dump) without running them,
    plus C(net.ipv4.igmp_max_memberships), C(rp_filter) and the relay's configs and counters.
  - Runs the doctor's rules over them and returns findings; each says what is wrong, why it
    breaks delivery, and the command or variable that fixes it.
  - The same rules run on a host with C(multis_admin --doctor) / C(multic_admin --doctor).
  - Changes nothing.
author:
  - Multicast Proxy maintainers (@multicast-proxy)
attributes:
  check_mode:
    support: full
    description: The module only reads, so it runs the same in check mode.
  diff_mode:
    support: none
    description: Nothing changes, so there is no diff.
  platform:
    support: full
    platforms: linux
    description: Reads the Linux kernel's C(/proc) and C(/sys) tables and rtnetlink.
options:
  conf_dir:
    description:
      - Directory holding the relay's configs (the relay's E(MULTICAST_CONF_DIR)).
      - A missing directory or config file means that side of the relay is not configured.
    type: path
    default: /etc/multicast
  firewall:
    description:
      - Read the host firewall (C(firewall-cmd --list-all) where firewalld runs, C(ufw status verbose) where ufw
        is active) and the ruleset (C(nft -j list ruleset), else C(iptables-save)) to find rules that drop the
        relay's traffic; a finding names the firewall that does (firewalld, ufw, nftables or iptables).
    type: bool
    default: true
  probe_ports:
    description:
      - Check that each group port the relay uses can still be shared, by binding a UDP socket
        with C(SO_REUSEADDR) to it and closing it at once. No datagram is sent or received.
      - This is the only way to see a socket that holds the port without C(SO_REUSEADDR);
        C(/proc/net/udp) does not show the option.
    type: bool
    default: true
notes:
  - Run it with privileges (C(become)) to read every process's sockets and the firewall.
  - Only the main routing table is read; policy routing rules are not considered.
  - This module was called C(multicast.proxy.multicast_diagnose) before; that name still works,
    redirected to this module by the collection's C(meta/runtime.yml). It returns the same values.
  - As an C(_info) module it never reports C(changed).
seealso:
  - module: multicast.proxy.relay_info
  - module: multicast.proxy.multicast_route
"""

EXAMPLES = r"""
- name: Diagnose multicast on the relay hosts
  multicast.proxy.multicast_diagnose_info:
  register: diagnosis

- name: Print the report
  ansible.builtin.debug:
    msg: "{{ diagnosis.report.splitlines() }}"

- name: Fail when the doctor found an error
  ansible.builtin.assert:
    that: diagnosis.summary.error == 0
    fail_msg: "{{ diagnosis.findings | selectattr('severity', 'equalto', 'error') | map(attribute='what') | list }}"
"""

RETURN = r"""
findings:
  description: What the doctor found, errors first.
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: Stable identifier of the rule, for example C(join-interface-mismatch).
      type: str
    severity:
      description: V(error) (delivery is broken), V(warning) (broken in some cases or likely), V(info).
      type: str
    subject:
      description: The interface, group, port or sysctl the finding is about.
      type: str
    what:
      description: What is wrong on this host.
      type: str
    why:
      description: Why it breaks delivery.
      type: str
    fix:
      description: The command or variable that fixes it.
      type: str
    affects:
      description: The relay sides and groups concerned, as C(side group) strings.
      type: list
      elements: str
    evidence:
      description: Symptoms this finding explains (for example a counter that stayed at zero).
      type: list
      elements: str
  sample:
    - id: join-interface-mismatch
      severity: error
      subject: 239.7.7.7
      what: local sockets joined 239.7.7.7 on eth0, but the relay client re-delivers it on eth1
      why: a membership belongs to one interface ...
      fix: join the group on eth1 in the application ...
      affects: [client 239.7.7.7]
      evidence: []
summary:
  description: Number of findings per severity.
  returned: always
  type: dict
  sample: {error: 1, warning: 0, info: 2}
report:
  description: The findings as a readable multi-line text (what C(--doctor) prints).
  returned: always
  type: str
facts:
  description:
    - Interfaces (flags, state, IPv4 addresses, multicast receive counter), group memberships
      per interface, their source filters (C(source_filters) from C(/proc/net/mcfilter), with group,
      source and how many sockets include and exclude it), UDP sockets, the routing table and the
      routes inside 224.0.0.0/4, C(igmp_max_memberships), C(rp_filter) and C(mc_forwarding) per
      interface, and the IpExt multicast counters.
  returned: always
  type: dict
group_routes:
  description: For each group the relay uses, the route the kernel picks and its interface.
  returned: always
  type: dict
  sample: {239.7.7.7: {interface: eth0, route: 0.0.0.0/0}}
relay:
  description:
    - Per side (V(server), V(client)), the config (null when absent), whether the command is
      installed, whether the daemon runs, its counters (C(-P --json)) and the interfaces each
      group is joined or re-delivered on.
  returned: always
  type: dict
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native
from ansible_collections.multicast.proxy.plugins.module_utils.multicast_diag import (
    SEVERITIES,
    client_entries,
    diagnose,
    format_report,
    probe_relay_ports,
    relay_interfaces,
    server_groups,
)
from ansible_collections.multicast.proxy.plugins.module_utils.multicast_diag_kernel import (
    FactsError,
    collect_facts,
    group_routes,
)
from ansible_collections.multicast.proxy.plugins.module_utils.relay_config import ConfigError, read_config_text
from ansible_collections.multicast.proxy.plugins.module_utils.relay_module import (
    RC_DAEMON_NOT_RUNNING,
    RELAY_BIN_DIRS,
    SIDES,
    config_path,
    run_relay,
)


def read_side_config(conf_dir, side):
    """(config or None, ConfigError text or None); a missing file is no config."""
    path = config_path(conf_dir, side)
    if not os.path.exists(path):
        return None, None
    try:
        return SIDES[side]["loader"](read_config_text(path), source=path), None
    except (IOError, OSError) as exc:
        return None, "cannot read %s: %s" % (path, to_native(exc))
    except ConfigError as exc:
        return None, to_native(exc)


def relay_state(module, conf_dir, side):
    """{"installed", "running", "error", "stats"} from ``<admin> -P --json``."""
    admin = module.get_bin_path(SIDES[side]["admin"], opt_dirs=RELAY_BIN_DIRS)
    if admin is None:
        return {"installed": False, "running": False, "error": None, "stats": None}
    rc, out, err = run_relay(module, conf_dir, [admin, "-P", "--json"])
    if rc == RC_DAEMON_NOT_RUNNING:
        return {"installed": True, "running": False, "error": None, "stats": None}
    if rc != 0:
        return {"installed": True, "running": False, "stats": None,
                "error": "%s -P --json failed (rc=%d): %s" % (SIDES[side]["admin"], rc, (err or out).strip())}
    try:
        stats = json.loads(out)
    except ValueError as exc:
        return {"installed": True, "running": True, "stats": None,
                "error": "%s -P --json printed something that is not JSON: %s" % (SIDES[side]["admin"], exc)}
    return {"installed": True, "running": True, "error": None, "stats": stats}


def read_firewall(module):
    """What firewalld and ufw say where they run, then the ruleset as text, for the doctor's
    firewall rules; None when no tool is there."""
    found = []
    firewall_cmd = module.get_bin_path("firewall-cmd", opt_dirs=["/usr/sbin", "/sbin"])
    if firewall_cmd:
        # Fails when firewalld is not running.
        rc, out, dummy = module.run_command([firewall_cmd, "--list-all"])
        if rc == 0:
            found.append({"format": "firewalld-list-all", "text": out})
    ufw = module.get_bin_path("ufw", opt_dirs=["/usr/sbin", "/sbin"])
    if ufw:
        rc, out, dummy = module.run_command([ufw, "status", "verbose"])
        if rc == 0 and out.startswith("Status: active"):
            found.append({"format": "ufw-status", "text": out})
    nft = module.get_bin_path("nft", opt_dirs=["/usr/sbin", "/sbin"])
    rc = 1
    if nft:
        rc, out, dummy = module.run_command([nft, "-j", "list", "ruleset"])
        if rc == 0:
            found.append({"format": "nft-json", "text": out})
    iptables_save = module.get_bin_path("iptables-save", opt_dirs=["/usr/sbin", "/sbin"]) if rc != 0 else None
    if iptables_save:
        rc, out, dummy = module.run_command([iptables_save])
        if rc == 0:
            found.append({"format": "iptables-save", "text": out})
    return found or None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            conf_dir=dict(type="path", default="/etc/multicast"),
            firewall=dict(type="bool", default=True),
            probe_ports=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    conf_dir = module.params["conf_dir"]
    try:
        facts = collect_facts()
    except FactsError as exc:
        module.fail_json(msg="cannot read the kernel's multicast state: %s" % to_native(exc))

    configs, states, config_errors = {}, {}, {}
    for side in ("server", "client"):
        configs[side], error = read_side_config(conf_dir, side)
        if error:
            config_errors[side] = error
        states[side] = relay_state(module, conf_dir, side)

    firewall = read_firewall(module) if module.params["firewall"] else None
    probes = probe_relay_ports(configs["server"], configs["client"]) if module.params["probe_ports"] else None
    try:
        findings = diagnose(
            facts, configs["server"], configs["client"], states["server"]["stats"], states["client"]["stats"],
            services=states, firewall=firewall, port_probes=probes, config_errors=config_errors)
    except FactsError as exc:
        module.fail_json(msg="cannot evaluate the firewall ruleset: %s" % to_native(exc))

    interfaces = relay_interfaces(facts, configs["server"], configs["client"])
    groups = ([g.group_ip for g in server_groups(configs["server"])]
              + [e.group_ip for e in client_entries(configs["client"])])
    relay = dict((side, dict(states[side], config=configs[side], interfaces=interfaces[side]))
                 for side in ("server", "client"))
    module.exit_json(
        changed=False,
        findings=findings,
        summary=dict((severity, sum(1 for f in findings if f["severity"] == severity)) for severity in SEVERITIES),
        report=format_report(findings, "multicast doctor"),
        facts=facts,
        group_routes=group_routes(facts, groups),
        relay=relay,
    )


if __name__ == "__main__":
    main()
