"""The client daemon (``multic_admin -R``): frames in, local multicast out.

A frame is accepted only when (source address, local port, group, group port)
matches a configured entry.  The payload is re-sent to group_ip:group_port
with TTL 0 (it never leaves the host, and the server's loop guard recognises
it) and loopback on, on the interface where a local receiver joined the group.
Frames are received and re-delivered in batches (``client_fastpath.py``, on
the bindings of ``mmsg.py``).
"""

import errno
import functools
import os
import socket
import struct
import time

from . import auth, client_fastpath, relay_config as config, frame, mmsg, netinfo, rawsend, replay
from . import relay_contract as contract, subscription
from .daemon import Daemon, set_buffer
from .replay import ReplayWindow
from .sequence import SequenceTracker

# Room for a burst of ~10,000 datagrams while the relay is busy with another
# group; only what is queued is charged, and net.ipv4.udp_mem caps the total.
RECV_BUFFER = 32 << 20
IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)
# The frame module's precompiled header layout: the receive loop unpacks it
# itself and calls frame.parse_from only for frames that are not plain v1.
_HEADER = frame._HEADER
# Lines per DROP_LOG_INTERVAL saying where a group is delivered (every entry's
# line at start for a small config); multic_admin -P shows the current ones.
DELIVERY_LOG_LINES = 16
# The replay windows' highest numbers reach the disk this often (and at stop):
# after a crash, frames of the last few seconds could be accepted once more.
REPLAY_SAVE_INTERVAL = 5.0
# Entries removed from the config whose windows are remembered (re-added, they resume).
MAX_REMEMBERED_WINDOWS = 4096
# How often /proc/net/igmp is read while dynamic entries exist: a local join is
# seen within this, and a subscription follows at once (docs/dynamic-membership.md).
IGMP_POLL_INTERVAL = 0.25
# no_keys: keys are required (auth_required) but cannot be loaded, so nothing is delivered.
# source_port: from a server's address, but not from the source port its entry names.
CLIENT_DROP_REASONS = ("malformed", "bad_version", "unknown_server", "unknown_group", "source_port", "deliver_error",
                       "receive_error") + auth.AUTH_DROP_REASONS + ("replay", "no_keys")


class Entry:
    __slots__ = ("server_ip", "server_port", "group_ip", "group_port", "destination", "sockaddr", "targets",
                 "interfaces", "raw", "rx_packets", "rx_bytes", "delivered_packets", "delivered_bytes", "tracker",
                 "replay", "server_identity", "source_port", "port_word", "subscriber")

    def __init__(self, server_ip, server_port, group_ip, group_port):
        self.server_ip = server_ip
        self.server_port = server_port
        self.group_ip = group_ip
        self.group_port = group_port
        self.destination = (group_ip, group_port)
        self.sockaddr = client_fastpath.sockaddr_in(group_ip, group_port)
        self.targets = ()
        # The UDP port the server's copies must come from (None: any), and the same as the receivers
        # hold it (client_fastpath.port_word; 0: any).
        self.source_port = None
        self.port_word = 0
        # True: re-deliver through rawsend with the original source (VRRP, preserve_source).
        self.raw = False
        self.interfaces = ()
        self.rx_packets = 0
        self.rx_bytes = 0
        self.delivered_packets = 0
        self.delivered_bytes = 0
        self.tracker = SequenceTracker()
        # Used only while keys are configured (see replay.py).
        self.replay = ReplayWindow()
        # What a tag from this entry's server covers before the frame (auth.server_identity).
        self.server_identity = auth.server_identity(server_ip)
        # subscription.Subscriber of a dynamic entry, else None.
        self.subscriber = None

    @property
    def key(self):
        return (self.server_ip, self.server_port, frame.ip_to_int(self.group_ip), self.group_port)

    def set_source_port(self, port):
        self.source_port = port
        self.port_word = client_fastpath.port_word(port) if port else 0

    @property
    def state_key(self):
        """How this entry's window is named in the saved replay state."""
        return replay.state_key(self.server_ip, self.server_port, self.group_ip, self.group_port)

    @property
    def route(self):
        """The key a received frame finds this entry by (see ClientDaemon._deliver)."""
        return (client_fastpath.address_key(self.server_ip), self.server_port, frame.ip_to_int(self.group_ip),
                self.group_port)

    def as_dict(self):
        tracker = self.tracker
        shown = {"server_ip": self.server_ip, "server_port": self.server_port, "group_ip": self.group_ip,
                 "group_port": self.group_port, "source_port": self.source_port, "interfaces": list(self.interfaces),
                 "preserve_source": self.raw,
                 "rx_packets": self.rx_packets, "rx_bytes": self.rx_bytes,
                 "delivered_packets": self.delivered_packets, "delivered_bytes": self.delivered_bytes,
                 "lost": tracker.lost, "duplicates": tracker.duplicates, "reordered": tracker.reordered,
                 "last_seq": tracker.highest}
        if self.subscriber is not None:
            shown["dynamic"] = self.subscriber.as_dict(time.monotonic())
        return shown


