"""playbooks/verify.yml on a VPC of network namespaces: every member at 100%
with the relay running, and a failure naming the member whose client stopped.

Each inventory host is a namespace: Ansible runs its modules (local
connection) through an interpreter wrapper that enters the namespace and puts
a copy of the relay package at /opt/multicast_proxy/lib (a tmpfs over /opt in
a mount namespace of its own, so the machine's /opt is never touched), where
the roles would have installed it.
"""

import os
import re
import shutil
import subprocess
import sys

from vpc import REPO

GROUP = "239.7.9.9"
GROUP_PORT = 47300
SERVER_PORT = 47301
COUNT = 300


def install_package(tmp_path):
    """The package as the common role installs it: files, symlinks resolved."""
    lib = tmp_path / "lib"
    shutil.copytree(REPO / "files" / "multicast_proxy", lib / "multicast_proxy",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return lib


def interpreter_for(host, lib, tmp_path):
    wrapper = tmp_path / ("python-" + host.name)
    wrapper.write_text(
        "#!/bin/sh\n"
        "exec ip netns exec %s unshare --mount sh -c "
        "'mount -t tmpfs tmpfs /opt && mkdir /opt/multicast_proxy && ln -s %s /opt/multicast_proxy/lib "
        "&& exec /usr/bin/python3 \"$@\"' python3 \"$@\"\n" % (host.netns, lib))
    wrapper.chmod(0o755)
    return wrapper


def write_inventory(tmp_path, src, members, lib):
    lines = [
        "all:",
        "  vars:",
        "    ansible_connection: local",
        "    multicast_proxy_groups:",
        "      - {name: probe, group_ip: %s, group_port: %d, server_port: %d," % (GROUP, GROUP_PORT, SERVER_PORT),
        "         senders: [%s], receivers: [%s]}" % (src.name, ", ".join(m.name for m in members)),
        "  hosts:",
    ]
    for host in [src] + members:
        lines += ["    %s:" % host.name,
                  "      ansible_python_interpreter: %s" % interpreter_for(host, lib, tmp_path)]
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("\n".join(lines) + "\n")
    return inventory


def run_verify(inventory, tmp_path, *extra):
    # The playbook uses the collection's filters: the checkout as multicast.proxy.
    collection = tmp_path / "collections" / "ansible_collections" / "multicast" / "proxy"
    if not collection.is_symlink():
        collection.parent.mkdir(parents=True)
        collection.symlink_to(REPO)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(tmp_path / "collections"),
               ANSIBLE_NOCOLOR="1", ANSIBLE_HOST_KEY_CHECKING="0",
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"), ANSIBLE_REMOTE_TEMP=str(tmp_path / "ansible-tmp"),
               ANSIBLE_ASYNC_DIR=str(tmp_path / "ansible-async"))
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", str(inventory),
            str(REPO / "playbooks" / "verify.yml"),
            "-e", "multicast_proxy_verify_count=%d" % COUNT, "-e", "multicast_proxy_verify_rate=500",
            "-e", "multicast_proxy_verify_idle_timeout=5", "-e", "multicast_proxy_verify_min_ratio=1.0"]
    return subprocess.run(argv + list(extra), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, env=env, timeout=600, check=False)


def row(output, member):
    """The figures of `member` (a static member: JOINED_BY config) in the table: sent, received, lost, dup,
    reordered, ratio."""
    match = re.search(r"probe +src +%s +(\d+) +(\d+) +(\d+) +(\d+) +(\d+) +\S+ +\S+ +config +([\d.]+)" % member,
                      output)
    assert match, "no row for %s in:\n%s" % (member, output)
    return tuple(int(value) for value in match.groups()[:5]) + (match.group(6),)


def test_verify_playbook_passes_then_names_the_member_without_client(make_vpc, tmp_path):
    vpc = make_vpc({"src": 1, "m1": 1, "m2": 1})
    src, m1, m2 = vpc["src"], vpc["m1"], vpc["m2"]
    # Exit code 3: saved, but no daemon runs yet to apply it.
    edits = [src.relay("multis_admin", "-A", "-m", GROUP, "-j", "%s,%s" % (m1.ip, m2.ip),
                       "-p", SERVER_PORT, "-g", GROUP_PORT, check=False)]
    for member in (m1, m2):
        edits.append(member.relay("multic_admin", "-A", "-i", src.ip, "-g", GROUP_PORT, "-s", SERVER_PORT,
                                  "-m", GROUP, check=False))
    assert [edit.returncode for edit in edits if edit.returncode not in (0, 3)] == [], [e.stderr for e in edits]
    src.start_relay("server")
    for member in (m1, m2):
        member.start_relay("client")
    inventory = write_inventory(tmp_path, src, [m1, m2], install_package(tmp_path))

    healthy = run_verify(inventory, tmp_path)
    assert healthy.returncode == 0, healthy.stdout
    for member in ("m1", "m2"):
        assert row(healthy.stdout, member) == (COUNT, COUNT, 0, 0, 0, "1.0000"), healthy.stdout

    m2.relays["client"].stop()
    broken = run_verify(inventory, tmp_path)
    assert broken.returncode == 2, broken.stdout
    assert row(broken.stdout, "m1") == (COUNT, COUNT, 0, 0, 0, "1.0000"), broken.stdout
    assert row(broken.stdout, "m2") == (COUNT, 0, COUNT, 0, 0, "0.0000"), broken.stdout
    assert ("1 stream(s) below multicast_proxy_verify_min_ratio 1.0 or damaged: "
            "m2 got 0 of %d from src in group probe" % COUNT) in broken.stdout
    # Nothing left behind: readiness marks and async job files are removed.
    assert tmp_path.joinpath("ansible-async").is_dir()
    assert not list(tmp_path.joinpath("ansible-async").glob("*"))
    assert not [name for name in os.listdir("/tmp") if name.startswith("multicast-proxy-verify-")]

    # Check mode probes nothing and says so.
    checked = run_verify(inventory, tmp_path, "--check")
    assert checked.returncode == 0, checked.stdout
    assert "in check mode it cannot, and nothing was probed" in checked.stdout
    assert "RECEIVED" not in checked.stdout
