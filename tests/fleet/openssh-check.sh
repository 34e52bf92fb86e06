#!/usr/bin/env bash
# The demo fleet deployed over OpenSSH instead of paramiko: site.yml twice
# (the second run must change nothing), then verify.yml. Run as root after
# `make bootstrap images`; the fleet is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.venv/bin:$PATH"
demo=tests/fleet/demo
MCP_DEMO_DIR=$(mktemp -d /tmp/mcp-demo.XXXXXX); export MCP_DEMO_DIR
trap 'tests/fleet/fleet.sh down --name mcp-demo --key "$MCP_DEMO_DIR/fleet_key" || true; rm -rf "$MCP_DEMO_DIR"' EXIT
scripts/collection-tree.sh "$MCP_DEMO_DIR/collections" >/dev/null
export ANSIBLE_COLLECTIONS_PATH="$MCP_DEMO_DIR/collections"
export ANSIBLE_HOST_KEY_CHECKING=False ANSIBLE_PARAMIKO_RECORD_HOST_KEYS=False
export ANSIBLE_DEPRECATION_WARNINGS=False ANSIBLE_INTERPRETER_PYTHON=/usr/bin/python3
export ANSIBLE_SSH_ARGS="-o ControlMaster=auto -o ControlPersist=60s -o UserKnownHostsFile=/dev/null"
ansible-playbook -i $demo/inventory.yml extensions/molecule/shared/create.yml
ansible-playbook -i $demo/inventory.yml -e ansible_connection=ssh examples/site.yml
ansible-playbook -i $demo/inventory.yml -e ansible_connection=ssh examples/site.yml | tee "$MCP_DEMO_DIR/second.log"
grep -E "changed=[1-9]" "$MCP_DEMO_DIR/second.log" && { echo "SECOND RUN CHANGED SOMETHING"; exit 1; }
ansible-playbook -i $demo/inventory.yml -e ansible_connection=ssh multicast.proxy.verify
echo "SSH-CHECK OK"
