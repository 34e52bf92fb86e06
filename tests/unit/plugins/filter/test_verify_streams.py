# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The probe streams of playbooks/verify.yml (relay_verify_streams) and the playbook's use of them."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

import pytest
import yaml

from ansible.errors import AnsibleFilterError
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar
from ansible_collections.multicast.proxy.tests.unit.compat import trust_as_template
from ansible_collections.multicast.proxy.plugins.filter import membership
from ansible_collections.multicast.proxy.tests.unit.plugins.filter.inventory import fleet, vrrp_fleet

COLLECTION_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
MEMBERS = ["mem1", "mem2", "mem3"]


def streams(sample=fleet, play_hosts=None, **options):
    definitions, _hostvars, groups = sample()
    return membership.relay_verify_streams(definitions, groups, groups["all"] if play_hosts is None else play_hosts,
                                           **options)


def senders_and_members(result):
    return [(stream["group"], stream["sender"], stream["members"]) for stream in result]


def one_group_fleet(senders, receivers):
    """The sample inventory with a single definition of the given senders and receivers."""
    definitions, hostvars, groups = fleet()
    return [{"name": "probe", "group_ip": "239.1.1.1", "group_port": 7000, "server_port": 7001,
             "senders": senders, "receivers": receivers}], hostvars, groups


def test_the_sample_fleet_gets_one_stream_per_group_and_sender():
    assert streams() == [
        {"group": "marketdata", "group_ip": "224.1.2.3", "group_port": 65535, "sender": "src1", "stream_id": 1,
         "members": MEMBERS, "dynamic_members": []},
        {"group": "marketdata", "group_ip": "224.1.2.3", "group_port": 65535, "sender": "src2", "stream_id": 2,
         "members": MEMBERS, "dynamic_members": []},
        # src1 also receives heartbeat, but never its own stream.
        {"group": "heartbeat", "group_ip": "239.10.0.1", "group_port": 5000, "sender": "src1", "stream_id": 3,
         "members": MEMBERS, "dynamic_members": []},
        {"group": "heartbeat", "group_ip": "239.10.0.1", "group_port": 5000, "sender": "mem1", "stream_id": 4,
         "members": ["mem2", "mem3", "src1"], "dynamic_members": []},
    ]


@pytest.mark.parametrize("senders, expected", [
    ("mc_sources", ["src1", "src2"]),
    (["src2", "src1"], ["src2", "src1"]),
    # A single host and a list of groups were left out by the playbook's own Jinja (issue 13).
    ("src2", ["src2"]),
    (["mc_sources"], ["src1", "src2"]),
    (["mc_sources", "mem1"], ["src1", "src2", "mem1"]),
])
def test_senders_as_group_host_or_list(senders, expected):
    result = streams(lambda: one_group_fleet(senders, "mc_members"))
    assert [stream["sender"] for stream in result] == expected
    assert [stream["stream_id"] for stream in result] == list(range(1, len(expected) + 1))
    for stream in result:
        assert stream["members"] == [host for host in MEMBERS if host != stream["sender"]]


@pytest.mark.parametrize("receivers, expected", [
    ("mc_members", MEMBERS),
    (["mem3", "mem1"], ["mem3", "mem1"]),
    ("mem2", ["mem2"]),
    (["mc_members", "src2"], MEMBERS + ["src2"]),
])
def test_receivers_as_group_host_or_list(receivers, expected):
    assert senders_and_members(streams(lambda: one_group_fleet("src1", receivers))) == [("probe", "src1", expected)]


def test_the_sender_is_never_its_own_member():
    result = streams(lambda: one_group_fleet("mc_sources", "mc_sources"))
    assert senders_and_members(result) == [("probe", "src1", ["src2"]), ("probe", "src2", ["src1"])]


def test_hosts_outside_the_play_are_left_out():
    result = streams(play_hosts=["mem3", "src1", "mem1"])
    assert senders_and_members(result) == [
        ("marketdata", "src1", ["mem1", "mem3"]),
        ("heartbeat", "src1", ["mem1", "mem3"]),
        ("heartbeat", "mem1", ["mem3", "src1"]),
    ]
    assert [stream["stream_id"] for stream in result] == [1, 2, 3]


def test_a_sender_in_the_play_without_members_in_it_still_gets_a_stream():
    # The playbook refuses a run whose streams have no member at all.
    assert senders_and_members(streams(play_hosts=["src2"])) == [("marketdata", "src2", [])]


def test_vrrp_groups_are_left_out_and_any_port_groups_use_the_probe_port():
    assert streams(vrrp_fleet) == [
        {"group": "cameras", "group_ip": "239.5.5.5", "group_port": 5999, "sender": "cam1", "stream_id": 1,
         "members": ["view1", "ka1"], "dynamic_members": []}]
    # Extra vars on the command line are strings.
    for any_port in (6123, "6123"):
        assert [stream["group_port"] for stream in streams(vrrp_fleet, any_port=any_port)] == [6123]
    # A fixed group port is probed as it is.
    assert {stream["group_port"] for stream in streams(any_port=6123)} == {65535, 5000}


def test_a_group_without_group_port_is_probed_on_its_server_port():
    definitions, hostvars, groups = one_group_fleet("src1", "mem1")
    del definitions[0]["group_port"]
    result = membership.relay_verify_streams(definitions, groups, groups["all"])
    # The relay forwards the group on server_port: that is where the probe must go.
    assert [stream["group_port"] for stream in result] == [7001]


