"""The subscription protocol and its state machines (issue 17): cookies, leases, limits, refusals."""

import pytest
from hypothesis import given, settings, strategies as st

from multicast_proxy import auth, relay_config as config, subscription as sub

GROUP = "239.1.2.3"
GROUP_ADDR = sub.ip_value(GROUP)
GROUP_PORT = 5000
SERVER_PORT = 6000
MEMBER = "10.0.0.5"
SECRET = bytes(range(32))
KEYS = {"send_key_id": 1, "keys": {1: SECRET}}


def group_entry(**options):
    entry = {"group_ip": GROUP, "group_port": GROUP_PORT, "server_port": SERVER_PORT, "member_array": [],
             "allow": ["10.0.0.0/24"]}
    entry.update(options)
    return entry


def make_server(**options):
    server = sub.SubscriptionServer(sub.CookieJar(SECRET))
    server.configure([group_entry(**options)], 0.0, 0.0)
    return server


def send(server, kind, now, member=MEMBER, cookie=sub.NO_COOKIE, port=SERVER_PORT, local_port=SERVER_PORT,
         group_addr=GROUP_ADDR, group_port=GROUP_PORT, data=None, verifier=None, signer_of=None):
    data = data if data is not None else sub.encode(kind, group_addr, group_port, cookie)
    return server.handle(data, len(data), member, port, local_port, now, 1000.0 + now, verifier, signer_of)


def join(server, now, member=MEMBER):
    """A full join: challenge, then the join with the cookie; the ACK's Message."""
    challenge = send(server, sub.JOIN, now, member)
    cookie = sub.parse(challenge.reply, len(challenge.reply)).cookie
    outcome = send(server, sub.JOIN, now, member, cookie)
    assert outcome.reason is None, outcome
    return sub.parse(outcome.reply, len(outcome.reply))


def test_a_join_is_challenged_then_admitted_with_the_echoed_cookie():
    server = make_server()
    first = send(server, sub.JOIN, 1.0)
    assert first.changed is None and first.reason is None
    challenge = sub.parse(first.reply, len(first.reply))
    assert challenge.kind == sub.CHALLENGE and challenge.cookie != sub.NO_COOKIE
    # No amplification: the challenge is no larger than the join that asked for it.
    assert len(first.reply) <= sub.HEADER_LEN
    second = send(server, sub.JOIN, 1.1, cookie=challenge.cookie)
    assert second.changed is server.groups[GROUP_ADDR]
    ack = sub.parse(second.reply, len(second.reply))
    assert ack.kind == sub.ACK and ack.lease_ms == 1500
    assert server.group(GROUP).member_ips() == (MEMBER,)
    assert server.group(GROUP).events["challenges"] == 1 and server.group(GROUP).events["joins"] == 1


def test_a_cookie_is_bound_to_address_port_group_and_time():
    jar = sub.CookieJar(SECRET, bucket=60.0)
    member = sub.ip_value(MEMBER)
    cookie = jar.make(10.0, member, SERVER_PORT, GROUP_ADDR, GROUP_PORT)
    assert jar.valid(cookie, 10.0, member, SERVER_PORT, GROUP_ADDR, GROUP_PORT)
    assert jar.valid(cookie, 119.0, member, SERVER_PORT, GROUP_ADDR, GROUP_PORT)   # the next bucket
    assert not jar.valid(cookie, 120.0, member, SERVER_PORT, GROUP_ADDR, GROUP_PORT)
    assert not jar.valid(cookie, 10.0, member + 1, SERVER_PORT, GROUP_ADDR, GROUP_PORT)
    assert not jar.valid(cookie, 10.0, member, SERVER_PORT + 1, GROUP_ADDR, GROUP_PORT)
    assert not jar.valid(cookie, 10.0, member, SERVER_PORT, GROUP_ADDR + 1, GROUP_PORT)
    assert not jar.valid(cookie, 10.0, member, SERVER_PORT, GROUP_ADDR, GROUP_PORT + 1)
    # Another server run (another secret) does not accept it.
    assert not sub.CookieJar(bytes(32)).valid(cookie, 10.0, member, SERVER_PORT, GROUP_ADDR, GROUP_PORT)


