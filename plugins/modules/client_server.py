#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: client_server
short_description: Manage one server entry in the relay client's config
version_added: 1.0.0
description:
  - Adds, updates or removes one entry in C(client_cfg.json.txt), the config
    of the relay client C(multic_monitord), like C(multic_admin -A/-D) does.
    An entry tells the client to accept copies of group O(group_ip):O(group_port)
    from the server O(server_ip) on port O(server_port) and re-deliver them locally.
  - An entry is identified by O(server_ip), O(group_ip) and O(group_port);
    with O(state=present) a different O(server_port) updates it.
  - The file is validated by the same config model the relay uses, written
    atomically under the relay's config lock, and then applied to the running
    daemon with C(client_reload_list reload).
author:
  - multicast.proxy maintainers (@multicast-proxy)
options:
  server_ip:
    description:
      - Unicast IPv4 address the relay server sends from.
    type: str
    required: true
  server_port:
    description:
      - UDP port the copies arrive on. Required with O(state=present).
    type: int
  group_ip:
    description:
      - The multicast group address, in 224.0.0.0/4.
    type: str
    required: true
  group_port:
    description:
      - UDP port of the group; the client re-delivers to O(group_ip):O(group_port).
    type: int
    required: true
  protocol:
    description:
      - What the group carries, C(multic_admin --protocol).
      - V(udp) datagrams, or V(vrrp) advertisements (re-delivered as IP protocol 112 with the original
        source; O(group_port=0)).
      - Omit it to keep the current value (V(udp) for a new entry).
    type: str
    choices: [udp, vrrp]
  preserve_source:
    description:
      - Re-deliver with the original sender's address and port, C(multic_admin --preserve-source), for
        applications that check them.
      - Omit it to keep the current value (off for a new entry).
    type: bool
  dynamic:
    description:
      - Subscribe to the server while a local application has joined the group, and unsubscribe when the last
        one leaves, C(multic_admin --dynamic); the server's group needs C(allow) (docs/dynamic-membership.md).
      - Omit it to keep the current value (off for a new entry).
    type: bool
  source_port:
    description:
      - Accept this entry's copies only from this UDP source port of the server (the server's
        C(source_port) setting), C(multic_admin --source-port). Frames from the server's address and another
        port are dropped and counted as C(source_port).
      - V(0) removes it (the client's own C(source_port) setting, if any, applies). Omit it to keep the
        current value.
    type: int
  state:
    description:
      - V(present) adds or updates the entry, V(absent) removes it.
    type: str
    choices: [present, absent]
    default: present
extends_documentation_fragment:
  - multicast.proxy.relay
  - multicast.proxy.relay.edit
notes:
  - The relay (and its C(client_reload_list) command in C(/usr/local/bin)) must be
    installed, for example by the C(multicast.proxy.client) role.
seealso:
  - module: multicast.proxy.server_group
  - module: multicast.proxy.relay_info
"""

EXAMPLES = r"""
- name: Receive 224.1.2.3:65535 from the relay server 10.0.0.1
  multicast.proxy.client_server:
    server_ip: 10.0.0.1
    server_port: 65535
    group_ip: 224.1.2.3
    group_port: 65535

- name: Stop receiving it (multic_admin -D -i 10.0.0.1 -g 65535 -m 224.1.2.3)
  multicast.proxy.client_server:
    server_ip: 10.0.0.1
    group_ip: 224.1.2.3
    group_port: 65535
    state: absent
"""

RETURN = r"""
entry:
  description: The entry after the change; null when it is absent.
  returned: always
  type: dict
  sample:
    server_ip: 10.0.0.1
    server_port: 65535
    group_ip: 224.1.2.3
    group_port: 65535
config:
  description: The whole client config after the change.
  returned: always
  type: dict
  sample:
    multi_server_info_array:
      - server_ip: 10.0.0.1
        server_port: 65535
        group_ip: 224.1.2.3
        group_port: 65535
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
    ENTRY,
    client_add,
    client_delete,
    client_find,
    load_client_config,
    module_argument_spec,
    module_options,
    parse_group_ip,
    parse_port,
    parse_unicast_ip,
)
from ansible_collections.multicast.proxy.plugins.module_utils.relay_module import (
    config_path,
    edit_config,
    reload_daemon,
)


def desired_config(params):
    """Return the edit function for the requested state."""
    def edit(config):
        if params["state"] == "absent":
            # Validate first: a typo must fail, not report "already absent".
            parse_unicast_ip(params["server_ip"], "server_ip")
            parse_group_ip(params["group_ip"], "group_ip")
            parse_port(params["group_port"], "group_port")
            if not client_find(config, params["server_ip"], params["group_port"], params["group_ip"]):
                return config
            return client_delete(config, params["server_ip"], params["group_port"], params["group_ip"])
        # protocol, preserve_source, ...: the schema's entry options (relay_config.SCHEMA).
        return client_add(config, params["server_ip"], params["group_port"], params["server_port"],
                          params["group_ip"], options=module_options(ENTRY, params))

    return edit


def main():
    argument_spec = dict(
        server_ip=dict(type="str", required=True),
        server_port=dict(type="int"),
        group_ip=dict(type="str", required=True),
        group_port=dict(type="int", required=True),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        conf_dir=dict(type="path", default="/etc/multicast"),
        reload=dict(type="bool", default=True),
    )
    argument_spec.update(module_argument_spec(ENTRY))
    module = AnsibleModule(argument_spec=argument_spec, required_if=[("state", "present", ("server_port",))],
                           supports_check_mode=True)
    conf_dir = module.params["conf_dir"]
    before_text, after_text, changed = edit_config(module, conf_dir, "client", desired_config(module.params))

    reload_outcome = "skipped"
    if changed and module.params["reload"] and not module.check_mode:
        reload_outcome = reload_daemon(module, conf_dir, "client")

    after = load_client_config(after_text)
    entries = client_find(after, module.params["server_ip"], module.params["group_port"], module.params["group_ip"])
    path = config_path(conf_dir, "client")
    module.exit_json(
        changed=changed,
        entry=entries[0] if entries else None,
        config=after,
        reload=reload_outcome,
        diff=dict(before=before_text, after=after_text, before_header=path, after_header=path),
    )


if __name__ == "__main__":
    main()
