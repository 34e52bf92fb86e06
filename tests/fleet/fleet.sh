#!/usr/bin/env bash
# Bring a container fleet that behaves like ECS VMs on a VPC up or down.
#
# Every machine is a systemd container on one docker network of its own, with a
# fixed address, reachable over SSH as root with a key made for this fleet. On
# that network multicast between containers is dropped, as a VPC does: an
# nftables bridge-family table drops every bridged IPv4 datagram to
# 224.0.0.0/4 on the fleet's bridge. Unicast (what the relay sends) passes.
#
# usage:
#   fleet.sh up   --name NAME --image IMAGE --subnet CIDR --key FILE HOST=IP...
#   fleet.sh down --name NAME [--key FILE]
#
# NAME (at most 15 characters, letters, digits and '-') names the docker
# network, the bridge interface, the nft table and prefixes nothing else:
# containers are named after their HOST and labelled mcp.fleet=NAME, so `down`
# finds them even after a half-finished `up`. `down` is idempotent and removes
# the containers, the network, the nft table and, with --key, the key pair.
#
# MCP_FLEET_PREFIX (environment, default empty) is put in front of NAME and of
# every container name, so that two checkouts can run the same fleet at once
# (give them different subnets too: docker refuses overlapping ones).
set -euo pipefail

usage() {
    sed -n '/^# usage:/,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//' >&2
    exit 2
}

die() {
    echo "fleet: $*" >&2
    exit 1
}

action=${1:-}
[ -n "$action" ] || usage
shift
name='' image='' subnet='' key=''
hosts=()
while [ "$#" -gt 0 ]; do
    case "$1" in
        --name) name=$2; shift 2 ;;
        --image) image=$2; shift 2 ;;
        --subnet) subnet=$2; shift 2 ;;
        --key) key=$2; shift 2 ;;
        -h|--help) usage ;;
        *=*) hosts+=("$1"); shift ;;
        *) echo "fleet: unexpected argument '$1'" >&2; usage ;;
    esac
done

prefix=${MCP_FLEET_PREFIX:-}
name=$prefix$name
[[ "$name" =~ ^[A-Za-z0-9][A-Za-z0-9-]{0,14}$ ]] \
    || die "MCP_FLEET_PREFIX and --name together must be 1 to 15 letters, digits or '-' (they name a bridge interface), got '$name'"
nft_table="mcp_fleet_${name//-/_}"

fleet_down() {
    local containers
    containers=$(docker ps -aq --filter "label=mcp.fleet=$name")
    if [ -n "$containers" ]; then
        # shellcheck disable=SC2086  # one id per word
        docker rm -f $containers >/dev/null
    fi
    if docker network inspect "$name" >/dev/null 2>&1; then
        docker network rm "$name" >/dev/null
    fi
    if nft list table bridge "$nft_table" >/dev/null 2>&1; then
        nft delete table bridge "$nft_table"
    fi
    if [ -n "$key" ]; then
        rm -f "$key" "$key.pub"
    fi
}

wait_for_ssh() {
    local container=$1 tries=0
    # sshd starts after the host keys are generated at first boot.
    until docker exec "$container" systemctl is-active --quiet ssh.service 2>/dev/null; do
        tries=$((tries + 1))
        if [ "$tries" -ge 90 ]; then
            docker exec "$container" systemctl --no-pager status ssh.service >&2 || true
            die "sshd did not start in $container; see the status above"
        fi
        sleep 1
    done
}

drop_multicast_on_bridge() {
    # The VPC's multicast drop, on this fleet's bridge only: every IPv4
    # datagram to 224.0.0.0/4 that enters from one of its ports. The kernel
    # here lacks `meta ibrname`, so the rule names the ports (the host ends of
    # the containers' veth pairs), which exist once the containers run.
    local ports
    ports=$(ip -o link show master "$name" | awk -F': ' '{print $2}' | sed 's/@.*//' | paste -sd, -)
    [ -n "$ports" ] || die "no ports found on bridge $name"
    nft -f - <<NFT
table bridge $nft_table {
    chain forward {
        type filter hook forward priority 0; policy accept;
        iifname { $ports } ip daddr 224.0.0.0/4 counter drop
    }
}
NFT
}

fleet_up() {
    [ -n "$image" ] || die "--image is required for up"
    [ -n "$subnet" ] || die "--subnet is required for up"
    [ -n "$key" ] || die "--key is required for up"
    [ "${#hosts[@]}" -gt 0 ] || die "name at least one HOST=IP"
    docker image inspect "$image" >/dev/null 2>&1 \
        || die "image $image does not exist; build it with scripts/build-images.sh"

    # A half-built fleet of the same name (an interrupted run) goes first.
    fleet_down

    mkdir -p "$(dirname "$key")"
    ssh-keygen -q -t ed25519 -N '' -C "$name fleet key" -f "$key"

    local gateway
    gateway=$(python3 -c 'import ipaddress,sys; print(next(ipaddress.ip_network(sys.argv[1]).hosts()))' "$subnet")
    docker network create --driver bridge --subnet "$subnet" --gateway "$gateway" \
        -o "com.docker.network.bridge.name=$name" --label "mcp.fleet=$name" "$name" >/dev/null

    local spec host ip
    for spec in "${hosts[@]}"; do
        host=$prefix${spec%%=*}
        ip=${spec#*=}
        # --privileged is refused on these machines: name what systemd and the
        # relay need. systempaths=unconfined makes /proc/sys writable inside the
        # container's own network namespace (igmp_max_memberships).
        docker run -d --name "$host" --hostname "$host" --label "mcp.fleet=$name" \
            --network "$name" --ip "$ip" \
            --stop-signal SIGRTMIN+3 \
            --cap-add SYS_ADMIN --cap-add NET_ADMIN --cap-add NET_RAW \
            --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
            --security-opt systempaths=unconfined \
            --tmpfs /run --tmpfs /run/lock -v /sys/fs/cgroup:/sys/fs/cgroup:ro \
            "$image" /sbin/init >/dev/null
    done
    drop_multicast_on_bridge
    for spec in "${hosts[@]}"; do
        host=$prefix${spec%%=*}
        wait_for_ssh "$host"
        docker exec -i "$host" sh -c \
            'umask 077 && mkdir -p /root/.ssh && cat >/root/.ssh/authorized_keys' <"$key.pub"
    done
    echo "fleet: $name is up (${#hosts[@]} hosts on $subnet, multicast dropped on bridge $name)" >&2
}

case "$action" in
    up) fleet_up ;;
    down) fleet_down; echo "fleet: $name is down" >&2 ;;
    *) usage ;;
esac