def test_a_forged_cookie_is_counted_and_only_challenged():
    server = make_server()
    outcome = send(server, sub.JOIN, 1.0, cookie=bytes(range(16)))
    assert outcome.changed is None
    assert sub.parse(outcome.reply, len(outcome.reply)).kind == sub.CHALLENGE
    assert server.refusals["bad_cookie"] == 1
    assert server.group(GROUP).members == {}


def test_a_leave_stops_at_once_and_needs_the_cookie():
    server = make_server()
    ack = join(server, 1.0)
    forged = send(server, sub.LEAVE, 1.2)
    assert forged.reason == "bad_cookie" and forged.reply is None
    assert server.group(GROUP).member_ips() == (MEMBER,)
    left = send(server, sub.LEAVE, 1.3, cookie=ack.cookie)
    assert left.changed is server.group(GROUP) and left.reply is None
    assert server.group(GROUP).members == {}
    (gone,) = server.group(GROUP).history
    assert gone["left_by"] == "leave" and gone["member_ip"] == MEMBER


def test_leases_expire_unless_refreshed():
    server = make_server(lease=1.5)
    ack = join(server, 0.0)
    for now in (0.5, 1.0, 1.5, 2.0):
        assert send(server, sub.JOIN, now, cookie=ack.cookie).changed is None
        assert server.expire(now + 0.1, 0.0) == []
    assert server.group(GROUP).members[MEMBER].refreshes == 4
    assert server.expire(3.4, 0.0) == []
    changed = server.expire(3.6, 0.0)
    assert changed == [server.group(GROUP)] and server.group(GROUP).members == {}
    assert server.group(GROUP).history[-1]["left_by"] == "expired"
    assert server.group(GROUP).events["expiries"] == 1


def test_only_allowed_addresses_subscribe():
    server = make_server(allow=["10.0.0.0/30", "192.168.9.9/32"])
    assert send(server, sub.JOIN, 1.0, member="10.0.0.9").reason == "not_allowed"
    assert send(server, sub.JOIN, 1.0, member="10.0.0.9").reply is None
    join(server, 1.0, member="10.0.0.3")
    join(server, 1.0, member="192.168.9.9")
    assert server.refusals["not_allowed"] == 2


def test_the_server_remembers_the_last_sources_it_refused_by_reason():
    server = make_server()
    for attempt in range(3):
        send(server, sub.JOIN, 1.0 + attempt, "10.9.0.1")
    for index in range(sub.REFUSED_SOURCES + 2):
        send(server, sub.JOIN, 5.0, "10.8.0.%d" % index, port=SERVER_PORT + 1)
    shown = server.as_dict()
    assert shown["refusals"]["not_allowed"] == 3
    assert shown["refused_sources"]["not_allowed"] == [{"source": "10.9.0.1", "count": 3, "last": 1003.0}]
    wrong = shown["refused_sources"]["wrong_port"]
    assert len(wrong) == sub.REFUSED_SOURCES and wrong[0]["source"] == "10.8.0.2" and wrong[-1]["source"] == "10.8.0.9"
    join(server, 6.0)
    assert sorted(server.as_dict()["refused_sources"]) == ["not_allowed", "wrong_port"]


def test_a_full_group_refuses_with_a_reason_only_after_the_cookie():
    server = make_server(max_members=2)
    join(server, 1.0, "10.0.0.1")
    join(server, 1.0, "10.0.0.2")
    challenge = send(server, sub.JOIN, 1.0, "10.0.0.3")
    assert sub.parse(challenge.reply, len(challenge.reply)).kind == sub.CHALLENGE
    cookie = sub.parse(challenge.reply, len(challenge.reply)).cookie
    refused = send(server, sub.JOIN, 1.0, "10.0.0.3", cookie)
    assert refused.reason == "full" and refused.changed is None
    message = sub.parse(refused.reply, len(refused.reply))
    assert message.kind == sub.REFUSED and sub.REFUSAL_CODES[message.refusal] == "full"
    assert server.group(GROUP).member_ips() == ("10.0.0.1", "10.0.0.2")


