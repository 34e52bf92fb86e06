# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one config model of the multicast relay.

Parsing, validation and pure edit operations for ``server_cfg.json.txt`` and
``client_cfg.json.txt``, validation of the authentication key file
``auth_keys.json``, plus the lock every writer takes.  The relay package
(``files/multicast_proxy/relay_config.py`` is a symlink to this file) and the Ansible
modules share it, so a rule is enforced in exactly one place.

Standard library only, Python 3.8+.  Edit functions never mutate their input;
they return a new, validated config.  Every error is a ``ConfigError`` whose
message names the JSON path that is wrong and says what to do about it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import binascii
import collections
import fcntl
import json
import os
import re
import socket
import stat

SERVER_CONFIG_NAME = "server_cfg.json.txt"
CLIENT_CONFIG_NAME = "client_cfg.json.txt"

MAX_GROUPS = 1024
MAX_MEMBERS = 1024
MAX_CLIENT_ENTRIES = 4096
# 1024 groups of 1024 members take about 25 MiB as written by dump_config.
MAX_CONFIG_BYTES = 64 << 20

SERVER_TOP_KEY = "multi_group_array"
CLIENT_TOP_KEY = "multi_server_info_array"

# What a group carries: UDP datagrams (the default, never written back) or
# VRRP advertisements (IP protocol 112), which only exist on VRRP_GROUP and
# have no ports.
PROTOCOLS = ("udp", "vrrp")
VRRP_GROUP = "224.0.0.18"

# -- the schema -----------------------------------------------------------
#
# Every key a config file can hold is one row here.  The validator below, the
# CLIs' flags (cli.py), the Ansible modules' argument specs, the inventory's
# group definitions (plugins/filter/membership.py), the roles' argument specs
# and docs/config-reference.md are derived from these rows or checked against
# them by tests/unit/plugins/test_schema.py, so an option is added by adding a
# row, its behaviour and its tests.
#
# Fields:
#   key        the JSON key
#   place      where it lives: GROUP (an entry of multi_group_array), ENTRY (an
#              entry of multi_server_info_array), SERVER or CLIENT (top level)
#   kind       the value's type, which picks its parser: group_ip, unicast_ip,
#              port, group_port (0 = any port / VRRP), members, interface,
#              flag (true/false), choice (one of ``choices``), listen (a TCP
#              "ADDRESS:PORT", or "PORT" on loopback), prom_file (an absolute
#              path ending in .prom), join_interfaces ("all", "route" or a
#              list of interface names and IPv4 addresses)
#   required   the key must be present (else ``default`` applies)
#   default    the value when absent (a string describes a computed default)
#   written    "always", "when set" (absent stays absent) or "not default"
#              (written back only when not the default, so files in the seed
#              format round-trip unchanged)
#   cli        the admin command's flag, or None; "-x/--long" are the seed
#              tool's flags, "--long" ones are this relay's.  A flag option
#              also gets "--no-long".
#   module     the Ansible module option, or None
#   inventory  the key of a multicast_proxy_groups definition, or None
#   choices    the allowed values of a choice
#   help       one line for docs and --help
Option = collections.namedtuple("Option", "key place kind required default written cli module inventory choices help")

GROUP = "group"
ENTRY = "entry"
SERVER = "server"
CLIENT = "client"
PLACES = (GROUP, ENTRY, SERVER, CLIENT)
# The keys whose rules involve other keys (addresses, ports, members); every
# other row is parsed by its kind alone and copied through by its ``written``.
CORE_KEYS = ("group_ip", "server_port", "group_port", "member_array", "server_ip")
KINDS = ("group_ip", "unicast_ip", "port", "group_port", "members", "interface", "flag", "choice", "listen",
         "prom_file", "join_interfaces", "networks", "count", "seconds")
# How much the server's metrics say about members: per-group sums, or a series per member as well.
METRICS_DETAILS = ("group", "member")
# The metrics endpoint's address when a setting gives only a port: loopback, so nothing is opened by accident.
METRICS_DEFAULT_ADDRESS = "127.0.0.1"
# Where the server joins a group that names no interface: every up, multicast
# interface with IPv4 (the loopback copy of a local source's datagram reaches
# only sockets that joined on the interface it left from), or the route's.
JOIN_ALL = "all"
JOIN_ROUTE = "route"
# More interfaces than any host has; a socket holds at most igmp_max_memberships anyway.
MAX_JOIN_INTERFACES = 64
# Dynamic members (a group with ``allow``): how many at most, and how long a
# subscription lasts without a refresh (clients refresh every third of it, so
# a member whose leave is lost stops getting copies within 2 s).
DEFAULT_MAX_MEMBERS = 256
DEFAULT_LEASE = 1.5
MIN_LEASE = 0.5
MAX_LEASE = 300.0
MAX_ALLOW_NETWORKS = 64

