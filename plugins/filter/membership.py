# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Inventory-driven membership: turn ``multicast_proxy_groups`` into relay configs.

Groups are declared once for the whole fleet (docs/architecture.md,
"Inventory model"); these filters compute what each host's server and client
config must contain, and check the whole fleet before any host is touched.
Every config produced here is validated by ``relay_config``, the same model the
relay loads its files with.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import json

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.text.converters import to_native
from ansible.module_utils.six import string_types
from ansible.module_utils.parsing.convert_bool import boolean
from ansible_collections.multicast.proxy.plugins.filter.auth_keys import fleet_auth_problems
from ansible_collections.multicast.proxy.plugins.module_utils.relay_contract import needed_capabilities
from ansible_collections.multicast.proxy.plugins.module_utils.relay_config import (
    CLIENT,
    CLIENT_TOP_KEY,
    ENTRY,
    GROUP,
    MAX_ALLOW_NETWORKS,
    SERVER,
    SERVER_TOP_KEY,
    VRRP_GROUP,
    ConfigError,
    CORE_KEYS,
    dump_config,
    optional_rows,
    parse_group_ip,
    parse_interface,
    parse_listen,
    parse_networks,
    parse_option_text,
    parse_port,
    parse_unicast_ip,
    schema_rows,
    split_listen,
    validate_client_config,
    validate_server_config,
)

DEFAULT_VARIABLE = "multicast_proxy_groups"
PRESERVE_SOURCE_VARIABLE = "multicast_proxy_preserve_source"
# The UDP port a server host's copies leave from (its config's source_port),
# which its members' entries then require (docs/threat-model.md). Below 1024:
# no unprivileged user of the server host can bind it first. 0: any port.
SOURCE_PORT_VARIABLE = "multicast_proxy_source_port"
DEFAULT_SOURCE_PORT = 868
SOURCE_PORT_CHECK_VARIABLE = "multicast_proxy_source_port_check"
# The options of a group definition beyond addresses and hosts come from the
# relay's schema (relay_config.SCHEMA, rows with an inventory key): a group
# row goes into the senders' server config, an entry row into the receivers'
# client config, a key of both into both.
_SERVER_OPTIONS = tuple(option for option in optional_rows(GROUP) if option.inventory)
_CLIENT_OPTIONS = tuple(option for option in optional_rows(ENTRY) if option.inventory)


# Each key once, in schema order (a key of both places appears once).
_OPTION_KEYS = tuple(dict.fromkeys(option.inventory for option in _SERVER_OPTIONS + _CLIENT_OPTIONS))
_DEFINITION_KEYS = ("name", "group_ip", "group_port", "server_port", "senders", "receivers",
                    "may_join") + _OPTION_KEYS
# Who may join a group on their own (docs/collection.md, "Dynamic groups"):
# hosts Ansible knows get a client entry that subscribes while an application
# has joined; networks admit instances Ansible has not seen yet.
_MAY_JOIN_KEYS = ("hosts", "networks")
# The server options that only mean something with may_join (the relay's allow).
_DYNAMIC_OPTION_KEYS = ("max_members", "lease")
# Stands in for the allow list while a definition's options are checked: the
# real one needs the may-join hosts' addresses, known per host later.
_SAMPLE_ALLOW = ["192.0.2.0/24"]
# Where the relay's model checks a definition's entry options: a client entry
# from a documentation address (RFC 5737), never used beyond validation.
_SAMPLE_SERVER_IP = "192.0.2.1"


_SPEC_TYPES = {"group_ip": "str", "port": "int", "group_port": "int", "flag": "bool", "choice": "str",
               "interface": "str", "count": "int", "seconds": "float"}


