"""The server's data path: a burst of group datagrams in, a frame to every member out.

The generic ``recvmmsg``/``sendmmsg`` bindings are in ``mmsg``; this module
is the server's use of them (the client's is ``client_fastpath``).

The server sends the same bytes to N members for every datagram.  With
``sendto`` that is N system calls and N trips through the interpreter; with
``sendmmsg(2)`` it is one call, and for a burst of datagrams (what queued
while the relay was busy) one call for up to 1024 copies.  Both are called
through ctypes (``mmsg``); everything they need is built when the members change, not per
datagram:

- one ``struct iovec`` per daemon, pointing at the daemon's frame buffer (only
  its length is set per datagram);
- per member set (addresses + port) one array of ``struct sockaddr_in`` and
  one array of ``struct mmsghdr`` whose entries point at their address and
  all share that iovec.  Groups with the same members and server port (the
  usual case: every group goes to every receiver) share one member set;
- for bursts, receive slots with room for the frame header in front of the
  payload (``BurstReceiver``) and one scratch array of headers for
  ``SendmmsgFanOut.send_rows``.

Where ctypes or the libc function is missing, ``SendtoFanOut`` does the same
job with one ``sendto`` per member; both report the members that failed in
the same form, so the server's accounting does not care which one runs.
"""

import array
import errno
import mmap
import os
import socket
import weakref

from .mmsg import (
    IP_TOS, IP_TTL, MAX_MESSAGES, SOURCE, ctypes, finish_sendmmsg, libc_recvmmsg, libc_sendmmsg, parse_ttl_tos,
    sockaddr_in, sockaddr_pointers)

# The C structures exist where ctypes does; without it the sendto fan-out runs.
if ctypes is not None:
    from .mmsg import POINTER_CODE, POINTER_SIZE, IoVec, MMsgHdr, MsgHdr

# Datagrams received and sent per burst (recvmmsg slots, send_rows rows).
BURST_ROWS = 64


class MemberSet:
    """The addresses of one member list at one port, ready for the fan-out."""

    __slots__ = ("ips", "port", "addresses", "sockaddrs", "headers", "headers_address", "name_run",
                 "__weakref__")

    def __init__(self, ips, port):
        self.ips = ips
        self.port = port
        self.addresses = None       # (ip, port) tuples: SendtoFanOut, and SendmmsgFanOut for one member
        self.sockaddrs = None       # SendmmsgFanOut: ctypes buffers kept alive here
        self.headers = None
        self.headers_address = 0
        # SendmmsgFanOut.send_rows: the sockaddr addresses repeated once per
        # row a call can carry (built the first time a burst is sent).
        self.name_run = None

    def __len__(self):
        return len(self.ips)


class _FanOutBase:
    """Shares one MemberSet between the groups whose members and port are equal."""

    def __init__(self, sock, buffer):
        self.sock = sock
        self.buffer = buffer
        self._member_sets = weakref.WeakValueDictionary()

    def member_set(self, ips, port):
        """The (possibly shared) MemberSet of ``ips`` (a tuple of dotted quads) at ``port``."""
        key = (ips, port)
        found = self._member_sets.get(key)
        if found is None:
            found = MemberSet(ips, port)
            self._prepare(found)
            self._member_sets[key] = found
        return found

    def _prepare(self, member_set):
        raise NotImplementedError

    def send(self, member_set, length):
        """Send buffer[:length] to every member; a list of (member index, errno) that failed."""
        raise NotImplementedError

    def close(self):
        self._member_sets.clear()


class SendtoFanOut(_FanOutBase):
    """One ``sendto`` per member: the fallback where sendmmsg cannot be called."""

    name = "sendto"

    def __init__(self, sock, buffer):
        super(SendtoFanOut, self).__init__(sock, buffer)
        self.view = memoryview(buffer)

    def _prepare(self, member_set):
        member_set.addresses = [(ip, member_set.port) for ip in member_set.ips]

    def send(self, member_set, length):
        sendto = self.sock.sendto
        out = self.view[:length]
        failed = []
        try:
            for index, address in enumerate(member_set.addresses):
                try:
                    sendto(out, address)
                except OSError as exc:
                    failed.append((index, exc.errno or errno.EIO))
        finally:
            out.release()
        return failed