SCHEMA = (
    Option("group_ip", GROUP, "group_ip", True, None, "always", "-m/--multiip", "group_ip", "group_ip", None,
           "the multicast group address, in 224.0.0.0/4"),
    Option("server_port", GROUP, "port", True, None, "always", "-p/--port", "server_port", "server_port", None,
           "UDP port the server sends its copies to on every member (the client listens on it)"),
    Option("group_port", GROUP, "group_port", False, "server_port (0 for VRRP)", "always", "-g/--gport",
           "group_port", "group_port", None,
           "UDP port of the group's traffic; 0 is any port (capture mode only) and the only port of VRRP"),
    Option("member_array", GROUP, "members", True, None, "always", "-j/--join", "members", None, None,
           "unicast IPv4 addresses of the members that get a copy of every datagram"),
    Option("interface", GROUP, "interface", False, "the server's interface, else join_interfaces", "when set",
           "--interface", "interface", None, None,
           "interface the server joins (or captures) the group on"),
    Option("join_interfaces", GROUP, "join_interfaces", False, "the server's join_interfaces", "when set",
           "--join-interfaces", "join_interfaces", None, None,
           "where a group without an interface is joined: all (every up multicast interface with IPv4), "
           "route (the route's interface) or a list of interface names and addresses"),
    Option("protocol", GROUP, "choice", False, "udp", "not default", "--protocol", "protocol", "protocol",
           PROTOCOLS, "what the group carries: udp datagrams or vrrp advertisements (IP protocol 112, 224.0.0.18)"),
    Option("capture", GROUP, "flag", False, False, "not default", "--capture", "capture", "capture", None,
           "pick the group's datagrams up from the interface (senders that turn multicast loopback off, "
           "any port)"),
    Option("allow", GROUP, "networks", False, "nobody subscribes", "when set", "--allow", "allow", None, None,
           "IPv4 networks (CIDR, comma-separated on a command line) whose hosts may subscribe as dynamic members"),
    Option("max_members", GROUP, "count", False, DEFAULT_MAX_MEMBERS, "not default", "--max-members", "max_members",
           "max_members", None, "the most dynamic members the group admits at once (only with allow)"),
    Option("lease", GROUP, "seconds", False, DEFAULT_LEASE, "not default", "--lease", "lease", "lease", None,
           "seconds a subscription lasts without a refresh; clients refresh every third of it (only with allow)"),
    Option("server_ip", ENTRY, "unicast_ip", True, None, "always", "-i/--ip", "server_ip", None, None,
           "unicast address of the relay server the copies come from"),
    Option("server_port", ENTRY, "port", True, None, "always", "-s/--sport", "server_port", "server_port", None,
           "UDP port the copies arrive on"),
    Option("group_ip", ENTRY, "group_ip", True, None, "always", "-m/--multi_ip", "group_ip", "group_ip", None,
           "the multicast group the copies are re-delivered to"),
    Option("group_port", ENTRY, "group_port", True, None, "always", "-g/--gport", "group_port", "group_port", None,
           "UDP port they are re-delivered to; 0 accepts every port of the group (and is VRRP's)"),
    Option("protocol", ENTRY, "choice", False, "udp", "not default", "--protocol", "protocol", "protocol",
           PROTOCOLS, "what the group carries: udp datagrams or vrrp advertisements"),
    Option("source_port", ENTRY, "port", False, "the client's source_port", "when set", "--source-port",
           "source_port", None, None,
           "accept copies only from this UDP source port of the server (its source_port setting)"),
    Option("preserve_source", ENTRY, "flag", False, False, "not default", "--preserve-source", "preserve_source",
           "preserve_source", None,
           "re-deliver with the original sender's address and port (for applications that check them)"),
    Option("dynamic", ENTRY, "flag", False, False, "not default", "--dynamic", "dynamic", None, None,
           "subscribe to the server while a local application has joined the group (its group needs allow)"),
    Option("interface", SERVER, "interface", False, "none: join_interfaces decides", "when set",
           "--set interface=", "interface", None, None,
           "the one interface the server joins every group on that names none"),
    Option("join_interfaces", SERVER, "join_interfaces", False, JOIN_ALL, "not default",
           "--set join_interfaces=", "join_interfaces", None, None,
           "where the groups that name no interface are joined: all (every up multicast interface with IPv4, "
           "rescanned every second), route (the route's interface) or a list of interface names and addresses"),
    Option("address", SERVER, "unicast_ip", False, "the local address of the route to each group's members",
           "when set", "--set address=", "address", None, None,
           "the address members receive the copies from; authentication tags are bound to it"),
    Option("source_port", SERVER, "port", False, "an ephemeral port", "when set", "--set source_port=",
           "source_port", None, None,
           "the UDP port every copy leaves from (members check it; a port below 1024 only root can bind)"),
    Option("legacy_tags", SERVER, "flag", False, False, "not default", "--set legacy_tags=", "legacy_tags", None,
           None, "tag frames as releases before 1.0.0 did, without naming the server, so their clients verify "
                 "them: the first step of an upgrade from such a release"),
    Option("metrics_listen", SERVER, "listen", False, "no endpoint", "when set", "--set metrics_listen=",
           "metrics_listen", None, None,
           "serve Prometheus metrics over HTTP on this IPv4 ADDRESS:PORT (a bare PORT listens on 127.0.0.1)"),
    Option("metrics_textfile", SERVER, "prom_file", False, "no file", "when set", "--set metrics_textfile=",
           "metrics_textfile", None, None,
           "write the metrics to this .prom file every 15 s (node_exporter's textfile collector)"),
    Option("metrics_detail", SERVER, "choice", False, "group", "not default", "--set metrics_detail=",
           "metrics_detail", None, METRICS_DETAILS,
           "group: per-group sums of the copies sent; member: a series per member as well"),
    Option("interface", CLIENT, "interface", False, "the interface of the route to each group", "when set",
           "--set interface=", "interface", None, None,
           "interface the client re-delivers on"),
    Option("preserve_source", CLIENT, "flag", False, False, "not default", "--set preserve_source=",
           "preserve_source", None, None,
           "re-deliver every entry with the original sender's address and port"),
    Option("source_port", CLIENT, "port", False, "any port", "when set", "--set source_port=",
           "source_port", None, None,
           "accept copies only from this UDP source port of the servers (an entry can name its own)"),
    Option("metrics_listen", CLIENT, "listen", False, "no endpoint", "when set", "--set metrics_listen=",
           "metrics_listen", None, None,
           "serve Prometheus metrics over HTTP on this IPv4 ADDRESS:PORT (a bare PORT listens on 127.0.0.1)"),
    Option("metrics_textfile", CLIENT, "prom_file", False, "no file", "when set", "--set metrics_textfile=",
           "metrics_textfile", None, None,
           "write the metrics to this .prom file every 15 s (node_exporter's textfile collector)"),
)


def schema_rows(place):
    """The rows of one place (GROUP, ENTRY, SERVER or CLIENT), in file order."""
    return tuple(option for option in SCHEMA if option.place == place)


def schema_keys(place):
    """The keys a config object at ``place`` may hold."""
    return tuple(option.key for option in schema_rows(place))


def optional_rows(place):
    """The rows of ``place`` that are parsed by their kind alone (not CORE_KEYS)."""
    return tuple(option for option in schema_rows(place) if option.key not in CORE_KEYS)


def cli_flag_name(option):
    """The long flag of an option the seed tool did not have ("--capture"), or None."""
    if not option.cli or not option.cli.startswith("--") or option.cli.startswith("--set "):
        return None
    return option.cli[2:]


def module_argument_spec(place):
    """AnsibleModule argument spec entries of the optional rows of ``place``.

    No defaults: an option a task leaves out keeps its current value.
    """
    spec = {}
    for option in optional_rows(place):
        if option.module is None:
            continue
        if option.kind == "flag":
            spec[option.module] = dict(type="bool")
        elif option.kind == "choice":
            spec[option.module] = dict(type="str", choices=list(option.choices))
        elif option.kind in ("port", "count"):
            spec[option.module] = dict(type="int")
        elif option.kind == "seconds":
            spec[option.module] = dict(type="float")
        elif option.kind in ("networks", "join_interfaces"):
            spec[option.module] = dict(type="list", elements="str")
        else:
            spec[option.module] = dict(type="str")
    return spec


def module_options(place, params):
    """The ``options`` of an edit function from an Ansible module's ``params``: keys by module name.

    Options left out (None) are not included, so they keep their value.
    """
    return dict((option.key, params[option.module]) for option in optional_rows(place)
                if option.module is not None and params.get(option.module) is not None)


