#!/usr/bin/env bash
# The relay's units as the roles render them, for each kind of host, and
# systemd-analyze's exposure of each (docs/threat-model.md, "Privilege").
# Usage: scripts/unit-exposure.sh [SYSTEMD_RELEASE]   (default: this machine's)
# The units are rendered by tests/unit/plugins/filter/test_relay_units.py's
# render_unit, the template the common role's unit task renders; the score
# is `systemd-analyze security --offline=yes` of this machine's systemd.
set -euo pipefail
repo_root=$(cd "$(dirname "$0")/.." && pwd)
release=${1:-$(systemctl --version | awk 'NR == 1 {print $2}')}
mkdir -p "$repo_root/build"
root=$(mktemp -d "$repo_root/build/exposure.XXXXXX")
trap 'rm -rf "$root"' EXIT
tree=$("$repo_root/scripts/collection-tree.sh" "$root/tree")
# name, side, capabilities (as relay_capabilities computes them)
variants=(
    "server-default server CAP_NET_BIND_SERVICE"
    "server-capture-or-vrrp server CAP_NET_BIND_SERVICE,CAP_NET_RAW"
    "server-ephemeral-source-port server -"
    "client-default client -"
    "client-preserve-source-or-vrrp client CAP_NET_RAW"
)
printf 'systemd %s units, scored by %s\n' "$release" "$(systemctl --version | head -1)"
for variant in "${variants[@]}"; do
    read -r name side capabilities <<<"$variant"
    unit=$([ "$side" = server ] && echo multis_monitord || echo multic_monitord).service
    mkdir -p "$root/$name"
    "$repo_root/.venv/bin/python" - "$root/tree" "$side" "$release" "$capabilities" >"$root/$name/$unit" <<'PY'
import sys
from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder
_AnsibleCollectionFinder(paths=[sys.argv[1]])._install()
from ansible_collections.multicast.proxy.tests.unit.plugins.filter.test_relay_units import render_unit
capabilities = [] if sys.argv[4] == "-" else sys.argv[4].split(",")
sys.stdout.write(render_unit(sys.argv[2], capabilities, int(sys.argv[3])))
PY
    score=$(cd "$root/$name" && systemd-analyze security --offline=yes "$unit" 2>&1 | tail -1)
    printf '%-32s %-34s %s\n' "$name" "${capabilities//,/ }" "${score#*: }"
done
