"""Config keys of issue 8: protocol (udp/vrrp), capture, group port 0, preserve_source."""

import json

import pytest

from multicast_proxy import relay_config as c

SEED_SERVER = {"multi_group_array": [{"group_ip": "224.1.2.3", "server_port": 65535, "group_port": 65535,
                                      "member_array": ["192.168.1.1"]}]}
SEED_CLIENT = {"multi_server_info_array": [{"server_ip": "10.0.0.1", "server_port": 65535,
                                            "group_ip": "224.1.2.3", "group_port": 65535}]}


def server_group(**fields):
    base = {"group_ip": "224.1.2.3", "server_port": 6000, "member_array": ["10.0.0.2"]}
    base.update(fields)
    return {"multi_group_array": [base]}


def client_entry(top=None, **fields):
    base = {"server_ip": "10.0.0.1", "server_port": 6000, "group_ip": "224.1.2.3", "group_port": 5000}
    base.update(fields)
    cfg = {"multi_server_info_array": [base]}
    cfg.update(top or {})
    return cfg


def error_of(validate, cfg):
    with pytest.raises(c.ConfigError) as info:
        validate(cfg)
    return info.value


def test_seed_files_round_trip_byte_identical():
    for cfg, load in ((SEED_SERVER, c.load_server_config), (SEED_CLIENT, c.load_client_config)):
        text = c.dump_config(cfg)
        assert c.dump_config(load(text)) == text


def test_vrrp_group_defaults_group_port_to_0_and_writes_the_protocol():
    cfg = c.validate_server_config(server_group(group_ip="224.0.0.18", protocol="vrrp"))
    (group,) = cfg["multi_group_array"]
    assert group["group_port"] == 0 and group["protocol"] == "vrrp"
    assert "capture" not in group
    assert c.load_server_config(c.dump_config(cfg)) == cfg


def test_udp_protocol_is_the_default_and_not_written_back():
    cfg = c.validate_server_config(server_group(protocol="udp", group_port=5000))
    assert "protocol" not in cfg["multi_group_array"][0]


@pytest.mark.parametrize("fields, path, words", [
    ({"group_ip": "224.0.0.19", "protocol": "vrrp"}, ".group_ip", "224.0.0.18"),
    ({"group_ip": "224.0.0.18", "protocol": "vrrp", "group_port": 112}, ".group_port", "no ports"),
    ({"group_ip": "224.0.0.18", "protocol": "vrrp", "capture": False}, ".capture", "always captured"),
    ({"protocol": "VRRP"}, ".protocol", '"udp"'),
    ({"protocol": 112}, ".protocol", "not a protocol"),
    ({"group_port": 0}, ".group_port", '"capture": true'),
    ({"group_port": 0, "capture": "yes"}, ".capture", "true or false"),
    ({"group_port": 0, "capture": False}, ".group_port", "any port"),
    ({"group_port": -1, "capture": True}, ".group_port", "1 to 65535"),
    ({"group_port": False, "capture": True}, ".group_port", "1 to 65535"),
])
def test_bad_server_protocol_settings_name_the_path(fields, path, words):
    error = error_of(c.validate_server_config, server_group(**fields))
    assert error.path == "multi_group_array[0]" + path
    assert words in error.problem


def test_capture_group_with_any_port():
    cfg = c.validate_server_config(server_group(group_port=0, capture=True))
    (group,) = cfg["multi_group_array"]
    assert group["group_port"] == 0 and group["capture"] is True
    # capture: false is the default and not written back.
    cfg = c.validate_server_config(server_group(group_port=5000, capture=False))
    assert "capture" not in cfg["multi_group_array"][0]


def test_cli_edit_of_a_vrrp_group_keeps_protocol_and_port():
    cfg = c.validate_server_config(server_group(group_ip="224.0.0.18", protocol="vrrp"))
    edited = c.server_add(cfg, "224.0.0.18", "10.0.0.3")
    (group,) = edited["multi_group_array"]
    assert group["member_array"] == ["10.0.0.2", "10.0.0.3"]
    assert group["protocol"] == "vrrp" and group["group_port"] == 0


