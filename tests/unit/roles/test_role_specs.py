# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Each role's meta/argument_specs.yml mirrors its defaults/main.yml key for key."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

import pytest
import yaml

ROLES_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "roles"))
ROLES = sorted(os.listdir(ROLES_DIR))


def load(role, *path):
    with open(os.path.join(ROLES_DIR, role, *path)) as handle:
        return yaml.safe_load(handle)


def test_the_three_roles_exist():
    assert ROLES == ["client", "common", "server"]


@pytest.mark.parametrize("role", ROLES)
def test_argument_specs_mirror_defaults(role):
    defaults = load(role, "defaults", "main.yml")
    options = load(role, "meta", "argument_specs.yml")["argument_specs"]["main"]["options"]
    assert list(options) == list(defaults)
    for name, value in defaults.items():
        # A default that reads an inventory variable is documented by the value it falls back to.
        if isinstance(value, str) and "{{" in value:
            continue
        assert options[name]["default"] == value, name


@pytest.mark.parametrize("role", ROLES)
def test_public_variables_carry_the_role_prefix_and_private_ones_two_underscores(role):
    assert all(name.startswith(role + "_") for name in load(role, "defaults", "main.yml"))
    assert all(name.startswith("__%s_" % role) for name in load(role, "vars", "main.yml"))