def parse_option_text(option, value, what):
    """An optional row's value from a command line, a module or an inventory.

    Flags take JSON-like booleans or the words true/false/yes/no/on/off/1/0;
    a choice one of its choices; an interface its name ("" removes it, which
    callers treat as "unset").
    """
    if option.kind == "flag":
        if isinstance(value, bool):
            return value
        words = {"true": True, "yes": True, "on": True, "1": True,
                 "false": False, "no": False, "off": False, "0": False}
        if isinstance(value, str) and value.lower() in words:
            return words[value.lower()]
        raise ConfigError(what, "%s is not true or false; give true or false" % json.dumps(value))
    if option.kind == "choice":
        if value not in option.choices:
            raise ConfigError(what, "%s is not a %s; use one of %s"
                              % (json.dumps(value), option.key, ", ".join(option.choices)))
        return value
    if option.kind == "interface":
        if value == "":
            return ""
        return parse_interface(value, what)
    if option.kind == "unicast_ip":
        if value == "":
            return ""
        return parse_unicast_ip(value, what)
    if option.kind in ("listen", "prom_file"):
        if value == "":
            return ""
        return _PARSERS[option.kind](value, what)
    if option.kind == "port":
        # "" or "0" (a command line) and 0 (a module's int) remove the setting.
        if value in ("", "0") or (value == 0 and not isinstance(value, bool)):
            return ""
        return parse_port(value, what)
    if option.kind == "join_interfaces":
        # A command line gives "eth0,eth1", a module or an inventory a list; "" or [] removes the setting.
        if value in ("", []):
            return ""
        if isinstance(value, str) and value not in (JOIN_ALL, JOIN_ROUTE):
            value = [item.strip() for item in value.split(",")]
        elif isinstance(value, (list, tuple)) and len(value) == 1 and value[0] in (JOIN_ALL, JOIN_ROUTE):
            value = value[0]
        return parse_join_interfaces(value, what)
    if option.kind in ("networks", "count", "seconds"):
        if value == "" or value == []:
            return ""
        if option.kind == "networks" and isinstance(value, str):
            value = [item.strip() for item in value.split(",")]
        elif option.kind != "networks" and isinstance(value, str):
            try:
                value = float(value) if option.kind == "seconds" else int(value)
            except ValueError:
                raise ConfigError(what, "%s is not a number" % json.dumps(value))
        return _PARSERS[option.kind](value, what)
    raise ConfigError(what, "%s options cannot be set this way" % option.kind)


_MEMBER_MODES = ("exact", "add", "remove")
# Linux interface names are at most IFNAMSIZ - 1 = 15 bytes.
_MAX_IFNAME = 15


class ConfigError(ValueError):
    """A config (or an edit of it) breaks a rule.

    ``path`` is the JSON path of the offending value (or the name of the
    argument for edit functions), ``problem`` says what is wrong and what to do.
    """

    def __init__(self, path, problem):
        self.path = path
        self.problem = problem
        super(ConfigError, self).__init__("%s: %s" % (path, problem) if path else problem)


# A strict dotted quad: decimal octets 0-255 in ASCII digits, no leading
# zeros (some tools read them as octal), nothing before or after.
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED_QUAD = re.compile(r"\.".join([_OCTET] * 4))
# ASCII digits only: str.isdigit() also accepts other scripts' digits, and str.isascii() is 3.7+.
_DECIMAL = re.compile("[0-9]+")


def _ipv4_to_int(text):
    """Return the 32-bit value of a strict dotted quad, or None."""
    if not isinstance(text, str) or _DOTTED_QUAD.fullmatch(text) is None:
        return None
    return int.from_bytes(socket.inet_aton(text), "big")


def _ipv4_value(text, what):
    """The 32-bit value of a dotted quad; ConfigError naming ``what`` if it is not one."""
    value = _ipv4_to_int(text)
    if value is None:
        raise ConfigError(what, "%s is not an IPv4 address; write four numbers 0-255 separated by dots, "
                                "for example 192.168.1.1" % json.dumps(text))
    return value


def parse_ipv4(text, what):
    """Return ``text`` as a normalized dotted quad or raise ConfigError naming ``what``."""
    _ipv4_value(text, what)
    return text


def is_multicast(address):
    """True for a dotted quad in 224.0.0.0/4."""
    value = _ipv4_to_int(address)
    return value is not None and (value >> 28) == 0xE


def parse_group_ip(text, what):
    """Validate a multicast group address (224.0.0.0/4)."""
    if (_ipv4_value(text, what) >> 28) != 0xE:
        raise ConfigError(what, "%s is not a multicast group address; use an address in 224.0.0.0/4 "
                                "(224.0.0.0 - 239.255.255.255)" % json.dumps(text))
    return text


def parse_unicast_ip(text, what):
    """Validate a unicast IPv4 address: not 0.0.0.0, not multicast, not broadcast."""
    value = _ipv4_value(text, what)
    if value == 0:
        raise ConfigError(what, "0.0.0.0 is not a host address; give the unicast address of the host")
    if (value >> 28) == 0xE:
        raise ConfigError(what, "%s is a multicast address; give the unicast address of the host" % text)
    if value == 0xFFFFFFFF:
        raise ConfigError(what, "255.255.255.255 is the broadcast address; give the unicast address of the host")
    return text


def parse_port(value, what, allow_text=True):
    """Return a port 1..65535 from an int, or from a decimal string (command-line input) unless
    ``allow_text`` is false (config files hold JSON integers)."""
    port = None
    if isinstance(value, int) and not isinstance(value, bool):
        port = value
    elif allow_text and isinstance(value, str) and _DECIMAL.fullmatch(value):
        port = int(value)
    if port is None or not 1 <= port <= 65535:
        raise ConfigError(what, "%s is not a port; use an integer from 1 to 65535" % json.dumps(value))
    return port


def parse_interface(value, what):
    """Validate a Linux interface name."""
    # The kernel would take more, but names outside printable ASCII are never
    # what an operator meant and cannot be typed back on a command line.
    if (not isinstance(value, str) or not 1 <= len(value) <= _MAX_IFNAME or value in (".", "..")
            or any(not " " < ch < "\x7f" or ch in "/:" for ch in value)):
        raise ConfigError(what, "%s is not an interface name; give a name such as eth0 "
                                "(1-15 printable ASCII characters, no '/', ':' or spaces)" % json.dumps(value))
    return value


