"""The applications of tests/relay/netns/test_dynamic_churn.py: one process for every member namespace.

    churn_app.py PLAN.json RESULT.json READY_FILE

Run as root in the root namespace.  For each join of the plan it enters the
member's network namespace (setns on /run/netns/NAME, this thread only),
opens a UDP socket there, binds it to the group and port and joins the
group with IP_ADD_MEMBERSHIP (so the member's /proc/net/igmp lists it and
its relay client subscribes), then returns to its own namespace; a leave
closes the socket (the kernel drops the membership).  One process and one
epoll for all members keeps 64 "applications" cheap on a small machine; to
the member's relay client each is a local application like any other.

The plan (JSON): {"group", "port", "members": {name: netns}, "start": [name, ...]
joined at once, "events": [[monotonic time, name, "join" | "leave"], ...],
"end": monotonic time}.  The result, written at the end: per member the
sessions [{"joined", "left", "first", "count", "first_number", "last_number",
"duplicates", "out_of_order"}], with CLOCK_MONOTONIC times (one clock for
every namespace of the machine), arrival times of the first datagram and
the datagram numbers of the stream (8 bytes, big-endian: dyn_probe.py send).

Standard library only.
"""

import ctypes
import json
import os
import select
import socket
import struct
import sys
import time

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def setns(fd):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))


class Session:
    def __init__(self, joined):
        self.joined = joined
        self.left = None
        self.first = None
        self.count = 0
        self.first_number = None
        self.last_number = None
        self.duplicates = 0
        self.out_of_order = 0

    def take(self, now, number):
        if self.first is None:
            self.first = now
            self.first_number = number
        elif number <= self.last_number:
            if number == self.last_number:
                self.duplicates += 1
            else:
                self.out_of_order += 1
            return
        self.count += 1
        self.last_number = number

    def as_dict(self):
        keys = ("joined", "left", "first", "count", "first_number", "last_number", "duplicates", "out_of_order")
        return dict((key, getattr(self, key)) for key in keys)


def main():
    plan_path, result_path, ready_path = sys.argv[1:4]
    with open(plan_path) as handle:
        plan = json.load(handle)
    group, port = plan["group"], plan["port"]
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    netns_fds = dict((name, os.open("/run/netns/" + netns, os.O_RDONLY)) for name, netns in plan["members"].items())
    membership = socket.inet_aton(group) + socket.inet_aton("0.0.0.0")
    poller = select.epoll()
    sockets = {}        # name -> socket while joined
    by_fd = {}          # fd -> (name, socket, session)
    sessions = dict((name, []) for name in plan["members"])

    def join(name):
        setns(netns_fds[name])
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.bind((group, port))
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
        finally:
            setns(home)
        session = Session(time.monotonic())
        sessions[name].append(session)
        sockets[name] = sock
        by_fd[sock.fileno()] = (name, sock, session)
        poller.register(sock.fileno(), select.EPOLLIN)

    def leave(name):
        sock = sockets.pop(name)
        _name, _sock, session = by_fd.pop(sock.fileno())
        poller.unregister(sock.fileno())
        session.left = time.monotonic()
        sock.close()

    def drain(fd):
        _name, sock, session = by_fd[fd]
        while True:
            try:
                data = sock.recv(64)
            except (BlockingIOError, InterruptedError):
                return
            if len(data) == 8:
                session.take(time.monotonic(), struct.unpack("!Q", data)[0])

    for name in plan["start"]:
        join(name)
    with open(ready_path, "w"):
        pass
    events = sorted(plan["events"])
    index = 0
    while True:
        now = time.monotonic()
        while index < len(events) and events[index][0] <= now:
            _when, name, kind = events[index]
            index += 1
            if kind == "join":
                join(name)
            elif name in sockets:
                leave(name)
        if now >= plan["end"]:
            break
        following = events[index][0] if index < len(events) else plan["end"]
        for fd, _mask in poller.poll(max(0.0, min(0.02, following - now))):
            if fd in by_fd:
                drain(fd)
    for name in list(sockets):
        leave(name)
    with open(result_path + ".tmp", "w") as handle:
        json.dump(dict((name, [s.as_dict() for s in items]) for name, items in sessions.items()), handle)
    os.rename(result_path + ".tmp", result_path)


if __name__ == "__main__":
    main()
