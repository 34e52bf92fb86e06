"""Dynamic group membership (issue 17): the subscription protocol and its state, pure code.

A client entry with ``dynamic`` subscribes to its server while a local
application has joined the group, and unsubscribes when the last one
leaves.  The server admits a subscriber to a group that opts in (``allow``)
only after a return-routability check, so a spoofed subscription never makes
it send a stream to an address that did not ask for it:

    client                                    server
    JOIN  (cookie zero or stale)       ->     CHALLENGE (cookie) back to the source, same size
    JOIN  (cookie)                     ->     member added, ACK (lease, fresh cookie)
    JOIN  (cookie) every lease / 3     ->     lease renewed, ACK
    LEAVE (cookie)                     ->     member removed at once

The cookie is an HMAC of (bucket, address, port, group, group port) under a
secret of the server run: stateless, valid for the bucket it was made in and
the next.  Messages travel between the client's relay port and the server's
(the port the copies go to), are 36 bytes, 52 with the fleet key's tag
(docs/dynamic-membership.md has the layout and the rules).

``SubscriptionServer`` and ``Subscriber`` hold no sockets and read no clock:
the daemons pass the time in, so every rule is a unit test
(tests/relay/unit/test_subscription.py).
"""

import collections
import hashlib
import hmac
import os
import socket
import struct

from . import relay_config as config

MAGIC = b"MS"
VERSION = 1
HEADER_LEN = 36
TAG_LEN = 16
COOKIE_LEN = 16
FLAG_TAG = 0x01
JOIN, LEAVE, CHALLENGE, ACK, REFUSED = 1, 2, 3, 4, 5
KIND_NAMES = {JOIN: "join", LEAVE: "leave", CHALLENGE: "challenge", ACK: "ack", REFUSED: "refused"}
NO_COOKIE = bytes(COOKIE_LEN)
# What a REFUSED message says (byte 6), only ever sent to an address that passed the cookie check.
REFUSAL_CODES = {1: "full"}
_REFUSAL_BYTES = dict((name, code) for code, name in REFUSAL_CODES.items())

# magic, version, flags, kind, key id, refusal code, reserved, group address,
# group port, reserved, lease in milliseconds, cookie
_HEADER = struct.Struct(">2sBBBBBBIHHI16s")
assert _HEADER.size == HEADER_LEN
_COOKIE_INPUT = struct.Struct(">IIHIH")

# Seconds a server grants when a group names no lease: refreshed every
# lease / 3, so two refreshes can be lost, and a member whose LEAVE is lost
# stops getting copies at most a lease (plus one server timer step) after
# its last refresh: under 2 s.
DEFAULT_LEASE = config.DEFAULT_LEASE
REFRESH_SHARE = 3
# A client retries an unanswered JOIN this often (the refresh of the default lease).
RETRY_INTERVAL = DEFAULT_LEASE / REFRESH_SHARE
DEFAULT_MAX_MEMBERS = config.DEFAULT_MAX_MEMBERS
# A cookie is valid in the bucket it was made in and the next one.
COOKIE_BUCKET = 60.0
# Per (source address, group): a refresh every lease / 3 plus joins and
# leaves fit well under these; a flood does not.
SOURCE_RATE = 10.0
SOURCE_BURST = 20.0
# For the whole server: what it reads, and what it answers to addresses not yet checked.
GLOBAL_RATE = 5000.0
CHALLENGE_RATE = 500.0
# ... in bursts of up to this many: every member of a full group (config.MAX_MEMBERS) challenged twice,
# so a restarted server re-admits a whole 1024-member group within one refresh (at 500 it took three
# retries, 1.5 s).  A challenge is never larger than the JOIN it answers: the burst amplifies nothing.
CHALLENGE_BURST = 2.0 * config.MAX_MEMBERS
MAX_RATE_KEYS = 16384
# Departures remembered per group for -P (how they left, what they were sent).
HISTORY = 16
# Sources remembered per refusal reason for -P and the doctor (the last ones refused, with a count each).
REFUSED_SOURCES = 8

