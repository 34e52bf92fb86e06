"""Authenticated frames: the key file, tagging on the server, checking on the client.

The tag is HMAC-SHA256 over the frame's header and payload, truncated to
``frame.TAG_LEN`` (16) bytes, keyed by the secret whose id is in the header
(docs/frame-format.md has the definition and a test vector).  Secrets live
only in ``auth_keys.json`` and in the HMAC objects below; no message of this
module or its callers contains one.
"""

import grp
import hashlib
import hmac
import os
import socket
import stat

from . import relay_config as config, relay_contract as contract, frame

TAG_LEN = frame.TAG_LEN
# A key file is a few hundred bytes; refuse to slurp anything absurd.
MAX_KEY_FILE_BYTES = 64 * 1024
# Reasons the client counts and logs, in the order it checks them.  auth_unbound:
# a valid legacy tag (one that does not name its server) where it is no longer
# accepted, see Verifier.check.
AUTH_DROP_REASONS = ("auth_missing", "auth_unknown_key", "auth_bad", "auth_unbound")
# What a legacy tag covers before the frame: nothing.  Releases before tags
# named their server (before 1.0.0) made and checked only such tags.
LEGACY_IDENTITY = b""
# SHA-256 block size: the HMAC key pads are this long.
_BLOCK = 64


def key_file_path(directory):
    return os.path.join(directory, config.AUTH_KEYS_NAME)


def required_path(directory):
    return os.path.join(directory, contract.AUTH_REQUIRED_NAME)


def auth_required(directory):
    """True when the marker ``auth_required`` is in ``directory``: keys are then required.

    Any kind of file counts, a dangling symlink too, and so does a marker
    that cannot be looked up (the directory unreadable): in doubt the daemon
    refuses rather than relays unchecked.
    """
    try:
        os.lstat(required_path(directory))
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError:
        return True
    return True


def service_gid():
    """The gid of the daemons' group (relay_contract.SERVICE_GROUP), or None where it does not exist."""
    try:
        return grp.getgrnam(contract.SERVICE_GROUP).gr_gid
    except KeyError:
        return None


def key_file_mode_error(mode, gid, allowed_gid):
    """Why a key file of ``mode`` and group ``gid`` exposes the secrets, or None when it does not.

    Others never get a permission bit, nor the group a write or execute bit.
    The group may read when it is the daemons' own (``allowed_gid``): that is
    how the daemons, an unprivileged user, read a file only root can change.
    """
    if not mode & 0o077:
        return None
    if mode & 0o077 == 0o040 and allowed_gid is not None and gid == allowed_gid:
        return None
    return "mode %04o lets other users read or change the secrets; run chmod 600 %%s (or chgrp %s and chmod 640, " \
           "for the relay's daemons), and rotate the keys if others could read them" % (mode, contract.SERVICE_GROUP)


