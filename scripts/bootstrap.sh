#!/usr/bin/env bash
# Install everything a fresh Debian 12 machine needs to run the demo and the
# tests, as root, without questions: Debian packages (docker.io for the
# container fleet, nftables/iproute2/iperf/socat for the namespace tests,
# debootstrap for the images) and the Python tooling in .venv from
# requirements-dev.txt (+ requirements-sanity.txt). Quick when all is there:
# packages already installed are not asked for again, and the venv is only
# re-installed when a requirements file changed.
set -euo pipefail

repo_root=$(cd "$(dirname "$0")/.." && pwd)
venv="$repo_root/.venv"
packages=(
    python3 python3-venv python3-pip git make ca-certificates
    docker.io nftables iproute2 iperf socat tcpdump procps
    debootstrap openssh-client
    keepalived  # the VRRP tests run Debian's keepalived in network namespaces
    ssmping  # tests/relay/netns/test_ssm.py runs ssmpingd / ssmping across the relay (no service)
    prometheus  # promtool checks and unit-tests files/prometheus (tests/unit/monitoring)
)

if [ "$(id -u)" -ne 0 ]; then
    echo "bootstrap: run as root (it installs Debian packages and starts dockerd)" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: this script is for Debian (12 or later); apt-get was not found" >&2
    exit 1
fi

missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$package")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "bootstrap: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

"$repo_root/scripts/ensure-docker.sh"

requirements=("$repo_root/requirements-dev.txt")
if [ -f "$repo_root/requirements-sanity.txt" ]; then
    requirements+=("$repo_root/requirements-sanity.txt")
fi
stamp="$venv/.mcp-requirements.sha256"
wanted=$(cat "${requirements[@]}" | sha256sum | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ]; then
    echo "bootstrap: creating $venv" >&2
    python3 -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    echo "bootstrap: installing the Python tooling into $venv" >&2
    pip_args=()
    for file in "${requirements[@]}"; do
        pip_args+=(-r "$file")
    done
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet "${pip_args[@]}"
    printf '%s\n' "$wanted" >"$stamp"
fi
core_version=$("$venv/bin/python" -c 'import ansible.release; print(ansible.release.__version__)')
echo "bootstrap: ready (ansible-core $core_version in $venv)" >&2
