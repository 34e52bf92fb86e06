# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The relay's contract with everything around it, written down once.

What each side (server, client) calls its files, commands and service, where
they live (``/etc/multicast`` unless ``$MULTICAST_CONF_DIR`` says otherwise),
the exit codes of the commands, and the one way a file in that directory is
replaced.  The relay package (``files/multicast_proxy/relay_contract.py`` is a
symlink to this file), the Ansible modules and the doctor's rules read these
names from here, so a rename is one edit.

Standard library only, Python 3.6 to 3.13.  The import of ``relay_config`` is
relative: it resolves to the relay package's module on a host and to the
collection's module_utils inside a module.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import errno
import os
import stat
import tempfile

from .relay_config import CLIENT_CONFIG_NAME, CLIENT_TOP_KEY, SERVER_CONFIG_NAME, SERVER_TOP_KEY, split_listen

DEFAULT_CONF_DIR = "/etc/multicast"
CONF_DIR_ENV = "MULTICAST_CONF_DIR"
# A file of this name in the conf dir (any content) makes the daemons refuse to
# relay without valid keys; a file apart from auth_keys.json, so that deleting
# the keys cannot delete the requirement with them (docs/threat-model.md).
AUTH_REQUIRED_NAME = "auth_required"

# Exit codes of every relay command (docs/architecture.md).
EXIT_OK = 0
EXIT_FAILURE = 1  # runtime failure: I/O error, the daemon answered with an error
EXIT_USAGE = 2  # bad flag or invalid file; nothing was changed
EXIT_NOT_RUNNING = 3  # the daemon is not running: an edit is saved and applies at its start

# A config written where none existed; a replaced file keeps its own mode.
NEW_FILE_MODE = 0o644

# The system user and group the daemons run as (the common role creates them).
# Members of the group may read a key file of mode 0640 (auth.py).
SERVICE_USER = "multicast-proxy"
SERVICE_GROUP = "multicast-proxy"

# Ports below this one need CAP_NET_BIND_SERVICE (net.ipv4.ip_unprivileged_port_start).
PRIVILEGED_PORTS_BELOW = 1024
CAP_NET_BIND_SERVICE = "CAP_NET_BIND_SERVICE"
CAP_NET_RAW = "CAP_NET_RAW"


class Side(collections.namedtuple("Side", ["name", "config_name", "log_name", "socket_name", "admin", "reload",
                                           "service"])):
    """The names of one side's files (in the conf dir), commands and systemd service."""

    __slots__ = ()

    def path(self, what, directory):
        """The path of the side's ``what`` ("config", "log" or "socket") in ``directory``."""
        return os.path.join(directory, getattr(self, what + "_name"))


SIDES = collections.OrderedDict((side.name, side) for side in (
    Side("server", SERVER_CONFIG_NAME, "server_log.txt", "multis.sock", "multis_admin", "server_reload_list",
         "multis_monitord"),
    Side("client", CLIENT_CONFIG_NAME, "client_log.txt", "multic.sock", "multic_admin", "client_reload_list",
         "multic_monitord"),
))


def conf_dir(environ=None):
    """The relay's config directory: ``$MULTICAST_CONF_DIR`` when set and not empty, else /etc/multicast."""
    environ = os.environ if environ is None else environ
    return environ.get(CONF_DIR_ENV) or DEFAULT_CONF_DIR


class WriteResult(collections.namedtuple("WriteResult", ["path", "replaced", "sync_error"])):
    """What ``write_file_atomically`` did.

    ``replaced`` is always True: every failure before the rename raises.
    ``sync_error`` is the OSError of the directory's fsync after the rename,
    or None.  With an error the new file is in place and every reader sees it,
    but a power loss before the kernel writes the directory back could bring
    the old file back: the caller must report a change, with ``warning()``.
    """

    __slots__ = ()

    def warning(self):
        if self.sync_error is None:
            return None
        return ("%s was replaced, but syncing its directory to disk failed (%s): a power loss now could bring "
                "back the previous file; check the disk, then run the command again"
                % (self.path, self.sync_error.strerror or self.sync_error))


