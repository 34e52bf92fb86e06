"""Issue 15: a source host with two NICs, the application sending out of either.

The source namespace has eth0 (the default route, which the kernel picks for
every group) and eth1, a second veth on another bridge, as an ECS instance
with a secondary network interface has.  The application sets
IP_MULTICAST_IF: the loopback copy of a datagram reaches only sockets that
joined the group on the interface it left from, so a relay that joined on
the route's interface alone relays nothing of what goes out of eth1 (the
field notes' failure).  With ``join_interfaces`` "all" (the default) the
server joins on every multicast interface and a member gets the stream
whichever interface the application used, each datagram once.
"""

import json

import pytest

from vpc import wait_until

GROUP = "239.77.15.1"
GROUP_PORT = 5151
SERVER_PORT = 6151
COUNT = 300


@pytest.fixture
def nic_vpc(make_vpc):
    """src with eth0 and eth1 runs the server for GROUP; m1 (eth0's network) runs the client."""
    return make_vpc({"src": 2, "m1": 1}, name_prefix="nic")


def edit(host, command, *args):
    result = host.relay(command, *args, check=False)
    # 3: saved while no daemon runs (it starts below).
    assert result.returncode in (0, 3), (command, args, result.stdout, result.stderr)
    return result


def start(vpc, *server_settings):
    source, member = vpc["src"], vpc["m1"]
    edit(source, "multis_admin", "-A", "-m", GROUP, "-j", member.ip, "-p", SERVER_PORT, "-g", GROUP_PORT)
    for setting in server_settings:
        edit(source, "multis_admin", "--set", setting)
    edit(member, "multic_admin", "-A", "-i", source.ip, "-g", GROUP_PORT, "-s", SERVER_PORT, "-m", GROUP)
    member.start_relay("client")
    source.start_relay("server")
    return source, member


def relay_stream(source, member, interface, label):
    """Send COUNT datagrams out of ``interface`` of the source; the member's receiver summary."""
    receiver = member.start_receiver(label, GROUP, GROUP_PORT, expect=COUNT, idle_timeout=3)
    source.send(GROUP, GROUP_PORT, COUNT, rate=1000, interface_ip=source.addresses[interface])
    return receiver.json_result()


def server_group(source):
    (group,) = json.loads(source.relay("multis_admin", "-P", "--json").stdout)["groups"]
    return group


@pytest.mark.parametrize("interface", ["eth0", "eth1"])
def test_a_source_sending_out_of_either_nic_is_relayed_once(nic_vpc, interface):
    source, member = start(nic_vpc)
    summary = relay_stream(source, member, interface, "mcrecv-" + interface)
    # Every datagram, and each once: joined on two interfaces, a datagram leaves (and loops back) on one.
    assert summary["unique"] == COUNT and summary["duplicates"] == 0 and summary["corrupt"] == 0, summary
    group = server_group(source)
    assert group["state"] == "joined" and group["rx_packets"] == COUNT, group
    assert sorted(group["interfaces"]) == ["eth0", "eth1"], group


def test_join_interfaces_route_misses_what_leaves_by_the_second_nic(nic_vpc):
    """The control: joined by the route alone (the behaviour before issue 15), eth1's stream is lost."""
    source, member = start(nic_vpc, "join_interfaces=route")
    assert server_group(source)["interfaces"] == ["eth0"]
    assert relay_stream(source, member, "eth1", "mcrecv-route")["received"] == 0
    assert server_group(source)["rx_packets"] == 0
    summary = relay_stream(source, member, "eth0", "mcrecv-route-eth0")
    assert summary["unique"] == COUNT, summary


def test_a_listed_interface_is_joined_alone_and_rescanned(nic_vpc):
    source, member = start(nic_vpc, "join_interfaces=eth1")
    assert server_group(source)["interfaces"] == ["eth1"]
    summary = relay_stream(source, member, "eth1", "mcrecv-listed")
    assert summary["unique"] == COUNT and summary["duplicates"] == 0, summary


def test_capture_mode_still_relays_with_the_default(nic_vpc):
    source, member = nic_vpc["src"], nic_vpc["m1"]
    edit(source, "multis_admin", "-A", "-m", GROUP, "-j", member.ip, "-p", SERVER_PORT, "-g", GROUP_PORT,
         "--capture")
    edit(member, "multic_admin", "-A", "-i", source.ip, "-g", GROUP_PORT, "-s", SERVER_PORT, "-m", GROUP)
    member.start_relay("client")
    source.start_relay("server")
    summary = relay_stream(source, member, "eth0", "mcrecv-capture")
    assert summary["unique"] == COUNT and summary["duplicates"] == 0, summary


