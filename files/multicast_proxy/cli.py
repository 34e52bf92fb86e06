"""Command-line parsing: argv in, an Action out.  Pure code, no I/O.

The option letters, long names and usage text follow the original tool's
manual, so command lines copied from it work verbatim, including ``-help`` and
dashes that a word processor turned into an en dash (``–q``).
"""

from collections import namedtuple

from . import relay_config as config

SERVER = "multis_admin"
CLIENT = "multic_admin"
SERVER_RELOAD = "server_reload_list"
CLIENT_RELOAD = "client_reload_list"
COMMANDS = (SERVER, CLIENT, SERVER_RELOAD, CLIENT_RELOAD)

RELOAD_PROMPT = "please input command[reload or list]#"

SERVER_USAGE = {
    "add": "multis_admin -A -m {multi_ip} -j {ip1,ip2,ip3...} -p port [-g group_port]%(group_options)s",
    "quit": "multis_admin -A -m {multi_ip} -q {ip1,ip2,ip3...}",
    "delete": "multis_admin -D -m {multi_ip}",
    "clear": "multis_admin -C",
    "set": "multis_admin --set KEY=VALUE [--set KEY=VALUE ...]",
    "stats": "multis_admin -P [-m {multi_ip}] [--json]",
    "list": "multis_admin -L -m {multi_ip} [--json]",
    "show": "multis_admin -S [--json]",
    "help": "multis_admin -H",
    "run": "multis_admin -R [--metrics ADDRESS:PORT] [--metrics-textfile FILE.prom] [--metrics-detail group|member]",
    "check_config": "multis_admin --check-config FILE",
    "check_auth": "multis_admin --check-auth FILE",
    "doctor": "multis_admin --doctor [--json]",
}

CLIENT_USAGE = {
    "add": "multic_admin -A -i {ip} -g {groupport} -s {serverport} -m {multi_ip}%(entry_options)s",
    "delete": "multic_admin -D -i {ip} -g {groupport} [-m {multi_ip}]",
    "clear": "multic_admin -C",
    "set": "multic_admin --set KEY=VALUE [--set KEY=VALUE ...]",
    "stats": "multic_admin -P [-i {ip} -g {groupport}] [--json]",
    "list": "multic_admin -L [--json]",
    "help": "multic_admin -H",
    "run": "multic_admin -R [--metrics ADDRESS:PORT] [--metrics-textfile FILE.prom]",
    "check_config": "multic_admin --check-config FILE",
    "check_auth": "multic_admin --check-auth FILE",
    "doctor": "multic_admin --doctor [--json]",
}

SERVER_HELP = """Usage:
multis_admin -A -m {multi_ip} -j {ip1,ip2,ip3...} -p port [-g group_port]%(group_options)s
multis_admin -A -m {multi_ip} -q {ip1,ip2,ip3...}
multis_admin -D -m {multi_ip}
multis_admin -C
multis_admin --set KEY=VALUE [--set KEY=VALUE ...]
multis_admin -P [-m {multi_ip}] [--json]
multis_admin -L -m {multi_ip} [--json]
multis_admin -S [--json]
multis_admin -H
multis_admin -R [--metrics ADDRESS:PORT] [--metrics-textfile FILE.prom] [--metrics-detail group|member]
multis_admin --check-config FILE
multis_admin --check-auth FILE
multis_admin --doctor [--json]
Options:
-A/--add add multicast group
-D/--delete del multicast group
-C/--clear clear multicast group
-P/--stats packets statistic
-S/--show show multicast group
-L/--list list multicast group member
-R/--run run the multicast server to transmit packages
-H/--help help info
-j/--join vm join multicast group
-q/--quit vm quit multicast group
-m/--multiip multicast ip
-p/--port server port
-g/--gport multicast group port (default: the server port)
%(group_option_help)s--set KEY=VALUE change a setting of the whole config (KEY=  removes it): %(server_settings)s
--json machine-readable output of -P, -L, -S
--metrics ADDRESS:PORT with -R: serve Prometheus metrics at http://ADDRESS:PORT/metrics (a bare PORT: 127.0.0.1)
--metrics-textfile FILE.prom with -R: write them to FILE.prom every 15 s (node_exporter textfile collector)
--metrics-detail group|member with -R: member adds a series per member (default: group sums)
--check-config FILE validate a server config file
--check-auth FILE validate an authentication key file (auth_keys.json)
--doctor check this host for what breaks multicast delivery
Files are in $MULTICAST_CONF_DIR (default /etc/multicast).
"""

