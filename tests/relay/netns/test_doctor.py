"""The doctor names each failure of the field notes, and only it.

Every test builds a small VPC (tests/relay/netns/vpc.py), breaks one thing the
way the field notes describe, shows that delivery really fails, then runs the
doctor inside the broken host and checks that the one finding it reports as
an error (or, where the rule is a warning, as the only warning) is that
failure.  A healthy VPC gets a report with neither.
"""

import json
import os
import sys
import time

from vpc import REPO, RELAY_PYTHON

GROUP = "239.7.7.7"
GROUP_PORT = 47000
SERVER_PORT = 47001
COUNT = 200
SETTLE_TIMEOUT = 10


def doctor(host, side):
    """Run `multis_admin --doctor --json` / `multic_admin --doctor --json` in `host`; return (exit code, findings)."""
    result = host.relay({"server": "multis_admin", "client": "multic_admin"}[side], "--doctor", "--json", check=False)
    assert result.returncode in (0, 1), "doctor failed:\n%s\n%s" % (result.stdout, result.stderr)
    assert result.stdout.strip(), "no output:\n%s" % result.stderr
    return result.returncode, json.loads(result.stdout)["findings"]


def by_severity(findings, severity):
    return sorted(f["id"] for f in findings if f["severity"] == severity)


def explain(findings):
    return json.dumps(findings, indent=1)


def configure_server(src, members):
    result = src.relay("multis_admin", "-A", "-m", GROUP, "-j", ",".join(m.ip for m in members),
                       "-p", SERVER_PORT, "-g", GROUP_PORT, check=False)
    assert result.returncode in (0, 3), result.stderr


def configure_client(member, src, interface=None):
    result = member.relay("multic_admin", "-A", "-i", src.ip, "-g", GROUP_PORT, "-s", SERVER_PORT, "-m", GROUP,
                          check=False)
    assert result.returncode in (0, 3), result.stderr
    if interface is not None:
        path = member.conf_dir / "client_cfg.json.txt"
        cfg = json.loads(path.read_text())
        cfg["interface"] = interface
        path.write_text(json.dumps(cfg))


def start_relay(src, members, client_interface=None):
    configure_server(src, members)
    for member in members:
        configure_client(member, src, client_interface)
    src.start_relay("server")
    for member in members:
        member.start_relay("client")


def client_stats(member):
    reply = member.control("client", {"cmd": "stats"})
    assert reply.get("ok"), reply
    return reply["entries"][0]


def server_stats(src):
    reply = src.control("server", {"cmd": "stats"})
    assert reply.get("ok"), reply
    return reply["groups"][0]


def stop_and_count(receiver):
    """Stop a receiver that is still joined (SIGTERM) and return how many datagrams it got."""
    receiver.stop()
    lines = [line for line in receiver.stdout().splitlines() if line.startswith("{")]
    assert lines, receiver.describe()
    return json.loads(lines[-1])["unique"]


def wait_for(condition, what):
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.1)


def test_wrong_interface_join_is_named(make_vpc):
    """The field notes' case: the application joined on eth0, the traffic arrives on eth1."""
    vpc = make_vpc({"src": 1, "m1": 2})
    src, member = vpc["src"], vpc["m1"]
    start_relay(src, [member], client_interface="eth1")
    # No --interface: the kernel joins on the default route's device, eth0.
    receiver = member.start_receiver("app", GROUP, GROUP_PORT, idle_timeout=60)
    src.send(GROUP, GROUP_PORT, COUNT)
    wait_for(lambda: client_stats(member)["delivered_packets"] >= COUNT, "the client to re-deliver")
    # The doctor looks while the application is still joined.
    code, findings = doctor(member, "client")
    assert stop_and_count(receiver) == 0, "the failure did not reproduce: the receiver got data"

    assert by_severity(findings, "error") == ["join-interface-mismatch"], explain(findings)
    finding = [f for f in findings if f["severity"] == "error"][0]
    assert finding["subject"] == GROUP
    assert "joined %s on eth0" % GROUP in finding["what"] and "re-delivers it on eth1" in finding["what"]
    assert by_severity(findings, "warning") == [], explain(findings)
    assert code == 1


def test_interface_without_multicast_flag_is_named(make_vpc):
    """`ip link set dev eth0 multicast off` on a member.

    Measured here: Linux itself still joins and loops multicast on such an
    interface, so the relay keeps delivering; what breaks are applications
    that check IFF_MULTICAST first.  The doctor therefore names it as the one
    warning, not as an error, and this test pins that down.
    """
    vpc = make_vpc({"src": 1, "m1": 1})
    src, member = vpc["src"], vpc["m1"]
    start_relay(src, [member])
    member.run(["ip", "link", "set", "dev", "eth0", "multicast", "off"])
    receiver = member.start_receiver("app", GROUP, GROUP_PORT, idle_timeout=60)
    src.send(GROUP, GROUP_PORT, COUNT)
    wait_for(lambda: client_stats(member)["rx_packets"] >= COUNT, "the client to receive the frames")
    code, findings = doctor(member, "client")
    assert stop_and_count(receiver) == COUNT, "the kernel no longer delivers without IFF_MULTICAST"

    assert by_severity(findings, "error") == [], explain(findings)
    assert by_severity(findings, "warning") == ["interface-no-multicast"], explain(findings)
    assert [f["subject"] for f in findings if f["severity"] == "warning"] == ["eth0"]
    assert code == 0


