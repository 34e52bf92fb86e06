#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: relay_settings
short_description: Manage the settings of a relay config that apply to all its groups
version_added: 1.0.0
description:
  - Sets or removes the top-level settings of C(server_cfg.json.txt) or C(client_cfg.json.txt),
    the keys beside the group list that apply to every group or entry, like
    C(multis_admin --set KEY=VALUE) and C(multic_admin --set KEY=VALUE) do.
  - The groups and entries themselves are managed with M(multicast.proxy.server_group) and
    M(multicast.proxy.client_server).
  - The file is validated by the same config model the relay uses, written
    atomically under the relay's config lock, and then applied to the running
    daemon with the side's reload command.
author:
  - multicast.proxy maintainers (@multicast-proxy)
options:
  side:
    description:
      - Which config to change, V(server) (C(multis_monitord)) or V(client) (C(multic_monitord)).
    type: str
    choices: [server, client]
    required: true
  interface:
    description:
      - On the server, the interface it joins every group on that names none; on the client, the
        interface it re-delivers on.
      - An empty string removes the setting (the server then joins as O(join_interfaces) says; the
        client uses the interface of the kernel route to each group). Omit it to keep the current value.
    type: str
  join_interfaces:
    description:
      - Server only. Where the groups that name no interface are joined.
      - V([all]) (the default) joins every up interface with C(MULTICAST) and an IPv4 address, and the
        route's interface, on the group's one socket, and follows interfaces as they come and go (rescanned
        every second). A local source on a host with several NICs is relayed whichever interface it sends
        out of (the looped-back copy reaches only sockets that joined on that interface).
      - V([route]) joins only on the interface of the kernel route to each group (the behaviour before
        this setting).
      - A list of interface names and IPv4 addresses joins on those.
      - Capture and VRRP groups read one interface, the pinned one or the route's, whatever this says.
      - Each interface is one membership of the group's socket, and a socket holds at most
        C(net.ipv4.igmp_max_memberships) of them.
      - It cannot be set together with O(interface), which pins one interface.
      - An empty list removes the setting (V([all]) applies). Omit it to keep the current value.
    type: list
    elements: str
  address:
    description:
      - Server only. The address the members receive the copies from. Authentication tags are
        bound to it, so a member refuses a frame that another server sent.
      - An empty string removes the setting. The server then uses the local address of the kernel
        route to each group's members, which is right unless the server reaches its members from
        several addresses.
      - Omit it to keep the current value.
    type: str
  preserve_source:
    description:
      - Client only. Re-deliver every entry with the original sender's address and port, for
        applications that check them (an entry can also set it for itself, see
        M(multicast.proxy.client_server)).
      - V(false) removes the setting. Omit it to keep the current value.
    type: bool
  legacy_tags:
    description:
      - Server only. With authentication keys, tag frames as releases before 1.0.0 did, without naming
        the server, so that clients of those releases verify them. Clients of this release accept such
        tags from a server until it has sent one tag that names it (then a legacy tag from it is a
        downgrade, dropped as C(auth_unbound)), and never where keys are required (C(auth_required)).
      - The first step of an upgrade from such a release without loss; turn it off again once every
        client runs this release. V(false) removes the setting. Omit it to keep the current value.
    type: bool
  source_port:
    description:
      - On the server, the UDP port every copy leaves from. The relay holds it without
        C(SO_REUSEADDR), so no other program of the host can send from it; members whose entries name
        it refuse copies from any other port. Below 1024 only root (or a process with
        C(CAP_NET_BIND_SERVICE)) can bind it.
      - On the client, the source port every entry requires unless it names its own
        (see M(multicast.proxy.client_server)); frames from another port are dropped as C(source_port).
      - A port the server cannot bind at the reload keeps the copies on the port they left from, reported by
        C(-P) and the doctor and retried every 30 seconds.
      - V(0) removes the setting (any port). Omit it to keep the current value.
    type: int
  metrics_listen:
    description:
      - Serve Prometheus metrics over HTTP at C(http://ADDRESS:PORT/metrics), IPv4 only.
        A bare port listens on 127.0.0.1 (nothing is opened to the network by accident);
        V(0.0.0.0:9471) listens on every address, for a Prometheus on another host.
      - The daemon starts, moves or stops the endpoint at the reload. A port it cannot bind is
        reported by C(-P) and the doctor and retried every 30 seconds; the relay goes on.
      - An empty string removes the setting (no endpoint). Omit it to keep the current value.
    type: str
  metrics_textfile:
    description:
      - Write the same metrics to this file every 15 seconds, replacing it atomically, for
        node_exporter's textfile collector (C(--collector.textfile.directory)). An absolute path
        ending in C(.prom).
      - The daemon's unit must be allowed to write the directory (the roles add it to
        C(ReadWritePaths)).
      - An empty string removes the setting. Omit it to keep the current value.
    type: str
  metrics_detail:
    description:
      - Server only. V(group) exports per-group sums of the copies sent; V(member) adds three
        series per member (1,024 groups of 1,024 members make three million series; keep it for
        small fleets or while debugging one).
      - V(group) removes the setting (the default). Omit it to keep the current value.
    type: str
    choices: [group, member]
