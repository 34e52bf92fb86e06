# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The schema table and every surface derived from it (issue 13).

Two halves. The drift checks compare what is written down by hand or by a
generator (the modules' DOCUMENTATION, the roles' argument_specs, the
reference page) with what SCHEMA says today. The throwaway option adds one
row to SCHEMA and shows that the validator, the edit functions, the module
argument specs, the membership filter and the role spec derive it, and that
the drift checks catch every static surface that does not yet carry it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import importlib
import importlib.util
import os

import pytest
import yaml

from ansible_collections.multicast.proxy.plugins.filter import membership
from ansible_collections.multicast.proxy.plugins.module_utils import relay_config as rc
from ansible_collections.multicast.proxy.plugins.modules import client_server, relay_settings, server_group
from ansible_collections.multicast.proxy.tests.unit.plugins.filter.inventory import fleet

COLLECTION_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
ROLES = ("server", "client", "common")
# The role variable holding group definitions, per role.
ROLE_GROUP_VARIABLE = {"server": "multicast_proxy_groups", "client": "multicast_proxy_groups",
                       "common": "multicast_proxy_groups"}
# Which module edits which place of the config.
MODULE_PLACES = ((server_group, (rc.GROUP,)), (client_server, (rc.ENTRY,)), (relay_settings, (rc.SERVER, rc.CLIENT)))

THROWAWAY = rc.Option("throwaway", rc.GROUP, "flag", False, False, "not default", "--throwaway", "throwaway",
                      "throwaway", None, "an option that exists only in this test")