def test_missing_multicast_route_on_two_nic_host_is_named(make_vpc):
    """The source sends out of eth1; without a 224.0.0.0/4 route the relay joined on eth0.

    ``join_interfaces`` "route" is the relay before issue 15, which joined by
    the route alone (the default, "all", relays this source: test_multi_nic.py).
    """
    vpc = make_vpc({"src": 2, "m1": 1})
    src, member = vpc["src"], vpc["m1"]
    assert src.relay("multis_admin", "--set", "join_interfaces=route", check=False).returncode == 3
    start_relay(src, [member])
    src.send(GROUP, GROUP_PORT, COUNT, interface_ip=src.addresses["eth1"])
    assert server_stats(src)["rx_packets"] == 0, "the failure did not reproduce: the server got data"

    code, findings = doctor(src, "server")
    assert by_severity(findings, "error") == [], explain(findings)
    assert by_severity(findings, "warning") == ["no-multicast-route"], explain(findings)
    finding = [f for f in findings if f["id"] == "no-multicast-route"][0]
    assert "eth0, eth1" in finding["what"]
    assert any("received nothing" in line for line in finding["evidence"]), explain(findings)
    assert code == 0

    # The fix the finding gives makes the relay follow the route and receive.
    src.run(["ip", "route", "add", "224.0.0.0/4", "dev", "eth1"])
    src.relay("server_reload_list", "reload")
    src.send(GROUP, GROUP_PORT, COUNT, interface_ip=src.addresses["eth1"])
    wait_for(lambda: server_stats(src)["rx_packets"] >= COUNT, "the server to receive after the fix")
    code, findings = doctor(src, "server")
    assert by_severity(findings, "error") + by_severity(findings, "warning") == [], explain(findings)
    assert code == 0


def test_igmp_max_memberships_too_low_is_named(make_vpc):
    vpc = make_vpc({"src": 1, "m1": 1})
    src, member = vpc["src"], vpc["m1"]
    # Per network namespace: this changes only the source host.
    src.run(["sysctl", "-q", "-w", "net.ipv4.igmp_max_memberships=0"])
    start_relay(src, [member])
    src.send(GROUP, GROUP_PORT, COUNT)
    assert server_stats(src)["rx_packets"] == 0, "the failure did not reproduce: the server got data"

    code, findings = doctor(src, "server")
    assert by_severity(findings, "error") == ["igmp-max-memberships"], explain(findings)
    finding = [f for f in findings if f["severity"] == "error"][0]
    assert "net.ipv4.igmp_max_memberships=256" in finding["fix"]
    assert by_severity(findings, "warning") == [], explain(findings)
    assert code == 1


def test_firewall_blocking_the_server_port_is_named(make_vpc):
    vpc = make_vpc({"src": 1, "m1": 1})
    src, member = vpc["src"], vpc["m1"]
    member.run(["nft", "-f", "-"], input_text=(
        "table inet mcpdfw {\n chain input {\n  type filter hook input priority 0; policy accept;\n"
        "  udp dport %d drop\n }\n}\n" % SERVER_PORT))
    start_relay(src, [member])
    src.send(GROUP, GROUP_PORT, COUNT)
    wait_for(lambda: server_stats(src)["members"][0]["tx_packets"] >= COUNT, "the server to send")
    assert client_stats(member)["rx_packets"] == 0, "the failure did not reproduce: the client got data"

    code, findings = doctor(member, "client")
    assert by_severity(findings, "error") == ["firewall-blocks-server-port"], explain(findings)
    finding = [f for f in findings if f["severity"] == "error"][0]
    assert "mcpdfw" in finding["what"]
    assert by_severity(findings, "warning") == [], explain(findings)
    assert code == 1


def test_receiver_port_held_without_reuseaddr_is_named(make_vpc):
    vpc = make_vpc({"src": 1, "m1": 1})
    src, member = vpc["src"], vpc["m1"]
    start_relay(src, [member])
    # A receiver that binds the group port without SO_REUSEADDR keeps every other one out.
    holder = member.start("exclusive", [sys.executable, "-c",
                                        "import socket, time; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                                        "s.bind(('0.0.0.0', %d)); print('bound', flush=True); time.sleep(600)"
                                        % GROUP_PORT])
    wait_for(lambda: "bound" in holder.stdout(), "the exclusive receiver to bind")
    # A second receiver cannot join in: that is the failure.
    second = member.run([sys.executable, "-c", "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                         "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', %d))"
                         % GROUP_PORT], check=False)
    assert second.returncode != 0 and "Address already in use" in second.stderr
    src.send(GROUP, GROUP_PORT, COUNT)
    wait_for(lambda: client_stats(member)["rx_packets"] >= COUNT, "the client to receive the frames")

    code, findings = doctor(member, "client")
    assert by_severity(findings, "error") == ["port-not-shareable"], explain(findings)
    assert [f["subject"] for f in findings if f["severity"] == "error"] == ["%s:%d" % (GROUP, GROUP_PORT)]
    assert by_severity(findings, "warning") == [], explain(findings)
    assert code == 1