CLIENT_HELP = """Usage:
multic_admin -A -i {ip} -g {groupport} -s {serverport} -m {multi_ip}%(entry_options)s
multic_admin -D -i {ip} -g {groupport} [-m {multi_ip}]
multic_admin -C
multic_admin --set KEY=VALUE [--set KEY=VALUE ...]
multic_admin -P [-i {ip} -g {groupport}] [--json]
multic_admin -L [--json]
multic_admin -H
multic_admin -R [--metrics ADDRESS:PORT] [--metrics-textfile FILE.prom]
multic_admin --check-config FILE
multic_admin --check-auth FILE
multic_admin --doctor [--json]
Options:
-A/--add add multicast server ip and port
-D/--delete del multicast server ip and port
-C/--clear clear multicast server information
-P/--stats recv packets statistic
-L/--list list all multicast server ip and port
-R/--run run the multicast client to deliver packages
-H/--help help info
-i/--ip multicast server ip, the ip of multicast provider
-g/--gport udp port, the multicast port
-s/--sport server port
-m/--multi_ip multicast ip
%(entry_option_help)s--set KEY=VALUE change a setting of the whole config (KEY=  removes it): %(client_settings)s
--json machine-readable output of -P, -L
--metrics ADDRESS:PORT with -R: serve Prometheus metrics at http://ADDRESS:PORT/metrics (a bare PORT: 127.0.0.1)
--metrics-textfile FILE.prom with -R: write them to FILE.prom every 15 s (node_exporter textfile collector)
--check-config FILE validate a client config file
--check-auth FILE validate an authentication key file (auth_keys.json)
--doctor check this host for what breaks multicast delivery
Files are in $MULTICAST_CONF_DIR (default /etc/multicast).
"""


def _flagged_rows(place):
    """(option, long flag name) of the optional schema rows of ``place`` that have a long flag of -A."""
    for option in config.optional_rows(place):
        name = config.cli_flag_name(option)
        if name is not None:
            yield option, name


def _option_flags(place):
    """The long flags of the optional schema rows of ``place``: name -> (key, takes a value, fixed value).

    A flag row ``--capture`` also gets ``--no-capture``; every other row takes
    a value (``--protocol vrrp``).
    """
    flags = {}
    for option, name in _flagged_rows(place):
        if option.kind == "flag":
            flags[name] = (option.key, False, True)
            flags["no-" + name] = (option.key, False, False)
        else:
            flags[name] = (option.key, True, None)
    return flags


_METAVARS = {"interface": "NAME", "join_interfaces": "all|route|IFACE,..."}


def _option_usage(place):
    """`` [--protocol udp|vrrp] [--capture]``: the optional flags of a usage line."""
    parts = []
    for option, name in _flagged_rows(place):
        if option.kind == "flag":
            parts.append("[--%s]" % name)
        elif option.kind == "choice":
            parts.append("[--%s %s]" % (name, "|".join(option.choices)))
        else:
            parts.append("[--%s %s]" % (name, _METAVARS.get(option.kind, option.kind.upper())))
    return "".join(" " + part for part in parts)


def _option_help(place):
    lines = []
    for option, name in _flagged_rows(place):
        if option.kind == "flag":
            lines.append("--%s/--no-%s %s (default: off)\n" % (name, name, option.help))
        elif option.kind == "choice":
            lines.append("--%s {%s} %s (default: %s)\n" % (name, ",".join(option.choices), option.help,
                                                           option.default))
        else:
            lines.append("--%s %s %s (default: %s)\n" % (name, _METAVARS.get(option.kind, option.kind.upper()),
                                                         option.help, option.default))
    return "".join(lines)


def _settings_list(place):
    return ", ".join("%s (%s)" % (option.key, option.help) for option in config.optional_rows(place))


