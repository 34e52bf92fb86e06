#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: server_group
short_description: Manage one multicast group in the relay server's config
version_added: 1.0.0
description:
  - Creates, updates or removes one group in C(server_cfg.json.txt), the
    config of the relay server C(multis_monitord), like C(multis_admin -A/-D/-j/-q) does.
  - The file is validated by the same config model the relay uses, written
    atomically under the relay's config lock, and then applied to the running
    daemon with C(server_reload_list reload).
author:
  - multicast.proxy maintainers (@multicast-proxy)
options:
  group_ip:
    description:
      - The multicast group address, in 224.0.0.0/4.
    type: str
    required: true
  server_port:
    description:
      - UDP port the server sends its copies to on each member (the client listens on it).
      - Required when the group does not exist yet. Omit it to keep the current value.
    type: int
  group_port:
    description:
      - UDP port of the group traffic the server captures (and the client re-delivers to).
      - Defaults to O(server_port) for a new group. Omit it to keep the current value.
    type: int
  members:
    description:
      - Unicast IPv4 addresses of the hosts that receive copies of the group.
      - How they are applied depends on O(member_mode).
      - Omit it to leave the members as they are.
    type: list
    elements: str
  member_mode:
    description:
      - V(exact) makes the member list exactly O(members) (order kept).
      - V(add) adds the members that are missing (C(multis_admin -j)).
      - V(remove) removes the given members (C(multis_admin -q)); a member that is not in the group is an error.
    type: str
    choices: [exact, add, remove]
    default: exact
  interface:
    description:
      - The one interface to join the group on. An empty string removes the setting
        (the relay then follows O(join_interfaces), else the server's settings).
      - Omit it to keep the current value.
    type: str
  join_interfaces:
    description:
      - Where this group is joined when it names no O(interface), C(multis_admin --join-interfaces).
      - V([all]) every up interface with C(MULTICAST) and IPv4 (and the route's), rescanned every second;
        V([route]) the interface of the route to the group; or a list of interface names and IPv4 addresses.
      - Without it the group follows the server's C(join_interfaces) (see M(multicast.proxy.relay_settings)),
        whose default is V([all]).
      - Capture and VRRP groups read one interface, the pinned one or the route's.
      - It cannot be set together with O(interface). An empty list removes the setting. Omit it to keep the
        current value.
    type: list
    elements: str
  protocol:
    description:
      - What the group carries, C(multis_admin --protocol).
      - V(udp) datagrams, or V(vrrp) advertisements (IP protocol 112, sent to 224.0.0.18; the group port is
        then 0).
      - Omit it to keep the current value (V(udp) for a new group).
    type: str
    choices: [udp, vrrp]
  capture:
    description:
      - Pick the group's datagrams up from the interface instead of joining the group, C(multis_admin --capture).
      - For senders that turn multicast loopback off, and for every port of a group (O(group_port=0)).
      - Omit it to keep the current value (off for a new group).
    type: bool
  allow:
    description:
      - IPv4 networks in CIDR form whose hosts may subscribe to the group as dynamic members,
        C(multis_admin --allow); see docs/dynamic-membership.md.
      - An empty list removes the setting (nobody subscribes); omit it to keep the current value.
    type: list
    elements: str
  max_members:
    description:
      - The most dynamic members the group admits at once, C(multis_admin --max-members) (only with O(allow)).
      - Omit it to keep the current value (256 for a new group).
    type: int
  lease:
    description:
      - Seconds a subscription lasts without a refresh, C(multis_admin --lease); clients refresh every third of
        it (only with O(allow)).
      - Omit it to keep the current value (1.5 for a new group).
    type: float
  state:
    description:
      - V(present) creates or updates the group, V(absent) removes it (C(multis_admin -D)).
    type: str
    choices: [present, absent]
    default: present
extends_documentation_fragment:
  - multicast.proxy.relay
  - multicast.proxy.relay.edit
notes:
  - The relay (and its C(server_reload_list) command in C(/usr/local/bin)) must be
    installed, for example by the C(multicast.proxy.server) role.
seealso:
  - module: multicast.proxy.client_server
  - module: multicast.proxy.relay_info
"""

EXAMPLES = r"""
- name: Relay 224.1.2.3:65535 to two members
  multicast.proxy.server_group:
    group_ip: 224.1.2.3
    server_port: 65535
    members:
      - 192.168.1.1
      - 192.168.1.2

- name: Add a member, keep the others (multis_admin -A -m 224.1.2.3 -j 192.168.1.3)
  multicast.proxy.server_group:
    group_ip: 224.1.2.3
    members: [192.168.1.3]
    member_mode: add

- name: A member quits (multis_admin -A -m 224.1.2.3 -q 192.168.1.1)
  multicast.proxy.server_group:
    group_ip: 224.1.2.3
    members: [192.168.1.1]
    member_mode: remove

- name: Remove the group (multis_admin -D -m 224.1.2.3)
  multicast.proxy.server_group:
    group_ip: 224.1.2.3
    state: absent
"""

RETURN = r"""
group:
  description: The group after the change; null when it is absent.
  returned: always
  type: dict
  sample:
    group_ip: 224.1.2.3
    server_port: 65535
    group_port: 65535
    member_array: [192.168.1.1, 192.168.1.2]
config:
  description: The whole server config after the change.
  returned: always
  type: dict
  sample:
    multi_group_array:
      - group_ip: 224.1.2.3
        server_port: 65535
        group_port: 65535
        member_array: [192.168.1.1]
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
    GROUP,
    load_server_config,
    module_argument_spec,
    module_options,
    parse_group_ip,
    server_delete,
    server_find_group,
    server_set_group,
)
from ansible_collections.multicast.proxy.plugins.module_utils.relay_module import (
    config_path,
    edit_config,
    reload_daemon,
)


def desired_config(params):
    """Return the edit function for the requested state."""
    group_ip = params["group_ip"]

    def edit(config):
        if params["state"] == "absent":
            # Validate first: a typo must fail, not report "already absent".
            parse_group_ip(group_ip, "group_ip")
            if server_find_group(config, group_ip) is None:
                return config
            return server_delete(config, group_ip)
        members = params["members"]
        mode = params["member_mode"]
        if members is None:
            # No member list given: keep the members, change only what was given.
            members, mode = [], "add"
        # interface, protocol, capture, ...: the schema's group options (relay_config.SCHEMA).
        return server_set_group(config, group_ip, params["server_port"], params["group_port"],
                                members, mode, options=module_options(GROUP, params))

    return edit


def main():
    argument_spec = dict(
        group_ip=dict(type="str", required=True),
        server_port=dict(type="int"),
        group_port=dict(type="int"),
        members=dict(type="list", elements="str"),
        member_mode=dict(type="str", default="exact", choices=["exact", "add", "remove"]),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        conf_dir=dict(type="path", default="/etc/multicast"),
        reload=dict(type="bool", default=True),
    )
    argument_spec.update(module_argument_spec(GROUP))
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    conf_dir = module.params["conf_dir"]
    before_text, after_text, changed = edit_config(module, conf_dir, "server", desired_config(module.params))

    reload_outcome = "skipped"
    if changed and module.params["reload"] and not module.check_mode:
        reload_outcome = reload_daemon(module, conf_dir, "server")

    after = load_server_config(after_text)
    path = config_path(conf_dir, "server")
    module.exit_json(
        changed=changed,
        group=server_find_group(after, module.params["group_ip"]),
        config=after,
        reload=reload_outcome,
        diff=dict(before=before_text, after=after_text, before_header=path, after_header=path),
    )


if __name__ == "__main__":
    main()
