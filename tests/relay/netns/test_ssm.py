"""Issue 14.11: receivers that joined a group for one source (IGMPv3 source-specific join).

An application that joins (group, S) with IP_ADD_SOURCE_MEMBERSHIP, as
`ssmping` does, accepts only datagrams whose IP source is S.

- Without preserve_source the relay client re-sends from its own address:
  such a receiver gets nothing, and the doctor says so (source-specific-receiver).
- With preserve_source the re-sent datagram carries S.  The kernel loops a
  multicast send back to local sockets only when the interface's source filter
  admits the source its route lookup used; the client must therefore have the
  route looked up from S (IP_PKTINFO), not from its own address, or a host
  whose only members of the group are source-specific gets nothing.
- A receiver that joined for another source gets nothing either way, and an
  any-source receiver gets everything, with S as its source.
- Debian's ssmping / ssmpingd across the relay: the multicast answers arrive.
"""

import json
import shutil
import sys
import time

import pytest

import vpc as vpc_module

# Every namespace of this file starts with it (vpc.Vpc name_prefix); the leftovers of a crashed run are swept.
NAME_PREFIX = "ssm"
GROUP = "232.77.14.11"
GROUP_PORT = 5411
SERVER_PORT = 6411
COUNT = 40
# A source-specific join for an address that sends nothing.
OTHER_SOURCE = "10.77.0.99"
# ssmpingd answers on this SSM group, to the port each request came from.
SSMPING_GROUP = "232.43.211.234"
SSMPING_SERVER_PORT = 6412
SSMPING_REQUESTS = 3

# argv: group, port, interface address, source ("any" or an address), expected count, ready file.
# Prints {"received": n, "sources": [...]} at exit, also when stopped with SIGTERM.
RECEIVER = r"""
import json, select, signal, socket, sys
group, port, interface_ip, source, expect, ready = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], \
    int(sys.argv[5]), sys.argv[6]
IP_ADD_SOURCE_MEMBERSHIP = getattr(socket, "IP_ADD_SOURCE_MEMBERSHIP", 39)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("0.0.0.0", port))
if source == "any":
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(group) + socket.inet_aton(interface_ip))
else:
    # struct ip_mreq_source on Linux: group, interface, source.
    sock.setsockopt(socket.IPPROTO_IP, IP_ADD_SOURCE_MEMBERSHIP,
                    socket.inet_aton(group) + socket.inet_aton(interface_ip) + socket.inet_aton(source))
open(ready, "w").close()
seen = []
try:
    while len(seen) < expect and select.select([sock], [], [], 10.0)[0]:
        seen.append("%s:%d" % sock.recvfrom(65535)[1])
finally:
    print(json.dumps({"received": len(seen), "sources": sorted(set(seen))}))
"""


@pytest.fixture(scope="module", autouse=True)
def sweep_ssm_namespaces():
    vpc_module.sweep_leftovers(NAME_PREFIX)
    yield
    vpc_module.sweep_leftovers(NAME_PREFIX)


def write_json(path, obj):
    path.write_text(json.dumps(obj, indent=4) + "\n")


def wait_until(condition, what, timeout=15.0):
    """Poll ``condition``; the timeout only guards against a hang, nothing is timed."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("gave up waiting for " + what)
        time.sleep(0.05)


def reload(host, side):
    reply = host.control(side, {"cmd": "reload"})
    assert reply["ok"], reply
    return reply


def client_config(vpc, group, group_port, server_port, preserve_source):
    entry = {"server_ip": vpc["src"].ip, "server_port": server_port, "group_ip": group, "group_port": group_port}
    if preserve_source:
        entry["preserve_source"] = True
    write_json(vpc["m1"].conf_dir / "client_cfg.json.txt", {"multi_server_info_array": [entry]})


@pytest.fixture
def relayed(make_vpc):
    """src relays GROUP:GROUP_PORT to m1; m1's entry starts without preserve_source."""
    vpc = make_vpc({"src": 1, "m1": 1}, name_prefix=NAME_PREFIX)
    write_json(vpc["src"].conf_dir / "server_cfg.json.txt", {"multi_group_array": [
        {"group_ip": GROUP, "server_port": SERVER_PORT, "group_port": GROUP_PORT, "member_array": [vpc["m1"].ip]}]})
    client_config(vpc, GROUP, GROUP_PORT, SERVER_PORT, preserve_source=False)
    vpc["m1"].start_relay("client")
    vpc["src"].start_relay("server")
    return vpc


def start_receiver(vpc, label, source, expect):
    member = vpc["m1"]
    ready = member.workdir / ("%02d-%s.ready" % (len(vpc.processes), label))
    process = member.start(label, [sys.executable, "-c", RECEIVER, GROUP, GROUP_PORT, member.ip, source, expect,
                                   ready])
    wait_until(ready.exists, "receiver %s to join" % label)
    return process


def result(process):
    lines = [line for line in process.stdout().splitlines() if line.startswith("{")]
    assert lines, process.describe()
    return json.loads(lines[-1])


def deliver(vpc, complete, silent):
    """Send COUNT datagrams from src; wait for the ``complete`` receiver to get them all, then stop the
    ``silent`` ones.  The kernel hands one re-delivery to every matching socket at once, so once the
    complete receiver has everything the others have had their chance.  Returns their results."""
    sent = vpc["src"].send(GROUP, GROUP_PORT, COUNT, rate=2000)
    assert sent["sent"] == COUNT, sent
    complete.wait()
    for process in silent:
        process.stop()
    return result(complete), [result(process) for process in silent]


