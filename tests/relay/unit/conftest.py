"""Unit tests import the relay package from the checkout's files/ directory.

Shared fixtures: members bound on loopback, and a non-blocking sender.
"""

import os
import socket
import sys

import pytest

FILES_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "files"))
if FILES_DIR not in sys.path:
    sys.path.insert(0, FILES_DIR)

# Addresses of the loopback members; every 127/8 address is local on Linux.
LOOPBACK_MEMBERS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")


@pytest.fixture
def receivers():
    """(ips, port, sockets): one socket per loopback member address, all on one free port.

    Each has a 4 MiB receive buffer (what the kernel's limit allows) for long bursts.
    """
    socks = []
    try:
        first = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        socks.append(first)
        first.bind((LOOPBACK_MEMBERS[0], 0))
        port = first.getsockname()[1]
        for ip in LOOPBACK_MEMBERS[1:]:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(sock)
            sock.bind((ip, port))
        for sock in socks:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.settimeout(2)
        yield LOOPBACK_MEMBERS, port, socks
    finally:
        for sock in socks:
            sock.close()


@pytest.fixture
def sender():
    """A non-blocking UDP socket to fan out through."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    yield sock
    sock.close()
