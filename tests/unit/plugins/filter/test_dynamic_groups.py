# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Dynamic groups in the inventory: may_join, max_members and lease of a group definition."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

import pytest

from ansible.errors import AnsibleFilterError
from ansible_collections.multicast.proxy.plugins.filter import membership
from ansible_collections.multicast.proxy.tests.unit.plugins.filter.inventory import dynamic_fleet, fleet

EXPECTED_DIR = os.path.join(os.path.dirname(__file__), "expected")


def expected_text(name):
    with open(os.path.join(EXPECTED_DIR, name + ".json")) as handle:
        return handle.read()


def test_the_senders_allow_the_may_join_hosts_and_networks():
    definitions, hostvars, groups = dynamic_fleet()
    config = membership.server_config(definitions, "src1", hostvars, groups)
    # view1 and view2 (10.3.0.31, 10.3.0.30) merge into one /31; mem1 is a static member, not in allow.
    assert membership.relay_config_json(config) == expected_text("server_dyn_src1")


def test_a_may_join_host_gets_a_dynamic_entry_per_sender():
    definitions, hostvars, groups = dynamic_fleet()
    config = membership.client_config(definitions, "view1", hostvars, groups)
    assert membership.relay_config_json(config) == expected_text("client_dyn_view1")
    assert [entry.get("dynamic") for entry in config["multi_server_info_array"]] == [True, True]


def test_a_receiver_that_may_also_join_stays_a_static_member():
    definitions, hostvars, groups = dynamic_fleet()
    (entry,) = membership.client_config(definitions, "mem1", hostvars, groups)["multi_server_info_array"]
    assert "dynamic" not in entry
    video = membership.server_config(definitions, "src1", hostvars, groups)["multi_group_array"][0]
    assert video["member_array"] == ["10.0.0.21"]
    assert not any(network.startswith("10.0.0.21") for network in video["allow"])


def test_a_sender_named_by_may_join_is_left_out():
    definitions, hostvars, groups = dynamic_fleet()
    definitions[1]["may_join"]["hosts"] = "all"       # src1 sends alerts
    assert membership.fleet_problems(definitions, hostvars, groups) == []
    assert membership.relay_roles(definitions, "src1", groups) == ["server"]
    alerts = membership.server_config(definitions, "src1", hostvars, groups)["multi_group_array"][1]
    assert "10.0.0.11/32" not in alerts["allow"] and "10.0.0.21/32" in alerts["allow"]


def test_may_join_hosts_run_clients_and_count_their_groups():
    definitions, hostvars, groups = dynamic_fleet()
    assert membership.relay_roles(definitions, "view2", groups) == ["client"]
    assert membership.relay_roles(definitions, "src1", groups) == ["server"]
    assert membership.relay_group_count(definitions, "view1", groups) == 2
    assert membership.relay_group_count(definitions, "view2", groups) == 1


def test_the_dynamic_fleet_has_no_problems():
    assert membership.fleet_problems(*dynamic_fleet()) == []


def test_static_groups_keep_their_configs():
    # No may_join: no allow, no dynamic entries (the seed format).
    definitions, hostvars, groups = fleet()
    for group in membership.server_config(definitions, "src1", hostvars, groups)["multi_group_array"]:
        assert "allow" not in group
    for entry in membership.client_config(definitions, "mem1", hostvars, groups)["multi_server_info_array"]:
        assert "dynamic" not in entry


def test_a_network_alone_admits_instances_ansible_has_not_seen():
    definitions, hostvars, groups = dynamic_fleet()
    definitions[1]["may_join"] = {"networks": "10.2.0.0/16"}   # one network, as a string
    alerts = membership.server_config(definitions, "src1", hostvars, groups)["multi_group_array"][1]
    assert alerts["member_array"] == [] and alerts["allow"] == ["10.2.0.0/16"]
    assert len(membership.client_config(definitions, "view1", hostvars, groups)["multi_server_info_array"]) == 1
    assert membership.fleet_problems(definitions, hostvars, groups) == []


