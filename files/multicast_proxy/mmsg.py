"""Linux's batch socket calls, ``recvmmsg(2)`` and ``sendmmsg(2)``, through ctypes.

The standard library has neither; the server's fan-out (``server_fastpath``)
and the client's batching (``client_fastpath``) are built on what is here:
the C structures (``struct iovec``, ``msghdr``, ``mmsghdr``), the libc
functions (None where ctypes or the function is missing, so each side falls
back to one system call per datagram), the loop that carries on after a
partial ``sendmmsg``, ``struct sockaddr_in`` and the ancillary data parser.
Nothing here knows about groups, members or frames.
"""

import array
import errno
import os
import socket
import struct

try:
    import ctypes
# ImportError: a Python built without ctypes (some minimal images).
# MemoryError: importing ctypes creates a callback, which an old libffi can
# only do with writable+executable memory; MemoryDenyWriteExecute refuses it.
except (ImportError, MemoryError):
    ctypes = None

EAGAIN_MESSAGE = "send buffer full (EAGAIN)"
IP_TTL = socket.IP_TTL
IP_TOS = socket.IP_TOS
# sockaddr_in as the kernel writes it: family, port and address in network order.
SOURCE = struct.Struct("!2xHI8x")
_INT = struct.Struct("=i")
# struct cmsghdr: cmsg_len (size_t), cmsg_level, cmsg_type; each message is padded to a long.
CMSG_HEADER = struct.Struct("@Nii")
CMSG_ALIGN = struct.calcsize("@l")


def error_message(code):
    """How a send error is shown in a member's ``last_error``."""
    if code in (errno.EAGAIN, errno.EWOULDBLOCK):
        return EAGAIN_MESSAGE
    return os.strerror(code)


def sockaddr_in(ip, port):
    # struct sockaddr_in: family (host order), port and address (network order), 8 bytes of zero.
    return struct.pack("=H", socket.AF_INET) + struct.pack("!H4s8x", port, socket.inet_aton(ip))


if ctypes is not None:
    class IoVec(ctypes.Structure):
        _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]

    class MsgHdr(ctypes.Structure):
        _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                    ("msg_iov", ctypes.c_void_p), ("msg_iovlen", ctypes.c_size_t),
                    ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
                    ("msg_flags", ctypes.c_int)]

    class MMsgHdr(ctypes.Structure):
        _fields_ = [("msg_hdr", MsgHdr), ("msg_len", ctypes.c_uint)]


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


def libc_sendmmsg():
    """libc's sendmmsg as a ctypes function, or None where it cannot be called."""
    if ctypes is None:
        return None
    return libc_function("sendmmsg", (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int))


def libc_recvmmsg():
    """libc's recvmmsg as a ctypes function (the timeout argument is passed as NULL), or None."""
    if ctypes is None:
        return None
    return libc_function("recvmmsg", (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p))


# The kernel takes at most UIO_MAXIOV (1024) messages per sendmmsg call, as
# many as a group may have members (config.MAX_MEMBERS).
MAX_MESSAGES = 1024

if ctypes is not None:
    POINTER_SIZE = ctypes.sizeof(ctypes.c_void_p)
    POINTER_CODE = "Q" if POINTER_SIZE == 8 else "I"
    # size_t fields (iov_len, msg_controllen) are read and written through pointer-sized words.
    assert ctypes.sizeof(ctypes.c_size_t) == POINTER_SIZE


def sockaddr_pointers(sockaddrs, count):
    """The addresses of the ``count`` consecutive 16-byte sockaddr_in in ``sockaddrs``."""
    first = ctypes.addressof(sockaddrs)
    return array.array(POINTER_CODE, range(first, first + 16 * count, 16))


def finish_sendmmsg(sendmmsg, fd, headers_address, stride, count, sent):
    """Carry on after a ``sendmmsg`` of ``count`` messages that returned ``sent``; the (message, errno) that failed.

    The kernel stops at the first message it cannot send and returns how
    many went out (or -1 when the first one failed): that message's error
    is reported and the calls go on with the next one.  An interrupted call
    is repeated, not counted.
    """
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
        sent = sendmmsg(fd, headers_address + start * stride, count - start, 0)


def parse_ttl_tos(control, start, length):
    """TTL (-1 when absent) and TOS (0) from the control messages in control[start:start + length]."""
    ttl = -1
    tos = 0
    header = CMSG_HEADER.size
    offset = start
    end = start + length
    while offset + header <= end:
        cmsg_len, level, kind = CMSG_HEADER.unpack_from(control, offset)
        if cmsg_len < header or offset + cmsg_len > end:
            break
        if level == socket.IPPROTO_IP:
            if kind == IP_TTL and cmsg_len >= header + 4:
                ttl = _INT.unpack_from(control, offset + header)[0]
            elif kind == IP_TOS and cmsg_len >= header + 1:
                tos = control[offset + header]
        offset += (cmsg_len + CMSG_ALIGN - 1) // CMSG_ALIGN * CMSG_ALIGN
    return ttl, tos
