# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options shared by the modules that read or edit the relay's config files."""

from __future__ import annotations


class ModuleDocFragment:
    """Where the relay keeps its files."""

    DOCUMENTATION = r"""
options:
  conf_dir:
    description:
      - Directory holding the relay config (the relay's E(MULTICAST_CONF_DIR)).
    type: path
    default: /etc/multicast
"""

    # Modules that change a config file and apply it to the running daemon.
    EDIT = r"""
attributes:
  check_mode:
    support: full
    description: Reports what would change; nothing is written and the daemon is not touched.
  diff_mode:
    support: full
    description: Shows the config file before and after.
  platform:
    support: full
    platforms: posix
    description: Runs on the managed Linux host that runs (or will run) the relay.
options:
  reload:
    description:
      - Apply a changed config to the running daemon with the side's reload command
        (C(server_reload_list reload) or C(client_reload_list reload)).
      - When the daemon is not running the module warns; the file applies when it starts.
    type: bool
    default: true
"""