def test_rate_limits_per_member_and_group():
    server = make_server()
    outcomes = [send(server, sub.JOIN, 5.0, cookie=bytes(range(16))) for dummy in range(30)]
    limited = [o for o in outcomes if o.reason == "rate_limited"]
    assert len(limited) == 30 - int(sub.SOURCE_BURST)
    assert all(o.reply is None for o in limited)
    # Another member is not affected, and the bucket refills with time.
    assert send(server, sub.JOIN, 5.0, member="10.0.0.6").reason is None
    assert send(server, sub.JOIN, 6.0).reason is None


def test_token_buckets_stay_bounded():
    buckets = sub.TokenBuckets(1.0, 2.0, max_keys=3)
    for key in range(3):
        assert buckets.allow(key, 0.0)
    assert not buckets.allow(99, 0.0)       # full of active keys: a new one is refused
    assert buckets.allow(99, 10.0)          # idle ones are forgotten
    assert len(buckets) <= 3


def test_wrong_ports_and_unknown_groups_are_refused():
    server = make_server()
    assert send(server, sub.JOIN, 1.0, port=40000).reason == "wrong_port"
    assert send(server, sub.JOIN, 1.0, local_port=SERVER_PORT + 1).reason == "wrong_port"
    assert send(server, sub.JOIN, 1.0, group_addr=sub.ip_value("239.9.9.9")).reason == "unknown_group"
    assert send(server, sub.JOIN, 1.0, group_port=GROUP_PORT + 1).reason == "unknown_group"
    assert send(server, sub.ACK, 1.0).reason == "unexpected_kind"
    static = sub.SubscriptionServer()
    static.configure([group_entry(allow=None)], 0.0, 0.0)
    assert static.groups == {}


MALFORMED = [
    b"",
    b"MS",
    b"MC\x01" + bytes(33),
    sub.encode(sub.JOIN, GROUP_ADDR, GROUP_PORT)[:35],
    sub.encode(sub.JOIN, GROUP_ADDR, GROUP_PORT) + b"x",
    b"MS\x01\x02" + sub.encode(sub.JOIN, GROUP_ADDR, GROUP_PORT)[4:],           # unknown flag
    b"MS\x01\x01" + sub.encode(sub.JOIN, GROUP_ADDR, GROUP_PORT)[4:],           # tag flag, no tag
    b"MS\x01\x00\x09" + sub.encode(sub.JOIN, GROUP_ADDR, GROUP_PORT)[5:],       # unknown kind
    sub.encode(sub.JOIN, sub.ip_value("10.1.1.1"), GROUP_PORT),                 # not a group
    sub.encode(sub.JOIN, GROUP_ADDR, GROUP_PORT)[:7] + b"\x01" + sub.encode(sub.JOIN, GROUP_ADDR, GROUP_PORT)[8:],
]


