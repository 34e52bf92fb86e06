#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: relay_install
short_description: Install a set of files in one call, writing only those that differ
version_added: 1.0.0
description:
  - Installs the relay (its package, commands and systemd units) or any other
    set of small text files in one module call, so a deploy costs one round
    trip per host instead of one or more per file.
  - The content comes from the controller, usually read by the role with the
    C(ansible.builtin.file) lookup. Every file is compared with the one on the
    host (content, mode, owner); only files that differ are written, each to a
    temporary file in the same directory that is then renamed over the old one,
    so a reader never sees half a file.
  - In a directory with O(directories[].purge) patterns, files that match a
    pattern and are not in O(directories[].files) are removed, so an upgrade
    does not leave modules of an older release behind.
  - Files and directories it creates are owned by root (user and group 0) when
    the module runs as root; it then also gives existing files that owner.
author:
  - multicast.proxy maintainers (@multicast-proxy)
attributes:
  check_mode:
    support: full
    description: Reports which files and directories would be written, created or removed; nothing is touched.
  diff_mode:
    support: full
    description:
      - Lists each file that changes with its size, mode and SHA-1 before and after.
        It does not show the text of the files.
  platform:
    support: full
    platforms: posix
    description: Runs on the managed host, as root to install into system directories.
options:
  directories:
    description:
      - The directories to install into, each with the files it gets.
      - A directory that does not exist is created, with missing parents (mode 0755).
      - Each directory may appear once.
    type: list
    elements: dict
    required: true
    suboptions:
      path:
        description:
          - Absolute path of the directory on the host, without C(.) or C(..) parts.
        type: str
        required: true
      mode:
        description:
          - Mode of the directory, as an octal string such as V("0755").
          - When omitted an existing directory keeps its mode (use this for shared
            directories such as C(/usr/local/bin)) and a new one gets V("0755").
        type: str
      files:
        description:
          - File name (no C(/)) to text content. The text is written as UTF-8, byte for byte.
        type: dict
        default: {}
      file_mode:
        description:
          - Mode of every file of O(directories[].files), as an octal string.
        type: str
        default: "0644"
      purge:
        description:
          - Shell patterns (C(*.py)) of files this directory must hold only from
            O(directories[].files); other regular files that match are removed.
          - Subdirectories and files that match no pattern are left alone.
        type: list
        elements: str
        default: []
  services:
    description:
      - systemd units (V(multis_monitord.service)) whose state the module reports in RV(active),
        read before anything is written, so a caller can restart just the daemons
        that ran old code; a daemon that was not running starts with the new files.
      - Read with C(systemctl is-active); on a host without C(systemctl) none is active.
    type: list
    elements: str
    default: []
  root:
    description:
      - Directory that every O(directories[].path) is taken relative to, for
        installing into an image or a chroot. Paths cannot leave it.
    type: path
    default: /
notes:
  - Only text files. The content travels in the module arguments, so keep the
    whole set small (the relay is about 300 KB).
seealso:
  - module: ansible.builtin.copy
"""

EXAMPLES = r"""
- name: Install the relay package, its commands and units in one call
  multicast.proxy.relay_install:
    directories:
      - path: /opt/multicast_proxy/lib/multicast_proxy
        mode: "0755"
        files:
          __init__.py: "{{ lookup('ansible.builtin.file', 'files/multicast_proxy/__init__.py', rstrip=false) }}"
          server.py: "{{ lookup('ansible.builtin.file', 'files/multicast_proxy/server.py', rstrip=false) }}"
        # Modules of an older release that this one no longer ships go away.
        purge: ["*.py"]
      - path: /usr/local/bin
        file_mode: "0755"
        files:
          multis_admin: |
            #!/bin/sh
            PYTHONPATH=/opt/multicast_proxy/lib exec /usr/bin/python3 -m multicast_proxy multis_admin "$@"
      - path: /etc/multicast
        mode: "0755"
    services: [multis_monitord.service]
  register: relay_install_result
  # The handler restarts the units listed in relay_install_result.active.
  notify: Restart running relay daemons
"""

RETURN = r"""
written:
  description: Files written (or that would be written in check mode), new or changed in content, mode or owner.
  returned: always
  type: list
  elements: str
  sample: [/opt/multicast_proxy/lib/multicast_proxy/server.py]
removed:
  description: Files removed by O(directories[].purge) (or that would be).
  returned: always
  type: list
  elements: str
  sample: [/opt/multicast_proxy/lib/multicast_proxy/old_module.py]
active:
  description: The units of O(services) that were active (running or reloading) before the install.
  returned: always
  type: list
  elements: str
  sample: [multis_monitord.service]
directories:
  description: Directories created or given their mode or owner (or that would be).
  returned: always
  type: list
  elements: str
  sample: [/opt/multicast_proxy/lib/multicast_proxy]
