"""The client's batched data path: ``recvmmsg`` in, ``sendmmsg`` out.

Built on the generic bindings of ``mmsg``; the server's use of them is
``server_fastpath``.

Per frame the client used to make two system calls (``recvfrom_into``, then
``sendto`` of the payload); the C reference makes two per batch.  Here a
readable listener is drained with one ``recvmmsg`` into preallocated slots,
and the accepted payloads are re-delivered with one ``sendmmsg`` per run of
consecutive frames for the same delivery socket, straight from the slots (an
iovec points at the payload inside its slot; nothing is copied).  A frame
that arrives alone takes ``recvfrom_into`` and ``sendto``, which cost less
than a ctypes call.

Everything the calls need is built once per daemon: the slots (one anonymous
mapping, so only the pages frames touch become resident), one ``iovec`` and
one ``sockaddr_in`` per slot for receiving, and per output record an
``iovec`` and a ``sockaddr_in`` that the client fills with one
``struct.pack_into`` per copy.  The batch is whatever is queued when the
listener turns readable: nothing waits for a batch to fill.

Where ctypes or the libc functions are missing, ``RecvfromReceiver`` and
``SendtoSender`` do the same job with one system call per frame and copy;
both pairs expose the same interface, so the client does not care which runs.
"""

import array
import errno
import mmap
import os
import socket
import struct
import sys

from . import frame, mmsg

ctypes = mmsg.ctypes

BATCH = 64
# One slot holds the largest UDP payload with a byte to spare, rounded up to a page multiple.
SLOT = 1 << 16
assert SLOT > frame.MAX_UDP_PAYLOAD
# The kernel's sockaddr_in holds the address in network order; read as a
# native 32-bit word it becomes this key (what ``address_key`` computes).
_NATIVE_WORD = struct.Struct("=I")
_SOCKADDR_PORT_ADDRESS = struct.Struct("!2xH4s8x")
_KEY_CACHE_SIZE = 1024
# The first word of a plain v1 frame (magic, version, no flags), read as a native word.
_PLAIN_V1_WORD = _NATIVE_WORD.unpack(frame.MAGIC + bytes([frame.VERSION, 0]))[0]
_SOCKADDR_WORDS = struct.Struct("=QQ")


def address_key(ip):
    """The integer a received frame's source address ``ip`` is looked up by."""
    return _NATIVE_WORD.unpack(socket.inet_aton(ip))[0]


# A source port as the receivers' ``port_words`` hold it: its network-order
# bytes read as a native 16-bit word, which is what the kernel's sockaddr_in
# holds (recvmmsg's ports are read from there without a conversion each).
port_word = socket.htons


sockaddr_in = mmsg.sockaddr_in


def _anonymous_slots(batch):
    memory = mmap.mmap(-1, SLOT * batch)
    whole = memoryview(memory)
    return memory, whole, [whole[index * SLOT:(index + 1) * SLOT] for index in range(batch)]


class _FirstFrame:
    """``receive_first``: the first frame of a readable event, alone.

    A frame that arrives alone (light load, where latency is measured) is
    read with ``recvfrom_into`` and handled before anything else is tried:
    asking for more first would put a failing system call (and, with
    ctypes, a call that costs a few microseconds more than
    ``recvfrom_into``) between its arrival and its re-delivery.
    """

    def receive_first(self, sock):
        """Read one frame into slot 0 if one is queued; the count (0 or 1). Raises OSError."""
        try:
            nbytes, name = sock.recvfrom_into(self.slots[0])
        except (BlockingIOError, InterruptedError):
            return 0
        keys = self._keys
        key = keys.get(name[0])
        if key is None:
            if len(keys) >= _KEY_CACHE_SIZE:
                keys.clear()
            key = keys[name[0]] = address_key(name[0])
        self.lengths = [nbytes]
        self.sources = [key]
        self.port_words = [port_word(name[1])]
        self._names_read = [name]
        return 1


