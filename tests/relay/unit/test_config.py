"""The config model: every rule, and every error names the JSON path."""

import json
import os
import threading

import pytest

from multicast_proxy import relay_config as c

SEED_SERVER = """{
    "multi_group_array": [
        {
            "group_ip": "224.1.2.3",
            "server_port": 65535,
            "group_port": 65535,
            "member_array": [
                "192.168.1.1",
                "192.168.1.2",
                "192.168.1.3"
            ]
        }
    ]
}
"""


def group(**overrides):
    base = {"group_ip": "224.1.2.3", "server_port": 65535, "group_port": 65535, "member_array": ["10.0.0.2"]}
    base.update(overrides)
    return base


def server(*groups, **top):
    cfg = {"multi_group_array": list(groups)}
    cfg.update(top)
    return cfg


def entry(**overrides):
    base = {"server_ip": "10.0.0.1", "server_port": 65535, "group_ip": "224.1.2.3", "group_port": 65535}
    base.update(overrides)
    return base


def client(*entries, **top):
    cfg = {"multi_server_info_array": list(entries)}
    cfg.update(top)
    return cfg


def error_of(func, *args, **kwargs):
    with pytest.raises(c.ConfigError) as info:
        func(*args, **kwargs)
    return info.value


def test_seed_document_file_loads_and_dumps_identically():
    cfg = c.load_server_config(SEED_SERVER)
    assert cfg["multi_group_array"][0]["member_array"] == ["192.168.1.1", "192.168.1.2", "192.168.1.3"]
    assert c.dump_config(cfg) == SEED_SERVER


def test_blank_text_is_an_empty_config():
    assert c.load_server_config("") == c.empty_server_config() == {"multi_group_array": []}
    assert c.load_client_config(" \n\t") == c.empty_client_config() == {"multi_server_info_array": []}


def test_group_port_defaults_to_server_port_and_key_order_is_stable():
    cfg = c.validate_server_config(server({"member_array": [], "interface": "eth1", "server_port": 7000,
                                           "group_ip": "239.0.0.1"}))
    assert list(cfg["multi_group_array"][0]) == ["group_ip", "server_port", "group_port", "member_array",
                                                 "interface"]
    assert cfg["multi_group_array"][0]["group_port"] == 7000


def test_client_key_order():
    cfg = c.validate_client_config(client({"group_port": 1, "group_ip": "239.0.0.1", "server_port": 2,
                                           "server_ip": "10.0.0.1"}))
    assert list(cfg["multi_server_info_array"][0]) == ["server_ip", "server_port", "group_ip", "group_port"]


@pytest.mark.parametrize("cfg, path, words", [
    (server(group(group_ip="192.168.1.1")), "multi_group_array[0].group_ip", "224.0.0.0/4"),
    (server(group(group_ip="240.0.0.1")), "multi_group_array[0].group_ip", "multicast"),
    (server(group(group_ip="224.1.2")), "multi_group_array[0].group_ip", "four numbers"),
    (server(group(group_ip="224.01.2.3")), "multi_group_array[0].group_ip", "four numbers"),
    (server(group(group_ip=3758096385)), "multi_group_array[0].group_ip", "not an IPv4"),
    (server(group(server_port=0)), "multi_group_array[0].server_port", "1 to 65535"),
    (server(group(server_port=65536)), "multi_group_array[0].server_port", "1 to 65535"),
    (server(group(server_port="65535")), "multi_group_array[0].server_port", "integer"),
    (server(group(server_port=True)), "multi_group_array[0].server_port", "integer"),
    (server(group(group_port=1.5)), "multi_group_array[0].group_port", "integer"),
    (server(group(member_array=["0.0.0.0"])), "multi_group_array[0].member_array[0]", "0.0.0.0"),
    (server(group(member_array=["10.0.0.2", "224.0.0.1"])), "multi_group_array[0].member_array[1]", "multicast"),
    (server(group(member_array=["255.255.255.255"])), "multi_group_array[0].member_array[0]", "broadcast"),
    (server(group(member_array=["10.0.0.2", "10.0.0.2"])), "multi_group_array[0].member_array[1]", "twice"),
    (server(group(member_array="10.0.0.2")), "multi_group_array[0].member_array", "array"),
    (server(group(), group()), "multi_group_array[1].group_ip", "already defined"),
    (server(group(extra=1)), "multi_group_array[0].extra", "unknown key"),
    (server(group(interface="eth/0")), "multi_group_array[0].interface", "interface name"),
    (server(group(interface="a" * 16)), "multi_group_array[0].interface", "interface name"),
    (server(group(), interface=""), "interface", "interface name"),
    ({"multi_group_aray": []}, "multi_group_aray", "unknown key"),
    ({"multi_group_array": {}}, "multi_group_array", "array"),
    ([], "(top level)", "object"),
    (server("224.1.2.3"), "multi_group_array[0]", "object"),
])
def test_server_rules(cfg, path, words):
    err = error_of(c.validate_server_config, cfg)
    assert err.path == path
    assert words in err.problem
    assert str(err).startswith(path + ": ")


