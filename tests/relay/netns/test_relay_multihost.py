"""The relay across hosts of a VPC that drops multicast (network namespaces).

One source (`src`) runs the server, members run the client; receivers are
tests/tools/mcrecv.py (payload integrity, per-stream sequence accounting)
and iperf 2, a receiver nobody here wrote.  See tests/relay/README.md.
"""

import json
import re
import shutil
import time

import pytest

from vpc import wait_until

GROUP = "239.77.1.1"
GROUP_PORT = 5001
SERVER_PORT = 6001
IPERF_GROUP = "239.77.2.2"
IPERF_GROUP_PORT = 5002
IPERF_SERVER_PORT = 6002
DATAGRAMS = 10000
# The bar: at least 99.9% of the datagrams arrive.
MINIMUM_DELIVERED = DATAGRAMS * 999 // 1000

MEMBERS = ("m1", "m2", "m3")
# 4 s at 2000/s: long enough to run on through both membership changes.
LONG_STREAM = 8000


def relay_edit(host, command, *args):
    """An edit made before the daemon runs is saved and reported with exit code 3."""
    result = host.relay(command, *args, check=False)
    assert result.returncode in (0, 3), "%s %s: exit %d\n%s%s" % (
        command, " ".join(map(str, args)), result.returncode, result.stdout, result.stderr)
    return result


def configure_server(source, group, members, server_port, group_port):
    relay_edit(source, "multis_admin", "-A", "-m", group, "-j", ",".join(m.ip for m in members),
               "-p", server_port, "-g", group_port)


def configure_client(member, server, group, server_port, group_port):
    relay_edit(member, "multic_admin", "-A", "-i", server.ip, "-g", group_port, "-s", server_port, "-m", group)


def server_group_stats(host, group):
    for entry in host.control("server", {"cmd": "stats"})["groups"]:
        if entry["group_ip"] == group:
            return entry
    raise AssertionError("group %s not in the server statistics of %s" % (group, host.name))


def client_interfaces(member):
    """Where the member's client re-delivers its (single) entry."""
    (entry,) = member.control("client", {"cmd": "show"})["entries"]
    return entry["interfaces"]


def assert_all_delivered(summary, sent, label):
    assert summary["corrupt"] == 0, (label, summary)
    assert summary["foreign"] == 0, (label, summary)
    assert summary["duplicates"] == 0, (label, summary)
    assert summary["unique"] == sent, (label, summary)


@pytest.fixture
def relayed_vpc(make_vpc):
    """src runs the server for GROUP with members m1..m3; each member runs the client."""
    vpc = make_vpc({"src": 1, "m1": 1, "m2": 1, "m3": 1})
    members = [vpc[name] for name in MEMBERS]
    configure_server(vpc["src"], GROUP, members, SERVER_PORT, GROUP_PORT)
    for member in members:
        configure_client(member, vpc["src"], GROUP, SERVER_PORT, GROUP_PORT)
        member.start_relay("client")
    vpc["src"].start_relay("server")
    return vpc


def test_vpc_drops_multicast_between_hosts_without_relay(make_vpc):
    vpc = make_vpc({"src": 1, "m1": 1, "m2": 1, "m3": 1})

    # Positive control: with the drop rule removed these receivers do get the
    # traffic, so silence below is the VPC's doing, not a broken receiver.
    vpc.allow_multicast(True)
    receivers = {name: vpc[name].start_receiver("control", GROUP, GROUP_PORT, expect=200, idle_timeout=2)
                 for name in MEMBERS}
    vpc["src"].send(GROUP, GROUP_PORT, 200)
    for name, receiver in receivers.items():
        assert_all_delivered(receiver.json_result(), 200, name)

    vpc.allow_multicast(False)
    drops_before = vpc.multicast_drops()
    receivers = {name: vpc[name].start_receiver("blocked", GROUP, GROUP_PORT, idle_timeout=2)
                 for name in MEMBERS}
    sent = vpc["src"].send(GROUP, GROUP_PORT, 1000)
    for name, receiver in receivers.items():
        summary = receiver.json_result()
        assert summary["received"] == 0, (name, summary)
    # The datagrams did reach the bridge and were dropped there, once per member port.
    assert vpc.multicast_drops() - drops_before >= sent["sent"] * len(MEMBERS)