def group_definition_spec():
    """The argument spec suboptions of one group definition (the roles' ``*_groups`` lists).

    Derived from the relay's schema: the roles' ``meta/argument_specs.yml``
    carry this (a test compares them), so a new schema row with an
    inventory key appears there too.
    """
    rows = {}
    for option in optional_rows(GROUP) + optional_rows(ENTRY) + tuple(
            option for option in schema_rows(GROUP) if option.key in CORE_KEYS):
        if option.inventory and option.inventory not in rows:
            rows[option.inventory] = option
    spec = {"name": {"type": "str", "description": ["A name for messages (which definition a problem is in)."]},
            "senders": {"type": "raw", "required": True,
                        "description": ["The hosts that send the group: an inventory group, a host, or a list of "
                                        "either. Each runs the relay server."]},
            "receivers": {"type": "raw",
                          "description": ["The hosts that always receive it (static members): an inventory group, "
                                          "a host, or a list of either.",
                                          "Each runs the relay client; a sender is never its own member.",
                                          "Required unless may_join is given."]},
            "may_join": {"type": "dict",
                         "description": ["Who may join the group on their own (dynamic members).",
                                         "They receive while a local application has joined the group, without "
                                         "a run of Ansible."],
                         "options": {
                             "hosts": {"type": "raw",
                                       "description": ["An inventory group, a host, or a list of either.",
                                                       "Each runs the relay client with a dynamic entry per "
                                                       "sender, and its address is allowed on the senders.",
                                                       "A host that is also a receiver stays a static member."]},
                             "networks": {"type": "list", "elements": "str",
                                          "description": ["IPv4 networks (CIDR) whose hosts may subscribe.",
                                                          "For example a scaling group's subnet, whose instances "
                                                          "Ansible has not seen yet."]}}}}
    for key in _DEFINITION_KEYS:
        option = rows.get(key)
        if option is None:
            continue
        # The relay's allow is may_join in an inventory.
        text = option.help.replace("(only with allow)", "(only with may_join)")
        entry = {"type": _SPEC_TYPES[option.kind], "description": [text[0].upper() + text[1:] + "."]}
        # group_ip may be left out for VRRP (its one group); group_port defaults to server_port.
        if option.key == "server_port":
            entry["required"] = True
        if option.choices:
            entry["choices"] = list(option.choices)
        spec[key] = entry
    return dict((key, spec[key]) for key in _DEFINITION_KEYS)


class FleetError(Exception):
    """One problem in the inventory; the message names the host and/or variable."""


def _address_sort_key(address):
    return tuple(int(octet) for octet in address.split("."))


def _expand_hosts(value, where, inventory_groups, allow_empty=False):
    """Hosts named by an inventory group name, a host name, or a list of either.

    ``allow_empty``: an empty list is no hosts (receivers beside may_join).
    """
    names = [value] if isinstance(value, string_types) else value
    if isinstance(names, (list, tuple)) and not names and allow_empty:
        return []
    if not isinstance(names, (list, tuple)) or not names:
        raise FleetError("%s: give an inventory group name or a non-empty list of hosts" % where)
    all_hosts = inventory_groups.get("all", [])
    hosts = []
    for name in names:
        if not isinstance(name, string_types):
            raise FleetError("%s: %r is not a host or group name" % (where, name))
        if name in inventory_groups:
            members = inventory_groups[name]
        elif name in all_hosts:
            members = [name]
        else:
            raise FleetError("%s: %r is neither an inventory group nor a host; check the spelling "
                             "or add it to the inventory" % (where, name))
        hosts.extend(host for host in members if host not in hosts)
    return hosts


def _group_port(value, where):
    # 0 (any port; the only port of VRRP) is judged with the protocol and
    # capture flag by the relay's model in _relay_options.
    if isinstance(value, int) and not isinstance(value, bool) and value == 0:
        return 0
    return parse_port(value, where)


def _model_error(exc, model_prefix, where):
    """A relay_config error about a sample config, re-addressed to the definition."""
    path = getattr(exc, "path", "") or ""
    if path.startswith(model_prefix):
        return "%s%s: %s" % (where, path[len(model_prefix):], exc.problem)
    return "%s: %s" % (where, to_native(exc))


def _normalized(item, base, options, top_key, validate):
    """``base`` with the definition ``item``'s ``options``, validated as the only element of ``top_key``.

    Returns (the normalized element, the options it carries by config key),
    or (the ConfigError, None).
    """
    element = dict(base)
    for option in options:
        if item.get(option.inventory) is not None:
            element[option.key] = item[option.inventory]
    try:
        normalized = validate({top_key: [element]})[top_key][0]
    except ConfigError as exc:
        return exc, None
    return normalized, dict((option.key, normalized[option.key]) for option in options if option.key in normalized)


def _relay_options(item, definition, where):
    """Check the definition's options (protocol, capture, preserve_source, ...) with the relay's model.

    A one-group server config (no members) and a one-entry client config
    that carry the definition's options are validated as the relay would
    validate them, so the inventory follows exactly the relay's rules
    (group port 0, VRRP, ...). Fills in definition's group_port and
    ``server_options``/``client_options``: the normalized keys the senders'
    groups and the receivers' entries get. Also sets the convenience keys
    protocol, capture and preserve_source.
    """
    group = {"group_ip": definition["group_ip"], "server_port": definition["server_port"], "member_array": []}
    if definition["may_join"]:
        group["allow"] = definition["networks"] or _SAMPLE_ALLOW
    if "group_port" in definition:
        group["group_port"] = definition["group_port"]
    normalized, options = _normalized(item, group, _SERVER_OPTIONS, SERVER_TOP_KEY, validate_server_config)
    if options is None:
        return _model_error(normalized, SERVER_TOP_KEY + "[0]", where)
    definition["group_port"] = normalized["group_port"]
    definition["server_options"] = options
    entry = {"server_ip": _SAMPLE_SERVER_IP, "server_port": definition["server_port"],
             "group_ip": definition["group_ip"], "group_port": definition["group_port"]}
    normalized_entry, options = _normalized(item, entry, _CLIENT_OPTIONS, CLIENT_TOP_KEY, validate_client_config)
    if options is None:
        return _model_error(normalized_entry, CLIENT_TOP_KEY + "[0]", where)
    definition["client_options"] = options
    definition["protocol"] = normalized.get("protocol", "udp")
    definition["capture"] = normalized.get("capture", False)
    definition["preserve_source"] = normalized_entry.get("preserve_source", False)
    return None


