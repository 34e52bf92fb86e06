"""The server's shell of dynamic members (docs/dynamic-membership.md): sockets, timer, fan-out, stats.

``DynamicMembers`` is mixed into ``server.ServerDaemon``: it opens one
socket on every server port of a group with ``allow``, hands each datagram
to ``subscription.SubscriptionServer`` (the pure protocol and state), sends
the answer back, and rebuilds a group's fan-out list when its members
change, so the per-datagram path never checks a subscription.  A timer
step every LEASE_CHECK_INTERVAL expires the leases that were not refreshed.
"""

import functools
import socket
import time

from . import netinfo, subscription
from .daemon import set_buffer

# How often leases are checked while dynamic members exist (a lost leave costs at most a lease plus this).
LEASE_CHECK_INTERVAL = 0.25
# A subscription port that could not be bound is tried again this often (and at every reload).
PORT_RETRY_INTERVAL = 30.0
# Subscription messages read per readiness event; a datagram is at most this big and still read whole.
SUBSCRIPTION_BATCH = 64
SUBSCRIPTION_BUFFER = 256
# Receive buffer of a subscription socket: the default 208 KiB holds about 270 small datagrams, so
# the JOINs of a 1024-member group arriving together were mostly dropped by the kernel; 2 MiB holds
# about 2700 (what a server gets when all of a full group's members answer their challenges at once).
SUBSCRIPTION_RECV_BUFFER = 2 << 20
# With the fleet key, the local address of the route to each dynamic member (what its tags name) is
# remembered this long: one lookup per member and interval, not one per member at every rebuild (which
# made a change of a 1024-member group cost 48 ms) and one per message.
ROUTE_CACHE_SECONDS = 10.0