class SendmmsgFanOut(_FanOutBase):
    """One ``sendmmsg`` per datagram, or per burst of datagrams (``send_rows``).

    ``send`` fans the daemon's buffer out to one member set.  A group of one
    member is sent to with ``sendto``: one system call either way, and the
    socket module's call costs less than a ctypes call (about 5 us less per
    datagram at light load, where the cache is cold after every idle wait;
    measured with perf's syscall tracepoints).

    ``send_rows`` sends several datagrams (rows) to the same member set with
    one call for up to ``MAX_MESSAGES`` copies: the kernel does the same
    work per copy, the interpreter one call per burst instead of one per
    datagram.  Its headers live in one scratch array; per call two strided
    copies fill in where each copy goes (the member set's ``name_run``) and
    which row it carries (``_iov_runs``), and per row the row's iovec is set.
    """

    name = "sendmmsg"

    def __init__(self, sock, buffer, sendmmsg, rows=BURST_ROWS):
        super(SendmmsgFanOut, self).__init__(sock, buffer)
        self._sendmmsg = sendmmsg
        self._fd = sock.fileno()
        # from_buffer pins the bytearray: it cannot be resized (and moved) while we point at it.
        self._frame = (ctypes.c_char * len(buffer)).from_buffer(buffer)
        self._iov = IoVec(ctypes.addressof(self._frame), 0)
        self._stride = ctypes.sizeof(MMsgHdr)
        template = MMsgHdr()
        template.msg_hdr.msg_namelen = 16
        template.msg_hdr.msg_iov = ctypes.addressof(self._iov)
        template.msg_hdr.msg_iovlen = 1
        self._template = bytes(template)
        self._view = memoryview(buffer)
        # send_rows: one iovec per row of a call, MAX_MESSAGES headers.
        self._rows = rows
        self._row_iovs = (IoVec * rows)()
        self._row_iov_words = memoryview(self._row_iovs).cast("B").cast(POINTER_CODE)
        self._scratch = (MMsgHdr * MAX_MESSAGES).from_buffer_copy(self._template * MAX_MESSAGES)
        self._scratch_address = ctypes.addressof(self._scratch)
        self._scratch_words = memoryview(self._scratch).cast("B").cast(POINTER_CODE)
        self._words_per_header = self._stride // POINTER_SIZE
        self._iov_word = MsgHdr.msg_iov.offset // POINTER_SIZE
        self._iov_runs = {}     # member count -> the row iovec addresses, each repeated that often

    def _prepare(self, member_set):
        count = len(member_set.ips)
        port = member_set.port
        if not count:
            return
        sockaddrs = ctypes.create_string_buffer(b"".join(sockaddr_in(ip, port) for ip in member_set.ips), 16 * count)
        member_set.sockaddrs = sockaddrs
        if count == 1:
            member_set.addresses = [(member_set.ips[0], port)]
            return
        headers = (MMsgHdr * count).from_buffer_copy(self._template * count)
        # Every entry is the template but for msg_name (offset 0), the
        # address of its own sockaddr_in: written as one strided slice.
        pointers = memoryview(headers).cast("B").cast(POINTER_CODE)
        pointers[0::self._words_per_header] = sockaddr_pointers(sockaddrs, count)
        pointers.release()
        member_set.headers_address = ctypes.addressof(headers)
        member_set.headers = headers

    def send(self, member_set, length):
        count = len(member_set.ips)
        if count == 1:
            out = self._view[:length]
            try:
                self.sock.sendto(out, member_set.addresses[0])
            except OSError as exc:
                return [(0, exc.errno or errno.EIO)]
            finally:
                out.release()
            return ()
        if not count:
            return ()
        self._iov.iov_len = length
        sent = self._sendmmsg(self._fd, member_set.headers_address, count, 0)
        if sent == count:
            return ()
        return finish_sendmmsg(self._sendmmsg, self._fd, member_set.headers_address, self._stride, count, sent)

    def send_rows(self, member_set, addresses, lengths):
        """Send ``lengths[i]`` bytes at memory address ``addresses[i]`` (row i) to every member.

        The addresses must stay valid for the call (the server's receive
        slots).  Returns a list of (row, member index, errno) that failed.
        """
        count = len(member_set.ips)
        rows = len(addresses)
        if not count or not rows:
            return []
        per_call = max(1, min(self._rows, MAX_MESSAGES // count))
        name_run = member_set.name_run
        if name_run is None:
            name_run = member_set.name_run = memoryview(
                sockaddr_pointers(member_set.sockaddrs, count) * per_call)
        iov_run = self._iov_runs.get(count)
        if iov_run is None:
            first = ctypes.addressof(self._row_iovs)
            size = ctypes.sizeof(IoVec)
            iov_run = self._iov_runs[count] = memoryview(array.array(
                POINTER_CODE, [first + size * (entry // count) for entry in range(per_call * count)]))
        row_words = self._row_iov_words
        words = self._scratch_words
        step = self._words_per_header
        failed = []
        done = 0
        while done < rows:
            batch = min(per_call, rows - done)
            for row in range(batch):
                row_words[2 * row] = addresses[done + row]
                row_words[2 * row + 1] = lengths[done + row]
            entries = batch * count
            end = entries * step
            words[0:end:step] = name_run[:entries]
            words[self._iov_word:end:step] = iov_run[:entries]
            sent = self._sendmmsg(self._fd, self._scratch_address, entries, 0)
            if sent != entries:
                for entry, code in finish_sendmmsg(self._sendmmsg, self._fd, self._scratch_address, self._stride,
                                                   entries, sent):
                    failed.append((done + entry // count, entry % count, code))
            done += batch
        return failed

    def close(self):
        super(SendmmsgFanOut, self).close()
        self._iov_runs.clear()
        self._row_iov_words.release()
        self._scratch_words.release()
        # Releases the exports of the frame buffer.
        self._frame = None
        self._view.release()


class BurstReceiver:
    """``recvmmsg`` of what a group socket has queued, into preallocated slots.

    Slot ``i`` starts at ``addresses[i]`` (``views[i]`` in Python); the
    payload lands ``offset`` bytes in, so the caller can write a frame header
    in front of it and send slot and payload as one buffer.  Each datagram
    comes with its sender and the TTL and TOS control messages (the socket
    must have IP_RECVTTL and IP_RECVTOS on): the kernel writes them in that
    order, so they are read for the whole burst with strided views instead
    of one ancillary-data tuple per datagram.
    """

    def __init__(self, recvmmsg, slots, slot_size, offset, length):
        self._recvmmsg = recvmmsg
        self._batch = slots
        self._memory = mmap.mmap(-1, slot_size * slots)
        self.whole = memoryview(self._memory)
        self.views = [self.whole[index * slot_size:(index + 1) * slot_size] for index in range(slots)]
        self.slot_size = slot_size
        # from_buffer pins the mapping: it cannot be closed while we point into it.
        self._frames = (ctypes.c_char * (slot_size * slots)).from_buffer(self._memory)
        base = ctypes.addressof(self._frames)
        self.addresses = [base + index * slot_size for index in range(slots)]
        self._iovs = (IoVec * slots)(*[IoVec(address + offset, length) for address in self.addresses])
        self._names = ctypes.create_string_buffer(16 * slots)
        cmsg_space = socket.CMSG_SPACE(4)
        self._control_size = 2 * cmsg_space
        self._control = ctypes.create_string_buffer(self._control_size * slots)
        self._headers = (MMsgHdr * slots)()
        names = ctypes.addressof(self._names)
        control = ctypes.addressof(self._control)
        iovs = ctypes.addressof(self._iovs)
        for index, header in enumerate(self._headers):
            header.msg_hdr.msg_name = names + 16 * index
            header.msg_hdr.msg_namelen = 16
            header.msg_hdr.msg_iov = iovs + index * ctypes.sizeof(IoVec)
            header.msg_hdr.msg_iovlen = 1
            header.msg_hdr.msg_control = control + self._control_size * index
            header.msg_hdr.msg_controllen = self._control_size
        self._headers_address = ctypes.addressof(self._headers)
        stride = ctypes.sizeof(MMsgHdr)
        raw = memoryview(self._headers).cast("B")
        ints = raw.cast("i")
        self._lengths = raw.cast("I")[MMsgHdr.msg_len.offset // 4::stride // 4]
        self._flags = ints[(MMsgHdr.msg_hdr.offset + MsgHdr.msg_flags.offset) // 4::stride // 4]
        # The kernel writes back how much control data it used: reset before every call.
        self._control_lengths = raw.cast(POINTER_CODE)[MsgHdr.msg_controllen.offset // POINTER_SIZE::
                                                       stride // POINTER_SIZE]
        self._control_lengths_full = array.array(POINTER_CODE, [self._control_size] * slots)
        # struct cmsghdr: cmsg_len (size_t), cmsg_level, cmsg_type; data at CMSG_LEN(0).
        control_bytes = memoryview(self._control).cast("B")
        control_ints = control_bytes.cast("i")
        data = socket.CMSG_LEN(0)
        step = self._control_size // 4
        self._ttl_types = control_ints[(POINTER_SIZE + 4) // 4::step]
        self._ttls = control_ints[data // 4::step]
        self._tos_types = control_ints[(cmsg_space + POINTER_SIZE + 4) // 4::step]
        self._toss = control_bytes[cmsg_space + data::self._control_size]
        self._control_bytes = control_bytes
        self._name_bytes = memoryview(self._names).cast("B")
        self._views = [raw, ints, self._lengths, self._flags, self._control_lengths, control_ints,
                       self._ttl_types, self._ttls, self._tos_types, self._toss, control_bytes, self._name_bytes]

    def receive(self, sock):
        """Read what ``sock`` has queued, up to one datagram per slot; the count (0: nothing queued).

        Raises OSError when the call fails.
        """
        fd = sock.fileno()
        self._control_lengths[:] = self._control_lengths_full
        while True:
            count = self._recvmmsg(fd, self._headers_address, self._batch, 0, None)
            if count >= 0:
                return count
            code = ctypes.get_errno()
            if code in (errno.EAGAIN, errno.EWOULDBLOCK):
                return 0
            if code != errno.EINTR:
                raise OSError(code, os.strerror(code))

    def burst(self, count):
        """(lengths, flags, ttls, toss) of the first ``count`` datagrams, as lists.

        TTL -1 means the datagram came without one (never on Linux with
        IP_RECVTTL on; the loop guard then lets it through, as the
        one-datagram path does).
        """
        lengths = self._lengths[:count].tolist()
        flags = self._flags[:count].tolist()
        if (self._control_lengths[:count].tolist().count(self._control_size) == count
                and self._ttl_types[:count].tolist().count(IP_TTL) == count
                and self._tos_types[:count].tolist().count(IP_TOS) == count):
            return lengths, flags, self._ttls[:count].tolist(), self._toss[:count].tolist()
        ttls = []
        toss = []
        for index in range(count):
            ttl, tos = parse_ttl_tos(self._control_bytes, index * self._control_size,
                                     self._control_lengths[index])
            ttls.append(ttl)
            toss.append(tos)
        return lengths, flags, ttls, toss

    def source(self, index):
        """(source port, source address as an integer) of datagram ``index`` of the last burst."""
        return SOURCE.unpack_from(self._name_bytes, 16 * index)

    def close(self):
        for view in self._views + self.views:
            view.release()
        self.whole.release()
        self._frames = None
        self._memory.close()


def burst_receiver(slots, slot_size, offset, length):
    """A BurstReceiver, or None where recvmmsg cannot be called through ctypes."""
    recvmmsg = libc_recvmmsg()
    if recvmmsg is None:
        return None
    return BurstReceiver(recvmmsg, slots, slot_size, offset, length)


def fan_out(sock, buffer, use_sendmmsg=True):
    """The fastest fan-out this Python offers for ``sock`` (non-blocking UDP) and ``buffer`` (a bytearray)."""
    sendmmsg = libc_sendmmsg() if use_sendmmsg else None
    if sendmmsg is None:
        return SendtoFanOut(sock, buffer)
    return SendmmsgFanOut(sock, buffer, sendmmsg)
