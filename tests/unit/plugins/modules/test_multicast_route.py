# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.multicast.proxy.plugins.modules import multicast_route

SHOW = ["/sbin/ip", "-4", "route", "show"]
TABLE = (
    "default via 10.0.0.1 dev eth0 proto dhcp src 10.0.0.5 metric 100\n"
    "10.0.0.0/24 dev eth0 proto kernel scope link src 10.0.0.5\n"
    "10.1.0.0/24 dev eth1 proto kernel scope link src 10.1.0.5\n"
)
ROUTE = "224.0.0.0/4 via 10.1.0.1 dev eth1 \n"


def test_parse_routes_reads_types_gateways_devices_and_metrics():
    routes = multicast_route.parse_routes(TABLE + "multicast 224.0.0.0/4 dev eth1 metric 5 onlink\n"
                                          + "blackhole 10.9.0.0/16\n")
    assert routes[0]["dst"] == "0.0.0.0/0"
    assert (routes[0]["via"], routes[0]["dev"], routes[0]["metric"]) == ("10.0.0.1", "eth0", 100)
    assert routes[3] == {"dst": "224.0.0.0/4", "type": "multicast", "via": None, "dev": "eth1", "metric": 5,
                         "line": "multicast 224.0.0.0/4 dev eth1 metric 5 onlink"}
    assert routes[4]["type"] == "blackhole"
    assert routes[4]["dst"] == "10.9.0.0/16"


@pytest.mark.parametrize("text, expected", [
    ("224.0.0.0/4", "224.0.0.0/4"), ("10.1.2.3", "10.1.2.3/32"), ("0.0.0.0/0", "0.0.0.0/0")])
def test_normalize_prefix(text, expected):
    assert multicast_route.normalize_prefix(text) == expected


@pytest.mark.parametrize("text", ["224.0.0.1/4", "224.0.0.0/33", "224.0.0/4", "x/4"])
def test_normalize_prefix_rejects(text):
    with pytest.raises(ValueError):
        multicast_route.normalize_prefix(text)


def test_adds_missing_route(run_module):
    run_module.replies = [(0, TABLE, ""), (0, "", ""), (0, TABLE + ROUTE, "")]
    result, failed = run_module(multicast_route, {"gateway": "10.1.0.1", "device": "eth1"}, diff=True)
    assert not failed
    assert result["changed"] is True
    assert run_module.commands == [
        SHOW, ["/sbin/ip", "-4", "route", "replace", "224.0.0.0/4", "via", "10.1.0.1", "dev", "eth1"], SHOW]
    assert result["route"] == "224.0.0.0/4 via 10.1.0.1 dev eth1"
    assert result["diff"] == {"before": "", "after": "224.0.0.0/4 via 10.1.0.1 dev eth1\n"}


def test_matching_route_changes_nothing(run_module):
    run_module.replies = [(0, TABLE + ROUTE, "")]
    result, failed = run_module(multicast_route, {"gateway": "10.1.0.1", "device": "eth1"})
    assert not failed
    assert result["changed"] is False
    assert run_module.commands == [SHOW]


def test_device_only_accepts_any_gateway_on_that_device(run_module):
    run_module.replies = [(0, TABLE + ROUTE, "")]
    result, failed = run_module(multicast_route, {"device": "eth1"})
    assert not failed
    assert result["changed"] is False


def test_route_via_other_gateway_is_replaced(run_module):
    run_module.replies = [(0, TABLE + "224.0.0.0/4 via 10.0.0.1 dev eth0\n", ""), (0, "", ""), (0, TABLE + ROUTE, "")]
    result, failed = run_module(multicast_route, {"gateway": "10.1.0.1", "device": "eth1"})
    assert not failed
    assert result["changed"] is True
    assert run_module.commands[1][3] == "replace"


def test_route_with_other_metric_is_left_alone(run_module):
    run_module.replies = [(0, TABLE + "224.0.0.0/4 dev eth0 metric 50\n", ""), (0, "", ""),
                          (0, TABLE + "224.0.0.0/4 dev eth0 metric 50\n" + ROUTE, "")]
    result, failed = run_module(multicast_route, {"gateway": "10.1.0.1", "device": "eth1"})
    assert not failed
    assert result["changed"] is True
    assert "del" not in [argv[3] for argv in run_module.commands[1:2]]


def test_check_mode_runs_only_the_show(run_module):
    run_module.replies = [(0, TABLE, "")]
    result, failed = run_module(multicast_route, {"gateway": "10.1.0.1", "device": "eth1"}, check_mode=True)
    assert not failed
    assert result["changed"] is True
    assert run_module.commands == [SHOW]
    assert result["commands"] == [["ip", "-4", "route", "replace", "224.0.0.0/4", "via", "10.1.0.1", "dev", "eth1"]]


def test_absent_deletes_the_route(run_module):
    run_module.replies = [(0, TABLE + ROUTE, ""), (0, "", ""), (0, TABLE, "")]
    result, failed = run_module(multicast_route, {"state": "absent"})
    assert not failed
    assert result["changed"] is True
    assert result["route"] is None
    assert run_module.commands[1] == ["/sbin/ip", "-4", "route", "del", "224.0.0.0/4", "via", "10.1.0.1",
                                      "dev", "eth1"]


def test_absent_without_route_changes_nothing(run_module):
    run_module.replies = [(0, TABLE, "")]
    result, failed = run_module(multicast_route, {"state": "absent"})
    assert not failed
    assert result["changed"] is False


@pytest.mark.parametrize("args, message", [
    ({}, "gateway, device or both"),
    ({"device": "eth1", "prefix": "224.0.0.1/4"}, "host bits"),
    ({"gateway": "10.1.0"}, "IPv4"),
    ({"device": "eth 1"}, "interface name"),
    ({"device": "eth1", "metric": -1}, "negative"),
])
def test_bad_arguments_fail_before_running_anything(run_module, args, message):
    result, failed = run_module(multicast_route, args)
    assert failed
    assert message in result["msg"]
    assert run_module.commands == []


def test_ip_failure_is_reported(run_module):
    run_module.replies = [(0, TABLE, ""), (2, "", "Cannot find device \"eth9\"\n")]
    result, failed = run_module(multicast_route, {"device": "eth9"})
    assert failed
    assert "Cannot find device" in result["msg"]
