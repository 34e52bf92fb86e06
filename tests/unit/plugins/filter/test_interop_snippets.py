# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The inventory snippets of docs/interop.md are accepted by the membership filter and render the
relay options each application needs (the interop suite runs the applications with them)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.multicast.proxy.plugins.filter import membership
from ansible_collections.multicast.proxy.tests.unit.plugins.filter import interop_inventory

ADDRESSES = {"src": "10.0.5.1", "m1": "10.0.5.11", "m2": "10.0.5.12", "n1": "10.0.5.21", "n2": "10.0.5.22"}
SOURCE_PORT = membership.DEFAULT_SOURCE_PORT

# Per snippet: the hosts of each inventory group it names, and what every host must get:
# server groups as (group_ip, group_port, server_port, members, options) and client entries
# as (server host, group_ip, group_port, server_port, options); options are the keys beyond the
# seed format (source_port, which every entry carries, is checked apart).
EXPECTED = {
    "iperf": {
        "members": {"iperf_clients": ["src"], "iperf_servers": ["m1", "m2"]},
        "server": {"src": [("239.77.15.1", 5001, 6911, ["m1", "m2"], {})]},
        "client": {"m1": [("src", "239.77.15.1", 5001, 6911, {})],
                   "m2": [("src", "239.77.15.1", 5001, 6911, {})]},
    },
    "udpcast": {
        "members": {"udpcast_senders": ["src"], "udpcast_receivers": ["m1", "m2"]},
        "server": {
            "src": [("239.77.15.3", 9000, 6912, ["m1", "m2"], {}), ("239.77.15.2", 9000, 6913, ["m1", "m2"], {})],
            "m1": [("239.77.15.3", 9001, 6914, ["src"], {})],
            "m2": [("239.77.15.3", 9001, 6914, ["src"], {})]},
        "client": {
            "src": [("m1", "239.77.15.3", 9001, 6914, {"preserve_source": True}),
                    ("m2", "239.77.15.3", 9001, 6914, {"preserve_source": True})],
            "m1": [("src", "239.77.15.3", 9000, 6912, {"preserve_source": True}),
                   ("src", "239.77.15.2", 9000, 6913, {"preserve_source": True})],
            "m2": [("src", "239.77.15.3", 9000, 6912, {"preserve_source": True}),
                   ("src", "239.77.15.2", 9000, 6913, {"preserve_source": True})]},
    },
    "udpcast-any-role": {
        "members": {"udpcast_hosts": ["src", "m1"]},
        "server": {"src": [("239.77.15.3", 0, 6912, ["m1"], {"capture": True}),
                           ("239.77.15.2", 9000, 6913, ["m1"], {"capture": True})],
                   "m1": [("239.77.15.3", 0, 6912, ["src"], {"capture": True}),
                          ("239.77.15.2", 9000, 6913, ["src"], {"capture": True})]},
        "client": {"src": [("m1", "239.77.15.3", 0, 6912, {"preserve_source": True}),
                           ("m1", "239.77.15.2", 9000, 6913, {"preserve_source": True})],
                   "m1": [("src", "239.77.15.3", 0, 6912, {"preserve_source": True}),
                          ("src", "239.77.15.2", 9000, 6913, {"preserve_source": True})]},
    },
    "gstreamer": {
        "members": {"media_sources": ["src"], "media_players": ["m1"]},
        "server": {"src": [("239.77.15.4", 5004, 6915, ["m1"], {})]},
        "client": {"m1": [("src", "239.77.15.4", 5004, 6915, {})]},
    },
    "gstreamer-loop-off": {
        "members": {"media_sources": ["src"], "media_players": ["m1"]},
        "server": {"src": [("239.77.15.4", 5004, 6915, ["m1"], {"capture": True})]},
        "client": {"m1": [("src", "239.77.15.4", 5004, 6915, {})]},
    },
    "avahi": {
        "members": {"mdns_hosts": ["n1", "n2", "m1"]},
        "server": {"n1": [("224.0.0.251", 5353, 6916, ["m1", "n2"], {})],
                   "n2": [("224.0.0.251", 5353, 6916, ["m1", "n1"], {})],
                   "m1": [("224.0.0.251", 5353, 6916, ["n1", "n2"], {})]},
        "client": {"n1": [("m1", "224.0.0.251", 5353, 6916, {"preserve_source": True}),
                          ("n2", "224.0.0.251", 5353, 6916, {"preserve_source": True})],
                   "n2": [("m1", "224.0.0.251", 5353, 6916, {"preserve_source": True}),
                          ("n1", "224.0.0.251", 5353, 6916, {"preserve_source": True})],
                   "m1": [("n1", "224.0.0.251", 5353, 6916, {"preserve_source": True}),
                          ("n2", "224.0.0.251", 5353, 6916, {"preserve_source": True})]},
    },
    "corosync": {
        "members": {"cluster_nodes": ["n1", "n2"]},
        "server": {"n1": [("239.77.15.5", 5405, 6917, ["n2"], {"capture": True})],
                   "n2": [("239.77.15.5", 5405, 6917, ["n1"], {"capture": True})]},
        "client": {"n1": [("n2", "239.77.15.5", 5405, 6917, {})],
                   "n2": [("n1", "239.77.15.5", 5405, 6917, {})]},
    },
}

