#!/usr/bin/env bash
# The relay's unit tests on every Python from 3.6 to 3.13 (the platform
# Pythons of EL 8 / Alibaba Cloud Linux 3 up to Debian 13), each from its own
# virtualenv under build/pyvenv/VERSION with the newest pytest and hypothesis
# that version supports (pip chooses by their Requires-Python).
#
# usage: scripts/run-pyversions.sh
# env:   MCP_PYVERSIONS   versions to run (default "3.6 3.7 3.8 3.9 3.10 3.11 3.12 3.13")
#        MCP_PYENV_ROOT   where the interpreters are (default $PYENV_ROOT or ~/.pyenv)
# A version named there whose interpreter is missing is a failure, not a skip.
set -uo pipefail

repo_root=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo_root"
pyenv_root=${MCP_PYENV_ROOT:-${PYENV_ROOT:-$HOME/.pyenv}}
versions=${MCP_PYVERSIONS:-3.6 3.7 3.8 3.9 3.10 3.11 3.12 3.13}

interpreter_for() {
    # The newest installed patch release of a minor version: 3.6 -> .../3.6.15/bin/python3
    local found
    found=$(ls -d "$pyenv_root"/versions/"$1".* 2>/dev/null | sort -V | tail -1)
    [ -n "$found" ] && [ -x "$found/bin/python3" ] && echo "$found/bin/python3"
}

summary=()
failed=0
for version in $versions; do
    python=$(interpreter_for "$version") || python=""
    if [ -z "$python" ]; then
        summary+=("python $version: FAILED (no interpreter under $pyenv_root/versions)")
        failed=1
        continue
    fi
    venv="build/pyvenv/$version"
    if [ ! -x "$venv/bin/pytest" ]; then
        rm -rf "$venv"
        # The pip bundled with 3.6 does not skip releases whose Requires-Python
        # excludes it: first the last pip that supports the interpreter, which does.
        case "$version" in
            3.6) pip_release="pip<22" ;;
            3.7) pip_release="pip<24.1" ;;
            *) pip_release="pip" ;;
        esac
        if ! "$python" -m venv "$venv" \
                || ! env -u PIP_FIND_LINKS "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
                    --upgrade "$pip_release" \
                || ! env -u PIP_FIND_LINKS "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
                    pytest hypothesis; then
            summary+=("python $version: FAILED (cannot install pytest and hypothesis into $venv)")
            rm -rf "$venv"
            failed=1
            continue
        fi
    fi
    echo "== relay unit tests on $("$venv/bin/python" --version 2>&1)" >&2
    rc=0
    PYTHONDONTWRITEBYTECODE=1 "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/relay/unit || rc=$?
    if [ "$rc" -eq 0 ]; then
        summary+=("python $version: passed")
    else
        summary+=("python $version: FAILED (pytest exit $rc)")
        failed=1
    fi
done
printf '%s\n' "${summary[@]}"
exit "$failed"