def _may_join(item, definition, where, inventory_groups):
    """Parse ``may_join`` into definition's ``dynamic`` (hosts) and ``networks``; the problems found.

    A host that is also a receiver stays a static member only: it gets no
    dynamic entry and needs no place in the allow list (the relay sends a
    member that is both one copy anyway). Senders are left out: a sender is
    never its own member, and its server takes the subscriptions on the port
    a client of it would listen on.
    """
    definition["dynamic"], definition["networks"], definition["may_join"] = [], [], False
    may_join = item.get("may_join")
    if may_join is None:
        present = [key for key in _DYNAMIC_OPTION_KEYS if item.get(key) is not None]
        if present:
            return ["%s: %s only apply to a group with may_join (dynamic members); add may_join or remove %s"
                    % (where, " and ".join(present), " and ".join(present))]
        return []
    path = where + ".may_join"
    if not isinstance(may_join, dict):
        return ["%s: give a mapping with hosts (an inventory group, a host, or a list of either) and/or "
                "networks (a list of CIDR ranges), not %r" % (path, may_join)]
    unknown = sorted(to_native(key) for key in may_join if key not in _MAY_JOIN_KEYS)
    if unknown:
        return ["%s: unknown key(s) %s; allowed keys are %s" % (path, ", ".join(unknown), ", ".join(_MAY_JOIN_KEYS))]
    if may_join.get("hosts") is None and may_join.get("networks") is None:
        return ["%s: give hosts (an inventory group, a host, or a list of either), networks (CIDR ranges such "
                "as a scaling group's subnet) or both" % path]
    problems = []
    definition["may_join"] = True
    if may_join.get("hosts") is not None:
        try:
            hosts = _expand_hosts(may_join["hosts"], path + ".hosts", inventory_groups)
        except FleetError as exc:
            problems.append(to_native(exc))
        else:
            definition["dynamic"] = [host for host in hosts if host not in definition.get("receivers", ())
                                     and host not in definition.get("senders", ())]
    if may_join.get("networks") is not None:
        networks = may_join["networks"]
        if isinstance(networks, string_types):
            networks = [networks]
        try:
            definition["networks"] = parse_networks(networks, path + ".networks")
        except ConfigError as exc:
            problems.append(to_native(exc))
    if not problems and not definition["dynamic"] and not definition["networks"]:
        problems.append("%s: every host of may_join.hosts is a receiver (a static member already) or a sender, and "
                        "there are no may_join.networks, so nobody else may join; add hosts or networks, or remove "
                        "may_join" % path)
    max_members = item.get("max_members")
    if not problems and isinstance(max_members, int) and not isinstance(max_members, bool) \
            and 0 < max_members < len(definition["dynamic"]):
        problems.append("%s.max_members: %d is below the %d hosts of may_join.hosts that are not receivers or senders "
                        "(%s): the server would refuse some of them while the others are members; raise "
                        "max_members to at least %d, or make some of them receivers"
                        % (where, max_members, len(definition["dynamic"]), ", ".join(definition["dynamic"]),
                           len(definition["dynamic"])))
    return problems


def _allow(definition, hostvars):
    """The allow list of a definition's server groups: its may-join hosts (/32) and networks, merged."""
    networks = [ipaddress.ip_network(u"%s/32" % host_address(host, hostvars)) for host in definition["dynamic"]]
    networks.extend(ipaddress.ip_network(u"%s" % network) for network in definition["networks"])
    allow = [str(network) for network in ipaddress.collapse_addresses(networks)]
    if len(allow) > MAX_ALLOW_NETWORKS:
        raise FleetError("%s: may_join gives the senders %d allow networks (its hosts' addresses and its networks, "
                         "merged), at most %d; list the hosts' subnets in may_join.networks instead"
                         % (definition["where"], len(allow), MAX_ALLOW_NETWORKS))
    return allow


def _receives(definition, host):
    """Whether ``host`` runs a client entry for the definition: a receiver or a may-join host it knows."""
    return host in definition["receivers"] or host in definition["dynamic"]