def problems_after(change):
    definitions, hostvars, groups = dynamic_fleet()
    change(definitions, hostvars, groups)
    return membership.fleet_problems(definitions, hostvars, groups)


VIDEO = "multicast_proxy_groups[0] (video)"
ALERTS = "multicast_proxy_groups[1] (alerts)"


@pytest.mark.parametrize("change, message", [
    (lambda d, hv, g: d[0].update(may_join="mc_viewers"),
     VIDEO + ".may_join: give a mapping with hosts (an inventory group, a host, or a list of either) and/or "
             "networks (a list of CIDR ranges), not 'mc_viewers'"),
    (lambda d, hv, g: d[0].update(may_join={"host": "mc_viewers"}),
     VIDEO + ".may_join: unknown key(s) host; allowed keys are hosts, networks"),
    (lambda d, hv, g: d[0].update(may_join={}),
     VIDEO + ".may_join: give hosts (an inventory group, a host, or a list of either), networks (CIDR ranges "
             "such as a scaling group's subnet) or both"),
    (lambda d, hv, g: d[0]["may_join"].update(hosts="mc_veiwers"),
     VIDEO + ".may_join.hosts: 'mc_veiwers' is neither an inventory group nor a host; check the spelling or add "
             "it to the inventory"),
    (lambda d, hv, g: d[0]["may_join"].update(networks=["10.0.8.1/22"]),
     VIDEO + ".may_join.networks[0]: 10.0.8.1/22 has host bits set; write the network 10.0.8.0/22"),
    (lambda d, hv, g: d[0]["may_join"].update(networks=["10.0.8.0/33"]),
     VIDEO + '.may_join.networks[0]: "10.0.8.0/33": the prefix length after / must be 0 to 32'),
    (lambda d, hv, g: d[0]["may_join"].update(networks=["239.1.0.0/16"]),
     VIDEO + ".may_join.networks[0]: 239.1.0.0/16 is multicast; subscribers have unicast addresses"),
    (lambda d, hv, g: d[0].update(max_members=1),
     VIDEO + ".max_members: 1 is below the 2 hosts of may_join.hosts that are not receivers or senders (view1, view2): "
             "the server would refuse some of them while the others are members; raise max_members to at least "
             "2, or make some of them receivers"),
    (lambda d, hv, g: d[0].update(max_members=2000),
     VIDEO + ".max_members: 2000 is not a member count; use an integer from 1 to 1024"),
    (lambda d, hv, g: d[0].update(lease=0.1),
     VIDEO + ".lease: 0.1 is not a lease; give seconds from 0.5 to 300.0"),
    (lambda d, hv, g: d[0].pop("may_join"),
     VIDEO + ": max_members and lease only apply to a group with may_join (dynamic members); add may_join or "
             "remove max_members and lease"),
    (lambda d, hv, g: d[1]["may_join"].pop("hosts") and d[1]["may_join"].pop("networks"),
     ALERTS + ".may_join: give hosts (an inventory group, a host, or a list of either), networks (CIDR ranges "
              "such as a scaling group's subnet) or both"),
    (lambda d, hv, g: d[0].update(may_join={"hosts": "mc_members"}),
     VIDEO + ".may_join: every host of may_join.hosts is a receiver (a static member already) or a sender, and "
             "there are no may_join.networks, so nobody else may join; add hosts or networks, or remove may_join"),
    (lambda d, hv, g: d[1].pop("may_join"),
     ALERTS + ": receivers is missing; give receivers (static members), may_join (dynamic members) or both"),
])
def test_bad_dynamic_settings_name_the_group_and_the_fix(change, message):
    assert problems_after(change) == [message]


def test_a_may_join_host_without_an_address_is_named():
    def change(definitions, hostvars, groups):
        hostvars["view2"] = {}
    assert problems_after(change) == [
        "host view2: no relay address: set multicast_proxy_address or multicast_proxy_interface, or gather facts "
        "for the host (it must be in the play) so ansible_default_ipv4 is known"]


