"""Every config option is settable from the commands: the schema's long flags and --set (issue 13).

The flags are derived from relay_config.SCHEMA, so these tests also guard the
derivation: a row with a long flag is parsed, applied, written and refused
with a message naming the flag.
"""

import io
import json

import pytest

from multicast_proxy import admin, cli, relay_config as config


def run(directory, argv):
    out, err = io.StringIO(), io.StringIO()
    try:
        action = cli.parse(argv[0], argv[1:])
    except cli.UsageError as exc:
        return admin.EXIT_USAGE, "", str(exc)
    code = admin.execute(action, str(directory), out, err, io.StringIO(""))
    return code, out.getvalue(), err.getvalue()


def server_cfg(directory):
    return json.loads((directory / config.SERVER_CONFIG_NAME).read_text())


def client_cfg(directory):
    return json.loads((directory / config.CLIENT_CONFIG_NAME).read_text())


def test_schema_long_flags_are_parsed_into_options():
    action = cli.parse(cli.SERVER, ["-A", "-m", "239.1.1.1", "-j", "10.0.0.2", "-p", "5000", "--protocol", "udp",
                                    "--capture", "--interface=eth1"])
    assert action.options == {"protocol": "udp", "capture": True, "interface": "eth1"}
    action = cli.parse(cli.SERVER, ["-A", "-m", "239.1.1.1", "--no-capture"])
    assert action.command == "add" and action.options == {"capture": False}
    action = cli.parse(cli.CLIENT, ["-A", "-i", "10.0.0.1", "-g", "0", "-s", "5000", "-m", "224.0.0.18",
                                    "--protocol", "vrrp", "--preserve-source"])
    assert action.options == {"protocol": "vrrp", "preserve_source": True}
    assert cli.parse(cli.SERVER, ["-A", "-m", "239.1.1.1", "-p", "1"]).options is None


@pytest.mark.parametrize("program, argv, message", [
    (cli.SERVER, ["-A", "-m", "239.1.1.1", "--capture", "--no-capture"], "given twice"),
    (cli.SERVER, ["-A", "-m", "239.1.1.1", "-q", "10.0.0.2", "--capture"], "cannot be combined"),
    (cli.SERVER, ["-D", "-m", "239.1.1.1", "--protocol", "vrrp"], "--protocol is not used with -D"),
    (cli.SERVER, ["-A", "-m", "239.1.1.1", "--protocol"], "--protocol needs a value"),
    (cli.SERVER, ["-A", "-m", "239.1.1.1", "--capture=yes"], "--capture takes no value"),
    (cli.CLIENT, ["-A", "-i", "10.0.0.1", "-g", "1", "-s", "1", "-m", "239.1.1.1", "--capture"],
     "unknown option --capture"),
    (cli.SERVER, ["--set", "bogus=1"], "KEY one of interface"),
    (cli.SERVER, ["--set", "interface"], "give KEY=VALUE"),
    (cli.CLIENT, ["--set", "interface=a", "--set", "interface=b"], "given twice"),
    (cli.CLIENT, ["--set", "interface=a", "-L"], "cannot be used together"),
])
def test_bad_option_flags_are_usage_errors(program, argv, message):
    with pytest.raises(cli.UsageError) as info:
        cli.parse(program, argv)
    assert message in str(info.value)


def test_help_and_usage_list_every_schema_flag():
    for place, program in ((config.GROUP, cli.SERVER), (config.ENTRY, cli.CLIENT)):
        for option in config.optional_rows(place):
            name = config.cli_flag_name(option)
            if name:
                assert "--" + name in cli.help_text(program)
                assert option.help in cli.help_text(program)
    assert "[--capture]" in cli.SERVER_USAGE["add"] and "[--protocol udp|vrrp]" in cli.SERVER_USAGE["add"]
    assert "[--preserve-source]" in cli.CLIENT_USAGE["add"]
    assert "preserve_source" in cli.help_text(cli.CLIENT) and "--set KEY=VALUE" in cli.help_text(cli.SERVER)