def _definitions(groups_def, inventory_groups, variable):
    """Validate the group definitions; returns (definitions, problems).

    Every problem of every definition is reported, so one run shows them all.
    """
    if not isinstance(groups_def, (list, tuple)):
        return [], ["%s must be a list of group definitions (%s)" % (variable, ", ".join(_DEFINITION_KEYS))]
    definitions, problems = [], []
    for index, item in enumerate(groups_def):
        where = "%s[%d]" % (variable, index)
        if not isinstance(item, dict):
            problems.append("%s: expected a mapping with %s" % (where, ", ".join(_DEFINITION_KEYS)))
            continue
        if item.get("name"):
            where = "%s (%s)" % (where, item["name"])
        found = len(problems)
        unknown = sorted(set(item) - set(_DEFINITION_KEYS))
        if unknown:
            problems.append("%s: unknown key(s) %s; allowed keys are %s"
                            % (where, ", ".join(unknown), ", ".join(_DEFINITION_KEYS)))
        if item.get("protocol") not in (None, "udp") and item.get("group_ip") is None:
            # VRRP only exists on one group: its address may be left out. (Any
            # other protocol is reported by the relay's model, not as a missing group_ip.)
            item = dict(item, group_ip=VRRP_GROUP)
        if item.get("receivers") is None and item.get("may_join") is not None:
            item = dict(item, receivers=[])
        fields = (
            ("group_ip", parse_group_ip),
            ("server_port", parse_port),
            # Without it group_port is server_port (as with multis_admin -p
            # without -g), or 0 for VRRP: the relay's model fills it in.
            ("group_port", _group_port),
            ("senders", lambda value, path: _expand_hosts(value, path, inventory_groups)),
            ("receivers", lambda value, path: _expand_hosts(value, path, inventory_groups, allow_empty=True)),
        )
        definition = {"where": where}
        for key, parse in fields:
            if item.get(key) is None:
                if key == "receivers":
                    problems.append("%s: receivers is missing; give receivers (static members), may_join "
                                    "(dynamic members) or both" % where)
                elif key != "group_port":
                    problems.append("%s: %s is missing" % (where, key))
                continue
            try:
                definition[key] = parse(item[key], "%s.%s" % (where, key))
            except (ConfigError, FleetError) as exc:
                problems.append(to_native(exc))
        if "receivers" in definition and not definition["receivers"] and item.get("may_join") is None:
            problems.append("%s.receivers: give an inventory group name or a non-empty list of hosts" % where)
        problems.extend(_may_join(item, definition, where, inventory_groups))
        if len(problems) == found:
            problem = _relay_options(item, definition, where)
            if problem:
                problems.append(problem)
            else:
                definitions.append(definition)
    return definitions, problems


def _facts(host_vars):
    facts = host_vars.get("ansible_facts")
    return facts if isinstance(facts, dict) else {}


def host_address(host, hostvars):
    """The relay address of a host.

    ``multicast_proxy_address``, else the IPv4 address of
    ``multicast_proxy_interface`` from facts, else ``ansible_default_ipv4``.
    """
    host_vars = hostvars[host]
    address = host_vars.get("multicast_proxy_address")
    if address:
        variable = "multicast_proxy_address"
    else:
        interface = host_vars.get("multicast_proxy_interface")
        facts = _facts(host_vars)
        if interface:
            variable = "multicast_proxy_interface"
            # Facts name interfaces with '-' and '.' replaced by '_'.
            fact_name = interface.replace("-", "_").replace(".", "_")
            interface_facts = facts.get(fact_name) or host_vars.get("ansible_" + fact_name) or {}
            address = (interface_facts.get("ipv4") or {}).get("address")
            if not address:
                raise FleetError("host %s: multicast_proxy_interface is %r but its IPv4 address is not in the "
                                 "facts; gather facts for the host (it must be in the play), check the interface "
                                 "name, or set multicast_proxy_address" % (host, interface))
        else:
            variable = "ansible_default_ipv4"
            default = facts.get("default_ipv4") or host_vars.get("ansible_default_ipv4") or {}
            address = default.get("address")
            if not address:
                raise FleetError("host %s: no relay address: set multicast_proxy_address or "
                                 "multicast_proxy_interface, or gather facts for the host (it must be in the "
                                 "play) so ansible_default_ipv4 is known" % host)
    try:
        return parse_unicast_ip(address, "host %s: %s" % (host, variable))
    except ConfigError as exc:
        raise FleetError(to_native(exc))