def test_missing_group_keys_are_named():
    for key in ("group_ip", "server_port", "member_array"):
        bad = group()
        del bad[key]
        err = error_of(c.validate_server_config, server(bad))
        assert err.path == "multi_group_array[0].%s" % key
        assert "missing" in err.problem


@pytest.mark.parametrize("cfg, path, words", [
    (client(entry(server_ip="224.0.0.1")), "multi_server_info_array[0].server_ip", "multicast"),
    (client(entry(server_ip="10.0.0")), "multi_server_info_array[0].server_ip", "not an IPv4"),
    (client(entry(group_ip="10.0.0.9")), "multi_server_info_array[0].group_ip", "multicast"),
    (client(entry(server_port=-1)), "multi_server_info_array[0].server_port", "1 to 65535"),
    (client(entry(group_port=None)), "multi_server_info_array[0].group_port", "1 to 65535"),
    (client(entry(), entry(server_port=1)), "multi_server_info_array[1]", "already listed"),
    (client(entry(member_array=[])), "multi_server_info_array[0].member_array", "unknown key"),
    (client(entry(), bogus=1), "bogus", "unknown key"),
])
def test_client_rules(cfg, path, words):
    err = error_of(c.validate_client_config, cfg)
    assert err.path == path
    assert words in err.problem


def test_same_server_and_group_on_another_port_is_not_a_duplicate():
    cfg = c.validate_client_config(client(entry(), entry(group_port=1000)))
    assert len(cfg["multi_server_info_array"]) == 2


