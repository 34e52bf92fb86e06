# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Module-side plumbing around the relay config model.

The rules live in ``relay_config``; this file only adds what Ansible modules
need on top of them: reading a config file, writing it atomically with
``module.atomic_move`` under the same lock the relay's CLI takes, and asking
the running daemon to apply the new file.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import inspect
import os
import tempfile

from ansible.module_utils.common.text.converters import to_native
from ansible_collections.multicast.proxy.plugins.module_utils.relay_config import (
    ConfigError,
    ConfigLock,
    dump_config,
    load_client_config,
    load_server_config,
    read_config_text,
)
from ansible_collections.multicast.proxy.plugins.module_utils.relay_contract import (
    EXIT_NOT_RUNNING,
    SIDES as CONTRACT_SIDES,
    sync_directory,
)

# Exit code of the relay commands when the daemon is not running (relay_contract).
RC_DAEMON_NOT_RUNNING = EXIT_NOT_RUNNING

# The roles install the relay's commands here; it is not on PATH under every
# connection plugin (paramiko and ssh start non-login shells).
RELAY_BIN_DIRS = ["/usr/local/bin"]

_LOADERS = {"server": load_server_config, "client": load_client_config}
# The names every module uses, from the relay's contract (one place for a rename).
SIDES = dict(
    (name, {"config_name": side.config_name, "loader": _LOADERS[name], "admin": side.admin,
            "reload": side.reload, "service": side.service})
    for name, side in CONTRACT_SIDES.items()
)


def config_path(conf_dir, side):
    return os.path.join(conf_dir, SIDES[side]["config_name"])


def require_conf_dir(module, conf_dir):
    if not os.path.isdir(conf_dir):
        module.fail_json(msg="conf_dir %s does not exist; install the relay first (role multicast.proxy.server "
                             "or multicast.proxy.client) or point conf_dir at the relay's config directory"
                             % conf_dir)


def read_config(module, conf_dir, side):
    """Return (text, config) of the side's config file; a missing file is an empty config."""
    path = config_path(conf_dir, side)
    try:
        text = read_config_text(path)
        return text, SIDES[side]["loader"](text, source=path)
    except (IOError, OSError) as exc:
        module.fail_json(msg="cannot read %s: %s" % (path, to_native(exc)))
    except ConfigError as exc:
        module.fail_json(msg="%s; the file on the host is invalid, fix it (or restore a backup) and run again"
                             % to_native(exc))


def _atomic_move_keeps_attrs_optionally(module):
    """Whether this ansible-core's AnsibleModule.atomic_move takes keep_dest_attrs (2.17 and later)."""
    signature = getattr(inspect, "signature", None)    # Python 3.3 and later
    try:
        return signature is not None and "keep_dest_attrs" in signature(module.atomic_move).parameters
    except (TypeError, ValueError):
        return False


def replace_file(module, path, data, before_rename, keep_dest_attrs=True):
    """Replace ``path`` with the bytes ``data`` so that readers see the old or the new file, never a part.

    The bytes go to a temporary file beside ``path`` and reach the disk
    first; ``before_rename(tmp_path)`` gives it its mode (and owner) so it
    never appears with the wrong ones; then it is renamed over ``path``.
    The temporary file never outlives the call.
    """
    directory, name = os.path.split(path)
    fd, tmp_path = tempfile.mkstemp(prefix="." + name + ".", dir=directory)
    try:
        with os.fdopen(fd, "wb") as tmp_file:
            tmp_file.write(data)
            tmp_file.flush()
            os.fsync(tmp_file.fileno())
        before_rename(tmp_path)
        if _atomic_move_keeps_attrs_optionally(module):
            module.atomic_move(tmp_path, path, keep_dest_attrs=keep_dest_attrs)
        else:
            # ansible-core 2.16 always copies the old file's mode and owner to the new one; callers
            # that want their own set them again after the call (relay_install does).
            module.atomic_move(tmp_path, path)
    finally:
        if os.path.exists(tmp_path):
            os.unlink(tmp_path)
    # The rename must survive a power loss too: sync the directory.  A
    # failure here cannot undo the change, so it is reported, not raised.
    try:
        sync_directory(directory or ".")
    except OSError as exc:
        module.warn("%s was replaced, but syncing its directory to disk failed (%s): a power loss now could "
                    "bring back the previous file; check the disk, then run the task again" % (path, to_native(exc)))


def write_config(module, conf_dir, side, config):
    """Replace the side's config file with ``config`` atomically, mode 0644."""
    # dump_config writes ASCII JSON: the encoding changes no byte.
    replace_file(module, config_path(conf_dir, side), dump_config(config).encode("utf-8"),
                 lambda tmp_path: os.chmod(tmp_path, 0o644))


def edit_config(module, conf_dir, side, edit):
    """Apply ``edit(config) -> new config`` to the side's config file.

    Returns (before_text, after_text, changed).  ``edit`` raises ConfigError on
    bad input; that fails the module with nothing written.  In check mode the
    file is only read (no lock file is created either).
    """
    def run():
        before_text, before = read_config(module, conf_dir, side)
        try:
            after = edit(before)
        except ConfigError as exc:
            module.fail_json(msg=to_native(exc))
        changed = after != before
        if changed and not module.check_mode:
            write_config(module, conf_dir, side, after)
        return before_text, dump_config(after) if changed else before_text, changed

    require_conf_dir(module, conf_dir)
    if module.check_mode:
        return run()
    with ConfigLock(conf_dir, side):
        return run()


def relay_command(module, name):
    return module.get_bin_path(name, required=True, opt_dirs=RELAY_BIN_DIRS)


def run_relay(module, conf_dir, argv):
    """Run a relay command with MULTICAST_CONF_DIR set; returns (rc, stdout, stderr)."""
    return module.run_command(argv, environ_update={"MULTICAST_CONF_DIR": conf_dir})


def reload_daemon(module, conf_dir, side):
    """Ask the running daemon to re-read its config.

    Returns "applied", or "daemon_not_running" (with a warning: the file is
    saved and applies when the daemon starts).  Any other outcome fails.
    """
    rc, out, err = run_relay(module, conf_dir, [relay_command(module, SIDES[side]["reload"]), "reload"])
    if rc == 0:
        return "applied"
    if rc == RC_DAEMON_NOT_RUNNING:
        module.warn("%s is not running; %s is saved and applies when the daemon starts"
                    % (SIDES[side]["service"], config_path(conf_dir, side)))
        return "daemon_not_running"
    module.fail_json(msg="%s reload failed (rc=%d): %s; the new %s is saved, check it with %s --check-config"
                         % (SIDES[side]["reload"], rc, (err or out).strip(), config_path(conf_dir, side),
                            SIDES[side]["admin"]),
                     rc=rc, stdout=out, stderr=err)