class RecvfromReceiver(_FirstFrame):
    """One ``recvfrom_into`` per frame: the fallback where recvmmsg cannot be called."""

    name = "recvfrom"

    def __init__(self, batch=BATCH):
        self._memory, self._whole, self.slots = _anonymous_slots(batch)
        self.lengths = []
        self.sources = []
        self.port_words = []
        self._names_read = []
        self._keys = {}
        # An error met after some frames were read is raised by the next call,
        # as recvmmsg(2) does.
        self._error = None

    def receive(self, sock):
        """Read what is queued on ``sock``, up to one frame per slot; the count.

        Fills ``lengths``, ``sources`` (``address_key`` of each sender) and ``port_words``.
        Raises OSError when the first read fails.
        """
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        lengths = []
        sources = []
        ports = []
        names = []
        for slot in self.slots:
            try:
                nbytes, name = sock.recvfrom_into(slot)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if not lengths:
                    raise
                self._error = exc
                break
            lengths.append(nbytes)
            sources.append(address_key(name[0]))
            ports.append(port_word(name[1]))
            names.append(name)
        self.lengths = lengths
        self.sources = sources
        self.port_words = ports
        self._names_read = names
        return len(lengths)

    def source(self, index):
        """(address, port) of the sender of frame ``index`` of the last batch, for messages."""
        return self._names_read[index]

    def close(self):
        for slot in self.slots:
            slot.release()
        self._whole.release()
        self._memory.close()


class SendtoSender:
    """One ``sendto`` per copy, at once: the fallback where sendmmsg cannot be called."""

    name = "sendto"

    def __init__(self, receiver):
        self._slots = receiver.slots
        self._failed = []

    def add(self, target, entry, slot, start, length, destination, _sockaddr):
        """Re-deliver ``length`` bytes at ``start`` of ``slot`` to ``destination`` through ``target``."""
        payload = self._slots[slot][start:start + length]
        try:
            target.sendto(payload, destination)
        except OSError as exc:
            self._failed.append((entry, length, exc.errno or errno.EIO))
        finally:
            payload.release()

    def flush(self):
        """Send what is pending; a list of (entry, length, errno) of the copies that failed."""
        failed, self._failed = self._failed, []
        return failed

    def close(self):
        self._slots = ()


if ctypes is not None:
    class _Record(ctypes.Structure):
        # One output copy: where its payload is, and where it goes.
        _fields_ = [("iov", mmsg.IoVec), ("name", ctypes.c_char * 16)]


