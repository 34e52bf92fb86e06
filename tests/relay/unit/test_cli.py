"""Command-line parser: every command line of the seed manual, verbatim, and bad flags."""

import shlex

import pytest

from multicast_proxy import cli

# Command lines as the seed manual prints them (placeholders filled with real
# values where it has them), including its en dash in "–q".
SEED_LINES = [
    ("multis_admin -help", "help"),
    ("multis_admin -A -m 224.1.2.3 -j 192.168.1.1,192.168.1.2,192.168.1.3 -p 65535", "add"),
    ("multis_admin -A -m 224.1.2.3 -q 192.168.1.1,192.168.1.2", "quit"),
    ("multis_admin -D -m 224.1.2.3", "delete"),
    ("multis_admin -C", "clear"),
    ("multis_admin -P -m 224.1.2.3", "stats"),
    ("multis_admin -L -m 224.1.2.3", "list"),
    ("multis_admin -S", "show"),
    ("multis_admin -H", "help"),
    ("multis_admin -R", "run"),
    ("multis_admin -P", "stats"),
    ("multis_admin -A -m 224.1.2.3 \u2013q 192.168.1.1", "quit"),
    ("multic_admin -help", "help"),
    ("multic_admin -A -i 192.168.0.10 -g 65535 -s 65535 -m 224.1.2.3", "add"),
    ("multic_admin -D -i 192.168.0.10 -g 65535", "delete"),
    ("multic_admin -C", "clear"),
    ("multic_admin -P -i 192.168.0.10 -g 65535", "stats"),
    ("multic_admin -L", "list"),
    ("multic_admin -H", "help"),
    ("multic_admin -R", "run"),
    ("server_reload_list", "prompt"),
    ("client_reload_list", "prompt"),
]


def parse_line(line):
    words = shlex.split(line)
    return cli.parse(words[0], words[1:])


@pytest.mark.parametrize("line, command", SEED_LINES)
def test_seed_command_line(line, command):
    assert parse_line(line).command == command


def test_seed_add_line_values():
    action = parse_line("multis_admin -A -m 224.1.2.3 -j 192.168.1.1,192.168.1.2,192.168.1.3 -p 65535")
    assert (action.group_ip, action.members, action.port, action.group_port) == (
        "224.1.2.3", "192.168.1.1,192.168.1.2,192.168.1.3", "65535", None)


def test_seed_quit_line_with_en_dash():
    action = parse_line("multis_admin -A -m 224.1.2.3 \u2013q 192.168.1.1")
    assert (action.command, action.group_ip, action.members) == ("quit", "224.1.2.3", "192.168.1.1")


def test_client_add_values():
    action = parse_line("multic_admin -A -i 10.0.0.1 -g 5000 -s 6000 -m 239.1.1.1")
    assert (action.server_ip, action.group_port, action.server_port, action.group_ip) == (
        "10.0.0.1", "5000", "6000", "239.1.1.1")


@pytest.mark.parametrize("line, expected", [
    ("multis_admin --add --multiip 224.1.2.3 --join 10.0.0.2 --port 7000", ("add", "224.1.2.3", "7000")),
    ("multis_admin --add --multiip=224.1.2.3 --join=10.0.0.2 --port=7000 --gport 7001", ("add", "224.1.2.3", "7000")),
    ("multis_admin -A -m224.1.2.3 -j10.0.0.2 -p7000", ("add", "224.1.2.3", "7000")),
    ("multis_admin \u2014A \u2014m 224.1.2.3 \u2014j 10.0.0.2 \u2014p 7000", ("add", "224.1.2.3", "7000")),
    ("multis_admin -A -m 224.1.2.3 -p 7000", ("add", "224.1.2.3", "7000")),
    ("multis_admin --stats --json", ("stats", None, None)),
    ("multis_admin --show --json", ("show", None, None)),
    ("multis_admin --check-config /tmp/x.json", ("check_config", None, None)),
    ("multis_admin --help", ("help", None, None)),
    ("multis_admin --doctor", ("doctor", None, None)),
    ("multis_admin --doctor --json", ("doctor", None, None)),
])
def test_long_and_variant_forms(line, expected):
    action = parse_line(line)
    assert (action.command, action.group_ip, action.port) == expected


def test_client_long_options():
    action = parse_line("multic_admin --add --ip 10.0.0.1 --gport 5000 --sport 6000 --multi_ip 239.1.1.1")
    assert (action.command, action.server_ip, action.group_port, action.server_port, action.group_ip) == (
        "add", "10.0.0.1", "5000", "6000", "239.1.1.1")
    assert parse_line("multic_admin -L --json").json is True
    assert parse_line("multic_admin --check-config f.json").file == "f.json"


