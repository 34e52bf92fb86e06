#!/bin/sh
# Make sure a Docker daemon answers. On the test machines nothing starts dockerd
# (no init system manages it), so start it in the background when `docker info`
# fails and wait until it is ready. Safe to run any number of times.
set -eu

if docker info >/dev/null 2>&1; then
    exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
    echo "ensure-docker: dockerd is not installed; run scripts/bootstrap.sh first (it installs docker.io)" >&2
    exit 1
fi

log_file=/var/log/dockerd-multicast-proxy.log
echo "ensure-docker: starting dockerd in the background (log: $log_file)" >&2
# setsid: the daemon must outlive the make/CI step that started it.
setsid dockerd >>"$log_file" 2>&1 </dev/null &

attempts=0
until docker info >/dev/null 2>&1; do
    attempts=$((attempts + 1))
    if [ "$attempts" -ge 60 ]; then
        echo "ensure-docker: dockerd did not become ready after 60 tries; last lines of $log_file:" >&2
        tail -n 20 "$log_file" >&2
        exit 1
    fi
    sleep 1
done
echo "ensure-docker: dockerd is ready" >&2
