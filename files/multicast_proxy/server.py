"""The server daemon (``multis_admin -R``): group datagrams in, one unicast
frame per member out.

Everything that can be computed once per config (the members' socket
addresses and sendmmsg headers, packed group address, interface) is computed
in ``apply_config``; the receive path only packs the header into the
preallocated buffer in front of the payload and hands the same buffer to one
``sendmmsg`` for all members (``server_fastpath.py``, on the bindings of
``mmsg.py``).  The first datagram of a readable event is handled alone (at
light load it is all there is, and latency counts); what is queued behind it
is read with one ``recvmmsg`` and sent with one ``sendmmsg`` per up to 1024
copies.

A group that names no interface is joined on every up multicast interface
with IPv4 (``join_interfaces`` "all", the default): the loopback copy of a
local source's datagram reaches only sockets that joined on the interface it
left from, and an application on a multi-NIC host may send out of any of
them.  The joins are several IP_ADD_MEMBERSHIPs on the group's one socket,
so a datagram is still read once; ``tick`` rescans the interfaces every
second and joins or leaves as they come and go.

Per member the daemon keeps only what differs from its group: when a member
joined a group that had already relayed, and what failed to reach it.  A
member's sent counters are the group's minus those, so a datagram that
reaches every member costs no per-member work in Python, and a member costs
no object of its own.
"""

import collections
import errno
import functools
import os
import socket
import struct
import time

from . import auth, capture, relay_config as config, frame, mmsg, netinfo, replay, server_fastpath
from .daemon import Daemon, set_buffer
from .server_subscriptions import DynamicMembers

# Socket options the socket module of older Pythons may lack (Linux values).
IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)
IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)
IP_RECVTOS = getattr(socket, "IP_RECVTOS", 13)
IP_TTL = socket.IP_TTL
IP_TOS = socket.IP_TOS
# A plain int: the socket module's enum flag costs an enum operation per datagram.
MSG_TRUNC = int(socket.MSG_TRUNC)
_unpack_int = struct.Struct("=i").unpack_from
# The frame header's precompiled layout: the receive loop packs it itself
# rather than through frame.pack_header_into (one Python call less per datagram).
_pack_header = frame._HEADER.pack_into

# Room for a burst of ~10,000 datagrams while the relay is busy with another
# group; only what is queued is charged, and net.ipv4.udp_mem caps the total.
RECV_BUFFER = 32 << 20
SEND_BUFFER = 4 << 20
# Datagrams handled per readiness event before the loop looks at other sockets.
BATCH = server_fastpath.BURST_ROWS
# A burst receive slot: frame header, then the largest payload.
SLOT = 1 << 16
assert SLOT >= frame.HEADER_LEN + frame.MAX_PAYLOAD
ANC_SIZE = socket.CMSG_SPACE(4) + socket.CMSG_SPACE(4)

# Seconds between attempts to join groups that failed (no route, no interface yet).
RETRY_INTERVAL = 30.0
# Groups joined by one start or reload that are still logged one line each.
JOIN_LOG_LINES = 16

# fragment and malformed happen only in capture mode (see capture.py); no_keys
# while keys are required (auth_required) but cannot be loaded: nothing is sent.
GROUP_DROP_REASONS = ("loop", "oversize", "receive_error", "fragment", "malformed", "no_keys")


def join_text(join):
    """A join setting for messages: all, or eth0,10.0.1.5."""
    return join if isinstance(join, str) else ",".join(join)


def join_setting(entry, cfg):
    """(pinned interface or None, join_interfaces) of a group: its own setting, else the server's.

    ``interface`` names the one interface (the validator refuses both at one
    level); a group that sets neither follows the server's, whose default is "all".
    """
    for level in (entry, cfg):
        if level.get("interface"):
            return level["interface"], None
        if "join_interfaces" in level:
            return None, level["join_interfaces"]
    return None, config.JOIN_ALL


