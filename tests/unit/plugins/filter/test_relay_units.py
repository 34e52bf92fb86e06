# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The daemons' units: capabilities from a host's config, directives from its systemd release.

* ``relay_contract.needed_capabilities`` (the ``relay_capabilities`` filter):
  CAP_NET_BIND_SERVICE for a bound port below 1024, CAP_NET_RAW for capture,
  VRRP and preserve_source, never CAP_NET_ADMIN.
* ``roles/common/templates/relay.service.j2`` rendered as the unit task
  renders it, for configs with and without those features, on the systemd
  release of every supported platform: every directive in the file is known
  to that release (the table of ``plugins/filter/systemd_units.py``), the
  daemon runs as the unprivileged user with exactly the computed capabilities.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re

import pytest
import yaml

from ansible.errors import AnsibleFilterError
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar
from ansible_collections.multicast.proxy.plugins.filter.membership import (
    client_config,
    relay_capabilities,
    server_config,
)
from ansible_collections.multicast.proxy.plugins.filter.systemd_units import (
    PLATFORM_SYSTEMD,
    SYSTEMD_DIRECTIVES,
    systemd_knows,
    systemd_version,
)
from ansible_collections.multicast.proxy.plugins.module_utils.relay_contract import needed_capabilities
from ansible_collections.multicast.proxy.tests.unit.compat import render_text
from ansible_collections.multicast.proxy.tests.unit.plugins.filter.inventory import fleet, vrrp_fleet

COLLECTION_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
COMMON = os.path.join(COLLECTION_ROOT, "roles", "common")
BIND = "CAP_NET_BIND_SERVICE"
RAW = "CAP_NET_RAW"


def server(groups, **top):
    return dict({"multi_group_array": groups}, **top)


def client(entries, **top):
    return dict({"multi_server_info_array": entries}, **top)


UDP_GROUP = {"group_ip": "224.1.2.3", "server_port": 65535, "group_port": 65535, "member_array": ["10.0.0.2"]}
ENTRY = {"server_ip": "10.0.0.1", "server_port": 65535, "group_ip": "224.1.2.3", "group_port": 65535}


@pytest.mark.parametrize("side, cfg, expected", [
    # The seed's example: nothing beyond an unprivileged user.
    ("server", server([UDP_GROUP]), []),
    ("client", client([ENTRY]), []),
    ("server", server([]), []),
    # The collection's default source port.
    ("server", server([UDP_GROUP], source_port=868), [BIND]),
    ("server", server([UDP_GROUP], source_port=1024), []),
    ("server", server([dict(UDP_GROUP, group_port=123)]), [BIND]),
    # A capture group binds no UDP port, whatever its group port.
    ("server", server([dict(UDP_GROUP, group_port=123, capture=True)]), [RAW]),
    ("server", server([{"group_ip": "224.0.0.18", "protocol": "vrrp", "server_port": 6901,
                        "member_array": ["10.0.0.2"]}], source_port=868), [BIND, RAW]),
    ("server", server([UDP_GROUP], metrics_listen="127.0.0.1:900"), [BIND]),
    # Subscriptions (allow) are taken on the group's server port.
    ("server", server([dict(UDP_GROUP, server_port=700, allow=["10.0.0.0/24"])]), [BIND]),
    ("server", server([dict(UDP_GROUP, server_port=700)]), []),
    ("server", server([UDP_GROUP], metrics_listen="127.0.0.1:9471"), []),
    ("client", client([dict(ENTRY, server_port=868)]), [BIND]),
    # The client checks its servers' source port; it does not bind it.
    ("client", client([dict(ENTRY, source_port=868)]), []),
    ("client", client([ENTRY], preserve_source=True), [RAW]),
    ("client", client([dict(ENTRY, preserve_source=True)]), [RAW]),
    ("client", client([dict(ENTRY, protocol="vrrp", group_ip="224.0.0.18", group_port=0)]), [RAW]),
    ("client", client([ENTRY], metrics_listen="0.0.0.0:443"), [BIND]),
])
def test_needed_capabilities(side, cfg, expected):
    assert needed_capabilities(side, cfg) == expected
    assert relay_capabilities(cfg, side) == expected


def test_no_config_ever_needs_cap_net_admin():
    everything = server([dict(UDP_GROUP, group_port=80, capture=True)], source_port=868, metrics_listen="1")
    assert "CAP_NET_ADMIN" not in needed_capabilities("server", everything)


def test_an_unknown_side_is_an_error():
    with pytest.raises(AnsibleFilterError, match="side must be one of server, client"):
        relay_capabilities(server([]), "both")


def test_the_filters_configs_give_the_capabilities_of_each_host():
    definitions, hostvars, groups = fleet()
    # The server role passes the source port (868 by default) as a setting.
    src1 = server_config(definitions, "src1", hostvars, groups, settings={"source_port": 868})
    assert relay_capabilities(src1, "server") == [BIND]
    assert relay_capabilities(server_config(definitions, "src1", hostvars, groups), "server") == []
    assert relay_capabilities(client_config(definitions, "mem1", hostvars, groups), "client") == []
    definitions, hostvars, groups = vrrp_fleet()
    assert relay_capabilities(server_config(definitions, "ka1", hostvars, groups), "server") == [RAW]
    assert relay_capabilities(server_config(definitions, "cam1", hostvars, groups), "server") == [RAW]
    assert relay_capabilities(client_config(definitions, "view1", hostvars, groups), "client") == [RAW]


