# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Render the roles' config templates the way the roles do and compare to expected JSON."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

import pytest

from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar
from ansible_collections.multicast.proxy.tests.unit.compat import render_text, trust_as_template
from ansible_collections.multicast.proxy.tests.unit.plugins.filter.inventory import fleet, vrrp_fleet

COLLECTION_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
EXPECTED_DIR = os.path.join(os.path.dirname(__file__), "expected")


def read(path):
    with open(path) as handle:
        return handle.read()


def render(role, host, sample=fleet):
    """The role's preflight set_fact expression, then its template."""
    definitions, hostvars, groups = sample()
    variables = {
        "__%s_groups" % role: definitions,
        "inventory_hostname": host,
        "hostvars": hostvars,
        "groups": groups,
        "__server_interface": "",
        "__client_delivery_interface": "",
        # As the client role's vars do.
        "__client_preserve_source": hostvars[host].get("multicast_proxy_preserve_source", False),
        "__client_source_port_check": True,
        # No metrics settings: the configs stay in the seed's format.
        "__%s_settings" % role: {},
    }
    templar = Templar(loader=DataLoader(), variables=variables)
    preflight = read(os.path.join(COLLECTION_ROOT, "roles", role, "tasks", "preflight.yml"))
    expression = preflight.split("__%s_config: >-" % role, 1)[1].strip()
    variables["__%s_config" % role] = templar.template(trust_as_template(" ".join(expression.split())))
    templar = Templar(loader=DataLoader(), variables=variables)
    template = read(os.path.join(COLLECTION_ROOT, "roles", role, "templates", "%s_cfg.json.txt.j2" % role))
    return render_text(templar, template)


@pytest.mark.parametrize("role, host", [("server", "src1"), ("server", "mem1"), ("client", "mem1"),
                                        ("client", "src1")])
def test_rendered_config_matches_expected(role, host):
    assert render(role, host) == read(os.path.join(EXPECTED_DIR, "%s_%s.json" % (role, host)))


@pytest.mark.parametrize("role, host", [("server", "ka1"), ("server", "cam1"), ("client", "ka1"),
                                        ("client", "view1")])
def test_rendered_vrrp_capture_and_preserve_source_configs_match_expected(role, host):
    assert render(role, host, vrrp_fleet) == read(os.path.join(EXPECTED_DIR, "%s_%s.json" % (role, host)))