@pytest.mark.parametrize("only_groups, expected", [
    (["heartbeat"], [("heartbeat", "src1"), ("heartbeat", "mem1")]),
    ("heartbeat", [("heartbeat", "src1"), ("heartbeat", "mem1")]),
    (["heartbeat", "marketdata"], [("marketdata", "src1"), ("marketdata", "src2"), ("heartbeat", "src1"),
                                   ("heartbeat", "mem1")]),
    ([], []),
])
def test_selection_of_groups(only_groups, expected):
    result = streams(only_groups=only_groups)
    assert [(stream["group"], stream["sender"]) for stream in result] == expected
    assert [stream["stream_id"] for stream in result] == list(range(1, len(expected) + 1))


def test_selecting_only_a_vrrp_group_probes_nothing():
    assert streams(vrrp_fleet, only_groups=["keepalived"]) == []


def test_an_unnamed_group_is_called_by_its_place():
    definitions, hostvars, groups = fleet()
    definitions.append({"group_ip": "239.2.2.2", "group_port": 7100, "server_port": 7101,
                        "senders": "mem3", "receivers": "src2"})
    result = membership.relay_verify_streams(definitions, groups, groups["all"],
                                             only_groups=["multicast_proxy_groups[2]"])
    assert senders_and_members(result) == [("multicast_proxy_groups[2]", "mem3", ["src2"])]


@pytest.mark.parametrize("only_groups, message", [
    (["hartbeat"], "multicast_proxy_verify_groups: no group is named hartbeat; check the spelling "
                   "(the groups are marketdata, heartbeat)"),
    ([1], "multicast_proxy_verify_groups: give a list of group names of the definitions, not [1]"),
    ({"heartbeat": True}, "multicast_proxy_verify_groups: give a list of group names"),
])
def test_a_bad_selection_is_refused(only_groups, message):
    with pytest.raises(AnsibleFilterError) as caught:
        streams(only_groups=only_groups)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize("any_port", [0, 70000, "any", True])
def test_a_bad_probe_port_is_refused(any_port):
    with pytest.raises(AnsibleFilterError, match=r"^multicast_proxy_verify_any_port: .* is not a port; use an "
                                                 r"integer from 1 to 65535"):
        streams(vrrp_fleet, any_port=any_port)


def test_a_bad_definition_fails_with_the_same_message_as_the_config_filters():
    definitions, hostvars, groups = fleet()
    definitions[0]["receivers"] = ["mc_memebrs"]
    with pytest.raises(AnsibleFilterError) as caught:
        membership.relay_verify_streams(definitions, groups, groups["all"])
    assert str(caught.value) == ("multicast_proxy_groups[0] (marketdata).receivers: 'mc_memebrs' is neither an "
                                 "inventory group nor a host; check the spelling or add it to the inventory")
    definitions, hostvars, groups = vrrp_fleet()
    definitions[1].pop("capture")
    with pytest.raises(AnsibleFilterError, match=r"^verify_groups_def\[1\] \(cameras\)\.group_port: 0 means any "
                                                 r"port of the group, which only capture mode can see"):
        membership.relay_verify_streams(definitions, groups, groups["all"], variable="verify_groups_def")


def test_definitions_that_are_not_a_list_and_play_hosts_that_are_not_a_list_are_refused():
    definitions, hostvars, groups = fleet()
    with pytest.raises(AnsibleFilterError, match="^multicast_proxy_groups must be a list of group definitions"):
        membership.relay_verify_streams(definitions[0], groups, groups["all"])
    with pytest.raises(AnsibleFilterError, match=r"^play_hosts must be the list of the play's hosts "
                                                 r"\(ansible_play_hosts_all\), not 'src1'"):
        membership.relay_verify_streams(definitions, groups, "src1")


def test_the_filter_is_registered():
    assert membership.FilterModule().filters()["relay_verify_streams"] is membership.relay_verify_streams


def playbook_streams(**variables):
    """verify.yml's own __verify_streams expression, rendered as the play would."""
    with open(os.path.join(COLLECTION_ROOT, "playbooks", "verify.yml")) as handle:
        expression = yaml.safe_load(handle)[0]["vars"]["__verify_streams"]
    return Templar(loader=DataLoader(), variables=variables).template(trust_as_template(expression))


def test_the_playbook_probes_host_named_senders_and_receivers():
    definitions, hostvars, groups = one_group_fleet("src1", "mem2")
    definitions.append({"name": "cameras", "group_ip": "239.5.5.5", "group_port": 0, "capture": True,
                        "server_port": 6902, "senders": ["mc_sources"], "receivers": "mc_members"})
    result = playbook_streams(multicast_proxy_groups=definitions, groups=groups, hostvars=hostvars,
                              ansible_play_hosts_all=["src1", "mem2", "mem3"], multicast_proxy_verify_any_port="6100")
    assert result == [
        {"group": "probe", "group_ip": "239.1.1.1", "group_port": 7000, "sender": "src1", "stream_id": 1,
         "members": ["mem2"], "dynamic_members": [], "dynamic_addresses": []},
        {"group": "cameras", "group_ip": "239.5.5.5", "group_port": 6100, "sender": "src1", "stream_id": 2,
         "members": ["mem2", "mem3"], "dynamic_members": [], "dynamic_addresses": []},
    ]
    selected = playbook_streams(multicast_proxy_groups=definitions, groups=groups, hostvars=hostvars,
                                ansible_play_hosts_all=groups["all"], multicast_proxy_verify_groups=["cameras"])
    assert [(stream["group"], stream["sender"], stream["group_port"]) for stream in selected] == [
        ("cameras", "src1", 5999), ("cameras", "src2", 5999)]


def test_the_playbook_without_groups_has_no_streams():
    definitions, hostvars, groups = fleet()
    assert playbook_streams(groups=groups, hostvars=hostvars, ansible_play_hosts_all=groups["all"]) == []