def parse_listen(value, what):
    """A metrics endpoint: "ADDRESS:PORT" (IPv4) or "PORT" (on METRICS_DEFAULT_ADDRESS), as "ADDRESS:PORT"."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ConfigError(what, "expected \"ADDRESS:PORT\" or a port, found %s" % _json_type(value))
    text = str(value).strip()
    address, colon, port_text = text.rpartition(":")
    if not colon:
        address = METRICS_DEFAULT_ADDRESS
    if not address or "[" in address or ":" in address:
        raise ConfigError(what, "%s is not ADDRESS:PORT with an IPv4 address (IPv6 is not supported); "
                                "e.g. 127.0.0.1:9471, or 0.0.0.0:9471 for every address" % json.dumps(text))
    if not re.match(r"^[0-9]{1,5}$", port_text) or not 1 <= int(port_text) <= 65535:
        raise ConfigError(what, "%s: the port must be a number from 1 to 65535" % json.dumps(text))
    if address != "0.0.0.0":
        _ipv4_value(address, what)
        address = socket.inet_ntoa(socket.inet_aton(address))
        if is_multicast(address):
            raise ConfigError(what, "%s is a multicast address; give a local unicast address, 127.0.0.1 or 0.0.0.0"
                              % address)
    return "%s:%d" % (address, int(port_text))


def split_listen(value):
    """(address, port) of a value parse_listen returned."""
    address, _colon, port = value.rpartition(":")
    return address, int(port)


def parse_prom_file(value, what):
    """The path of a textfile-collector file: absolute, ending in .prom, no control characters."""
    if not isinstance(value, str):
        raise ConfigError(what, "expected a path as a string, found %s" % _json_type(value))
    if not value.startswith("/") or not value.endswith(".prom") or value.endswith("/.prom"):
        raise ConfigError(what, "%s is not an absolute path ending in .prom (node_exporter's textfile collector "
                                "reads only *.prom); e.g. /var/lib/prometheus/node-exporter/multicast_proxy.prom"
                          % json.dumps(value))
    if any(ord(char) < 32 or ord(char) == 127 for char in value) or len(value) > 4096:
        raise ConfigError(what, "%s holds control characters or is too long; give a plain path" % json.dumps(value))
    if "/../" in value or "/./" in value or "//" in value:
        raise ConfigError(what, "%s: give the path without '.', '..' or '//' parts" % json.dumps(value))
    return value


def parse_join_interfaces(value, what):
    """ "all", "route", or a list of distinct interface names and unicast IPv4 addresses (in the given order)."""
    if value in (JOIN_ALL, JOIN_ROUTE):
        return value
    if not isinstance(value, list) or not value:
        raise ConfigError(what, "%s is not a join setting; give \"all\", \"route\" or a list of interface names "
                                "and addresses such as [\"eth0\", \"10.0.1.5\"]" % json.dumps(value))
    if len(value) > MAX_JOIN_INTERFACES:
        raise ConfigError(what, "%d interfaces; at most %d can be listed" % (len(value), MAX_JOIN_INTERFACES))
    result = []
    for index, item in enumerate(value):
        item_what = "%s[%d]" % (what, index)
        if _ipv4_to_int(item) is not None:
            parse_unicast_ip(item, item_what)
        else:
            parse_interface(item, item_what)
        if item in result:
            raise ConfigError(item_what, "%s is listed twice; remove the duplicate" % item)
        result.append(item)
    return result


def parse_networks(value, what):
    """A list of IPv4 networks in CIDR form ("10.0.0.0/8"; a bare address is a /32), normalized."""
    if not isinstance(value, list):
        raise ConfigError(what, "expected a list of networks such as [\"10.0.0.0/24\"], found %s" % _json_type(value))
    if not value:
        raise ConfigError(what, "empty; give at least one network, or remove allow so that nobody subscribes")
    if len(value) > MAX_ALLOW_NETWORKS:
        raise ConfigError(what, "%d networks; at most %d, give wider ones" % (len(value), MAX_ALLOW_NETWORKS))
    networks = []
    for index, item in enumerate(value):
        where = "%s[%d]" % (what, index)
        if not isinstance(item, str):
            raise ConfigError(where, "expected a network as a string, found %s" % _json_type(item))
        address, slash, bits = item.partition("/")
        number = _ipv4_value(address, where)
        if slash and (not _DECIMAL.fullmatch(bits) or int(bits) > 32 or (len(bits) > 1 and bits[0] == "0")):
            raise ConfigError(where, "%s: the prefix length after / must be 0 to 32" % json.dumps(item))
        length = int(bits) if slash else 32
        mask = (0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF
        if number & ~mask & 0xFFFFFFFF:
            network = socket.inet_ntoa((number & mask).to_bytes(4, "big"))
            raise ConfigError(where, "%s has host bits set; write the network %s/%d" % (item, network, length))
        if (number >> 28) == 0xE and length >= 4:
            raise ConfigError(where, "%s is multicast; subscribers have unicast addresses" % item)
        text = "%s/%d" % (address, length)
        if text not in networks:
            networks.append(text)
    return networks


def parse_count(value, what):
    """The most dynamic members of a group: 1..MAX_MEMBERS."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_MEMBERS:
        raise ConfigError(what, "%s is not a member count; use an integer from 1 to %d"
                          % (json.dumps(value), MAX_MEMBERS))
    return value


def parse_seconds(value, what):
    """A lease: MIN_LEASE..MAX_LEASE seconds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not MIN_LEASE <= value <= MAX_LEASE:
        raise ConfigError(what, "%s is not a lease; give seconds from %s to %s"
                          % (json.dumps(value), MIN_LEASE, MAX_LEASE))
    return value


_PARSERS = {"listen": parse_listen, "prom_file": parse_prom_file, "join_interfaces": parse_join_interfaces,
            "networks": parse_networks, "count": parse_count, "seconds": parse_seconds}


def _require_dict(obj, path, expected):
    if not isinstance(obj, dict):
        raise ConfigError(path, "expected a JSON object like %s, found %s" % (expected, _json_type(obj)))


def _require_list(obj, path):
    if not isinstance(obj, list):
        raise ConfigError(path, "expected a JSON array [...], found %s" % _json_type(obj))


def _json_type(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _reject_unknown_keys(obj, allowed, path):
    for key in obj:
        if key not in allowed:
            raise ConfigError("%s.%s" % (path, key) if path else key,
                              "unknown key; allowed keys here are %s (check the spelling)" % ", ".join(allowed))


def _require_key(obj, key, path):
    if key not in obj:
        raise ConfigError("%s.%s" % (path, key), "missing; every entry needs this key")
    return obj[key]


def empty_server_config():
    """A server config with no groups."""
    return {SERVER_TOP_KEY: []}


def empty_client_config():
    """A client config with no entries."""
    return {CLIENT_TOP_KEY: []}


def _parse_flag(obj, key, path):
    """An optional JSON boolean; None when absent."""
    if key not in obj:
        return None
    if not isinstance(obj[key], bool):
        raise ConfigError(path + key, "expected true or false, found %s" % _json_type(obj[key]))
    return obj[key]


def _config_value(option, value, path):
    """An optional row's value as a config file holds it (JSON types, no words)."""
    if option.kind == "flag":
        if not isinstance(value, bool):
            raise ConfigError(path, "expected true or false, found %s" % _json_type(value))
        return value
    if option.kind == "choice":
        if value not in option.choices:
            raise ConfigError(path, "%s is not a valid %s; use one of %s"
                              % (json.dumps(value), option.key, ", ".join(json.dumps(c) for c in option.choices)))
        return value
    if option.kind == "interface":
        return parse_interface(value, path)
    if option.kind == "unicast_ip":
        if not isinstance(value, str):
            raise ConfigError(path, "expected an IPv4 address as a string, found %s" % _json_type(value))
        return parse_unicast_ip(value, path)
    if option.kind in _PARSERS:
        return _PARSERS[option.kind](value, path)
    if option.kind == "port":
        return parse_port(value, path, allow_text=False)
    raise ConfigError(path, "no parser for %s values" % option.kind)