def _settings(settings, place, host, side):
    """The top-level settings of a config from a role's ``settings`` dict; empty values are left out."""
    if settings is None:
        return {}
    if not isinstance(settings, dict):
        raise FleetError("host %s: %s settings must be a dict of the %s config's top-level keys, not %r"
                         % (host, side, side, settings))
    allowed = tuple(option.key for option in optional_rows(place) if option.key != "interface")
    unknown = sorted(to_native(key) for key in settings if key not in allowed)
    if unknown:
        raise FleetError("host %s: %s settings: unknown key %s; the keys are %s"
                         % (host, side, ", ".join(unknown), ", ".join(allowed)))
    rows = dict((option.key, option) for option in optional_rows(place))
    result = {}
    for key, value in settings.items():
        if rows[key].kind in ("port", "flag", "join_interfaces") and value not in (None, ""):
            # A template gives "868" or 868 (0 is "no setting"), "False" or false (false is "no setting"),
            # "eth0,eth1" or a list.
            try:
                value = parse_option_text(rows[key], value, "host %s: %s setting %s" % (host, side, key))
            except ConfigError as exc:
                raise FleetError(to_native(exc))
        if value not in (None, "", False):
            result[key] = value
    return result


def host_source_port(host, hostvars):
    """The source port of ``host``'s relay server copies (multicast_proxy_source_port), None for any port."""
    value = hostvars[host].get(SOURCE_PORT_VARIABLE, DEFAULT_SOURCE_PORT)
    if value in (0, "0", "", None):
        return None
    try:
        return parse_port(value, "host %s: %s" % (host, SOURCE_PORT_VARIABLE))
    except ConfigError as exc:
        raise FleetError(to_native(exc) + " (0 lets the copies leave from any port)")


def _check_source_port(config, definitions, host):
    """The server's source port must not be a port this host's client listens on (its groups' server_port)."""
    port = config.get("source_port")
    if port is None:
        return
    for definition in definitions:
        if _receives(definition, host) and definition["server_port"] == port:
            raise FleetError("host %s: %s %d is also the server_port of %s, which the host receives: its relay "
                             "server and client cannot both bind the port; choose another %s"
                             % (host, SOURCE_PORT_VARIABLE, port, definition["where"], SOURCE_PORT_VARIABLE))


def _check_subscription_ports(definitions, host):
    """A sender of a group with may_join takes subscriptions on its server_port: its client cannot listen there."""
    for sent in definitions:
        if not sent["may_join"] or host not in sent["senders"]:
            continue
        for received in definitions:
            if _receives(received, host) and received["server_port"] == sent["server_port"]:
                raise FleetError("host %s sends %s, whose may_join makes its relay server take subscriptions on "
                                 "server_port %d, and receives %s on the same port: its relay server and client "
                                 "cannot both bind it; give the two definitions different server_port values, or "
                                 "take the host out of one of them"
                                 % (host, sent["where"], sent["server_port"], received["where"]))


def _server_config(definitions, host, hostvars, interface, settings=None):
    groups, origins = [], []
    for definition in definitions:
        if host not in definition["senders"]:
            continue
        members = sorted(set(host_address(member, hostvars) for member in definition["receivers"] if member != host),
                         key=_address_sort_key)
        group = {
            "group_ip": definition["group_ip"],
            "server_port": definition["server_port"],
            "group_port": definition["group_port"],
            "member_array": members,
        }
        # Only the options that are set, so configs without them stay in the seed format.
        group.update(definition["server_options"])
        if definition["may_join"]:
            group["allow"] = _allow(definition, hostvars)
        groups.append(group)
        origins.append(definition["where"])
    config = {SERVER_TOP_KEY: groups}
    config.update(_settings(settings, SERVER, host, "server"))
    if interface:
        config["interface"] = interface
    _check_source_port(config, definitions, host)
    _check_subscription_ports(definitions, host)
    try:
        return validate_server_config(config)
    except ConfigError as exc:
        raise FleetError("host %s: server config: %s%s" % (host, to_native(exc), _blame(exc, SERVER_TOP_KEY, origins)))


