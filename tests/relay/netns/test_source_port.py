"""Issue 14.7: a local user of the server host cannot forge frames from its address.

Without keys, a member accepted any frame that came from its server's
address; every user of the server host can send from it.  With the server's
copies leaving from a fixed source port (held without SO_REUSEADDR, below
1024) and the member's entry requiring that port, the forged frames are
dropped as ``source_port`` while the genuine stream arrives whole.  The same
forgery against an entry without the check is delivered: the control that
shows the attack is real.
"""

import json
import sys

import vpc as vpc_module
from vpc import wait_until

sys.path.insert(0, str(vpc_module.RELAY_SOURCE))

from multicast_proxy import frame  # noqa: E402

GROUP = "239.77.14.7"
GROUP_PORT = 5147
SERVER_PORT = 6147
SOURCE_PORT = 868
FORGED = 40
GENUINE = 300
NOBODY = "65534"
# The system Python: the pyenv interpreter under /root is not readable by nobody.
SYSTEM_PYTHON = "/usr/bin/python3"

# argv: bind address, destination, port, hex datagrams...; prints the port it sent from.
SEND_DATAGRAMS = (
    "import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], 0)); "
    "[s.sendto(bytes.fromhex(h), (sys.argv[2], int(sys.argv[3]))) for h in sys.argv[4:]]; "
    "print(s.getsockname()[1])"
)
# argv: address, port, SO_REUSEADDR (0/1); prints "bound" or the errno name.
TRY_BIND = (
    "import errno, socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
    "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, int(sys.argv[3]))\n"
    "try:\n    s.bind((sys.argv[1], int(sys.argv[2]))); print('bound')\n"
    "except OSError as e:\n    print(errno.errorcode[e.errno])"
)


def as_nobody(argv):
    return ["setpriv", "--reuid=" + NOBODY, "--regid=" + NOBODY, "--clear-groups", "--inh-caps=-all"] + argv


def forged_frames(source_ip, first_seq):
    # Well-formed, untagged, for the right group, "from" a sender on the server host.
    return [frame.encode(GROUP, GROUP_PORT, source_ip, 4000, seq, b"forged %d" % seq).hex()
            for seq in range(first_seq, first_seq + FORGED)]


def forge(source, member, first_seq):
    """A local user (nobody) of the server host sends frames from the server's address; the port it used."""
    result = source.run(as_nobody([SYSTEM_PYTHON, "-c", SEND_DATAGRAMS, source.ip, member.ip, str(SERVER_PORT)]
                                  + forged_frames(source.ip, first_seq)))
    return int(result.stdout.split()[-1])


def try_bind(host, address, port, reuse, unprivileged):
    argv = [SYSTEM_PYTHON, "-c", TRY_BIND, address, str(port), str(reuse)]
    return host.run(as_nobody(argv) if unprivileged else argv).stdout.strip()


def client_drops(member):
    return json.loads(member.relay("multic_admin", "-P", "--json").stdout)["drops"]


def test_frames_forged_from_the_server_address_are_refused_by_source_port(make_vpc):
    vpc = make_vpc({"src": 1, "m1": 1})
    source, member = vpc["src"], vpc["m1"]
    for result in (source.relay("multis_admin", "-A", "-m", GROUP, "-j", member.ip, "-p", SERVER_PORT, "-g",
                                GROUP_PORT, check=False),
                   source.relay("multis_admin", "--set", "source_port=%d" % SOURCE_PORT, check=False),
                   member.relay("multic_admin", "-A", "-i", source.ip, "-g", GROUP_PORT, "-s", SERVER_PORT, "-m",
                                GROUP, "--source-port", SOURCE_PORT, check=False)):
        assert result.returncode == 3, result      # saved; the daemons start below
    member.start_relay("client")
    source.start_relay("server")

    # The port is the relay's: nobody can bind it, root neither while the relay holds it.
    assert try_bind(source, "0.0.0.0", SOURCE_PORT, 1, unprivileged=True) == "EACCES"
    assert try_bind(source, source.ip, SOURCE_PORT, 1, unprivileged=False) == "EADDRINUSE"
    assert try_bind(source, "0.0.0.0", SOURCE_PORT, 0, unprivileged=False) == "EADDRINUSE"

    receiver = member.start_receiver("mcrecv", GROUP, GROUP_PORT, expect=GENUINE, idle_timeout=4)
    used = forge(source, member, 1)
    assert used != SOURCE_PORT
    wait_until(lambda: client_drops(member)["source_port"] >= FORGED, "the forged frames to be counted")
    source.send(GROUP, GROUP_PORT, GENUINE, rate=1000)
    summary = receiver.json_result()
    assert summary["unique"] == GENUINE and summary["foreign"] == 0 and summary["corrupt"] == 0, summary
    reported = json.loads(member.relay("multic_admin", "-P", "--json").stdout)
    assert reported["drops"]["source_port"] == FORGED, reported["drops"]
    assert reported["drops"]["unknown_server"] == 0
    (entry,) = reported["entries"]
    assert entry["source_port"] == SOURCE_PORT and entry["rx_packets"] == GENUINE, entry
    shown = source.relay("multis_admin", "-P").stdout
    assert "source port: copies leave from UDP port %d" % SOURCE_PORT in shown, shown

    # The control: the same forgery against an entry that names no source port is delivered.
    assert member.relay("multic_admin", "-A", "-i", source.ip, "-g", GROUP_PORT, "-s", SERVER_PORT, "-m", GROUP,
                        "--source-port", "0").returncode == 0
    (entry,) = json.loads(member.relay("multic_admin", "-P", "--json").stdout)["entries"]
    assert entry["source_port"] is None, entry
    fooled = member.start_receiver("fooled", GROUP, GROUP_PORT, idle_timeout=3)
    forge(source, member, 10 ** 6)
    summary = fooled.json_result()
    assert summary["foreign"] == FORGED, summary
    assert client_drops(member)["source_port"] == FORGED
    print("forged from the server's address: %d refused with source_port, %d delivered without it; "
          "genuine %d of %d" % (FORGED, FORGED, GENUINE, GENUINE))