def test_multis_admin_sets_and_clears_group_options(tmp_path):
    code, _out, _err = run(tmp_path, [cli.SERVER, "-A", "-m", "239.1.1.1", "-j", "10.0.0.2", "-p", "5000",
                                      "--capture", "--interface", "eth1"])
    assert code == admin.EXIT_NOT_RUNNING
    assert server_cfg(tmp_path)["multi_group_array"][0] == {
        "group_ip": "239.1.1.1", "server_port": 5000, "group_port": 5000, "member_array": ["10.0.0.2"],
        "interface": "eth1", "capture": True}
    # Only the options given change; --no-capture and an empty interface remove the keys.
    run(tmp_path, [cli.SERVER, "-A", "-m", "239.1.1.1", "--no-capture"])
    assert server_cfg(tmp_path)["multi_group_array"][0]["interface"] == "eth1"
    assert "capture" not in server_cfg(tmp_path)["multi_group_array"][0]
    run(tmp_path, [cli.SERVER, "-A", "-m", "239.1.1.1", "--interface="])
    assert "interface" not in server_cfg(tmp_path)["multi_group_array"][0]


def test_a_new_vrrp_group_from_the_command_line(tmp_path):
    code, _out, err = run(tmp_path, [cli.SERVER, "-A", "-m", "224.0.0.18", "-j", "10.0.0.2", "-p", "5112",
                                     "--protocol", "vrrp"])
    assert code == admin.EXIT_NOT_RUNNING, err
    group = server_cfg(tmp_path)["multi_group_array"][0]
    assert group["protocol"] == "vrrp" and group["group_port"] == 0


@pytest.mark.parametrize("argv, flag", [
    ([cli.SERVER, "-A", "-m", "239.1.1.1", "--protocol", "tcp"], "--protocol (protocol)"),
    ([cli.SERVER, "-A", "-m", "239.1.1.1", "--interface", "eth0/../x"], "--interface (interface)"),
    ([cli.CLIENT, "-A", "-i", "10.0.0.1", "-g", "5000", "-s", "5000", "-m", "239.1.1.1", "--protocol", "x"],
     "--protocol (protocol)"),
    ([cli.SERVER, "--set", "interface=" + "x" * 16], "--set interface= (interface)"),
])
def test_bad_option_values_name_the_flag_and_change_nothing(tmp_path, argv, flag):
    run(tmp_path, [cli.SERVER, "-A", "-m", "239.1.1.1", "-j", "10.0.0.2", "-p", "5000"])
    run(tmp_path, [cli.CLIENT, "-A", "-i", "10.0.0.1", "-g", "5000", "-s", "5000", "-m", "239.1.1.1"])
    before = sorted((p.name, p.read_bytes()) for p in tmp_path.iterdir())
    code, _out, err = run(tmp_path, argv)
    assert code == admin.EXIT_USAGE
    assert flag in err and "Nothing was changed" in err
    assert sorted((p.name, p.read_bytes()) for p in tmp_path.iterdir()) == before


def test_multic_admin_sets_entry_options(tmp_path):
    run(tmp_path, [cli.CLIENT, "-A", "-i", "10.0.0.1", "-g", "5000", "-s", "5000", "-m", "239.1.1.1",
                   "--preserve-source"])
    entry = client_cfg(tmp_path)["multi_server_info_array"][0]
    assert entry["preserve_source"] is True
    # The same entry again without the flag keeps it; --no-preserve-source removes it.
    run(tmp_path, [cli.CLIENT, "-A", "-i", "10.0.0.1", "-g", "5000", "-s", "5000", "-m", "239.1.1.1"])
    assert client_cfg(tmp_path)["multi_server_info_array"][0]["preserve_source"] is True
    run(tmp_path, [cli.CLIENT, "-A", "-i", "10.0.0.1", "-g", "5000", "-s", "5000", "-m", "239.1.1.1",
                   "--no-preserve-source"])
    assert "preserve_source" not in client_cfg(tmp_path)["multi_server_info_array"][0]
    assert len(client_cfg(tmp_path)["multi_server_info_array"]) == 1