class Group:
    """A joined group socket and its counters."""

    # Sizes the group socket's receive buffer; the daemon gives each group its
    # own method, which reports the size the kernel granted.
    set_buffer = staticmethod(set_buffer)

    def __init__(self, group_ip, group_port, interface, seq_base, mode=capture.MODE_SOCKET, join=None):
        self.group_ip = group_ip
        self.group_port = group_port
        self.mode = mode
        self.group_addr = frame.ip_to_int(group_ip)
        self.interface = interface
        # None: joined on ``interface`` alone (pinned, the route's, capture);
        # else the join_interfaces setting ("all" or a tuple of names and addresses).
        self.join = join
        self.joined = {}        # interface name -> index of each membership the socket holds
        self.join_problem = ""  # what could not be joined, and why
        self.server_port = None
        self.members = ()       # member addresses in config order
        self.targets = None     # server_fastpath.MemberSet of the members at server_port
        # Every datagram counted in rx_* is sent to every member; per member
        # only the exceptions: ip -> (rx_packets, rx_bytes) when it joined
        # (absent: it was there from the start), ip -> [send errors, bytes
        # not sent, last error] (absent: none).
        self.joined_at = {}
        self.failures = {}
        # What members that left had been sent: [copies, bytes, send errors],
        # so the group's sums (totals) never go backwards when one leaves.
        self.retired = [0, 0, 0]
        self.sock = None
        self.error = ""
        self.seq = seq_base
        self.rx_packets = 0
        self.rx_bytes = 0
        self.drops = dict.fromkeys(GROUP_DROP_REASONS, 0)
        # auth.BoundSigner of the address the members get this group's frames from, while keys are loaded.
        self.signer = None

    @property
    def key(self):
        return (self.group_ip, self.group_port, self.interface, self.mode, self.join)

    @property
    def interface_label(self):
        """The metrics' interface label: the one interface, else the join setting ("all", "eth0,eth1"), which
        changes with the config only, not with each rescan."""
        return self.interface or (join_text(self.join) if self.join is not None else "")

    @property
    def interfaces(self):
        """The interfaces the group is picked up from now."""
        return list(self.joined) if self.mode == capture.MODE_SOCKET else [self.interface] if self.sock else []

    def open(self, targets=(), problem=""):
        """Bind group_ip:group_port and join on the explicit interface, or on ``targets`` (netinfo.Interface
        tuples) when the group has a join setting (capture mode: see capture.py).

        The receive buffer is sized by ``self.set_buffer``: the daemon's, which reports what it got.
        """
        if self.mode != capture.MODE_SOCKET:
            self.sock = capture.open_capture_socket(self.interface, self.group_ip, self.group_port, self.mode,
                                                    self.set_buffer)
            return
        if self.join is None:
            ifindex = netinfo.interface_index(self.interface)
            address = netinfo.interface_address(self.interface) or "0.0.0.0"
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            # Local receivers of the same group share the port with us.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # Only this group's datagrams, not every group joined on the host.
            sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
            sock.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
            sock.setsockopt(socket.IPPROTO_IP, IP_RECVTOS, 1)
            self.set_buffer(sock, socket.SO_RCVBUF, RECV_BUFFER)
            sock.bind((self.group_ip, self.group_port))
            sock.setblocking(False)
            if self.join is None:
                # struct ip_mreqn: group, interface address, interface index.  Never
                # INADDR_ANY without an index: the kernel would pick the default
                # route's interface, the failure the field notes describe.
                mreqn = socket.inet_aton(self.group_ip) + socket.inet_aton(address) + struct.pack("=i", ifindex)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
                self.joined = {self.interface: ifindex}
            else:
                self.sock = sock
                self.sync_joins(targets, problem)
                if not self.joined:
                    raise netinfo.InterfaceError("joined on no interface (join_interfaces %s): %s"
                                                 % (join_text(self.join), self.join_problem))
        except BaseException:
            sock.close()
            self.sock = None
            self.joined = {}
            raise
        self.sock = sock

    def _membership(self, option, index):
        # ip_mreqn with the interface index alone: the kernel takes the interface from it.
        self.sock.setsockopt(socket.IPPROTO_IP, option, socket.inet_aton(self.group_ip) + socket.inet_aton("0.0.0.0")
                             + struct.pack("=i", index))

    def sync_joins(self, targets, problem=""):
        """Hold memberships on exactly ``targets``; (names joined, names left).

        A membership whose interface vanished or was re-created under another
        index is dropped (the kernel may have dropped it already: errors are
        ignored).  A join that fails is named in ``join_problem``.
        """
        wanted = dict((target.name, target.index) for target in targets)
        left = []
        for name, index in list(self.joined.items()):
            if wanted.get(name) != index:
                try:
                    self._membership(socket.IP_DROP_MEMBERSHIP, index)
                except OSError:
                    pass
                del self.joined[name]
                left.append(name)
        added = []
        problems = [problem] if problem else []
        for target in targets:
            if target.name in self.joined:
                continue
            try:
                self._membership(socket.IP_ADD_MEMBERSHIP, target.index)
            except OSError as exc:
                hint = " (net.ipv4.igmp_max_memberships: one membership per interface)" \
                    if exc.errno == errno.ENOBUFS else ""
                problems.append("cannot join on %s: %s%s" % (target.name, exc.strerror or exc, hint))
            else:
                self.joined[target.name] = target.index
                added.append(target.name)
        self.join_problem = "; ".join(problems)
        return added, left

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.joined = {}

    def set_members(self, member_ips, server_port, fan_out):
        """Point the group at these members; True when they or the port changed.

        Members that stay keep their counters, whatever the port.
        """
        members = tuple(member_ips)
        if members == self.members and server_port == self.server_port and self.targets is not None:
            return False
        before, after = set(self.members), set(members)
        for ip in before - after:
            gone = self.member_dict(ip)
            self.retired[0] += gone["tx_packets"]
            self.retired[1] += gone["tx_bytes"]
            self.retired[2] += gone["send_errors"]
            self.joined_at.pop(ip, None)
            self.failures.pop(ip, None)
        if self.rx_packets:
            for ip in after - before:
                self.joined_at[ip] = (self.rx_packets, self.rx_bytes)
        changed = members != self.members or server_port != self.server_port
        self.members = members
        self.server_port = server_port
        self.targets = fan_out.member_set(members, server_port)
        return changed

    def take_members(self, other):
        """Carry the members and their counters of ``other`` (the group this one replaces)."""
        self.members, self.server_port, self.targets = other.members, other.server_port, other.targets
        self.joined_at, self.failures, self.retired = other.joined_at, other.failures, other.retired

    def member_failed(self, index, nbytes, message):
        """Count a datagram of ``nbytes`` that did not reach member ``index``; its address."""
        ip = self.members[index]
        failure = self.failures.get(ip)
        if failure is None:
            failure = self.failures[ip] = [0, 0, ""]
        failure[0] += 1
        failure[1] += nbytes
        failure[2] = message
        return ip

    def member_dict(self, ip):
        joined_packets, joined_bytes = self.joined_at.get(ip, (0, 0))
        errors, unsent_bytes, last_error = self.failures.get(ip, (0, 0, ""))
        return {"member_ip": ip, "tx_packets": self.rx_packets - joined_packets - errors,
                "tx_bytes": self.rx_bytes - joined_bytes - unsent_bytes,
                "send_errors": errors, "last_error": last_error}

    def totals(self):
        """(copies sent, bytes sent, send errors) to every member this group has had, in time proportional
        to the members that joined late or failed, not to all members: the metrics' per-group sums."""
        count = len(self.members)
        copies = count * self.rx_packets
        sent_bytes = count * self.rx_bytes
        for joined_packets, joined_bytes in self.joined_at.values():
            copies -= joined_packets
            sent_bytes -= joined_bytes
        errors = 0
        for failed, unsent, _message in self.failures.values():
            errors += failed
            copies -= failed
            sent_bytes -= unsent
        return copies + self.retired[0], sent_bytes + self.retired[1], errors + self.retired[2]

    def join_setting(self):
        """The join_interfaces in effect as JSON gives it: "all", a list, or None (one interface)."""
        return list(self.join) if isinstance(self.join, tuple) else self.join

    def as_dict(self):
        return {"group_ip": self.group_ip, "group_port": self.group_port, "server_port": self.server_port,
                "interface": self.interface, "interfaces": self.interfaces, "join_interfaces": self.join_setting(),
                "join_problem": self.join_problem, "mode": self.mode, "state": "error" if self.error else "joined",
                "error": self.error, "rx_packets": self.rx_packets, "rx_bytes": self.rx_bytes,
                "drops": dict(self.drops), "members": [self.member_dict(ip) for ip in self.members]}