_TEMPLATE_VALUES = {
    "group_options": _option_usage(config.GROUP),
    "entry_options": _option_usage(config.ENTRY),
    "group_option_help": _option_help(config.GROUP),
    "entry_option_help": _option_help(config.ENTRY),
    "server_settings": _settings_list(config.SERVER),
    "client_settings": _settings_list(config.CLIENT),
}
SERVER_USAGE = dict((command, line % _TEMPLATE_VALUES) for command, line in SERVER_USAGE.items())
CLIENT_USAGE = dict((command, line % _TEMPLATE_VALUES) for command, line in CLIENT_USAGE.items())
SERVER_HELP = SERVER_HELP % _TEMPLATE_VALUES
CLIENT_HELP = CLIENT_HELP % _TEMPLATE_VALUES
_SERVER_OPTION_FLAGS = _option_flags(config.GROUP)
_CLIENT_OPTION_FLAGS = _option_flags(config.ENTRY)

RELOAD_HELP = """Usage:
{0}            prompt: please input command[reload or list]#
{0} reload     re-read the config file and apply it to the running daemon
{0} list       show the running daemon's packet statistics
"""

# ``options``: the schema options of -A ({"protocol": "vrrp", "capture": True});
# ``settings``: the --set pairs ({"interface": "eth1"}).  None when not given.
Action = namedtuple("Action", "program command group_ip members server_ip port group_port "
                              "server_port json file options settings")
Action.__new__.__defaults__ = (None,) * 8 + (False, None, None, None)


class UsageError(Exception):
    """Bad command line; ``usage`` is the line the user should follow."""

    def __init__(self, message, usage):
        self.usage = usage
        super(UsageError, self).__init__(message)


# (short letter, long name, action command or option field, takes a value)
_SERVER_FLAGS = (
    ("A", "add", "add", False), ("D", "delete", "delete", False), ("C", "clear", "clear", False),
    ("P", "stats", "stats", False), ("S", "show", "show", False), ("L", "list", "list", False),
    ("R", "run", "run", False), ("H", "help", "help", False),
    ("j", "join", "join", True), ("q", "quit", "quit", True), ("m", "multiip", "group_ip", True),
    ("p", "port", "port", True), ("g", "gport", "group_port", True),
)
_CLIENT_FLAGS = (
    ("A", "add", "add", False), ("D", "delete", "delete", False), ("C", "clear", "clear", False),
    ("P", "stats", "stats", False), ("L", "list", "list", False),
    ("R", "run", "run", False), ("H", "help", "help", False),
    ("i", "ip", "server_ip", True), ("g", "gport", "group_port", True), ("s", "sport", "server_port", True),
    ("m", "multi_ip", "group_ip", True),
)
_EXTRA_LONG = (("json", "json", False), ("check-config", "file", True), ("check-auth", "auth_file", True),
               ("doctor", "doctor", False), ("set", "set", True),
               ("metrics", "metrics_listen", True), ("metrics-textfile", "metrics_textfile", True),
               ("metrics-detail", "metrics_detail", True))
# -R's flags: settings of the config file that they override for this run (field = schema key).
_RUN_SETTINGS = {"server": ("metrics_listen", "metrics_textfile", "metrics_detail"),
                 "client": ("metrics_listen", "metrics_textfile")}
# Options that are a command of their own and name the file it reads.
_FILE_COMMANDS = {"file": "check_config", "auth_file": "check_auth"}
_COMMAND_WORDS = ("add", "delete", "clear", "stats", "show", "list", "run", "help", "doctor", "set")
# Field names of the schema options in the tokenizer's output.
_OPTION_PREFIX = "option:"

# For each command: (options it needs, options it may take).  -A on the
# server is special-cased: it is "add" or "quit" depending on -j / -q.
_SERVER_RULES = {
    "add": (("group_ip",), ("join", "quit", "port", "group_port")),
    "quit": (("group_ip", "quit"), ()),
    "delete": (("group_ip",), ()),
    "clear": ((), ()),
    "set": ((), ()),
    "stats": ((), ("group_ip", "json")),
    "show": ((), ("json",)),
    "list": (("group_ip",), ("json",)),
    "run": ((), _RUN_SETTINGS["server"]),
    "help": ((), ()),
    "check_config": (("file",), ()),
    "check_auth": (("file",), ()),
    "doctor": ((), ("json",)),
}
_CLIENT_RULES = {
    "add": (("server_ip", "group_port", "server_port", "group_ip"), ()),
    "delete": (("server_ip", "group_port"), ("group_ip",)),
    "clear": ((), ()),
    "set": ((), ()),
    "stats": ((), ("server_ip", "group_port", "json")),
    "list": ((), ("json",)),
    "run": ((), _RUN_SETTINGS["client"]),
    "help": ((), ()),
    "check_config": (("file",), ()),
    "check_auth": (("file",), ()),
    "doctor": ((), ("json",)),
}

