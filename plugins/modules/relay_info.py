#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: relay_info
short_description: Report the relay's config, state and statistics
version_added: 1.0.0
description:
  - Returns the config of the relay server (C(multis_monitord)) or client
    (C(multic_monitord)) on the host, whether the daemon runs, and its live
    statistics, as structured data (the C(-S), C(-L) and C(-P) views of
    C(multis_admin) / C(multic_admin) with C(--json)).
  - Changes nothing.
author:
  - multicast.proxy maintainers (@multicast-proxy)
attributes:
  check_mode:
    support: full
    description: The module only reads, so it runs normally in check mode.
  diff_mode:
    support: none
    description: Nothing changes, so there is no diff.
  platform:
    support: full
    platforms: posix
    description: Runs on the managed Linux host that runs (or will run) the relay.
options:
  side:
    description:
      - V(server) for C(multis_monitord), V(client) for C(multic_monitord).
    type: str
    choices: [server, client]
    required: true
extends_documentation_fragment:
  - multicast.proxy.relay
notes:
  - The relay's commands must be installed in C(/usr/local/bin) or on E(PATH),
    for example by the C(multicast.proxy.server) or C(multicast.proxy.client) role.
seealso:
  - module: multicast.proxy.server_group
  - module: multicast.proxy.client_server
"""

EXAMPLES = r"""
- name: Read the server's statistics
  multicast.proxy.relay_info:
    side: server
  register: relay

- name: Show how many copies each member got
  ansible.builtin.debug:
    var: relay.stats

- name: Fail when the client daemon is down
  multicast.proxy.relay_info:
    side: client
  register: client_relay
  failed_when: not client_relay.daemon_running
"""

RETURN = r"""
config:
  description: The config file's content, validated by the relay's config model.
  returned: always
  type: dict
  sample:
    multi_group_array:
      - group_ip: 224.1.2.3
        server_port: 65535
        group_port: 65535
        member_array: [192.168.1.1]
daemon_running:
  description: Whether the daemon answered on its control socket.
  returned: always
  type: bool
  sample: true
status:
  description:
    - The C(-S --json) (server) or C(-L --json) (client) view as the relay prints
      it; it describes the configured groups or entries (read from the file when
      the daemon is down).
  returned: always
  type: dict
stats:
  description:
    - Live per-group, per-member (server) or per-entry (client) counters from
      C(-P --json); null when the daemon is not running.
  returned: always
  type: dict
"""

import json

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.multicast.proxy.plugins.module_utils.relay_module import (
    RC_DAEMON_NOT_RUNNING,
    SIDES,
    read_config,
    relay_command,
    run_relay,
)

# The config view of each side: server -S lists groups, client -L lists entries.
STATUS_FLAG = {"server": "-S", "client": "-L"}


def query(module, conf_dir, argv):
    """Run a relay query with --json; returns the parsed JSON or None when the daemon is down."""
    rc, out, err = run_relay(module, conf_dir, argv + ["--json"])
    if rc == RC_DAEMON_NOT_RUNNING:
        return None
    if rc != 0:
        module.fail_json(msg="%s failed (rc=%d): %s" % (" ".join(argv), rc, (err or out).strip()),
                         rc=rc, stdout=out, stderr=err)
    try:
        return json.loads(out)
    except ValueError as exc:
        module.fail_json(msg="%s --json printed something that is not JSON (%s); is the installed relay "
                             "the version this collection deploys?" % (" ".join(argv), exc), stdout=out)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            side=dict(type="str", required=True, choices=["server", "client"]),
            conf_dir=dict(type="path", default="/etc/multicast"),
        ),
        supports_check_mode=True,
    )
    side, conf_dir = module.params["side"], module.params["conf_dir"]
    config = read_config(module, conf_dir, side)[1]
    admin = relay_command(module, SIDES[side]["admin"])
    status = query(module, conf_dir, [admin, STATUS_FLAG[side]])
    stats = query(module, conf_dir, [admin, "-P"])
    module.exit_json(changed=False, config=config, daemon_running=stats is not None, status=status, stats=stats)


if __name__ == "__main__":
    main()