def test_a_sender_cannot_take_subscriptions_on_a_port_its_client_listens_on():
    def change(definitions, hostvars, groups):
        # src1 now also receives a group on video's server port.
        definitions.append({"name": "back", "group_ip": "239.20.0.3", "group_port": 6002, "server_port": 6500,
                            "senders": "mem1", "receivers": "src1"})
    problems = problems_after(change)
    assert problems == [
        "host src1 sends " + VIDEO + ", whose may_join makes its relay server take subscriptions on server_port "
        "6500, and receives multicast_proxy_groups[2] (back) on the same port: its relay server and client cannot "
        "both bind it; give the two definitions different server_port values, or take the host out of one of them"]


def test_more_allow_networks_than_the_relay_takes():
    def change(definitions, hostvars, groups):
        # 70 hosts two addresses apart: nothing merges.
        many = ["v%d" % index for index in range(70)]
        groups["all"].extend(many)
        groups["many"] = many
        for index, host in enumerate(many):
            hostvars[host] = {"multicast_proxy_address": "10.9.%d.%d" % (index // 100, 2 * (index % 100) + 1)}
        definitions[1]["may_join"] = {"hosts": "many"}
    problems = problems_after(change)
    assert problems == [
        ALERTS + ": may_join gives the senders 70 allow networks (its hosts' addresses and its "
        "networks, merged), at most 64; list the hosts' subnets in may_join.networks instead"]


def test_a_may_join_host_needs_the_keys_of_a_server_with_keys():
    key = {"id": 1, "secret": "ab" * 32}

    def change(definitions, hostvars, groups):
        for host in ("src1", "mem1", "view1"):
            hostvars[host]["multicast_proxy_auth_keys"] = [key]
    assert problems_after(change) == [
        "host view2 may join " + VIDEO + " but has no multicast_proxy_auth_keys, and its server src1 has keys: "
        "src1 would refuse every subscription of it (auth_missing); give view2 the keys too"]


def test_the_config_filters_fail_on_a_bad_may_join():
    definitions, hostvars, groups = dynamic_fleet()
    definitions[0]["may_join"]["networks"] = ["10.0.8.1/22"]
    for build in (membership.server_config, membership.client_config):
        with pytest.raises(AnsibleFilterError,
                           match=r"\(video\)\.may_join\.networks\[0\]: 10\.0\.8\.1/22 has host bits"):
            build(definitions, "src1", hostvars, groups)


def test_verify_streams_name_the_dynamic_members_and_their_addresses():
    definitions, hostvars, groups = dynamic_fleet()
    streams = membership.relay_verify_streams(definitions, groups, ["src1", "mem1", "view1", "view2"],
                                              hostvars=hostvars)
    assert [(s["group"], s["members"], s["dynamic_members"], s["dynamic_addresses"]) for s in streams] == [
        ("video", ["mem1", "view1", "view2"], ["view1", "view2"], ["10.3.0.31", "10.3.0.30"]),
        ("alerts", ["view1"], ["view1"], ["10.3.0.31"])]
    # Without hostvars: the hosts only.
    streams = membership.relay_verify_streams(definitions, groups, ["src1", "view2"])
    assert [(s["members"], s["dynamic_members"], "dynamic_addresses" in s) for s in streams] == [
        (["view2"], ["view2"], False), ([], [], False)]


def test_may_join_hosts_are_metrics_targets_of_the_client_side():
    definitions, hostvars, groups = dynamic_fleet()
    hostvars["view2"].update(multicast_proxy_metrics=True, multicast_proxy_metrics_address="0.0.0.0")
    assert membership.prometheus_targets(definitions, hostvars, groups, "client") == [
        {"targets": ["10.3.0.30:9472"], "labels": {"host": "view2"}}]