def read_key_file(path):
    """Return the validated keys in ``path``, or None when there is no such file.

    Raises ``config.ConfigError`` when the file cannot be read, is a special
    file, can be read or written by others, or by a group other than the
    daemons' (read only), is owned by another user than root or the caller,
    or does not validate.
    """
    try:
        # O_NONBLOCK: a FIFO planted at this path must not hang the daemon.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise config.ConfigError(path, "cannot read the key file: %s" % (exc.strerror or exc))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise config.ConfigError(path, "not a regular file; write the keys to a plain file with mode 0600")
        if info.st_uid not in (0, os.geteuid()):
            raise config.ConfigError(path, "owned by uid %d; the key file must belong to root "
                                           "(chown root:root %s)" % (info.st_uid, path))
        mode_error = key_file_mode_error(stat.S_IMODE(info.st_mode), info.st_gid, service_gid())
        if mode_error:
            raise config.ConfigError(path, mode_error % path)
        data = os.read(fd, MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise config.ConfigError(path, "cannot read the key file: %s" % (exc.strerror or exc))
    finally:
        os.close(fd)
    if len(data) > MAX_KEY_FILE_BYTES:
        raise config.ConfigError(path, "larger than %d bytes; a key file lists at most %d keys"
                                 % (MAX_KEY_FILE_BYTES, config.MAX_AUTH_KEYS))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise config.ConfigError(path, "not UTF-8 text; write the key file as JSON")
    return config.load_auth_keys(text, path)


def server_identity(server_ip):
    """The 4 bytes that bind a tag to the server that sent the frame: its IPv4 address, network order."""
    return socket.inet_aton(server_ip)


def compute_tag(secret, server_ip, data):
    """The 16-byte tag of a frame's header and payload sent by ``server_ip`` (reference form, for tests and tools).

    The MAC covers the server's address (as the member receives the frame
    from it) before the frame: a frame one server sent does not verify under
    another server's address (docs/frame-format.md).
    """
    return hmac.new(secret, server_identity(server_ip) + bytes(data), hashlib.sha256).digest()[:TAG_LEN]


def describe(keys):
    """A log-safe summary of validated keys: ids only."""
    if keys is None:
        return "off"
    return "keys %s, sending with key %d" % (", ".join(str(k) for k in sorted(keys["keys"])), keys["send_key_id"])


class _Keyed:
    """HMAC-SHA256 (RFC 2104) with the two key pads hashed once per key.

    Per frame only two ``hashlib`` state copies are made; that is cheaper
    than ``hmac.HMAC.copy()`` on the Python versions the relay supports
    (docs/relay.md has the measurement), and ``compute_tag`` checks it
    against the ``hmac`` module in the unit tests.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, secret):
        if len(secret) > _BLOCK:
            secret = hashlib.sha256(secret).digest()
        secret = secret.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in secret))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in secret))

    def tag(self, server, data):
        """The tag of ``data`` sent by ``server`` (``server_identity``)."""
        inner = self._inner.copy()
        inner.update(server)
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:TAG_LEN]


class Signer:
    """The send key; ``bound`` gives the signer of one server address."""

    __slots__ = ("key_id", "_keyed")

    def __init__(self, keys):
        self.key_id = keys["send_key_id"]
        self._keyed = _Keyed(keys["keys"][self.key_id])

    def bound(self, server_ip, legacy=False):
        """A BoundSigner whose tags say that ``server_ip`` sent the frame.

        ``legacy``: tags that do not name the server, which clients of
        releases before 1.0.0 verify (the server's ``legacy_tags`` setting,
        for the first step of an upgrade from them).
        """
        return BoundSigner(self.key_id, self._keyed, LEGACY_IDENTITY if legacy else server_identity(server_ip),
                           server_ip)


class BoundSigner:
    """Appends tags made with the send key for frames sent from one server address."""

    __slots__ = ("key_id", "_keyed", "_server", "server_ip")

    def __init__(self, key_id, keyed, server, server_ip):
        self.key_id = key_id
        self._keyed = keyed
        self._server = server
        self.server_ip = server_ip

    def sign_into(self, view, length):
        """Write the tag of ``view[:length]`` at ``view[length:]``; returns the tagged frame length."""
        end = length + TAG_LEN
        view[length:end] = self._keyed.tag(self._server, view[:length])
        return end


class Verifier:
    """Checks tags against every listed key (old and new during a rotation) and
    counts the frames accepted with each key, so an operator can see when the
    old key is no longer in use.

    Legacy tags (``LEGACY_IDENTITY``: they do not name the server, as servers
    before 1.0.0 and servers with ``legacy_tags`` make them) are accepted
    from an entry's server until that server has sent one valid tag that
    names it, and never when ``legacy_allowed`` is false (keys required):
    after that a legacy tag is a downgrade, refused as ``auth_unbound``.
    """

    __slots__ = ("_keyed", "accepted", "unbound", "legacy_allowed")

    def __init__(self, keys, previous=None, legacy_allowed=True):
        self._keyed = dict((key_id, _Keyed(secret)) for key_id, secret in keys["keys"].items())
        before = previous.accepted if previous is not None else {}
        self.accepted = dict((key_id, before.get(key_id, 0)) for key_id in keys["keys"])
        # Frames accepted with a legacy tag: an upgrade that is not finished.
        self.unbound = previous.unbound if previous is not None else 0
        self.legacy_allowed = legacy_allowed

    def check(self, view, flags, key_id, payload_end, server, window=None):
        """None when the frame carries a valid tag, else the drop reason.

        ``payload_end`` is where the tag starts (what ``frame.parse_from``
        returns); the tag covers ``server`` (``server_identity`` of the
        address the frame came from) and ``view[:payload_end]``.  ``window``
        is the entry's ReplayWindow: its ``bound`` flag records that the
        entry's server sends tags that name it; None for messages that have
        no legacy form (subscriptions), which need a tag that names them.  A frame with a wrong tag
        costs a second HMAC (the legacy form), so that a downgrade is told
        apart from a forgery.
        """
        if not flags & frame.FLAG_TAG:
            return "auth_missing"
        keyed = self._keyed.get(key_id)
        if keyed is None:
            return "auth_unknown_key"
        covered = view[:payload_end]
        tag = view[payload_end:payload_end + TAG_LEN]
        if hmac.compare_digest(keyed.tag(server, covered), tag):
            if window is not None:
                window.bound = True
            return None
        if window is None:
            return "auth_bad"
        if not hmac.compare_digest(keyed.tag(LEGACY_IDENTITY, covered), tag):
            return "auth_bad"
        if window.bound or not self.legacy_allowed:
            return "auth_unbound"
        self.unbound += 1
        return None

    def as_dict(self):
        return {"key_ids": sorted(self.accepted), "accepted_by_key": dict(
            (str(key_id), count) for key_id, count in sorted(self.accepted.items())),
            "accepted_unbound": self.unbound, "legacy_allowed": self.legacy_allowed}