def _client_config(definitions, host, hostvars, interface, preserve_source=None, settings=None,
                   check_source_port=True):
    try:
        check_source_port = boolean(check_source_port, strict=True)
    except TypeError:
        raise FleetError("host %s: %s must be true or false, not %r"
                         % (host, SOURCE_PORT_CHECK_VARIABLE, check_source_port))
    entries, origins = [], []
    for definition in definitions:
        if not _receives(definition, host):
            continue
        # Each server address with the source port its host's copies leave from.
        servers = {}
        for sender in definition["senders"]:
            if sender != host:
                servers.setdefault(host_address(sender, hostvars), set()).add(
                    host_source_port(sender, hostvars) if check_source_port else None)
        for server_ip in sorted(servers, key=_address_sort_key):
            entry = {
                "server_ip": server_ip,
                "server_port": definition["server_port"],
                "group_ip": definition["group_ip"],
                "group_port": definition["group_port"],
            }
            ports = servers[server_ip]
            if len(ports) > 1:
                raise FleetError("host %s: the senders of %s at address %s have different %s values (%s); hosts "
                                 "that share an address must share the source port"
                                 % (host, definition["where"], server_ip, SOURCE_PORT_VARIABLE,
                                    ", ".join(str(port or 0) for port in sorted(ports, key=lambda p: p or 0))))
            (port,) = ports
            if port is not None:
                entry["source_port"] = port
            entry.update(definition["client_options"])
            if host not in definition["receivers"]:
                # Subscribes while a local application has joined the group.
                entry["dynamic"] = True
            for index, existing in enumerate(entries):
                if (existing["server_ip"], existing["group_ip"], existing["group_port"]) == \
                        (server_ip, entry["group_ip"], entry["group_port"]):
                    raise FleetError(
                        "host %s receives group %s:%d from server %s in both %s (server_port %d) and %s "
                        "(server_port %d); a member can take one copy of a group per server: merge the two "
                        "definitions or give them different group ports"
                        % (host, entry["group_ip"], entry["group_port"], server_ip, origins[index],
                           existing["server_port"], definition["where"], entry["server_port"]))
            entries.append(entry)
            origins.append(definition["where"])
    config = {CLIENT_TOP_KEY: entries}
    config.update(_settings(settings, CLIENT, host, "client"))
    if interface:
        config["interface"] = interface
    if preserve_source is not None:
        try:
            # The same spellings a role's bool argument accepts (an INI inventory gives strings).
            preserve_source = boolean(preserve_source, strict=True)
        except TypeError:
            raise FleetError("host %s: %s must be true or false, not %r"
                             % (host, PRESERVE_SOURCE_VARIABLE, preserve_source))
        if preserve_source:
            config["preserve_source"] = True
    try:
        return validate_client_config(config)
    except ConfigError as exc:
        raise FleetError("host %s: client config: %s%s" % (host, to_native(exc), _blame(exc, CLIENT_TOP_KEY, origins)))


def _blame(exc, top_key, origins):
    """Name the definition behind a config error such as multi_group_array[2]...."""
    path = getattr(exc, "path", "") or ""
    prefix = top_key + "["
    if path.startswith(prefix):
        index_text = path[len(prefix):].split("]", 1)[0]
        if index_text.isdigit() and int(index_text) < len(origins):
            return " (from %s)" % origins[int(index_text)]
    return ""


def _interface(interface, host, variable):
    if not interface:
        return None
    try:
        return parse_interface(interface, "host %s: %s" % (host, variable))
    except ConfigError as exc:
        raise FleetError(to_native(exc))


def _checked(groups_def, groups, variable):
    definitions, problems = _definitions(groups_def, groups, variable)
    if problems:
        raise AnsibleFilterError("; ".join(problems))
    return definitions


def server_config(groups_def, host, hostvars, groups, interface=None, variable=DEFAULT_VARIABLE, settings=None):
    """The server config (dict) of ``host``: one group per definition it sends.

    ``settings`` holds top-level keys of the server config (metrics_listen,
    metrics_textfile, ...); empty values are left out.
    """
    definitions = _checked(groups_def, groups, variable)
    try:
        return _server_config(definitions, host, hostvars, _interface(interface, host, "interface"), settings)
    except FleetError as exc:
        raise AnsibleFilterError("%s: %s" % (variable, to_native(exc)))


def client_config(groups_def, host, hostvars, groups, interface=None, variable=DEFAULT_VARIABLE,
                  preserve_source=False, settings=None, check_source_port=True):
    """The client config (dict) of ``host``: one entry per sender of each definition it receives.

    ``preserve_source`` true re-delivers every entry with the original sender's
    address (top-level ``preserve_source`` of the client config); ``settings``
    holds other top-level keys (metrics_listen, metrics_textfile), empty values
    left out.  ``check_source_port`` true (the default) makes every entry
    require the source port of its server host (``multicast_proxy_source_port``
    of that host, default 868; 0 there means any port).
    """
    definitions = _checked(groups_def, groups, variable)
    try:
        return _client_config(definitions, host, hostvars, _interface(interface, host, "interface"),
                              preserve_source, settings, check_source_port)
    except FleetError as exc:
        raise AnsibleFilterError("%s: %s" % (variable, to_native(exc)))


def _note(problems, exc):
    # A host's bad address shows up in every config it appears in: report it once.
    message = to_native(exc)
    if message not in problems:
        problems.append(message)