def open_delivery_socket(interface):
    """A sender whose multicast stays on this host and goes out of ``interface``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 0)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        # struct ip_mreqn with only the index: the interface may have no address.
        mreqn = socket.inet_aton("0.0.0.0") + socket.inet_aton("0.0.0.0") + struct.pack(
            "=i", netinfo.interface_index(interface))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class ClientDaemon(Daemon):
    side = "client"

    def __init__(self, directory=None):
        super(ClientDaemon, self).__init__(directory)
        self.entries = {}       # key -> Entry
        self.routes = {}        # Entry.route -> Entry
        self.servers = set()    # client_fastpath.address_key of the configured server addresses
        self.listeners = {}     # (local address, server port) -> socket
        self._local_addresses = set()
        self.delivery = {}      # (interface, raw) -> UDP socket or rawsend.RawDelivery
        self.drops = dict.fromkeys(CLIENT_DROP_REASONS, 0)
        self.listen_errors = {}
        self.receiver = None    # client_fastpath receiver and sender, opened with the first config
        self.sender = None
        self._igmp_text = None
        self._joined = {}       # what /proc/net/igmp said last: group -> interfaces with a local receiver
        self.verifier = None    # auth.Verifier while auth_keys.json exists
        self.signer = None      # auth.Signer of this host's subscriptions while auth_keys.json exists
        self.unverified = 0     # tagged frames delivered unchecked: this client has no keys
        # replay.state_key -> (highest accepted sequence number, bound) of entries
        # not configured now: read with the first config, and windows of removed entries.
        self._resume = None
        self._saved_state = None
        self._next_state_save = 0.0
        self.state_path = os.path.join(self.directory, replay.CLIENT_STATE_FILE)

    def load_replay_state(self):
        """The windows' highest numbers saved by the previous run; {} (and a warning) when unusable."""
        try:
            with open(self.state_path, "rb") as handle:
                data = handle.read(replay.MAX_STATE_BYTES + 1)
            return replay.parse_state(data)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            self.log.warning("replay state %s ignored (%s): frames of earlier server runs are refused again "
                             "only once each entry has accepted a frame; the file is rewritten",
                             self.state_path, getattr(exc, "strerror", None) or exc)
            return {}

    def save_replay_state(self):
        """Write the windows' highest numbers and bound flags when they changed (only authenticated entries have any)."""
        state = dict(self._resume or {})
        for entry in self.entries.values():
            if entry.replay.highest is not None:
                state[entry.state_key] = (entry.replay.highest, entry.replay.bound)
        if state == self._saved_state or (not state and self._saved_state is None):
            return
        try:
            contract.write_file_atomically(self.state_path, replay.dump_state(state), mode=0o600)
        except OSError as exc:
            self.drop_log.drop("replay_state", "cannot save the replay state %s: %s" % (
                self.state_path, exc.strerror or exc))
            return
        self._saved_state = state

    def load_config_text(self, text):
        return config.load_client_config(text, self.config_path)

    def apply_auth(self, keys):
        self.verifier = auth.Verifier(keys, self.verifier, legacy_allowed=not self.auth_required) \
            if keys is not None else None
        self.signer = auth.Signer(keys) if keys is not None else None

    def apply_config(self, cfg):
        if self.receiver is None:
            self.receiver, self.sender = client_fastpath.batch_io()
            self.log.info("receiving frames with %s, re-delivering with %s", self.receiver.name, self.sender.name)
        if self._resume is None:
            # Before the first config's entries exist: they resume their windows.
            self._resume = self.load_replay_state()
        changes = {"added": [], "removed": [], "updated": [], "ports_opened": [], "ports_closed": [], "errors": []}
        wanted = {}
        for item in cfg[config.CLIENT_TOP_KEY]:
            entry = Entry(item["server_ip"], item["server_port"], item["group_ip"], item["group_port"])
            entry.raw = config.client_entry_keeps_source(cfg, item)
            entry.set_source_port(item.get("source_port", cfg.get("source_port")))
            if item.get("dynamic"):
                entry.subscriber = subscription.Subscriber()
            wanted[entry.key] = entry
        for key in list(self.entries):
            if key not in wanted:
                gone = self.entries.pop(key)
                self._unsubscribe(gone)
                changes["removed"].append(self._describe(gone))
                if gone.replay.highest is not None and len(self._resume) < MAX_REMEMBERED_WINDOWS:
                    # Added again, it must not accept what it accepted before.
                    self._resume[gone.state_key] = (gone.replay.highest, gone.replay.bound)
        for key, entry in wanted.items():
            if key not in self.entries:
                saved = self._resume.pop(entry.state_key, None)
                if saved is not None:
                    entry.replay.resume(saved[0])
                    entry.replay.bound = saved[1]
                self.entries[key] = entry
                changes["added"].append(self._describe(entry))
            else:
                kept = self.entries[key]
                # Kept with its sockets and counters; a changed option is still a change to report.
                if (kept.raw, kept.source_port) != (entry.raw, entry.source_port):
                    changes["updated"].append(self._describe(kept))
                kept.raw = entry.raw
                kept.set_source_port(entry.source_port)
                if (entry.subscriber is None) != (kept.subscriber is None):
                    self._unsubscribe(kept)
                    kept.subscriber = entry.subscriber
        self.routes = dict((e.route, e) for e in self.entries.values())
        self.servers = set(client_fastpath.address_key(e.server_ip) for e in self.entries.values())
        addresses = self._scan_local_addresses()
        if addresses is not None:
            self._local_addresses = addresses
        self._sync_listeners(changes)
        self._igmp_text = None
        self.refresh_delivery(cfg)
        if any(e.subscriber is not None for e in self.entries.values()):
            self.next_timer = min(self.next_timer, time.monotonic())
        return changes

    # -- dynamic entries (docs/dynamic-membership.md) ----------------------------
    def timer(self):
        """Subscribe while a local application has joined the group, refresh, unsubscribe after the last."""
        dynamic = [e for e in self.entries.values() if e.subscriber is not None]
        if not dynamic:
            self.next_timer = float("inf")
            return
        now = time.monotonic()
        self.next_timer = now + IGMP_POLL_INTERVAL
        self.refresh_delivery(self.cfg)
        for entry in dynamic:
            kind = entry.subscriber.tick(entry.group_ip in self._joined, now)
            if kind is not None:
                self._send_subscription(entry, kind)

    def _unsubscribe(self, entry):
        """Leave at once for an entry that goes away (removed, made static, the daemon stopping)."""
        if entry.subscriber is not None and entry.subscriber.tick(False, time.monotonic()) is not None:
            self._send_subscription(entry, subscription.LEAVE)

    def _send_subscription(self, entry, kind):
        """A JOIN or LEAVE from this host's relay port to the server's, tagged when keys are loaded."""
        sock = self.listeners.get(("0.0.0.0", entry.server_port))
        if sock is None:
            self.drop_log.drop("subscription", "group %s:%d: cannot subscribe, port %d is not open"
                               % (entry.group_ip, entry.group_port, entry.server_port))
            return
        signer = None
        if self.signer is not None:
            signer = self.signer.bound(netinfo.route_source(entry.server_ip) or "0.0.0.0")
        message = subscription.encode(kind, frame.ip_to_int(entry.group_ip), entry.group_port,
                                      entry.subscriber.cookie, signer=signer)
        try:
            sock.sendto(message, (entry.server_ip, entry.server_port))
        except OSError as exc:
            self.drop_log.drop("subscription", "group %s:%d: cannot send a %s to %s:%d: %s" % (
                entry.group_ip, entry.group_port, subscription.KIND_NAMES[kind], entry.server_ip, entry.server_port,
                exc.strerror or exc))

    def _subscription_reply(self, view, nbytes, source, port):
        """A server's challenge, acknowledgement or refusal for a dynamic entry; anything else is counted."""
        try:
            message = subscription.parse(view, nbytes)
        except subscription.SubscriptionError as exc:
            self.drops[exc.reason] += 1
            self.drop_log.drop(exc.reason, "from %s:%d on port %d: %s" % (source + (port, exc)))
            return
        entry = self.routes.get((client_fastpath.address_key(source[0]), port, message.group_addr,
                                 message.group_port))
        if entry is None or entry.subscriber is None or source[1] != entry.server_port:
            reason = "unknown_group" if client_fastpath.address_key(source[0]) in self.servers else "unknown_server"
            self.drops[reason] += 1
            self.drop_log.drop(reason, "subscription %s from %s:%d on port %d matches no dynamic entry" % (
                subscription.KIND_NAMES[message.kind], source[0], source[1], port))
            return
        if self.verifier is not None:
            reason = self.verifier.check(view, message.flags, message.key_id, subscription.HEADER_LEN,
                                         entry.server_identity)
            if reason is not None:
                self.drops[reason] += 1
                self.drop_log.drop(reason, "subscription %s from %s:%d, key id %d" % (
                    subscription.KIND_NAMES[message.kind], source[0], source[1], message.key_id))
                return
        if message.kind == subscription.REFUSED:
            self.drop_log.warning("subscription_refused", 4, "server %s refused the subscription to %s:%d: %s",
                                  entry.server_ip, entry.group_ip, entry.group_port,
                                  subscription.REFUSAL_CODES.get(message.refusal, message.refusal))
        if entry.subscriber.on_message(message, time.monotonic()):
            self._send_subscription(entry, subscription.JOIN)

    @staticmethod
    def _describe(entry):
        return "%s:%d -> %s:%d" % (entry.server_ip, entry.server_port, entry.group_ip, entry.group_port)

    def _sync_listeners(self, changes):
        """One socket per server port on 0.0.0.0, plus one per local address.

        The address-bound sockets are what make a server port equal to the
        group port work (the seed's own example, 65535 for both): an
        application bound to 0.0.0.0 on that port with SO_REUSEADDR shares it
        with us, and the kernel gives a unicast datagram to the socket bound
        to its exact destination address, whichever was bound first.  The
        wildcard socket catches frames sent to addresses we did not bind
        (secondary ones) and, with IP_MULTICAST_ALL off, never sees the
        group's multicast.
        """
        ports = set(e.server_port for e in self.entries.values())
        wanted = set((address, port) for port in ports
                     for address in ["0.0.0.0"] + sorted(self._local_addresses))
        ports_before = set(port for _address, port in self.listeners)
        for key in list(self.listeners):
            if key not in wanted:
                sock = self.listeners.pop(key)
                self.unwatch(sock)
                sock.close()
        self.listen_errors = {}
        group_ports = set(e.group_port for e in self.entries.values())
        for address, port in sorted(wanted - set(self.listeners)):
            try:
                sock = self._open_listener(address, port, port in group_ports)
            except OSError as exc:
                message = "cannot listen on UDP %s:%d: %s" % (address, port, exc.strerror or exc)
                self.listen_errors[(address, port)] = message
                self.log.error("%s", message)
                changes["errors"].append(message)
                continue
            self.listeners[(address, port)] = sock
            self.watch(sock, self._make_reader(port))
        ports_after = set(port for _address, port in self.listeners)
        changes["ports_opened"].extend(sorted(ports_after - ports_before))
        changes["ports_closed"].extend(sorted(ports_before - ports_after))

    @staticmethod
    def _open_listener(address, port, shared_with_applications):
        """A relay-port socket that only this daemon's user can share.

        SO_REUSEPORT lets our wildcard and per-address sockets coexist, and the
        kernel refuses it to a socket of another user, while without
        SO_REUSEADDR nobody can bind beside us with it: a local user cannot
        steal the stream.  Only a relay port that is also a group port must
        admit the applications' SO_REUSEADDR sockets (docs/threat-model.md).
        """
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            if shared_with_applications:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            else:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
            set_buffer(sock, socket.SO_RCVBUF, RECV_BUFFER)
            sock.bind((address, port))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def tick(self):
        if self.verifier is not None and time.monotonic() >= self._next_state_save:
            self._next_state_save = time.monotonic() + REPLAY_SAVE_INTERVAL
            self.save_replay_state()
        self.refresh_delivery(self.cfg)
        addresses = self._scan_local_addresses()
        if addresses is not None and addresses != self._local_addresses:
            self._local_addresses = addresses
            changes = {"ports_opened": [], "ports_closed": [], "errors": []}
            self._sync_listeners(changes)
            self.log.info("local addresses now %s; listening on %d sockets", ", ".join(sorted(addresses)),
                          len(self.listeners))

    def _scan_local_addresses(self):
        """This host's addresses now, or None (logged) when the scan fails.

        Out of descriptors (EMFILE) or an interface that vanished mid-scan
        must not end the daemon or fail a reload: the caller keeps serving on
        the addresses of the last scan, and the next tick scans again.
        """
        try:
            return netinfo.local_addresses()
        except OSError as exc:
            self.drop_log.drop("interface", "cannot list the local addresses, keeping %s: %s"
                               % (", ".join(sorted(self._local_addresses)) or "none", exc.strerror or exc))
            return None

    def refresh_delivery(self, cfg):
        """Point every entry at the interfaces where local receivers joined its group."""
        try:
            igmp_text = netinfo.read_text(netinfo.IGMP_FILE)
        except OSError:
            igmp_text = ""
        if igmp_text == self._igmp_text:
            return
        self._igmp_text = igmp_text
        joined = self._joined = netinfo.parse_igmp(igmp_text)
        configured = cfg.get("interface") if cfg else None
        needed = {}
        for entry in self.entries.values():
            if configured:
                interfaces = [configured]
            elif joined.get(entry.group_ip):
                interfaces = joined[entry.group_ip]
            else:
                try:
                    interfaces = [netinfo.interface_for_group(entry.group_ip)]
                except (netinfo.InterfaceError, OSError):
                    interfaces = ["lo"]
            targets = []
            for interface in interfaces:
                pool_key = (interface, entry.raw)
                sock = self.delivery.get(pool_key) or needed.get(pool_key)
                if sock is None:
                    try:
                        sock = rawsend.RawDelivery(interface) if entry.raw else open_delivery_socket(interface)
                    except (OSError, netinfo.InterfaceError) as exc:
                        self.drop_log.drop("interface", "cannot deliver on %s: %s" % (interface, exc))
                        continue
                needed[pool_key] = sock
                targets.append(sock)
            if tuple(interfaces) != entry.interfaces:
                # Any local user moves this by joining or leaving the group: rate-limited.
                self.drop_log.event("delivery", DELIVERY_LOG_LINES, "group %s:%d from %s delivered on %s",
                                    entry.group_ip, entry.group_port, entry.server_ip, ", ".join(interfaces))
            entry.interfaces = tuple(interfaces)
            entry.targets = tuple(targets)
        for pool_key, sock in list(self.delivery.items()):
            if pool_key not in needed:
                sock.close()
        self.delivery = needed

    def close_data_sockets(self):
        for entry in self.entries.values():
            self._unsubscribe(entry)
        if self.verifier is not None:
            self.save_replay_state()
        for sock in self.listeners.values():
            self.unwatch(sock)
            sock.close()
        self.listeners = {}
        for sock in self.delivery.values():
            sock.close()
        self.delivery = {}
        if self.receiver is not None:
            self.sender.close()
            self.receiver.close()
            self.receiver = self.sender = None

    def status_line(self):
        return "%d entries, %d ports" % (len(self.entries), len(set(p for _a, p in self.listeners)))

    def watch_data_sockets(self):
        for (_address, port), sock in self.listeners.items():
            self.rewatch(sock, self._make_reader(port))

    def auth_status(self):
        return dict(super(ClientDaemon, self).auth_status(), unverified=self.unverified,
                    accepted_unbound=self.verifier.unbound if self.verifier is not None else 0,
                    refused_unbound=self.drops["auth_unbound"])

    def _make_reader(self, port):
        # functools.partial: called from C, no Python frame between the loop and the delivery.
        if self.auth_failure is not None:
            return functools.partial(self._refuse, port)
        return functools.partial(self._deliver, port)

    def _refuse(self, port, sock):
        """Read and count the frames queued on ``port`` while the keys they require are unavailable."""
        try:
            count = self.receiver.receive(sock)
        except OSError as exc:
            self.drops["receive_error"] += 1
            self.drop_log.drop("receive_error", "port %d: %s" % (port, exc))
            return
        self.drops["no_keys"] += count
        if count:
            self.drop_log.error("no_keys", 1, "%d frames on port %d not delivered: authentication is required but "
                                "the keys cannot be loaded (%s)", count, port, self.auth_failure)

    def _deliver(self, port, sock):
        """Re-deliver the first frame queued on ``port``, then a batch of what is queued behind it."""
        receiver = self.receiver
        for first in (True, False):
            try:
                count = receiver.receive_first(sock) if first else receiver.receive(sock)
            except OSError as exc:
                self.drops["receive_error"] += 1
                self.drop_log.drop("receive_error", "port %d: %s" % (port, exc))
                return
            if not count:
                return
            if not (first and self._deliver_first(port)) and not self._deliver_run(port, count):
                self._deliver_received(port, count)

    def _deliver_first(self, port):
        """Re-deliver the lone first frame of a readable event if it is the common case; False if not.

        The common case: a plain untagged v1 frame, no keys configured, an
        entry for its exact group port with one ordinary delivery socket.
        Its payload is sent before anything is counted: at light load (one
        frame per wake-up) every step between the receive and the send is
        latency.  Everything else goes through ``_deliver_received``, which
        makes the same decisions for any frame.
        """
        receiver = self.receiver
        nbytes = receiver.lengths[0]
        if self.verifier is not None or nbytes < frame.HEADER_LEN:
            return False
        view = receiver.slots[0]
        (magic, version, flags, start, _proto, _tos, _key_id, group_addr, group_port, _src_addr, _src_port,
         seq) = _HEADER.unpack_from(view)
        if magic != frame.MAGIC or version != frame.VERSION or flags or start != frame.HEADER_LEN:
            return False
        entry = self.routes.get((receiver.sources[0], port, group_addr, group_port))
        if entry is None or entry.raw or len(entry.targets) != 1 or (
                entry.port_word and receiver.port_words[0] != entry.port_word):
            return False
        payload = view[start:nbytes]
        code = 0
        try:
            entry.targets[0].sendto(payload, entry.destination)
        except OSError as exc:
            code = exc.errno or errno.EIO
        finally:
            payload.release()
        length = nbytes - start
        entry.rx_packets += 1
        entry.rx_bytes += length
        entry.tracker.observe(seq)
        if code:
            self._drop_undelivered(entry, mmsg.error_message(code))
        else:
            entry.delivered_packets += 1
            entry.delivered_bytes += length
        return True

    def _deliver_run(self, port, count):
        """Re-deliver a burst that is one run (``uniform_run``) as a whole; False if it is not.

        The common case under load: one server's frames for one group, none
        lost, no keys, an entry for the exact group port with one ordinary
        delivery socket.  The frames are checked column by column and sent
        with one ``sendmmsg``; the counters and the sequence tracker take the
        run at once.  Anything else goes through ``_deliver_received``.
        """
        if count < 2 or self.verifier is not None or not isinstance(self.receiver, client_fastpath.MmsgReceiver):
            return False
        run = self.receiver.uniform_run(count)
        if run is None:
            return False
        entry = self.routes.get((run[0], port, run[1], run[2]))
        if entry is None or entry.raw or len(entry.targets) != 1 or (
                entry.port_word and self.receiver.port_words[:count].tolist().count(entry.port_word) != count):
            return False
        lengths = self.receiver.lengths
        payload_bytes = sum(lengths) - frame.HEADER_LEN * count
        entry.rx_packets += count
        entry.rx_bytes += payload_bytes
        entry.tracker.observe_run(run[3], count)
        failed = self.sender.send_run(entry.targets[0], lengths, frame.HEADER_LEN, entry.sockaddr)
        entry.delivered_packets += count - len(failed)
        entry.delivered_bytes += payload_bytes
        for index, code in failed:
            entry.delivered_bytes -= lengths[index] - frame.HEADER_LEN
            self._drop_undelivered(entry, mmsg.error_message(code))
        return True

    def _deliver_received(self, port, count):
        """Check and re-deliver the ``count`` frames the receiver holds."""
        receiver = self.receiver
        drops = self.drops
        lengths = receiver.lengths
        sources = receiver.sources
        port_words = receiver.port_words
        slots = receiver.slots
        routes = self.routes
        verifier = self.verifier
        add = self.sender.add
        unpack_header = _HEADER.unpack_from
        try:
            for index in range(count):
                nbytes = lengths[index]
                view = slots[index]
                if nbytes >= frame.HEADER_LEN:
                    (magic, version, flags, start, proto, tos, key_id, group_addr, group_port, src_addr, src_port,
                     seq) = unpack_header(view)
                    end = nbytes
                if nbytes < frame.HEADER_LEN or magic != frame.MAGIC or version != frame.VERSION or flags \
                        or start != frame.HEADER_LEN:
                    if nbytes >= frame.HEADER_LEN and magic == subscription.MAGIC:
                        # A server's answer to a dynamic entry's subscription (never a data frame).
                        message = view[:nbytes]
                        try:
                            self._subscription_reply(message, nbytes, receiver.source(index), port)
                        finally:
                            message.release()
                        continue
                    # Not a plain untagged v1 frame: the frame module decides (tag, error and its reason).
                    try:
                        (flags, proto, tos, key_id, group_addr, group_port, src_addr, src_port, seq,
                         start, end) = frame.parse_from(view, nbytes)
                    except frame.FrameError as exc:
                        drops[exc.reason] += 1
                        self.drop_log.drop(exc.reason, "from %s:%d on port %d: %s" % (
                            receiver.source(index) + (port, exc)))
                        continue
                    # Only frames that are not plain v1 get here: the untagged path pays nothing,
                    # and a client with keys one test.
                    if verifier is None and flags & frame.FLAG_TAG:
                        self._note_unverified(receiver.source(index))
                source = sources[index]
                entry = routes.get((source, port, group_addr, group_port))
                if entry is None:
                    # Group port 0: the entry takes every port of the group (capture mode, any port).
                    entry = routes.get((source, port, group_addr, 0))
                if entry is None:
                    reason = "unknown_group" if source in self.servers else "unknown_server"
                    drops[reason] += 1
                    self.drop_log.drop(reason, "frame from %s:%d on port %d for %s:%d matches no entry" % (
                        receiver.source(index) + (port, frame.int_to_ip(group_addr), group_port)))
                    continue
                if entry.port_word and port_words[index] != entry.port_word:
                    drops["source_port"] += 1
                    self.drop_log.drop("source_port", "frame from %s:%d for %s:%d: the server's copies come from "
                                       "port %d" % (receiver.source(index) + (entry.group_ip, entry.group_port,
                                                                              entry.source_port)))
                    continue
                if verifier is not None:
                    reason = verifier.check(view, flags, key_id, end, entry.server_identity, entry.replay)
                    if reason is None and not entry.replay.admit(seq):
                        reason = "replay"
                    if reason is not None:
                        drops[reason] += 1
                        self.drop_log.drop(reason, "frame from %s:%d for %s:%d, key id %d, sequence %016x" % (
                            receiver.source(index) + (entry.group_ip, entry.group_port, key_id, seq)))
                        continue
                    verifier.accepted[key_id] += 1
                entry.rx_packets += 1
                length = end - start
                entry.rx_bytes += length
                entry.tracker.observe(seq)
                targets = entry.targets
                if not targets:
                    self._drop_undelivered(entry, "no usable delivery interface (%s)" % ", ".join(entry.interfaces))
                    continue
                if entry.raw:
                    self._deliver_raw(entry, view[start:end], proto, tos, src_addr, src_port, group_addr, group_port)
                    continue
                if entry.group_port:
                    destination = entry.destination
                    sockaddr = entry.sockaddr
                else:
                    destination = (entry.group_ip, group_port)
                    sockaddr = client_fastpath.sockaddr_in(entry.group_ip, group_port)
                for target in targets:
                    add(target, entry, index, start, length, destination, sockaddr)
                # Counted as delivered now; the copies the kernel refuses are taken back below.
                entry.delivered_packets += len(targets)
                entry.delivered_bytes += length * len(targets)
        finally:
            for entry, length, code in self.sender.flush():
                entry.delivered_packets -= 1
                entry.delivered_bytes -= length
                self._drop_undelivered(entry, mmsg.error_message(code))

    def _note_unverified(self, source):
        """Count a tagged frame this client delivers unchecked, and say so once per interval."""
        self.unverified += 1
        self.drop_log.warning("unverified", 1, "frames from %s:%d carry authentication tags, but this client has no "
                              "key file (%s): they are delivered unchecked; install the keys, and create %s to "
                              "refuse frames without valid keys", source[0], source[1],
                              auth.key_file_path(self.directory), auth.required_path(self.directory))

    def _drop_undelivered(self, entry, reason):
        """Count and log a copy for ``entry`` that could not be re-delivered, and why."""
        self.drops["deliver_error"] += 1
        self.drop_log.drop("deliver_error", "group %s:%d: %s" % (entry.group_ip, entry.group_port, reason))

    def _deliver_raw(self, entry, payload, proto, tos, src_addr, src_port, group_addr, group_port):
        """Re-deliver one payload with its original source through every raw target of ``entry``."""
        try:
            for target in entry.targets:
                try:
                    target.send(proto, tos, src_addr, src_port, group_addr, group_port, payload)
                except (OSError, ValueError) as exc:
                    self._drop_undelivered(entry, getattr(exc, "strerror", None) or exc)
                else:
                    entry.delivered_packets += 1
                    entry.delivered_bytes += len(payload)
        finally:
            payload.release()

    def stats(self):
        return {"side": "client", "started": int(self.started), "drops": dict(self.drops),
                "auth": self.verifier.as_dict() if self.verifier is not None else None,
                "listen_errors": sorted(self.listen_errors.values()),
                "entries": [e.as_dict() for e in self.entries.values()]}

    def show(self):
        return {"side": "client", "config": self.cfg, "ports": sorted(set(p for _a, p in self.listeners)),
                "entries": [{"server_ip": e.server_ip, "server_port": e.server_port, "group_ip": e.group_ip,
                             "group_port": e.group_port, "interfaces": list(e.interfaces)}
                            for e in self.entries.values()]}
