"""Socket buffers without CAP_NET_ADMIN: what the kernel grants is what is reported.

- ``daemon.set_buffer`` falls back from the FORCE option to the plain one
  when the process may not force (no CAP_NET_ADMIN) and returns the size the
  kernel granted, never more than net.core.rmem_max then;
- the daemon logs the first buffer of each kind, a WARNING naming the sysctl
  when it is smaller than asked, and keeps the smallest for ``-P``;
- ``-P`` prints them in one line.
"""

import errno
import io
import logging
import socket

from multicast_proxy import admin, daemon


class NoForceSocket(object):
    """A socket whose FORCE options fail as they do for a process without CAP_NET_ADMIN."""

    def __init__(self, limit):
        self.limit = limit
        self.value = 0

    def setsockopt(self, level, option, value):
        if option in daemon._FORCED.values():
            raise OSError(errno.EPERM, "Operation not permitted")
        # The kernel caps the plain option and doubles it for its bookkeeping.
        self.value = 2 * min(value, self.limit)

    def getsockopt(self, level, option):
        return self.value


def test_without_force_the_plain_option_is_set_and_the_granted_size_returned():
    assert daemon.set_buffer(NoForceSocket(4 << 20), socket.SO_RCVBUF, 32 << 20) == 4 << 20
    assert daemon.set_buffer(NoForceSocket(64 << 20), socket.SO_RCVBUF, 32 << 20) == 32 << 20


def test_a_real_socket_reports_what_the_kernel_granted():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        granted = daemon.set_buffer(sock, socket.SO_RCVBUF, 1 << 20)
        assert 0 < granted and granted == sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
    finally:
        sock.close()


class Reporter(object):
    """The part of a Daemon that set_buffer uses."""

    set_buffer = daemon.Daemon.set_buffer

    def __init__(self):
        self.socket_buffers = {}
        self.lines = []
        self.log = logging.getLogger("test_socket_buffers")
        self.log.handlers = [logging.StreamHandler(self)]
        self.log.setLevel(logging.INFO)
        self.log.propagate = False

    def write(self, text):
        # Python 3.6's StreamHandler writes the line terminator in a call of its own.
        if text.strip():
            self.lines.append(text.strip())

    def flush(self):
        pass


def test_the_daemon_warns_once_per_smaller_buffer_and_keeps_the_smallest():
    reporter = Reporter()
    reporter.set_buffer(NoForceSocket(4 << 20), socket.SO_RCVBUF, 32 << 20)
    reporter.set_buffer(NoForceSocket(4 << 20), socket.SO_RCVBUF, 32 << 20)
    reporter.set_buffer(NoForceSocket(64 << 20), socket.SO_SNDBUF, 4 << 20)
    assert reporter.socket_buffers == {"receive": {"asked": 32 << 20, "granted": 4 << 20},
                                       "send": {"asked": 4 << 20, "granted": 4 << 20}}
    assert len(reporter.lines) == 2
    assert "4096 KiB of the 32768 KiB asked" in reporter.lines[0] and "net.core.rmem_max" in reporter.lines[0]
    assert reporter.lines[1] == "socket send buffers: 4096 KiB"


def test_minus_p_prints_the_buffers_and_what_to_raise():
    out = io.StringIO()
    admin.write_socket_buffers({"receive": {"asked": 32 << 20, "granted": 4 << 20},
                                "send": {"asked": 4 << 20, "granted": 4 << 20}}, out)
    assert out.getvalue() == "socket buffers: receive 4096 KiB (32768 KiB asked: raise net.core.rmem_max), " \
                             "send 4096 KiB\n"
    out = io.StringIO()
    admin.write_socket_buffers({}, out)
    assert out.getvalue() == ""