extends_documentation_fragment:
  - multicast.proxy.relay
  - multicast.proxy.relay.edit
notes:
  - The relay (and its reload command in C(/usr/local/bin)) must be installed, for example by
    the C(multicast.proxy.server) or C(multicast.proxy.client) role.
  - A setting given for the side that does not have it (O(preserve_source) with O(side=server))
    fails the task and changes nothing.
seealso:
  - module: multicast.proxy.server_group
  - module: multicast.proxy.client_server
"""

EXAMPLES = r"""
- name: The server joins its groups on eth1 (multis_admin --set interface=eth1)
  multicast.proxy.relay_settings:
    side: server
    interface: eth1

- name: The client re-delivers everything with the original source
  multicast.proxy.relay_settings:
    side: client
    preserve_source: true

- name: Serve Prometheus metrics on every address (multis_admin --set metrics_listen=0.0.0.0:9471)
  multicast.proxy.relay_settings:
    side: server
    metrics_listen: 0.0.0.0:9471

- name: The server picks its groups up only on eth0 and eth1 (multis_admin --set join_interfaces=eth0,eth1)
  multicast.proxy.relay_settings:
    side: server
    join_interfaces: [eth0, eth1]

- name: Back to the routed interface (multic_admin --set interface=)
  multicast.proxy.relay_settings:
    side: client
    interface: ""
"""

RETURN = r"""
settings:
  description: The top-level settings after the change (absent keys have their default).
  returned: always
  type: dict
  sample:
    interface: eth1
config:
  description: The whole config after the change.
  returned: always
  type: dict
  sample:
    multi_group_array: []
    interface: eth1
reload:
  description:
    - V(applied) when the running daemon took the new config,
      V(daemon_not_running) when it was not running,
      V(skipped) when nothing changed, O(reload=false) or in check mode.
  returned: always
  type: str
  sample: applied
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.multicast.proxy.plugins.module_utils.relay_config import (
    CLIENT,
    SERVER,
    load_client_config,
    load_server_config,
    module_argument_spec,
    module_options,
    optional_rows,
    set_settings,
)
from ansible_collections.multicast.proxy.plugins.module_utils.relay_module import (
    config_path,
    edit_config,
    reload_daemon,
)

PLACES = {"server": SERVER, "client": CLIENT}


def other_side_options(side, params):
    """The options given that belong to the other side only."""
    mine = set(option.module for option in optional_rows(PLACES[side]))
    other = "client" if side == "server" else "server"
    return sorted(option.module for option in optional_rows(PLACES[other])
                  if option.module not in mine and params.get(option.module) is not None)


def main():
    argument_spec = dict(
        side=dict(type="str", required=True, choices=["server", "client"]),
        conf_dir=dict(type="path", default="/etc/multicast"),
        reload=dict(type="bool", default=True),
    )
    # Every top-level setting of either side (relay_config.SCHEMA).
    argument_spec.update(module_argument_spec(SERVER))
    argument_spec.update(module_argument_spec(CLIENT))
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    side = module.params["side"]
    wrong = other_side_options(side, module.params)
    if wrong:
        module.fail_json(msg="%s: not a %s setting (it belongs to the %s); remove it or use side=%s"
                             % (", ".join(wrong), side, "client" if side == "server" else "server",
                                "client" if side == "server" else "server"))
    place = PLACES[side]
    settings = module_options(place, module.params)
    conf_dir = module.params["conf_dir"]
    before_text, after_text, changed = edit_config(module, conf_dir, side,
                                                   lambda config: set_settings(config, place, settings))

    reload_outcome = "skipped"
    if changed and module.params["reload"] and not module.check_mode:
        reload_outcome = reload_daemon(module, conf_dir, side)

    after = (load_server_config if side == "server" else load_client_config)(after_text)
    path = config_path(conf_dir, side)
    module.exit_json(
        changed=changed,
        settings=dict((option.key, after[option.key]) for option in optional_rows(place) if option.key in after),
        config=after,
        reload=reload_outcome,
        diff=dict(before=before_text, after=after_text, before_header=path, after_header=path),
    )


if __name__ == "__main__":
    main()
