# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import stat

import pytest

from ansible_collections.multicast.proxy.plugins.modules import relay_install

PACKAGE = "/opt/multicast_proxy/lib/multicast_proxy"
WRAPPER = '#!/bin/sh\nexec /usr/bin/python3 -m multicast_proxy multis_admin "$@"\n'


def real(root, path):
    return os.path.join(str(root), path.lstrip("/"))


def read(root, path):
    with open(real(root, path), "rb") as handle:
        return handle.read()


def mode_of(root, path):
    return stat.S_IMODE(os.lstat(real(root, path)).st_mode)


def relay_args(root, package=None, **overrides):
    """Arguments shaped like the common role's install task."""
    directories = [
        {"path": PACKAGE, "mode": "0755", "purge": ["*.py"],
         "files": package if package is not None else {"__init__.py": "", "server.py": "print('v1')\n"}},
        {"path": "/usr/local/bin", "file_mode": "0755", "files": {"multis_admin": WRAPPER}},
        {"path": "/etc/multicast", "mode": "0755"},
    ]
    args = {"root": str(root), "directories": directories}
    args.update(overrides)
    return args


def test_first_install_creates_directories_and_files_with_modes(run_module, tmp_path):
    result, failed = run_module(relay_install, relay_args(tmp_path))
    assert not failed, result
    assert result["changed"] is True
    assert result["written"] == [PACKAGE + "/__init__.py", PACKAGE + "/server.py", "/usr/local/bin/multis_admin"]
    assert result["removed"] == []
    assert result["directories"] == [PACKAGE, "/usr/local/bin", "/etc/multicast"]
    assert read(tmp_path, PACKAGE + "/server.py") == b"print('v1')\n"
    assert read(tmp_path, "/usr/local/bin/multis_admin") == WRAPPER.encode()
    assert mode_of(tmp_path, PACKAGE + "/server.py") == 0o644
    assert mode_of(tmp_path, "/usr/local/bin/multis_admin") == 0o755
    # Every directory created on the way gets 0755, whatever the umask.
    for path in ("/opt", "/opt/multicast_proxy", "/opt/multicast_proxy/lib", PACKAGE, "/etc/multicast"):
        assert mode_of(tmp_path, path) == 0o755, path
    # No temporary file is left next to the installed ones.
    assert sorted(os.listdir(real(tmp_path, PACKAGE))) == ["__init__.py", "server.py"]
    if os.geteuid() == 0:
        st = os.lstat(real(tmp_path, PACKAGE + "/server.py"))
        assert (st.st_uid, st.st_gid) == (0, 0)


def test_second_run_changes_nothing_and_writes_nothing(run_module, tmp_path):
    run_module(relay_install, relay_args(tmp_path))
    inode = os.lstat(real(tmp_path, PACKAGE + "/server.py")).st_ino
    result, failed = run_module(relay_install, relay_args(tmp_path), diff=True)
    assert not failed
    assert result["changed"] is False
    assert (result["written"], result["removed"], result["directories"]) == ([], [], [])
    assert result["diff"]["before"] == result["diff"]["after"] == ""
    assert os.lstat(real(tmp_path, PACKAGE + "/server.py")).st_ino == inode


def test_upgrade_writes_changed_files_by_rename_and_removes_stale_modules(run_module, tmp_path):
    run_module(relay_install, relay_args(tmp_path, package={
        "__init__.py": "", "server.py": "print('v1')\n", "old_module.py": "gone\n"}))
    os.makedirs(real(tmp_path, PACKAGE + "/__pycache__"))
    with open(real(tmp_path, PACKAGE + "/notes.txt"), "w") as handle:
        handle.write("an operator's file\n")
    old_inode = os.lstat(real(tmp_path, PACKAGE + "/server.py")).st_ino
    init_inode = os.lstat(real(tmp_path, PACKAGE + "/__init__.py")).st_ino

    result, failed = run_module(relay_install, relay_args(tmp_path, package={
        "__init__.py": "", "server.py": "print('v2')\n"}), diff=True)
    assert not failed, result
    assert result["changed"] is True
    assert result["written"] == [PACKAGE + "/server.py"]
    assert result["removed"] == [PACKAGE + "/old_module.py"]
    assert read(tmp_path, PACKAGE + "/server.py") == b"print('v2')\n"
    # A new inode: the file was replaced by rename, not rewritten in place.
    assert os.lstat(real(tmp_path, PACKAGE + "/server.py")).st_ino != old_inode
    assert os.lstat(real(tmp_path, PACKAGE + "/__init__.py")).st_ino == init_inode
    # Only *.py files go; other files and subdirectories stay.
    assert sorted(os.listdir(real(tmp_path, PACKAGE))) == ["__init__.py", "__pycache__", "notes.txt", "server.py"]
    assert "%s/server.py: 12 bytes, mode 0644, sha1 " % PACKAGE in result["diff"]["before"]
    assert "%s/old_module.py: present" % PACKAGE in result["diff"]["before"]
    assert result["diff"]["after"].startswith("%s/server.py: 12 bytes, mode 0644, sha1 " % PACKAGE)
    assert "old_module" not in result["diff"]["after"]


