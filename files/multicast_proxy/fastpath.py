"""Fan-out of one frame to every member of a group.

The server sends the same bytes to N members for every datagram.  With
``sendto`` that is N system calls and N trips through the interpreter; with
``sendmmsg(2)`` it is one call.  The standard library has no ``sendmmsg``, so
it is called through ctypes; everything it needs is built when the members
change, not per datagram:

- one ``struct iovec`` per daemon, pointing at the daemon's frame buffer (only
  its length is set per datagram);
- per member set (addresses + port) one array of ``struct sockaddr_in`` and
  one array of ``struct mmsghdr`` whose entries point at their address and
  all share that iovec.  Groups with the same members and server port (the
  usual case: every group goes to every receiver) share one member set.

Where ctypes or the libc function is missing, ``SendtoFanOut`` does the same
job with one ``sendto`` per member; both report the members that failed in
the same form, so the server's accounting does not care which one runs.
"""

import array
import errno
import os
import socket
import struct
import weakref

try:
    import ctypes
# ImportError: a Python built without ctypes (some minimal images).
# MemoryError: importing ctypes creates a callback, which an old libffi can
# only do with writable+executable memory; MemoryDenyWriteExecute refuses it.
except (ImportError, MemoryError):
    ctypes = None

EAGAIN_MESSAGE = "send buffer full (EAGAIN)"


def error_message(code):
    """How a send error is shown in a member's ``last_error``."""
    if code in (errno.EAGAIN, errno.EWOULDBLOCK):
        return EAGAIN_MESSAGE
    return os.strerror(code)


def _sockaddr_in(ip, port):
    # struct sockaddr_in: family (host order), port and address (network order), 8 bytes of zero.
    return struct.pack("=H", socket.AF_INET) + struct.pack("!H4s8x", port, socket.inet_aton(ip))


class MemberSet:
    """The addresses of one member list at one port, ready for the fan-out."""

    __slots__ = ("ips", "port", "addresses", "sockaddrs", "headers", "headers_address", "__weakref__")

    def __init__(self, ips, port):
        self.ips = ips
        self.port = port
        self.addresses = None       # (ip, port) tuples: SendtoFanOut, and SendmmsgFanOut for one member
        self.sockaddrs = None       # SendmmsgFanOut: ctypes buffers kept alive here
        self.headers = None
        self.headers_address = 0

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


if ctypes is not None:
    class _IoVec(ctypes.Structure):
        _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]

    class _MsgHdr(ctypes.Structure):
        _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                    ("msg_iov", ctypes.c_void_p), ("msg_iovlen", ctypes.c_size_t),
                    ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
                    ("msg_flags", ctypes.c_int)]

    class _MMsgHdr(ctypes.Structure):
        _fields_ = [("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint)]


def libc_function(name, argtypes):
    """libc's function ``name`` (returning int) as a ctypes function, or None where it cannot be called."""
    if ctypes is None:
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = getattr(libc, name)
    except (OSError, AttributeError):
        return None
    function.argtypes = argtypes
    function.restype = ctypes.c_int
    return function


def _libc_sendmmsg():
    """libc's sendmmsg as a ctypes function, or None where it cannot be called."""
    if ctypes is None:
        return None
    return libc_function("sendmmsg", (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int))


def libc_recvmmsg():
    """libc's recvmmsg as a ctypes function (the timeout argument is passed as NULL), or None."""
    if ctypes is None:
        return None
    return libc_function("recvmmsg", (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p))


class SendmmsgFanOut(_FanOutBase):
    """One ``sendmmsg`` per datagram (more only when some members fail).

    A group of one member is sent to with ``sendto``: one system call
    either way, and the socket module's call costs less than a ctypes call
    (about 5 us less per datagram at light load, where the cache is cold
    after every idle wait; measured with perf's syscall tracepoints).
    """

    name = "sendmmsg"

    def __init__(self, sock, buffer, sendmmsg):
        super(SendmmsgFanOut, self).__init__(sock, buffer)
        self._sendmmsg = sendmmsg
        self._fd = sock.fileno()
        # from_buffer pins the bytearray: it cannot be resized (and moved) while we point at it.
        self._frame = (ctypes.c_char * len(buffer)).from_buffer(buffer)
        self._iov = _IoVec(ctypes.addressof(self._frame), 0)
        self._stride = ctypes.sizeof(_MMsgHdr)
        template = _MMsgHdr()
        template.msg_hdr.msg_namelen = 16
        template.msg_hdr.msg_iov = ctypes.addressof(self._iov)
        template.msg_hdr.msg_iovlen = 1
        self._template = bytes(template)
        self._view = memoryview(buffer)

    def _prepare(self, member_set):
        count = len(member_set.ips)
        port = member_set.port
        if count == 1:
            member_set.addresses = [(member_set.ips[0], port)]
            return
        sockaddrs = ctypes.create_string_buffer(b"".join(_sockaddr_in(ip, port) for ip in member_set.ips), 16 * count)
        headers = (_MMsgHdr * count).from_buffer_copy(self._template * count) if count else None
        if count:
            # Every entry is the template but for msg_name (offset 0), the
            # address of its own sockaddr_in: written as one strided slice.
            pointer_code = "Q" if ctypes.sizeof(ctypes.c_void_p) == 8 else "I"
            pointers = memoryview(headers).cast("B").cast(pointer_code)
            first = ctypes.addressof(sockaddrs)
            pointers[0::self._stride // ctypes.sizeof(ctypes.c_void_p)] = array.array(
                pointer_code, range(first, first + 16 * count, 16))
            pointers.release()
            member_set.headers_address = ctypes.addressof(headers)
        member_set.sockaddrs = sockaddrs
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
        # The kernel stops at the first member it cannot send to and returns
        # how many went out (or -1 when the first one failed): count that
        # member's error and carry on with the next one.
        failed = []
        start = 0
        while True:
            if sent > 0:
                start += sent
            else:
                code = ctypes.get_errno() or errno.EIO
                if code != errno.EINTR:
                    failed.append((start, code))
                    start += 1
            if start >= count:
                return failed
            sent = self._sendmmsg(self._fd, member_set.headers_address + start * self._stride, count - start, 0)

    def close(self):
        super(SendmmsgFanOut, self).close()
        # Releases the exports of the frame buffer.
        self._frame = None
        self._view.release()


def fan_out(sock, buffer, use_sendmmsg=True):
    """The fastest fan-out this Python offers for ``sock`` (non-blocking UDP) and ``buffer`` (a bytearray)."""
    sendmmsg = _libc_sendmmsg() if use_sendmmsg else None
    if sendmmsg is None:
        return SendtoFanOut(sock, buffer)
    return SendmmsgFanOut(sock, buffer, sendmmsg)
