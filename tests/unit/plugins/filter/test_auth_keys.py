# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The key file the common role writes, and the fleet's key checks."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

import pytest
import yaml

from ansible.errors import AnsibleFilterError
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar
from ansible_collections.multicast.proxy.tests.unit.compat import render_text, trust_as_template
from ansible_collections.multicast.proxy.plugins.filter import auth_keys, membership
from ansible_collections.multicast.proxy.plugins.module_utils.relay_config import load_auth_keys
from ansible_collections.multicast.proxy.tests.unit.plugins.filter.inventory import fleet

COLLECTION_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
COMMON_ROLE = os.path.join(COLLECTION_ROOT, "roles", "common")

SECRET_A = "a1" * 32
SECRET_B = "Yi1zZWNyZXQtb2YtdGhpcnR5LXR3by1ieXRlcy1vci1tb3Jl"  # base64 of 36 bytes
SECRET_C = "c3" * 40


def read(*path):
    with open(os.path.join(*path)) as handle:
        return handle.read()


def render_key_file(inventory_vars):
    """The common role's settings (vars/main.yml), then its key file template, as the role renders them."""
    defaults = yaml.safe_load(read(COMMON_ROLE, "vars", "main.yml"))
    templar = Templar(loader=DataLoader(), variables=dict(inventory_vars))
    variables = dict(inventory_vars)
    for name in ("__common_auth_keys", "__common_auth_send_key_id"):
        variables[name] = templar.template(trust_as_template(defaults[name]))
    templar = Templar(loader=DataLoader(), variables=variables)
    return variables, render_text(templar, read(COMMON_ROLE, "templates", "auth_keys.json.j2"))


def test_template_writes_what_the_relay_loads_sorted_and_signing_with_the_highest_id():
    keys = [{"id": 7, "secret": SECRET_B + "\n"}, {"id": 3, "secret": SECRET_A}]
    _variables, text = render_key_file({"multicast_proxy_auth_keys": keys})
    assert json.loads(text) == {"send_key_id": 7,
                                "keys": [{"id": 3, "secret": SECRET_A}, {"id": 7, "secret": SECRET_B}]}
    loaded = load_auth_keys(text)
    assert loaded["send_key_id"] == 7
    assert sorted(loaded["keys"]) == [3, 7]


def test_template_signs_with_the_chosen_key_during_a_rotation():
    keys = [{"id": 1, "secret": SECRET_A}, {"id": 2, "secret": SECRET_B}]
    _variables, text = render_key_file({"multicast_proxy_auth_keys": keys, "multicast_proxy_auth_send_key_id": 1})
    assert json.loads(text)["send_key_id"] == 1


@pytest.mark.parametrize("inventory_vars", [{}, {"multicast_proxy_auth_keys": None},
                                            {"multicast_proxy_auth_keys": [], "multicast_proxy_auth_send_key_id": None}])
def test_defaults_without_keys_mean_no_key_file(inventory_vars):
    defaults = yaml.safe_load(read(COMMON_ROLE, "vars", "main.yml"))
    templar = Templar(loader=DataLoader(), variables=inventory_vars)
    assert templar.template(trust_as_template(defaults["__common_auth_keys"])) == []
    # ansible-core before 2.19 renders it as the text "0"; the key filter reads either.
    assert int(templar.template(trust_as_template(defaults["__common_auth_send_key_id"]))) == 0
    assert auth_keys.parse_keys([], 0) is None


def test_ids_given_as_text_are_read_as_numbers():
    # What `-e multicast_proxy_auth_send_key_id=2` and INI inventories hand over.
    keys = [{"id": "1", "secret": SECRET_A}, {"id": " 2", "secret": SECRET_B}]
    content = json.loads(auth_keys.auth_keys_json(keys, "1"))
    assert content["send_key_id"] == 1
    assert [entry["id"] for entry in content["keys"]] == [1, 2]


def test_the_output_is_stable_whatever_the_order_of_the_inventory():
    forward = [{"id": 1, "secret": SECRET_A}, {"id": 2, "secret": SECRET_B}]
    assert auth_keys.auth_keys_json(forward) == auth_keys.auth_keys_json(list(reversed(forward)))


@pytest.mark.parametrize("keys, send_key_id, message", [
    ([{"id": 1, "secret": SECRET_A}, {"id": 1, "secret": SECRET_B}], 0,
     "multicast_proxy_auth_keys[1].id: key id 1 is listed twice"),
    ([{"id": 1, "secret": "0123456789abcdef"}], 0,
     "multicast_proxy_auth_keys[0].secret: secret of 8 bytes is too short"),
    ([{"id": 1, "secret": SECRET_A}], 2, "multicast_proxy_auth_send_key_id: key id 2 is not in keys"),
    ([{"id": 0, "secret": SECRET_A}], 0, "multicast_proxy_auth_keys[0].id: key id 0 outside 1..255"),
    ([{"id": "one", "secret": SECRET_A}], 0, "multicast_proxy_auth_keys[0].id: expected an integer key id"),
    ([{"id": 1, "secret": SECRET_A}], "two", "multicast_proxy_auth_send_key_id: expected an integer key id"),
    ([{"id": 1, "secret": SECRET_A}], "2", "multicast_proxy_auth_send_key_id: key id 2 is not in keys"),
    ([{"id": 1, "secrett": SECRET_A}], 0, "multicast_proxy_auth_keys[0].secrett: unknown key"),
    ([{"id": 1}], 0, "multicast_proxy_auth_keys[0].secret: missing"),
    ([{"id": 1, "secret": "not hex, not base64!" * 3}], 0, "multicast_proxy_auth_keys[0].secret: neither hex nor"),
    ({"id": 1, "secret": SECRET_A}, 0, "multicast_proxy_auth_keys: expected a list of keys"),
    ([], 3, "multicast_proxy_auth_send_key_id is set but multicast_proxy_auth_keys is empty"),
])
def test_bad_keys_name_the_variable_and_never_the_secret(keys, send_key_id, message):
    with pytest.raises(AnsibleFilterError) as caught:
        auth_keys.auth_keys_json(keys, send_key_id)
    text = str(caught.value)
    assert message in text
    for secret in (SECRET_A, SECRET_B, "0123456789abcdef"):
        assert secret not in text


