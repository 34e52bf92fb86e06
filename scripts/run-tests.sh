#!/usr/bin/env bash
# Run the test suites and end with a summary; exit 1 when any suite failed.
#
# usage: scripts/run-tests.sh [SUITE...]   (default: every suite, in this order)
#   unit        relay unit tests (tests/relay/unit)
#   pyversions  the same on every Python 3.6 to 3.13 under pyenv (scripts/run-pyversions.sh)
#   modules     module, filter and template unit tests (scripts/run-module-units.sh)
#   netns       multi-host relay tests in network namespaces (tests/relay/netns, root)
#   netns-pyversions  the relay tests of netns with the relay on the oldest and the newest Python
#               (MCP_NETNS_PYVERSIONS, default "3.6 3.13", from pyenv; the harness stays on .venv's Python)
#   lint        ansible-lint, production profile (scripts/run-lint.sh)
#   sanity      ansible-test sanity (scripts/run-sanity.sh)
#   molecule    molecule scenarios on the container fleet (tests/fleet/run-molecule.sh)
#   molecule-matrix  the default scenario without its key rotation play on Debian 11 with ansible-core
#               2.16 and on Debian 13 with 2.19 (the full scenario runs in "molecule" on Debian 12)
# env: MCP_MOLECULE_SCENARIOS (default "default membership vrrp dynamic"),
#      MCP_MOLECULE_RELEASES (default "bookworm"; "all" = bullseye bookworm trixie)
#
# Every suite is expected to have tests: pytest's "no tests collected" (exit 5)
# counts as a failure, so a suite that silently lost its tests cannot pass.
set -uo pipefail

repo_root=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo_root"
export PATH="$repo_root/.venv/bin:$PATH"
all_suites=(unit pyversions modules netns netns-pyversions lint sanity ansible-matrix molecule molecule-matrix)
suites=("$@")
if [ "${#suites[@]}" -eq 0 ]; then
    suites=("${all_suites[@]}")
fi
for suite in "${suites[@]}"; do
    case " ${all_suites[*]} " in
        *" $suite "*) ;;
        *) echo "run-tests: unknown suite '$suite'; choose from: ${all_suites[*]}" >&2; exit 2 ;;
    esac
done

pytest_suite() {
    local dir=$1
    shift
    if [ ! -d "$dir" ]; then
        echo "run-tests: $dir does not exist" >&2
        return 1
    fi
    local rc=0
    PYTHONDONTWRITEBYTECODE=1 python -m pytest -p no:cacheprovider "$dir" "$@" || rc=$?
    if [ "$rc" -eq 5 ]; then
        echo "run-tests: pytest collected no tests in $dir, which must have tests" >&2
    fi
    return "$rc"
}

script_suite() {
    local script=$1
    shift
    if [ ! -x "$script" ]; then
        echo "run-tests: $script is missing or not executable" >&2
        return 1
    fi
    "$script" "$@"
}

molecule_suite() {
    local scenario rc=0
    # shellcheck disable=SC2086  # space-separated lists
    for scenario in ${MCP_MOLECULE_SCENARIOS:-default membership vrrp dynamic}; do
        tests/fleet/run-molecule.sh "$scenario" ${MCP_MOLECULE_RELEASES:-bookworm} || rc=1
    done
    return "$rc"
}

netns_pyversions_suite() {
    local version python rc=0
    for version in ${MCP_NETNS_PYVERSIONS:-3.6 3.13}; do
        python=$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$version".* 2>/dev/null | sort -V | tail -1)
        if [ -z "$python" ] || [ ! -x "$python/bin/python3" ]; then
            echo "run-tests: no Python $version under pyenv for netns-pyversions" >&2
            rc=1
            continue
        fi
        echo "run-tests: netns with the relay on $python/bin/python3" >&2
        # The applications' interop, the 64-member churn, verify.yml and promtool runs exercise the
        # relay as the netns suite did already; the rest is every relay behaviour across hosts.
        (export MCPT_RELAY_PYTHON="$python/bin/python3"
         pytest_suite tests/relay/netns --ignore=tests/relay/netns/test_interop.py \
             --ignore=tests/relay/netns/test_dynamic_churn.py --ignore=tests/relay/netns/test_verify_playbook.py \
             --ignore=tests/relay/netns/test_metrics_prometheus.py) || rc=1
    done
    return "$rc"
}

molecule_matrix_suite() {
    local rc=0
    # The oldest ansible-core on the oldest Debian, the newest Debian with .venv's 2.19 (bookworm with
    # 2.19 is the full run of "molecule").
    MCP_VERIFY_ROTATION=false MCP_MOLECULE_CORE=2.16 tests/fleet/run-molecule.sh default bullseye || rc=1
    MCP_VERIFY_ROTATION=false tests/fleet/run-molecule.sh default trixie || rc=1
    return "$rc"
}

run_suite() {
    case "$1" in
        unit) pytest_suite tests/relay/unit ;;
        pyversions) script_suite scripts/run-pyversions.sh ;;
        modules) script_suite scripts/run-module-units.sh ;;
        netns) pytest_suite tests/relay/netns ;;
        lint) script_suite scripts/run-lint.sh ;;
        sanity) script_suite scripts/run-sanity.sh ;;
        ansible-matrix) script_suite scripts/run-ansible-matrix.sh ;;
        molecule) molecule_suite ;;
        netns-pyversions) netns_pyversions_suite ;;
        molecule-matrix) molecule_matrix_suite ;;
    esac
}

summary=()
failed=0
for suite in "${suites[@]}"; do
    echo "==================== run-tests: $suite ====================" >&2
    started=$SECONDS
    rc=0
    run_suite "$suite" </dev/null || rc=$?
    elapsed=$((SECONDS - started))
    if [ "$rc" -eq 0 ]; then
        summary+=("$(printf '  %-14s PASS   %5ss' "$suite" "$elapsed")")
    else
        summary+=("$(printf '  %-14s FAIL   %5ss  (exit %s)' "$suite" "$elapsed" "$rc")")
        failed=1
    fi
done

echo
echo "==================== test summary ===================="
printf '%s\n' "${summary[@]}"
if [ "$failed" -ne 0 ]; then
    echo "RESULT: FAILED (scroll up to the suite's '==== run-tests: NAME ====' banner for details)"
    exit 1
fi
echo "RESULT: all ${#suites[@]} suites passed"
