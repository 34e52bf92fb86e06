#!/usr/bin/env bash
# Unit tests of the modules, filters and templates (tests/unit), run with pytest
# in a collection tree so ansible_collections.multicast.proxy resolves.
# Extra arguments go to pytest; without a test path, all of tests/unit runs.
set -euo pipefail
repo_root=$(cd "$(dirname "$0")/.." && pwd)
# MCP_VENV: another virtualenv (scripts/run-ansible-matrix.sh runs each ansible-core with its own).
venv_bin="${MCP_VENV:-$repo_root/.venv}/bin"
# A tree of its own per run: other runs (CI, other users of this checkout) may
# rebuild build/ at the same time.
mkdir -p "$repo_root/build"
root=$(mktemp -d "$repo_root/build/units.XXXXXX")
trap 'rm -rf "$root"' EXIT
tree=$("$repo_root/scripts/collection-tree.sh" "$root")
cd "$tree"
paths=(tests/unit)
for argument in "$@"; do
    case "$argument" in
        tests/*) paths=() ;;
    esac
done
PYTHONDONTWRITEBYTECODE=1 "$venv_bin/python" -m pytest -p no:cacheprovider "$@" "${paths[@]}"