def test_reload_list_arguments():
    assert parse_line("server_reload_list reload").command == "reload"
    assert parse_line("client_reload_list list").command == "list"
    assert parse_line("client_reload_list -help").command == "help"


@pytest.mark.parametrize("line, message, usage", [
    ("multis_admin", "no command given", "multis_admin -A -m {multi_ip}"),
    ("multis_admin -X", "unknown option -X", "multis_admin -A -m {multi_ip}"),
    ("multis_admin --bogus", "unknown option --bogus", "multis_admin -A -m {multi_ip}"),
    ("multis_admin -A -D -m 224.1.2.3", "cannot be used together", "multis_admin -A -m {multi_ip}"),
    ("multis_admin -A -j 10.0.0.2 -p 1", "-A needs -m/--multiip", "multis_admin -A -m {multi_ip} -j"),
    ("multis_admin -A -m 224.1.2.3", "needs -j", "multis_admin -A -m {multi_ip} -j"),
    ("multis_admin -A -m 224.1.2.3 -q 10.0.0.2 -p 1", "cannot be combined", "-q {ip1,ip2,ip3...}"),
    ("multis_admin -A -m 224.1.2.3 -q 10.0.0.2 -j 10.0.0.3", "cannot be combined", "-q {ip1,ip2,ip3...}"),
    ("multis_admin -D", "-D needs -m/--multiip", "multis_admin -D -m {multi_ip}"),
    ("multis_admin -L", "-L needs -m/--multiip", "multis_admin -L -m {multi_ip}"),
    ("multis_admin -S -m 224.1.2.3", "-m is not used with -S", "multis_admin -S"),
    ("multis_admin -C --json", "--json is not used with -C", "multis_admin -C"),
    ("multis_admin -A -m 224.1.2.3 -m 224.1.2.4 -j 10.0.0.2 -p 1", "-m is given twice", "multis_admin -A -m {multi_ip}"),
    ("multis_admin -A -m", "-m needs a value", "multis_admin -A -m {multi_ip}"),
    ("multis_admin -A -m -j 10.0.0.2", "-m needs a value", "multis_admin -A -m {multi_ip}"),
    ("multis_admin -R extra", "unexpected argument", "multis_admin -A -m {multi_ip}"),
    ("multis_admin --run=1", "--run takes no value", "multis_admin -A -m {multi_ip}"),
    ("multis_admin -i 10.0.0.1 -S", "unknown option -i", "multis_admin -A -m {multi_ip}"),
    ("multic_admin -A -i 10.0.0.1 -g 1 -s 1", "-A needs -m/--multi_ip", "multic_admin -A -i {ip}"),
    ("multic_admin -D -i 10.0.0.1", "-D needs -g/--gport", "multic_admin -D -i {ip}"),
    ("multic_admin -P -i 10.0.0.1", "-i and -g together", "multic_admin -P"),
    ("multic_admin -S", "unknown option -S", "multic_admin -A -i {ip}"),
    ("multic_admin -L -m 224.1.2.3", "-m is not used with -L", "multic_admin -L"),
    ("multic_admin -A -q 10.0.0.1", "unknown option -q", "multic_admin -A -i {ip}"),
    ("multic_admin --doctor -i 10.0.0.1", "-i is not used with --doctor", "multic_admin --doctor"),
    ("multic_admin --doctor -L", "cannot be used together", "multic_admin -A -i {ip}"),
    ("server_reload_list restart", "expected 'reload' or 'list'", "server_reload_list [reload|list]"),
    ("server_reload_list reload list", "expected 'reload' or 'list'", "server_reload_list [reload|list]"),
])
def test_usage_errors(line, message, usage):
    with pytest.raises(cli.UsageError) as info:
        parse_line(line)
    assert message in str(info.value)
    assert usage in info.value.usage


def test_unknown_program():
    with pytest.raises(cli.UsageError) as info:
        cli.parse("multix_admin", [])
    assert "multis_admin" in info.value.usage


def test_help_texts_list_every_seed_option():
    for option in ("-A/--add", "-D/--delete", "-C/--clear", "-P/--stats", "-S/--show", "-L/--list", "-R/--run",
                   "-H/--help", "-j/--join", "-q/--quit", "-m/--multiip", "-p/--port"):
        assert option in cli.help_text("multis_admin")
    for option in ("-i/--ip", "-g/--gport", "-s/--sport", "-m/--multi_ip"):
        assert option in cli.help_text("multic_admin")
    assert cli.RELOAD_PROMPT in cli.help_text("server_reload_list")
