# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""galaxy.yml's ``version`` is the collection's one version source.

The relay package cannot read galaxy.yml on a host (the roles install only the
package), so it carries a copy in ``__version__``, and the docs name the
collection tarball. Every copy must say what galaxy.yml says: these tests fail
when one of them is left behind by a version bump.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ast
import os
import re

import yaml

COLLECTION_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# Where the version may be written down: Python sources that ship, and the docs.
VERSION_SOURCE_DIRS = ("files", "plugins")
DOC_DIRS = ("docs", "roles")
TARBALL = re.compile(r"multicast-proxy-(\d+\.\d+\.\d+\S*?)\.tar\.gz")


def galaxy_version(root):
    with open(os.path.join(root, "galaxy.yml")) as handle:
        return str(yaml.safe_load(handle)["version"])


def python_version_copies(root):
    """Map each Python file under VERSION_SOURCE_DIRS that assigns ``__version__`` to its value."""
    copies = {}
    for top in VERSION_SOURCE_DIRS:
        for directory, _subdirs, names in os.walk(os.path.join(root, top)):
            for name in sorted(names):
                path = os.path.join(directory, name)
                if not name.endswith(".py") or os.path.islink(path):
                    continue
                with open(path, "rb") as handle:
                    tree = ast.parse(handle.read(), path)
                for node in tree.body:
                    if isinstance(node, ast.Assign) and any(
                            isinstance(target, ast.Name) and target.id == "__version__" for target in node.targets):
                        copies[os.path.relpath(path, root)] = ast.literal_eval(node.value)
    return copies


def doc_version_copies(root):
    """Map each Markdown file (README.md, docs/, role READMEs) to the tarball versions it names."""
    paths = [os.path.join(root, "README.md")]
    for top in DOC_DIRS:
        for directory, _subdirs, names in os.walk(os.path.join(root, top)):
            paths.extend(os.path.join(directory, name) for name in sorted(names) if name.endswith(".md"))
    copies = {}
    for path in paths:
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as handle:
            found = TARBALL.findall(handle.read())
        if found:
            copies[os.path.relpath(path, root)] = sorted(set(found))
    return copies


def version_drift(root):
    """Return one line per copy that differs from galaxy.yml (empty when all agree)."""
    wanted = galaxy_version(root)
    problems = []
    for path, value in sorted(python_version_copies(root).items()):
        if value != wanted:
            problems.append("%s: __version__ = %r, galaxy.yml says %r" % (path, value, wanted))
    for path, values in sorted(doc_version_copies(root).items()):
        for value in values:
            if value != wanted:
                problems.append("%s: names multicast-proxy-%s.tar.gz, galaxy.yml says %r" % (path, value, wanted))
    return problems


def test_galaxy_version_is_semantic():
    assert re.match(r"^\d+\.\d+\.\d+$", galaxy_version(COLLECTION_ROOT))


def test_the_relay_carries_a_version_copy():
    assert "files/multicast_proxy/__init__.py" in python_version_copies(COLLECTION_ROOT)


def test_every_copy_matches_galaxy_yml():
    problems = version_drift(COLLECTION_ROOT)
    assert not problems, "bump these to galaxy.yml's version:\n" + "\n".join(problems)


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def test_a_copy_left_behind_is_named(tmp_path):
    root = str(tmp_path)
    write(os.path.join(root, "galaxy.yml"), "namespace: multicast\nname: proxy\nversion: 1.1.0\n")
    write(os.path.join(root, "files", "multicast_proxy", "__init__.py"), '__version__ = "1.0.0"\n')
    write(os.path.join(root, "plugins", "module_utils", "current.py"), '__version__ = "1.1.0"\n')
    write(os.path.join(root, "docs", "collection.md"), "install multicast-proxy-1.0.0.tar.gz\n")
    write(os.path.join(root, "README.md"), "build multicast-proxy-1.1.0.tar.gz\n")
    assert version_drift(root) == [
        "files/multicast_proxy/__init__.py: __version__ = '1.0.0', galaxy.yml says '1.1.0'",
        "docs/collection.md: names multicast-proxy-1.0.0.tar.gz, galaxy.yml says '1.1.0'",
    ]