def _keep_owner(fd, old):
    """Give the new file the owner of the one it replaces, when this process may (root)."""
    if old is None or (old.st_uid, old.st_gid) == (os.geteuid(), os.getegid()):
        return
    try:
        os.fchown(fd, old.st_uid, old.st_gid)
    except OSError as exc:
        # Only root gives files away; anyone else's new file is theirs, as a new file would be.
        if exc.errno != errno.EPERM:
            raise


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def sync_directory(directory):
    """fsync ``directory`` so that a rename in it survives a power loss; raises OSError."""
    dir_fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_file_atomically(path, data, mode=None, owner=None, prepare=None):
    """Replace ``path`` with the bytes ``data``: readers see the old file or the new one, never a part.

    The bytes go to a temporary file in the same directory and reach the disk
    with its mode and owner before it is renamed over ``path``; then the
    directory is synced so that the rename survives a power loss.

    ``mode``: permission bits of the new file; None keeps those of the regular
    file it replaces (NEW_FILE_MODE when there is none).  ``owner``: (uid, gid)
    of the new file; None keeps the replaced file's owner where the process
    may set it (root), else the file belongs to the writer.  ``prepare``, if
    given, is called with the temporary file's path after mode and owner are
    set, before the data is synced (for attributes such as an SELinux context).

    Raises OSError (or whatever ``prepare`` raises) when anything before the
    rename fails: the temporary file is then removed and ``path`` untouched.
    Returns a WriteResult once ``path`` is replaced, even when the directory
    sync fails (see ``WriteResult.sync_error``).
    """
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError("write_file_atomically writes bytes, not %s: encode the text first" % type(data).__name__)
    directory, name = os.path.split(path)
    directory = directory or "."
    try:
        old = os.lstat(path)
    except FileNotFoundError:
        old = None
    if old is not None and not stat.S_ISREG(old.st_mode):
        # A symlink or other special file is replaced, not followed: its attributes are not the file's.
        old = None
    fd, temp_path = tempfile.mkstemp(prefix="." + name + ".", dir=directory)
    try:
        try:
            _write_all(fd, data)
            if owner is not None:
                os.fchown(fd, owner[0], owner[1])
            else:
                _keep_owner(fd, old)
            # After the chown, which clears set-id bits.
            if mode is not None:
                os.fchmod(fd, mode)
            else:
                os.fchmod(fd, stat.S_IMODE(old.st_mode) if old is not None else NEW_FILE_MODE)
            if prepare is not None:
                prepare(temp_path)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp_path, path)
    except BaseException:
        try:
            os.unlink(temp_path)
        except FileNotFoundError:
            pass
        raise
    try:
        sync_directory(directory)
    except OSError as exc:
        return WriteResult(path, True, exc)
    return WriteResult(path, True, None)


def _bound_ports(side, cfg):
    """Every port the daemon of ``side`` binds with the config ``cfg`` (validated)."""
    ports = []
    if cfg.get("metrics_listen"):
        ports.append(split_listen(cfg["metrics_listen"])[1])
    if side == "server":
        ports.append(cfg.get("source_port") or 0)
        # Capture and VRRP groups bind no UDP port (AF_PACKET).
        ports.extend(group["group_port"] for group in cfg.get(SERVER_TOP_KEY, ())
                     if group.get("protocol") != "vrrp" and not group.get("capture"))
        # A group with allow takes subscriptions on its server port.
        ports.extend(group["server_port"] for group in cfg.get(SERVER_TOP_KEY, ()) if group.get("allow"))
    else:
        ports.extend(entry["server_port"] for entry in cfg.get(CLIENT_TOP_KEY, ()))
    return ports


def _needs_raw_sockets(side, cfg):
    if side == "server":
        # Capture mode and VRRP read the interface through an AF_PACKET socket.
        return any(group.get("protocol") == "vrrp" or group.get("capture") for group in cfg.get(SERVER_TOP_KEY, ()))
    # Re-delivery with the original source (and VRRP's TTL 255) goes through an IPPROTO_RAW socket.
    return bool(cfg.get("preserve_source")) or any(
        entry.get("protocol") == "vrrp" or entry.get("preserve_source") for entry in cfg.get(CLIENT_TOP_KEY, ()))


def needed_capabilities(side, cfg):
    """The capabilities the daemon of ``side`` ("server" or "client") needs for ``cfg``, as a sorted list.

    An unprivileged user can do everything else the relay does: join groups,
    bind ports from 1024 up, send, and have socket buffers up to
    net.core.rmem_max / wmem_max (which the roles raise instead of granting
    CAP_NET_ADMIN).  ``cfg`` is a validated config (a dict as relay_config
    returns it, or as the membership filters compute it); a port of 0 means
    an ephemeral one.
    """
    if side not in SIDES:
        raise ValueError("side must be one of %s, not %r" % (", ".join(SIDES), side))
    needed = set()
    if any(0 < port < PRIVILEGED_PORTS_BELOW for port in _bound_ports(side, cfg)):
        needed.add(CAP_NET_BIND_SERVICE)
    if _needs_raw_sockets(side, cfg):
        needed.add(CAP_NET_RAW)
    return sorted(needed)
