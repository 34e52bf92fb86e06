"""Dynamic members at the config limit (issue 17): 1024 members of one group through the daemon's reader.

An in-process ServerDaemon with one group on ``lo`` that takes subscriptions;
its subscription reader (``_read_subscriptions``) is fed from a stand-in
socket, so 1024 distinct member addresses need no interfaces.  Behaviour
only: what is admitted, refused, rebuilt and looked up, never how long it
took (bench/dynamic_scale.py measures that).
"""

import os
import socket

import pytest

from multicast_proxy import auth, daemon, netinfo, relay_config as config, server, server_subscriptions
from multicast_proxy import subscription as sub

from test_daemon import free_udp_port, random_group

SERVER_PORT = 6990
SECRET = bytes(range(32))
KEYS = {"send_key_id": 1, "keys": {1: SECRET}}


def member_ip(index):
    return "10.99.%d.%d" % (index // 250, 1 + index % 250)


class QueueSocket:
    """Queued (bytes, source) datagrams for the reader; keeps what it sends back."""

    def __init__(self, datagrams):
        self.queue = list(datagrams)
        self.sent = []

    def recvfrom_into(self, buffer, size):
        if not self.queue:
            raise BlockingIOError()
        data, source = self.queue.pop(0)
        buffer[:len(data)] = data
        return len(data), source

    def sendto(self, data, address):
        self.sent.append((bytes(data), address))


@pytest.fixture
def relay(tmp_path):
    instance = server.ServerDaemon(str(tmp_path))
    instance.log = daemon.setup_logging("server", str(tmp_path))
    instance.drop_log = daemon.DropLog(instance.log)
    group_ip = random_group()
    # A free port: the daemon opens its subscription socket there (the tests feed the reader directly).
    port = instance.test_port = free_udp_port()
    instance.cfg = config.validate_server_config({"multi_group_array": [
        {"group_ip": group_ip, "group_port": free_udp_port(), "server_port": port, "member_array": [],
         "interface": "lo", "allow": ["10.99.0.0/16"], "max_members": config.MAX_MEMBERS}]})
    instance.apply_config(instance.cfg)
    instance.test_group = instance.groups[group_ip]
    yield instance
    instance.close_data_sockets()


def feed(relay, datagrams, per_event=server_subscriptions.SUBSCRIPTION_BATCH):
    replies = []
    for start in range(0, len(datagrams), per_event):
        sock = QueueSocket(datagrams[start:start + per_event])
        relay._read_subscriptions(relay.test_port, sock)
        replies.extend(sock.sent)
    return replies


def subscribe(relay, indexes, signers=None, per_event=server_subscriptions.SUBSCRIPTION_BATCH):
    """JOIN, CHALLENGE, JOIN with the cookie for each member index; the parsed final answers by address."""
    group = relay.test_group
    signers = signers or {}
    sources = [(member_ip(i), relay.test_port) for i in indexes]
    challenges = feed(relay, [(sub.encode(sub.JOIN, group.group_addr, group.group_port,
                                          signer=signers.get(s[0])), s) for s in sources], per_event)
    assert len(challenges) == len(sources)
    answers = feed(relay, [(sub.encode(sub.JOIN, group.group_addr, group.group_port,
                                       sub.parse(data, len(data)).cookie, signer=signers.get(address[0])), address)
                           for data, address in challenges], per_event)
    return dict((address[0], sub.parse(data, len(data))) for data, address in answers)


def test_1024_members_are_admitted_and_the_1025th_is_refused_as_full(relay):
    group = relay.test_group
    answers = subscribe(relay, range(config.MAX_MEMBERS))
    assert [a.kind for a in answers.values()] == [sub.ACK] * config.MAX_MEMBERS
    # All of them get the copies: the fan-out lists the 1024, in join order.
    assert group.members == tuple(member_ip(i) for i in range(config.MAX_MEMBERS))
    assert len(group.targets) == config.MAX_MEMBERS
    extra = member_ip(config.MAX_MEMBERS)
    (refused,) = subscribe(relay, [config.MAX_MEMBERS]).values()
    assert refused.kind == sub.REFUSED and sub.REFUSAL_CODES[refused.refusal] == "full"
    assert relay.subscriptions.refusals["full"] == 1
    assert extra not in group.members and len(group.members) == config.MAX_MEMBERS
    # One leaves: the next join of the 1025th is admitted.
    leave = sub.encode(sub.LEAVE, group.group_addr, group.group_port, answers[member_ip(0)].cookie)
    feed(relay, [(leave, (member_ip(0), relay.test_port))])
    (admitted,) = subscribe(relay, [config.MAX_MEMBERS]).values()
    assert admitted.kind == sub.ACK
    assert group.members[-1] == extra and member_ip(0) not in group.members
    assert len(group.members) == config.MAX_MEMBERS


def test_a_subscription_socket_has_room_for_a_full_group_answering_at_once(relay):
    sock = relay.subscription_sockets[relay.test_port]
    size = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    if os.geteuid() == 0:
        # SO_RCVBUFFORCE: the kernel doubles what it was asked for (its bookkeeping).
        assert size >= server_subscriptions.SUBSCRIPTION_RECV_BUFFER
    else:
        assert size > 0


def test_a_max_members_above_the_config_limit_is_refused_by_the_config():
    entry = {"group_ip": "239.99.0.1", "group_port": 5990, "server_port": SERVER_PORT, "member_array": [],
             "allow": ["10.99.0.0/16"], "max_members": config.MAX_MEMBERS + 1}
    with pytest.raises(config.ConfigError):
        config.validate_server_config({"multi_group_array": [entry]})


def test_a_batch_of_joins_rebuilds_the_fan_out_once_per_readiness_event(relay, monkeypatch):
    rebuilds = []
    original = relay._membership_changed
    monkeypatch.setattr(relay, "_membership_changed", lambda dynamic: (rebuilds.append(1), original(dynamic)))
    batch = server_subscriptions.SUBSCRIPTION_BATCH
    subscribe(relay, range(4 * batch))
    # 4 events of challenges (no change), 4 of joins: one rebuild each, not one per join.
    assert len(rebuilds) == 4
    assert len(relay.test_group.members) == 4 * batch
    # One message per event is still answered and rebuilt at once.
    subscribe(relay, [4 * batch], per_event=1)
    assert len(rebuilds) == 5 and relay.test_group.members[-1] == member_ip(4 * batch)


def test_with_keys_each_members_route_is_looked_up_once_not_at_every_rebuild(relay, monkeypatch):
    relay.apply_auth(KEYS)
    lookups = []
    real = netinfo.route_source
    monkeypatch.setattr(netinfo, "route_source", lambda address: (lookups.append(address), real(address))[1])
    signer = auth.Signer(KEYS)
    count = 256
    signers = dict((member_ip(i), signer.bound(member_ip(i))) for i in range(count))
    answers = subscribe(relay, range(count), signers, per_event=1)
    assert [a.kind for a in answers.values()] == [sub.ACK] * count
    # Replies and 256 rebuilds of a growing list: one lookup per member.
    assert sorted(lookups) == sorted(signers)
    assert relay.test_group.signer is not None
    # Past the cache's lifetime the routes are looked up again (a route may have changed).
    relay._route_sources_until = 0.0
    subscribe(relay, [count], dict([(member_ip(count), signer.bound(member_ip(count)))]), per_event=1)
    assert len(lookups) == 2 * count + 1


def test_a_whole_full_group_is_challenged_at_once_and_then_at_the_sustained_rate():
    server_state = sub.SubscriptionServer(sub.CookieJar(SECRET))
    server_state.configure([{"group_ip": "239.99.0.1", "group_port": 5990, "server_port": SERVER_PORT,
                             "member_array": [], "allow": ["10.99.0.0/16"], "max_members": config.MAX_MEMBERS}],
                           0.0, 0.0)
    join = sub.encode(sub.JOIN, sub.ip_value("239.99.0.1"), 5990)

    def challenged(count, now, first=0):
        outcomes = [server_state.handle(join, len(join), member_ip(first + i), SERVER_PORT, SERVER_PORT, now, now)
                    for i in range(count)]
        return sum(1 for o in outcomes if o.reply is not None)

    # A restarted server: every member of a full group refreshes within one interval, all challenged.
    assert challenged(config.MAX_MEMBERS, 10.0) == config.MAX_MEMBERS
    assert challenged(config.MAX_MEMBERS, 10.0) == config.MAX_MEMBERS
    assert server_state.refusals["rate_limited"] == 0
    # The burst spent, a flood gets the sustained rate only.
    assert challenged(100, 10.0, first=config.MAX_MEMBERS) == 0
    assert challenged(1000, 11.0, first=0) == sub.CHALLENGE_RATE
