"""The metrics endpoint seen by an attacker on the VPC (network namespaces).

`srv` runs the server relay for `m1` (client + receiver); `atk` is another
host of the VPC that is no member.  A loopback endpoint must be out of the
peer's reach; an endpoint on the VPC address must survive a connection
flood and half-sent requests without the relay losing a datagram, and must
answer malformed requests with the right status.  The limits come from
files/multicast_proxy/metrics.py (MAX_CONNECTIONS, MAX_REQUEST).
"""

import json
import sys
import time

import pytest

from vpc import RELAY_SOURCE

sys.path.insert(0, str(RELAY_SOURCE))

from multicast_proxy import metrics  # noqa: E402  (needs the path above)

GROUP = "239.77.17.1"
GROUP_PORT = 5017
SERVER_PORT = 6017
METRICS_PORT = 9471
DATAGRAMS = 2000
FLOOD = 20
HALF_OPEN = 3
HALF_REQUEST = "GET /metrics HTTP/1.1\r\nHost: relay\r\n"

# Runs inside a namespace: one raw HTTP exchange.  stdin: JSON {address, port, request};
# prints JSON {status, headers, body, reset} or {status: None, error}.  `reset`: the
# connection ended with a reset after (part of) the reply instead of an orderly close.
EXCHANGE = r"""
import json, socket, sys
job = json.load(sys.stdin)
reply, reset = b"", False
try:
    with socket.create_connection((job["address"], job["port"]), timeout=5) as sock:
        sock.sendall(job["request"].encode("latin-1"))
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                if not reply:
                    raise
                reset = True
                break
            if not chunk:
                break
            reply += chunk
except OSError as error:
    print(json.dumps({"status": None, "error": "%s: %s" % (type(error).__name__, error), "errno": error.errno}))
    sys.exit(0)
head, _, body = reply.partition(b"\r\n\r\n")
lines = head.decode("latin-1").split("\r\n")
status = int(lines[0].split()[1]) if lines[0].startswith("HTTP/1.") else None
headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
print(json.dumps({"status": status, "headers": headers, "body": body.decode("utf-8", "replace"), "reset": reset}))
"""

# Runs inside a namespace: open argv[3] connections to argv[1]:argv[2], send argv[4] on each,
# hold them.  Writes the ready file argv[5] with what the server did to them after a
# second; on SIGTERM prints the same as JSON and exits.
HOLD = r"""
import json, signal, socket, sys, time
address, port, count, prefix, ready = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
socks = []
for _ in range(count):
    sock = socket.create_connection((address, port), timeout=5)
    if prefix:
        sock.sendall(prefix.encode("ascii"))
    # A socket with a timeout would wait in poll() before a MSG_DONTWAIT recv.
    sock.setblocking(False)
    socks.append(sock)

def state():
    counts = {"opened": len(socks), "open": 0, "closed": 0, "answered": 0}
    for sock in socks:
        try:
            data = sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            counts["open"] += 1
            continue
        except OSError:
            counts["closed"] += 1
            continue
        counts["answered" if data else "closed"] += 1
    return counts

def finish(*_):
    print(json.dumps(state()), flush=True)
    sys.exit(0)

signal.signal(signal.SIGTERM, finish)
time.sleep(1.0)
with open(ready + ".tmp", "w") as handle:
    json.dump(state(), handle)
import os
os.rename(ready + ".tmp", ready)
while True:
    time.sleep(1)
"""


def relay_edit(host, command, *args):
    """An edit made before the daemon runs is saved and reported with exit code 3."""
    result = host.relay(command, *args, check=False)
    assert result.returncode in (0, 3), (command, args, result.stdout, result.stderr)
    return result


def exchange(host, address, request, port=METRICS_PORT):
    result = host.run([sys.executable, "-c", EXCHANGE],
                      input_text=json.dumps({"address": address, "port": port, "request": request}))
    return json.loads(result.stdout.strip().splitlines()[-1])


def get(host, address, path="/metrics", method="GET"):
    return exchange(host, address, "%s %s HTTP/1.1\r\nHost: relay\r\n\r\n" % (method, path))


def hold(host, address, count, prefix=""):
    """Start HOLD in `host`; returns (process, the state it saw a second after connecting)."""
    ready = host.workdir / ("hold-%d.json" % len(host.vpc.processes))
    process = host.start("hold", [sys.executable, "-c", HOLD, address, METRICS_PORT, count, prefix, ready])
    deadline = time.monotonic() + 15
    while not ready.exists():
        assert process.running() and time.monotonic() < deadline, process.describe()
        time.sleep(0.05)
    return process, json.loads(ready.read_text())


def release(process):
    """SIGTERM the holder; the state of its connections just before it closed them."""
    process.popen.terminate()
    process.wait()
    return json.loads(process.stdout().strip().splitlines()[-1])


def metrics_status(host):
    return json.loads(host.relay("multis_admin", "-P", "--json").stdout)["metrics"]


def relay_stream(vpc, stream_id):
    """A stream from srv to m1 through the relay; asserts every datagram arrived."""
    receiver = vpc["m1"].start_receiver("mcrecv-%d" % stream_id, GROUP, GROUP_PORT, expect=DATAGRAMS,
                                        idle_timeout=2)
    sent = vpc["srv"].send(GROUP, GROUP_PORT, DATAGRAMS, rate=4000, stream_id=stream_id)
    assert sent["sent"] == DATAGRAMS
    summary = receiver.json_result()
    assert summary["unique"] == DATAGRAMS and summary["corrupt"] == 0 and summary["duplicates"] == 0, summary


