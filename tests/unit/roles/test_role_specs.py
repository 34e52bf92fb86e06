# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One name per setting: the roles read the inventory's ``multicast_proxy_*`` variables.

Each role turns the settings it reads into private ``__<role>_*`` variables in
vars/main.yml (``"{{ multicast_proxy_x | default(...) }}"``); its
meta/argument_specs.yml documents exactly those ``multicast_proxy_*`` names,
with the same defaults, and every entry point of the common role that other
roles include lists exactly the settings its task file reads.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re

import pytest
import yaml

from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar

from ansible_collections.multicast.proxy.tests.unit.compat import trust_as_template

ROLES_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "roles"))
ROLES = sorted(os.listdir(ROLES_DIR))
# A private variable that reads a setting: "{{ multicast_proxy_x | default(...) }}".
SETTING = re.compile(r"^\{\{ (multicast_proxy_[a-z_]+) \| default\(.*\) \}\}$")


def load(role, *path):
    with open(os.path.join(ROLES_DIR, role, *path)) as handle:
        return yaml.safe_load(handle)


def settings(role):
    """{private variable: public multicast_proxy_* name} of a role's vars/main.yml."""
    found = {}
    for name, value in load(role, "vars", "main.yml").items():
        match = SETTING.match(value) if isinstance(value, str) else None
        if match:
            found[name] = match.group(1)
    return found


def test_the_three_roles_exist():
    assert ROLES == ["client", "common", "server"]


@pytest.mark.parametrize("role", ROLES)
def test_no_role_gives_a_setting_a_second_name(role):
    """No defaults/main.yml: a role variable beside the inventory's would be a second name."""
    assert not os.path.exists(os.path.join(ROLES_DIR, role, "defaults", "main.yml"))
    assert all(name.startswith("__%s_" % role) for name in load(role, "vars", "main.yml"))


@pytest.mark.parametrize("role", ROLES)
def test_the_main_spec_documents_exactly_the_settings_the_role_reads_with_their_defaults(role):
    options = load(role, "meta", "argument_specs.yml")["argument_specs"]["main"]["options"]
    read = settings(role)
    assert sorted(options) == sorted(set(read.values()))
    assert len(set(read.values())) == len(read), "two private variables read one setting"
    templar = Templar(loader=DataLoader(), variables={})
    values = load(role, "vars", "main.yml")
    for private, public in read.items():
        default = templar.template(trust_as_template(values[private]))
        if isinstance(default, str) and not isinstance(options[public]["default"], str):
            default = yaml.safe_load(default)   # ansible-core before 2.19 renders scalars as text
        assert default == options[public]["default"], "%s: %r in vars, %r in the spec" % (
            public, default, options[public]["default"])


def test_a_setting_read_by_two_roles_is_documented_alike():
    """multicast_proxy_groups, _state, _metrics...: the same type and default wherever a role reads them."""
    seen = {}
    for role in ROLES:
        for name, option in load(role, "meta", "argument_specs.yml")["argument_specs"]["main"]["options"].items():
            shape = json.dumps([option.get(key) for key in ("type", "default", "choices", "elements")])
            seen.setdefault(name, {})[role] = shape
    for name, shapes in seen.items():
        assert len(set(shapes.values())) == 1, "%s differs between roles: %s" % (name, shapes)


def _included_entry_points():
    """The common role's task files that the other roles and the playbooks include (tasks_from)."""
    root = os.path.dirname(ROLES_DIR)
    found = set()
    for top in ("roles", "playbooks"):
        for directory, _subdirs, names in os.walk(os.path.join(root, top)):
            for name in names:
                if name.endswith(".yml"):
                    with open(os.path.join(directory, name)) as handle:
                        found.update(re.findall(r"^\s*tasks_from:\s*([a-z_]+)\s*$", handle.read(), re.M))
    return sorted(found)


def _text_read_by(task_file):
    """A common task file, the templates it renders and the task files it includes."""
    with open(os.path.join(ROLES_DIR, "common", "tasks", task_file)) as handle:
        text = handle.read()
    for template in re.findall(r"^\s*src:\s*([\w.-]+\.j2)\s*$", text, re.M):
        with open(os.path.join(ROLES_DIR, "common", "templates", template)) as handle:
            text += handle.read()
    for included in re.findall(r"include_tasks:\s*([\w.-]+\.yml)", text):
        with open(os.path.join(ROLES_DIR, "common", "tasks", included)) as handle:
            text += handle.read()
    return text


def test_every_included_entry_point_of_common_has_its_own_argument_spec():
    specs = load("common", "meta", "argument_specs.yml")["argument_specs"]
    entry_points = _included_entry_points()
    assert {"auth", "host", "install", "metrics", "preflight", "unit"} <= set(entry_points)
    missing = [name for name in entry_points + ["uninstall"] if name not in specs]
    assert not missing, "entry points without an argument spec: %s" % missing


@pytest.mark.parametrize("entry_point", ["auth", "firewall", "host", "install", "metrics", "preflight", "set_vars",
                                         "uninstall", "unit"])
def test_an_entry_point_spec_names_exactly_the_settings_it_reads(entry_point):
    specs = load("common", "meta", "argument_specs.yml")["argument_specs"]
    options = specs[entry_point].get("options") or {}
    text = _text_read_by(entry_point + ".yml")
    read = settings("common")
    # A private variable of vars/main.yml may be built from a setting: follow it one step.
    values = load("common", "vars", "main.yml")
    used = set()
    for private, public in read.items():
        users = [name for name, value in values.items() if isinstance(value, str) and private in value]
        if re.search(r"(?<![\w])%s(?![\w])" % private, text) or any(
                re.search(r"(?<![\w])%s(?![\w])" % user, text) for user in users):
            used.add(public)
    parameters = {name for name, option in options.items() if option.get("required")}
    assert set(options) - parameters == used
    main = specs["main"]["options"]
    for name, option in options.items():
        if name in main:
            assert option == main[name], "%s of %s differs from main's" % (name, entry_point)
        else:
            # Only the include passes it: no setting, no default to fall back to.
            assert name in parameters and re.search(r"(?<![\w])%s(?![\w])" % name, text), name
