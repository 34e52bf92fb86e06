# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The server where ctypes cannot be loaded (issue 14.10).

Only capture mode needs ctypes: a plain group must relay through the
per-datagram path, and a capture group must be refused alone, with a message
that says why, while the other groups serve.
"""

import json
import os
import socket
import subprocess
import sys

from multicast_proxy import relay_config as config, frame
from test_daemon import FILES_DIR, free_udp_port, lo_sender, random_group, wait_for

# Run the relay as multis_admin -R with the ctypes import failing, as in a
# Python built without it.
WITHOUT_CTYPES = ("import sys; sys.modules['ctypes'] = None; "
                  "from multicast_proxy.__main__ import main; sys.exit(main(['multis_admin', '-R']))")


def test_server_relays_without_ctypes_and_refuses_only_the_capture_group(tmp_path):
    plain, captured = random_group(), random_group()
    group_port = free_udp_port()
    member = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    member.bind(("127.0.0.1", 0))
    member.settimeout(5)
    server_port = member.getsockname()[1]
    (tmp_path / config.SERVER_CONFIG_NAME).write_text(json.dumps({"multi_group_array": [
        {"group_ip": plain, "group_port": group_port, "server_port": server_port, "member_array": ["127.0.0.1"],
         "interface": "lo"},
        {"group_ip": captured, "group_port": free_udp_port(), "server_port": server_port,
         "member_array": ["127.0.0.1"], "interface": "lo", "capture": True}]}))
    env = dict(os.environ, PYTHONPATH=FILES_DIR, MULTICAST_CONF_DIR=str(tmp_path))
    env.pop("NOTIFY_SOCKET", None)
    proc = subprocess.Popen([sys.executable, "-c", WITHOUT_CTYPES], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True)
    sender = lo_sender()
    try:
        from multicast_proxy import daemon
        wait_for(lambda: proc.poll() is not None or daemon.daemon_running("server", str(tmp_path)),
                 "the server without ctypes to answer ping")
        assert proc.poll() is None, proc.communicate()
        sender.sendto(b"no ctypes", (plain, group_port))
        relayed = frame.decode(member.recv(70000))
        assert (relayed.group_ip, relayed.payload) == (plain, b"no ctypes")
        groups = {g["group_ip"]: g for g in daemon.request("server", {"cmd": "stats"}, str(tmp_path))["groups"]}
        assert "capture mode needs Python's ctypes module" in groups[captured]["error"]
        assert not groups[plain]["error"]
        log = (tmp_path / "server_log.txt").read_text()
        assert "sending copies with sendto" in log
    finally:
        sender.close()
        member.close()
        if proc.poll() is None:
            proc.terminate()
        _out, err = proc.communicate(timeout=20)
    assert "Traceback" not in err
