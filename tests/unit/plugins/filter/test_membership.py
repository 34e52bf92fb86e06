# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

import pytest

from ansible.errors import AnsibleFilterError
from ansible_collections.multicast.proxy.plugins.filter import membership
from ansible_collections.multicast.proxy.tests.unit.plugins.filter.inventory import fleet, vrrp_fleet

EXPECTED_DIR = os.path.join(os.path.dirname(__file__), "expected")


def expected(name):
    with open(os.path.join(EXPECTED_DIR, name + ".json")) as handle:
        return json.load(handle)


@pytest.mark.parametrize("host", ["src1", "mem1"])
def test_server_config_matches_expected(host):
    definitions, hostvars, groups = fleet()
    assert membership.server_config(definitions, host, hostvars, groups) == expected("server_" + host)


@pytest.mark.parametrize("host", ["mem1", "src1"])
def test_client_config_matches_expected(host):
    definitions, hostvars, groups = fleet()
    assert membership.client_config(definitions, host, hostvars, groups) == expected("client_" + host)


def test_host_outside_every_group_gets_empty_configs():
    definitions, hostvars, groups = fleet()
    groups["all"].append("bystander")
    hostvars["bystander"] = {}
    assert membership.server_config(definitions, "bystander", hostvars, groups) == {"multi_group_array": []}
    assert membership.client_config(definitions, "bystander", hostvars, groups) == {"multi_server_info_array": []}


def test_adding_a_receiver_adds_it_everywhere_and_removing_it_removes_it():
    definitions, hostvars, groups = fleet()
    groups["all"].append("mem4")
    groups["mc_members"].append("mem4")
    hostvars["mem4"] = {"multicast_proxy_address": "10.0.0.24"}
    for sender in ("src1", "src2"):
        groups_of_sender = membership.server_config(definitions, sender, hostvars, groups)["multi_group_array"]
        assert all("10.0.0.24" in g["member_array"] for g in groups_of_sender)
    assert len(membership.client_config(definitions, "mem4", hostvars, groups)["multi_server_info_array"]) == 4
    groups["mc_members"].remove("mem4")
    for sender in ("src1", "src2"):
        groups_of_sender = membership.server_config(definitions, sender, hostvars, groups)["multi_group_array"]
        assert all("10.0.0.24" not in g["member_array"] for g in groups_of_sender)


def test_interface_is_written_at_top_level():
    definitions, hostvars, groups = fleet()
    config = membership.server_config(definitions, "src1", hostvars, groups, interface="eth1")
    assert config["interface"] == "eth1"
    config = membership.client_config(definitions, "mem1", hostvars, groups, interface="eth2")
    assert config["interface"] == "eth2"


def test_relay_config_json_is_stable_and_matches_the_relay_format():
    definitions, hostvars, groups = fleet()
    text = membership.relay_config_json(membership.server_config(definitions, "src1", hostvars, groups))
    with open(os.path.join(EXPECTED_DIR, "server_src1.json")) as handle:
        assert text == handle.read()


def test_the_fleet_of_the_sample_inventory_has_no_problems():
    assert membership.fleet_problems(*fleet()) == []


def test_relay_roles_and_group_count():
    definitions, hostvars, groups = fleet()
    assert membership.relay_roles(definitions, "src1", groups) == ["client", "server"]
    assert membership.relay_roles(definitions, "src2", groups) == ["server"]
    assert membership.relay_roles(definitions, "mem2", groups) == ["client"]
    assert membership.relay_group_count(definitions, "mem1", groups) == 2
    assert membership.relay_group_count(definitions, "src2", groups) == 1


def problems_after(change):
    definitions, hostvars, groups = fleet()
    change(definitions, hostvars, groups)
    return membership.fleet_problems(definitions, hostvars, groups)


def test_group_outside_the_multicast_range_names_the_variable():
    def change(definitions, hostvars, groups):
        definitions[1]["group_ip"] = "10.10.0.1"
    assert problems_after(change) == [
        'multicast_proxy_groups[1] (heartbeat).group_ip: "10.10.0.1" is not a multicast group address; '
        'use an address in 224.0.0.0/4 (224.0.0.0 - 239.255.255.255)']


def test_member_in_two_places_with_conflicting_ports():
    def change(definitions, hostvars, groups):
        definitions.append({"name": "marketdata-b", "group_ip": "224.1.2.3", "group_port": 65535,
                            "server_port": 6000, "senders": ["src2"], "receivers": ["mem3"]})
    problems = problems_after(change)
    assert any(p.startswith("host mem3 receives group 224.1.2.3:65535 from server 10.0.0.12 in both "
                            "multicast_proxy_groups[0] (marketdata) (server_port 65535) and "
                            "multicast_proxy_groups[2] (marketdata-b) (server_port 6000)") for p in problems)
    # The sender would carry the group twice: named with the definition behind it.
    assert any(p.startswith("host src2: server config:") and "multicast_proxy_groups[2] (marketdata-b)" in p
               for p in problems)


