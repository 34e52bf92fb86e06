# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The inventory snippets of docs/interop.md, as fleets the membership filter takes.

Each snippet is a fenced ``yaml`` block whose first line is ``# interop: NAME``
and which holds one ``multicast_proxy_groups`` list. The filter unit tests
check what the snippets render; the interop suite in network namespaces
(tests/relay/netns/test_interop.py) deploys the relay from the same snippets,
so the documented inventory is the one the real applications were run with.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import os
import re

import yaml

DOCS = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "docs", "interop.md"))
_SNIPPET = re.compile(r"^```yaml\n# interop: (\S+)\n(.*?)^```", re.S | re.M)


def snippets(path=DOCS):
    """Snippet name -> its list of group definitions, in the order of the document."""
    with open(path) as handle:
        text = handle.read()
    found = {}
    for name, body in _SNIPPET.findall(text):
        if name in found:
            raise ValueError("%s: two snippets named %s" % (path, name))
        found[name] = yaml.safe_load(body)["multicast_proxy_groups"]
    return found


def inventory_groups(definitions):
    """The inventory group names the definitions' senders and receivers name, sorted."""
    names = set()
    for definition in definitions:
        for key in ("senders", "receivers"):
            value = definition[key]
            names.update([value] if isinstance(value, str) else value)
    return sorted(names)


def fleet(definitions, members):
    """(definitions, hostvars, groups) for the filter; ``members`` maps each
    inventory group to a list of (host, address)."""
    groups = {"all": [], "ungrouped": []}
    hostvars = {}
    for group, hosts in members.items():
        groups[group] = [host for host, _address in hosts]
        for host, address in hosts:
            if host not in hostvars:
                groups["all"].append(host)
                hostvars[host] = {"multicast_proxy_address": address}
    return copy.deepcopy(definitions), hostvars, groups
