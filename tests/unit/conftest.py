# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Make ``ansible_collections.multicast.proxy`` importable under plain pytest.

``ansible-test units`` installs Ansible's collection loader itself; plain
pytest (scripts/run-module-units.sh) runs in a collection tree
``<root>/ansible_collections/multicast/proxy`` and installs it here, so plugin
imports and FQCN filter lookups in templates resolve to this tree.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import sys

from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder

_COLLECTION_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
_COLLECTIONS_PATH = os.path.abspath(os.path.join(_COLLECTION_ROOT, "..", "..", ".."))

if not any(isinstance(finder, _AnsibleCollectionFinder) for finder in sys.meta_path):
    if os.path.basename(os.path.dirname(os.path.dirname(_COLLECTION_ROOT))) != "ansible_collections":
        raise RuntimeError("run these tests from a collection tree (scripts/run-module-units.sh builds one), "
                           "not from %s" % _COLLECTION_ROOT)
    _AnsibleCollectionFinder(paths=[_COLLECTIONS_PATH])._install()
