#!/usr/bin/env bash
# antsibull-changelog lint (fragments and changelogs/changelog.yaml), then
# ansible-lint, production profile, over the repository (config: .ansible-lint).
# Extra arguments go to ansible-lint.
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
"$venv_bin/antsibull-changelog" lint
"$venv_bin/antsibull-changelog" lint-changelog-yaml --strict changelogs/changelog.yaml
PATH="$venv_bin:$PATH" exec "$venv_bin/ansible-lint" --offline --profile production "$@"
