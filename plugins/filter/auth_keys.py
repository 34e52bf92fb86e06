# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Authentication keys from the inventory: the key file and the fleet's key checks.

``multicast_proxy_auth_keys`` (a list of ``{id, secret}``, meant to live in
Ansible Vault) and ``multicast_proxy_auth_send_key_id`` become the relay's
``auth_keys.json``.  The rules are ``validate_auth_keys`` of ``relay_config``,
the model the relay loads the file with; this module only names the inventory
variable behind a broken rule, and checks what one host cannot see alone: that
every receiver accepts the key its servers sign with.  No message here ever
contains a secret, only host names, variable names and key ids.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.text.converters import to_native
from ansible_collections.multicast.proxy.plugins.module_utils.relay_config import (
    ConfigError,
    validate_auth_keys,
)

KEYS_VARIABLE = "multicast_proxy_auth_keys"
SEND_KEY_VARIABLE = "multicast_proxy_auth_send_key_id"
# The role default of multicast_proxy_auth_send_key_id: sign with the highest id.
AUTO_SEND_KEY_ID = 0


class AuthKeyError(Exception):
    """Inventory keys that break a rule; the message names the variable."""


def _is_key_id(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _from_text(value):
    # `-e multicast_proxy_auth_send_key_id=2` and INI inventories give text: read
    # decimal digits as the number they spell, as the ports of multicast_proxy_groups are.
    if isinstance(value, str) and value.strip() and all(c in "0123456789" for c in value.strip()):
        return int(value)
    return value


def _unset(value):
    # A bare `multicast_proxy_auth_keys:` in YAML is None; treat it as "no keys".
    return value is None or value == "" or (isinstance(value, (list, tuple)) and not value)


def _variable_path(path):
    """Name a key file path (``keys[1].secret``, ``send_key_id``) by its inventory variable."""
    if path == "send_key_id":
        return SEND_KEY_VARIABLE
    if path.startswith("keys"):
        return KEYS_VARIABLE + path[len("keys"):]
    return KEYS_VARIABLE


def _key_file_object(keys, send_key_id):
    """What ``auth_keys.json`` holds for these values, before validation."""
    if not isinstance(keys, (list, tuple)):
        raise AuthKeyError("%s: expected a list of keys like [{id: 1, secret: ...}], found %s"
                           % (KEYS_VARIABLE, type(keys).__name__))
    entries = [dict(entry, id=_from_text(entry["id"])) if isinstance(entry, dict) and "id" in entry else entry
               for entry in keys]
    send_key_id = _from_text(send_key_id)
    if _is_key_id(send_key_id) and send_key_id == AUTO_SEND_KEY_ID:
        ids = [entry.get("id") for entry in entries if isinstance(entry, dict)]
        # No valid id at all: validation below names the broken entry first.
        send_key_id = max([key_id for key_id in ids if _is_key_id(key_id)] or [AUTO_SEND_KEY_ID])
    return {"send_key_id": send_key_id, "keys": entries}


def parse_keys(keys, send_key_id=AUTO_SEND_KEY_ID):
    """Validated keys (``{"send_key_id": int, "keys": {id: secret bytes}}``), or None for no keys.

    ``send_key_id`` 0 (or unset) picks the highest key id.  Raises
    ``AuthKeyError`` naming the inventory variable that breaks a rule.
    """
    send_key_id = AUTO_SEND_KEY_ID if send_key_id is None or send_key_id == "" else _from_text(send_key_id)
    if _unset(keys):
        if _is_key_id(send_key_id) and send_key_id == AUTO_SEND_KEY_ID:
            return None
        raise AuthKeyError("%s is set but %s is empty: add the keys (in Ansible Vault), or remove %s "
                           "to run without authentication" % (SEND_KEY_VARIABLE, KEYS_VARIABLE, SEND_KEY_VARIABLE))
    try:
        return validate_auth_keys(_key_file_object(keys, send_key_id))
    except ConfigError as exc:
        raise AuthKeyError("%s: %s" % (_variable_path(exc.path), exc.problem))


def auth_keys_json(keys, send_key_id=AUTO_SEND_KEY_ID):
    """The text of ``auth_keys.json``: validated, keys sorted by id, stable across runs."""
    try:
        parsed = parse_keys(keys, send_key_id)
    except AuthKeyError as exc:
        raise AnsibleFilterError(to_native(exc))
    if parsed is None:
        raise AnsibleFilterError("%s is empty: there is no key file to write (the roles remove it instead)"
                                 % KEYS_VARIABLE)
    # Validated above: a list of {id: int, secret: str}.
    entries = sorted(_key_file_object(keys, send_key_id)["keys"], key=lambda entry: entry["id"])
    content = {
        "send_key_id": parsed["send_key_id"],
        # The relay strips the secret too; stripping here keeps a vaulted value's newline out of the file.
        "keys": [{"id": entry["id"], "secret": entry["secret"].strip()} for entry in entries],
    }
    return json.dumps(content, indent=4) + "\n"


def _host_keys(host, hostvars):
    host_vars = hostvars[host]
    return parse_keys(host_vars.get(KEYS_VARIABLE), host_vars.get(SEND_KEY_VARIABLE))


def fleet_auth_problems(definitions, hostvars):
    """Key problems of the hosts in ``definitions`` (``senders``/``receivers`` host lists).

    Each host's keys must follow the rules, and a receiver with keys must
    accept what each of its servers sends: frames signed with the server's
    send key, under the same secret.  A receiver without keys accepts signed
    frames unchecked, which is what lets authentication be turned on (senders
    first) and off (receivers first) without loss.
    """
    hosts = []
    for definition in definitions:
        hosts.extend(host for host in definition["senders"] + definition["receivers"] + definition.get("dynamic", [])
                     if host not in hosts)
    problems, keys_of = [], {}
    for host in hosts:
        try:
            keys_of[host] = _host_keys(host, hostvars)
        except AuthKeyError as exc:
            problems.append("host %s: %s" % (host, to_native(exc)))
    # (sender, problem, key id) -> receivers, so a fleet-wide mistake is one message per server.
    mismatches = {}
    for definition in definitions:
        for receiver in definition["receivers"] + definition.get("dynamic", []):
            accepted = keys_of.get(receiver)
            if accepted is None:
                if receiver in definition["receivers"]:
                    continue
                # A server with keys takes only signed subscriptions.
                for sender in definition["senders"]:
                    if sender != receiver and keys_of.get(sender) is not None:
                        problems.append("host %s may join %s but has no %s, and its server %s has keys: %s would "
                                        "refuse every subscription of it (auth_missing); give %s the keys too"
                                        % (receiver, definition["where"], KEYS_VARIABLE, sender, sender, receiver))
                continue
            for sender in definition["senders"]:
                if sender == receiver or sender not in keys_of:
                    continue
                signing = keys_of[sender]
                if signing is None:
                    found = ("unsigned", None)
                else:
                    key_id = signing["send_key_id"]
                    if key_id not in accepted["keys"]:
                        found = ("unknown", key_id)
                    elif accepted["keys"][key_id] != signing["keys"][key_id]:
                        found = ("secret", key_id)
                    else:
                        continue
                receivers = mismatches.setdefault((sender,) + found, [])
                if receiver not in receivers:
                    receivers.append(receiver)
    for (sender, problem, key_id), receivers in sorted(mismatches.items(), key=lambda item: item[0][:2]):
        who = "%s %s" % ("receivers" if len(receivers) > 1 else "receiver", ", ".join(receivers))
        have = "have" if len(receivers) > 1 else "has"
        if problem == "unsigned":
            problems.append("host %s sends without %s, but its %s %s keys and would drop every frame from it "
                            "(auth_missing): give %s the keys too" % (sender, KEYS_VARIABLE, who, have, sender))
        elif problem == "unknown":
            problems.append("host %s signs with key %d (%s), but its %s %s no key %d in %s and would drop every "
                            "frame from it (auth_unknown_key): add the key to every host first, then switch %s "
                            "(key rotation, docs/collection.md)"
                            % (sender, key_id, SEND_KEY_VARIABLE, who, have, key_id, KEYS_VARIABLE, SEND_KEY_VARIABLE))
        else:
            problems.append("host %s signs with key %d, but its %s %s another secret for key %d in %s and would "
                            "drop every frame from it (auth_bad): give every host the same secret for a key id"
                            % (sender, key_id, who, have, key_id, KEYS_VARIABLE))
    return problems


class FilterModule(object):
    """Authentication key filters of multicast.proxy."""

    def filters(self):
        return {
            "auth_keys_json": auth_keys_json,
        }