def _check_one_join_setting(obj, path):
    """``interface`` names the one interface; a join_interfaces beside it at the same level would be ignored."""
    if "interface" in obj and "join_interfaces" in obj:
        raise ConfigError(path + "join_interfaces", "set either \"interface\" (one interface) or "
                                                    "\"join_interfaces\" here, not both; remove one")


def _copy_optional(obj, normalized, place, prefix, parsed=None):
    """Add the optional rows of ``place`` that ``obj`` holds to ``normalized``, in schema order.

    ``parsed`` holds values the cross-key rules have already worked out (the
    protocol, say); the others are parsed by their kind.  ``written`` decides
    what is written back.
    """
    parsed = parsed or {}
    for option in optional_rows(place):
        if option.key in parsed:
            value = parsed[option.key]
        elif option.key in obj:
            value = _config_value(option, obj[option.key], prefix + option.key)
        else:
            continue
        if value is None or (option.written == "not default" and value == option.default):
            continue
        normalized[option.key] = value
    return normalized


def _protocol_and_group_port(obj, path, default_port, any_port_error):
    """The protocol of a group or client entry and its group port (0 = any port).

    ``default_port`` is the group port of a UDP entry without one (None: the
    key is required); ``any_port_error`` is None where a UDP group port 0 is
    allowed, else the problem to report for it.
    """
    protocol = obj.get("protocol", "udp")
    if protocol not in PROTOCOLS:
        raise ConfigError(path + ".protocol", "%s is not a protocol; use \"udp\" (the default) or \"vrrp\""
                          % json.dumps(protocol))
    port_path = path + ".group_port"
    if "group_port" in obj:
        value = obj["group_port"]
        if isinstance(value, int) and not isinstance(value, bool) and value == 0:
            group_port = 0
        else:
            group_port = parse_port(value, port_path, allow_text=False)
    elif protocol == "vrrp":
        group_port = 0
    elif default_port is None:
        raise ConfigError(port_path, "missing; every entry needs this key")
    else:
        group_port = default_port
    if protocol == "vrrp":
        if obj["group_ip"] != VRRP_GROUP:
            raise ConfigError(path + ".group_ip", "VRRP advertisements are sent to %s, not %s; set group_ip to %s"
                              % (VRRP_GROUP, obj["group_ip"], VRRP_GROUP))
        if group_port != 0:
            raise ConfigError(port_path, "VRRP has no ports; remove group_port or set it to 0")
    elif group_port == 0 and any_port_error is not None:
        raise ConfigError(port_path, any_port_error)
    return protocol, group_port


def _validate_members(members, members_path, known_members):
    """A copy of ``members`` after checking every address and that none repeats.

    ``known_members`` maps addresses already checked in this config to one
    shared string: groups usually list the same receivers, and a 1024 x 1024
    config then checks 1024 addresses instead of a million and holds one
    string per address instead of one per group and member.
    """
    try:
        checked = list(map(known_members.__getitem__, members))
    except (KeyError, TypeError):
        # An address not seen yet (or not a string): check one by one, so the
        # first bad entry is the one reported.
        pass
    else:
        if len(set(checked)) == len(checked):
            return checked
    checked = []
    seen = set()
    for index, member in enumerate(members):
        member_path = "%s[%d]" % (members_path, index)
        if not isinstance(member, str) or member not in known_members:
            parse_unicast_ip(member, member_path)
            known_members[member] = member
        if member in seen:
            raise ConfigError(member_path, "%s is listed twice; remove the duplicate" % member)
        seen.add(member)
        checked.append(known_members[member])
    return checked


def _validate_group(group, path, known_members):
    _require_dict(group, path, '{"group_ip": ..., "server_port": ..., "member_array": [...]}')
    _reject_unknown_keys(group, schema_keys(GROUP), path)
    group_ip = parse_group_ip(_require_key(group, "group_ip", path), path + ".group_ip")
    server_port = parse_port(_require_key(group, "server_port", path), path + ".server_port", allow_text=False)
    capture = _parse_flag(group, "capture", path + ".")
    protocol, group_port = _protocol_and_group_port(
        group, path, server_port, None if capture else
        "0 means any port of the group, which only capture mode can see; add \"capture\": true or give a "
        "port 1-65535")
    if protocol == "vrrp" and capture is False:
        raise ConfigError(path + ".capture", "a VRRP group is always captured from the interface; remove "
                                             "\"capture\": false")
    members_path = path + ".member_array"
    members = _require_key(group, "member_array", path)
    _require_list(members, members_path)
    if len(members) > MAX_MEMBERS:
        raise ConfigError(members_path, "%d members; at most %d are supported per group, split the group"
                          % (len(members), MAX_MEMBERS))
    normalized = {
        "group_ip": group_ip,
        "server_port": server_port,
        "group_port": group_port,
        "member_array": _validate_members(members, members_path, known_members),
    }
    # Written back only when not the default, so seed-format files round-trip unchanged.
    normalized = _copy_optional(group, normalized, GROUP, path + ".", {"protocol": protocol, "capture": capture})
    _check_one_join_setting(normalized, path + ".")
    for key in ("max_members", "lease"):
        if key in group and "allow" not in normalized:
            raise ConfigError(path + "." + key, "only a group with allow has dynamic members; add allow (--allow "
                                                "CIDR) or remove %s" % key)
    return normalized


def validate_server_config(obj):
    """Return a normalized deep copy of a server config or raise ConfigError."""
    _require_dict(obj, "(top level)", '{"multi_group_array": [...]}')
    _reject_unknown_keys(obj, (SERVER_TOP_KEY,) + schema_keys(SERVER), "")
    groups = obj.get(SERVER_TOP_KEY, [])
    _require_list(groups, SERVER_TOP_KEY)
    if len(groups) > MAX_GROUPS:
        raise ConfigError(SERVER_TOP_KEY, "%d groups; at most %d are supported, remove some" % (len(groups), MAX_GROUPS))
    normalized_groups = []
    seen = {}
    known_members = {}
    for index, group in enumerate(groups):
        path = "%s[%d]" % (SERVER_TOP_KEY, index)
        normalized = _validate_group(group, path, known_members)
        if normalized["group_ip"] in seen:
            raise ConfigError(path + ".group_ip", "group %s is already defined at %s[%d]; merge the two entries"
                              % (normalized["group_ip"], SERVER_TOP_KEY, seen[normalized["group_ip"]]))
        seen[normalized["group_ip"]] = index
        normalized_groups.append(normalized)
    normalized = _copy_optional(obj, {SERVER_TOP_KEY: normalized_groups}, SERVER, "")
    _check_one_join_setting(normalized, "")
    return normalized


def _client_entry_key(entry):
    return (entry["server_ip"], entry["group_ip"], entry["group_port"])