def test_more_members_than_the_limit():
    def change(definitions, hostvars, groups):
        many = ["m%d" % i for i in range(1025)]
        groups["all"].extend(many)
        groups["many"] = many
        for index, host in enumerate(many):
            hostvars[host] = {"multicast_proxy_address": "10.1.%d.%d" % (index // 250, index % 250 + 1)}
        definitions[0]["receivers"] = "many"
    problems = problems_after(change)
    assert any(p.startswith("host src1: server config: multi_group_array[0].member_array: 1025 members; at most 1024")
               and "multicast_proxy_groups[0] (marketdata)" in p for p in problems)


def test_unknown_sender_or_receiver_name():
    def change(definitions, hostvars, groups):
        definitions[0]["receivers"] = ["mc_memebrs"]
    assert problems_after(change) == [
        "multicast_proxy_groups[0] (marketdata).receivers: 'mc_memebrs' is neither an inventory group nor a host; "
        "check the spelling or add it to the inventory"]


def test_bad_address_names_host_and_variable_once():
    def change(definitions, hostvars, groups):
        hostvars["src1"]["multicast_proxy_address"] = "10.0.0.300"
    problems = problems_after(change)
    assert len(problems) == 1
    assert problems[0].startswith('host src1: multicast_proxy_address: "10.0.0.300" is not an IPv4 address')


def test_host_without_address_or_facts():
    def change(definitions, hostvars, groups):
        hostvars["mem1"] = {}
    problems = problems_after(change)
    assert problems == ["host mem1: no relay address: set multicast_proxy_address or multicast_proxy_interface, "
                        "or gather facts for the host (it must be in the play) so ansible_default_ipv4 is known"]


def test_interface_without_facts():
    def change(definitions, hostvars, groups):
        hostvars["mem2"]["multicast_proxy_interface"] = "eth7"
    problems = problems_after(change)
    assert len(problems) == 1
    assert problems[0].startswith("host mem2: multicast_proxy_interface is 'eth7' but its IPv4 address")


@pytest.mark.parametrize("definition, message", [
    ({"group_ip": "224.1.1.1", "server_port": 1, "senders": "mc_sources"}, "receivers is missing"),
    ({"group_ip": "224.1.1.1", "server_port": 1, "senders": "mc_sources", "receivers": "mc_members",
      "group_prot": 5}, "unknown key(s) group_prot"),
    ({"group_ip": "224.1.1.1", "server_port": 0, "senders": "mc_sources", "receivers": "mc_members"},
     "server_port: 0 is not a port"),
    ({"group_ip": "224.1.1.1", "server_port": 1, "senders": [], "receivers": "mc_members"}, "non-empty list"),
])
def test_bad_definitions(definition, message):
    def change(definitions, hostvars, groups):
        definitions.append(definition)
    problems = problems_after(change)
    assert len(problems) == 1
    assert problems[0].startswith("multicast_proxy_groups[2]")
    assert message in problems[0]


def test_not_a_list():
    hostvars, groups = fleet()[1:]
    assert membership.fleet_problems({"name": "x"}, hostvars, groups) == [
        "multicast_proxy_groups must be a list of group definitions (name, group_ip, group_port, server_port, "
        "senders, receivers, may_join, protocol, capture, max_members, lease, preserve_source)"]


def test_config_filters_raise_with_host_and_variable():
    definitions, hostvars, groups = fleet()
    hostvars["mem3"]["multicast_proxy_address"] = "0.0.0.0"
    with pytest.raises(AnsibleFilterError) as caught:
        membership.server_config(definitions, "src1", hostvars, groups)
    assert "multicast_proxy_groups: host mem3: multicast_proxy_address: 0.0.0.0 is not a host address" \
        in str(caught.value)
    definitions[0]["group_ip"] = "240.0.0.1"
    with pytest.raises(AnsibleFilterError) as caught:
        membership.client_config(definitions, "mem1", hostvars, groups, variable="client_groups")
    assert "client_groups[0] (marketdata).group_ip" in str(caught.value)


def test_every_problem_of_a_definition_is_reported():
    def change(definitions, hostvars, groups):
        definitions[0].update(group_ip="10.1.2.3", server_port=70000, receivers="mc_membres")
    problems = problems_after(change)
    assert [p.split(":")[0] for p in problems] == [
        "multicast_proxy_groups[0] (marketdata).group_ip",
        "multicast_proxy_groups[0] (marketdata).server_port",
        "multicast_proxy_groups[0] (marketdata).receivers"]


@pytest.mark.parametrize("host", ["ka1", "cam1"])
def test_vrrp_and_capture_server_configs_match_expected(host):
    definitions, hostvars, groups = vrrp_fleet()
    assert membership.server_config(definitions, host, hostvars, groups) == expected("server_" + host)


def test_vrrp_nodes_get_every_other_node_and_capture_preserve_source_entries():
    definitions, hostvars, groups = vrrp_fleet()
    assert membership.client_config(definitions, "ka1", hostvars, groups) == expected("client_ka1")
    ka2 = membership.server_config(definitions, "ka2", hostvars, groups)["multi_group_array"]
    assert [(g["group_ip"], g["protocol"], g["member_array"]) for g in ka2] == [
        ("224.0.0.18", "vrrp", ["10.0.1.11", "10.0.1.13"])]
    assert membership.relay_roles(definitions, "ka3", groups) == ["client", "server"]


def test_top_level_preserve_source_of_a_host():
    definitions, hostvars, groups = vrrp_fleet()
    assert membership.client_config(definitions, "view1", hostvars, groups,
                                    preserve_source=True) == expected("client_view1")
    # The spellings of a role's bool argument, as an INI inventory gives them.
    assert membership.client_config(definitions, "view1", hostvars, groups,
                                    preserve_source="yes")["preserve_source"] is True
    assert "preserve_source" not in membership.client_config(definitions, "view1", hostvars, groups,
                                                             preserve_source="false")


def test_udp_groups_keep_the_seed_format():
    definitions, hostvars, groups = fleet()
    for host in ("src1", "mem1"):
        for group in membership.server_config(definitions, host, hostvars, groups)["multi_group_array"]:
            assert set(group) == {"group_ip", "server_port", "group_port", "member_array"}
        entries = membership.client_config(definitions, host, hostvars, groups,
                                           check_source_port=False)["multi_server_info_array"]
        for entry in entries:
            assert set(entry) == {"server_ip", "server_port", "group_ip", "group_port"}
        # By default each entry also requires its server host's source port (868 unless the host sets one).
        for entry in membership.client_config(definitions, host, hostvars, groups)["multi_server_info_array"]:
            assert set(entry) == {"server_ip", "server_port", "group_ip", "group_port", "source_port"}
            assert entry["source_port"] == 868


def test_the_vrrp_and_capture_fleet_has_no_problems():
    assert membership.fleet_problems(*vrrp_fleet()) == []


def vrrp_problems_after(change):
    definitions, hostvars, groups = vrrp_fleet()
    change(definitions[0], definitions[1], hostvars)
    return membership.fleet_problems(definitions, hostvars, groups)


@pytest.mark.parametrize("change, message", [
    (lambda vrrp, cameras, hostvars: vrrp.update(group_ip="224.1.1.1"),
     "multicast_proxy_groups[0] (keepalived).group_ip: VRRP advertisements are sent to 224.0.0.18, not "
     "224.1.1.1; set group_ip to 224.0.0.18"),
    (lambda vrrp, cameras, hostvars: vrrp.update(group_port=112),
     "multicast_proxy_groups[0] (keepalived).group_port: VRRP has no ports; remove group_port or set it to 0"),
    (lambda vrrp, cameras, hostvars: vrrp.update(capture=False),
     'multicast_proxy_groups[0] (keepalived).capture: a VRRP group is always captured from the interface; '
     'remove "capture": false'),
    (lambda vrrp, cameras, hostvars: vrrp.update(protocol="tcp"),
     'multicast_proxy_groups[0] (keepalived).protocol: "tcp" is not a protocol; use "udp" (the default) or '
     '"vrrp"'),
    (lambda vrrp, cameras, hostvars: cameras.pop("capture"),
     'multicast_proxy_groups[1] (cameras).group_port: 0 means any port of the group, which only capture mode '
     'can see; add "capture": true or give a port 1-65535'),
    (lambda vrrp, cameras, hostvars: cameras.update(capture="on"),
     "multicast_proxy_groups[1] (cameras).capture: expected true or false, found a string"),
    (lambda vrrp, cameras, hostvars: cameras.update(preserve_source="yes"),
     "multicast_proxy_groups[1] (cameras).preserve_source: expected true or false, found a string"),
    (lambda vrrp, cameras, hostvars: hostvars["view1"].update(multicast_proxy_preserve_source="maybe"),
     "host view1: multicast_proxy_preserve_source must be true or false, not 'maybe'"),
])
def test_bad_vrrp_capture_and_preserve_source_settings_name_the_variable(change, message):
    assert vrrp_problems_after(change) == [message]


def test_vrrp_group_ip_is_refused_by_the_filters_too():
    definitions, hostvars, groups = vrrp_fleet()
    definitions[0]["group_port"] = 6000
    for build in (membership.server_config, membership.client_config):
        with pytest.raises(AnsibleFilterError, match=r"multicast_proxy_groups\[0\] \(keepalived\)\.group_port: "
                                                     r"VRRP has no ports"):
            build(definitions, "ka1", hostvars, groups)


def test_a_bad_top_level_preserve_source_fails_the_client_filter():
    definitions, hostvars, groups = vrrp_fleet()
    with pytest.raises(AnsibleFilterError, match="multicast_proxy_groups: host view1: "
                                                 "multicast_proxy_preserve_source must be true or false"):
        membership.client_config(definitions, "view1", hostvars, groups, preserve_source=[1])


# -- source ports (issue 14.7) ------------------------------------------------------------------------

def test_each_entry_requires_the_source_port_of_its_server_host():
    definitions, hostvars, groups = fleet()
    hostvars["src1"]["multicast_proxy_source_port"] = "700"      # as an INI inventory gives it
    hostvars["src2"]["multicast_proxy_source_port"] = 0          # any port: nothing to check
    entries = membership.client_config(definitions, "mem2", hostvars, groups)["multi_server_info_array"]
    ports = dict(((e["server_ip"], e["group_ip"]), e.get("source_port")) for e in entries)
    assert ports == {("10.0.0.11", "224.1.2.3"): 700, ("10.0.0.12", "224.1.2.3"): None,
                     ("10.0.0.11", "239.10.0.1"): 700, ("10.0.0.21", "239.10.0.1"): 868}
    # The server side: the role passes the host's port as a setting; 0 leaves it out.
    assert membership.server_config(definitions, "src1", hostvars, groups,
                                    settings={"source_port": "700"})["source_port"] == 700
    assert "source_port" not in membership.server_config(definitions, "src1", hostvars, groups,
                                                         settings={"source_port": 0})


def test_without_the_check_entries_take_any_port():
    definitions, hostvars, groups = fleet()
    for spelling in (False, "no", "false"):
        entries = membership.client_config(definitions, "mem1", hostvars, groups,
                                           check_source_port=spelling)["multi_server_info_array"]
        assert all("source_port" not in entry for entry in entries)
    with pytest.raises(AnsibleFilterError) as info:
        membership.client_config(definitions, "mem1", hostvars, groups, check_source_port="sometimes")
    assert "multicast_proxy_source_port_check must be true or false" in str(info.value)


@pytest.mark.parametrize("value", ["http", 70000, -1, [868]])
def test_a_bad_source_port_of_a_server_host_names_the_host(value):
    definitions, hostvars, groups = fleet()
    hostvars["src2"]["multicast_proxy_source_port"] = value
    problems = membership.fleet_problems(definitions, hostvars, groups)
    assert problems and all("host src2: multicast_proxy_source_port" in problem for problem in problems)
    assert "is not a port" in problems[0] and "0 lets the copies leave from any port" in problems[0]


def test_a_source_port_that_is_also_a_received_server_port_is_refused():
    definitions, hostvars, groups = fleet()
    # src1 receives heartbeat (server_port 5001) and sends: its server cannot send from 5001.
    hostvars["src1"]["multicast_proxy_source_port"] = 5001
    problems = membership.fleet_problems(definitions, hostvars, groups)
    assert problems == ["host src1: multicast_proxy_source_port 5001 is also the server_port of "
                        "multicast_proxy_groups[1] (heartbeat), which the host receives: its relay server and "
                        "client cannot both bind the port; choose another multicast_proxy_source_port"]
    with pytest.raises(AnsibleFilterError):
        membership.server_config(definitions, "src1", hostvars, groups, settings={"source_port": 5001})


# -- join interfaces (issue 15) -----------------------------------------------------------------------

def test_the_server_joins_where_multicast_proxy_join_interfaces_says():
    definitions, hostvars, groups = fleet()

    def server(settings, interface=None):
        return membership.server_config(definitions, "src1", hostvars, groups, interface=interface,
                                        settings=settings)

    # all (the role's default) is the relay's default: nothing is written, seed-format configs stay as they are.
    assert "join_interfaces" not in server({"join_interfaces": "all"})
    assert server({"join_interfaces": "route"})["join_interfaces"] == "route"
    # A YAML list or an INI inventory's comma-separated text.
    for spelling in (["eth0", "10.1.0.5"], "eth0,10.1.0.5"):
        assert server({"join_interfaces": spelling})["join_interfaces"] == ["eth0", "10.1.0.5"]
    # The role's pinned interface with the default: the interface wins, as before.
    assert "join_interfaces" not in server({"join_interfaces": "all"}, interface="eth1")
    with pytest.raises(AnsibleFilterError, match="host src1: server config: join_interfaces: set either"):
        server({"join_interfaces": ["eth0"]}, interface="eth1")
    with pytest.raises(AnsibleFilterError, match="host src1: server setting join_interfaces.*listed twice"):
        server({"join_interfaces": "eth0,eth0"})
