# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The doctor's facts: the /proc and /sys readers on fake trees, the route lookup, the port probe."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import socket

import pytest

from ansible_collections.multicast.proxy.plugins.module_utils import multicast_diag_kernel as kernel

GROUP = "239.7.7.7"


# ------------------------------------------------------------ fake /proc trees

def hexip(address):
    return kernel.ip_to_kernel_hex(address)


def route_line(interface, destination, prefixlen, gateway=None, metric=0):
    mask = socket.inet_ntoa(((0xFFFFFFFF << (32 - prefixlen)) & 0xFFFFFFFF).to_bytes(4, "big")) if prefixlen else "0.0.0.0"
    flags = 0x1 | (0x2 if gateway else 0)
    return "%s\t%s\t%s\t%04X\t0\t0\t%d\t%s\t0\t0\t0" % (
        interface, hexip(destination), hexip(gateway or "0.0.0.0"), flags, metric, hexip(mask))


def write_tree(root, interfaces, routes, igmp, udp, max_memberships=20, rp_filter=None):
    """A minimal /proc + /sys tree as the kernel lays it out."""
    def put(relative, text):
        path = os.path.join(str(root), relative)
        if not os.path.isdir(os.path.dirname(path)):
            os.makedirs(os.path.dirname(path))
        with open(path, "w") as handle:
            handle.write(text)

    for name, index, flags, operstate in interfaces:
        put("sys/class/net/%s/flags" % name, "0x%x\n" % flags)
        put("sys/class/net/%s/ifindex" % name, "%d\n" % index)
        put("sys/class/net/%s/operstate" % name, operstate + "\n")
    put("proc/net/route", "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        + "\n".join(routes) + "\n")
    put("proc/net/igmp", "Idx\tDevice    : Count Querier\tGroup    Users Timer\tReporter\n" + igmp)
    put("proc/net/udp", "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
        "timeout inode ref pointer drops\n" + udp)
    put("proc/net/dev", "Inter-|   Receive\n face |bytes    packets errs drop fifo frame compressed multicast|\n"
        + "".join("%6s: 100 1 0 0 0 0 0 7 100 1 0 0 0 0 0 0\n" % i[0] for i in interfaces))
    put("proc/net/netstat", "IpExt: InMcastPkts OutMcastPkts\nIpExt: 5 9\n")
    put("proc/sys/net/ipv4/igmp_max_memberships", "%d\n" % max_memberships)
    for name, value in (rp_filter or {"all": 0}).items():
        put("proc/sys/net/ipv4/conf/%s/rp_filter" % name, "%d\n" % value)


@pytest.fixture
def two_nic_tree(tmp_path):
    write_tree(
        tmp_path,
        interfaces=[("lo", 1, 0x49, "unknown"), ("eth0", 2, 0x1043, "up"), ("eth1", 3, 0x1043, "up")],
        routes=[route_line("eth0", "0.0.0.0", 0, gateway="10.0.0.254"),
                route_line("eth0", "10.0.0.0", 24), route_line("eth1", "10.1.0.0", 24),
                route_line("eth1", "224.0.0.0", 4, metric=5)],
        igmp=("1\tlo        :     1      V3\n\t\t\t\t%s     1 0:00000000\t\t0\n"
              "2\teth0      :     2      V3\n\t\t\t\t%s     1 0:00000000\t\t0\n"
              "\t\t\t\t%s     2 0:00000000\t\t0\n" % (hexip("224.0.0.1"), hexip("224.0.0.1"), hexip(GROUP))),
        udp=("  1: %s:B798 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 "
             "0000000000000000 3\n" % hexip(GROUP)),
        rp_filter={"all": 0, "eth1": 1},
    )
    return tmp_path


def test_fake_tree_is_read_like_netstat_and_route(two_nic_tree):
    facts = kernel.collect_facts(str(two_nic_tree), ipv4_by_index={2: ["10.0.0.5/24"], 3: ["10.1.0.5/24"]})
    eth0 = [i for i in facts["interfaces"] if i["name"] == "eth0"][0]
    assert eth0["flags"] == ["UP", "BROADCAST", "RUNNING", "MULTICAST"]
    assert eth0["ipv4"] == ["10.0.0.5/24"] and eth0["rx_multicast"] == 7
    lo = [i for i in facts["interfaces"] if i["name"] == "lo"][0]
    assert lo["loopback"] and not lo["multicast"]
    assert {"interface": "eth0", "index": 2, "group": GROUP, "users": 2} in facts["memberships"]
    assert facts["udp_sockets"] == [{"local_address": GROUP, "local_port": 0xB798, "remote_address": "0.0.0.0",
                                     "remote_port": 0, "uid": 0, "inode": 4242, "drops": 3}]
    assert facts["multicast_routes"] == [{"interface": "eth1", "destination": "224.0.0.0", "prefixlen": 4,
                                          "gateway": None, "metric": 5}]
    assert facts["igmp_max_memberships"] == 20
    assert facts["rp_filter"] == {"all": 0, "eth1": 1}
    assert facts["ip_counters"] == {"InMcastPkts": 5, "OutMcastPkts": 9}


def test_route_lookup_prefers_the_longest_prefix_then_the_lowest_metric(two_nic_tree):
    facts = kernel.collect_facts(str(two_nic_tree), ipv4_by_index={})
    assert kernel.route_lookup(facts["routes"], GROUP)["interface"] == "eth1"
    assert kernel.route_lookup(facts["routes"], "8.8.8.8")["interface"] == "eth0"
    routes = [{"interface": "a", "destination": "224.0.0.0", "prefixlen": 4, "gateway": None, "metric": 10},
              {"interface": "b", "destination": "224.0.0.0", "prefixlen": 4, "gateway": None, "metric": 1}]
    assert kernel.route_lookup(routes, GROUP)["interface"] == "b"
    assert kernel.route_lookup(routes, "10.0.0.1") is None
    assert kernel.group_routes(facts, [GROUP]) == {GROUP: {"interface": "eth1", "route": "224.0.0.0/4"}}


def test_a_fake_root_without_addresses_is_refused(two_nic_tree):
    with pytest.raises(kernel.FactsError, match="ipv4_by_index"):
        kernel.collect_facts(str(two_nic_tree))


def test_garbage_igmp_is_a_facts_error():
    with pytest.raises(kernel.FactsError, match="igmp"):
        kernel.parse_proc_igmp("Idx\tDevice\n\t\t\t\tE0000001\n")


def test_live_namespace_has_loopback_with_its_address():
    facts = kernel.collect_facts()
    lo = [i for i in facts["interfaces"] if i["name"] == "lo"][0]
    assert "127.0.0.1/8" in lo["ipv4"]


def test_port_probe_sees_a_socket_without_reuseaddr():
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    try:
        assert kernel.probe_port_shareable("127.0.0.1", port)["shareable"] is False
    finally:
        holder.close()
    assert kernel.probe_port_shareable("127.0.0.1", port) == {"shareable": True, "error": None}


MCFILTER = ("Idx Device        MCA        SRC    INC    EXC\n"
            "  2   eth0 0xe84d0e0b 0x0a4d000a      1      0\n"
            "  3 enp0s3 0xe84d0e0b 0x0a4d0063      0      2\n")


def test_mcfilter_lists_each_source_filter_with_addresses_in_network_order():
    assert kernel.parse_proc_mcfilter(MCFILTER) == [
        {"index": 2, "interface": "eth0", "group": "232.77.14.11", "source": "10.77.0.10", "include": 1,
         "exclude": 0},
        {"index": 3, "interface": "enp0s3", "group": "232.77.14.11", "source": "10.77.0.99", "include": 0,
         "exclude": 2}]
    assert kernel.parse_proc_mcfilter(MCFILTER.splitlines()[0] + "\n") == []


def test_garbage_mcfilter_is_a_facts_error():
    for line in ("  2 eth0 0xe84d0e0b 0x0a4d000a 1\n", "  2 eth0 nothex 0x0a4d000a 1 0\n"):
        with pytest.raises(kernel.FactsError, match="mcfilter"):
            kernel.parse_proc_mcfilter("Idx Device MCA SRC INC EXC\n" + line)


def test_the_facts_carry_the_source_filters_when_the_kernel_has_the_table(two_nic_tree):
    addresses = {2: ["10.0.0.5/24"], 3: ["10.1.0.5/24"]}
    assert kernel.collect_facts(str(two_nic_tree), ipv4_by_index=addresses)["source_filters"] == []
    (two_nic_tree / "proc" / "net" / "mcfilter").write_text(MCFILTER)
    rows = kernel.collect_facts(str(two_nic_tree), ipv4_by_index=addresses)["source_filters"]
    assert [(r["group"], r["source"], r["include"]) for r in rows] == [
        ("232.77.14.11", "10.77.0.10", 1), ("232.77.14.11", "10.77.0.99", 0)]
