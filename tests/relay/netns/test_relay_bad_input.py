"""Bad flags, bad addresses and bad JSON: refused with a clear message, nothing changed.

The command-line cases need no daemon and no network; they live here, with
the multi-host tests, because the last test checks the same promise against a
running relay in a VPC: an invalid hand-edited file is refused by
`server_reload_list reload` and the daemon keeps relaying with the old config.
"""

import os
import signal
import subprocess

import pytest
import vpc as vpc_module

GROUP = "239.77.1.1"
VALID_SERVER_EDIT = ["multis_admin", "-A", "-m", GROUP, "-j", "10.77.0.11,10.77.0.12", "-p", "6001", "-g", "5001"]
VALID_CLIENT_EDIT = ["multic_admin", "-A", "-i", "10.77.0.10", "-g", "5001", "-s", "6001", "-m", GROUP]


def relay_command(conf_dir, argv, input_text=None):
    env = dict(os.environ, PYTHONPATH=str(vpc_module.RELAY_SOURCE), MULTICAST_CONF_DIR=str(conf_dir))
    return subprocess.run([vpc_module.RELAY_PYTHON, "-m", "multicast_proxy"] + argv, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          input=input_text, timeout=30, check=False)


def snapshot(conf_dir):
    """Every config file's bytes; lock files are empty by design and left out."""
    return {path.name: path.read_bytes() for path in sorted(conf_dir.iterdir()) if not path.name.startswith(".")}


@pytest.fixture
def configured(tmp_path):
    """A config directory with one valid server group and one valid client entry (no daemon)."""
    for argv in (VALID_SERVER_EDIT, VALID_CLIENT_EDIT):
        result = relay_command(tmp_path, argv)
        assert result.returncode == 3, result  # saved; no daemon running
    return tmp_path


@pytest.mark.parametrize(
    "argv, names_the_problem",
    [
        (["multis_admin", "-X"], "-X"),
        (["multis_admin", "-A", "-D", "-m", GROUP], "together"),
        (["multis_admin", "-A", "-m", "10.1.1.1", "-j", "10.77.0.13", "-p", "6001"], "10.1.1.1"),
        (["multis_admin", "-A", "-m", GROUP, "-j", "10.77.0.300", "-p", "6001"], "10.77.0.300"),
        (["multis_admin", "-A", "-m", GROUP, "-j", "10.77.0.13,239.1.1.1", "-p", "6001"], "239.1.1.1"),
        (["multis_admin", "-A", "-m", GROUP, "-j", "0.0.0.0", "-p", "6001"], "0.0.0.0"),
        (["multis_admin", "-A", "-m", GROUP, "-j", "255.255.255.255", "-p", "6001"], "255.255.255.255"),
        (["multis_admin", "-A", "-m", GROUP, "-j", "10.77.0.13", "-p", "70000"], "70000"),
        (["multis_admin", "-A", "-m", GROUP, "-j", "10.77.0.13", "-p", "abc"], "abc"),
        (["multis_admin", "-A", "-m", "239.77.9.9", "-j", "10.77.0.13"], "-p"),
        (["multic_admin", "-Z"], "-Z"),
        (["multic_admin", "-A", "-i", "239.1.1.1", "-g", "5002", "-s", "6002", "-m", GROUP], "239.1.1.1"),
        (["multic_admin", "-A", "-i", "10.77.0.10", "-g", "0", "-s", "6002", "-m", GROUP], '"0"'),
        (["multic_admin", "-A", "-i", "10.77.0.10", "-g", "5002", "-s", "6002", "-m", "10.0.0.1"], "10.0.0.1"),
        (["multic_admin", "-A", "-i", "10.77.0.999", "-g", "5002", "-s", "6002", "-m", GROUP], "10.77.0.999"),
        (["multic_admin", "-A", "-i", "10.77.0.10", "-g", "5002", "-m", GROUP], "-s"),
    ],
)
def test_bad_command_line_is_refused_and_changes_nothing(configured, argv, names_the_problem):
    before = snapshot(configured)
    result = relay_command(configured, argv)
    assert result.returncode == 2, result
    assert names_the_problem in result.stderr, result.stderr
    assert snapshot(configured) == before


@pytest.mark.parametrize("program, filename", [("multis_admin", "server_cfg.json.txt"),
                                               ("multic_admin", "client_cfg.json.txt")])
@pytest.mark.parametrize(
    "broken, names_the_problem",
    [
        ('{"multi_group_array": [', "invalid JSON"),
        ("[]", ""),
        ('{"multi_group_aray": [], "multi_server_info_aray": []}', "aray"),
    ],
)
def test_hand_edited_bad_file_blocks_edits_and_stays_as_written(configured, program, filename, broken,
                                                                names_the_problem):
    (configured / filename).write_text(broken)
    before = snapshot(configured)
    edit = {"multis_admin": VALID_SERVER_EDIT, "multic_admin": VALID_CLIENT_EDIT}[program]
    result = relay_command(configured, edit)
    assert result.returncode == 2, result
    assert filename in result.stderr and names_the_problem in result.stderr, result.stderr
    assert snapshot(configured) == before

    checked = relay_command(configured, [program, "--check-config", str(configured / filename)])
    assert checked.returncode == 2, checked
    assert names_the_problem in checked.stderr, checked.stderr


def test_invalid_hand_edit_is_refused_by_reload_and_the_daemon_keeps_relaying(make_vpc):
    vpc = make_vpc({"src": 1, "m1": 1})
    source, member = vpc["src"], vpc["m1"]
    assert source.relay("multis_admin", "-A", "-m", GROUP, "-j", member.ip, "-p", 6001, "-g", 5001,
                        check=False).returncode == 3
    assert member.relay("multic_admin", "-A", "-i", source.ip, "-g", 5001, "-s", 6001, "-m", GROUP,
                        check=False).returncode == 3
    member.start_relay("client")
    server = source.start_relay("server")

    config_file = source.conf_dir / "server_cfg.json.txt"
    good = config_file.read_text()
    invalid_edits = [
        good.replace(member.ip, "10.77.0.300"),  # bad address
        good.replace('"server_port": 6001', '"server_port": 0'),  # bad port
        good[: len(good) // 2],  # truncated JSON
    ]
    for invalid in invalid_edits:
        config_file.write_text(invalid)
        reload_ = source.relay("server_reload_list", "reload", check=False)
        assert reload_.returncode == 2, reload_
        assert "server_cfg.json.txt" in reload_.stdout + reload_.stderr, reload_
        assert config_file.read_text() == invalid  # refused, not "repaired" behind the operator's back

        # SIGHUP takes the same path: refused, daemon still up.
        os.kill(server.pid, signal.SIGHUP)

        receiver = member.start_receiver("mcrecv", GROUP, 5001, expect=500, idle_timeout=3)
        source.send(GROUP, 5001, 500, rate=5000)
        summary = receiver.json_result()
        assert summary["unique"] == 500 and summary["corrupt"] == 0, summary
        assert server.running(), server.describe()

    members = source.control("server", {"cmd": "show"})["config"]["multi_group_array"][0]["member_array"]
    assert members == [member.ip]

    # The interactive form of the seed: the prompt, then the answer on stdin.
    config_file.write_text(good)
    reload_ = source.relay("server_reload_list", input_text="reload\n", check=False)
    assert reload_.returncode == 0, reload_
    assert "please input command[reload or list]#" in reload_.stdout, reload_.stdout