def build(make_vpc, metrics_flags):
    vpc = make_vpc({"srv": 1, "m1": 1, "atk": 1})
    server, member = vpc["srv"], vpc["m1"]
    relay_edit(server, "multis_admin", "-A", "-m", GROUP, "-j", member.ip, "-p", SERVER_PORT, "-g", GROUP_PORT)
    relay_edit(member, "multic_admin", "-A", "-i", server.ip, "-g", GROUP_PORT, "-s", SERVER_PORT, "-m", GROUP)
    member.start_relay("client")
    server.start_relay("server", *metrics_flags(server))
    return vpc


@pytest.fixture
def exposed(make_vpc):
    """The server's endpoint on its VPC address, where every host of the VPC can reach it."""
    return build(make_vpc, lambda server: ["--metrics", "%s:%d" % (server.ip, METRICS_PORT)])


def test_loopback_endpoint_is_out_of_a_peers_reach(make_vpc):
    vpc = make_vpc({"srv": 1, "atk": 1})
    server, attacker = vpc["srv"], vpc["atk"]
    relay_edit(server, "multis_admin", "-A", "-m", GROUP, "-j", attacker.ip, "-p", SERVER_PORT, "-g", GROUP_PORT)
    relay_edit(server, "multis_admin", "--set", "metrics_listen=127.0.0.1:%d" % METRICS_PORT)
    server.start_relay("server")

    assert get(server, "127.0.0.1")["status"] == 200
    for host, address in ((attacker, server.ip), (server, server.ip), (attacker, "127.0.0.1")):
        reply = get(host, address)
        assert reply["status"] is None and "ConnectionRefusedError" in reply["error"], (host.name, address, reply)

    # Moved to the VPC address on the running daemon: now the peer reaches it, loopback does not.
    relay_edit(server, "multis_admin", "--set", "metrics_listen=%s:%d" % (server.ip, METRICS_PORT))
    assert get(attacker, server.ip)["status"] == 200
    assert "ConnectionRefusedError" in get(server, "127.0.0.1")["error"]


def test_connection_flood_does_not_stop_the_relay(exposed):
    vpc = exposed
    server, attacker = vpc["srv"], vpc["atk"]
    holder, seen = hold(attacker, server.ip, FLOOD)
    assert seen == {"opened": FLOOD, "open": metrics.MAX_CONNECTIONS, "closed": FLOOD - metrics.MAX_CONNECTIONS,
                    "answered": 0}, seen

    relay_stream(vpc, 1)
    assert metrics_status(server)["refused_connections"] >= FLOOD - metrics.MAX_CONNECTIONS
    assert server.relays["server"].running()

    release(holder)
    reply = get(attacker, server.ip)
    assert reply["status"] == 200, reply
    assert 'multicast_proxy_server_received_datagrams_total{group="%s"} %d\n' % (GROUP, DATAGRAMS) in reply["body"]


def test_half_sent_requests_hold_nothing_the_relay_needs(exposed):
    vpc = exposed
    server, attacker = vpc["srv"], vpc["atk"]
    assert HALF_OPEN < metrics.MAX_CONNECTIONS
    holder, seen = hold(attacker, server.ip, HALF_OPEN, HALF_REQUEST)
    assert seen == {"opened": HALF_OPEN, "open": HALF_OPEN, "closed": 0, "answered": 0}, seen

    relay_stream(vpc, 2)
    # The one connection left is enough for scrapes, one after another.
    for _attempt in range(3):
        reply = get(attacker, server.ip)
        assert reply["status"] == 200 and "multicast_proxy_server_groups 1\n" in reply["body"], reply

    # Still held, still unanswered: nothing reads more of them or closes them before the deadline.
    assert release(holder) == seen


def test_malformed_requests_get_their_status(exposed):
    server, attacker = exposed["srv"], exposed["atk"]
    huge = "GET /metrics HTTP/1.1\r\nHost: relay\r\nX-Pad: %s\r\n\r\n" % ("a" * (metrics.MAX_REQUEST + 1024))
    reply = exchange(attacker, server.ip, huge)
    # Only the status is checked: the daemon closes with the rest of the request unread,
    # so the kernel ends the connection with a reset after the reply (reply["reset"]).
    assert reply["status"] == 431, reply

    reply = get(attacker, server.ip, method="POST")
    assert reply["status"] == 405 and reply["headers"].get("Allow") == "GET, HEAD", reply
    assert get(attacker, server.ip, method="DELETE")["status"] == 405
    reply = get(attacker, server.ip, path="/admin")
    assert reply["status"] == 404 and "/metrics" in reply["body"], reply
    assert exchange(attacker, server.ip, "garbage\r\n\r\n")["status"] == 400

    reply = get(attacker, server.ip, method="HEAD")
    assert reply["status"] == 200 and reply["body"] == "", reply
    assert reply["headers"]["Content-Type"] == metrics.CONTENT_TYPE
    assert get(attacker, server.ip, path="/")["status"] == 200
    # None of it disturbed the relay.
    assert server.relays["server"].running()
    relay_stream(exposed, 3)
