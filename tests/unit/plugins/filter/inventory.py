# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A sample fleet, shaped like the ``groups`` and ``hostvars`` Ansible passes."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy

GROUPS = {
    "all": ["src1", "src2", "mem1", "mem2", "mem3"],
    "ungrouped": [],
    "mc_sources": ["src1", "src2"],
    "mc_members": ["mem1", "mem2", "mem3"],
}

HOSTVARS = {
    # Address from the host variable.
    "src1": {"multicast_proxy_address": "10.0.0.11"},
    # Address from the default route's facts (both fact styles Ansible offers).
    "src2": {"ansible_facts": {"default_ipv4": {"address": "10.0.0.12"}}},
    "mem1": {"ansible_default_ipv4": {"address": "10.0.0.21"}},
    # Address of a chosen interface from facts, although the default route is elsewhere.
    "mem2": {"multicast_proxy_interface": "eth1",
             "ansible_facts": {"default_ipv4": {"address": "192.168.9.22"},
                               "eth1": {"ipv4": {"address": "10.0.0.22"}}}},
    "mem3": {"multicast_proxy_interface": "ens-5.100",
             "ansible_facts": {"ens_5_100": {"ipv4": {"address": "10.0.0.23"}}}},
}

GROUP_DEFINITIONS = [
    {"name": "marketdata", "group_ip": "224.1.2.3", "group_port": 65535, "server_port": 65535,
     "senders": "mc_sources", "receivers": "mc_members"},
    # A sender that also receives: it is never its own member.
    {"name": "heartbeat", "group_ip": "239.10.0.1", "group_port": 5000, "server_port": 5001,
     "senders": ["src1", "mem1"], "receivers": ["mc_members", "src1"]},
]


def fleet():
    """Fresh copies, so a test can break one thing."""
    return copy.deepcopy(GROUP_DEFINITIONS), copy.deepcopy(HOSTVARS), copy.deepcopy(GROUPS)