SEED_GROUP_KEYS = ("group_ip", "group_port", "server_port", "member_array")
SEED_ENTRY_KEYS = ("server_ip", "group_ip", "group_port", "server_port", "source_port")


def snippet_fleet(name):
    definitions = interop_inventory.snippets()[name]
    members = EXPECTED[name]["members"]
    return interop_inventory.fleet(definitions, dict(
        (group, [(host, ADDRESSES[host]) for host in hosts]) for group, hosts in members.items()))


def by_address(address):
    return dict((ip, host) for host, ip in ADDRESSES.items())[address]


def test_every_snippet_of_the_docs_is_checked_here():
    assert sorted(interop_inventory.snippets()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_snippet_names_the_inventory_groups_it_is_checked_with(name):
    assert interop_inventory.inventory_groups(interop_inventory.snippets()[name]) == sorted(
        EXPECTED[name]["members"])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_snippet_has_no_fleet_problems(name):
    assert membership.fleet_problems(*snippet_fleet(name)) == []


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_snippet_renders_the_server_groups_the_application_needs(name):
    definitions, hostvars, groups = snippet_fleet(name)
    for host in groups["all"]:
        config = membership.server_config(definitions, host, hostvars, groups)
        rendered = [(group["group_ip"], group["group_port"], group["server_port"],
                     sorted(by_address(member) for member in group["member_array"]),
                     dict((key, value) for key, value in group.items() if key not in SEED_GROUP_KEYS))
                    for group in config["multi_group_array"]]
        assert rendered == EXPECTED[name]["server"].get(host, []), host


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_snippet_renders_the_client_entries_the_application_needs(name):
    definitions, hostvars, groups = snippet_fleet(name)
    for host in groups["all"]:
        entries = membership.client_config(definitions, host, hostvars, groups)["multi_server_info_array"]
        rendered = [(by_address(entry["server_ip"]), entry["group_ip"], entry["group_port"], entry["server_port"],
                     dict((key, value) for key, value in entry.items() if key not in SEED_ENTRY_KEYS))
                    for entry in entries]
        assert all(entry["source_port"] == SOURCE_PORT for entry in entries), entries
        assert rendered == EXPECTED[name]["client"].get(host, []), host


def test_a_host_that_sends_and_receives_needs_the_any_role_udpcast_snippet():
    """docs/interop.md: one relay server carries a group address once, so the three-definition
    snippet cannot make a host both a udpcast sender and receiver; the fleet check says so."""
    members = {"udpcast_senders": [("src", ADDRESSES["src"]), ("m1", ADDRESSES["m1"])],
               "udpcast_receivers": [("m1", ADDRESSES["m1"]), ("m2", ADDRESSES["m2"])]}
    problems = membership.fleet_problems(*interop_inventory.fleet(interop_inventory.snippets()["udpcast"], members))
    assert problems == ["host m1: server config: multi_group_array[2].group_ip: group 239.77.15.3 is already defined "
                        "at multi_group_array[0]; merge the two entries (from multicast_proxy_groups[2] "
                        "(udpcast-connect))"]