def fleet_problems(groups_def, hostvars, groups, variable=DEFAULT_VARIABLE):
    """Every problem of the fleet's membership and keys, as a list of messages (empty when all is well)."""
    definitions, problems = _definitions(groups_def, groups, variable)
    hosts = []
    for definition in definitions:
        hosts.extend(h for h in definition["senders"] + definition["receivers"] + definition["dynamic"]
                     if h not in hosts)
    for host in hosts:
        try:
            host_address(host, hostvars)
        except FleetError as exc:
            _note(problems, exc)
            continue
        try:
            port = host_source_port(host, hostvars)
            _server_config(definitions, host, hostvars, None, {"source_port": port} if port else None)
        except FleetError as exc:
            _note(problems, exc)
        try:
            _client_config(definitions, host, hostvars, None, hostvars[host].get(PRESERVE_SOURCE_VARIABLE),
                           check_source_port=hostvars[host].get(SOURCE_PORT_CHECK_VARIABLE, True))
        except FleetError as exc:
            _note(problems, exc)
    problems.extend(fleet_auth_problems(definitions, hostvars))
    return problems


def relay_roles(groups_def, host, groups, variable=DEFAULT_VARIABLE):
    """Which relay daemons ``host`` runs: a sorted sub-list of ["client", "server"]."""
    roles = set()
    for definition in _checked(groups_def, groups, variable):
        if host in definition["senders"]:
            roles.add("server")
        if _receives(definition, host):
            roles.add("client")
    return sorted(roles)


def relay_group_count(groups_def, host, groups, variable=DEFAULT_VARIABLE):
    """How many distinct multicast groups ``host`` sends or receives."""
    return len(set(d["group_ip"] for d in _checked(groups_def, groups, variable)
                   if host in d["senders"] or _receives(d, host)))


def relay_config_json(config):
    """Serialize a relay config exactly as the relay's own commands write it."""
    return dump_config(config)


VERIFY_GROUPS_VARIABLE = "multicast_proxy_verify_groups"
VERIFY_ANY_PORT_VARIABLE = "multicast_proxy_verify_any_port"


def _verify_selection(only_groups, names):
    """The group names chosen for probing, or None for all of them."""
    if only_groups is None:
        return None
    wanted = [only_groups] if isinstance(only_groups, string_types) else only_groups
    if not isinstance(wanted, (list, tuple)) or not all(isinstance(name, string_types) for name in wanted):
        raise AnsibleFilterError("%s: give a list of group names of the definitions, not %r"
                                 % (VERIFY_GROUPS_VARIABLE, only_groups))
    unknown = [name for name in wanted if name not in names]
    if unknown:
        # A misspelt name would otherwise leave its group out without a word.
        raise AnsibleFilterError("%s: no group is named %s; check the spelling (the groups are %s)"
                                 % (VERIFY_GROUPS_VARIABLE, ", ".join(unknown), ", ".join(names) or "none"))
    return set(wanted)


def relay_verify_streams(groups_def, groups, play_hosts, only_groups=None, any_port=5999,
                         variable=DEFAULT_VARIABLE, hostvars=None):
    """The probe streams of playbooks/verify.yml: one per probed group and sender in the play.

    Senders and receivers are expanded and checked exactly as for the relay
    configs. A stream's members are the group's receivers in the play except
    the sender, then its may-join hosts in the play (``dynamic_members``,
    which receive only while the probe receiver has joined; with
    ``hostvars``, their relay addresses in ``dynamic_addresses``, which the
    sender's server lists while they are subscribed). VRRP groups are left
    out (a UDP probe cannot stand in for advertisements); groups on any port
    (group port 0) are probed on ``any_port``.
    """
    definitions = _checked(groups_def, groups, variable)
    # _checked only returns when every item became a definition, in order.
    names = [to_native(item["name"]) if item.get("name") else definition["where"]
             for item, definition in zip(groups_def, definitions)]
    selected = _verify_selection(only_groups, names)
    try:
        probe_port = parse_port(any_port, VERIFY_ANY_PORT_VARIABLE)
    except ConfigError as exc:
        raise AnsibleFilterError(to_native(exc))
    if not isinstance(play_hosts, (list, tuple)):
        raise AnsibleFilterError("play_hosts must be the list of the play's hosts (ansible_play_hosts_all), not %r"
                                 % (play_hosts,))
    in_play = set(play_hosts)
    streams = []
    for name, definition in zip(names, definitions):
        if definition["protocol"] == "vrrp" or (selected is not None and name not in selected):
            continue
        for sender in definition["senders"]:
            if sender not in in_play:
                continue
            dynamic = [host for host in definition["dynamic"] if host != sender and host in in_play]
            stream = {
                "group": name,
                "group_ip": definition["group_ip"],
                "group_port": definition["group_port"] or probe_port,
                "sender": sender,
                "stream_id": len(streams) + 1,
                "members": [host for host in definition["receivers"] if host != sender and host in in_play] + dynamic,
                "dynamic_members": dynamic,
            }
            if hostvars is not None:
                try:
                    stream["dynamic_addresses"] = [host_address(host, hostvars) for host in dynamic]
                except FleetError as exc:
                    raise AnsibleFilterError("%s: %s" % (variable, to_native(exc)))
            streams.append(stream)
    return streams


