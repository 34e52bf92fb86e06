#!/usr/bin/env bash
# Install everything a fresh Debian 12 machine needs to run the demo and the
# tests, as root, without questions: Debian packages (docker.io for the
# container fleet, nftables/iproute2/iperf/socat for the namespace tests,
# the applications of the interop suite, debootstrap for the images) and the Python tooling in .venv from
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
    # the interop suite (tests/relay/netns/test_interop.py) runs these applications
    udpcast gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
    avahi-daemon avahi-utils dbus corosync util-linux
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
# Daemons the tests run in namespaces of their own; installing them must not
# leave them running on this machine (avahi would announce it on the real
# network): a policy-rc.d keeps the packages from starting them, and the
# ones this run installed are disabled afterwards.
host_services=(avahi-daemon.socket avahi-daemon.service corosync.service)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "bootstrap: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    policy=/usr/sbin/policy-rc.d
    own_policy=false
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# bootstrap.sh: no service starts during its install\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        own_policy=true
    fi
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
    if [ "$own_policy" = true ]; then
        rm -f "$policy"
    fi
    if [ -d /run/systemd/system ]; then
        for unit in "${host_services[@]}"; do
            package=${unit%%.*}
            if [[ " ${missing[*]} " == *" $package "* ]]; then
                systemctl disable --now "$unit" >/dev/null 2>&1 || true
            fi
        done
    fi
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
