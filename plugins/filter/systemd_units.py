# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which unit-file directives a host's systemd knows: the one table the units are rendered from.

The relay's units (roles/common/templates/relay.service.j2) write a directive
only when ``directive | multicast.proxy.systemd_knows(version)`` holds for the
host's systemd (read by the common role's preflight with ``systemctl
--version``).  A directive the template uses and this table lacks is an
error, so a new directive cannot reach a unit without its version.

Versions are those of systemd's NEWS where the directive (or the value the
units give it) first appears as new; directives older than systemd 219
carry 219: no supported platform is older than 239 (docs/platforms.md).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible.errors import AnsibleFilterError

# The oldest systemd the table distinguishes; everything the units use that
# is older is listed with it.
BASELINE = 219

SYSTEMD_DIRECTIVES = {
    # [Unit] and [Install]
    "Description": BASELINE,
    "After": BASELINE,
    "Wants": BASELINE,
    "WantedBy": BASELINE,
    # [Service]: how the daemon runs
    "Type": BASELINE,
    "NotifyAccess": BASELINE,
    "ExecStart": BASELINE,
    "ExecReload": BASELINE,
    "Restart": BASELINE,
    "RestartSec": BASELINE,
    "RestartPreventExitStatus": BASELINE,
    "Environment": BASELINE,
    "LimitNOFILE": BASELINE,
    "User": BASELINE,
    "Group": BASELINE,
    "UMask": BASELINE,
    # [Service]: hardening
    "CapabilityBoundingSet": BASELINE,
    "NoNewPrivileges": BASELINE,
    "PrivateTmp": BASELINE,
    "PrivateDevices": BASELINE,
    "SystemCallFilter": BASELINE,
    "SystemCallErrorNumber": BASELINE,
    "SystemCallArchitectures": BASELINE,
    "RestrictAddressFamilies": BASELINE,
    "AmbientCapabilities": 229,
    "ReadWritePaths": 231,
    "RestrictRealtime": 231,
    "MemoryDenyWriteExecute": 231,
    # ProtectSystem= and ProtectHome= are older (214); "strict" is 232.
    "ProtectSystem": 232,
    "ProtectHome": BASELINE,
    "ProtectKernelTunables": 232,
    "ProtectKernelModules": 232,
    "ProtectControlGroups": 232,
    "RemoveIPC": 232,
    "RestrictNamespaces": 233,
    "LockPersonality": 235,
    "PrivateMounts": 239,
    "ProtectHostname": 242,
    "RestrictSUIDSGID": 242,
    "ProtectKernelLogs": 244,
    "ProtectClock": 245,
    "ProtectProc": 247,
}

# The systemd releases of the platforms the collection supports (meta/main.yml).
PLATFORM_SYSTEMD = {
    "EL 8": 239,
    "Ubuntu 20.04": 245,
    "Debian 11": 247,
    "Ubuntu 22.04": 249,
    "Debian 12": 252,
    "EL 9": 252,
    "Ubuntu 24.04": 255,
    "Debian 13": 257,
    "Alibaba Cloud Linux 3": 239,
}


def systemd_version(text):
    """The release number from ``systemctl --version`` output ("systemd 252 (252.38-1~deb12u1)")."""
    match = re.match(r"\s*systemd\s+(\d+)", str(text))
    if not match:
        raise AnsibleFilterError("systemd_version: cannot read a systemd release from %r; expected the output of "
                                 "systemctl --version, which starts with \"systemd NNN\"" % str(text)[:80])
    return int(match.group(1))


def systemd_knows(directive, version):
    """True when systemd ``version`` knows the unit directive ``directive``."""
    try:
        introduced = SYSTEMD_DIRECTIVES[directive]
    except KeyError:
        raise AnsibleFilterError("systemd_knows: %s is not in the table of plugins/filter/systemd_units.py; add it "
                                 "with the systemd release that introduced it (systemd's NEWS)" % directive)
    return int(version) >= introduced


class FilterModule(object):
    """systemd version filters of multicast.proxy."""

    def filters(self):
        return {
            "systemd_version": systemd_version,
            "systemd_knows": systemd_knows,
        }
