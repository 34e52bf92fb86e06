#!/usr/bin/env bash
# The newcomer's first command (make demo): on a fresh Debian 12 machine, as
# root, show the product doing its job end to end.
#   1. install what is needed (scripts/bootstrap.sh)
#   2. build a fleet of four containers (one source, three members) on a
#      network that drops multicast, as a cloud VPC does
#   3. check that multicast really does not cross it
#   4. deploy the relay with ansible-playbook and the collection
#   5. send a stream from the source and print what each member received
#   6. tear everything down (also when a step fails or on Ctrl-C)
set -euo pipefail

repo_root=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo_root"
demo=tests/fleet/demo

step() {
    printf '\n=== %s\n' "$*"
}

step "1/6 Installing what is needed"
scripts/bootstrap.sh
export PATH="$repo_root/.venv/bin:$PATH"

MCP_DEMO_DIR=$(mktemp -d "${TMPDIR:-/tmp}/mcp-demo.XXXXXX")
export MCP_DEMO_DIR
cleanup() {
    step "6/6 Tearing the fleet down"
    tests/fleet/fleet.sh down --name mcp-demo --key "$MCP_DEMO_DIR/fleet_key" || true
    rm -rf "$MCP_DEMO_DIR"
}
trap cleanup EXIT

# The collection as users install it: a tree on ANSIBLE_COLLECTIONS_PATH.
scripts/collection-tree.sh "$MCP_DEMO_DIR/collections" >/dev/null
export ANSIBLE_COLLECTIONS_PATH="$MCP_DEMO_DIR/collections"
export ANSIBLE_HOST_KEY_CHECKING=False ANSIBLE_PARAMIKO_RECORD_HOST_KEYS=False
export ANSIBLE_DEPRECATION_WARNINGS=False ANSIBLE_INTERPRETER_PYTHON=/usr/bin/python3

step "2/6 Building the fleet (the first run builds a Debian image: about 2 minutes)"
ansible-playbook -i $demo/inventory.yml extensions/molecule/shared/create.yml

step "3/6 Checking that the network drops multicast (nothing may arrive yet)"
ansible-playbook -i $demo/inventory.yml extensions/molecule/shared/prepare.yml

step "4/6 Deploying the relay: ansible-playbook -i $demo/inventory.yml examples/site.yml"
ansible-playbook -i $demo/inventory.yml examples/site.yml

step "5/6 Sending a multicast stream from the source"
ansible-playbook -i $demo/inventory.yml $demo/stream.yml
python3 - "$MCP_DEMO_DIR/results.json" <<'PY'
import json
import sys

with open(sys.argv[1]) as handle:
    results = json.load(handle)
sent = results["sent"]
print("\n%-18s %10s %10s %8s" % ("member", "received", "sent", "share"))
worst = 1.0
for member, stats in sorted(results["members"].items()):
    share = stats["unique"] / sent if sent else 0.0
    worst = min(worst, share)
    print("%-18s %10d %10d %7.2f%%" % (member, stats["unique"], sent, 100 * share))
if worst < 0.999:
    print("\nSome member received less than 99.9% of the stream: see the deploy output above.")
    sys.exit(1)
print("\nEvery member received the stream through the relay.")
PY