def test_wrong_mode_alone_is_a_change(run_module, tmp_path):
    run_module(relay_install, relay_args(tmp_path))
    os.chmod(real(tmp_path, "/usr/local/bin/multis_admin"), 0o644)
    os.chmod(real(tmp_path, PACKAGE), 0o700)
    result, failed = run_module(relay_install, relay_args(tmp_path))
    assert not failed
    assert result["written"] == ["/usr/local/bin/multis_admin"]
    assert result["directories"] == [PACKAGE]
    assert mode_of(tmp_path, "/usr/local/bin/multis_admin") == 0o755
    assert mode_of(tmp_path, PACKAGE) == 0o755


def test_shared_directory_without_mode_keeps_its_mode(run_module, tmp_path):
    os.makedirs(real(tmp_path, "/usr/local/bin"))
    os.chmod(real(tmp_path, "/usr/local/bin"), 0o775)
    result, failed = run_module(relay_install, relay_args(tmp_path))
    assert not failed
    assert "/usr/local/bin" not in result["directories"]
    assert mode_of(tmp_path, "/usr/local/bin") == 0o775


def test_symlink_is_replaced_by_the_real_content(run_module, tmp_path):
    run_module(relay_install, relay_args(tmp_path))
    target = real(tmp_path, PACKAGE + "/server.py")
    os.unlink(target)
    os.symlink("/nonexistent/elsewhere.py", target)
    result, failed = run_module(relay_install, relay_args(tmp_path))
    assert not failed
    assert result["written"] == [PACKAGE + "/server.py"]
    assert not os.path.islink(target)
    assert read(tmp_path, PACKAGE + "/server.py") == b"print('v1')\n"


def test_check_mode_reports_everything_and_touches_nothing(run_module, tmp_path):
    run_module(relay_install, relay_args(tmp_path, package={"__init__.py": "", "old.py": "x\n"}))
    before = sorted(os.listdir(real(tmp_path, PACKAGE)))
    result, failed = run_module(relay_install, relay_args(tmp_path), check_mode=True, diff=True)
    assert not failed
    assert result["changed"] is True
    assert result["written"] == [PACKAGE + "/server.py"]
    assert result["removed"] == [PACKAGE + "/old.py"]
    assert sorted(os.listdir(real(tmp_path, PACKAGE))) == before


def test_check_mode_on_an_empty_host_creates_nothing(run_module, tmp_path):
    result, failed = run_module(relay_install, relay_args(tmp_path), check_mode=True)
    assert not failed
    assert len(result["written"]) == 3
    assert os.listdir(str(tmp_path)) == []


def test_non_ascii_text_is_written_as_utf8(run_module, tmp_path):
    result, failed = run_module(relay_install, relay_args(tmp_path, package={"__init__.py": "# Ünïcode – ok\n"}))
    assert not failed
    assert read(tmp_path, PACKAGE + "/__init__.py") == u"# Ünïcode – ok\n".encode("utf-8")


def test_directory_in_the_way_of_a_file_fails_clearly(run_module, tmp_path):
    os.makedirs(real(tmp_path, PACKAGE + "/server.py"))
    result, failed = run_module(relay_install, relay_args(tmp_path))
    assert failed
    assert "is a directory where the file server.py belongs" in result["msg"]