def doctor_findings(source):
    result = source.relay("multis_admin", "--doctor", "--json", check=False)
    assert result.returncode in (0, 1), (result.stdout, result.stderr)
    return json.loads(result.stdout)


def test_the_doctor_names_the_interface_the_source_used_and_the_one_joined(nic_vpc):
    source, member = start(nic_vpc, "join_interfaces=route")
    # Sending all through the doctor's look at the source (2 s).
    sender = source.send(GROUP, GROUP_PORT, 4000, rate=500, interface_ip=source.addresses["eth1"], background=True)
    try:
        report = doctor_findings(source)
    finally:
        sender.stop()
    assert report["source_interfaces"][GROUP].get("eth1", 0) > 0, report["source_interfaces"]
    (finding,) = [f for f in report["findings"] if f["id"] == "source-interface-not-joined"]
    assert finding["severity"] == "error"
    assert "out of eth1" in finding["what"] and "on eth0 only" in finding["what"], finding

    # With the default (all) the same source is relayed and the doctor has nothing to say about it.
    edit(source, "multis_admin", "--set", "join_interfaces=all")
    source.relay("server_reload_list", "reload")
    sender = source.send(GROUP, GROUP_PORT, 4000, rate=500, interface_ip=source.addresses["eth1"], background=True)
    try:
        report = doctor_findings(source)
    finally:
        sender.stop()
    assert report["source_interfaces"][GROUP].get("eth1", 0) > 0, report["source_interfaces"]
    ids = [f["id"] for f in report["findings"] if f["severity"] != "info"]
    assert "source-interface-not-joined" not in ids and "server-no-input" not in ids, report["findings"]
    assert sorted(server_group(source)["interfaces"]) == ["eth0", "eth1"]


def test_interfaces_that_come_and_go_are_joined_and_left(nic_vpc):
    source = nic_vpc["src"]
    source.run(["ip", "link", "set", "eth1", "down"])
    source, member = start(nic_vpc, "join_interfaces=eth1")
    group = server_group(source)
    assert group["state"] == "error" and "eth1 is down" in group["error"], group

    # Listed and brought up: joined within the rescan, not the 30-second retry of failed groups.
    source.run(["ip", "link", "set", "eth1", "up"])
    wait_until(lambda: server_group(source)["interfaces"] == ["eth1"], "eth1 to be joined")
    summary = relay_stream(source, member, "eth1", "mcrecv-came")
    assert summary["unique"] == COUNT, summary

    # All: eth1 down is left, up again is joined again, on the same socket (the counters go on).
    edit(source, "multis_admin", "--set", "join_interfaces=all")
    source.relay("server_reload_list", "reload")
    wait_until(lambda: sorted(server_group(source)["interfaces"]) == ["eth0", "eth1"], "both to be joined")
    source.run(["ip", "link", "set", "eth1", "down"])
    wait_until(lambda: server_group(source)["interfaces"] == ["eth0"], "eth1 to be left")
    source.run(["ip", "link", "set", "eth1", "up"])
    wait_until(lambda: sorted(server_group(source)["interfaces"]) == ["eth0", "eth1"], "eth1 to be joined again")
    summary = relay_stream(source, member, "eth1", "mcrecv-again")
    assert summary["unique"] == COUNT, summary
    assert server_group(source)["rx_packets"] == 2 * COUNT


def test_the_igmp_limit_keeps_the_route_interface_and_says_so(nic_vpc):
    source = nic_vpc["src"]
    # Per network namespace: this changes only the source host.
    source.run(["sysctl", "-q", "-w", "net.ipv4.igmp_max_memberships=1"])
    source, member = start(nic_vpc)
    group = server_group(source)
    assert group["state"] == "joined" and group["interfaces"] == ["eth0"], group
    assert group["join_problem"].startswith("not joined on eth1: net.ipv4.igmp_max_memberships is 1"), group
    shown = source.relay("multis_admin", "-P").stdout
    assert "not joined %s: not joined on eth1" % GROUP in shown, shown
    listed = source.relay("multis_admin", "-L", "-m", GROUP).stdout
    assert "picked up on eth0" in listed and "sysctl -w net.ipv4.igmp_max_memberships=2" in listed, listed
    findings = doctor_findings(source)["findings"]
    assert [f["id"] for f in findings if f["severity"] == "warning"] == ["server-join-incomplete"], findings

    # Raised, the next rescan joins eth1 too.
    source.run(["sysctl", "-q", "-w", "net.ipv4.igmp_max_memberships=20"])
    wait_until(lambda: sorted(server_group(source)["interfaces"]) == ["eth0", "eth1"], "eth1 to be joined")
    assert server_group(source)["join_problem"] == ""
