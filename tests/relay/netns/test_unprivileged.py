"""Both daemons as the unprivileged user multicast-proxy, with only the capabilities their config needs.

The hosts are set up as the common role sets a host up: the system user and
group, the config directory root:multicast-proxy 1775, configs root's 0644,
the key file root:multicast-proxy 0640.  Each daemon starts through setpriv
with the user's uid and gid and exactly the capabilities
``relay_contract.needed_capabilities`` computes for its config (inheritable,
ambient and bounding set), as the rendered unit gives them:

- with them, a socket-mode group and a capture-mode group are both
  delivered, authenticated, from source port 868 (CAP_NET_BIND_SERVICE); the
  processes run as the user with no CAP_NET_ADMIN; root's commands reach the
  control sockets and another local user cannot;
- without CAP_NET_RAW, the capture group fails with one line that names the
  capability, and the socket-mode group is delivered all the same.
"""

import grp
import json
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "files"))

import vpc as vpc_module  # noqa: E402
from multicast_proxy import relay_config as config, relay_contract as contract  # noqa: E402

UDP_GROUP = "239.77.19.1"
CAPTURE_GROUP = "239.77.19.2"
UDP_PORT = 5191
CAPTURE_PORT = 5192
SERVER_PORT = 6191
SOURCE_PORT = 868
COUNT = 200
SECRET = bytes(range(32, 64))
USER = contract.SERVICE_USER
# The system Python: the pyenv interpreter under /root is not readable by others.
SYSTEM_PYTHON = "/usr/bin/python3"
NOBODY = "65534"
# Capability bits of /proc/PID/status.
CAP_BITS = {"CAP_NET_BIND_SERVICE": 10, "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13}
PREFIX = "priv"

TRY_CONNECT = (
    "import socket, sys; s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
    "try:\n    s.connect(sys.argv[1]); print('connected')\n"
    "except OSError as e:\n    print(e.__class__.__name__)"
)


@pytest.fixture(name="account", scope="module")
def fixture_account():
    """The system user and group the common role creates."""
    try:
        grp.getgrnam(contract.SERVICE_GROUP)
    except KeyError:
        subprocess.check_call(["groupadd", "--system", contract.SERVICE_GROUP])
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.check_call(["useradd", "--system", "--gid", contract.SERVICE_GROUP, "--no-create-home",
                               "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", USER])
    return pwd.getpwnam(USER)


@pytest.fixture(name="priv_vpc")
def fixture_priv_vpc(account, make_vpc):
    vpc_module.sweep_leftovers(PREFIX)

    def build(hosts):
        network = make_vpc(hosts, name_prefix=PREFIX)
        # mkdtemp's 0700 directories: the daemons' user must reach its config directory.
        os.chmod(str(network.workdir), 0o755)
        for host in network.hosts.values():
            os.chmod(str(host.workdir), 0o755)
            os.chown(str(host.conf_dir), 0, account.pw_gid)
            os.chmod(str(host.conf_dir), 0o1775)
        return network

    return build


def write_root_file(path, obj, mode=0o644, gid=0):
    """A file the role writes: root's, with its final mode and group from the first byte."""
    temporary = path.with_name("." + path.name + ".new")
    fd = os.open(str(temporary), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps(obj, indent=4) + "\n")
    os.chown(str(temporary), 0, gid)
    os.chmod(str(temporary), mode)
    os.replace(str(temporary), str(path))


def configure(vpc, account):
    source, member = vpc["src"], vpc["m1"]
    server_cfg = {"source_port": SOURCE_PORT, "multi_group_array": [
        {"group_ip": UDP_GROUP, "server_port": SERVER_PORT, "group_port": UDP_PORT, "member_array": [member.ip]},
        {"group_ip": CAPTURE_GROUP, "server_port": SERVER_PORT, "group_port": CAPTURE_PORT, "capture": True,
         "member_array": [member.ip]}]}
    client_cfg = {"multi_server_info_array": [
        {"server_ip": source.ip, "server_port": SERVER_PORT, "group_ip": group, "group_port": port,
         "source_port": SOURCE_PORT} for group, port in ((UDP_GROUP, UDP_PORT), (CAPTURE_GROUP, CAPTURE_PORT))]}
    write_root_file(source.conf_dir / config.SERVER_CONFIG_NAME, server_cfg)
    write_root_file(member.conf_dir / config.CLIENT_CONFIG_NAME, client_cfg)
    keys = {"send_key_id": 1, "keys": [{"id": 1, "secret": SECRET.hex()}]}
    for host in (source, member):
        write_root_file(host.conf_dir / config.AUTH_KEYS_NAME, keys, mode=0o640, gid=account.pw_gid)
    return (contract.needed_capabilities("server", config.validate_server_config(server_cfg)),
            contract.needed_capabilities("client", config.validate_client_config(client_cfg)))


def as_relay_user(account, capabilities, argv):
    """argv run as the unit runs it: the user's uid, gid and groups, these capabilities and no others."""
    caps = "".join(",+" + name[len("CAP_"):].lower() for name in capabilities)
    return ["setpriv", "--reuid=%d" % account.pw_uid, "--regid=%d" % account.pw_gid, "--init-groups",
            "--inh-caps=-all" + caps, "--ambient-caps=-all" + caps, "--bounding-set=-all" + caps] + argv


def start_relay(host, side, account, capabilities):
    command = vpc_module.RELAY_COMMANDS[side]
    argv = as_relay_user(account, capabilities, [SYSTEM_PYTHON, "-m", "multicast_proxy", command, "-R"])
    process = host.start(command, argv, env=host.relay_env())
    host.wait_control_socket(host.conf_dir / vpc_module.CONTROL_SOCKETS[side], process)
    host.relays[side] = process
    return process


def process_status(process):
    """Uid and capability sets of a process, from /proc (setpriv and ip netns exec exec, so it is the relay)."""
    fields = {}
    for line in Path("/proc/%d/status" % process.pid).read_text().splitlines():
        name, _colon, value = line.partition(":")
        fields[name] = value.strip()
    return fields


def capability_bits(capabilities):
    return sum(1 << CAP_BITS[name] for name in capabilities)


def deliver(vpc, group, port, stream_id):
    receiver = vpc["m1"].start_receiver("recv-%d" % stream_id, group, port, expect=COUNT, idle_timeout=5)
    assert vpc["src"].send(group, port, COUNT, rate=2000, stream_id=stream_id)["sent"] == COUNT
    return receiver.json_result()


def groups_by_ip(host):
    return {group["group_ip"]: group for group in host.control("server", {"cmd": "stats"})["groups"]}


def test_daemons_run_unprivileged_with_only_their_capabilities(priv_vpc, account):
    vpc = priv_vpc({"src": 1, "m1": 1})
    source, member = vpc["src"], vpc["m1"]
    server_caps, client_caps = configure(vpc, account)
    assert server_caps == ["CAP_NET_BIND_SERVICE", "CAP_NET_RAW"] and client_caps == []
    client = start_relay(member, "client", account, client_caps)
    server = start_relay(source, "server", account, server_caps)

    for process, capabilities in ((server, server_caps), (client, client_caps)):
        status = process_status(process)
        assert set(status["Uid"].split()) == {str(account.pw_uid)}, status
        for field in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
            assert int(status[field], 16) == capability_bits(capabilities), (field, status[field])

    for stream_id, (group, port) in enumerate(((UDP_GROUP, UDP_PORT), (CAPTURE_GROUP, CAPTURE_PORT)), start=1):
        summary = deliver(vpc, group, port, stream_id)
        assert summary["unique"] == COUNT and summary["corrupt"] == 0 and summary["duplicates"] == 0, (group, summary)

    # Authenticated, from the fixed source port: the key file (0640) and port 868 worked.
    stats = member.control("client", {"cmd": "stats"})
    assert stats["auth_status"]["keys"] and not stats["auth_status"]["refusing"], stats["auth_status"]
    assert not any(stats["drops"].get(reason) for reason in ("auth_missing", "auth_bad", "source_port")), stats
    assert sum(stats["auth"]["accepted_by_key"].values()) >= 2 * COUNT, stats["auth"]
    server_stats = source.control("server", {"cmd": "stats"})
    assert server_stats["sender"] == {"source_port": SOURCE_PORT, "bound_port": SOURCE_PORT, "error": ""}
    # Buffers: the kernel's limit, reported (no CAP_NET_ADMIN to exceed net.core.rmem_max).
    rmem_max = int(Path("/proc/sys/net/core/rmem_max").read_text())
    receive = server_stats["socket_buffers"]["receive"]
    assert receive["granted"] == min(receive["asked"], rmem_max), receive

    # root's commands reach the daemons' sockets; another local user cannot.
    shown = source.relay("multis_admin", "-P").stdout
    assert "source port: copies leave from UDP port %d" % SOURCE_PORT in shown, shown
    assert "socket buffers: receive %d KiB" % (receive["granted"] >> 10) in shown, shown
    assert "authentication: on" in member.relay("multic_admin", "-P").stdout
    for host, side in ((source, "server"), (member, "client")):
        path = host.conf_dir / vpc_module.CONTROL_SOCKETS[side]
        info = os.stat(str(path))
        assert info.st_uid == account.pw_uid and info.st_mode & 0o077 == 0, oct(info.st_mode)
        other = host.run(["setpriv", "--reuid=" + NOBODY, "--regid=" + NOBODY, "--clear-groups", "--inh-caps=-all",
                          SYSTEM_PYTHON, "-c", TRY_CONNECT, path]).stdout.strip()
        assert other == "PermissionError", other


def test_capture_without_cap_net_raw_fails_loudly_for_that_group_only(priv_vpc, account):
    vpc = priv_vpc({"src": 1, "m1": 1})
    source, member = vpc["src"], vpc["m1"]
    server_caps, client_caps = configure(vpc, account)
    start_relay(member, "client", account, client_caps)
    server = start_relay(source, "server", account, [cap for cap in server_caps if cap != "CAP_NET_RAW"])

    groups = groups_by_ip(source)
    assert groups[UDP_GROUP]["state"] == "joined", groups[UDP_GROUP]
    assert groups[CAPTURE_GROUP]["state"] == "error"
    assert "capture mode needs CAP_NET_RAW, which this daemon lacks" in groups[CAPTURE_GROUP]["error"]
    # One error line, naming the group and the capability (the start's summary repeats it as data).
    lines = [line for line in server.stderr().splitlines() if line.startswith("ERROR") and "CAP_NET_RAW" in line]
    assert len(lines) == 1 and lines[0].startswith("ERROR group %s: " % CAPTURE_GROUP), lines

    summary = deliver(vpc, UDP_GROUP, UDP_PORT, 1)
    assert summary["unique"] == COUNT and summary["corrupt"] == 0, summary
    assert server.running()
    # The -P table says so too, for the operator.
    assert "CAP_NET_RAW" in source.relay("multis_admin", "-S").stdout + source.relay("multis_admin", "-P").stdout