def test_file_in_the_way_of_a_directory_fails_clearly(run_module, tmp_path):
    os.makedirs(real(tmp_path, "/etc"))
    with open(real(tmp_path, "/etc/multicast"), "w") as handle:
        handle.write("not a directory\n")
    result, failed = run_module(relay_install, relay_args(tmp_path))
    assert failed
    assert "/etc/multicast exists and is not a directory" in result["msg"]


@pytest.mark.parametrize("directories, message", [
    ([{"path": "opt/multicast_proxy"}], "directories[3].path 'opt/multicast_proxy' is relative"),
    ([{"path": "/opt/../../etc"}], "has '.' or '..' parts, which could leave the install root"),
    ([{"path": "/opt/./x"}], "has '.' or '..' parts"),
    ([{"path": "/opt", "files": {"../evil": "x"}}], "directories[3].files key '../evil' is not a plain file name"),
    ([{"path": "/opt", "files": {"a/b": "x"}}], "is not a plain file name"),
    ([{"path": "/opt", "mode": "755x"}], "directories[3].mode '755x' is not an octal mode"),
    ([{"path": "/opt", "file_mode": "99"}], "directories[3].file_mode '99' is not an octal mode"),
    ([{"path": "/opt", "file_mode": "107777"}], "is not an octal mode"),
    ([{"path": "/opt", "files": {"a": 5}}], "directories[3].files['a'] must be text, got int"),
    ([{"path": "/opt", "purge": ["../*.py"]}], "purge pattern '../*.py' must be a file name pattern"),
    ([{"path": "/opt"}, {"path": "/opt/"}], "directories[4].path /opt is listed twice (also as directories[3])"),
])
def test_bad_arguments_fail_before_anything_is_written(run_module, tmp_path, directories, message):
    # After the valid entries: validation covers every entry before the first write.
    args = relay_args(tmp_path)
    args["directories"] = args["directories"] + directories
    result, failed = run_module(relay_install, args)
    assert failed
    assert message in result["msg"]
    assert os.listdir(str(tmp_path)) == []


def test_relative_root_is_refused(run_module, tmp_path):
    result, failed = run_module(relay_install, relay_args("relative/root"))
    assert failed
    assert "root 'relative/root' is relative" in result["msg"]


def test_parse_mode_accepts_three_and_four_digits():
    assert relay_install.parse_mode("644", "mode") == 0o644
    assert relay_install.parse_mode("0755", "mode") == 0o755
    assert relay_install.parse_mode("4755", "mode") == 0o4755


def test_reports_the_services_that_ran_before_the_install(run_module, tmp_path):
    run_module.replies = [(3, "active\ninactive\n", "")]
    result, failed = run_module(relay_install, relay_args(
        tmp_path, services=["multis_monitord.service", "multic_monitord.service"]))
    assert not failed
    assert run_module.commands == [
        ["/usr/local/bin/systemctl", "is-active", "multis_monitord.service", "multic_monitord.service"]]
    assert result["active"] == ["multis_monitord.service"]
    assert result["changed"] is True


def test_reloading_counts_as_running_and_check_mode_still_reads_states(run_module, tmp_path):
    run_module.replies = [(0, "reloading\nactive\n", "")]
    result, failed = run_module(relay_install, relay_args(tmp_path, services=["a.service", "b.service"]),
                                check_mode=True)
    assert not failed
    assert result["active"] == ["a.service", "b.service"]


def test_no_services_runs_no_command(run_module, tmp_path):
    result, failed = run_module(relay_install, relay_args(tmp_path))
    assert not failed
    assert run_module.commands == []
    assert result["active"] == []


def test_host_without_systemctl_has_no_active_service():
    class HostWithoutSystemctl(object):
        def get_bin_path(self, name):
            return None

        def run_command(self, argv):
            raise AssertionError("no command may run: %r" % (argv,))

    assert relay_install.active_services(HostWithoutSystemctl(), ["a.service"]) == []


def test_unexpected_systemctl_output_fails_before_anything_is_written(run_module, tmp_path):
    run_module.replies = [(1, "", "Failed to connect to bus: No such file or directory")]
    result, failed = run_module(relay_install, relay_args(tmp_path, services=["a.service"]))
    assert failed
    assert "printed 0 states for 1 units" in result["msg"]
    assert "Failed to connect to bus" in result["msg"]
    assert os.listdir(str(tmp_path)) == []
