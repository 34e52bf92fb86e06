"""Issue 15: where the server joins a group (join_interfaces), on a multi-NIC host.

The choice of interfaces is a pure function (netinfo.join_targets) of one
scan; the memberships are kept on the group's one socket (Group.sync_joins),
checked here with a socket double that records them; the daemon on loopback
shows the joined interfaces and relays each datagram once.  The two-NIC
delivery itself is tests/relay/netns/test_multi_nic.py.
"""

import errno
import json
import socket
import struct

import pytest

from multicast_proxy import frame, netinfo, relay_config as config, server
from test_daemon import (  # noqa: F401 (relays is a fixture)  # pylint: disable=unused-import
    free_udp_port, lo_sender, random_group, relays)

LO = netinfo.Interface("lo", 1, "127.0.0.1", True, True, False)
ETH0 = netinfo.Interface("eth0", 2, "10.0.0.5", True, False, True)
ETH1 = netinfo.Interface("eth1", 3, "10.1.0.5", True, False, True)
DOWN = netinfo.Interface("eth2", 4, "10.2.0.5", False, False, True)
NO_ADDRESS = netinfo.Interface("eth3", 5, None, True, False, True)
NO_MULTICAST = netinfo.Interface("tun0", 6, "10.9.0.1", True, False, False)
SCAN = (LO, ETH0, ETH1, DOWN, NO_ADDRESS, NO_MULTICAST)


def names(targets):
    return [interface.name for interface in targets[0]]


def test_all_is_every_up_multicast_interface_with_ipv4_the_route_first():
    assert names(netinfo.join_targets("all", SCAN, "eth1")) == ["eth1", "eth0"]
    assert netinfo.join_targets("all", SCAN, "eth0")[1] == ""
    # The route's interface is never left out, whatever its flags (a 224.0.0.0/4 route on lo).
    assert names(netinfo.join_targets("all", SCAN, "lo")) == ["lo", "eth0", "eth1"]
    chosen, problem = netinfo.join_targets("all", (LO, DOWN))
    assert chosen == () and "no interface" in problem


def test_a_list_names_interfaces_or_addresses_and_says_what_it_cannot_join():
    assert names(netinfo.join_targets(["eth1", "10.0.0.5"], SCAN)) == ["eth1", "eth0"]
    chosen, problem = netinfo.join_targets(["eth1", "eth2", "eth9", "10.7.7.7"], SCAN)
    assert [i.name for i in chosen] == ["eth1"]
    assert problem == ("eth2 is down; eth9: no interface has this name or address; "
                       "10.7.7.7: no interface has this name or address")
    # A name and the address of the same interface: one membership.
    assert names(netinfo.join_targets(["eth0", "10.0.0.5"], SCAN)) == ["eth0"]


def test_the_igmp_limit_keeps_the_route_interface_and_says_how_to_raise_it():
    chosen, problem = netinfo.join_targets("all", SCAN, "eth1", limit=1)
    assert [i.name for i in chosen] == ["eth1"]
    assert problem.startswith("not joined on eth0: net.ipv4.igmp_max_memberships is 1")
    assert "sysctl -w net.ipv4.igmp_max_memberships=2" in problem


def test_scan_interfaces_sees_loopback_up_without_multicast():
    scanned = dict((i.name, i) for i in netinfo.scan_interfaces())
    assert scanned["lo"].up and scanned["lo"].loopback and scanned["lo"].address == "127.0.0.1"
    assert netinfo.igmp_max_memberships() >= 0


@pytest.mark.parametrize("text, value", [
    ("all", "all"), ("route", "route"), ("eth0,10.0.1.5", ["eth0", "10.0.1.5"]), (" eth1 ", ["eth1"]),
    (["eth0"], ["eth0"]), (["route"], "route"), ("", ""), ([], "")])
def test_the_setting_from_a_command_line_a_module_or_an_inventory(text, value):
    (option,) = [o for o in config.optional_rows(config.SERVER) if o.key == "join_interfaces"]
    # "" removes the setting (the default, "all", applies).
    assert config.parse_option_text(option, text, "join_interfaces") == value


@pytest.mark.parametrize("value, problem", [
    ([], "not a join setting"), ("eth0", "not a join setting"), (["eth0", "eth0"], "listed twice"),
    (["224.1.1.1"], "multicast address"), (["a/b"], "not an interface name"), (7, "not a join setting")])
def test_bad_join_settings_say_what_to_write(value, problem):
    with pytest.raises(config.ConfigError) as error:
        config.validate_server_config({config.SERVER_TOP_KEY: [], "join_interfaces": value})
    assert problem in str(error.value)


def test_all_is_the_default_and_is_not_written_back_a_group_may_name_its_own():
    cfg = config.validate_server_config({config.SERVER_TOP_KEY: [
        {"group_ip": "239.1.1.1", "server_port": 6000, "member_array": ["10.0.0.2"],
         "join_interfaces": ["eth1"]}], "join_interfaces": "all"})
    assert "join_interfaces" not in cfg
    assert cfg[config.SERVER_TOP_KEY][0]["join_interfaces"] == ["eth1"]
    with pytest.raises(config.ConfigError) as error:
        config.validate_server_config({config.SERVER_TOP_KEY: [], "interface": "eth0", "join_interfaces": "route"})
    assert "not both" in str(error.value)


