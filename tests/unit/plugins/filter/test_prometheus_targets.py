# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The metrics side of the membership filters: the configs' settings and Prometheus' targets."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible.errors import AnsibleFilterError
from ansible_collections.multicast.proxy.plugins.filter.membership import (
    client_config,
    prometheus_targets,
    server_config,
)

GROUPS = {"all": ["src", "m1", "m2", "m3"], "senders": ["src"], "members": ["m1", "m2", "m3"]}
DEFINITIONS = [{"name": "feed", "group_ip": "239.1.2.3", "group_port": 5000, "server_port": 5500,
                "senders": "senders", "receivers": "members"}]


def hostvars(**extra):
    base = {"src": {"multicast_proxy_address": "10.0.0.1"}, "m1": {"multicast_proxy_address": "10.0.0.2"},
            "m2": {"multicast_proxy_address": "10.0.0.3"}, "m3": {"multicast_proxy_address": "10.0.0.4"}}
    for host, variables in extra.items():
        base[host].update(variables)
    return base


def test_server_settings_reach_the_config_and_empty_ones_stay_out():
    config = server_config(DEFINITIONS, "src", hostvars(), GROUPS,
                           settings={"metrics_listen": "0.0.0.0:9471", "metrics_textfile": "",
                                     "metrics_detail": "member"})
    assert config["metrics_listen"] == "0.0.0.0:9471" and config["metrics_detail"] == "member"
    assert "metrics_textfile" not in config
    # A bare port is the relay's own spelling of loopback.
    assert server_config(DEFINITIONS, "src", hostvars(), GROUPS,
                         settings={"metrics_listen": "9471"})["metrics_listen"] == "127.0.0.1:9471"
    assert "metrics_listen" not in server_config(DEFINITIONS, "src", hostvars(), GROUPS, settings={})


def test_client_settings_reach_the_config():
    config = client_config(DEFINITIONS, "m1", hostvars(), GROUPS,
                           settings={"metrics_listen": "", "metrics_textfile": "/var/lib/node/multicast_proxy_client.prom"})
    assert config["metrics_textfile"] == "/var/lib/node/multicast_proxy_client.prom"
    assert "metrics_listen" not in config


@pytest.mark.parametrize("side, settings, message", [
    ("server", {"metrics_listen": "localhost:80"}, "metrics_listen"),
    ("server", {"metrics_detail": "everything"}, "metrics_detail"),
    ("server", {"metrics_textfile": "relative.prom"}, "absolute path ending in .prom"),
    ("server", {"metric_listen": "9471"}, "unknown key metric_listen"),
    ("client", {"metrics_detail": "member"}, "unknown key metrics_detail"),
    ("server", "9471", "must be a dict"),
])
def test_bad_settings_fail_naming_the_host_and_the_key(side, settings, message):
    render = server_config if side == "server" else client_config
    host = "src" if side == "server" else "m1"
    with pytest.raises(AnsibleFilterError) as failure:
        render(DEFINITIONS, host, hostvars(), GROUPS, settings=settings)
    assert message in str(failure.value) and "host %s" % host in str(failure.value)


def test_targets_list_the_hosts_with_metrics_on_their_relay_address():
    variables = hostvars(src={"multicast_proxy_metrics": True, "multicast_proxy_metrics_address": "0.0.0.0"},
                         m1={"multicast_proxy_metrics": "yes", "multicast_proxy_metrics_address": "10.0.0.2",
                             "multicast_proxy_metrics_client_port": 19472},
                         m3={"multicast_proxy_metrics": False, "multicast_proxy_metrics_address": "0.0.0.0"})
    assert prometheus_targets(DEFINITIONS, variables, GROUPS, "server") == [
        {"targets": ["10.0.0.1:9471"], "labels": {"host": "src"}}]
    # m2 has no metrics and m3 turned them off: neither is a target.
    assert prometheus_targets(DEFINITIONS, variables, GROUPS, "client") == [
        {"targets": ["10.0.0.2:19472"], "labels": {"host": "m1"}}]


def test_a_host_that_sends_and_receives_is_a_target_of_both_jobs():
    definitions = DEFINITIONS + [{"group_ip": "239.1.2.4", "server_port": 5600, "senders": "m1",
                                  "receivers": ["src"]}]
    variables = hostvars(m1={"multicast_proxy_metrics": True, "multicast_proxy_metrics_address": "0.0.0.0"})
    assert prometheus_targets(definitions, variables, GROUPS, "server") == [
        {"targets": ["10.0.0.2:9471"], "labels": {"host": "m1"}}]
    assert prometheus_targets(definitions, variables, GROUPS, "client") == [
        {"targets": ["10.0.0.2:9472"], "labels": {"host": "m1"}}]


@pytest.mark.parametrize("variables, message", [
    ({"multicast_proxy_metrics": True}, "listens on 127.0.0.1, which a Prometheus on another host cannot scrape"),
    ({"multicast_proxy_metrics": True, "multicast_proxy_metrics_address": "127.0.0.5"}, "listens on 127.0.0.5"),
    ({"multicast_proxy_metrics": True, "multicast_proxy_metrics_address": "0.0.0.0",
      "multicast_proxy_metrics_server_port": 70000}, "the port must be a number from 1 to 65535"),
    ({"multicast_proxy_metrics": True, "multicast_proxy_metrics_address": "web01"}, "IPv4"),
    ({"multicast_proxy_metrics": "sometimes"}, "multicast_proxy_metrics must be true or false"),
])
def test_unscrapable_endpoints_fail_naming_the_host_and_what_to_set(variables, message):
    with pytest.raises(AnsibleFilterError) as failure:
        prometheus_targets(DEFINITIONS, hostvars(src=variables), GROUPS, "server")
    text = str(failure.value)
    assert message in text and "host src" in text


def test_every_bad_host_is_named_at_once():
    variables = hostvars(m1={"multicast_proxy_metrics": True}, m2={"multicast_proxy_metrics": True})
    with pytest.raises(AnsibleFilterError) as failure:
        prometheus_targets(DEFINITIONS, variables, GROUPS, "client")
    assert "host m1" in str(failure.value) and "host m2" in str(failure.value)


def test_the_side_is_checked():
    with pytest.raises(AnsibleFilterError) as failure:
        prometheus_targets(DEFINITIONS, hostvars(), GROUPS, "servers")
    assert 'side must be "server" or "client"' in str(failure.value)