class MmsgReceiver(_FirstFrame):
    """``recvmmsg`` into preallocated slots for what a burst leaves queued."""

    name = "recvmmsg"

    def __init__(self, recvmmsg, batch=BATCH):
        self._recvmmsg = recvmmsg
        self._batch = batch
        self._memory, self._whole, self.slots = _anonymous_slots(batch)
        # from_buffer pins the mapping: it cannot be closed while we point into it.
        self._frames = (ctypes.c_char * (SLOT * batch)).from_buffer(self._memory)
        base = ctypes.addressof(self._frames)
        self.addresses = [base + index * SLOT for index in range(batch)]
        self._iovs = (mmsg.IoVec * batch)(*[mmsg.IoVec(address, SLOT) for address in self.addresses])
        self._names = (ctypes.c_uint32 * (4 * batch))()
        self._headers = (mmsg.MMsgHdr * batch)()
        names = ctypes.addressof(self._names)
        iovs = ctypes.addressof(self._iovs)
        for index, header in enumerate(self._headers):
            header.msg_hdr.msg_name = names + 16 * index
            header.msg_hdr.msg_namelen = 16
            header.msg_hdr.msg_iov = iovs + index * ctypes.sizeof(mmsg.IoVec)
            header.msg_hdr.msg_iovlen = 1
        self._headers_address = ctypes.addressof(self._headers)
        # Strided views, so a batch's lengths and sources are read with one
        # C-level copy each instead of one ctypes attribute access per frame.
        words = memoryview(self._headers).cast("B").cast("I")
        stride = ctypes.sizeof(mmsg.MMsgHdr) // 4
        self._length_words = words[mmsg.MMsgHdr.msg_len.offset // 4::stride]
        self._name_bytes = memoryview(self._names).cast("B")
        self._source_words = self._name_bytes.cast("I")[1::4]
        # The ports, read in place (indexing and slicing this view costs no copy of the batch).
        self._port_column = self._name_bytes.cast("H")[1::8]
        # One column per header field a run is recognised by, read for a whole
        # burst with one C-level copy each (frame.py: the v1 layout).
        slot_words = self._whole.cast("I")
        self._header_columns = [
            slot_words[0::SLOT // 4],                       # magic, version, flags
            self._whole[4::SLOT],                           # header length
            slot_words[2::SLOT // 4],                       # group address
            self._whole.cast("H")[6::SLOT // 2],            # group port
            slot_words[5::SLOT // 4],                       # sequence, high word
            slot_words[6::SLOT // 4],                       # sequence, low word
        ]
        self.lengths = []
        self.sources = []
        self.port_words = self._port_column
        self._names_read = []
        self._keys = {}

    def receive(self, sock):
        """Read what is queued on ``sock``, up to one frame per slot, with one call; the count.

        Fills ``lengths``, ``sources`` (``address_key`` of each sender) and ``port_words``.
        Raises OSError when the call fails.
        """
        fd = sock.fileno()
        while True:
            count = self._recvmmsg(fd, self._headers_address, self._batch, 0, None)
            if count >= 0:
                break
            code = ctypes.get_errno()
            if code in (errno.EAGAIN, errno.EWOULDBLOCK):
                return 0
            if code != errno.EINTR:
                raise OSError(code, os.strerror(code))
        self.lengths = self._length_words[:count].tolist()
        self.sources = self._source_words[:count].tolist()
        self.port_words = self._port_column
        self._names_read = ()
        return count

    def source(self, index):
        """(address, port) of the sender of frame ``index`` of the last batch, for messages."""
        if self._names_read:
            return self._names_read[index]
        port, address = _SOCKADDR_PORT_ADDRESS.unpack_from(self._name_bytes, 16 * index)
        return socket.inet_ntoa(address), port

    def uniform_run(self, count):
        """(source key, group address, group port, first sequence) when the ``count`` frames of
        the last batch are one run, else None.

        A run: plain untagged v1 frames (the checks ``ClientDaemon`` makes
        per frame), all from one sender, for one group and port, with
        consecutive sequence numbers.  It is what a server sends while
        nothing is lost, and the client can then handle the burst as a
        whole instead of frame by frame.
        """
        sources = self.sources
        if count < 2 or sources.count(sources[0]) != count or min(self.lengths) < frame.HEADER_LEN:
            return None
        magic, header_len, group, port, high, low = [column[:count].tolist() for column in self._header_columns]
        if (magic.count(_PLAIN_V1_WORD) != count or header_len.count(frame.HEADER_LEN) != count
                or group.count(group[0]) != count or port.count(port[0]) != count
                or high.count(high[0]) != count):
            return None
        counters = array.array("I", low)
        if sys.byteorder == "little":
            counters.byteswap()
        first = counters[0]
        if counters.tolist() != list(range(first, first + count)):
            return None
        return (sources[0], socket.ntohl(group[0]), socket.ntohs(port[0]),
                (socket.ntohl(high[0]) << 32) | first)

    def close(self):
        for view in [self._length_words, self._source_words, self._port_column,
                     self._name_bytes] + self._header_columns + self.slots:
            view.release()
        self._whole.release()
        self._frames = None
        self._memory.close()


class MmsgSender:
    """Copies queued per delivery socket and sent with one ``sendmmsg`` per run.

    A run ends when a copy for another socket is added, when the records are
    full, or at ``flush``; the payloads stay in the receiver's slots until then.
    """

    name = "sendmmsg"

    def __init__(self, sendmmsg, receiver, capacity=2 * BATCH):
        self._sendmmsg = sendmmsg
        self._slots = receiver.slots
        self._slot_addresses = receiver.addresses
        self._capacity = capacity
        self._records = (_Record * capacity)()
        self._record_size = ctypes.sizeof(_Record)
        assert self._record_size == 32 and _Record.name.offset == 16
        self._record_view = memoryview(self._records).cast("B")
        # Records as words: iov_base, iov_len, then the sockaddr_in's two halves (send_run).
        self._record_words = self._record_view.cast("Q")
        self._payload_bases = {}
        self._pack = struct.Struct("@PN16s").pack_into
        self._headers = (mmsg.MMsgHdr * capacity)()
        records = ctypes.addressof(self._records)
        for index, header in enumerate(self._headers):
            header.msg_hdr.msg_name = records + index * self._record_size + _Record.name.offset
            header.msg_hdr.msg_namelen = 16
            header.msg_hdr.msg_iov = records + index * self._record_size
            header.msg_hdr.msg_iovlen = 1
        self._headers_address = ctypes.addressof(self._headers)
        self._stride = ctypes.sizeof(mmsg.MMsgHdr)
        self._socket = None
        self._entries = []      # per pending copy: (entry, length, slot, start, destination, sockaddr)
        self._failed = []

    def add(self, target, entry, slot, start, length, destination, sockaddr):
        """Queue ``length`` bytes at ``start`` of ``slot`` for ``sockaddr`` through ``target``."""
        if target is not self._socket or len(self._entries) == self._capacity:
            self._send()
            self._socket = target
        self._entries.append((entry, length, slot, start, destination, sockaddr))

    def flush(self):
        """Send what is pending; a list of (entry, length, errno) of the copies that failed."""
        self._send()
        self._socket = None
        failed, self._failed = self._failed, []
        return failed

    def _send(self):
        entries = self._entries
        count = len(entries)
        if not count:
            return
        if count == 1:
            # One copy: sendto is cheaper than a ctypes call (see MmsgReceiver).
            entry, length, slot, start, destination, _sockaddr = entries[0]
            payload = self._slots[slot][start:start + length]
            try:
                self._socket.sendto(payload, destination)
            except OSError as exc:
                self._failed.append((entry, length, exc.errno or errno.EIO))
            finally:
                payload.release()
            del entries[:]
            return
        pack = self._pack
        view = self._record_view
        size = self._record_size
        addresses = self._slot_addresses
        offset = 0
        for _entry, length, slot, start, _destination, sockaddr in entries:
            pack(view, offset, addresses[slot] + start, length, sockaddr)
            offset += size
        for index, code in self._transmit(self._socket.fileno(), count):
            entry, length = entries[index][:2]
            self._failed.append((entry, length, code))
        del entries[:]

    def _transmit(self, fd, count):
        """sendmmsg of the first ``count`` records; a list of (record, errno) that failed."""
        sent = self._sendmmsg(fd, self._headers_address, count, 0)
        if sent == count:
            return []
        return mmsg.finish_sendmmsg(self._sendmmsg, fd, self._headers_address, self._stride, count, sent)

    def send_run(self, target, lengths, start, sockaddr):
        """Send bytes ``start`` to ``lengths[i]`` of slot i, for every i, to ``sockaddr`` through ``target``.

        One ``sendmmsg`` for the whole run, its records written column by
        column; a list of (slot, errno) of the copies that failed.  Copies
        queued with ``add`` are sent first.
        """
        self._send()
        count = len(lengths)
        words = self._record_words
        end = 4 * count
        if start not in self._payload_bases:
            self._payload_bases[start] = array.array("Q", [address + start for address in self._slot_addresses])
        words[0:end:4] = self._payload_bases[start][:count]
        words[1:end:4] = array.array("Q", [length - start for length in lengths])
        low, high = _SOCKADDR_WORDS.unpack(sockaddr)
        words[2:end:4] = array.array("Q", [low]) * count
        words[3:end:4] = array.array("Q", [high]) * count
        return self._transmit(target.fileno(), count)

    def close(self):
        self._record_words.release()
        self._record_view.release()
        self._slots = ()
        self._slot_addresses = ()


def batch_io(use_mmsg=True):
    """The fastest (receiver, sender) pair this Python offers."""
    recvmmsg = mmsg.libc_recvmmsg() if use_mmsg else None
    sendmmsg = mmsg.libc_sendmmsg() if use_mmsg else None
    if recvmmsg is None or sendmmsg is None:
        receiver = RecvfromReceiver()
        return receiver, SendtoSender(receiver)
    receiver = MmsgReceiver(recvmmsg)
    return receiver, MmsgSender(sendmmsg, receiver)
