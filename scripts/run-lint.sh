#!/usr/bin/env bash
# ansible-lint, production profile, over the repository (config: .ansible-lint).
set -euo pipefail
repo_root=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo_root"
venv_bin="$repo_root/.venv/bin"
# Playbooks and roles refer to multicast.proxy.* by FQCN: make the working copy
# resolvable as that collection (.cache/ is git-ignored).
collections="$repo_root/.cache/lint-collections"
mkdir -p "$collections/ansible_collections/multicast"
ln -sfn "$repo_root" "$collections/ansible_collections/multicast/proxy"
export ANSIBLE_COLLECTIONS_PATH="$collections"
PATH="$venv_bin:$PATH" exec "$venv_bin/ansible-lint" --offline --profile production "$@"