def validate_client_config(obj):
    """Return a normalized deep copy of a client config or raise ConfigError."""
    _require_dict(obj, "(top level)", '{"multi_server_info_array": [...]}')
    _reject_unknown_keys(obj, (CLIENT_TOP_KEY,) + schema_keys(CLIENT), "")
    entries = obj.get(CLIENT_TOP_KEY, [])
    _require_list(entries, CLIENT_TOP_KEY)
    if len(entries) > MAX_CLIENT_ENTRIES:
        raise ConfigError(CLIENT_TOP_KEY, "%d entries; at most %d are supported, remove some"
                          % (len(entries), MAX_CLIENT_ENTRIES))
    normalized_entries = []
    seen = {}
    for index, entry in enumerate(entries):
        path = "%s[%d]" % (CLIENT_TOP_KEY, index)
        _require_dict(entry, path, '{"server_ip": ..., "server_port": ..., "group_ip": ..., "group_port": ...}')
        _reject_unknown_keys(entry, schema_keys(ENTRY), path)
        normalized = {
            "server_ip": parse_unicast_ip(_require_key(entry, "server_ip", path), path + ".server_ip"),
            "server_port": parse_port(_require_key(entry, "server_port", path), path + ".server_port", allow_text=False),
            "group_ip": parse_group_ip(_require_key(entry, "group_ip", path), path + ".group_ip"),
        }
        # A client entry with group port 0 accepts every port of the group
        # (from a server group in capture mode with group port 0).
        protocol, normalized["group_port"] = _protocol_and_group_port(entry, path, None, None)
        _copy_optional(entry, normalized, ENTRY, path + ".", {"protocol": protocol})
        key = _client_entry_key(normalized)
        if key in seen:
            raise ConfigError(path, "server %s, group %s:%d is already listed at %s[%d]; remove the duplicate"
                              % (key[0], key[1], key[2], CLIENT_TOP_KEY, seen[key]))
        seen[key] = index
        normalized_entries.append(normalized)
    return _copy_optional(obj, {CLIENT_TOP_KEY: normalized_entries}, CLIENT, "")


def _object_builder():
    """An ``object_pairs_hook`` that refuses duplicate keys and shares repeated strings.

    Configs list the same member addresses in group after group.  The parser
    makes a new string for every one of them; replacing each array of
    strings by shared copies as soon as its object is complete means a
    1024 x 1024 config never holds a million address strings, and the memory
    of one group's strings is reused for the next group's instead of staying
    fragmented in the process after the parse.
    """
    shared = {}

    def build(pairs):
        result = {}
        for key, value in pairs:
            if key in result:
                raise ConfigError(key, "key appears twice in the same object; keep one")
            if isinstance(value, list) and value and set(map(type, value)) == {str}:
                value = list(map(shared.setdefault, value, value))
            result[key] = value
        return result
    return build


def _parse_json(text, source):
    try:
        return json.loads(text, object_pairs_hook=_object_builder())
    except ConfigError as exc:
        raise ConfigError("%s: %s" % (source, exc.path), exc.problem)
    except RecursionError:
        raise ConfigError(source, "JSON nested too deeply to be a relay config; fix the file or restore "
                                  "the previous one")
    except ValueError as exc:
        # json.JSONDecodeError carries line/column; say where and how to recover.
        line = getattr(exc, "lineno", None)
        where = "line %d column %d" % (exc.lineno, exc.colno) if line else "JSON"
        raise ConfigError("%s: %s" % (source, where),
                          "invalid JSON (%s); fix the syntax or restore the previous file"
                          % getattr(exc, "msg", str(exc)))


def decode_config_bytes(data, source):
    """The text of a config file's bytes; ConfigError unless they are UTF-8 and small enough.

    An editor set to a legacy encoding (latin-1 for a comment, say) must get
    an error that says where and how to fix it, never a traceback.
    """
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(source, "larger than %d bytes, more than any valid config (%d groups of %d members); "
                                  "restore the previous file" % (MAX_CONFIG_BYTES, MAX_GROUPS, MAX_MEMBERS))
    # Notepad and some other editors start a UTF-8 file with a byte order mark.
    start = 3 if data[:3] == b"\xef\xbb\xbf" else 0
    try:
        return data[start:].decode("utf-8")
    except UnicodeDecodeError as exc:
        exc.start += start
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError("%s: line %d" % (source, line),
                          "byte 0x%02x at offset %d is not UTF-8; the file must be UTF-8 JSON: re-save it as "
                          "UTF-8 (for example iconv -f latin1 -t utf-8) or restore the previous file"
                          % (data[exc.start], exc.start))


def read_config_text(path):
    """The text of the config file at ``path``; "" when there is none.

    Raises ConfigError for bytes that are not a config's (see
    ``decode_config_bytes``) and for anything but a regular file, and OSError
    when the file cannot be read.
    """
    try:
        # O_NONBLOCK: a FIFO at this path must not hang the daemon or a CLI.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return ""
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        os.close(fd)
        raise
    if not regular:
        os.close(fd)
        raise ConfigError(path, "not a regular file; replace it with the config file (or delete it for an "
                                "empty config)")
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(MAX_CONFIG_BYTES + 1)
    return decode_config_bytes(data, path)


def _load(text, source, validate, empty):
    if isinstance(text, bytes):
        text = decode_config_bytes(text, source)
    if not text.strip():
        return empty()
    obj = _parse_json(text, source)
    try:
        return validate(obj)
    except ConfigError as exc:
        raise ConfigError("%s: %s" % (source, exc.path) if exc.path else source, exc.problem)


def load_server_config(text, source=SERVER_CONFIG_NAME):
    """Parse and validate server config text; empty or blank text is an empty config."""
    return _load(text, source, validate_server_config, empty_server_config)


def load_client_config(text, source=CLIENT_CONFIG_NAME):
    """Parse and validate client config text; empty or blank text is an empty config."""
    return _load(text, source, validate_client_config, empty_client_config)


def dump_config(cfg):
    """Serialize a config: indent 4, keys in model order, trailing newline."""
    return json.dumps(cfg, indent=4) + "\n"


def server_find_group(cfg, group_ip):
    """Return the group dict with ``group_ip`` (a reference into cfg) or None."""
    for group in cfg.get(SERVER_TOP_KEY, []):
        if group["group_ip"] == group_ip:
            return group
    return None


def _members_arg(members, what):
    """Accept a list of addresses or a comma-separated string (the CLI's -j/-q form)."""
    if isinstance(members, str):
        items = [item.strip() for item in members.split(",")]
        if any(not item for item in items):
            raise ConfigError(what, "%s has an empty item; separate addresses with single commas, "
                                    "for example 192.168.1.1,192.168.1.2" % json.dumps(members))
    elif isinstance(members, (list, tuple)):
        items = list(members)
    else:
        raise ConfigError(what, "expected a list of member addresses, found %s" % _json_type(members))
    result = []
    for item in items:
        parse_unicast_ip(item, what)
        if item not in result:
            result.append(item)
    return result