@pytest.mark.parametrize("text, version", [
    ("systemd 252 (252.38-1~deb12u1)\n+PAM +AUDIT", 252),
    ("systemd 239 (239-82.el8)", 239),
    ("systemd 255 (255.4-1ubuntu8)", 255),
])
def test_systemd_version_reads_systemctl_output(text, version):
    assert systemd_version(text) == version


def test_systemd_version_refuses_other_output():
    with pytest.raises(AnsibleFilterError, match="cannot read a systemd release"):
        systemd_version("bash: systemctl: command not found")


def test_a_directive_missing_from_the_table_is_an_error():
    assert systemd_knows("ProtectClock", 245) and not systemd_knows("ProtectClock", 244)
    with pytest.raises(AnsibleFilterError, match="PrivateNetwork is not in the table"):
        systemd_knows("PrivateNetwork", 255)


def load(*parts):
    with open(os.path.join(COMMON, *parts)) as handle:
        return yaml.safe_load(handle)


def render_unit(side, capabilities, version):
    """The unit as tasks/unit.yml renders it on a host of systemd ``version``."""
    variables = dict(load("vars", "main.yml"), role_path=COMMON, ansible_managed="Ansible managed",
                     common_unit_side=side, common_unit_capabilities=capabilities,
                     __common_systemd_version=version)
    templar = Templar(loader=DataLoader(), variables=variables)
    with open(os.path.join(COMMON, "templates", "relay.service.j2")) as handle:
        return render_text(templar, handle.read())


def directives(text):
    """(section, name, value) of every setting line."""
    found, section = [], None
    for line in text.splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif line and not line.startswith("#"):
            name, equals, value = line.partition("=")
            assert equals and re.match(r"^[A-Za-z]+$", name), "not a directive line: %r" % line
            found.append((section, name, value))
    return found


VARIANTS = [
    ("server", []),
    ("server", [BIND]),
    ("server", [BIND, RAW]),
    ("client", []),
    ("client", [RAW]),
]


@pytest.mark.parametrize("platform", sorted(PLATFORM_SYSTEMD))
@pytest.mark.parametrize("side, capabilities", VARIANTS)
def test_every_directive_of_a_rendered_unit_is_known_to_the_platforms_systemd(platform, side, capabilities):
    version = PLATFORM_SYSTEMD[platform]
    text = render_unit(side, capabilities, version)
    assert text.startswith("#")
    names = [name for _section, name, _value in directives(text)]
    unknown = [name for name in names if name not in SYSTEMD_DIRECTIVES or SYSTEMD_DIRECTIVES[name] > version]
    assert not unknown, "%s (systemd %d) does not know %s" % (platform, version, unknown)
    # Whatever the release can give is given: every hardening directive it knows is there.
    for name in ("ProtectSystem", "ProtectKernelTunables", "PrivateMounts", "ProtectKernelLogs", "ProtectClock",
                 "ProtectHostname", "ProtectProc", "RestrictSUIDSGID", "LockPersonality", "AmbientCapabilities"):
        assert (name in names) == (SYSTEMD_DIRECTIVES[name] <= version), name


@pytest.mark.parametrize("side, capabilities", VARIANTS)
def test_a_unit_runs_the_daemon_unprivileged_with_exactly_its_capabilities(side, capabilities):
    settings = {}
    for _section, name, value in directives(render_unit(side, capabilities, 252)):
        settings.setdefault(name, []).append(value)
    assert settings["User"] == ["multicast-proxy"] and settings["Group"] == ["multicast-proxy"]
    assert settings["CapabilityBoundingSet"] == [" ".join(capabilities)]
    assert settings["AmbientCapabilities"] == [" ".join(capabilities)]
    assert settings["NoNewPrivileges"] == ["yes"]
    assert settings["ExecStart"] == ["/usr/local/bin/%s -R" % ("multis_admin" if side == "server" else "multic_admin")]
    assert settings["ReadWritePaths"] == ["/etc/multicast"]
    families = settings["RestrictAddressFamilies"][0].split()
    # Packet sockets only where capture mode or VRRP needs them.
    assert ("AF_PACKET" in families) == (side == "server" and RAW in capabilities)
    assert "CAP_NET_ADMIN" not in " ".join(v for values in settings.values() for v in values)


def test_the_oldest_platform_gets_no_directive_newer_than_239():
    text = render_unit("server", [BIND, RAW], PLATFORM_SYSTEMD["EL 8"])
    for name in ("ProtectKernelLogs", "ProtectClock", "ProtectHostname", "ProtectProc", "RestrictSUIDSGID"):
        assert "\n%s=" % name not in text
    assert "\nPrivateMounts=yes\n" in text and "\nAmbientCapabilities=CAP_NET_BIND_SERVICE CAP_NET_RAW\n" in text
