#!/usr/bin/env bash
# Measure what a deploy costs: multicast.proxy.site on one source and eight
# member containers (tests/fleet/fleet.sh), first converge and re-run, timed,
# and show that the tasks run on the source do not grow with the members.
#
# usage: tests/fleet/deploy-timing.sh [--output FILE] [--baseline-install FILE] [--release RELEASE]
#                                     [--connection ssh|paramiko] [--forks N]
#   --output FILE            where the figures go (default docs/performance/deployment.json)
#   --baseline-install FILE  also measure, on a fresh fleet, the collection with
#                            this roles/common/tasks/install.yml instead of the
#                            current one (the "before" of a change), for example
#                            the previous release's file
#   --release RELEASE        Debian release of the fleet image (default bookworm)
#   --connection ssh|paramiko  how Ansible reaches the hosts (default ssh: OpenSSH
#                            with ControlPersist and pipelining, what a fleet of
#                            VMs is deployed with; paramiko is what molecule uses)
#   --forks N                Ansible forks (default 10: every host of the fleet
#                            in one wave, as an operator of 9 hosts would set)
# env: MCP_FLEET_PREFIX (default empty; container and network names, see
#      fleet.sh), MCP_DEPLOY_NET (default 172.31.18: first three octets of the
#      fleet's /24). Needs root and docker (scripts/ensure-docker.sh is run).
#
# Steps, for the current collection (and then the baseline on a new fleet):
#   1. fleet of 1 source + 8 members, prepared as molecule's prepare.yml does
#      (probe tools; multicast does not cross the network)
#   2. site.yml on 1 + 8: first converge, timed
#   3. site.yml again: timed, must report changed=0 on every host
#   4. multicast.proxy.verify: every member receives the source's stream
#   5. site.yml on 1 + 2 (the source now has 2 members), then once more; the
#      source's task results (one per task and loop item) in that steady run
#      must equal those of step 3: a task looping over members would differ
# The fleet, its network, nft table and key are removed at the end, also on
# failure or Ctrl-C. Timings are wall clock on a shared machine: the load
# average before each run is recorded next to it.
set -euo pipefail

# One function, parsed whole before it runs: a run takes minutes, and bash
# would otherwise read an edited file mid-run.
main() {

repo_root=$(cd "$(dirname "$0")/../.." && pwd)
output=$repo_root/docs/performance/deployment.json
baseline_install=''
release=bookworm
connection=ssh
forks=10
while [ "$#" -gt 0 ]; do
    case "$1" in
        --output) output=$2; shift 2 ;;
        --baseline-install) baseline_install=$2; shift 2 ;;
        --release) release=$2; shift 2 ;;
        --connection) connection=$2; shift 2 ;;
        --forks) forks=$2; shift 2 ;;
        -h|--help) sed -n '/^# usage:/,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
        *) echo "deploy-timing: unexpected argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
if [ -n "$baseline_install" ] && [ ! -f "$baseline_install" ]; then
    echo "deploy-timing: --baseline-install $baseline_install is not a file" >&2
    exit 2
fi
case "$connection" in
    ssh|paramiko) ;;
    *) echo "deploy-timing: --connection must be ssh or paramiko, got '$connection'" >&2; exit 2 ;;
esac
if ! [[ "$forks" =~ ^[1-9][0-9]*$ ]]; then
    echo "deploy-timing: --forks must be a whole number of at least 1, got '$forks'" >&2
    exit 2
fi
export ANSIBLE_FORKS=$forks
if [ "$connection" = ssh ]; then
    # One TCP connection per host for the whole run, and modules fed over it
    # without a temp file: the OpenSSH settings a fleet deploy is run with.
    export ANSIBLE_PIPELINING=True
    export ANSIBLE_SSH_ARGS="-o ControlMaster=auto -o ControlPersist=120s -o UserKnownHostsFile=/dev/null"
fi
net=${MCP_DEPLOY_NET:-172.31.18}
if ! [[ "$net" =~ ^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$ ]]; then
    echo "deploy-timing: MCP_DEPLOY_NET must be three octets like 172.31.18, got '$net'" >&2
    exit 2
fi
members=8
small_members=2
fleet_name=mcp-deploy
# Inventory names; fleet.sh puts MCP_FLEET_PREFIX in front of the container names.
source_host=mcp-dt-source

export PATH="$repo_root/.venv/bin:$PATH"
"$repo_root/scripts/ensure-docker.sh"
"$repo_root/scripts/build-images.sh" "$release"

