#!/usr/bin/env bash
# The module, filter and role unit tests and ansible-test sanity on every
# ansible-core that galaxy's requires_ansible admits besides the one in .venv
# (2.19, which `make modules` and `make sanity` run): 2.16, 2.17 and 2.18, on
# this controller's Python 3.11. Each release gets two virtualenvs under
# build/ansible-matrix/<release>/: "units" (ansible-core, pytest, hypothesis)
# and "sanity" (ansible-core and the sanity requirements that release's
# ansible-test pins, from its _data/requirements), kept between runs and
# rebuilt when the release's requirements change.
#
# usage: scripts/run-ansible-matrix.sh [RELEASE...]     (default: 2.16 2.17 2.18)
set -uo pipefail
repo_root=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo_root"
releases=("$@")
if [ "${#releases[@]}" -eq 0 ]; then
    releases=(2.16 2.17 2.18)
fi
python=${MCP_MATRIX_PYTHON:-python3}
# The sanity tests whose requirements are installed; the others need none
# beyond ansible-core, or do not apply to a collection.
sanity_requirements=(pylint pep8 validate-modules yamllint runtime-metadata ansible-doc changelog)

for release in "${releases[@]}"; do
    if ! [[ "$release" =~ ^2\.(1[6-9])$ ]]; then
        echo "run-ansible-matrix: '$release' is not an ansible-core release this collection admits (2.16 to 2.19)" >&2
        exit 2
    fi
done

# venv DIR REQUIREMENT...: a virtualenv with exactly these pip arguments installed once.
venv() {
    local dir=$1
    shift
    local wanted
    # The arguments and the content of the requirement files they name.
    wanted=$({ printf '%s\n' "$@"; for argument in "$@"; do [ -f "$argument" ] && cat "$argument"; done; } \
             | sha256sum | cut -d' ' -f1)
    if [ -x "$dir/bin/python" ] && [ "$(cat "$dir/.mcp-requirements" 2>/dev/null)" = "$wanted" ]; then
        return 0
    fi
    rm -rf "$dir"
    "$python" -m venv "$dir" || return 1
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$@" || return 1
    printf '%s\n' "$wanted" >"$dir/.mcp-requirements"
}

summary=()
failed=0
note() {
    summary+=("$(printf '  ansible-core %-5s %-7s %s' "$1" "$2" "$3")")
    if [ "$3" != PASS ]; then
        failed=1
    fi
}

for release in "${releases[@]}"; do
    base="$repo_root/build/ansible-matrix/$release"
    core="ansible-core==$release.*"
    echo "==================== ansible-core $release: units ====================" >&2
    if venv "$base/units" "$core" "pytest>=8" "hypothesis>=6.100" pyyaml paramiko; then
        version=$("$base/units/bin/python" -c 'import ansible.release; print(ansible.release.__version__)')
        if MCP_VENV="$base/units" scripts/run-module-units.sh -q </dev/null; then
            note "$version" units PASS
        else
            note "$version" units FAIL
        fi
    else
        note "$release" units "FAIL (could not build $base/units)"
    fi

    echo "==================== ansible-core $release: sanity ====================" >&2
    if venv "$base/sanity-core" "$core"; then
        data=$("$base/sanity-core/bin/python" -c 'import ansible_test, os; print(os.path.join(os.path.dirname(ansible_test.__file__), "_data", "requirements"))')
        args=("$core")
        for test in "${sanity_requirements[@]}"; do
            if [ -f "$data/sanity.$test.txt" ]; then
                args+=(-r "$data/sanity.$test.txt")
            fi
        done
        if venv "$base/sanity" "${args[@]}"; then
            version=$("$base/sanity/bin/python" -c 'import ansible.release; print(ansible.release.__version__)')
            if MCP_VENV="$base/sanity" scripts/run-sanity.sh </dev/null; then
                note "$version" sanity PASS
            else
                note "$version" sanity FAIL
            fi
        else
            note "$release" sanity "FAIL (could not build $base/sanity)"
        fi
    else
        note "$release" sanity "FAIL (could not build $base/sanity-core)"
    fi
done

echo
echo "==================== ansible-core matrix ===================="
printf '%s\n' "${summary[@]}"
exit "$failed"