class DynamicMembers:
    """Dynamic members of the server's groups; needs the ServerDaemon's groups, fan-out, signer and loop."""

    def init_dynamic_members(self):
        # The protocol state, one socket per server port of the groups with allow (and why a port
        # could not be bound), and each group's configured members (the fan-out adds the dynamic ones).
        self.subscriptions = subscription.SubscriptionServer()
        self.subscription_sockets = {}
        self.subscription_errors = {}
        self.static_members = {}
        self._subscription_buffer = bytearray(SUBSCRIPTION_BUFFER)
        self._next_port_retry = 0.0
        self._route_sources = {}
        self._route_sources_until = 0.0

    def configure_dynamic_members(self, groups):
        """Take the groups' subscription settings before ``apply_config`` builds their fan-out lists."""
        self._route_sources_until = 0.0
        self.subscriptions.configure(groups, time.monotonic(), time.time())
        self.static_members = dict((entry["group_ip"], entry["member_array"]) for entry in groups)

    def close_subscription_sockets(self):
        for sock in self.subscription_sockets.values():
            self.unwatch(sock)
            sock.close()
        self.subscription_sockets = {}

    def _fan_out_members(self, group_ip):
        """The configured members, then the dynamic ones that are not also configured (one copy each)."""
        static = self.static_members.get(group_ip, [])
        dynamic = self.subscriptions.group(group_ip)
        if dynamic is None or not dynamic.members:
            return static
        listed = set(static)
        return list(static) + [ip for ip in dynamic.members if ip not in listed]

    def _membership_changed(self, dynamic):
        """Rebuild the fan-out of the group whose dynamic members changed (never checked per datagram)."""
        group = self.groups.get(dynamic.group_ip)
        if group is None:
            return
        members = self._fan_out_members(group.group_ip)
        kept = set(members)
        departed = dict((entry["member_ip"], entry) for entry in dynamic.history if "tx_packets" not in entry)
        for ip in group.members:
            if ip not in kept and ip in departed:
                sent = group.member_dict(ip)
                departed[ip].update(tx_packets=sent["tx_packets"], tx_bytes=sent["tx_bytes"])
        group.set_members(members, group.server_port, self.fan_out)
        if self.signer is not None and not (self.cfg or {}).get("address"):
            self._bind_signers(self.cfg, [group], self._route_cache())

    def _sync_subscription_sockets(self, changes):
        """A socket on every server port of a group with allow, and none on the others."""
        ports = set(self.subscriptions.ports())
        for port in list(self.subscription_sockets):
            if port not in ports:
                sock = self.subscription_sockets.pop(port)
                self.unwatch(sock)
                sock.close()
        self.subscription_errors = dict((port, error) for port, error in self.subscription_errors.items()
                                        if port in ports and port not in self.subscription_sockets)
        for port in sorted(ports - set(self.subscription_sockets)):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)
                set_buffer(sock, socket.SO_RCVBUF, SUBSCRIPTION_RECV_BUFFER)
                sock.bind(("0.0.0.0", port))
            except OSError as exc:
                sock.close()
                error = "cannot take subscriptions on UDP port %d: %s (a relay client on this host holds it? " \
                        "ss -uapn 'sport = :%d' names the socket)" % (port, exc.strerror or exc, port)
                if self.subscription_errors.get(port) != error:
                    self.log.error("%s", error)
                self.subscription_errors[port] = error
                changes["errors"].append({"subscription_port": port, "error": error})
                continue
            self.subscription_errors.pop(port, None)
            self.subscription_sockets[port] = sock
            self.watch(sock, functools.partial(self._read_subscriptions, port))
        if self.subscriptions.groups:
            self.next_timer = min(self.next_timer, time.monotonic() + LEASE_CHECK_INTERVAL)

    def _read_subscriptions(self, port, sock):
        """Answer what queued on a subscription port; then rebuild each group that changed, once.

        A burst of joins (a restart of many members, a fleet coming up)
        costs one fan-out rebuild per group and readiness event, not one
        per join: the rebuild is O(members), so per join it made admitting
        n members O(n^2).  Answers go out as each message is handled; the
        copies start with the rebuild, microseconds after the ACK.
        """
        changed = []
        try:
            self._read_subscription_batch(port, sock, changed)
        finally:
            for dynamic in changed:
                self._membership_changed(dynamic)

    def _read_subscription_batch(self, port, sock, changed):
        buffer = self._subscription_buffer
        for _attempt in range(SUBSCRIPTION_BATCH):
            try:
                nbytes, source = sock.recvfrom_into(buffer, SUBSCRIPTION_BUFFER)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.drop_log.drop("subscription_receive_error", "port %d: %s" % (port, exc))
                return
            outcome = self.subscriptions.handle(memoryview(buffer)[:nbytes], nbytes, source[0], source[1], port,
                                                time.monotonic(), time.time(), self.verifier, self._reply_signer)
            if outcome.reason is not None:
                self.drop_log.drop("subscription_" + outcome.reason, outcome.detail)
            if outcome.reply is not None:
                try:
                    sock.sendto(outcome.reply, source)
                except OSError as exc:
                    self.drop_log.drop("subscription_send_error", "to %s:%d: %s" % (source + (exc,)))
            if outcome.changed is not None and not any(outcome.changed is group for group in changed):
                changed.append(outcome.changed)

    def _route_cache(self):
        """member ip -> local address of the route to it (or None), forgotten every ROUTE_CACHE_SECONDS."""
        now = time.monotonic()
        if now >= self._route_sources_until:
            self._route_sources = {}
            self._route_sources_until = now + ROUTE_CACHE_SECONDS
        return self._route_sources

    def _reply_signer(self, group_ip, member_ip):
        """The signer of replies to ``member_ip``: bound to the address it receives the group's frames from."""
        if self.signer is None:
            return None
        address = (self.cfg or {}).get("address")
        if not address:
            routes = self._route_cache()
            if member_ip not in routes:
                routes[member_ip] = netinfo.route_source(member_ip)
            address = routes[member_ip] or "0.0.0.0"
        group = self.groups.get(group_ip)
        if group is not None and group.signer is not None and group.signer.server_ip == address:
            return group.signer
        return self.signer.bound(address)

    def timer(self):
        """Expire the leases that were not refreshed in time."""
        if not self.subscriptions.groups:
            self.next_timer = float("inf")
            return
        now = time.monotonic()
        self.next_timer = now + LEASE_CHECK_INTERVAL
        for dynamic in self.subscriptions.expire(now, time.time()):
            self._membership_changed(dynamic)
        if self.subscription_errors and now >= self._next_port_retry:
            self._next_port_retry = now + PORT_RETRY_INTERVAL
            self._sync_subscription_sockets({"errors": []})

    def _group_stats(self, group):
        """A group's counters; with dynamic members, how each member joined and its lease's age."""
        stats = group.as_dict()
        dynamic = self.subscriptions.group(group.group_ip)
        if dynamic is None:
            return stats
        stats["dynamic"] = dynamic.as_dict(time.monotonic())
        leases = dict((entry["member_ip"], entry) for entry in stats["dynamic"]["members"])
        static = set(self.static_members.get(group.group_ip, ()))
        for member in stats["members"]:
            ip = member["member_ip"]
            member["joined_by"] = "+".join(how for how, present in (("config", ip in static),
                                                                    ("subscription", ip in leases)) if present)
            if ip in leases:
                member["lease_age"] = leases[ip]["lease_age"]
        return stats

    def subscription_status(self):
        """The subscription refusals of the whole server and the ports that take subscriptions."""
        status = self.subscriptions.as_dict()
        status["errors"] = [self.subscription_errors[port] for port in sorted(self.subscription_errors)]
        return status

    def _dynamic_members(self, group_ip):
        dynamic = self.subscriptions.group(group_ip)
        return dynamic.as_dict(time.monotonic())["members"] if dynamic is not None else []