_DASHES = ("\u2013", "\u2014", "\u2212")


def _normalize_dashes(arg):
    """Turn leading en/em dashes or minus signs (pasted from documents) into '-'."""
    count = 0
    while count < len(arg) and (arg[count] == "-" or arg[count] in _DASHES):
        count += 1
    return "-" * count + arg[count:] if count else arg


def _flag_label(flags, field):
    for short, long_name, target, _takes in flags:
        if target == field:
            return "-%s/--%s" % (short, long_name)
    for long_name, target, _takes in _EXTRA_LONG:
        if target == field:
            return "--" + long_name
    return field


def _tokenize(program, argv, flags, usage_all, option_flags=None):
    """Yield (field, value, label) for every option in argv; schema options as ("option:<key>", value, label)."""
    option_flags = option_flags or {}
    short_map = dict((f[0], f) for f in flags)
    long_map = dict((f[1], f) for f in flags)
    extra = dict((f[0], f) for f in _EXTRA_LONG)
    args = [_normalize_dashes(a) for a in argv]
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        value = None
        if arg in ("-help", "--help", "-h"):
            yield "help", None, arg
            continue
        if arg.startswith("--") and len(arg) > 2:
            name, eq, inline = arg[2:].partition("=")
            fixed = None
            if name in long_map:
                _short, _long, field, takes = long_map[name]
            elif name in extra:
                _long, field, takes = extra[name]
            elif name in option_flags:
                key, takes, fixed = option_flags[name]
                field = _OPTION_PREFIX + key
            else:
                raise UsageError("unknown option %s" % arg, usage_all)
            if takes:
                if eq:
                    value = inline
                elif index < len(args) and not args[index].startswith("-"):
                    value = args[index]
                    index += 1
                else:
                    raise UsageError("%s needs a value" % arg, usage_all)
            elif eq:
                raise UsageError("%s takes no value" % ("--" + name), usage_all)
            else:
                value = fixed
            yield field, value, "--" + name
        elif arg.startswith("-") and len(arg) > 1:
            letters = arg[1:]
            while letters:
                letter, letters = letters[0], letters[1:]
                if letter not in short_map:
                    raise UsageError("unknown option -%s" % letter, usage_all)
                _short, _long, field, takes = short_map[letter]
                if takes:
                    if letters:
                        value, letters = letters, ""
                    elif index < len(args) and not args[index].startswith("-"):
                        value = args[index]
                        index += 1
                    else:
                        raise UsageError("-%s needs a value" % letter, usage_all)
                yield field, value, "-" + letter
        else:
            raise UsageError("unexpected argument %r (options start with -)" % arg, usage_all)