@pytest.mark.parametrize("data", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_messages_are_counted_never_raised(data):
    server = make_server()
    outcome = send(server, sub.JOIN, 1.0, data=data)
    assert outcome.reason == "malformed" and outcome.reply is None and outcome.changed is None
    assert server.refusals["malformed"] == 1


def test_a_newer_version_is_counted_as_such():
    server = make_server()
    data = b"MS\x02" + sub.encode(sub.JOIN, GROUP_ADDR, GROUP_PORT)[3:]
    assert send(server, sub.JOIN, 1.0, data=data).reason == "bad_version"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_any_bytes_are_handled_without_an_exception(data):
    server = make_server()
    outcome = send(server, sub.JOIN, 1.0, data=b"MS\x01" + data)
    # Never a member from one message: at best a challenge, which is no larger than what asked for it.
    assert outcome.changed is None
    assert outcome.reply is None or len(outcome.reply) <= len(data) + 3


def test_with_keys_a_subscription_needs_a_valid_tag_bound_to_its_source():
    server = make_server()
    verifier = auth.Verifier(KEYS)
    signer = auth.Signer(KEYS)
    untagged = send(server, sub.JOIN, 1.0, verifier=verifier)
    assert untagged.reason == "auth_missing"
    tagged = sub.encode(sub.JOIN, GROUP_ADDR, GROUP_PORT, signer=signer.bound(MEMBER))
    assert len(tagged) == sub.HEADER_LEN + sub.TAG_LEN
    # The same tag from another source address does not verify.
    assert send(server, sub.JOIN, 1.0, member="10.0.0.6", data=tagged, verifier=verifier).reason == "auth_bad"
    wrong_key = sub.encode(sub.JOIN, GROUP_ADDR, GROUP_PORT,
                           signer=auth.Signer({"send_key_id": 7, "keys": {7: SECRET}}).bound(MEMBER))
    assert send(server, sub.JOIN, 1.0, data=wrong_key, verifier=verifier).reason == "auth_unknown_key"
    outcome = send(server, sub.JOIN, 1.0, data=tagged, verifier=verifier,
                   signer_of=lambda group_ip, member_ip: signer.bound("10.0.0.1"))
    assert outcome.reason is None
    challenge = sub.parse(outcome.reply, len(outcome.reply))
    assert challenge.flags & sub.FLAG_TAG
    # The client checks the server's tag as it checks data frames (bound to the server's address).
    assert verifier.check(outcome.reply, challenge.flags, challenge.key_id, sub.HEADER_LEN,
                          auth.server_identity("10.0.0.1")) is None


def test_a_reload_drops_members_the_new_allow_list_or_maximum_refuses():
    server = make_server()
    join(server, 1.0, "10.0.0.1")
    join(server, 1.0, "10.0.0.2")
    join(server, 1.0, "10.0.0.3")
    changed = server.configure([group_entry(allow=["10.0.0.0/31"], max_members=1)], 2.0, 2.0)
    assert changed == [server.group(GROUP)]
    assert server.group(GROUP).member_ips() == ("10.0.0.1",)
    assert [gone["left_by"] for gone in server.group(GROUP).history] == ["config", "config"]
    assert server.configure([], 3.0, 3.0)[0].member_ips() == ("10.0.0.1",)
    assert server.groups == {}


def test_the_subscriber_joins_refreshes_and_leaves():
    subscriber = sub.Subscriber()
    assert subscriber.tick(False, 0.0) is None
    assert subscriber.tick(True, 1.0) == sub.JOIN
    assert subscriber.tick(True, 1.1) is None
    challenge = sub.Message(sub.CHALLENGE, 0, 0, 0, GROUP_ADDR, GROUP_PORT, 0, b"c" * 16)
    assert subscriber.on_message(challenge, 1.01) is True
    assert subscriber.on_message(challenge, 1.02) is False     # the same challenge again: answered already
    ack = sub.Message(sub.ACK, 0, 0, 0, GROUP_ADDR, GROUP_PORT, 3000, b"d" * 16)
    assert subscriber.on_message(ack, 1.03) is False
    assert subscriber.state == "subscribed" and subscriber.cookie == b"d" * 16 and subscriber.refresh == 1.0
    assert subscriber.tick(True, 1.4) is None
    assert subscriber.tick(True, 1.6) == sub.JOIN             # the refresh after the retry already due
    assert subscriber.tick(True, 2.0) is None
    assert subscriber.tick(True, 2.7) == sub.JOIN
    assert subscriber.tick(False, 2.8) == sub.LEAVE
    assert subscriber.tick(False, 3.0) is None
    assert subscriber.on_message(ack, 3.1) is False and subscriber.counters["unsolicited"] == 1


def test_the_subscriber_shows_a_refusal():
    subscriber = sub.Subscriber()
    subscriber.tick(True, 0.0)
    refused = sub.Message(sub.REFUSED, 0, 0, 1, GROUP_ADDR, GROUP_PORT, 0, sub.NO_COOKIE)
    subscriber.on_message(refused, 0.1)
    assert subscriber.as_dict(0.2)["state"] == "refused" and subscriber.refusal == "full"
    assert subscriber.tick(True, 0.6) == sub.JOIN              # it keeps asking, at the retry interval


def test_the_subscriber_says_how_long_its_state_holds_and_what_answered_last():
    """What the doctor reads (dynamic-not-subscribed, dynamic-lease-expired): state_age, last_reply, lease."""
    subscriber = sub.Subscriber()
    subscriber.tick(True, 10.0)
    shown = subscriber.as_dict(13.0)
    assert (shown["state"], shown["state_age"], shown["last_reply"], shown["last_reply_age"], shown["lease"]) == (
        "joining", 3.0, None, None, None)
    challenge = sub.Message(sub.CHALLENGE, 0, 0, 0, GROUP_ADDR, GROUP_PORT, 0, b"c" * 16)
    subscriber.on_message(challenge, 13.5)
    shown = subscriber.as_dict(14.0)
    assert (shown["state"], shown["state_age"], shown["last_reply"], shown["last_reply_age"]) == (
        "joining", 4.0, "challenge", 0.5)
    subscriber.on_message(sub.Message(sub.ACK, 0, 0, 0, GROUP_ADDR, GROUP_PORT, 3000, b"d" * 16), 14.0)
    subscriber.on_message(sub.Message(sub.ACK, 0, 0, 0, GROUP_ADDR, GROUP_PORT, 3000, b"e" * 16), 15.0)
    shown = subscriber.as_dict(20.0)
    assert (shown["state"], shown["state_age"], shown["ack_age"], shown["last_reply"], shown["lease"]) == (
        "subscribed", 6.0, 5.0, "ack", 3.0)
    subscriber.on_message(sub.Message(sub.REFUSED, 0, 0, 1, GROUP_ADDR, GROUP_PORT, 0, sub.NO_COOKIE), 21.0)
    assert subscriber.as_dict(21.0)["state_age"] == 0.0 and subscriber.as_dict(21.0)["last_reply"] == "refused"
    subscriber.tick(False, 22.0)
    assert subscriber.as_dict(23.0)["state"] == "idle" and subscriber.as_dict(23.0)["state_age"] == 1.0


def test_the_defaults_meet_the_leave_bound_even_when_a_leave_is_lost():
    # A lost leave: the last refresh came at most refresh before the application left; the lease then runs
    # out and the server's lease check (every 0.25 s) removes the member.
    refresh = config.DEFAULT_LEASE / sub.REFRESH_SHARE
    assert config.DEFAULT_LEASE + 0.25 < 2.0 and refresh <= 0.5


def test_config_rows_for_dynamic_groups():
    cfg = config.server_add(config.empty_server_config(), GROUP, [], server_port=SERVER_PORT,
                            options={"allow": "10.0.0.0/24,10.9.9.9", "max_members": "8", "lease": "3"})
    (group,) = cfg[config.SERVER_TOP_KEY]
    assert group["allow"] == ["10.0.0.0/24", "10.9.9.9/32"] and group["max_members"] == 8 and group["lease"] == 3.0
    with pytest.raises(config.ConfigError, match="host bits"):
        config.server_add(config.empty_server_config(), GROUP, [], SERVER_PORT, options={"allow": "10.0.0.1/24"})
    with pytest.raises(config.ConfigError, match="only a group with allow"):
        config.server_add(config.empty_server_config(), GROUP, [], SERVER_PORT, options={"lease": "3"})
    with pytest.raises(config.ConfigError, match="lease"):
        config.server_add(config.empty_server_config(), GROUP, [], SERVER_PORT,
                          options={"allow": "10.0.0.0/8", "lease": "0.1"})
    client = config.client_add(config.empty_client_config(), "10.0.0.1", GROUP_PORT, SERVER_PORT, GROUP,
                               options={"dynamic": True})
    assert client[config.CLIENT_TOP_KEY][0]["dynamic"] is True
    # Files without the new keys round-trip unchanged.
    seed = {config.SERVER_TOP_KEY: [{"group_ip": GROUP, "server_port": 1, "group_port": 1, "member_array": []}]}
    assert config.validate_server_config(seed) == seed