"""

import fnmatch
import hashlib
import os
import stat

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_bytes, to_native
from ansible_collections.multicast.proxy.plugins.module_utils.relay_module import replace_file

NEW_DIRECTORY_MODE = 0o755
# ActiveState values of a unit whose process runs (systemctl is-active prints them).
RUNNING_STATES = ("active", "reloading")


class InstallError(Exception):
    """Bad arguments; the message says what is wrong and how to fix it."""


def parse_mode(text, where):
    """Return the permission bits of an octal mode string such as "0644"."""
    text = str(text)
    if not text or any(c not in "01234567" for c in text) or len(text) > 4:
        raise InstallError("%s %r is not an octal mode; write it as a quoted string like \"0644\"" % (where, text))
    mode = int(text, 8)
    if mode & ~0o7777:
        raise InstallError("%s %r has bits beyond 07777; write it like \"0644\"" % (where, text))
    return mode


def host_path(root, path, where):
    """Map an absolute host path to where it lives under ``root``; refuse paths that could leave it."""
    if not path.startswith("/"):
        raise InstallError("%s %r is relative; give an absolute path such as /opt/multicast_proxy" % (where, path))
    parts = path.split("/")[1:]
    if any(part in (".", "..") for part in parts):
        raise InstallError("%s %r has '.' or '..' parts, which could leave the install root %s; "
                           "write the path without them" % (where, path, root))
    normalized = "/" + "/".join(part for part in parts if part)
    return normalized, os.path.join(root, normalized.lstrip("/")) if normalized != "/" else root


def check_file_name(name, where):
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise InstallError("%s %r is not a plain file name; put files of other directories in their own "
                           "directories entry" % (where, name))


def plan_from_params(params):
    """Validate the arguments; return a list of directory plans (pure, raises InstallError)."""
    root = params["root"]
    if not root or not root.startswith("/"):
        raise InstallError("root %r is relative; give an absolute path (default /)" % (root,))
    root = os.path.normpath(root)
    plans = []
    seen = {}
    for index, entry in enumerate(params["directories"]):
        where = "directories[%d]" % index
        path, real_path = host_path(root, entry["path"], where + ".path")
        if path in seen:
            raise InstallError("%s.path %s is listed twice (also as directories[%d]); merge the two entries"
                               % (where, path, seen[path]))
        seen[path] = index
        mode = parse_mode(entry["mode"], where + ".mode") if entry["mode"] is not None else None
        file_mode = parse_mode(entry["file_mode"], where + ".file_mode")
        files = {}
        for name, content in sorted((entry["files"] or {}).items()):
            check_file_name(name, where + ".files key")
            if not isinstance(content, str):
                raise InstallError("%s.files[%r] must be text, got %s; read files with the "
                                   "ansible.builtin.file lookup" % (where, name, type(content).__name__))
            files[name] = to_bytes(content, errors="surrogate_or_strict")
        purge = []
        for pattern in entry["purge"] or []:
            if not pattern or "/" in pattern:
                raise InstallError("%s.purge pattern %r must be a file name pattern such as *.py, without /"
                                   % (where, pattern))
            purge.append(pattern)
        plans.append({"path": path, "real_path": real_path, "mode": mode, "file_mode": file_mode,
                      "files": files, "purge": purge})
    return plans


def describe(size, mode, digest):
    return "%d bytes, mode %04o, sha1 %s" % (size, mode, digest)


class Installer(object):
    """Compares the plan with the host and applies the difference."""

    def __init__(self, module, plans):
        self.module = module
        self.plans = plans
        # Ownership is only ours to set when we run as root.
        self.owner = (0, 0) if os.geteuid() == 0 else None
        self.written = []
        self.removed = []
        self.directories = []
        self.before = []
        self.after = []

    def owner_differs(self, st):
        return self.owner is not None and (st.st_uid, st.st_gid) != self.owner

    def run(self):
        for plan in self.plans:
            self.install_directory(plan)

    def install_directory(self, plan):
        real = plan["real_path"]
        try:
            st = os.lstat(real)
        except FileNotFoundError:
            st = None
        if st is not None and not stat.S_ISDIR(st.st_mode):
            self.module.fail_json(msg="%s exists and is not a directory; move it away, then run again" % plan["path"],
                                  written=self.written, removed=self.removed, directories=self.directories)
        if st is None:
            self.directories.append(plan["path"])
            if not self.module.check_mode:
                self.make_directory(real, plan["mode"] if plan["mode"] is not None else NEW_DIRECTORY_MODE)
        elif plan["mode"] is not None and (stat.S_IMODE(st.st_mode) != plan["mode"] or self.owner_differs(st)):
            # Only directories given a mode are ours; shared ones keep their mode and owner.
            self.directories.append(plan["path"])
            if not self.module.check_mode:
                self.set_attributes(real, plan["mode"])

        for name, content in plan["files"].items():
            self.install_file(plan, name, content, exists=st is not None)
        if st is not None and plan["purge"]:
            self.purge(plan)

    def make_directory(self, real, mode):
        parents = []
        path = real
        while not os.path.isdir(path):
            parents.append(path)
            path = os.path.dirname(path)
        for path in reversed(parents):
            os.mkdir(path)
            # mkdir applies the umask; the mode must be exact.
            self.set_attributes(path, NEW_DIRECTORY_MODE if path != real else mode)

    def set_attributes(self, real, mode):
        if self.owner is not None:
            os.lchown(real, *self.owner)
        os.chmod(real, mode)

    def install_file(self, plan, name, content, exists):
        path = plan["path"].rstrip("/") + "/" + name
        real = os.path.join(plan["real_path"], name)
        mode = plan["file_mode"]
        new_digest = hashlib.sha1(content).hexdigest()
        old = None
        if exists:
            try:
                st = os.lstat(real)
            except FileNotFoundError:
                st = None
            if st is not None and stat.S_ISDIR(st.st_mode):
                self.module.fail_json(msg="%s is a directory where the file %s belongs; move it away, then run again"
                                          % (path, name),
                                      written=self.written, removed=self.removed, directories=self.directories)
            if st is not None and stat.S_ISREG(st.st_mode):
                with open(real, "rb") as current:
                    old_content = current.read()
                old = (len(old_content), stat.S_IMODE(st.st_mode), hashlib.sha1(old_content).hexdigest())
                if old_content == content and old[1] == mode and not self.owner_differs(st):
                    return
            elif st is not None:
                # A symlink or other special file is replaced by a regular file.
                old = (0, stat.S_IMODE(st.st_mode), "(not a regular file)")
        self.written.append(path)
        if old is not None:
            self.before.append("%s: %s\n" % (path, describe(*old)))
        self.after.append("%s: %s\n" % (path, describe(len(content), mode, new_digest)))
        if not self.module.check_mode:
            self.write_file(real, content, mode)

    def write_file(self, real, content, mode):
        # Owner and mode are right before the rename, so the file never
        # appears with the wrong ones (a command without its x bit).
        replace_file(self.module, real, content, lambda tmp_path: self.set_attributes(tmp_path, mode),
                     keep_dest_attrs=False)
        # atomic_move gives a file it creates the umask's mode.
        self.set_attributes(real, mode)

    def purge(self, plan):
        real = plan["real_path"]
        for name in sorted(os.listdir(real)):
            if name in plan["files"] or not any(fnmatch.fnmatchcase(name, p) for p in plan["purge"]):
                continue
            victim = os.path.join(real, name)
            if os.path.isdir(victim) and not os.path.islink(victim):
                continue
            path = plan["path"].rstrip("/") + "/" + name
            self.removed.append(path)
            self.before.append("%s: present\n" % path)
            if not self.module.check_mode:
                os.unlink(victim)


def active_services(module, services):
    """Return the units of ``services`` that run now, in the order given."""
    if not services:
        return []
    systemctl = module.get_bin_path("systemctl")
    if systemctl is None:
        return []
    # One line per unit, in order; the exit code only says whether all are active.
    rc, out, err = module.run_command([systemctl, "is-active"] + list(services))
    states = out.splitlines()
    if len(states) != len(services):
        module.fail_json(msg="systemctl is-active %s printed %d states for %d units (rc=%d): %s"
                             % (" ".join(services), len(states), len(services), rc, (err or out).strip()))
    return [service for service, state in zip(services, states) if state.strip() in RUNNING_STATES]


def main():
    module = AnsibleModule(
        argument_spec=dict(
            directories=dict(
                type="list", elements="dict", required=True,
                options=dict(
                    path=dict(type="str", required=True),
                    mode=dict(type="str"),
                    files=dict(type="dict", default={}),
                    file_mode=dict(type="str", default="0644"),
                    purge=dict(type="list", elements="str", default=[]),
                ),
            ),
            services=dict(type="list", elements="str", default=[]),
            root=dict(type="path", default="/"),
        ),
        supports_check_mode=True,
    )
    try:
        plans = plan_from_params(module.params)
    except InstallError as exc:
        module.fail_json(msg=to_native(exc))
    active = active_services(module, module.params["services"])
    installer = Installer(module, plans)
    try:
        installer.run()
    except (IOError, OSError) as exc:
        module.fail_json(msg="install failed: %s; files listed in written and removed were already changed, "
                             "fix the cause and run again" % to_native(exc),
                         written=installer.written, removed=installer.removed, directories=installer.directories)
    module.exit_json(
        changed=bool(installer.written or installer.removed or installer.directories),
        written=installer.written,
        removed=installer.removed,
        directories=installer.directories,
        active=active,
        diff=dict(before="".join(installer.before), after="".join(installer.after),
                  before_header="files on the host", after_header="files after install"),
    )


if __name__ == "__main__":
    main()