class ServerDaemon(DynamicMembers, Daemon):
    side = "server"

    def __init__(self, directory=None):
        super(ServerDaemon, self).__init__(directory)
        self.groups = {}  # group_ip -> Group
        self.seq_base = frame.sequence_base(self.started)
        # group_ip -> last sequence number of a group this run removed: a group
        # added again continues from there, so clients with keys, whose replay
        # window still holds the old numbers, do not refuse it as a replay.
        self.retired_seq = {}
        self.buffer = bytearray(frame.HEADER_LEN + frame.MAX_PAYLOAD)
        self.view = memoryview(self.buffer)
        self.payload_view = self.view[frame.HEADER_LEN:]
        self._receive_into = [self.payload_view]
        # Capture mode reads whole IP packets here and copies the payload out.
        self.capture_buffer = bytearray(capture.CAPTURE_BUFFER)
        self.local_addresses = capture.read_local_addresses()
        self.sender = None
        self.fan_out = None     # server_fastpath fan-out through self.sender
        # The source_port setting the sender is bound to (0: an ephemeral port), and why it is not, if it is not.
        self.source_port = 0
        self.source_port_error = ""
        self.receiver = None    # server_fastpath.BurstReceiver where recvmmsg and sendmmsg can be called
        self.signer = None      # auth.Signer while auth_keys.json exists
        self.verifier = None    # auth.Verifier of subscriptions while auth_keys.json exists
        self.init_dynamic_members()
        self._src_cache = {}
        self._next_retry = 0.0
        # The last interface scan for the groups with a join setting, with the memberships a
        # socket may hold then (net.ipv4.igmp_max_memberships); None: not scanned yet.
        self._interfaces = None

    def load_config_text(self, text):
        return config.load_server_config(text, self.config_path)

    def start(self):
        # Before any group exists: their sequence numbers start from this run's second.
        self.seq_base = frame.sequence_base(replay.claim_run_second(
            os.path.join(self.directory, replay.RUN_FILE), self.started))
        super(ServerDaemon, self).start()

    def auth_status(self):
        legacy = bool(self.signer is not None and (self.cfg or {}).get("legacy_tags"))
        return dict(super(ServerDaemon, self).auth_status(), legacy_tags=legacy)

    def apply_auth(self, keys):
        self.signer = auth.Signer(keys) if keys is not None else None
        self.verifier = auth.Verifier(keys) if keys is not None else None
        self._bind_signers(self.cfg)

    def _bind_signers(self, cfg, groups=None, sources=None):
        """Give every group the signer of the address its members receive from (tags name their server).

        That address is the config's top-level ``address``, else the local
        address of the route to the group's members.  Members reached from
        different local addresses would drop part of the frames as
        ``auth_bad``: that is logged, with the fix.
        """
        if self.signer is None:
            for group in self.groups.values():
                group.signer = None
            return
        configured = (cfg or {}).get("address")
        legacy = bool((cfg or {}).get("legacy_tags"))
        # member -> local address of its route; the dynamic members' rebuilds pass their cache.
        sources = {} if sources is None else sources
        for group in self.groups.values() if groups is None else groups:
            address = configured
            if address is None:
                for member in group.members:
                    if member not in sources:
                        sources[member] = netinfo.route_source(member)
                found = sorted(set(sources[member] for member in group.members if sources[member]))
                address = found[0] if found else "0.0.0.0"
                if len(found) > 1:
                    self.drop_log.warning("identity_" + group.group_ip, 1, "group %s: members are reached from "
                                          "%s; tags name %s, so members that receive from another address drop "
                                          "the frames as auth_bad: set the address members receive from "
                                          "(multis_admin --set address=IP) or split the members by network",
                                          group.group_ip, ", ".join(found), address)
            group.signer = self.signer.bound(address, legacy=legacy)

    def _new_sender(self, port):
        """A copy socket bound to UDP ``port`` of every address (0: an ephemeral port). Raises OSError.

        No SO_REUSEADDR: while the relay holds the port, nobody else on the
        host can bind it, so a frame from the server's address and this port
        is the relay's (docs/threat-model.md).
        """
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.set_buffer(sender, socket.SO_SNDBUF, SEND_BUFFER)
            # Nothing is ever read from it: what others send to the port costs the least the kernel allows.
            sender.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 0)
            sender.setblocking(False)
            sender.bind(("0.0.0.0", port))
        except BaseException:
            sender.close()
            raise
        return sender

    def _open_sender(self, sender):
        self.sender = sender
        self.fan_out = server_fastpath.fan_out(sender, self.buffer)
        if isinstance(self.fan_out, server_fastpath.SendmmsgFanOut):
            self.receiver = server_fastpath.burst_receiver(BATCH, SLOT, frame.HEADER_LEN, frame.MAX_PAYLOAD)
        self.log.info("sending copies with %s from UDP port %d, receiving bursts with %s", self.fan_out.name,
                      sender.getsockname()[1], "recvmmsg" if self.receiver is not None else "recvmsg")

    def _bind_source_port(self, cfg, changes=None):
        """Send from the configured source_port; a change of port takes effect at once.

        A new socket is bound and put under the sender's descriptor
        (``dup2``), so the fan-out and every group's member set keep working
        unchanged.  A port that cannot be bound (held by another socket,
        below 1024 without the capability) keeps the copies flowing from the
        port they left from so far, says why in ``-P``, the log and the
        doctor, and is tried again with the groups' retries.
        """
        port = cfg.get("source_port", 0) if cfg else 0
        if self.sender is not None and port == self.source_port and not self.source_port_error:
            return
        try:
            sender = self._new_sender(port)
        except OSError as exc:
            if self.sender is None:
                # Copies must leave from somewhere: an ephemeral port, which members that check refuse.
                self._open_sender(self._new_sender(0))
            error = "cannot send from UDP port %d: %s; copies leave from port %d, which members that check " \
                    "the source port refuse" % (port, exc.strerror or exc, self.sender.getsockname()[1])
            if exc.errno == errno.EADDRINUSE:
                error += " (another socket holds the port: ss -uapn 'sport = :%d' names it; free it or choose " \
                         "another source_port)" % port
            elif exc.errno == errno.EACCES:
                error += " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
            if error != self.source_port_error:
                self.log.error("%s", error)
            self.source_port, self.source_port_error = port, error
            if changes is not None:
                changes["errors"].append({"source_port": port, "error": error})
            return
        if self.sender is None:
            self._open_sender(sender)
        else:
            try:
                os.dup2(sender.fileno(), self.sender.fileno())
            finally:
                sender.close()
            self.log.info("copies now leave from UDP port %d", self.sender.getsockname()[1])
        if self.source_port_error:
            self.log.info("source port %d bound", port)
        self.source_port, self.source_port_error = port, ""

    def apply_config(self, cfg):
        changes = {"added": [], "removed": [], "rejoined": [], "updated": [], "errors": []}
        self._bind_source_port(cfg, changes)
        self.configure_dynamic_members(cfg[config.SERVER_TOP_KEY])
        joined = []
        wanted = {}
        for entry in cfg[config.SERVER_TOP_KEY]:
            wanted[entry["group_ip"]] = entry
        for group_ip in list(self.groups):
            if group_ip not in wanted:
                self.retired_seq[group_ip] = self.groups[group_ip].seq
                self._remove_group(group_ip)
                changes["removed"].append(group_ip)
        route_text, routes = self._read_routes()
        self._interfaces = None
        for group_ip, entry in wanted.items():
            mode = capture.group_mode(entry)
            configured, join = join_setting(entry, cfg)
            if mode != capture.MODE_SOCKET or join == config.JOIN_ROUTE:
                # Capture mode reads one interface: the pinned one or the route's.
                join = None
            error = ""
            if join is not None:
                interface = ""
                join = join if join == config.JOIN_ALL else tuple(join)
            else:
                try:
                    interface = netinfo.interface_for_group(group_ip, configured, route_text)
                except netinfo.InterfaceError as exc:
                    interface = configured or ""
                    error = str(exc)
            current = self.groups.get(group_ip)
            if current is not None and current.key == (group_ip, entry["group_port"], interface, mode, join) \
                    and not current.error:
                if current.set_members(self._fan_out_members(group_ip), entry["server_port"], self.fan_out):
                    changes["updated"].append(group_ip)
                if join is not None:
                    # A reload looks again (a raised igmp_max_memberships, say).
                    current.sync_joins(*self._join_targets(join, routes, group_ip))
                continue
            group = Group(group_ip, entry["group_port"], interface,
                          max(self.seq_base, self.retired_seq.pop(group_ip, 0)), mode, join)
            group.set_buffer = self.set_buffer
            if current is not None:
                # Counters and sequence survive a rejoin, so -P stays meaningful.
                group.rx_packets, group.rx_bytes, group.seq = current.rx_packets, current.rx_bytes, current.seq
                group.drops = current.drops
                group.take_members(current)
                self._remove_group(group_ip)
                changes["rejoined"].append(group_ip)
            else:
                changes["added"].append(group_ip)
            group.set_members(self._fan_out_members(group_ip), entry["server_port"], self.fan_out)
            self.groups[group_ip] = group
            if error:
                group.error = error
            else:
                try:
                    group.open(*(self._join_targets(join, routes, group_ip) if join is not None else ()))
                except (OSError, netinfo.InterfaceError) as exc:
                    group.error = "cannot join %s:%d on %s: %s" % (
                        group_ip, group.group_port, interface or "(join_interfaces %s)" % join_text(join),
                        getattr(exc, "strerror", None) or exc)
            if group.error:
                if current is None or group.error != current.error:
                    self.log.error("group %s: %s", group_ip, group.error)
                changes["errors"].append({"group_ip": group_ip, "error": group.error})
            else:
                self.watch(group.sock, self._make_reader(group))
                joined.append(group)
        self._bind_signers(cfg)
        self._log_joined(joined)
        self._sync_subscription_sockets(changes)
        return changes

    def _scan_interfaces(self):
        """(interfaces, igmp_max_memberships) now; the last scan's when the interfaces cannot be listed."""
        try:
            interfaces = netinfo.scan_interfaces()
        except OSError as exc:
            self.drop_log.drop("interface", "cannot list the interfaces, keeping the joins: %s"
                               % (exc.strerror or exc))
            return self._interfaces or ((), netinfo.DEFAULT_IGMP_MAX_MEMBERSHIPS)
        return interfaces, netinfo.igmp_max_memberships()

    def _join_targets(self, join, routes, group_ip):
        """(interfaces, problem) where a group with join setting ``join`` is joined, from one scan per
        apply_config or tick (``self._interfaces``, None: not scanned yet)."""
        if self._interfaces is None:
            self._interfaces = self._scan_interfaces()
        interfaces, limit = self._interfaces
        return netinfo.join_targets(join, interfaces, netinfo.route_interface(routes, group_ip), limit)

    @staticmethod
    def _read_routes():
        """(text, parsed) of the kernel's routing table; empty when it cannot be read."""
        try:
            route_text = netinfo.read_text(netinfo.ROUTE_FILE)
        except OSError:
            route_text = ""
        return route_text, netinfo.parse_routes(route_text)

    def _rescan_joins(self):
        """Join and leave as interfaces come and go (the groups with a join setting; once a second).

        A group that could be joined nowhere is retried at once when the
        interfaces change, not at the next 30-second retry.
        """
        joining = [group for group in self.groups.values() if group.join is not None]
        if not joining:
            return
        scan = self._scan_interfaces()
        if scan == self._interfaces:
            return
        self._interfaces = scan
        if any(group.error for group in joining):
            self._next_retry = 0.0
        joining = [group for group in joining if group.sock is not None]
        routes = self._read_routes()[1]
        for group in joining:
            added, left = group.sync_joins(*self._join_targets(group.join, routes, group.group_ip))
            if added or left:
                change = (["joined on " + ", ".join(added)] if added else []) + \
                    (["left " + ", ".join(left)] if left else [])
                self.log.info("group %s: %s; now picked up on %s", group.group_ip, ", ".join(change),
                              ", ".join(group.joined) or "no interface")
            if group.join_problem:
                self.drop_log.warning("join_" + group.group_ip, 1, "group %s: %s", group.group_ip,
                                      group.join_problem)

    def _log_joined(self, joined):
        """One line per joined group, or one line in all when there are many.

        A line per group costs about 0.15 ms, a sixth of the start of a
        1024-group config, and floods the journal; ``multis_admin -S`` lists
        the groups.
        """
        if len(joined) <= JOIN_LOG_LINES:
            for group in joined:
                self.log.info("group %s:%d joined on %s (%s), %d members, server port %d", group.group_ip,
                              group.group_port, ", ".join(group.interfaces), group.mode, len(group.members),
                              group.server_port)
                if group.join_problem:
                    self.log.warning("group %s: %s", group.group_ip, group.join_problem)
            return
        where = collections.Counter((",".join(group.interfaces), group.mode) for group in joined)
        self.log.info("%d groups joined: %s; multis_admin -S lists them", len(joined),
                      ", ".join("%d on %s (%s)" % (count, interface, mode)
                                for (interface, mode), count in sorted(where.items())))

    def tick(self):
        """Retry failed groups now and then: an interface or route may appear after boot."""
        # Capture mode's loop guard needs the current addresses (a VRRP
        # virtual address comes and goes); only capture groups pay for the read.
        if any(group.mode != capture.MODE_SOCKET for group in self.groups.values()):
            self.local_addresses = capture.read_local_addresses()
        self._rescan_joins()
        now = time.monotonic()
        if now < self._next_retry:
            return
        self._next_retry = now + RETRY_INTERVAL
        if self.cfg is not None and self.source_port_error:
            self._bind_source_port(self.cfg)
        if self.cfg is not None and any(g.error for g in self.groups.values()):
            changes = self.apply_config(self.cfg)
            recovered = [g for g in changes["rejoined"] if not self.groups[g].error]
            if recovered:
                self.log.info("groups joined after an earlier failure: %s", ", ".join(recovered))

    def _remove_group(self, group_ip):
        group = self.groups.pop(group_ip)
        if group.sock is not None:
            self.unwatch(group.sock)
        group.close()

    def close_data_sockets(self):
        self.close_subscription_sockets()
        for group_ip in list(self.groups):
            self._remove_group(group_ip)
        if self.receiver is not None:
            self.receiver.close()
            self.receiver = None
        if self.sender is not None:
            self.fan_out.close()
            self.fan_out = None
            self.sender.close()
            self.sender = None

    def status_line(self):
        joined = sum(1 for g in self.groups.values() if not g.error)
        return "%d groups joined, %d with errors" % (joined, len(self.groups) - joined)

    def watch_data_sockets(self):
        for group in self.groups.values():
            if group.sock is not None:
                self.rewatch(group.sock, self._make_reader(group))

    def _make_reader(self, group):
        # functools.partial: called from C, no Python frame between the loop and the relay.
        if self.auth_failure is not None:
            return functools.partial(self._refuse, group)
        if group.mode != capture.MODE_SOCKET:
            return functools.partial(capture.relay_captured, self, group)
        if self.receiver is not None:
            return functools.partial(self._relay_burst, group)
        return functools.partial(self._relay, group)

    def _relay(self, group, sock, limit=BATCH):
        """Receive up to ``limit`` datagrams and fan each out to every member; True if more may be queued.

        An untagged frame is packed and sent here, before the counters are
        updated: at light load every step between the wake-up and the send
        is latency.  Tagged frames go through ``send_frame``.
        """
        receive_into = self._receive_into
        src_cache = self._src_cache
        max_payload = frame.MAX_PAYLOAD
        # A reload (the only thing that changes these) runs between callbacks, never during one.
        signed = self.signer is not None
        buffer = self.buffer
        send = self.fan_out.send
        for _attempt in range(limit):
            try:
                nbytes, ancdata, msg_flags, source = sock.recvmsg_into(receive_into, ANC_SIZE)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError as exc:
                self.drop_receive_error(group, exc)
                return False
            ttl = -1
            tos = 0
            for level, kind, data in ancdata:
                if level == socket.IPPROTO_IP:
                    if kind == IP_TTL:
                        ttl = _unpack_int(data)[0]
                    elif kind == IP_TOS:
                        tos = data[0]
            if ttl == 0:
                # Only a host-local sender can produce TTL 0: a relay client
                # re-delivering on this host.  Forwarding it would loop.
                group.drops["loop"] += 1
                continue
            if msg_flags & MSG_TRUNC or nbytes > max_payload:
                self._drop_too_large(group, source[0], source[1])
                continue
            src_addr = src_cache.get(source[0])
            if src_addr is None:
                if len(src_cache) > 4096:
                    src_cache.clear()
                src_addr = src_cache[source[0]] = frame.ip_to_int(source[0])
            if signed:
                self.send_frame(group, nbytes, src_addr, source[1], tos, group.group_port, frame.PROTO_UDP)
                continue
            seq = group.seq + 1
            _pack_header(buffer, 0, frame.MAGIC, frame.VERSION, 0, frame.HEADER_LEN, frame.PROTO_UDP, tos, 0,
                         group.group_addr, group.group_port, src_addr, source[1], seq)
            failed = send(group.targets, frame.HEADER_LEN + nbytes)
            group.seq = seq
            group.rx_packets += 1
            group.rx_bytes += nbytes
            if failed:
                self._count_failures(group, failed, nbytes)
        return True

    def _relay_burst(self, group, sock):
        """The first datagram alone, then up to BATCH queued ones with one call in and one out."""
        if not self._relay(group, sock, 1):
            return
        receiver = self.receiver
        try:
            count = receiver.receive(sock)
        except OSError as exc:
            self.drop_receive_error(group, exc)
            return
        if not count:
            return
        lengths, flags, ttls, toss = receiver.burst(count)
        signer = group.signer
        if signer is None:
            tag_flags, key_id = 0, 0
        else:
            tag_flags, key_id = frame.FLAG_TAG, signer.key_id
        whole = receiver.whole
        slot_size = receiver.slot_size
        slot_addresses = receiver.addresses
        source = receiver.source
        group_addr = group.group_addr
        group_port = group.group_port
        addresses = []
        frame_lengths = []
        sizes = []
        seq = group.seq
        for index in range(count):
            nbytes = lengths[index]
            if ttls[index] == 0:
                # A relay client's re-delivery on this host: see _relay.
                group.drops["loop"] += 1
                continue
            src_port, src_addr = source(index)
            if flags[index] & MSG_TRUNC or nbytes > frame.MAX_PAYLOAD:
                self._drop_too_large(group, frame.int_to_ip(src_addr), src_port)
                continue
            if signer is not None and nbytes > frame.MAX_PAYLOAD - frame.TAG_LEN:
                self._drop_no_tag_room(group, nbytes)
                continue
            seq += 1
            _pack_header(whole, index * slot_size, frame.MAGIC, frame.VERSION, tag_flags, frame.HEADER_LEN,
                         frame.PROTO_UDP, toss[index], key_id, group_addr, group_port, src_addr, src_port, seq)
            length = frame.HEADER_LEN + nbytes
            if signer is not None:
                length = signer.sign_into(receiver.views[index], length)
            addresses.append(slot_addresses[index])
            frame_lengths.append(length)
            sizes.append(nbytes)
        if not sizes:
            return
        group.seq = seq
        group.rx_packets += len(sizes)
        group.rx_bytes += sum(sizes)
        for row, index, code in self.fan_out.send_rows(group.targets, addresses, frame_lengths):
            self._member_failed(group, index, sizes[row], code)

    def _refuse(self, group, sock):
        """Read and count what ``group`` receives while the keys it requires are unavailable; send nothing."""
        refused = 0
        for _attempt in range(BATCH):
            try:
                sock.recv_into(self.capture_buffer)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.drop_receive_error(group, exc)
                break
            refused += 1
        group.drops["no_keys"] += refused
        if refused:
            self.drop_log.error("no_keys", 1, "group %s: %d datagrams not relayed: authentication is required but "
                                "the keys cannot be loaded (%s)", group.group_ip, refused, self.auth_failure)

    def drop_receive_error(self, group, exc):
        """Count and log a failed receive on ``group``'s socket (also capture mode's)."""
        group.drops["receive_error"] += 1
        self.drop_log.drop("receive_error", "group %s: %s" % (group.group_ip, exc))

    def _drop_too_large(self, group, src_ip, src_port):
        """Count a datagram too big for a frame (or truncated by the receive)."""
        group.drops["oversize"] += 1
        self.drop_log.drop("oversize", "group %s: datagram from %s:%d larger than %d bytes"
                           % (group.group_ip, src_ip, src_port, frame.MAX_PAYLOAD))

    def _drop_no_tag_room(self, group, nbytes):
        """Count a datagram of ``nbytes`` that fits a frame but not with the auth tag."""
        group.drops["oversize"] += 1
        self.drop_log.drop("oversize", "group %s: datagram of %d bytes leaves no room for the %d-byte tag"
                           % (group.group_ip, nbytes, frame.TAG_LEN))

    def send_frame(self, group, nbytes, src_addr, src_port, tos, group_port, proto):
        """Count the datagram whose payload is in payload_view[:nbytes] and send one frame to every member."""
        signer = group.signer
        if signer is not None and nbytes > frame.MAX_PAYLOAD - frame.TAG_LEN:
            self._drop_no_tag_room(group, nbytes)
            return
        group.rx_packets += 1
        group.rx_bytes += nbytes
        group.seq += 1
        if signer is None:
            frame.pack_header_into(self.buffer, group.group_addr, group_port, src_addr, src_port, group.seq, tos,
                                   proto=proto)
            length = frame.HEADER_LEN + nbytes
        else:
            frame.pack_header_into(self.buffer, group.group_addr, group_port, src_addr, src_port, group.seq, tos,
                                   flags=frame.FLAG_TAG, proto=proto, key_id=signer.key_id)
            length = signer.sign_into(self.view, frame.HEADER_LEN + nbytes)
        failed = self.fan_out.send(group.targets, length)
        if failed:
            self._count_failures(group, failed, nbytes)

    def _count_failures(self, group, failed, nbytes):
        """Count and log the (member index, errno) pairs a fan-out of ``nbytes`` reported."""
        for index, code in failed:
            self._member_failed(group, index, nbytes, code)

    def _member_failed(self, group, index, nbytes, code):
        """Count and log a datagram of ``nbytes`` that member ``index`` of ``group`` did not get (errno ``code``)."""
        message = mmsg.error_message(code)
        ip = group.member_failed(index, nbytes, message)
        self.drop_log.drop("send_error", "member %s: %s" % (ip, message))

    def stats(self):
        return {"side": "server", "started": int(self.started),
                "auth": {"send_key_id": self.signer.key_id} if self.signer is not None else None,
                "sender": self.sender_status(), "subscriptions": self.subscription_status(),
                "groups": [self._group_stats(self.groups[g]) for g in sorted(self.groups, key=frame.ip_to_int)]}

    def sender_status(self):
        """Where the copies leave from: the configured source_port (None: any), the bound port, and an error."""
        return {"source_port": self.source_port or None,
                "bound_port": self.sender.getsockname()[1] if self.sender is not None else None,
                "error": self.source_port_error}

    def show(self):
        return {"side": "server", "config": self.cfg, "sender": self.sender_status(),
                "groups": [{"group_ip": g.group_ip, "interface": g.interface, "interfaces": g.interfaces,
                            "join_interfaces": g.join_setting(), "join_problem": g.join_problem,
                            "state": "error" if g.error else "joined", "error": g.error,
                            "dynamic_members": self._dynamic_members(g.group_ip)}
                           for g in self.groups.values()]}