def load_schema_docs():
    spec = importlib.util.spec_from_file_location("schema_docs", os.path.join(COLLECTION_ROOT, "scripts",
                                                                              "schema_docs.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def role_group_spec(role):
    with open(os.path.join(COLLECTION_ROOT, "roles", role, "meta", "argument_specs.yml")) as handle:
        specs = yaml.safe_load(handle)["argument_specs"]
    return specs["main"]["options"][ROLE_GROUP_VARIABLE[role]]["options"]


def documented_options(module):
    return yaml.safe_load(module.DOCUMENTATION)["options"]


# -- drift: the static surfaces say what SCHEMA says -------------------------------------

def drift(module, places):
    """What ``module``'s DOCUMENTATION gets wrong about the schema rows of ``places`` (empty when nothing)."""
    documented = documented_options(module)
    problems = []
    for place in places:
        for name, spec in sorted(rc.module_argument_spec(place).items()):
            doc = documented.get(name)
            if doc is None:
                problems.append("%s: option %s is not documented" % (module.__name__, name))
                continue
            if doc.get("type", "str") != spec["type"]:
                problems.append("%s: %s is documented as %s, the schema says %s"
                                % (module.__name__, name, doc.get("type", "str"), spec["type"]))
            if sorted(doc.get("choices") or []) != sorted(spec.get("choices") or []):
                problems.append("%s: %s choices %s, the schema says %s"
                                % (module.__name__, name, doc.get("choices"), spec.get("choices")))
    return problems


def role_drift():
    """The roles whose group-definition suboptions differ from group_definition_spec(), with the YAML to use."""
    expected = membership.group_definition_spec()
    return [(role, yaml.safe_dump(expected, sort_keys=False, width=110)) for role in ROLES
            if role_group_spec(role) != expected]


@pytest.mark.parametrize("module, places", MODULE_PLACES, ids=lambda value: getattr(value, "__name__", ""))
def test_module_documentation_matches_the_schema(module, places):
    assert drift(module, places) == []


def test_role_specs_carry_the_schema_suboptions():
    stale = role_drift()
    assert stale == [], "roles %s: put this under options: of the group list\n%s" % (
        ", ".join(role for role, _yaml in stale), stale[0][1] if stale else "")


def test_the_reference_page_is_generated_from_the_schema():
    schema_docs = load_schema_docs()
    with open(os.path.join(COLLECTION_ROOT, "docs", "config-reference.md")) as handle:
        assert handle.read() == schema_docs.render(rc), "run scripts/schema_docs.py"


def test_every_optional_row_can_be_set_from_a_command_and_a_module():
    for place in rc.PLACES:
        for option in rc.schema_rows(place):
            assert option.cli and option.module, "%s %s: no command-line flag or module option" % (place, option.key)
            assert option.kind in rc.KINDS and option.written in ("always", "when set", "not default")
            # One line that the docs and --help end with their own punctuation.
            assert option.help and "\n" not in option.help and not option.help.endswith(".")
            if option.kind == "choice":
                assert option.default in option.choices


# -- a throwaway option through every derived surface --------------------------------------

@pytest.fixture
def throwaway(monkeypatch):
    """SCHEMA with one more group row; the filter re-derives its tables from it (and again after)."""
    monkeypatch.setattr(rc, "SCHEMA", rc.SCHEMA + (THROWAWAY,))
    importlib.reload(membership)
    yield
    monkeypatch.undo()
    importlib.reload(membership)


def one_group(**extra):
    group = {"group_ip": "239.1.1.1", "server_port": 5000, "member_array": ["10.0.0.2"]}
    group.update(extra)
    return {"multi_group_array": [group]}


def test_without_the_row_the_key_is_refused():
    with pytest.raises(rc.ConfigError, match="throwaway"):
        rc.validate_server_config(one_group(throwaway=True))


def test_a_throwaway_row_reaches_the_validator_and_the_edit_functions(throwaway):
    assert rc.validate_server_config(one_group(throwaway=True))["multi_group_array"][0]["throwaway"] is True
    # "not default": false is not written back, so seed-format files round-trip.
    assert "throwaway" not in rc.validate_server_config(one_group(throwaway=False))["multi_group_array"][0]
    with pytest.raises(rc.ConfigError, match=r"multi_group_array\[0\]\.throwaway"):
        rc.validate_server_config(one_group(throwaway="maybe"))
    cfg = rc.server_add(rc.empty_server_config(), "239.1.1.1", ["10.0.0.2"], server_port=5000, options={"throwaway": True})
    assert rc.server_find_group(cfg, "239.1.1.1")["throwaway"] is True


def test_a_throwaway_row_reaches_the_module_spec_and_its_options(throwaway):
    assert rc.module_argument_spec(rc.GROUP)["throwaway"] == {"type": "bool"}
    assert rc.module_options(rc.GROUP, {"throwaway": True, "capture": None}) == {"throwaway": True}
    # The module's DOCUMENTATION does not know it yet: the drift check says so.
    assert drift(server_group, (rc.GROUP,)) == ["%s: option throwaway is not documented" % server_group.__name__]


def test_a_throwaway_row_reaches_the_filter_and_the_role_spec(throwaway):
    definitions, hostvars, groups = fleet()
    definitions[0]["throwaway"] = True
    server = membership.server_config(definitions, "src1", hostvars, groups)
    marketdata = [group for group in server["multi_group_array"] if group["group_ip"] == "224.1.2.3"]
    assert marketdata and marketdata[0]["throwaway"] is True
    definitions[0]["throwaway"] = "maybe"
    problems = membership.fleet_problems(definitions, hostvars, groups)
    assert any("throwaway" in problem for problem in problems)
    assert membership.group_definition_spec()["throwaway"] == {
        "type": "bool", "description": ["An option that exists only in this test."]}
    # The roles' argument_specs are written down: the drift check names all three.
    assert [role for role, _yaml in role_drift()] == list(ROLES)


def test_a_throwaway_row_reaches_the_reference_page(throwaway):
    page = load_schema_docs().render(rc)
    assert "| `throwaway` | true or false | `false` | only when not the default | multis_admin `--throwaway`, " \
           "`--no-throwaway` | `throwaway` | `throwaway` | an option that exists only in this test |" in page
