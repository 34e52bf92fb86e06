"""Interface detection from /proc text, and the kernel facts the data path relies on."""

import os
import socket
import struct
import subprocess

import pytest

from multicast_proxy import netinfo

# Little-endian host: /proc prints network-order addresses as host-order hex.
ROUTES = """Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth1\t000000E0\t00000000\t0001\t0\t0\t0\t000000F0\t0\t0\t0
eth2\t000000E0\t00000000\t0001\t0\t0\t5\t000000F0\t0\t0\t0
eth3\t030201E0\t00000000\t0001\t0\t0\t0\tFFFFFFFF\t0\t0\t0
eth4\t000000EF\t00000000\t0000\t0\t0\t0\t000000FF\t0\t0\t0
eth5\t0000FFEF\t00000000\t0201\t0\t0\t0\t0000FFFF\t0\t0\t0
"""

IGMP = """Idx\tDevice    : Count Querier\tGroup    Users Timer\tReporter
1\tlo        :     1      V3
\t\t\t\t010000E0     1 0:00000000\t\t0
2\teth0      :     2      V3
\t\t\t\t030201E0     1 0:00000000\t\t0
\t\t\t\t010000E0     1 0:00000000\t\t0
3\teth1      :     2      V3
\t\t\t\t030201E0     1 0:00000000\t\t0
\t\t\t\t050505EF     1 0:00000000\t\t0
"""

little_endian_only = pytest.mark.skipif(struct.pack("=I", 1) != b"\x01\x00\x00\x00",
                                        reason="the canned /proc text is from a little-endian host")


@little_endian_only
def test_longest_prefix_then_lowest_metric():
    routes = netinfo.parse_routes(ROUTES)
    assert netinfo.route_interface(routes, "224.1.2.3") == "eth3"
    assert netinfo.route_interface(routes, "224.1.2.4") == "eth1"
    assert netinfo.route_interface(routes, "192.0.2.9") == "eth0"
    assert netinfo.route_interface(routes, "8.8.8.8") == "eth0"
    # Routes that are down (eth4) or reject routes (eth5) are ignored.
    assert netinfo.route_interface(routes, "239.0.0.1") == "eth1"
    assert netinfo.route_interface(routes, "239.255.1.1") == "eth1"


@little_endian_only
def test_no_route_names_the_fix():
    with pytest.raises(netinfo.InterfaceError) as info:
        netinfo.interface_for_group("224.1.2.3", route_text=ROUTES.splitlines()[0] + "\n")
    assert "ip route add 224.0.0.0/4" in str(info.value) and '"interface"' in str(info.value)
    assert netinfo.interface_for_group("224.1.2.3", configured="eth9", route_text="") == "eth9"
    assert netinfo.interface_for_group("224.1.2.3", route_text=ROUTES) == "eth3"


@little_endian_only
def test_igmp_groups_per_interface():
    assert netinfo.parse_igmp(IGMP) == {"224.0.0.1": ["lo", "eth0"], "224.1.2.3": ["eth0", "eth1"],
                                        "239.5.5.5": ["eth1"]}


def test_unreadable_igmp_text_means_no_memberships():
    # The client falls back to the route when it cannot tell where receivers joined.
    assert netinfo.parse_igmp("Idx\tDevice\n\t\t\t\tE0000001\n") == {}
    assert netinfo.parse_igmp("Idx\tDevice\nx\teth0 : 1 V3\n\t\t\t\tE0000001 1 0:0\t\t0\n") == {}
    assert netinfo.parse_igmp("") == {}


def test_live_proc_files_parse():
    routes = netinfo.parse_routes(netinfo.read_text(netinfo.ROUTE_FILE))
    assert routes and all(set(route) >= {"interface", "destination", "prefixlen", "metric"} for route in routes)
    assert "224.0.0.1" in netinfo.parse_igmp(netinfo.read_text(netinfo.IGMP_FILE))


def test_interface_address_and_index_of_lo():
    assert netinfo.interface_address("lo") == "127.0.0.1"
    assert netinfo.interface_index("lo") == socket.if_nametoindex("lo")
    with pytest.raises(netinfo.InterfaceError):
        netinfo.interface_index("h1x-no-such")
    assert netinfo.interface_address("h1x-no-such") is None


KERNEL_FACTS = r"""
import socket, struct
def mreqn(group, ifname):
    return socket.inet_aton(group) + socket.inet_aton("0.0.0.0") + struct.pack("=i", socket.if_nametoindex(ifname))
G = "239.9.9.9"
r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
r.bind(("0.0.0.0", 7000))
r.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn(G, "eth1"))
r.setsockopt(socket.IPPROTO_IP, 12, 1)  # IP_RECVTTL
r.settimeout(0.5)
def send(ifname, ttl, payload):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn(G, ifname))
    s.sendto(payload, (G, 7000))
    s.close()
    got = []
    try:
        while True:
            data, anc, _fl, _src = r.recvmsg(100, socket.CMSG_SPACE(4))
            got.append((data.decode(), [struct.unpack("=i", d[:4])[0] for _l, t, d in anc if t == socket.IP_TTL]))
    except socket.timeout:
        return got
print(send("eth0", 0, b"ttl0-eth0"))
print(send("eth1", 0, b"ttl0-eth1"))
print(send("eth1", 1, b"ttl1-eth1"))
"""


def _ip(*args):
    subprocess.run(["ip"] + list(args), check=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces")
def test_kernel_ttl0_redelivery_facts():
    """The contract's two assumptions, measured on a host with eth0 and eth1:
    a TTL-0 re-delivery arrives with IP_RECVTTL 0 (normal sends with >= 1), and
    a receiver joined on eth1 gets it only when it is sent with IP_MULTICAST_IF=eth1."""
    ns, peer = "h1xfacts%d" % os.getpid(), "h1xpeer%d" % os.getpid()
    try:
        _ip("netns", "add", ns)
        _ip("netns", "add", peer)
        for index in (0, 1):
            _ip("link", "add", "h1xf%d" % index, "netns", ns, "type", "veth", "peer", "name", "h1xq%d" % index,
                "netns", peer)
            _ip("-n", ns, "link", "set", "h1xf%d" % index, "name", "eth%d" % index)
            _ip("-n", ns, "addr", "add", "10.99.%d.2/24" % index, "dev", "eth%d" % index)
            _ip("-n", ns, "link", "set", "eth%d" % index, "up")
            _ip("-n", peer, "link", "set", "h1xq%d" % index, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "route", "add", "default", "via", "10.99.0.1", "dev", "eth0")
        result = subprocess.run(["ip", "netns", "exec", ns, "python3", "-c", KERNEL_FACTS], check=True,
                                stdout=subprocess.PIPE, universal_newlines=True)
        assert result.stdout.splitlines() == ["[]", "[('ttl0-eth1', [0])]", "[('ttl1-eth1', [1])]"]
    finally:
        subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL, check=False)
        subprocess.run(["ip", "netns", "del", peer], stderr=subprocess.DEVNULL, check=False)