def iperf_final_report(output):
    """(lost, total) of the iperf 2 server's final report, or None before it is printed.

    With `-i 1` the interval lines and the final line share one format; only
    the first interval and the final line start at 0.0, and the final one
    ends later: the streams here last about two seconds.
    """
    for start, end, lost, total in re.findall(r"\]\s+([\d.]+)-([\d.]+) sec.*?\s(\d+)/\s*(\d+) \(", output):
        if float(start) == 0.0 and float(end) > 1.5:
            return int(lost), int(total)
    return None


def wait_for_iperf_report(process, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        report = iperf_final_report(process.stdout())
        if report is not None:
            return report
        time.sleep(0.2)
    raise AssertionError("no final iperf report:\n" + process.describe())


def test_relay_delivers_to_plain_receivers_and_iperf_on_every_member(relayed_vpc):
    assert shutil.which("iperf"), "iperf 2 is required: apt-get install iperf"
    vpc = relayed_vpc
    members = [vpc[name] for name in MEMBERS]
    configure_server(vpc["src"], IPERF_GROUP, members, IPERF_SERVER_PORT, IPERF_GROUP_PORT)
    for member in members:
        configure_client(member, vpc["src"], IPERF_GROUP, IPERF_SERVER_PORT, IPERF_GROUP_PORT)

    receivers = {m.name: m.start_receiver("mcrecv", GROUP, GROUP_PORT, expect=DATAGRAMS, idle_timeout=3)
                 for m in members}
    drops_before = vpc.multicast_drops()
    sent = vpc["src"].send(GROUP, GROUP_PORT, DATAGRAMS, rate=5000, size=512)
    assert sent["sent"] == DATAGRAMS
    # The multicast itself still died on the bridge: what arrived came through the relay.
    assert vpc.multicast_drops() - drops_before >= DATAGRAMS * len(members)
    for name, receiver in receivers.items():
        summary = receiver.json_result()
        assert summary["corrupt"] == 0, (name, summary)
        assert summary["foreign"] == 0, (name, summary)
        assert summary["duplicates"] == 0, (name, summary)
        assert summary["unique"] >= MINIMUM_DELIVERED, (name, summary)
        assert summary["interfaces"] == ["eth0"], (name, summary)

    iperf_servers = {m.name: m.start("iperf", ["iperf", "-s", "-u", "-B", IPERF_GROUP, "-p", IPERF_GROUP_PORT,
                                               "-i", "1"]) for m in members}
    for member in members:
        member.wait_joined(IPERF_GROUP)
    vpc["src"].run(["iperf", "-c", IPERF_GROUP, "-u", "-p", IPERF_GROUP_PORT, "-T", "1", "-l", "512",
                    "-b", "5000pps", "-n", 512 * DATAGRAMS], timeout=60)
    for name, server in iperf_servers.items():
        lost, total = wait_for_iperf_report(server)
        assert total - lost >= MINIMUM_DELIVERED, (name, lost, total, server.stdout())


def test_members_join_and_quit_on_the_running_server(relayed_vpc):
    vpc = relayed_vpc
    source, m1, m2, m3 = vpc["src"], vpc["m1"], vpc["m2"], vpc["m3"]
    relay_edit(source, "multis_admin", "-A", "-m", GROUP, "-q", m3.ip)  # m3 starts outside the group
    started = source.control("server", {"cmd": "stats"})["started"]

    receivers = {m.name: m.start_receiver("mcrecv", GROUP, GROUP_PORT, idle_timeout=3) for m in (m1, m2, m3)}
    background = source.send(GROUP, GROUP_PORT, LONG_STREAM, rate=2000, stream_id=1, background=True)
    time.sleep(0.5)  # let stream 1 get going before the change

    joined = source.relay("multis_admin", "-A", "-m", GROUP, "-j", m3.ip)
    assert joined.returncode == 0
    # Applied when the command returns: every datagram sent afterwards reaches m3.
    source.send(GROUP, GROUP_PORT, 500, rate=2000, stream_id=2)

    quit_ = source.relay("multis_admin", "-A", "-m", GROUP, "-q", m3.ip)
    assert quit_.returncode == 0
    source.send(GROUP, GROUP_PORT, 500, rate=2000, stream_id=3)
    assert background.running(), "stream 1 ended before the changes were done; the check below would prove nothing"
    assert background.json_result(timeout=30)["sent"] == LONG_STREAM

    for member in (m1, m2):
        summary = receivers[member.name].json_result()
        assert summary["corrupt"] == 0 and summary["duplicates"] == 0, (member.name, summary)
        # Members the change did not touch lose nothing.
        assert summary["streams"]["1"]["unique"] == LONG_STREAM, (member.name, summary)
        assert summary["streams"]["2"]["unique"] == 500, (member.name, summary)
        assert summary["streams"]["3"]["unique"] == 500, (member.name, summary)

    summary = receivers["m3"].json_result()
    assert summary["corrupt"] == 0 and summary["duplicates"] == 0, summary
    assert summary["streams"]["2"]["unique"] == 500, summary
    assert "3" not in summary["streams"], summary
    # While m3 was a member it got an unbroken run of stream 1.
    stream1 = summary["streams"]["1"]
    assert 0 < stream1["unique"] < LONG_STREAM and stream1["lost"] == 0, summary

    # No restart: the same process, with the same start time, served throughout.
    assert source.relays["server"].running(), source.relays["server"].describe()
    assert source.control("server", {"cmd": "stats"})["started"] == started
    listed = source.relay("multis_admin", "-L", "-m", GROUP).stdout
    assert m1.ip in listed and m2.ip in listed and m3.ip not in listed, listed


@pytest.mark.parametrize("application_first", [True, False], ids=["application-first", "relay-first"])
def test_member_with_two_interfaces_receives_where_its_application_joined(make_vpc, application_first):
    vpc = make_vpc({"src": 1, "mh": 2})
    source, member = vpc["src"], vpc["mh"]
    # The field notes' trap: the route to the group leaves by eth0 (the VPC
    # interface) while the application joined the group on eth1.
    route = member.run(["ip", "route", "get", GROUP]).stdout
    assert " dev eth0 " in route, route

    configure_server(source, GROUP, [member], SERVER_PORT, GROUP_PORT)
    configure_client(member, source, GROUP, SERVER_PORT, GROUP_PORT)

    def start_application():
        return member.start_receiver("app-on-eth1", GROUP, GROUP_PORT, expect=2000, interface="eth1",
                                     idle_timeout=3)

    receiver = start_application() if application_first else None
    member.start_relay("client")
    source.start_relay("server")
    if receiver is None:
        receiver = start_application()
        # The client learns a join made after it started from /proc/net/igmp
        # on its next refresh; wait for that rather than for a fixed time.
        wait_until(lambda: client_interfaces(member) == ["eth1"], "the client to follow the join on eth1")
    assert client_interfaces(member) == ["eth1"]

    source.send(GROUP, GROUP_PORT, 2000, rate=4000)
    summary = receiver.json_result()
    assert_all_delivered(summary, 2000, "mh")
    assert summary["interfaces"] == ["eth1"], summary

    # Control: the same receiver gets nothing when the client is told to
    # deliver on eth0, so the check above really tells the interfaces apart.
    client_config = member.conf_dir / "client_cfg.json.txt"
    forced = json.loads(client_config.read_text())
    forced["interface"] = "eth0"
    client_config.write_text(json.dumps(forced))
    member.relay("client_reload_list", "reload")
    receiver = member.start_receiver("app-on-eth1", GROUP, GROUP_PORT, interface="eth1", idle_timeout=2)
    source.send(GROUP, GROUP_PORT, 500, rate=4000)
    assert receiver.json_result()["received"] == 0
    delivered = member.control("client", {"cmd": "stats"})["entries"][0]["delivered_packets"]
    assert delivered == 2500  # the client did deliver them, on the wrong interface


def test_loop_guard_stops_a_host_that_is_both_source_and_member(make_vpc):
    vpc = make_vpc({"s1": 1, "s2": 1, "m1": 1, "m2": 1})
    s1, s2, m1, m2 = vpc["s1"], vpc["s2"], vpc["m1"], vpc["m2"]
    # s1 and s2 both source GROUP and each is a member of the other: without
    # the loop guard, what s2's client delivers would go back to s1, and so on.
    configure_server(s1, GROUP, [s2, m1], SERVER_PORT, GROUP_PORT)
    configure_server(s2, GROUP, [s1, m2], SERVER_PORT, GROUP_PORT)
    configure_client(s1, s2, GROUP, SERVER_PORT, GROUP_PORT)
    configure_client(s2, s1, GROUP, SERVER_PORT, GROUP_PORT)
    configure_client(m1, s1, GROUP, SERVER_PORT, GROUP_PORT)
    configure_client(m2, s2, GROUP, SERVER_PORT, GROUP_PORT)
    for host in (s1, s2, m1, m2):
        host.start_relay("client")
    for host in (s1, s2):
        host.start_relay("server")

    receivers = {h.name: h.start_receiver("mcrecv", GROUP, GROUP_PORT, idle_timeout=3, duration=20)
                 for h in (s1, s2, m1, m2)}
    s1.send(GROUP, GROUP_PORT, 2000, rate=4000)
    results = {name: receiver.json_result() for name, receiver in receivers.items()}

    for name in ("s1", "s2", "m1"):
        assert_all_delivered(results[name], 2000, name)
    assert results["m2"]["received"] == 0, results["m2"]

    s1_group = server_group_stats(s1, GROUP)
    s2_group = server_group_stats(s2, GROUP)
    assert s1_group["rx_packets"] == 2000, s1_group
    assert all(member["tx_packets"] == 2000 for member in s1_group["members"]), s1_group
    assert s2_group["drops"]["loop"] == 2000, s2_group
    assert all(member["tx_packets"] == 0 for member in s2_group["members"]), s2_group


def test_statistics_count_what_was_sent(relayed_vpc):
    vpc = relayed_vpc
    source = vpc["src"]
    members = [vpc[name] for name in MEMBERS]
    sent_count, size = 3000, 300
    receivers = {m.name: m.start_receiver("mcrecv", GROUP, GROUP_PORT, expect=sent_count, idle_timeout=3)
                 for m in members}
    source.send(GROUP, GROUP_PORT, sent_count, rate=5000, size=size)
    for name, receiver in receivers.items():
        assert_all_delivered(receiver.json_result(), sent_count, name)

    server = json.loads(source.relay("multis_admin", "-P", "-m", GROUP, "--json").stdout)
    (group,) = [g for g in server["groups"] if g["group_ip"] == GROUP]
    assert (group["rx_packets"], group["rx_bytes"]) == (sent_count, sent_count * size), group
    assert sorted(m["member_ip"] for m in group["members"]) == sorted(m.ip for m in members), group
    for member in group["members"]:
        assert (member["tx_packets"], member["send_errors"]) == (sent_count, 0), group
    assert not any(group["drops"].values()), group
    table = source.relay("multis_admin", "-P").stdout
    for member in members:
        assert re.search(r"^%s\s+%d\s" % (re.escape(member.ip), sent_count), table, re.M), table

    for member in members:
        client = json.loads(member.relay("multic_admin", "-P", "-i", source.ip, "-g", GROUP_PORT, "--json").stdout)
        (entry,) = client["entries"]
        assert (entry["rx_packets"], entry["rx_bytes"]) == (sent_count, sent_count * size), entry
        assert (entry["delivered_packets"], entry["lost"], entry["duplicates"]) == (sent_count, 0, 0), entry
        assert not any(client["drops"].values()), client
        table = member.relay("multic_admin", "-P", "-i", source.ip, "-g", GROUP_PORT).stdout
        row = r"^%s\s+%d\s.*\s%d\s+%d\s" % (re.escape(source.ip), SERVER_PORT, sent_count, sent_count * size)
        assert re.search(row, table, re.M), table


@pytest.mark.parametrize("application_first", [False, True], ids=["relay-first", "application-first"])
def test_seed_example_verbatim_with_equal_server_and_group_ports(make_vpc, application_first):
    """The seed document's own example: 224.1.2.3, port 65535 for both the relay and the application."""
    vpc = make_vpc({"src": 1, "m1": 1, "m2": 1})
    source, members = vpc["src"], [vpc["m1"], vpc["m2"]]
    relay_edit(source, "multis_admin", "-A", "-m", "224.1.2.3", "-j", ",".join(m.ip for m in members),
               "-p", "65535")
    for member in members:
        relay_edit(member, "multic_admin", "-A", "-i", source.ip, "-g", "65535", "-s", "65535", "-m", "224.1.2.3")

    def start_receivers():
        return {m.name: m.start_receiver("mcrecv", "224.1.2.3", 65535, expect=1000, idle_timeout=3)
                for m in members}

    receivers = start_receivers() if application_first else None
    for member in members:
        member.start_relay("client")
    source.start_relay("server")
    receivers = receivers or start_receivers()
    source.send("224.1.2.3", 65535, 1000, rate=4000)
    for name, receiver in receivers.items():
        assert_all_delivered(receiver.json_result(), 1000, name)
