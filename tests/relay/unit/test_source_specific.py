"""Source-specific receivers (issue 14.11) on the relay's side: which entries keep the source, and the
doctor's finding as ``multic_admin --doctor`` computes it from the kernel's /proc/net/mcfilter text.

The rule itself is tested case by case in tests/unit/plugins/module_utils/test_multicast_diag.py; this
checks the relay package reaches the same code through its symlinks.  The client daemon decides which
entries it re-delivers raw with the same function the doctor uses (relay_config.client_entry_keeps_source).
"""

import pytest

from multicast_proxy import multicast_diag as diag, multicast_diag_kernel as kernel, relay_config as c

GROUP = "232.77.14.11"
SERVER = "10.77.0.10"


def client_cfg(top=None, **entry_options):
    entry = dict({"server_ip": SERVER, "server_port": 6411, "group_ip": GROUP, "group_port": 5411}, **entry_options)
    cfg = {c.CLIENT_TOP_KEY: [entry]}
    cfg.update(top or {})
    return c.validate_client_config(cfg)


@pytest.mark.parametrize("top, options, keeps", [
    ({}, {}, False),
    ({"preserve_source": True}, {}, True),
    ({}, {"preserve_source": True}, True),
    ({"preserve_source": False}, {"preserve_source": True}, True),
    ({}, {"protocol": "vrrp", "group_ip": "224.0.0.18", "group_port": 0}, True),
])
def test_which_entries_keep_the_source(top, options, keeps):
    cfg = client_cfg(top, **options)
    assert c.client_entry_keeps_source(cfg, cfg[c.CLIENT_TOP_KEY][0]) is keeps


def facts_with_mcfilter(text):
    return {"interfaces": [{"name": "lo", "index": 1, "flags": [], "up": True, "multicast": False, "loopback": True,
                            "operstate": "unknown", "ipv4": ["127.0.0.1/8"], "rx_multicast": 0},
                           {"name": "eth0", "index": 2, "flags": [], "up": True, "multicast": True,
                            "loopback": False, "operstate": "up", "ipv4": ["10.77.0.11/24"], "rx_multicast": 0}],
            "memberships": [{"interface": "eth0", "index": 2, "group": GROUP, "users": 1}],
            "source_filters": kernel.parse_proc_mcfilter(text),
            "udp_sockets": [], "routes": [], "igmp_max_memberships": 20, "rp_filter": {"all": 0},
            "mc_forwarding": {}, "ip_counters": {}}


# What the kernel printed in tests/relay/netns/test_ssm.py for a receiver joined for (GROUP, SERVER) on eth0.
MCFILTER = "Idx Device        MCA        SRC    INC    EXC\n  2   eth0 0xe84d0e0b 0x0a4d000a      1      0\n"


def test_the_relay_doctor_names_the_group_the_source_and_the_fix():
    findings = diag.diagnose(facts_with_mcfilter(MCFILTER), client_config=client_cfg())
    (finding,) = [f for f in findings if f["id"] == "source-specific-receiver"]
    assert finding["severity"] == "error" and finding["subject"] == "%s from %s" % (GROUP, SERVER)
    assert "preserve_source" in finding["fix"]
    report = diag.format_report(findings)
    assert "[ERROR] source-specific-receiver (%s from %s)" % (GROUP, SERVER) in report
    assert [f for f in diag.diagnose(facts_with_mcfilter(MCFILTER), client_config=client_cfg(
        preserve_source=True)) if f["id"] == "source-specific-receiver"] == []
