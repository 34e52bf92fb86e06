#!/bin/sh
# Build the systemd test images of the container fleet from Debian's archive.
#
# No container registry is reachable from the test machines, so each image is a
# debootstrap root filesystem imported with `docker import`. Both steps are
# cached: an existing image is kept, and the debootstrap tarball is kept under
# ~/.cache/multicast-proxy/ so a removed image is re-imported in seconds.
#
# usage: scripts/build-images.sh [RELEASE...]   (default: bookworm)
#        RELEASE is bullseye, bookworm or trixie; "all" builds the three.
# env:   MCP_IMAGE_REPO (default multicast-proxy-test), DEBIAN_MIRROR,
#        MCP_REBUILD=1 to ignore both caches.
set -eu

image_repo=${MCP_IMAGE_REPO:-multicast-proxy-test}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
cache_dir=${XDG_CACHE_HOME:-$HOME/.cache}/multicast-proxy
# What the fleet needs inside each machine: systemd as PID 1 (the relay runs as
# services), sshd (Ansible reaches hosts over SSH), python3 (Ansible modules and
# the relay), iproute2 (the multicast route), procps (sysctl, pgrep for tests).
packages=python3,systemd,systemd-sysv,dbus,openssh-server,iproute2,procps

script_dir=$(cd "$(dirname "$0")" && pwd)

if [ "$#" -eq 0 ]; then
    set -- bookworm
fi
if [ "$1" = all ]; then
    set -- bullseye bookworm trixie
fi

for release in "$@"; do
    case "$release" in
        bullseye|bookworm|trixie) ;;
        *)
            echo "build-images: unknown release '$release'; use bullseye, bookworm, trixie or all" >&2
            exit 2
            ;;
    esac
done

if [ "$(id -u)" -ne 0 ]; then
    echo "build-images: debootstrap needs root; run as root" >&2
    exit 1
fi
if ! command -v debootstrap >/dev/null 2>&1; then
    echo "build-images: debootstrap is not installed; run scripts/bootstrap.sh first" >&2
    exit 1
fi
"$script_dir/ensure-docker.sh"
mkdir -p "$cache_dir"

build_tarball() {
    release=$1
    tarball=$2
    rootfs=$(mktemp -d "${TMPDIR:-/tmp}/mcp-rootfs-$release.XXXXXX")
    # The root filesystem is several hundred MB; never leave it behind.
    trap 'rm -rf "$rootfs"' EXIT INT TERM
    echo "build-images: debootstrap $release (about a minute)" >&2
    if ! debootstrap --variant=minbase --include="$packages" "$release" "$rootfs" "$mirror" \
            >"$cache_dir/debootstrap-$release.log" 2>&1; then
        echo "build-images: debootstrap of $release failed; last lines of $cache_dir/debootstrap-$release.log:" >&2
        tail -n 20 "$cache_dir/debootstrap-$release.log" >&2
        exit 1
    fi
    # Files that must be unique per container or that make no sense in one:
    # host keys are generated at first boot, machine-id by systemd.
    rm -f "$rootfs"/etc/ssh/ssh_host_*
    : >"$rootfs/etc/machine-id"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    # Units that only fail or wait in a container without devices or consoles.
    for unit in getty.target console-getty.service systemd-udevd.service \
            systemd-udev-trigger.service systemd-firstboot.service \
            sys-kernel-config.mount sys-kernel-debug.mount; do
        ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
    done
    # sshd's host keys: created before sshd starts on every boot of a new container.
    cat >"$rootfs/etc/systemd/system/mcp-ssh-hostkeys.service" <<'UNIT'
[Unit]
Description=Generate SSH host keys for this container
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
UNIT
    mkdir -p "$rootfs/etc/systemd/system/multi-user.target.wants"
    ln -sf /etc/systemd/system/mcp-ssh-hostkeys.service \
        "$rootfs/etc/systemd/system/multi-user.target.wants/mcp-ssh-hostkeys.service"
    ln -sf /lib/systemd/system/ssh.service \
        "$rootfs/etc/systemd/system/multi-user.target.wants/ssh.service"
    tar -C "$rootfs" --numeric-owner -czf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
    trap - EXIT INT TERM
}

for release in "$@"; do
    image="$image_repo:$release"
    tarball="$cache_dir/rootfs-$release.tar.gz"
    if [ "${MCP_REBUILD:-0}" = 1 ]; then
        rm -f "$tarball"
        docker image rm -f "$image" >/dev/null 2>&1 || true
    fi
    if docker image inspect "$image" >/dev/null 2>&1; then
        echo "build-images: $image exists (cached)" >&2
        continue
    fi
    if [ ! -s "$tarball" ]; then
        build_tarball "$release" "$tarball"
    else
        echo "build-images: using cached $tarball" >&2
    fi
    docker import -c 'CMD ["/sbin/init"]' \
        -m "debootstrap $release minbase for the multicast.proxy fleet" \
        "$tarball" "$image" >/dev/null
    echo "build-images: built $image" >&2
done
