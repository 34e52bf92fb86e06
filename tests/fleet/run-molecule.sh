#!/usr/bin/env bash
# Run one molecule scenario of extensions/molecule/ against the collection as
# users get it (the tree of scripts/collection-tree.sh on
# ANSIBLE_COLLECTIONS_PATH), once per Debian release.
#
# usage: tests/fleet/run-molecule.sh SCENARIO [RELEASE...]
#        RELEASE: bullseye, bookworm (default), trixie, or all
# extra molecule arguments: MOLECULE_ARGS (e.g. "--destroy never" to debug)
# A scenario's fleet has fixed container names and addresses (its inventory)
# and molecule keeps one state directory per scenario: never run the same
# scenario twice at once on one machine; the releases here run one after another.
# A second checkout (whose directory has another name, so molecule gives it
# other state directories) can run a scenario at the same time with
# MCP_FLEET_PREFIX=x- (container and network names, see fleet.sh) and
# MCP_FLEET_NET=172.31.N (the first three octets of the fleet's /24).
# MCP_MOLECULE_CORE=2.16 runs the scenario with that ansible-core release on
# the controller instead of .venv's (2.19): a virtualenv of its own under
# build/ansible-matrix/RELEASE/molecule with that release's newest patch, the
# molecule of requirements-dev.txt and paramiko, built once and kept.
set -euo pipefail

repo_root=$(cd "$(dirname "$0")/../.." && pwd)
scenario=${1:?usage: tests/fleet/run-molecule.sh SCENARIO [RELEASE...]}
shift
releases=("$@")
if [ "${#releases[@]}" -eq 0 ]; then
    releases=(bookworm)
elif [ "${releases[0]}" = all ]; then
    releases=(bullseye bookworm trixie)
fi
if [ ! -f "$repo_root/extensions/molecule/$scenario/molecule.yml" ]; then
    echo "run-molecule: no scenario '$scenario' in extensions/molecule/" >&2
    exit 2
fi

export PATH="$repo_root/.venv/bin:$PATH"
core=${MCP_MOLECULE_CORE:-}
if [ -n "$core" ]; then
    if ! [[ "$core" =~ ^2\.1[6-9]$ ]]; then
        echo "run-molecule: MCP_MOLECULE_CORE '$core' is not an ansible-core release this collection admits (2.16 to 2.19)" >&2
        exit 2
    fi
    core_venv="$repo_root/build/ansible-matrix/$core/molecule"
    molecule_pin=$(grep -E '^molecule==' "$repo_root/requirements-dev.txt")
    wanted="ansible-core==$core.* $molecule_pin paramiko>=3.4"
    if [ "$(cat "$core_venv/.mcp-requirements" 2>/dev/null)" != "$wanted" ]; then
        rm -rf "$core_venv"
        python3 -m venv "$core_venv"
        # shellcheck disable=SC2086  # a list of requirement words
        "$core_venv/bin/python" -m pip install --quiet --disable-pip-version-check $wanted
        printf '%s\n' "$wanted" >"$core_venv/.mcp-requirements"
    fi
    export PATH="$core_venv/bin:$PATH"
    echo "run-molecule: controller $(ansible --version | head -1)" >&2
fi
"$repo_root/scripts/ensure-docker.sh"

# A tree of our own: scripts/collection-tree.sh deletes and rebuilds the tree
# it is given, and lint or sanity may rebuild theirs while a scenario runs.
work=$(mktemp -d "${TMPDIR:-/tmp}/mcp-molecule.XXXXXX")
trap 'rm -rf "$work"' EXIT
"$repo_root/scripts/collection-tree.sh" "$work/collections" >/dev/null
export ANSIBLE_COLLECTIONS_PATH="$work/collections"

cd "$repo_root"
status=0
for release in "${releases[@]}"; do
    echo "run-molecule: scenario $scenario on Debian $release" >&2
    # shellcheck disable=SC2086  # MOLECULE_ARGS is a list of words
    if ! MCP_IMAGE_RELEASE=$release molecule test -s "$scenario" ${MOLECULE_ARGS:-}; then
        echo "run-molecule: scenario $scenario FAILED on $release" >&2
        status=1
    fi
done
exit "$status"
