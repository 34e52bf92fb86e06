#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: multicast_route
short_description: Manage the IPv4 multicast route of a multi-NIC host
version_added: 1.0.0
description:
  - Makes sure the kernel routes multicast (by default 224.0.0.0/4) through a
    given gateway and/or device, like C(ip route add 224.0.0.0/4 via GATEWAY dev IFACE).
  - On a host with several interfaces the relay joins groups and sends on the
    interface of the route to the group; without this route that is the
    default route's interface, which may be the wrong one.
  - Compares against the output of C(ip -4 route show) so a second run changes
    nothing. The change is not persistent across reboots; the
    C(multicast.proxy.server) and C(multicast.proxy.client) roles also install a
    systemd unit that restores it at boot.
author:
  - multicast.proxy maintainers (@multicast-proxy)
attributes:
  check_mode:
    support: full
    description: Reports what would change; no route is touched.
  diff_mode:
    support: full
    description: Shows the matching routes before and after.
  platform:
    support: full
    platforms: posix
    description: Runs on the managed Linux host that runs (or will run) the relay.
options:
  prefix:
    description:
      - Destination prefix of the route.
    type: str
    default: 224.0.0.0/4
  gateway:
    description:
      - Next hop (C(via)). At least one of O(gateway) and O(device) is required with O(state=present).
    type: str
  device:
    description:
      - Outgoing interface (C(dev)).
    type: str
  metric:
    description:
      - Route metric. The kernel keeps one route per prefix and metric; routes
        of the same prefix with other metrics are left alone.
    type: int
    default: 0
  state:
    description:
      - V(present) adds or replaces the route, V(absent) deletes the routes for O(prefix) with this O(metric).
    type: str
    choices: [present, absent]
    default: present
requirements:
  - iproute2 (the C(ip) command)
seealso:
  - module: multicast.proxy.server_group
"""

EXAMPLES = r"""
- name: Send and receive multicast on eth1 (ip route add 224.0.0.0/4 via 10.169.31.247 dev eth1)
  multicast.proxy.multicast_route:
    gateway: 10.169.31.247
    device: eth1

- name: Remove it
  multicast.proxy.multicast_route:
    state: absent
"""

RETURN = r"""
route:
  description: The route after the change as C(ip) prints it; null when absent.
  returned: always
  type: str
  sample: 224.0.0.0/4 via 10.169.31.247 dev eth1
commands:
  description: The C(ip) command lines run (or that would run in check mode).
  returned: always
  type: list
  elements: list
  sample: [[ip, -4, route, replace, 224.0.0.0/4, via, 10.169.31.247, dev, eth1]]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native
from ansible_collections.multicast.proxy.plugins.module_utils.relay_config import (
    ConfigError,
    parse_interface,
    parse_unicast_ip,
)

# Leading words of `ip route` lines that name the route type, not the destination.
ROUTE_TYPES = frozenset(("unicast", "local", "broadcast", "multicast", "throw", "unreachable",
                         "prohibit", "blackhole", "nat", "anycast"))


def normalize_prefix(text):
    """Return (network_text, prefix_length) for a dotted-quad prefix or raise ValueError."""
    address, _slash, length_text = text.partition("/")
    if not length_text:
        length_text = "32"
    if not length_text.isdigit() or not 0 <= int(length_text) <= 32:
        raise ValueError("prefix length must be 0-32")
    length = int(length_text)
    octets = address.split(".")
    if len(octets) != 4 or not all(o.isdigit() and int(o) <= 255 for o in octets):
        raise ValueError("address must be four numbers 0-255")
    value = 0
    for octet in octets:
        value = (value << 8) | int(octet)
    if value & ((1 << (32 - length)) - 1):
        raise ValueError("host bits are set; use the network address")
    return "%s/%d" % (".".join(str(int(o)) for o in octets), length)