def _optional_interface(cfg_entry, interface, what):
    """None leaves the interface as it is, "" removes it, a name sets it."""
    if interface is None:
        return
    if interface == "":
        cfg_entry.pop("interface", None)
    else:
        cfg_entry["interface"] = parse_interface(interface, what)


def _edited_members(current, members, member_mode, group_ip):
    if member_mode == "exact":
        return members
    if member_mode == "add":
        return current + [m for m in members if m not in current]
    unknown = [m for m in members if m not in current]
    if unknown:
        raise ConfigError("member_array", "%s not a member of group %s; current members: %s"
                          % (", ".join(unknown), group_ip, ", ".join(current) or "none"))
    return [m for m in current if m not in members]


def _apply_options(entry, place, options, what_prefix=""):
    """Set the optional rows of ``place`` given in ``options`` on ``entry`` (a dict edited in place).

    ``options`` maps keys of ``optional_rows(place)`` to a value from a
    command line or a module: None keeps the current value, a flag's false,
    a choice's default or an interface's "" remove the key (the default
    applies), anything else is parsed by the row's kind.  The result is
    validated by the caller.
    """
    rows = dict((option.key, option) for option in optional_rows(place))
    for key, value in sorted((options or {}).items()):
        option = rows.get(key)
        if option is None:
            raise ConfigError(what_prefix + key, "not a setting here; settings are %s" % ", ".join(sorted(rows)))
        if value is None:
            continue
        value = parse_option_text(option, value, what_prefix + key)
        if value == "" or value is False or value == option.default:
            entry.pop(key, None)
        else:
            entry[key] = value


def server_set_group(cfg, group_ip, server_port, group_port, members, member_mode="exact", interface=None,
                     options=None):
    """Create or update one group; the general form of every server edit.

    ``server_port`` is required when the group is new; ``group_port`` defaults
    to the server port for a new group (0 for a VRRP group).  ``None`` keeps
    the current value.  ``members`` is applied per ``member_mode``: "exact"
    replaces the list, "add" appends missing ones, "remove" drops them
    (unknown ones are an error); ``None`` leaves the members as they are.
    ``options`` sets the group's other settings (``protocol``, ``capture``,
    ...; see ``_apply_options``); ``interface`` is one of them, kept as an
    argument of its own for callers written before the schema.
    """
    if member_mode not in _MEMBER_MODES:
        raise ConfigError("member_mode", "%s is not a member mode; use one of %s"
                          % (json.dumps(member_mode), ", ".join(_MEMBER_MODES)))
    group_ip = parse_group_ip(group_ip, "group_ip")
    new_cfg = validate_server_config(cfg)
    keep_members = members is None
    members = _members_arg(members if members is not None else [], "member_array")
    group = server_find_group(new_cfg, group_ip)
    if group is None:
        if member_mode == "remove":
            raise ConfigError("group_ip", "group %s is not configured; nothing to remove members from" % group_ip)
        if server_port is None:
            raise ConfigError("server_port", "group %s is new; give the server port (-p) to create it" % group_ip)
        group = {"group_ip": group_ip, "server_port": None, "group_port": None, "member_array": []}
        new_cfg[SERVER_TOP_KEY].append(group)
        if group_port is None:
            group_port = 0 if (options or {}).get("protocol") == "vrrp" else server_port
    _optional_interface(group, interface, "interface")
    _apply_options(group, GROUP, options)
    if server_port is not None:
        group["server_port"] = parse_port(server_port, "server_port")
    if group_port is not None:
        # 0 (any port) only where the relay can see any port: VRRP and capture groups.
        any_port = group.get("protocol") == "vrrp" or group.get("capture")
        group["group_port"] = _entry_group_port(group_port, "group_port") if any_port else \
            parse_port(group_port, "group_port")
    if not keep_members:
        group["member_array"] = _edited_members(group["member_array"], members, member_mode, group_ip)
    return validate_server_config(new_cfg)


def server_add(cfg, group_ip, members, server_port=None, group_port=None, interface=None, options=None):
    """``multis_admin -A -m G -j ... -p PORT``: create a group or add members / change ports and settings."""
    return server_set_group(cfg, group_ip, server_port, group_port, members, "add", interface, options)


def server_quit(cfg, group_ip, members):
    """``multis_admin -A -m G -q ...``: members leave the group."""
    group_ip = parse_group_ip(group_ip, "group_ip")
    if server_find_group(cfg, group_ip) is None:
        raise ConfigError("group_ip", "group %s is not configured; see the configured groups with -S" % group_ip)
    return server_set_group(cfg, group_ip, None, None, members, "remove")


def server_delete(cfg, group_ip):
    """``multis_admin -D -m G``: remove a group."""
    group_ip = parse_group_ip(group_ip, "group_ip")
    new_cfg = validate_server_config(cfg)
    if server_find_group(new_cfg, group_ip) is None:
        raise ConfigError("group_ip", "group %s is not configured; see the configured groups with -S" % group_ip)
    new_cfg[SERVER_TOP_KEY] = [g for g in new_cfg[SERVER_TOP_KEY] if g["group_ip"] != group_ip]
    return new_cfg


def _entry_group_port(value, what):
    """A group port as entries hold it: 1..65535, or 0 (VRRP, any port)."""
    if value in (0, "0") and not isinstance(value, bool):
        return 0
    return parse_port(value, what)


def client_find(cfg, server_ip=None, group_port=None, group_ip=None):
    """Entries matching every given criterion (copies)."""
    if group_port is not None:
        group_port = _entry_group_port(group_port, "group_port")
    return [dict(entry) for entry in cfg.get(CLIENT_TOP_KEY, [])
            if (server_ip is None or entry["server_ip"] == server_ip)
            and (group_port is None or entry["group_port"] == group_port)
            and (group_ip is None or entry["group_ip"] == group_ip)]


def client_entry_keeps_source(cfg, entry):
    """Does the client re-deliver ``entry`` of ``cfg`` with the original sender's address (the raw socket)?

    VRRP entries always do; the others when the entry or the client's top level sets preserve_source.
    """
    return bool(entry.get("protocol") == "vrrp" or entry.get("preserve_source") or cfg.get("preserve_source"))


def client_add(cfg, server_ip, group_port, server_port, group_ip, options=None):
    """``multic_admin -A``: add an entry; the same (server_ip, group_ip, group_port) updates it.

    ``options`` sets the entry's other settings (``protocol``,
    ``preserve_source``, ...; see ``_apply_options``); for an existing entry
    None keeps what it has.
    """
    entry = {
        "server_ip": parse_unicast_ip(server_ip, "server_ip"),
        "server_port": parse_port(server_port, "server_port"),
        "group_ip": parse_group_ip(group_ip, "group_ip"),
        # 0 is the port of a VRRP entry; a UDP entry names its port.
        "group_port": _entry_group_port(group_port, "group_port") if (options or {}).get("protocol") == "vrrp"
        else parse_port(group_port, "group_port"),
    }
    new_cfg = validate_client_config(cfg)
    for existing in new_cfg[CLIENT_TOP_KEY]:
        if _client_entry_key(existing) == _client_entry_key(entry):
            existing["server_port"] = entry["server_port"]
            entry = existing
            break
    else:
        new_cfg[CLIENT_TOP_KEY].append(entry)
    _apply_options(entry, ENTRY, options)
    return validate_client_config(new_cfg)


