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


# Three keepalived nodes relaying VRRP among themselves, and a camera whose
# multicast goes to many ports of one group (capture, any port) and must reach
# its viewers with its own source address.
VRRP_GROUPS = {
    "all": ["ka1", "ka2", "ka3", "cam1", "view1"],
    "ungrouped": ["cam1", "view1"],
    "keepalived": ["ka1", "ka2", "ka3"],
}

VRRP_HOSTVARS = {
    "ka1": {"multicast_proxy_address": "10.0.1.11"},
    "ka2": {"multicast_proxy_address": "10.0.1.12"},
    "ka3": {"ansible_default_ipv4": {"address": "10.0.1.13"}},
    "cam1": {"multicast_proxy_address": "10.0.1.31"},
    # Every group of this host re-delivered with the original source.
    "view1": {"multicast_proxy_address": "10.0.1.41", "multicast_proxy_preserve_source": True},
}

VRRP_GROUP_DEFINITIONS = [
    # Senders and receivers are the same nodes: each sends to and receives
    # from every other node. group_ip and group_port default for VRRP.
    {"name": "keepalived", "protocol": "vrrp", "server_port": 6901,
     "senders": "keepalived", "receivers": "keepalived"},
    {"name": "cameras", "group_ip": "239.5.5.5", "group_port": 0, "capture": True, "server_port": 6902,
     "senders": "cam1", "receivers": ["view1", "ka1"], "preserve_source": True},
]


def vrrp_fleet():
    """Fresh copies of the VRRP and capture sample fleet."""
    return copy.deepcopy(VRRP_GROUP_DEFINITIONS), copy.deepcopy(VRRP_HOSTVARS), copy.deepcopy(VRRP_GROUPS)


# Dynamic groups: viewers that receive only while an application of theirs has
# joined (may_join), beside a static member, and a group that has no static
# members at all: instances of a scaling group's subnet may join it before
# Ansible has seen them.
DYNAMIC_GROUPS = {
    "all": ["src1", "mem1", "view1", "view2"],
    "ungrouped": [],
    "mc_sources": ["src1"],
    "mc_members": ["mem1"],
    # mem1 is a static member of video as well: it stays one.
    "mc_viewers": ["view1", "view2", "mem1"],
}

DYNAMIC_HOSTVARS = {
    "src1": {"multicast_proxy_address": "10.0.0.11"},
    "mem1": {"multicast_proxy_address": "10.0.0.21"},
    "view1": {"multicast_proxy_address": "10.3.0.31"},
    # Next to view1's address: the two merge into one /31 in the allow list.
    "view2": {"ansible_default_ipv4": {"address": "10.3.0.30"}},
}

DYNAMIC_GROUP_DEFINITIONS = [
    {"name": "video", "group_ip": "239.20.0.1", "group_port": 6000, "server_port": 6500,
     "senders": "mc_sources", "receivers": "mc_members",
     "may_join": {"hosts": "mc_viewers", "networks": ["10.0.8.0/22", "10.1.0.0/24"]},
     "max_members": 64, "lease": 3},
    {"name": "alerts", "group_ip": "239.20.0.2", "group_port": 6001, "server_port": 6501,
     "senders": "src1", "may_join": {"hosts": ["view1"], "networks": ["10.2.0.0/16"]}},
]


def dynamic_fleet():
    """Fresh copies of the dynamic-groups sample fleet."""
    return (copy.deepcopy(DYNAMIC_GROUP_DEFINITIONS), copy.deepcopy(DYNAMIC_HOSTVARS),
            copy.deepcopy(DYNAMIC_GROUPS))
