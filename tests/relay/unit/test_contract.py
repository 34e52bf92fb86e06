"""The relay's contract (relay_contract.py): names, exit codes, conf dir, atomic writes.

One module says what each side calls its files, commands and service and how
a file in the config directory is replaced; the daemon, the commands and the
Ansible modules read it from there.
"""

import errno
import io
import os
import stat

import pytest

from multicast_proxy import admin, cli, daemon, relay_config as config, relay_contract as contract


def test_the_sides_name_the_seed_document_files_and_commands():
    server, client = contract.SIDES["server"], contract.SIDES["client"]
    assert (server.config_name, server.admin, server.reload, server.service) == (
        "server_cfg.json.txt", "multis_admin", "server_reload_list", "multis_monitord")
    assert (client.config_name, client.admin, client.reload, client.service) == (
        "client_cfg.json.txt", "multic_admin", "client_reload_list", "multic_monitord")
    assert server.path("socket", "/d") == "/d/multis.sock"
    assert client.path("log", "/d") == "/d/client_log.txt"
    # The daemon and the config model use the same names.
    assert daemon.side_path("server", "config", "/d") == os.path.join("/d", config.SERVER_CONFIG_NAME)
    assert daemon.side_path("client", "socket", "/d") == "/d/multic.sock"
    assert cli.SERVER == server.admin and cli.CLIENT == client.admin


def test_exit_codes_are_the_commands_exit_codes():
    assert (admin.EXIT_OK, admin.EXIT_FAILURE, admin.EXIT_USAGE, admin.EXIT_NOT_RUNNING) == (
        contract.EXIT_OK, contract.EXIT_FAILURE, contract.EXIT_USAGE, contract.EXIT_NOT_RUNNING) == (0, 1, 2, 3)


def test_conf_dir_comes_from_the_environment_unless_empty():
    assert contract.conf_dir({}) == "/etc/multicast"
    assert contract.conf_dir({"MULTICAST_CONF_DIR": ""}) == "/etc/multicast"
    assert contract.conf_dir({"MULTICAST_CONF_DIR": "/srv/m"}) == "/srv/m"


def test_a_new_file_is_0644_and_a_replaced_file_keeps_its_mode(tmp_path):
    path = str(tmp_path / "f.json.txt")
    result = contract.write_file_atomically(path, b"one")
    assert result.replaced and result.sync_error is None and result.warning() is None
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    os.chmod(path, 0o600)
    contract.write_file_atomically(path, b"two")
    assert open(path, "rb").read() == b"two"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    contract.write_file_atomically(path, b"three", mode=0o640)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert sorted(os.listdir(str(tmp_path))) == ["f.json.txt"]


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another owner needs root")
def test_root_keeps_the_owner_of_the_replaced_file(tmp_path):
    path = str(tmp_path / "f")
    contract.write_file_atomically(path, b"one")
    os.chown(path, 1234, 5678)
    contract.write_file_atomically(path, b"two")
    assert (os.stat(path).st_uid, os.stat(path).st_gid) == (1234, 5678)


def test_a_symlink_is_replaced_not_followed(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_bytes(b"keep me")
    os.chmod(str(target), 0o600)
    link = tmp_path / "cfg"
    link.symlink_to(target)
    contract.write_file_atomically(str(link), b"new")
    assert target.read_bytes() == b"keep me"
    assert not link.is_symlink() and link.read_bytes() == b"new"
    assert stat.S_IMODE(os.stat(str(link)).st_mode) == 0o644


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "cfg"
    path.write_bytes(b"old")

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(contract.os, "fsync", no_space)
    with pytest.raises(OSError) as caught:
        contract.write_file_atomically(str(path), b"new")
    assert caught.value.errno == errno.ENOSPC
    assert path.read_bytes() == b"old"
    assert os.listdir(str(tmp_path)) == ["cfg"]


def test_text_is_refused_so_no_encoding_is_guessed(tmp_path):
    with pytest.raises(TypeError, match="encode the text first"):
        contract.write_file_atomically(str(tmp_path / "cfg"), u"text")
    assert not os.listdir(str(tmp_path))


def _failing_directory_sync(monkeypatch):
    def fail(directory):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(contract, "sync_directory", fail)


def test_a_failed_directory_sync_is_reported_with_the_file_replaced(tmp_path, monkeypatch):
    _failing_directory_sync(monkeypatch)
    path = str(tmp_path / "cfg")
    result = contract.write_file_atomically(path, b"new")
    assert result.replaced and result.sync_error.errno == errno.EIO
    assert open(path, "rb").read() == b"new"
    assert "was replaced" in result.warning() and "Input/output error" in result.warning()
    assert "run the command again" in result.warning()


def test_multis_admin_saves_and_warns_when_the_directory_sync_fails(tmp_path, monkeypatch):
    _failing_directory_sync(monkeypatch)
    out, err = io.StringIO(), io.StringIO()
    action = cli.parse(cli.SERVER, ["-A", "-m", "239.1.2.3", "-p", "5000", "-j", "10.0.0.2"])
    code = admin.execute(action, directory=str(tmp_path), out=out, err=err)
    # Saved; no daemon runs, so the edit applies at its start (exit 3).
    assert code == contract.EXIT_NOT_RUNNING
    assert "saved" in out.getvalue()
    assert err.getvalue().startswith("warning: ") and "syncing its directory to disk failed" in err.getvalue()
    saved = config.load_server_config((tmp_path / config.SERVER_CONFIG_NAME).read_text())
    assert saved["multi_group_array"][0]["member_array"] == ["10.0.0.2"]