# Every refusal the server counts, in the order it checks.
REFUSAL_REASONS = ("malformed", "bad_version", "rate_limited", "unexpected_kind", "unknown_group", "wrong_port",
                   "auth_missing", "auth_unknown_key", "auth_bad", "not_allowed", "bad_cookie", "full")
EVENTS = ("joins", "refreshes", "leaves", "expiries", "challenges", "acks")


class SubscriptionError(ValueError):
    """A datagram that is not a valid subscription message; ``reason`` is the counter."""

    def __init__(self, reason, detail):
        self.reason = reason
        super(SubscriptionError, self).__init__(detail)


Message = collections.namedtuple("Message", "kind flags key_id refusal group_addr group_port lease_ms cookie")


def is_subscription(buf):
    """True when ``buf`` starts like a subscription message (and so is not a data frame)."""
    return len(buf) >= 2 and buf[0] == MAGIC[0] and buf[1] == MAGIC[1]


def parse(buf, nbytes):
    """The Message in the first ``nbytes`` of ``buf``; raises SubscriptionError and nothing else."""
    if nbytes < 3 or not is_subscription(buf):
        raise SubscriptionError("malformed", "not a subscription message (%d bytes)" % nbytes)
    if buf[2] != VERSION:
        raise SubscriptionError("bad_version", "subscription version %d; this relay speaks %d" % (buf[2], VERSION))
    if nbytes not in (HEADER_LEN, HEADER_LEN + TAG_LEN):
        raise SubscriptionError("malformed", "%d bytes; a subscription message has %d, or %d with a tag"
                                % (nbytes, HEADER_LEN, HEADER_LEN + TAG_LEN))
    (_magic, _version, flags, kind, key_id, refusal, reserved, group_addr, group_port, reserved2, lease_ms,
     cookie) = _HEADER.unpack_from(buf, 0)
    if flags & ~FLAG_TAG:
        raise SubscriptionError("malformed", "unknown flag bits 0x%02x" % (flags & ~FLAG_TAG))
    if bool(flags & FLAG_TAG) != (nbytes == HEADER_LEN + TAG_LEN):
        raise SubscriptionError("malformed", "the tag flag does not match the length of %d bytes" % nbytes)
    if kind not in KIND_NAMES:
        raise SubscriptionError("malformed", "unknown message kind %d" % kind)
    if reserved or reserved2:
        raise SubscriptionError("malformed", "reserved bytes are not zero")
    if (group_addr >> 28) != 0xE:
        raise SubscriptionError("malformed", "%s is not a multicast group" % _ip(group_addr))
    return Message(kind, flags, key_id, refusal, group_addr, group_port, lease_ms, cookie)


def encode(kind, group_addr, group_port, cookie=NO_COOKIE, lease_ms=0, refusal=0, signer=None):
    """One message as bytes; with ``signer`` (an auth.BoundSigner of the sender's address) tagged."""
    flags, key_id = (FLAG_TAG, signer.key_id) if signer is not None else (0, 0)
    buf = bytearray(HEADER_LEN + (TAG_LEN if signer is not None else 0))
    _HEADER.pack_into(buf, 0, MAGIC, VERSION, flags, kind, key_id, refusal, 0, group_addr, group_port, 0,
                      lease_ms, bytes(cookie))
    if signer is not None:
        signer.sign_into(memoryview(buf), HEADER_LEN)
    return bytes(buf)


def _ip(value):
    return socket.inet_ntoa(struct.pack("!I", value))


def ip_value(text):
    return struct.unpack("!I", socket.inet_aton(text))[0]


