#!/bin/sh
# Build the systemd test images of the container fleet from Debian's archive.
#
# No container registry is reachable from the test machines, so each image is a
# debootstrap root filesystem imported with `docker import`. Both steps are
# cached, keyed by the recipe (the package list and recipe_version): an image
# labelled with the current recipe is kept, and the debootstrap tarball of the
# recipe is kept under ~/.cache/multicast-proxy/ so a removed image is
# re-imported in seconds. When the recipe changes, both are rebuilt; the new
# image is imported under a temporary tag, checked, and only then takes the
# release's tag, so containers started from the old image are not disturbed.
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
# the relay), iproute2 (the multicast route), procps (sysctl, pgrep for tests),
# keepalived (the vrrp scenario; its unit does nothing until a scenario writes
# /etc/keepalived/keepalived.conf).
packages=python3,systemd,systemd-sysv,dbus,openssh-server,iproute2,procps,keepalived
# Raise when build_tarball changes what goes into the root filesystem: like a
# change of $packages, it makes every cached tarball and image stale.
recipe_version=1
recipe=$(printf '%s\n%s\n' "$packages" "$recipe_version" | sha256sum | cut -c1-12)

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
    # Tarballs of older recipes (and of the unversioned names before) are stale.
    for old in "$cache_dir/rootfs-$release.tar.gz" "$cache_dir/rootfs-$release"-*.tar.gz; do
        if [ -e "$old" ] && [ "$old" != "$tarball" ]; then
            rm -f "$old"
        fi
    done
    rm -rf "$rootfs"
    trap - EXIT INT TERM
}

image_recipe() {
    docker image inspect -f '{{index .Config.Labels "mcp.recipe"}}' "$1" 2>/dev/null || true
}

# Another run (a scenario of another checkout, say) may be building too: one
# at a time, and whoever waited finds the image the first one built.
exec 9>"$cache_dir/build.lock"
flock 9

for release in "$@"; do
    image="$image_repo:$release"
    tarball="$cache_dir/rootfs-$release-$recipe.tar.gz"
    if [ "${MCP_REBUILD:-0}" = 1 ]; then
        rm -f "$tarball"
    elif [ "$(image_recipe "$image")" = "$recipe" ]; then
        echo "build-images: $image exists (cached, recipe $recipe)" >&2
        continue
    fi
    if [ ! -s "$tarball" ]; then
        build_tarball "$release" "$tarball"
    else
        echo "build-images: using cached $tarball" >&2
    fi
    candidate="$image_repo:$release-candidate-$$"
    docker import -c 'CMD ["/sbin/init"]' -c "LABEL mcp.recipe=$recipe" \
        -m "debootstrap $release minbase for the multicast.proxy fleet (recipe $recipe)" \
        "$tarball" "$candidate" >/dev/null
    # Every package of the recipe must be installed in the new image before it
    # replaces the old one. (The package list is split into words on purpose.)
    # shellcheck disable=SC2046
    if ! docker run --rm --network none "$candidate" \
            dpkg-query -W -f '${Package} ${db:Status-Status}\n' $(echo "$packages" | tr , ' ') \
            >"$cache_dir/check-$release.log" 2>&1 \
            || grep -qv ' installed$' "$cache_dir/check-$release.log"; then
        docker image rm "$candidate" >/dev/null 2>&1 || true
        echo "build-images: $candidate lacks packages of the recipe ($cache_dir/check-$release.log):" >&2
        cat "$cache_dir/check-$release.log" >&2
        echo "build-images: remove $tarball and run again, or MCP_REBUILD=1" >&2
        exit 1
    fi
    previous=$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)
    docker tag "$candidate" "$image"
    docker image rm "$candidate" >/dev/null
    # The old image goes unless containers still run from it (they keep it).
    if [ -n "$previous" ] && [ "$previous" != "$(docker image inspect -f '{{.Id}}' "$image")" ]; then
        docker image rm "$previous" >/dev/null 2>&1 || true
    fi
    echo "build-images: built $image (recipe $recipe)" >&2
done