def doctor_findings(host, finding_id):
    report = json.loads(host.relay("multic_admin", "--doctor", "--json", check=False).stdout)
    return [f for f in report["findings"] if f["id"] == finding_id]


def test_without_preserve_source_a_source_specific_receiver_gets_nothing_and_the_doctor_says_why(relayed):
    vpc = relayed
    source = vpc["src"].ip
    any_source = start_receiver(vpc, "any", "any", COUNT)
    specific = start_receiver(vpc, "from-src", source, COUNT)
    (finding,) = doctor_findings(vpc["m1"], "source-specific-receiver")
    assert finding["severity"] == "error", finding
    assert GROUP in finding["what"] and source in finding["what"] and "eth0" in finding["what"], finding
    assert "preserve_source" in finding["fix"], finding

    got, (missed,) = deliver(vpc, any_source, [specific])
    # The re-delivery comes from the relay client's own address, which the join does not admit.
    assert got["received"] == COUNT and [s.split(":")[0] for s in got["sources"]] == [vpc["m1"].ip], got
    assert missed["received"] == 0, missed


def test_preserve_source_reaches_a_receiver_joined_for_the_original_source(relayed):
    vpc = relayed
    source = vpc["src"].ip
    client_config(vpc, GROUP, GROUP_PORT, SERVER_PORT, preserve_source=True)
    reload(vpc["m1"], "client")
    # Only source-specific members on the host: the interface's filter is INCLUDE {src, OTHER_SOURCE}.
    specific = start_receiver(vpc, "from-src", source, COUNT)
    other = start_receiver(vpc, "from-other", OTHER_SOURCE, COUNT)
    assert doctor_findings(vpc["m1"], "source-specific-receiver") == []

    got, (missed,) = deliver(vpc, specific, [other])
    assert got["received"] == COUNT and [s.split(":")[0] for s in got["sources"]] == [source], got
    assert missed["received"] == 0, missed
    (entry,) = vpc["m1"].control("client", {"cmd": "stats"})["entries"]
    assert entry["preserve_source"] is True and entry["delivered_packets"] == COUNT, entry
    assert vpc["m1"].control("client", {"cmd": "stats"})["drops"]["deliver_error"] == 0


def test_preserve_source_still_reaches_an_any_source_receiver_and_not_another_source(relayed):
    vpc = relayed
    source = vpc["src"].ip
    client_config(vpc, GROUP, GROUP_PORT, SERVER_PORT, preserve_source=True)
    reload(vpc["m1"], "client")
    any_source = start_receiver(vpc, "any", "any", COUNT)
    other = start_receiver(vpc, "from-other", OTHER_SOURCE, COUNT)

    got, (missed,) = deliver(vpc, any_source, [other])
    assert got["received"] == COUNT and [s.split(":")[0] for s in got["sources"]] == [source], got
    assert missed["received"] == 0, missed


def ssmping_lines(host, server_ip):
    """Run ssmping against ``server_ip``; its unicast and multicast answer lines."""
    output = host.run(["timeout", "30", "ssmping", "-4", "-c", SSMPING_REQUESTS, server_ip], check=False).stdout
    lines = output.splitlines()
    return ([line for line in lines if line.lstrip().startswith("unicast from %s," % server_ip)],
            [line for line in lines if line.lstrip().startswith("multicast from %s," % server_ip)])


@pytest.mark.skipif(shutil.which("ssmping") is None or shutil.which("ssmpingd") is None,
                    reason="needs Debian's ssmping package (scripts/bootstrap.sh installs it)")
def test_ssmping_gets_its_multicast_answers_through_the_relay(make_vpc):
    vpc = make_vpc({"src": 1, "m1": 1}, name_prefix=NAME_PREFIX)
    source, member = vpc["src"], vpc["m1"]
    # ssmpingd answers to the port of each request, a new one per run: every port of the group.
    write_json(source.conf_dir / "server_cfg.json.txt", {"multi_group_array": [
        {"group_ip": SSMPING_GROUP, "server_port": SSMPING_SERVER_PORT, "group_port": 0, "capture": True,
         "member_array": [member.ip]}]})
    client_config(vpc, SSMPING_GROUP, 0, SSMPING_SERVER_PORT, preserve_source=False)
    member.start_relay("client")
    source.start_relay("server")
    source.start("ssmpingd", ["ssmpingd"])
    wait_until(lambda: ":10E1 " in source.run(["cat", "/proc/net/udp"]).stdout, "ssmpingd to bind UDP 4321")

    # Control: the answers are relayed, but come from the relay client's address.
    unicast, multicast = ssmping_lines(member, source.ip)
    assert len(unicast) == SSMPING_REQUESTS and multicast == [], (unicast, multicast)

    client_config(vpc, SSMPING_GROUP, 0, SSMPING_SERVER_PORT, preserve_source=True)
    reload(member, "client")
    unicast, multicast = ssmping_lines(member, source.ip)
    assert len(unicast) == SSMPING_REQUESTS and len(multicast) == SSMPING_REQUESTS, (unicast, multicast)
    (entry,) = member.control("client", {"cmd": "stats"})["entries"]
    assert entry["delivered_packets"] >= 2 * SSMPING_REQUESTS, entry