def parse_networks(cidrs):
    """[(network, mask)] of CIDR texts the config validated ("10.0.0.0/8", "10.1.2.3" is a /32)."""
    networks = []
    for text in cidrs:
        address, _slash, bits = text.partition("/")
        length = int(bits) if bits else 32
        mask = (0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF
        networks.append((ip_value(address) & mask, mask))
    return networks


class CookieJar:
    """Stateless return-routability cookies under one secret (a new one per server run)."""

    def __init__(self, secret=None, bucket=COOKIE_BUCKET):
        self._secret = secret if secret is not None else os.urandom(32)
        self.bucket = bucket

    def _make(self, bucket, address, port, group_addr, group_port):
        data = _COOKIE_INPUT.pack(bucket & 0xFFFFFFFF, address, port, group_addr, group_port)
        return hmac.new(self._secret, data, hashlib.sha256).digest()[:COOKIE_LEN]

    def make(self, now, address, port, group_addr, group_port):
        return self._make(int(now // self.bucket), address, port, group_addr, group_port)

    def valid(self, cookie, now, address, port, group_addr, group_port):
        """True for a cookie of this bucket or the one before, for exactly this address, port and group."""
        bucket = int(now // self.bucket)
        return any(hmac.compare_digest(cookie, self._make(b, address, port, group_addr, group_port))
                   for b in (bucket, bucket - 1))


class TokenBuckets:
    """Token-bucket rate limits per key, in bounded memory: a full table refuses new keys."""

    def __init__(self, rate, burst, max_keys=MAX_RATE_KEYS):
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets = {}

    def allow(self, key, now):
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._prune(now)
                if len(self._buckets) >= self.max_keys:
                    return False
            bucket = self._buckets[key] = [self.burst, now]
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1.0
        return True

    def _prune(self, now):
        """Forget the keys whose bucket has refilled: they are idle, a fresh bucket is the same."""
        for key, (tokens, last) in list(self._buckets.items()):
            if tokens + (now - last) * self.rate >= self.burst:
                del self._buckets[key]

    def __len__(self):
        return len(self._buckets)


class Lease:
    """A dynamic member of one group: since when (wall time), last refresh (monotonic), refreshes."""

    __slots__ = ("member_ip", "joined", "joined_wall", "refreshed", "refreshes")

    def __init__(self, member_ip, now, wall):
        self.member_ip = member_ip
        self.joined = now
        self.joined_wall = wall
        self.refreshed = now
        self.refreshes = 0


class DynamicGroup:
    """The subscription settings and dynamic members of one group that opts in."""

    def __init__(self, group_ip, group_port, server_port, allow, max_members=DEFAULT_MAX_MEMBERS,
                 lease=DEFAULT_LEASE):
        self.group_ip = group_ip
        self.group_port = group_port
        self.server_port = server_port
        self.configure(allow, max_members, lease)
        self.members = collections.OrderedDict()   # member ip -> Lease, in join order
        self.history = collections.deque(maxlen=HISTORY)
        self.events = dict.fromkeys(EVENTS, 0)

    def configure(self, allow, max_members, lease):
        self.allow = list(allow)
        self.networks = parse_networks(allow)
        self.max_members = max_members
        self.lease = lease

    def allowed(self, address):
        return any(address & mask == network for network, mask in self.networks)

    def member_ips(self):
        return tuple(self.members)

    def as_dict(self, now):
        return {"allow": list(self.allow), "max_members": self.max_members, "lease": self.lease,
                "events": dict(self.events),
                "members": [{"member_ip": lease.member_ip, "joined_by": "subscription", "since": lease.joined_wall,
                             "lease_age": round(now - lease.refreshed, 3), "refreshes": lease.refreshes}
                            for lease in self.members.values()],
                "departed": list(self.history)}


Outcome = collections.namedtuple("Outcome", "reply changed reason detail")


class SubscriptionServer:
    """The server side: admits, renews, removes and expires dynamic members; counts every refusal.

    ``handle`` returns an Outcome: the reply to send back to the source
    (bytes, or None), the DynamicGroup whose member list changed (or None),
    and the refusal reason (or None) with a line for the log.
    """

    def __init__(self, cookies=None):
        self.cookies = cookies or CookieJar()
        self.groups = {}            # group address (int) -> DynamicGroup
        self.refusals = dict.fromkeys(REFUSAL_REASONS, 0)
        self.refused_sources = {}   # reason -> OrderedDict(source ip -> [count, wall time of the last])
        self.sources = TokenBuckets(SOURCE_RATE, SOURCE_BURST)
        self.overall = TokenBuckets(GLOBAL_RATE, GLOBAL_RATE, 1)
        self.challenges = TokenBuckets(CHALLENGE_RATE, CHALLENGE_BURST, 1)

    def configure(self, groups, now, wall):
        """Make the dynamic groups those of ``groups`` (config entries with ``allow``); changed DynamicGroups.

        Members that a new allow list or maximum no longer admits leave at
        once; a group that stops opting in loses its dynamic members.
        """
        wanted = {}
        for entry in groups:
            if entry.get("allow"):
                wanted[ip_value(entry["group_ip"])] = entry
        changed = []
        for addr in list(self.groups):
            if addr not in wanted:
                gone = self.groups.pop(addr)
                if gone.members:
                    changed.append(gone)
        for addr, entry in wanted.items():
            lease = entry.get("lease", DEFAULT_LEASE)
            max_members = entry.get("max_members", DEFAULT_MAX_MEMBERS)
            group = self.groups.get(addr)
            if group is None or (group.group_port, group.server_port) != (entry["group_port"], entry["server_port"]):
                previous = group
                group = self.groups[addr] = DynamicGroup(entry["group_ip"], entry["group_port"],
                                                         entry["server_port"], entry["allow"], max_members, lease)
                if previous is not None and previous.members:
                    changed.append(group)
                continue
            group.configure(entry["allow"], max_members, lease)
            dropped = [ip for ip in group.members if not group.allowed(ip_value(ip))]
            dropped += [ip for ip in list(group.members)[max_members:] if ip not in dropped]
            for ip in dropped:
                self._remove(group, ip, "config", now, wall)
            if dropped:
                changed.append(group)
        return changed

    def ports(self):
        """The server ports that receive subscriptions."""
        return sorted(set(group.server_port for group in self.groups.values()))

    def group(self, group_ip):
        return self.groups.get(ip_value(group_ip))

    def _refuse(self, reason, detail):
        self.refusals[reason] += 1
        return Outcome(None, None, reason, detail)

    def handle(self, buf, nbytes, source_ip, source_port, local_port, now, wall, verifier=None, signer_of=None):
        """``_handle``, and the source of a refusal remembered (the last REFUSED_SOURCES per reason)."""
        outcome = self._handle(buf, nbytes, source_ip, source_port, local_port, now, wall, verifier, signer_of)
        if outcome.reason is not None:
            sources = self.refused_sources.get(outcome.reason)
            if sources is None:
                sources = self.refused_sources[outcome.reason] = collections.OrderedDict()
            seen = sources.pop(source_ip, None)
            sources[source_ip] = [seen[0] + 1 if seen else 1, wall]
            if len(sources) > REFUSED_SOURCES:
                sources.popitem(last=False)
        return outcome

    def _handle(self, buf, nbytes, source_ip, source_port, local_port, now, wall, verifier=None, signer_of=None):
        """Act on one datagram from ``source_ip:source_port`` that arrived on ``local_port``.

        ``verifier`` (auth.Verifier) is given while the fleet key is loaded:
        then every message must carry a valid tag bound to its source
        address.  ``signer_of(group_ip, source_ip)`` gives the BoundSigner
        that tags the replies (None without keys).
        """
        where = "from %s:%d" % (source_ip, source_port)
        if not self.overall.allow(None, now):
            return self._refuse("rate_limited", "%s: more than %d subscription messages a second in all"
                                % (where, GLOBAL_RATE))
        try:
            message = parse(buf, nbytes)
        except SubscriptionError as exc:
            return self._refuse(exc.reason, "%s: %s" % (where, exc))
        group_ip = _ip(message.group_addr)
        where = "%s for %s:%d" % (where, group_ip, message.group_port)
        source = ip_value(source_ip)
        if not self.sources.allow((source, message.group_addr), now):
            return self._refuse("rate_limited", "%s: more than %d messages a second from one member for one group"
                                % (where, SOURCE_RATE))
        if message.kind not in (JOIN, LEAVE):
            return self._refuse("unexpected_kind", "%s: a server takes joins and leaves, not a %s"
                                % (where, KIND_NAMES[message.kind]))
        group = self.groups.get(message.group_addr)
        if group is None or group.group_port != message.group_port:
            return self._refuse("unknown_group", "%s: no group here takes subscriptions for it (allow not set)"
                                % where)
        if source_port != group.server_port or local_port != group.server_port:
            return self._refuse("wrong_port", "%s: subscriptions come from and go to the group's server port %d, "
                                "not %d -> %d" % (where, group.server_port, source_port, local_port))
        if verifier is not None:
            reason = verifier.check(buf, message.flags, message.key_id, HEADER_LEN, socket.inet_aton(source_ip))
            if reason is not None:
                return self._refuse(reason, "%s: key id %d" % (where, message.key_id))
        if not group.allowed(source):
            return self._refuse("not_allowed", "%s: the address is not in the group's allow list %s"
                                % (where, ",".join(group.allow)))
        signer = signer_of(group.group_ip, source_ip) if signer_of is not None else None
        if not self.cookies.valid(message.cookie, now, source, source_port, message.group_addr, message.group_port):
            if message.kind == LEAVE:
                return self._refuse("bad_cookie", "%s: a leave without a valid cookie is ignored" % where)
            if not self.challenges.allow(None, now):
                return self._refuse("rate_limited", "%s: more than %d challenges a second" % (where, CHALLENGE_RATE))
            group.events["challenges"] += 1
            if message.cookie != NO_COOKIE:
                self.refusals["bad_cookie"] += 1
            cookie = self.cookies.make(now, source, source_port, message.group_addr, message.group_port)
            # Never larger than what asked for it: no amplification towards a spoofed source.
            return Outcome(encode(CHALLENGE, message.group_addr, message.group_port, cookie, signer=signer),
                           None, None, None)
        if message.kind == LEAVE:
            if source_ip not in group.members:
                return Outcome(None, None, None, None)
            self._remove(group, source_ip, "leave", now, wall)
            group.events["leaves"] += 1
            return Outcome(None, group, None, None)
        lease = group.members.get(source_ip)
        changed = None
        if lease is None:
            if len(group.members) >= group.max_members:
                self.refusals["full"] += 1
                return Outcome(encode(REFUSED, message.group_addr, message.group_port, refusal=_REFUSAL_BYTES["full"],
                                      signer=signer), None, "full",
                               "%s: the group has its maximum of %d dynamic members" % (where, group.max_members))
            lease = group.members[source_ip] = Lease(source_ip, now, wall)
            group.events["joins"] += 1
            changed = group
        else:
            lease.refreshed = now
            lease.refreshes += 1
            group.events["refreshes"] += 1
        group.events["acks"] += 1
        cookie = self.cookies.make(now, source, source_port, message.group_addr, message.group_port)
        return Outcome(encode(ACK, message.group_addr, message.group_port, cookie, int(group.lease * 1000),
                              signer=signer), changed, None, None)

    def _remove(self, group, member_ip, how, now, wall):
        lease = group.members.pop(member_ip)
        group.history.append({"member_ip": member_ip, "left_by": how, "since": lease.joined_wall, "left": wall,
                              "subscribed_seconds": round(now - lease.joined, 3)})

    def expire(self, now, wall):
        """Remove the members whose lease ran out; the DynamicGroups that changed."""
        changed = []
        for group in self.groups.values():
            late = [ip for ip, lease in group.members.items() if now - lease.refreshed > group.lease]
            for ip in late:
                self._remove(group, ip, "expired", now, wall)
                group.events["expiries"] += 1
            if late:
                changed.append(group)
        return changed

    def as_dict(self):
        return {"refusals": dict(self.refusals),
                "refused_sources": dict((reason, [{"source": ip, "count": count, "last": last}
                                                  for ip, (count, last) in sources.items()])
                                        for reason, sources in self.refused_sources.items()),
                "ports": self.ports(),
                "groups": len(self.groups), "members": sum(len(g.members) for g in self.groups.values())}


class Subscriber:
    """The client side of one dynamic entry: when to send a JOIN or a LEAVE, what the server answered.

    ``tick(wanted, now)`` says which message to send now (JOIN, LEAVE or
    None); ``on_message`` takes the server's reply and says whether to send
    a JOIN at once (a challenge answered).
    """

    def __init__(self):
        self.wanted = False
        self.cookie = NO_COOKIE
        self.state = "idle"         # idle, joining (no ACK yet), subscribed, refused
        self.refresh = RETRY_INTERVAL
        self.next_send = 0.0
        self.last_ack = None
        self.refusal = ""
        # For the doctor: since when the state holds, the last answer and when, the lease granted.
        self.state_since = 0.0
        self.last_reply = None
        self.last_reply_at = None
        self.lease = None
        self.counters = {"joins_sent": 0, "leaves_sent": 0, "challenges": 0, "acks": 0, "refused": 0,
                         "unsolicited": 0}

    def tick(self, wanted, now):
        if wanted != self.wanted:
            self.wanted = wanted
            self.state_since = now
            if not wanted:
                was = self.state
                self.state = "idle"
                if was in ("subscribed", "joining"):
                    self.counters["leaves_sent"] += 1
                    return LEAVE
                return None
            self.state = "joining"
            self.next_send = now
        if not wanted or now < self.next_send:
            return None
        # Subscribed: refresh every lease / 3; otherwise retry at the default interval.
        self.next_send = now + (self.refresh if self.state == "subscribed" else RETRY_INTERVAL)
        self.counters["joins_sent"] += 1
        return JOIN

    def on_message(self, message, now):
        """True when a JOIN must go out now (the answer to a challenge)."""
        if not self.wanted:
            self.counters["unsolicited"] += 1
            return False
        if message.kind in (CHALLENGE, ACK, REFUSED):
            self.last_reply = KIND_NAMES[message.kind]
            self.last_reply_at = now
        if message.kind == CHALLENGE:
            if message.cookie == self.cookie:
                return False
            self.cookie = message.cookie
            self.counters["challenges"] += 1
            self.counters["joins_sent"] += 1
            return True
        if message.kind == ACK:
            self.cookie = message.cookie
            self.counters["acks"] += 1
            self.last_ack = now
            if message.lease_ms:
                lease = max(config.MIN_LEASE, message.lease_ms / 1000.0)
                self.lease = lease
                self.refresh = lease / REFRESH_SHARE
                self.next_send = min(self.next_send, now + self.refresh)
            if self.state != "subscribed":
                self.state_since = now
            self.state = "subscribed"
            self.refusal = ""
            return False
        if message.kind == REFUSED:
            self.counters["refused"] += 1
            if self.state != "refused":
                self.state_since = now
            self.state = "refused"
            self.refusal = REFUSAL_CODES.get(message.refusal, "code %d" % message.refusal)
            return False
        self.counters["unsolicited"] += 1
        return False

    def as_dict(self, now):
        """What ``multic_admin -P`` shows and the doctor reads: ``state_age`` (seconds in the state),
        ``last_reply`` (challenge, ack, refused or None) and its age, the ``lease`` the server granted."""
        return {"state": self.state, "wanted": self.wanted, "refusal": self.refusal,
                "state_age": round(now - self.state_since, 3),
                "ack_age": round(now - self.last_ack, 3) if self.last_ack is not None else None,
                "last_reply": self.last_reply,
                "last_reply_age": round(now - self.last_reply_at, 3) if self.last_reply_at is not None else None,
                "lease": self.lease, "refresh": self.refresh, "counters": dict(self.counters)}