def test_limits():
    members = ["10.%d.%d.1" % (i // 256, i % 256) for i in range(c.MAX_MEMBERS + 1)]
    assert len(c.validate_server_config(server(group(member_array=members[:-1])))["multi_group_array"][0]
               ["member_array"]) == c.MAX_MEMBERS
    err = error_of(c.validate_server_config, server(group(member_array=members)))
    assert err.path == "multi_group_array[0].member_array" and "1024" in err.problem
    groups = [group(group_ip="239.0.%d.%d" % (i // 256, i % 256)) for i in range(c.MAX_GROUPS + 1)]
    assert len(c.validate_server_config(server(*groups[:-1]))["multi_group_array"]) == c.MAX_GROUPS
    err = error_of(c.validate_server_config, server(*groups))
    assert err.path == "multi_group_array"
    entries = [entry(group_port=1 + i) for i in range(c.MAX_CLIENT_ENTRIES + 1)]
    assert len(c.validate_client_config(client(*entries[:-1]))["multi_server_info_array"]) == 4096
    assert error_of(c.validate_client_config, client(*entries)).path == "multi_server_info_array"


def test_load_names_the_file_and_the_json_error_position():
    err = error_of(c.load_server_config, '{"multi_group_array": [\n  {"group_ip": }]}', "/etc/x.json")
    assert str(err).startswith("/etc/x.json: line 2 column ")
    assert "invalid JSON" in str(err) and "restore" in str(err)
    err = error_of(c.load_client_config, json.dumps(client(entry(server_port=0))))
    assert str(err).startswith("client_cfg.json.txt: multi_server_info_array[0].server_port: ")


def test_duplicate_json_keys_are_refused():
    err = error_of(c.load_server_config, '{"multi_group_array": [], "multi_group_array": []}')
    assert "twice" in str(err) and "server_cfg.json.txt" in str(err)


def test_validate_returns_a_copy():
    original = server(group())
    cfg = c.validate_server_config(original)
    cfg["multi_group_array"][0]["member_array"].append("10.0.0.3")
    assert original["multi_group_array"][0]["member_array"] == ["10.0.0.2"]


def test_server_add_creates_group_with_default_group_port():
    cfg = c.server_add(c.empty_server_config(), "224.1.2.3", "192.168.1.1,192.168.1.2", server_port="65535")
    assert cfg == server({"group_ip": "224.1.2.3", "server_port": 65535, "group_port": 65535,
                          "member_array": ["192.168.1.1", "192.168.1.2"]})


def test_server_add_requires_port_for_a_new_group():
    err = error_of(c.server_add, c.empty_server_config(), "224.1.2.3", ["10.0.0.2"])
    assert err.path == "server_port" and "-p" in err.problem


def test_server_add_appends_members_and_changes_ports_without_mutating_input():
    before = c.validate_server_config(server(group()))
    snapshot = json.dumps(before)
    after = c.server_add(before, "224.1.2.3", ["10.0.0.3", "10.0.0.2"], server_port=7000, group_port=7001)
    assert json.dumps(before) == snapshot
    assert after["multi_group_array"][0]["member_array"] == ["10.0.0.2", "10.0.0.3"]
    assert (after["multi_group_array"][0]["server_port"], after["multi_group_array"][0]["group_port"]) == (7000, 7001)


def test_server_add_rejects_bad_member_in_comma_list():
    err = error_of(c.server_add, c.empty_server_config(), "224.1.2.3", "10.0.0.2,,10.0.0.3", server_port=1)
    assert err.path == "member_array" and "empty item" in err.problem
    err = error_of(c.server_add, c.empty_server_config(), "224.1.2.3", "10.0.0.2,300.0.0.1", server_port=1)
    assert err.path == "member_array" and "300.0.0.1" in err.problem


def test_server_add_sets_and_removes_interface():
    cfg = c.server_add(c.empty_server_config(), "224.1.2.3", [], server_port=1, interface="eth1")
    assert cfg["multi_group_array"][0]["interface"] == "eth1"
    cfg = c.server_add(cfg, "224.1.2.3", [], interface="")
    assert "interface" not in cfg["multi_group_array"][0]


def test_server_quit():
    cfg = c.validate_server_config(server(group(member_array=["10.0.0.2", "10.0.0.3", "10.0.0.4"])))
    after = c.server_quit(cfg, "224.1.2.3", "10.0.0.3, 10.0.0.2")
    assert after["multi_group_array"][0]["member_array"] == ["10.0.0.4"]
    err = error_of(c.server_quit, cfg, "224.1.2.3", ["10.0.0.9", "10.0.0.2"])
    assert err.path == "member_array" and "10.0.0.9" in err.problem and "10.0.0.2" not in err.problem.split(";")[0]
    err = error_of(c.server_quit, cfg, "224.9.9.9", ["10.0.0.2"])
    assert err.path == "group_ip" and "not configured" in err.problem


def test_server_delete():
    cfg = c.validate_server_config(server(group(), group(group_ip="239.1.1.1")))
    after = c.server_delete(cfg, "224.1.2.3")
    assert [g["group_ip"] for g in after["multi_group_array"]] == ["239.1.1.1"]
    assert len(cfg["multi_group_array"]) == 2
    assert error_of(c.server_delete, after, "224.1.2.3").path == "group_ip"


def test_server_set_group_modes():
    cfg = c.validate_server_config(server(group(member_array=["10.0.0.2", "10.0.0.3"])))
    exact = c.server_set_group(cfg, "224.1.2.3", None, None, ["10.0.0.5"], "exact")
    assert exact["multi_group_array"][0]["member_array"] == ["10.0.0.5"]
    added = c.server_set_group(cfg, "224.1.2.3", None, None, ["10.0.0.5"], "add")
    assert added["multi_group_array"][0]["member_array"] == ["10.0.0.2", "10.0.0.3", "10.0.0.5"]
    removed = c.server_set_group(cfg, "224.1.2.3", None, None, ["10.0.0.2"], "remove")
    assert removed["multi_group_array"][0]["member_array"] == ["10.0.0.3"]
    ports_only = c.server_set_group(cfg, "224.1.2.3", 7000, None, None, "exact")
    assert ports_only["multi_group_array"][0]["member_array"] == ["10.0.0.2", "10.0.0.3"]
    assert ports_only["multi_group_array"][0]["server_port"] == 7000
    created = c.server_set_group(cfg, "239.1.1.1", 7000, None, None)
    assert c.server_find_group(created, "239.1.1.1") == {
        "group_ip": "239.1.1.1", "server_port": 7000, "group_port": 7000, "member_array": []}
    assert error_of(c.server_set_group, cfg, "224.1.2.3", None, None, [], "merge").path == "member_mode"
    assert error_of(c.server_set_group, cfg, "224.9.9.9", None, None, [], "remove").path == "group_ip"


def test_server_find_group():
    cfg = c.validate_server_config(server(group()))
    assert c.server_find_group(cfg, "224.1.2.3")["server_port"] == 65535
    assert c.server_find_group(cfg, "224.1.2.4") is None


def test_client_add_updates_server_port_of_same_entry():
    cfg = c.client_add(c.empty_client_config(), "10.0.0.1", "65535", "65535", "224.1.2.3")
    cfg = c.client_add(cfg, "10.0.0.1", 65535, 7000, "224.1.2.3")
    assert cfg == client(entry(server_port=7000))
    cfg = c.client_add(cfg, "10.0.0.1", 65535, 7000, "239.1.1.1")
    assert len(cfg["multi_server_info_array"]) == 2


def test_client_add_validates_each_argument():
    empty = c.empty_client_config()
    assert error_of(c.client_add, empty, "224.0.0.1", 1, 1, "224.1.2.3").path == "server_ip"
    assert error_of(c.client_add, empty, "10.0.0.1", "x", 1, "224.1.2.3").path == "group_port"
    assert error_of(c.client_add, empty, "10.0.0.1", 1, 70000, "224.1.2.3").path == "server_port"
    assert error_of(c.client_add, empty, "10.0.0.1", 1, 1, "10.1.2.3").path == "group_ip"


def test_client_delete_and_find():
    cfg = c.validate_client_config(client(entry(), entry(group_ip="239.1.1.1"), entry(group_port=1)))
    assert len(c.client_find(cfg, server_ip="10.0.0.1", group_port=65535)) == 2
    only_one = c.client_delete(cfg, "10.0.0.1", 65535, "239.1.1.1")
    assert len(only_one["multi_server_info_array"]) == 2
    both = c.client_delete(cfg, "10.0.0.1", "65535")
    assert both == client(entry(group_port=1))
    err = error_of(c.client_delete, cfg, "10.0.0.9", 65535)
    assert "no entry for server 10.0.0.9" in err.problem
    assert len(cfg["multi_server_info_array"]) == 3


def test_config_lock_is_exclusive(tmp_path):
    order = []
    with c.ConfigLock(str(tmp_path), "server") as lock:
        assert os.path.basename(lock.path) == ".server_cfg.lock"

        def contender():
            with c.ConfigLock(str(tmp_path), "server"):
                order.append("second")
        thread = threading.Thread(target=contender)
        thread.start()
        thread.join(0.3)
        order.append("first")
        assert thread.is_alive()
    thread.join()
    assert order == ["first", "second"]
    assert (tmp_path / ".server_cfg.lock").stat().st_mode & 0o777 == 0o600


def test_config_lock_kind_is_checked(tmp_path):
    with pytest.raises(ValueError):
        c.ConfigLock(str(tmp_path), "other")
