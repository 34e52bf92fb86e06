#!/usr/bin/env bash
# ansible-test sanity on a copy of the collection at
# build/ansible_collections/multicast/proxy (the layout ansible-test needs).
# Extra arguments go to ansible-test (for example --test validate-modules).
set -euo pipefail
repo_root=$(cd "$(dirname "$0")/.." && pwd)
# MCP_VENV: another virtualenv, with its own ansible-core and that release's
# sanity requirements (scripts/run-ansible-matrix.sh builds them).
venv_bin="${MCP_VENV:-$repo_root/.venv}/bin"
# ansible-test --requirements needs a download that is not reachable offline;
# install its test requirements ourselves (a no-op once they are present).
if [ -z "${MCP_VENV:-}" ]; then
    "$venv_bin/pip" install --quiet -r "$repo_root/requirements-sanity.txt"
fi
# ansible-test bootstraps pip in each of its test venvs with a get-pip script
# it downloads from a host that is not reachable here; a cached script of that
# name is used instead, so give it one built on the standard library's ensurepip.
pip_version=$("$venv_bin/python" -c '
from ansible_test._internal.python_requirements import get_venv_packages
from ansible_test._internal.host_configs import NativePythonConfig
print(get_venv_packages(NativePythonConfig(version="3.11"))["pip"])')
bootstrap="$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py"
if ! grep -q 'multicast.proxy' "$bootstrap" 2>/dev/null; then
    mkdir -p "$(dirname "$bootstrap")"
    cat > "$bootstrap" <<'PY'
"""Offline stand-in for get-pip.py (written by multicast.proxy's run-sanity.sh):
ensurepip, then pip install the arguments."""
import subprocess
import sys

# In a child process: ensurepip.bootstrap() would set PIP_CONFIG_FILE=/dev/null
# in this process and hide the machine's pip configuration (index, CA) from
# the install below.
subprocess.check_call([sys.executable, "-m", "ensurepip"])
arguments = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install"] + arguments))
PY
fi
# A tree of its own per run: other runs (CI, other users of this checkout) may
# rebuild build/ at the same time.
mkdir -p "$repo_root/build"
root=$(mktemp -d "$repo_root/build/sanity.XXXXXX")
trap 'rm -rf "$root"' EXIT
tree=$("$repo_root/scripts/collection-tree.sh" "$root")
# The whole checkout is tested, development tools (bench/, scripts/, tests/,
# extensions/) included: they are Python and YAML the project maintains, so
# they are held to the same pep8/pylint/shebang rules as what galaxy.yml ships.
# The one exception is in tests/sanity/ignore-<version>.txt: the dev tools'
# #!/usr/bin/env python3, which Debian needs (it has no 'python').
cd "$tree"
PATH="$venv_bin:$PATH" "$venv_bin/ansible-test" sanity --python 3.11 --color no "$@"