work=$(mktemp -d "${TMPDIR:-/tmp}/mcp-deploy-timing.XXXXXX")
key=$work/fleet_key
cleanup() {
    "$repo_root/tests/fleet/fleet.sh" down --name "$fleet_name" --key "$key" || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

export ANSIBLE_HOST_KEY_CHECKING=False ANSIBLE_PARAMIKO_RECORD_HOST_KEYS=False
export ANSIBLE_DEPRECATION_WARNINGS=False ANSIBLE_INTERPRETER_PYTHON=/usr/bin/python3
export ANSIBLE_NOCOLOR=1 ANSIBLE_STDOUT_CALLBACK=ansible.builtin.default
export ANSIBLE_LOCAL_TEMP=$work/ansible-tmp

# Where the time goes: a callback next to the default output that writes each
# task's wall-clock seconds (all hosts together) to $MCP_TASK_TIMES as JSON.
mkdir -p "$work/callback_plugins"
cat >"$work/callback_plugins/mcp_task_times.py" <<'PY'
import json
import os
import time

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "mcp_task_times"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super(CallbackModule, self).__init__()
        self.times = []
        self.current = None

    def _close(self):
        if self.current is not None:
            self.times.append([self.current[0], round(time.monotonic() - self.current[1], 2)])
            self.current = None

    def _start(self, name):
        self._close()
        self.current = (name, time.monotonic())

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._start(task.get_name())

    def v2_playbook_on_handler_task_start(self, task):
        self._start("handler: " + task.get_name())

    def v2_playbook_on_stats(self, stats):
        self._close()
        # Set for the site.yml runs only (prepare and verify are not measured).
        if os.environ.get("MCP_TASK_TIMES"):
            with open(os.environ["MCP_TASK_TIMES"], "w") as handle:
                json.dump(self.times, handle)
PY
export ANSIBLE_CALLBACK_PLUGINS=$work/callback_plugins ANSIBLE_CALLBACKS_ENABLED=mcp_task_times

# inventory FILE N: the source and members 1..N, as molecule's default scenario declares them.
write_inventory() {
    local file=$1 count=$2 index
    {
        cat <<YAML
all:
  vars:
    mcp_fleet_name: $fleet_name
    mcp_state_dir: $work
    mcp_fleet_key: $key
    multicast_proxy_groups:
      - name: timing
        group_ip: 239.18.1.1
        group_port: 5018
        server_port: 5518
        senders: mc_sources
        receivers: mc_members
    probe_group: 239.18.1.1
    probe_port: 5018
    probe_count: 2000
    probe_rate: 1000
  children:
    mcp_fleet:
      vars:
        ansible_connection: $connection
        ansible_user: root
        ansible_ssh_private_key_file: $key
      children:
        mc_sources:
          hosts:
            $source_host:
              ansible_host: $net.10
        mc_members:
          hosts:
YAML
        for index in $(seq 1 "$count"); do
            printf '            mcp-dt-member%d:\n              ansible_host: %s.%d\n' "$index" "$net" $((10 + index))
        done
    } >"$file"
}
write_inventory "$work/inventory-large.yml" "$members"
write_inventory "$work/inventory-small.yml" "$small_members"

fleet_up() {
    local hosts=("$source_host=$net.10") index
    for index in $(seq 1 "$members"); do
        hosts+=("mcp-dt-member$index=$net.$((10 + index))")
    done
    "$repo_root/tests/fleet/fleet.sh" up --name "$fleet_name" --image "multicast-proxy-test:$release" \
        --subnet "$net.0/24" --key "$key" "${hosts[@]}"
    ansible-playbook -i "$work/inventory-large.yml" "$repo_root/extensions/molecule/shared/prepare.yml" \
        >"$work/prepare.log" 2>&1 || { cat "$work/prepare.log" >&2; return 1; }
}

# run_site LABEL INVENTORY: time multicast.proxy.site; the log goes to $work/LABEL.log.
run_site() {
    local label=$1 inventory=$2 started ended
    cut -d' ' -f1 /proc/loadavg >"$work/$label.load"
    started=$(date +%s.%N)
    if ! MCP_TASK_TIMES=$work/$label.tasks.json \
            ansible-playbook -i "$inventory" multicast.proxy.site >"$work/$label.log" 2>&1; then
        cat "$work/$label.log" >&2
        echo "deploy-timing: site.yml failed in step $label (log above)" >&2
        return 1
    fi
    ended=$(date +%s.%N)
    echo "$started $ended" | awk '{printf "%.1f\n", $2 - $1}' >"$work/$label.seconds"
    echo "deploy-timing: $label took $(cat "$work/$label.seconds") s" >&2
}

# measure VARIANT: the whole sequence on a fresh fleet with the tree in $work/VARIANT.
measure() {
    local variant=$1
    export ANSIBLE_COLLECTIONS_PATH=$work/$variant/collections
    echo "deploy-timing: measuring the $variant collection" >&2
    fleet_up
    run_site "$variant-converge" "$work/inventory-large.yml"
    run_site "$variant-rerun" "$work/inventory-large.yml"
    if ansible-playbook -i "$work/inventory-large.yml" multicast.proxy.verify >"$work/$variant-verify.log" 2>&1; then
        echo pass >"$work/$variant-verify.result"
    else
        cat "$work/$variant-verify.log" >&2
        echo "deploy-timing: verify failed for the $variant collection" >&2
        return 1
    fi
    run_site "$variant-small-converge" "$work/inventory-small.yml"
    run_site "$variant-small-rerun" "$work/inventory-small.yml"
}

"$repo_root/scripts/collection-tree.sh" "$work/current/collections" >/dev/null
variants=(current)
if [ -n "$baseline_install" ]; then
    "$repo_root/scripts/collection-tree.sh" "$work/baseline/collections" >/dev/null
    cp "$baseline_install" "$work/baseline/collections/ansible_collections/multicast/proxy/roles/common/tasks/install.yml"
    variants+=(baseline)
fi
for variant in "${variants[@]}"; do
    measure "$variant"
done

mkdir -p "$(dirname "$output")"
MCP_DT_CONNECTION=$connection python3 - "$work" "$output" "$source_host" "$members" "$small_members" "${variants[@]}" <<'PY'
import json
import os
import platform
import re
import sys

work, output, source, members, small_members = sys.argv[1:6]
variants = sys.argv[6:]


def read(name):
    with open(os.path.join(work, name)) as handle:
        return handle.read()


def recap(log):
    """PLAY RECAP counters per host."""
    hosts = {}
    for host, counters in re.findall(r"^(\S+)\s+:\s+(ok=.*)$", log, re.M):
        hosts[host] = {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", counters)}
    return hosts


def results_on(log, host):
    """One line per task result and loop item the default callback prints for host."""
    pattern = re.compile(r"^(ok|changed|skipping|failed|fatal): \[%s[\] ]" % re.escape(host), re.M)
    return len(pattern.findall(log))


def tasks_on(log, host):
    """Names of the tasks that ran (not skipped) on host, in order, loop items counted once each."""
    names = []
    task = None
    for line in log.splitlines():
        match = re.match(r"^(?:TASK|RUNNING HANDLER) \[(.*)\] \**$", line)
        if match:
            task = match.group(1)
        elif re.match(r"^(ok|changed): \[%s[\] ]" % re.escape(host), line):
            names.append(task)
    return names


figures = {
    "command": "tests/fleet/deploy-timing.sh --connection %s --forks %s" % (os.environ.get("MCP_DT_CONNECTION"), os.environ["ANSIBLE_FORKS"]) + (" --baseline-install FILE" if "baseline" in variants else ""),
    "fleet": {"source": 1, "members": int(members), "connection": os.environ.get("MCP_DT_CONNECTION"), "forks": int(os.environ["ANSIBLE_FORKS"])},
    "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release()},
    "variants": {},
}
failures = []
for variant in variants:
    logs = {step: read("%s-%s.log" % (variant, step))
            for step in ("converge", "rerun", "small-converge", "small-rerun")}
    rerun = recap(logs["rerun"])
    small_rerun = recap(logs["small-rerun"])
    entry = {}
    for step in ("converge", "rerun", "small-converge", "small-rerun"):
        entry[step] = {
            "seconds": float(read("%s-%s.seconds" % (variant, step))),
            "load_average_1min_before": float(read("%s-%s.load" % (variant, step))),
            "source_results": results_on(logs[step], source),
            "recap": recap(logs[step]),
        }
    # The slowest tasks of the first converge: where a deploy spends its time.
    task_times = json.loads(read("%s-converge.tasks.json" % variant))
    entry["converge"]["slowest_tasks"] = sorted(task_times, key=lambda item: -item[1])[:12]
    entry["verify"] = read("%s-verify.result" % variant).strip()
    changed = {host: counters["changed"] for host, counters in list(rerun.items()) + list(small_rerun.items())
               if counters.get("changed")}
    if changed:
        failures.append("%s: the re-run changed something: %s" % (variant, changed))
    large, small = entry["rerun"]["source_results"], entry["small-rerun"]["source_results"]
    entry["source_results_equal"] = large == small
    if large != small:
        # Name the tasks that differ, which is what a reader has to fix.
        large_tasks, small_tasks = tasks_on(logs["rerun"], source), tasks_on(logs["small-rerun"], source)
        failures.append("%s: the source ran %d task results with %s members and %d with %s: %s"
                        % (variant, large, members, small, small_members,
                           sorted(set(large_tasks) ^ set(small_tasks)) or "same tasks, other loop lengths"))
    figures["variants"][variant] = entry

with open(output, "w") as handle:
    json.dump(figures, handle, indent=2, sort_keys=True)
    handle.write("\n")

print("\n%-10s %-16s %9s %7s %15s" % ("variant", "step", "seconds", "load", "source results"))
for variant, entry in figures["variants"].items():
    for step in ("converge", "rerun", "small-converge", "small-rerun"):
        row = entry[step]
        print("%-10s %-16s %9.1f %7.2f %15d" % (variant, step, row["seconds"], row["load_average_1min_before"],
                                               row["source_results"]))
print("\nwritten to %s" % output)
if failures:
    print("\n".join(["FAILED:"] + failures), file=sys.stderr)
    sys.exit(1)
PY
}

main "$@"