def set_settings(cfg, place, settings):
    """``multis_admin/multic_admin --set KEY=VALUE``: change top-level settings (``place`` SERVER or CLIENT)."""
    if place not in (SERVER, CLIENT):
        raise ConfigError("place", "%s is not a config with top-level settings; use %s or %s"
                          % (json.dumps(place), SERVER, CLIENT))
    new_cfg = (validate_server_config if place == SERVER else validate_client_config)(cfg)
    _apply_options(new_cfg, place, settings)
    return (validate_server_config if place == SERVER else validate_client_config)(new_cfg)


def client_delete(cfg, server_ip, group_port, group_ip=None):
    """``multic_admin -D -i IP -g PORT [-m G]``: remove the matching entries."""
    server_ip = parse_unicast_ip(server_ip, "server_ip")
    group_port = _entry_group_port(group_port, "group_port")
    if group_ip is not None:
        group_ip = parse_group_ip(group_ip, "group_ip")
    new_cfg = validate_client_config(cfg)
    doomed = client_find(new_cfg, server_ip, group_port, group_ip)
    if not doomed:
        wanted = "server %s, group port %d" % (server_ip, group_port)
        if group_ip is not None:
            wanted += ", group %s" % group_ip
        raise ConfigError("multi_server_info_array", "no entry for %s; see the configured entries with -L" % wanted)
    new_cfg[CLIENT_TOP_KEY] = [e for e in new_cfg[CLIENT_TOP_KEY] if e not in doomed]
    return new_cfg


# -- authentication keys ----------------------------------------------------
#
# ``auth_keys.json`` in the config directory, mode 0600, owned by root:
#     {"send_key_id": 2, "keys": [{"id": 1, "secret": "<hex or base64>"}, {"id": 2, ...}]}
# A server tags frames with ``send_key_id``; a client accepts every listed key,
# which is what makes a rotation lossless.  Secrets never appear in an error
# message: only key ids and JSON paths do.

AUTH_KEYS_NAME = "auth_keys.json"
MIN_SECRET_BYTES = 32
MAX_SECRET_BYTES = 1024
MAX_AUTH_KEYS = 16
# The frame's key id is one byte and 0 means "no authentication".
MAX_KEY_ID = 255
_AUTH_TOP_KEYS = ("send_key_id", "keys")
_AUTH_KEY_KEYS = ("id", "secret")
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def _decode_secret(value, path):
    """Hex when the text is only hex digits, else strict base64; at least MIN_SECRET_BYTES bytes."""
    if not isinstance(value, str):
        raise ConfigError(path, "expected a string (hex or base64), found %s" % _json_type(value))
    text = value.strip()
    if text and all(c in _HEX_DIGITS for c in text):
        if len(text) % 2:
            raise ConfigError(path, "hex secret has an odd number of digits; generate one with "
                                    "`openssl rand -hex 32`")
        secret = binascii.unhexlify(text)
    else:
        try:
            secret = base64.b64decode(text.encode("ascii"), validate=True)
        except (ValueError, UnicodeEncodeError):
            raise ConfigError(path, "neither hex nor valid base64; generate a secret with `openssl rand -hex 32`")
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(path, "secret of %d bytes is too short; use at least %d random bytes "
                                "(`openssl rand -hex 32`)" % (len(secret), MIN_SECRET_BYTES))
    if len(secret) > MAX_SECRET_BYTES:
        raise ConfigError(path, "secret of %d bytes is longer than the %d allowed" % (len(secret), MAX_SECRET_BYTES))
    return secret


def _key_id(value, path):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(path, "expected an integer key id 1..%d, found %s" % (MAX_KEY_ID, _json_type(value)))
    if not 1 <= value <= MAX_KEY_ID:
        raise ConfigError(path, "key id %d outside 1..%d (0 means no authentication)" % (value, MAX_KEY_ID))
    return value


def validate_auth_keys(obj):
    """Validate a parsed key file; returns ``{"send_key_id": int, "keys": {id: secret bytes}}``."""
    _require_dict(obj, "", '{"send_key_id": 1, "keys": [{"id": 1, "secret": "..."}]}')
    _reject_unknown_keys(obj, _AUTH_TOP_KEYS, "")
    for key in _AUTH_TOP_KEYS:
        if key not in obj:
            raise ConfigError(key, "missing; a key file needs send_key_id and keys")
    entries = obj["keys"]
    _require_list(entries, "keys")
    if not entries:
        raise ConfigError("keys", "empty; list at least one key, or delete the file to turn authentication off")
    if len(entries) > MAX_AUTH_KEYS:
        raise ConfigError("keys", "%d keys, at most %d are allowed; remove retired keys"
                          % (len(entries), MAX_AUTH_KEYS))
    keys = {}
    for index, entry in enumerate(entries):
        path = "keys[%d]" % index
        _require_dict(entry, path, '{"id": 1, "secret": "..."}')
        _reject_unknown_keys(entry, _AUTH_KEY_KEYS, path)
        key_id = _key_id(_require_key(entry, "id", path), path + ".id")
        secret = _decode_secret(_require_key(entry, "secret", path), path + ".secret")
        if key_id in keys:
            raise ConfigError(path + ".id", "key id %d is listed twice; give every key its own id" % key_id)
        keys[key_id] = secret
    send_key_id = _key_id(obj["send_key_id"], "send_key_id")
    if send_key_id not in keys:
        raise ConfigError("send_key_id", "key id %d is not in keys (ids: %s)"
                          % (send_key_id, ", ".join(str(k) for k in sorted(keys))))
    return {"send_key_id": send_key_id, "keys": keys}


def load_auth_keys(text, source=AUTH_KEYS_NAME):
    """Parse and validate key file text or bytes (an empty file is an error: delete it to turn authentication off)."""
    if isinstance(text, bytes):
        text = decode_config_bytes(text, source)
    if not text.strip():
        raise ConfigError(source, "empty key file; write the keys or delete the file to turn authentication off")
    return _load(text, source, validate_auth_keys, None)


class ConfigLock:
    """Exclusive ``flock`` on ``<conf_dir>/.<kind>_cfg.lock`` held by every writer.

    ``kind`` is "server" or "client".  Blocks until the lock is free.
    """

    def __init__(self, conf_dir, kind):
        if kind not in ("server", "client"):
            raise ValueError("kind must be 'server' or 'client', not %r" % (kind,))
        self.path = os.path.join(conf_dir, ".%s_cfg.lock" % kind)
        self._fd = None

    def __enter__(self):
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def __exit__(self, exc_type, exc, tb):
        fd, self._fd = self._fd, None
        # Closing the descriptor releases the flock.
        os.close(fd)
        return False