def send_with(src, *options):
    """mcsend.py with socket options the application under diagnosis would set."""
    src.run([sys.executable, REPO / "tests" / "tools" / "mcsend.py", "--group", GROUP, "--port", GROUP_PORT,
             "--count", COUNT, "--rate", 5000] + list(options))


def test_source_with_multicast_loop_off_is_named(make_vpc):
    """The application sends with IP_MULTICAST_LOOP 0: the relay on its own host sees nothing."""
    vpc = make_vpc({"src": 1, "m1": 1})
    src, member = vpc["src"], vpc["m1"]
    start_relay(src, [member])
    send_with(src, "--loop", "0")
    assert server_stats(src)["rx_packets"] == 0, "the failure did not reproduce: the server got data"

    code, findings = doctor(src, "server")
    assert by_severity(findings, "error") == [], explain(findings)
    assert by_severity(findings, "warning") == ["server-no-input"], explain(findings)
    finding = [f for f in findings if f["severity"] == "warning"][0]
    # The host did send multicast: the doctor says the source runs but misses the relay.
    assert "this host did send" in finding["what"] and "IP_MULTICAST_LOOP 1" in finding["fix"]
    assert code == 0


def test_source_sending_with_ttl_zero_is_named(make_vpc):
    """TTL 0 is the relay client's loop mark: a source using it is dropped as a loop."""
    vpc = make_vpc({"src": 1, "m1": 1})
    src, member = vpc["src"], vpc["m1"]
    start_relay(src, [member])
    send_with(src, "--ttl", "0")
    wait_for(lambda: server_stats(src)["drops"]["loop"] >= COUNT, "the server to drop the datagrams as loops")

    code, findings = doctor(src, "server")
    assert by_severity(findings, "error") == [], explain(findings)
    assert by_severity(findings, "warning") == ["source-ttl-zero"], explain(findings)
    assert code == 0


def test_healthy_vpc_gets_a_clean_report(make_vpc):
    vpc = make_vpc({"src": 1, "m1": 1, "m2": 1})
    src, members = vpc["src"], [vpc["m1"], vpc["m2"]]
    start_relay(src, members)
    receivers = [m.start_receiver("app", GROUP, GROUP_PORT, expect=COUNT, idle_timeout=3) for m in members]
    src.send(GROUP, GROUP_PORT, COUNT)
    for receiver in receivers:
        assert receiver.json_result()["unique"] == COUNT

    for host, side in [(src, "server")] + [(m, "client") for m in members]:
        code, findings = doctor(host, side)
        assert by_severity(findings, "error") + by_severity(findings, "warning") == [], explain(findings)
        assert code == 0


def test_diagnose_playbook_reports_and_fails_on_the_broken_host(make_vpc, tmp_path):
    """The module and playbooks/diagnose.yml, run inside the member, name the same failure."""
    vpc = make_vpc({"src": 1, "m1": 2})
    src, member = vpc["src"], vpc["m1"]
    start_relay(src, [member], client_interface="eth1")
    receiver = member.start_receiver("app", GROUP, GROUP_PORT, idle_timeout=60)
    src.send(GROUP, GROUP_PORT, COUNT)
    wait_for(lambda: client_stats(member)["delivered_packets"] >= COUNT, "the client to re-deliver")

    # The relay commands as the roles install them, and the checkout as the collection.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for command in ("multis_admin", "multic_admin"):
        wrapper = bin_dir / command
        wrapper.write_text('#!/bin/sh\nPYTHONPATH=%s exec %s -m multicast_proxy %s "$@"\n'
                           % (REPO / "files", RELAY_PYTHON, command))
        wrapper.chmod(0o755)
    collections = tmp_path / "collections" / "ansible_collections" / "multicast"
    collections.mkdir(parents=True)
    (collections / "proxy").symlink_to(REPO)
    env = dict(os.environ, PATH="%s:%s" % (bin_dir, os.environ["PATH"]),
               ANSIBLE_COLLECTIONS_PATH=str(tmp_path / "collections"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"), ANSIBLE_REMOTE_TEMP=str(tmp_path / "ansible-tmp"))
    result = member.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"),
                         "-i", "localhost,", "-c", "local", REPO / "playbooks" / "diagnose.yml",
                         "-e", "multicast_proxy_hosts=localhost", "-e", "ansible_python_interpreter=" + sys.executable,
                         "-e", "multicast_proxy_conf_dir=%s" % member.conf_dir,
                         "-e", "multicast_proxy_diagnose_fail=true"], check=False, env=env, timeout=120)
    stop_and_count(receiver)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "[ERROR] join-interface-mismatch (%s)" % GROUP in result.stdout
    assert "1 error(s): join-interface-mismatch" in result.stdout
