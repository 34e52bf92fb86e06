# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The example ECS inventory loads and describes a fleet without problems."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible.inventory.manager import InventoryManager
from ansible.parsing.dataloader import DataLoader
from ansible.vars.manager import VariableManager
from ansible_collections.multicast.proxy.plugins.filter import membership

EXAMPLE = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "..",
                                       "examples", "inventory", "ecs.yml"))

# What fact gathering would find on the example hosts.
FACTS = {
    "ecs-source-1": {"default_ipv4": {"address": "192.168.0.11"}},
    "ecs-member-1": {"default_ipv4": {"address": "192.168.0.21"}},
    "ecs-member-2": {"default_ipv4": {"address": "192.168.0.22"}, "eth1": {"ipv4": {"address": "192.168.1.22"}}},
    "ecs-member-3": {},
}


def example_fleet():
    loader = DataLoader()
    inventory = InventoryManager(loader=loader, sources=[EXAMPLE])
    variables = VariableManager(loader=loader, inventory=inventory)
    hostvars = {}
    for host in inventory.get_hosts():
        host_vars = dict(variables.get_vars(host=host))
        host_vars["ansible_facts"] = FACTS[host.name]
        hostvars[host.name] = host_vars
    groups = dict((name, [h.name for h in group.get_hosts()]) for name, group in inventory.groups.items())
    return hostvars["ecs-source-1"]["multicast_proxy_groups"], hostvars, groups


def test_example_inventory_has_no_problems():
    assert membership.fleet_problems(*example_fleet()) == []


def test_example_member_configs():
    definitions, hostvars, groups = example_fleet()
    server = membership.server_config(definitions, "ecs-source-1", hostvars, groups)
    assert [(g["group_ip"], g["member_array"]) for g in server["multi_group_array"]] == [
        ("224.1.2.3", ["192.168.0.21", "192.168.0.23", "192.168.1.22"]),
        ("239.10.0.1", ["192.168.0.21", "192.168.0.23", "192.168.1.22"]),
    ]
    client = membership.client_config(definitions, "ecs-member-2", hostvars, groups)
    assert [(e["server_ip"], e["group_ip"]) for e in client["multi_server_info_array"]] == [
        ("192.168.0.11", "224.1.2.3"), ("192.168.0.11", "239.10.0.1"), ("192.168.0.21", "239.10.0.1")]