def relay_subscribed(result):
    """The dynamic members of a server group, from a registered ``multis_admin -P -m GROUP --json``.

    The addresses the server sends copies to because they subscribed (a
    member that is also static counts too); empty when the command failed,
    so that a caller waiting for members to leave keeps waiting.
    """
    if not isinstance(result, dict) or result.get("rc") != 0 or not result.get("stdout"):
        return []
    try:
        stats = json.loads(result["stdout"])
    except ValueError:
        return []
    return [member["member_ip"] for group in stats.get("groups") or [] for member in group.get("members") or []
            if "subscription" in (member.get("joined_by") or "").split("+")]


METRICS_VARIABLE = "multicast_proxy_metrics"
METRICS_ADDRESS_VARIABLE = "multicast_proxy_metrics_address"
# The ports the roles give each daemon's endpoint unless the inventory says otherwise.
METRICS_PORTS = {"server": ("multicast_proxy_metrics_server_port", 9471),
                 "client": ("multicast_proxy_metrics_client_port", 9472)}


def _metrics_target(host, host_vars, hostvars, side):
    """ADDRESS:PORT Prometheus scrapes ``host``'s daemon of ``side`` on, or None when its endpoint is off."""
    try:
        enabled = boolean(host_vars.get(METRICS_VARIABLE, False), strict=True)
    except TypeError:
        raise FleetError("host %s: %s must be true or false, not %r"
                         % (host, METRICS_VARIABLE, host_vars.get(METRICS_VARIABLE)))
    if not enabled:
        return None
    port_variable, default_port = METRICS_PORTS[side]
    address = host_vars.get(METRICS_ADDRESS_VARIABLE) or "127.0.0.1"
    port = host_vars.get(port_variable, default_port)
    try:
        address, port = split_listen(parse_listen("%s:%s" % (address, port),
                                                  "host %s: %s and %s" % (host, METRICS_ADDRESS_VARIABLE,
                                                                          port_variable)))
    except ConfigError as exc:
        raise FleetError(to_native(exc))
    if address == "0.0.0.0":
        address = host_address(host, hostvars)
    elif address.startswith("127."):
        raise FleetError("host %s: its %s metrics endpoint listens on %s, which a Prometheus on another host "
                         "cannot scrape; set %s to an address of the host (or 0.0.0.0, and restrict the port "
                         "with a firewall), or leave %s off and use multicast_proxy_metrics_textfile_dir with "
                         "node_exporter" % (host, side, address, METRICS_ADDRESS_VARIABLE, METRICS_VARIABLE))
    return "%s:%d" % (address, port)


def prometheus_targets(groups_def, hostvars, groups, side, variable=DEFAULT_VARIABLE):
    """Prometheus file_sd target groups of one daemon kind: one per host of ``side`` with metrics on.

    ``side`` is "server" (the senders' multis_monitord) or "client" (the
    receivers' multic_monitord). Each target group carries the inventory
    host as label ``host``, in the order the definitions name the hosts.
    """
    if side not in METRICS_PORTS:
        raise AnsibleFilterError("prometheus_targets: side must be \"server\" or \"client\", not %r" % (side,))
    definitions = _checked(groups_def, groups, variable)
    hosts = []
    for definition in definitions:
        members = definition["senders"] if side == "server" else definition["receivers"] + definition["dynamic"]
        hosts.extend(host for host in members if host not in hosts)
    targets, problems = [], []
    for host in hosts:
        try:
            target = _metrics_target(host, hostvars[host], hostvars, side)
        except FleetError as exc:
            _note(problems, exc)
            continue
        if target:
            targets.append({"targets": [target], "labels": {"host": host}})
    if problems:
        raise AnsibleFilterError("; ".join(problems))
    return targets


def relay_capabilities(config, side):
    """The capabilities a host's daemon of ``side`` needs for ``config`` (its server_config / client_config).

    The roles put them in the unit's AmbientCapabilities and
    CapabilityBoundingSet; relay_contract.needed_capabilities has the rules.
    """
    try:
        return needed_capabilities(side, config)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise AnsibleFilterError("relay_capabilities: %s" % to_native(exc))


class FilterModule(object):
    """Inventory-driven membership filters of multicast.proxy."""

    def filters(self):
        return {
            "server_config": server_config,
            "client_config": client_config,
            "fleet_problems": fleet_problems,
            "relay_roles": relay_roles,
            "relay_group_count": relay_group_count,
            "relay_config_json": relay_config_json,
            "relay_capabilities": relay_capabilities,
            "relay_verify_streams": relay_verify_streams,
            "relay_subscribed": relay_subscribed,
            "prometheus_targets": prometheus_targets,
        }