def test_client_vrrp_entry_and_preserve_source():
    cfg = c.validate_client_config({
        "preserve_source": True,
        "multi_server_info_array": [
            {"server_ip": "10.0.0.1", "server_port": 6900, "group_ip": "224.0.0.18", "protocol": "vrrp"},
            {"server_ip": "10.0.0.1", "server_port": 6000, "group_ip": "224.1.2.3", "group_port": 0,
             "preserve_source": True},
            {"server_ip": "10.0.0.1", "server_port": 6000, "group_ip": "224.1.2.4", "group_port": 5000,
             "preserve_source": False},
        ]})
    vrrp, any_port, plain = cfg["multi_server_info_array"]
    assert vrrp == {"server_ip": "10.0.0.1", "server_port": 6900, "group_ip": "224.0.0.18", "group_port": 0,
                    "protocol": "vrrp"}
    assert any_port["group_port"] == 0 and any_port["preserve_source"] is True
    assert "preserve_source" not in plain
    assert cfg["preserve_source"] is True
    text = c.dump_config(cfg)
    assert c.dump_config(c.load_client_config(text)) == text
    assert list(json.loads(text)) == ["multi_server_info_array", "preserve_source"]


@pytest.mark.parametrize("top, fields, path, words", [
    ({}, {"group_ip": "224.0.0.1", "protocol": "vrrp", "group_port": 0}, "[0].group_ip", "224.0.0.18"),
    ({}, {"group_ip": "224.0.0.18", "protocol": "vrrp", "group_port": 5}, "[0].group_port", "no ports"),
    ({}, {"preserve_source": 1}, "[0].preserve_source", "true or false"),
    ({"preserve_source": "on"}, {}, "preserve_source", "true or false"),
    ({}, {"protocol": "tcp"}, "[0].protocol", "not a protocol"),
])
def test_bad_client_settings_name_the_path(top, fields, path, words):
    error = error_of(c.validate_client_config, client_entry(top, **fields))
    expected = path if not path.startswith("[") else "multi_server_info_array" + path
    assert error.path == expected
    assert words in error.problem


def test_client_udp_entry_still_needs_a_group_port():
    cfg = client_entry()
    del cfg["multi_server_info_array"][0]["group_port"]
    error = error_of(c.validate_client_config, cfg)
    assert error.path == "multi_server_info_array[0].group_port" and "missing" in error.problem


def test_invalid_file_is_refused_as_a_whole():
    text = json.dumps({"multi_group_array": [
        {"group_ip": "224.1.2.3", "server_port": 6000, "member_array": ["10.0.0.2"]},
        {"group_ip": "224.0.0.18", "server_port": 6900, "protocol": "vrrp", "group_port": 7,
         "member_array": ["10.0.0.2"]}]})
    with pytest.raises(c.ConfigError) as info:
        c.load_server_config(text, "server_cfg.json.txt")
    assert str(info.value).startswith("server_cfg.json.txt: multi_group_array[1].group_port")


def test_client_delete_and_find_take_group_port_0():
    cfg = c.validate_client_config({"multi_server_info_array": [
        {"server_ip": "10.0.0.1", "server_port": 6900, "group_ip": "224.0.0.18", "protocol": "vrrp"},
        {"server_ip": "10.0.0.1", "server_port": 6000, "group_ip": "224.1.2.3", "group_port": 5000}]})
    assert [e["group_ip"] for e in c.client_find(cfg, group_port="0")] == ["224.0.0.18"]
    left = c.client_delete(cfg, "10.0.0.1", 0)
    assert [e["group_ip"] for e in left["multi_server_info_array"]] == ["224.1.2.3"]
    with pytest.raises(c.ConfigError):
        c.client_delete(cfg, "10.0.0.1", -1)