def parse_admin(program, argv):
    """Parse the arguments of multis_admin / multic_admin into an Action."""
    is_server = program == SERVER
    flags = _SERVER_FLAGS if is_server else _CLIENT_FLAGS
    rules = _SERVER_RULES if is_server else _CLIENT_RULES
    usages = SERVER_USAGE if is_server else CLIENT_USAGE
    # When the command itself is unclear, show every usage line (as -H does).
    usage_all = "\n       ".join(usages.values())
    command = None
    command_label = None
    values = {}
    labels = {}
    options = {}
    settings = {}
    option_flags = _SERVER_OPTION_FLAGS if is_server else _CLIENT_OPTION_FLAGS
    place = config.SERVER if is_server else config.CLIENT
    for field, value, label in _tokenize(program, argv, flags, usage_all, option_flags):
        if field.startswith(_OPTION_PREFIX):
            key = field[len(_OPTION_PREFIX):]
            if key in options:
                raise UsageError("%s is given twice (or with its --no- form)" % label, usage_all)
            options[key] = value
            labels[field] = label
            continue
        if field == "set":
            key, eq, setting = value.partition("=")
            known = config.schema_keys(place)
            if not eq or key not in known:
                raise UsageError("--set %s: give KEY=VALUE with KEY one of %s (KEY= removes the setting)"
                                 % (value, ", ".join(known)), usages["set"])
            if key in settings:
                raise UsageError("--set %s= is given twice" % key, usages["set"])
            settings[key] = setting
            labels["set"] = label
        if field in _COMMAND_WORDS or field in _FILE_COMMANDS:
            word = _FILE_COMMANDS.get(field, field)
            if command is not None and command != word:
                raise UsageError("%s and %s cannot be used together; give one command" % (command_label, label),
                                 usage_all)
            command, command_label = word, label
            if field == "set":
                continue
            if field in _FILE_COMMANDS:
                values["file"] = value
            continue
        if field in values:
            raise UsageError("%s is given twice" % label, usage_all)
        values[field] = True if field == "json" else value
        labels[field] = label
    if command is None:
        if not argv:
            raise UsageError("no command given", usage_all)
        raise UsageError("no command given (one of -A, -D, -C, -P, %s-L, -R, -H)" % ("-S, " if is_server else ""),
                         usage_all)
    if command == "help":
        return Action(program, "help")
    if is_server and command == "add" and "quit" in values:
        if "join" in values or "port" in values or "group_port" in values or options:
            raise UsageError("-q/--quit cannot be combined with -j, -p, -g or a group setting", usages["quit"])
        command = "quit"
    if options and command != "add":
        first = sorted(labels[_OPTION_PREFIX + key] for key in options)[0]
        raise UsageError("%s is not used with %s (group settings go with -A)" % (first, command_label),
                         usages[command])
    required, optional = rules[command]
    usage = usages[command]
    for field in required:
        if field not in values:
            raise UsageError("%s needs %s" % (command_label, _flag_label(flags, field)), usage)
    for field in values:
        if field not in required and field not in optional and field != "file":
            raise UsageError("%s is not used with %s" % (labels[field], command_label), usage)
    if (is_server and command == "add" and "join" not in values and "port" not in values
            and "group_port" not in values and not options):
        raise UsageError("-A needs -j to add members, -q to remove them, -p/-g to change ports, or a group setting "
                         "(%s)" % ", ".join("--" + name for name in sorted(option_flags)), usage)
    if not is_server and command == "stats" and ("server_ip" in values) != ("group_port" in values):
        raise UsageError("-P takes -i and -g together, or neither", usage)
    if command == "run":
        settings = _run_settings(place, values, labels, usage)
    return Action(program, command, group_ip=values.get("group_ip"),
                  members=values.get("join") or values.get("quit"),
                  server_ip=values.get("server_ip"), port=values.get("port"),
                  group_port=values.get("group_port"), server_port=values.get("server_port"),
                  json=bool(values.get("json")), file=values.get("file"), options=options or None,
                  settings=settings or None)


def _run_settings(place, values, labels, usage):
    """The -R flags as schema values ({"metrics_listen": "127.0.0.1:9471"}); UsageError for a bad one."""
    rows = dict((option.key, option) for option in config.optional_rows(place))
    settings = {}
    for key in _RUN_SETTINGS[place]:
        if key not in values:
            continue
        try:
            value = config.parse_option_text(rows[key], values[key], labels[key])
        except config.ConfigError as exc:
            raise UsageError(str(exc), usage)
        if value == "":
            raise UsageError("%s needs a value (leave the flag out to use the config file's setting)" % labels[key],
                             usage)
        settings[key] = value
    return settings


def parse_reload_list(program, argv):
    """``server_reload_list`` / ``client_reload_list``: "prompt", "reload", "list" or "help"."""
    usage = "%s [reload|list]" % program
    args = [_normalize_dashes(a) for a in argv]
    if not args:
        return Action(program, "prompt")
    if len(args) == 1 and args[0] in ("reload", "list"):
        return Action(program, args[0])
    if len(args) == 1 and args[0] in ("-H", "-h", "-help", "--help"):
        return Action(program, "help")
    raise UsageError("expected 'reload' or 'list', got %s" % " ".join(repr(a) for a in argv), usage)


def parse(program, argv):
    """Dispatch on the program name; raises UsageError."""
    if program in (SERVER, CLIENT):
        return parse_admin(program, argv)
    if program in (SERVER_RELOAD, CLIENT_RELOAD):
        return parse_reload_list(program, argv)
    raise UsageError("unknown command %r" % program,
                     "python3 -m multicast_proxy {%s} [flags...]" % ",".join(COMMANDS))


def help_text(program):
    if program == SERVER:
        return SERVER_HELP
    if program == CLIENT:
        return CLIENT_HELP
    return RELOAD_HELP.format(program)
