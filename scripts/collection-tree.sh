#!/usr/bin/env bash
# Build ROOT/ansible_collections/multicast/proxy (ROOT defaults to build/) from
# the files git knows about (tracked plus untracked-but-not-ignored), the layout
# ansible-test and ansible-galaxy expect. Prints the tree's path on stdout.
# Callers that may run at the same time pass their own ROOT: the tree is
# deleted and rebuilt on every call.
set -euo pipefail

repo_root=$(cd "$(dirname "$0")/.." && pwd)
root=${1:-$repo_root/build}
mkdir -p "$root"
root=$(cd "$root" && pwd)
tree="$root/ansible_collections/multicast/proxy"

rm -rf "$tree"
mkdir -p "$tree"
cd "$repo_root"
# ls-files -c also lists tracked files deleted from the worktree: keep only
# paths that still exist. Symlinks (files/multicast_proxy/relay_config.py) stay
# symlinks; their targets are inside the tree.
git ls-files -z -co --exclude-standard \
    | while IFS= read -r -d '' path; do
        if [ -e "$path" ] || [ -L "$path" ]; then printf '%s\0' "$path"; fi
    done \
    | tar --null -T - -cf - \
    | tar -xf - -C "$tree"
# Inside /work/main's work tree ansible-test would ask the outer repository
# (where build/ is ignored) which files exist; a repository of its own makes it
# list exactly the files copied here.
git -C "$tree" init -q
printf '%s\n' "$tree"
