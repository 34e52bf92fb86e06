"""``multis_admin --doctor`` / ``multic_admin --doctor``: the doctor on one host.

The rules live in ``multicast_diag.py`` (a symlink to the collection's
``plugins/module_utils/multicast_diag.py``), so an operator logged into a VM
gets exactly the findings the ``multicast_diagnose_info`` module reports.  This
file only gathers the inputs: the side's config, the daemon's counters over
the control socket, the firewall ruleset, the port probes, and a short look
at the interfaces the server's groups leave the host by (``_source_interfaces``).
"""

import json
import os
import shutil
import subprocess

from . import capture, relay_config as config, daemon, multicast_diag as diag

_LOADERS = {"server": config.load_server_config, "client": config.load_client_config}
# How long the doctor watches for the local source's datagrams: an active source sends many in this
# time; an idle one gives no observation (and no finding).
SOURCE_WATCH_SECONDS = 2.0
# The host firewall's own view first (its name goes into the finding), then
# the first ruleset dump that works.
_MANAGER_COMMANDS = (("firewall-cmd", ["firewall-cmd", "--list-all"], "firewalld-list-all"),
                     ("ufw", ["ufw", "status", "verbose"], "ufw-status"))
_FIREWALL_COMMANDS = (("nft", ["nft", "-j", "list", "ruleset"], "nft-json"),
                      ("iptables-save", ["iptables-save"], "iptables-save"))


def _read_config(side, conf_dir):
    path = daemon.side_path(side, "config", conf_dir)
    if not os.path.exists(path):
        return None
    return _LOADERS[side](config.read_config_text(path), path)


def _daemon_stats(side, conf_dir):
    """(stats reply or None, error text or None)."""
    try:
        reply = daemon.request(side, {"cmd": "stats"}, conf_dir)
    except (OSError, ValueError) as exc:
        return None, "no answer on %s (%s)" % (daemon.side_path(side, "socket", conf_dir), exc)
    if not reply.get("ok"):
        return None, reply.get("error", "the daemon refused the stats request")
    return reply, None


def _run(argv):
    result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False,
                            universal_newlines=True, timeout=30)
    return result.stdout if result.returncode == 0 else None


def _firewall():
    """What firewalld and ufw say where they run, then the first ruleset dump that
    works; None with none of them (firewall-cmd fails when firewalld is not running)."""
    found = []
    for program, argv, fmt in _MANAGER_COMMANDS:
        text = _run(argv) if shutil.which(program) else None
        if text and (fmt != "ufw-status" or text.startswith("Status: active")):
            found.append({"format": fmt, "text": text})
    for program, argv, fmt in _FIREWALL_COMMANDS:
        text = _run(argv) if shutil.which(program) else None
        if text is not None:
            found.append({"format": fmt, "text": text})
            break
    return found or None


def _source_interfaces(server_config):
    """{group_ip: {interface: datagrams}} of the server's UDP groups leaving this host now, or None.

    None when there is nothing to watch or packet sockets cannot be opened
    (not root, no ctypes): the doctor then says nothing about the source.
    """
    groups = [(g["group_ip"], g["group_port"]) for g in (server_config or {}).get(config.SERVER_TOP_KEY, [])
              if g.get("protocol") != "vrrp"]
    if not groups:
        return None
    try:
        return capture.observe_outgoing(groups, SOURCE_WATCH_SECONDS)
    except OSError:
        return None


def gather(side, conf_dir):
    """Everything diag.diagnose() takes, for one side ("server", "client" or "all")."""
    sides = ("server", "client") if side == "all" else (side,)
    inputs = {"facts": diag.collect_facts(), "services": {}, "config_errors": {}}
    for name in sides:
        try:
            inputs[name + "_config"] = _read_config(name, conf_dir)
        except config.ConfigError as exc:
            inputs[name + "_config"] = None
            inputs["config_errors"][name] = str(exc)
        except OSError as exc:
            inputs[name + "_config"] = None
            inputs["config_errors"][name] = "cannot read the config: %s" % (exc.strerror or exc)
        stats, error = _daemon_stats(name, conf_dir)
        inputs[name + "_stats"] = stats
        inputs["services"][name] = {"installed": True, "running": stats is not None, "error": error}
    if "server" in sides:
        inputs["source_interfaces"] = _source_interfaces(inputs.get("server_config"))
    inputs["firewall"] = _firewall()
    inputs["port_probes"] = diag.probe_relay_ports(inputs.get("server_config"), inputs.get("client_config"))
    return inputs


def run(side, conf_dir, out, as_json=False):
    """Print the doctor's report; 0 when nothing is an error, 1 otherwise.

    A config file that does not validate is itself a finding (config-invalid)
    whose text names the JSON path and what to change.
    """
    try:
        inputs = gather(side, conf_dir)
    except (diag.FactsError, OSError, subprocess.SubprocessError) as exc:
        out.write("multicast doctor (%s): cannot gather the facts: %s\n" % (side, exc))
        return 1
    findings = diag.diagnose(**inputs)
    if as_json:
        out.write(json.dumps({"findings": findings, "facts": inputs["facts"],
                              "source_interfaces": inputs.get("source_interfaces")}, indent=2, sort_keys=True) + "\n")
    else:
        out.write(diag.format_report(findings, "multicast doctor (%s)" % side) + "\n")
    return 1 if any(f["severity"] == "error" for f in findings) else 0
