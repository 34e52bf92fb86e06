"""keepalived (Debian's, unmodified VRRP config) across a VPC that drops multicast.

Two hosts share a virtual address.  Without the relay every advertisement is
dropped on the wire and both become MASTER (split brain).  With the relay
(a "vrrp" server group and client entry on each host, the peer as member and
server), the backup hears the master, stays BACKUP, and takes the address
over when the master's keepalived stops.
"""

import shutil

import pytest

from vpc import wait_until

VIRTUAL_ADDRESS = "10.77.0.200"
SERVER_PORT = 6901
ADVERT_INT = 1
# Adverts the backup must have received before we call it settled: more than
# the 3 intervals (plus skew) after which a backup that hears nothing takes over.
SETTLED_ADVERTS = 6

# The stock example of Debian's keepalived (state, priority, PASS auth) with a
# virtual router id of our own.
KEEPALIVED_CONF = """\
global_defs {
    router_id %(name)s
}

vrrp_instance VI_MCPT {
    state %(state)s
    interface eth0
    virtual_router_id 77
    priority %(priority)d
    advert_int %(advert_int)d
    authentication {
        auth_type PASS
        auth_pass mcpt1111
    }
    virtual_ipaddress {
        %(vip)s/24
    }
}
"""

pytestmark = pytest.mark.skipif(shutil.which("keepalived") is None,
                                reason="needs keepalived (apt-get install keepalived)")


def start_keepalived(host, state, priority):
    conf = host.workdir / "keepalived.conf"
    conf.write_text(KEEPALIVED_CONF % {"name": host.name, "state": state, "priority": priority,
                                       "advert_int": ADVERT_INT, "vip": VIRTUAL_ADDRESS})
    # Foreground, console log, VRRP only, own pid files: nothing shared with
    # a keepalived of the machine or of another test.
    return host.start("keepalived", ["keepalived", "--dont-fork", "--log-console", "--log-detail", "--no-syslog",
                                     "--vrrp", "--use-file", conf, "--pid", host.workdir / "keepalived.pid",
                                     "--vrrp_pid", host.workdir / "vrrp.pid"])


def has_virtual_address(host):
    return (VIRTUAL_ADDRESS + "/") in host.run(["ip", "-4", "-o", "addr", "show", "dev", "eth0"]).stdout


def log_of(process):
    return process.stdout() + process.stderr()


def relay_vrrp(host, peer):
    """The host relays its keepalived's adverts to the peer and re-injects the peer's."""
    host.conf_dir.joinpath("server_cfg.json.txt").write_text(
        '{"multi_group_array": [{"group_ip": "224.0.0.18", "server_port": %d, "protocol": "vrrp", '
        '"member_array": ["%s"]}]}\n' % (SERVER_PORT, peer.ip))
    host.conf_dir.joinpath("client_cfg.json.txt").write_text(
        '{"multi_server_info_array": [{"server_ip": "%s", "server_port": %d, "group_ip": "224.0.0.18", '
        '"protocol": "vrrp"}]}\n' % (peer.ip, SERVER_PORT))
    host.start_relay("client")
    host.start_relay("server")


def vrrp_server_stats(host):
    (group,) = host.control("server", {"cmd": "stats"})["groups"]
    assert group["mode"] == "vrrp" and group["state"] == "joined", group
    return group


def vrrp_delivered(host):
    (entry,) = host.control("client", {"cmd": "stats"})["entries"]
    return entry["delivered_packets"]


def test_without_the_relay_both_nodes_become_master(make_vpc):
    vpc = make_vpc({"ka1": 1, "ka2": 1})
    drops_before = vpc.multicast_drops()
    master = start_keepalived(vpc["ka1"], "MASTER", 150)
    backup = start_keepalived(vpc["ka2"], "BACKUP", 100)
    wait_until(lambda: has_virtual_address(vpc["ka1"]) and has_virtual_address(vpc["ka2"]),
               "both nodes to take the virtual address")
    assert "Entering MASTER STATE" in log_of(master), master.describe()
    assert "Entering MASTER STATE" in log_of(backup), backup.describe()
    # The advertisements were sent and the VPC dropped them.
    assert vpc.multicast_drops() > drops_before


def test_relayed_adverts_keep_one_master_and_fail_over(make_vpc):
    vpc = make_vpc({"ka1": 1, "ka2": 1})
    ka1, ka2 = vpc["ka1"], vpc["ka2"]
    relay_vrrp(ka1, ka2)
    relay_vrrp(ka2, ka1)

    master = start_keepalived(ka1, "MASTER", 150)
    wait_until(lambda: has_virtual_address(ka1), "ka1 to become MASTER")
    delivered_before = vrrp_delivered(ka2)
    backup = start_keepalived(ka2, "BACKUP", 100)
    wait_until(lambda: vrrp_delivered(ka2) >= delivered_before + SETTLED_ADVERTS,
               "%d adverts re-injected on ka2" % SETTLED_ADVERTS)

    # Only because ka1's adverts reach ka2 through the relay, ka2 stays BACKUP.
    assert not has_virtual_address(ka2), backup.describe()
    assert "Entering BACKUP STATE" in log_of(backup), backup.describe()
    assert "Entering MASTER STATE" not in log_of(backup), backup.describe()
    assert has_virtual_address(ka1)
    assert vrrp_server_stats(ka1)["rx_packets"] >= SETTLED_ADVERTS
    ka2_server = vrrp_server_stats(ka2)
    # Loop guard: ka2 sends nothing as BACKUP, and the re-injected adverts
    # (ka1's source address) leave ka2's eth0 but are not relayed back.
    assert ka2_server["rx_packets"] == 0, ka2_server
    assert ka2_server["drops"]["loop"] >= SETTLED_ADVERTS, ka2_server
    assert ka1.control("client", {"cmd": "stats"})["drops"]["deliver_error"] == 0
    assert ka2.control("client", {"cmd": "stats"})["drops"]["deliver_error"] == 0

    # Stop the master: its keepalived sends a priority-0 advert and drops the address.
    master.stop()
    wait_until(lambda: has_virtual_address(ka2) and not has_virtual_address(ka1),
               "the virtual address to move to ka2")
    assert "Entering MASTER STATE" in log_of(backup), backup.describe()
    # Now ka2's adverts flow the other way.
    wait_until(lambda: vrrp_server_stats(ka2)["rx_packets"] >= 2, "ka2's adverts to be relayed")