def test_set_changes_top_level_settings_and_clear_keeps_them(tmp_path):
    code, _out, _err = run(tmp_path, [cli.CLIENT, "--set", "interface=eth1", "--set", "preserve_source=true"])
    assert code == admin.EXIT_NOT_RUNNING
    assert client_cfg(tmp_path) == {"multi_server_info_array": [], "interface": "eth1", "preserve_source": True}
    run(tmp_path, [cli.CLIENT, "-A", "-i", "10.0.0.1", "-g", "5000", "-s", "5000", "-m", "239.1.1.1"])
    run(tmp_path, [cli.CLIENT, "-C"])
    assert client_cfg(tmp_path) == {"multi_server_info_array": [], "interface": "eth1", "preserve_source": True}
    run(tmp_path, [cli.CLIENT, "--set", "interface=", "--set", "preserve_source=no"])
    assert client_cfg(tmp_path) == {"multi_server_info_array": []}
    code, _out, err = run(tmp_path, [cli.CLIENT, "--set", "preserve_source=maybe"])
    assert code == admin.EXIT_USAGE and "--set preserve_source= (preserve_source)" in err
    run(tmp_path, [cli.SERVER, "--set", "interface=eth2"])
    assert server_cfg(tmp_path) == {"multi_group_array": [], "interface": "eth2"}


# -- a throwaway option: one schema row, and the commands know it --------------------------

THROWAWAY = config.Option("throwaway", config.GROUP, "flag", False, False, "not default", "--throwaway", "throwaway",
                          "throwaway", None, "an option that exists only in this test")


@pytest.fixture
def throwaway(monkeypatch):
    """SCHEMA with one more group row; cli and admin re-derive their tables (and again after the test)."""
    import importlib
    monkeypatch.setattr(config, "SCHEMA", config.SCHEMA + (THROWAWAY,))
    importlib.reload(cli)
    importlib.reload(admin)
    yield
    monkeypatch.undo()
    importlib.reload(cli)
    importlib.reload(admin)


def test_without_the_row_the_flag_is_unknown():
    with pytest.raises(cli.UsageError, match="unknown option --throwaway"):
        cli.parse(cli.SERVER, ["-A", "-m", "239.1.1.1", "--throwaway"])


def test_a_throwaway_row_gets_flags_help_and_usage(throwaway):
    assert cli.parse(cli.SERVER, ["-A", "-m", "239.1.1.1", "--throwaway"]).options == {"throwaway": True}
    assert cli.parse(cli.SERVER, ["-A", "-m", "239.1.1.1", "--no-throwaway"]).options == {"throwaway": False}
    assert "[--throwaway]" in cli.SERVER_USAGE["add"]
    assert "an option that exists only in this test" in cli.help_text(cli.SERVER)
    # A group option, not an entry option.
    with pytest.raises(cli.UsageError, match="unknown option --throwaway"):
        cli.parse(cli.CLIENT, ["-A", "-i", "10.0.0.1", "-g", "1", "-s", "1", "-m", "239.1.1.1", "--throwaway"])


def test_a_throwaway_row_is_written_and_removed_by_multis_admin(tmp_path, throwaway):
    code, _out, err = run(tmp_path, [cli.SERVER, "-A", "-m", "239.1.1.1", "-j", "10.0.0.2", "-p", "5000",
                                     "--throwaway"])
    assert code == admin.EXIT_NOT_RUNNING, err
    assert server_cfg(tmp_path)["multi_group_array"][0]["throwaway"] is True
    run(tmp_path, [cli.SERVER, "-A", "-m", "239.1.1.1", "--no-throwaway"])
    assert "throwaway" not in server_cfg(tmp_path)["multi_group_array"][0]
    # The daemon's validator reads the same table: a hand-written bad value is refused with its path.
    (tmp_path / config.SERVER_CONFIG_NAME).write_text(json.dumps(
        {"multi_group_array": [{"group_ip": "239.1.1.1", "server_port": 5000, "member_array": [],
                                "throwaway": "maybe"}]}))
    with pytest.raises(config.ConfigError, match=r"multi_group_array\[0\]\.throwaway"):
        config.load_server_config((tmp_path / config.SERVER_CONFIG_NAME).read_text())


def test_set_address_on_the_server(tmp_path):
    code, _out, err = run(tmp_path, [cli.SERVER, "--set", "address=10.0.0.11"])
    assert code == admin.EXIT_NOT_RUNNING, err
    assert server_cfg(tmp_path) == {"multi_group_array": [], "address": "10.0.0.11"}
    code, _out, err = run(tmp_path, [cli.SERVER, "--set", "address=239.1.1.1"])
    assert code == admin.EXIT_USAGE and "--set address=" in err and "multicast address" in err
    assert server_cfg(tmp_path)["address"] == "10.0.0.11"
    code, _out, err = run(tmp_path, [cli.CLIENT, "--set", "address=10.0.0.11"])
    assert code == admin.EXIT_USAGE and "KEY one of interface, preserve_source" in err