def parse_routes(output):
    """Parse `ip -4 route show` output into dicts: dst, type, via, dev, metric, line."""
    routes = []
    for line in output.splitlines():
        words = line.split()
        if not words:
            continue
        route_type = "unicast"
        if words[0] in ROUTE_TYPES:
            route_type = words.pop(0)
            if not words:
                continue
        dst = "0.0.0.0/0" if words[0] == "default" else words[0]
        try:
            dst = normalize_prefix(dst)
        except ValueError:
            continue
        route = {"dst": dst, "type": route_type, "via": None, "dev": None, "metric": 0, "line": line.strip()}
        # After the destination come "keyword value" pairs and bare flags (onlink, linkdown...).
        index = 1
        while index < len(words):
            word = words[index]
            value = words[index + 1] if index + 1 < len(words) else None
            if word == "via" and value is not None:
                route["via"] = value
                index += 2
            elif word == "dev" and value is not None:
                route["dev"] = value
                index += 2
            elif word == "metric" and value is not None and value.isdigit():
                route["metric"] = int(value)
                index += 2
            else:
                index += 1
        routes.append(route)
    return routes


def route_command(action, prefix, gateway, device, metric):
    argv = ["-4", "route", action, prefix]
    if gateway:
        argv += ["via", gateway]
    if device:
        argv += ["dev", device]
    if metric:
        argv += ["metric", str(metric)]
    return argv


def validate_params(module):
    params = module.params
    try:
        prefix = normalize_prefix(params["prefix"])
    except ValueError as exc:
        module.fail_json(msg="prefix %r is not an IPv4 prefix (%s); write it like 224.0.0.0/4"
                             % (params["prefix"], to_native(exc)))
    try:
        if params["gateway"]:
            parse_unicast_ip(params["gateway"], "gateway")
        if params["device"]:
            parse_interface(params["device"], "device")
    except ConfigError as exc:
        module.fail_json(msg=to_native(exc))
    if params["metric"] < 0:
        module.fail_json(msg="metric %d is negative; use 0 or a positive number" % params["metric"])
    if params["state"] == "present" and not (params["gateway"] or params["device"]):
        module.fail_json(msg="state=present needs gateway, device or both: the route must say where multicast goes")
    return prefix


def main():
    module = AnsibleModule(
        argument_spec=dict(
            prefix=dict(type="str", default="224.0.0.0/4"),
            gateway=dict(type="str"),
            device=dict(type="str"),
            metric=dict(type="int", default=0),
            state=dict(type="str", default="present", choices=["present", "absent"]),
        ),
        supports_check_mode=True,
    )
    prefix = validate_params(module)
    gateway, device, metric = module.params["gateway"], module.params["device"], module.params["metric"]
    ip = module.get_bin_path("ip", required=True, opt_dirs=["/sbin", "/usr/sbin"])

    rc, out, err = module.run_command([ip, "-4", "route", "show"])
    if rc != 0:
        module.fail_json(msg="ip -4 route show failed: %s" % err.strip(), rc=rc, stdout=out, stderr=err)
    matching = [r for r in parse_routes(out) if r["dst"] == prefix and r["metric"] == metric]

    commands = []
    if module.params["state"] == "present":
        wanted = [r for r in matching if r["type"] == "unicast" and r["via"] == (gateway or r["via"])
                  and r["dev"] == (device or r["dev"])]
        if not wanted:
            commands.append(route_command("replace", prefix, gateway, device, metric))
    else:
        for route in matching:
            commands.append(route_command("del", prefix, route["via"], route["dev"], metric))

    before = "".join(r["line"] + "\n" for r in matching)
    after = before
    if commands and not module.check_mode:
        for argv in commands:
            rc, out, err = module.run_command([ip] + argv)
            if rc != 0:
                module.fail_json(msg="ip %s failed: %s; check that the device exists and the gateway is on "
                                     "a directly connected network" % (" ".join(argv), err.strip()),
                                 rc=rc, stdout=out, stderr=err)
        rc, out, err = module.run_command([ip, "-4", "route", "show"])
        if rc != 0:
            module.fail_json(msg="ip -4 route show failed: %s" % err.strip(), rc=rc, stdout=out, stderr=err)
        after = "".join(r["line"] + "\n" for r in parse_routes(out) if r["dst"] == prefix and r["metric"] == metric)
    elif commands:
        if module.params["state"] == "present":
            after = " ".join(route_command("replace", prefix, gateway, device, metric)[3:]) + "\n"
        else:
            after = ""

    module.exit_json(
        changed=bool(commands),
        route=after.splitlines()[0] if after else None,
        commands=[["ip"] + argv for argv in commands],
        diff=dict(before=before, after=after),
    )


if __name__ == "__main__":
    main()