def test_no_key_file_to_write_without_keys():
    with pytest.raises(AnsibleFilterError, match="multicast_proxy_auth_keys is empty"):
        auth_keys.auth_keys_json([])


def keyed_fleet(keys=None, send_key_id=None):
    """The sample fleet with the same keys on every host."""
    definitions, hostvars, groups = fleet()
    for host_vars in hostvars.values():
        host_vars["multicast_proxy_auth_keys"] = keys if keys is not None else [{"id": 1, "secret": SECRET_A}]
        if send_key_id is not None:
            host_vars["multicast_proxy_auth_send_key_id"] = send_key_id
    return definitions, hostvars, groups


def problems(definitions, hostvars, groups):
    return membership.fleet_problems(definitions, hostvars, groups)


def test_a_fleet_with_the_same_keys_everywhere_has_no_problems():
    assert problems(*keyed_fleet()) == []


def test_each_rotation_step_is_accepted():
    both = [{"id": 1, "secret": SECRET_A}, {"id": 2, "secret": SECRET_C}]
    assert problems(*keyed_fleet(both, send_key_id=1)) == []
    assert problems(*keyed_fleet(both, send_key_id=2)) == []
    assert problems(*keyed_fleet([{"id": 2, "secret": SECRET_C}])) == []


def test_switching_before_every_receiver_has_the_new_key_is_refused():
    definitions, hostvars, groups = keyed_fleet([{"id": 1, "secret": SECRET_A}, {"id": 2, "secret": SECRET_C}])
    hostvars["mem2"]["multicast_proxy_auth_keys"] = [{"id": 1, "secret": SECRET_A}]
    found = problems(definitions, hostvars, groups)
    # src1, src2 and mem1 all send to mem2 (the sample fleet's two groups).
    assert found == [
        "host %s signs with key 2 (multicast_proxy_auth_send_key_id), but its receiver mem2 has no key 2 in "
        "multicast_proxy_auth_keys and would drop every frame from it (auth_unknown_key): add the key to every "
        "host first, then switch multicast_proxy_auth_send_key_id (key rotation, docs/collection.md)" % sender
        for sender in ("mem1", "src1", "src2")]


def test_a_different_secret_for_the_same_id_is_refused_without_showing_either():
    definitions, hostvars, groups = keyed_fleet()
    hostvars["src2"]["multicast_proxy_auth_keys"] = [{"id": 1, "secret": SECRET_C}]
    found = problems(definitions, hostvars, groups)
    assert found == ["host src2 signs with key 1, but its receivers mem1, mem2, mem3 have another secret for key 1 "
                     "in multicast_proxy_auth_keys and would drop every frame from it (auth_bad): give every host "
                     "the same secret for a key id"]
    # src2 receives nothing in the sample fleet, so only its own frames are at stake.
    assert SECRET_A not in found[0] and SECRET_C not in found[0]


def test_a_server_without_keys_whose_receivers_have_keys_is_refused():
    definitions, hostvars, groups = keyed_fleet()
    del hostvars["src1"]["multicast_proxy_auth_keys"]
    found = problems(definitions, hostvars, groups)
    assert len(found) == 1
    assert found[0].startswith("host src1 sends without multicast_proxy_auth_keys, but its receivers mem1, mem2, "
                               "mem3 have keys and would drop every frame from it (auth_missing)")


def test_servers_may_sign_before_receivers_have_keys():
    # Turning authentication on without loss: every sender first, then the receivers.
    definitions, hostvars, groups = fleet()
    for sender in ("src1", "src2", "mem1"):
        hostvars[sender]["multicast_proxy_auth_keys"] = [{"id": 1, "secret": SECRET_A}]
    assert problems(definitions, hostvars, groups) == []
    # mem1 sends as well as receives: leaving it out lets src1 verify what mem1 sends unsigned.
    del hostvars["mem1"]["multicast_proxy_auth_keys"]
    assert problems(definitions, hostvars, groups) == [
        "host mem1 sends without multicast_proxy_auth_keys, but its receiver src1 has keys and would drop every "
        "frame from it (auth_missing): give mem1 the keys too"]


def test_a_bad_key_is_reported_with_the_host_and_checked_no_further():
    definitions, hostvars, groups = keyed_fleet()
    hostvars["mem3"]["multicast_proxy_auth_keys"] = [{"id": 1, "secret": "ab" * 8}]
    assert problems(definitions, hostvars, groups) == [
        "host mem3: multicast_proxy_auth_keys[0].secret: secret of 8 bytes is too short; use at least 32 random "
        "bytes (`openssl rand -hex 32`)"]