def test_the_most_specific_setting_wins():
    group = {"group_ip": "239.1.1.1"}
    assert server.join_setting(group, {}) == (None, "all")
    assert server.join_setting(group, {"interface": "eth0"}) == ("eth0", None)
    assert server.join_setting(group, {"join_interfaces": "route"}) == (None, "route")
    assert server.join_setting(dict(group, join_interfaces=["eth1"]), {"interface": "eth0"}) == (None, ["eth1"])
    assert server.join_setting(dict(group, interface="eth2"), {"join_interfaces": ["eth1"]}) == ("eth2", None)


class MembershipSocket:
    """Records IP_ADD/DROP_MEMBERSHIP by interface index; fails the indexes in ``refuse``."""

    def __init__(self, refuse=()):
        self.held = []
        self.refuse = dict(refuse)

    def setsockopt(self, level, option, value):
        assert level == socket.IPPROTO_IP and len(value) == 12
        group, address, index = value[:4], value[4:8], struct.unpack("=i", value[8:])[0]
        assert socket.inet_ntoa(group) == "239.1.1.1" and address == b"\0\0\0\0"
        if option == socket.IP_ADD_MEMBERSHIP:
            if index in self.refuse:
                raise OSError(self.refuse[index], "No buffer space available")
            self.held.append(index)
        else:
            assert option == socket.IP_DROP_MEMBERSHIP
            self.held.remove(index)


def test_sync_joins_adds_and_leaves_on_the_one_socket():
    group = server.Group("239.1.1.1", 5000, "", 0, join="all")
    group.sock = MembershipSocket()
    assert group.sync_joins((ETH0, ETH1)) == (["eth0", "eth1"], [])
    assert group.sock.held == [2, 3] and group.interfaces == ["eth0", "eth1"]
    assert group.sync_joins((ETH0, ETH1)) == ([], [])
    # eth1 went away, eth0 was re-created under another index.
    assert group.sync_joins((ETH0._replace(index=9),)) == (["eth0"], ["eth0", "eth1"])
    assert group.sock.held == [9] and group.joined == {"eth0": 9}
    assert group.as_dict()["interfaces"] == ["eth0"] and group.as_dict()["join_interfaces"] == "all"
    # The metrics label follows the setting, not each rescan.
    assert group.interface_label == "all"
    assert server.Group("239.1.1.1", 5000, "", 0, join=("eth0", "10.1.0.5")).interface_label == "eth0,10.1.0.5"
    assert server.Group("239.1.1.1", 5000, "eth1", 0).interface_label == "eth1"


def test_a_refused_join_is_named_with_the_sysctl():
    group = server.Group("239.1.1.1", 5000, "", 0, join=("eth0", "eth1"))
    group.sock = MembershipSocket(refuse={3: errno.ENOBUFS})
    assert group.sync_joins((ETH0, ETH1), "eth2 is down") == (["eth0"], [])
    assert group.join_problem == ("eth2 is down; cannot join on eth1: No buffer space available "
                                  "(net.ipv4.igmp_max_memberships: one membership per interface)")
    assert group.as_dict()["join_interfaces"] == ["eth0", "eth1"]


def write_config(directory, group_ip, group_port, member_port, **settings):
    cfg = {config.SERVER_TOP_KEY: [{"group_ip": group_ip, "server_port": member_port, "group_port": group_port,
                                    "member_array": ["127.0.0.1"]}]}
    cfg.update(settings)
    (directory / config.SERVER_CONFIG_NAME).write_text(json.dumps(cfg))


def test_a_listed_interface_is_joined_and_shown_and_each_datagram_relayed_once(tmp_path, relays):
    group_ip, group_port = random_group(), free_udp_port()
    member = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    member.bind(("127.0.0.1", 0))
    member.settimeout(5)
    # lo by name and by address: one membership, one copy of each datagram.
    write_config(tmp_path, group_ip, group_port, member.getsockname()[1], join_interfaces=["lo", "127.0.0.1"])
    daemon = relays(tmp_path, "server")
    daemon.wait_ready()
    sender = lo_sender()
    try:
        (stats,) = daemon.request("stats")["groups"]
        assert stats["interfaces"] == ["lo"] and stats["join_interfaces"] == ["lo", "127.0.0.1"], stats
        assert stats["state"] == "joined" and stats["join_problem"] == "", stats
        for number in range(3):
            sender.sendto(b"datagram %d" % number, (group_ip, group_port))
        payloads = [frame.decode(member.recv(70000)).payload for _number in range(3)]
        assert payloads == [b"datagram 0", b"datagram 1", b"datagram 2"]
        member.settimeout(0.3)
        with pytest.raises(socket.timeout):
            member.recv(70000)
        (show,) = daemon.request("show")["groups"]
        assert show["interfaces"] == ["lo"]
    finally:
        sender.close()
        member.close()


def test_a_group_that_can_join_nowhere_is_an_error_retried(tmp_path, relays):
    write_config(tmp_path, random_group(), free_udp_port(), free_udp_port(), join_interfaces=["nic-absent0"])
    daemon = relays(tmp_path, "server")
    daemon.wait_ready()
    (stats,) = daemon.request("stats")["groups"]
    assert stats["state"] == "error" and stats["interfaces"] == []
    assert "joined on no interface (join_interfaces nic-absent0): nic-absent0: no interface has this name" \
        in stats["error"], stats
