#!/usr/bin/env bash
# Give the tests a real Docker daemon and the busybox test image, on a clean Debian machine.
# Idempotent: installs only what is missing, starts dockerd only if none answers.
# Needs root (apt-get, dockerd). Used by .ci/run and for local runs (see README).
set -euo pipefail

IMAGE="${LOGAGENT_TEST_IMAGE:-logagent-test/busybox:latest}"
SOCK=/var/run/docker.sock
LOG="${DOCKERD_LOG:-/tmp/logagent-dockerd.log}"
CONTAINERD="containerd --config /var/run/docker/containerd/containerd.toml"

if ! command -v dockerd >/dev/null 2>&1 || ! command -v busybox >/dev/null 2>&1 \
   || [ ! -x /bin/busybox ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io busybox-static >/dev/null
fi

daemon_up() { [ -S "$SOCK" ] && docker version >/dev/null 2>&1; }

wait_socket() {
  for _ in $(seq 1 60); do
    daemon_up && return 0
    pgrep -x dockerd >/dev/null 2>&1 || return 1
    sleep 0.5
  done
  return 1
}

start_dockerd() {
  # A pid file left by a daemon that did not stop cleanly makes dockerd refuse to start.
  if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    rm -f /var/run/docker.pid
  fi
  nohup dockerd --iptables=false --ip6tables=false --bridge=none "$@" >>"$LOG" 2>&1 &
}

if ! daemon_up; then
  # A daemon still shutting down (it waits up to 10 s per container) holds the pid file.
  for _ in $(seq 1 120); do pgrep -x dockerd >/dev/null 2>&1 || break; sleep 0.5; done
  # ... and its containerd after it: a new dockerd that finds the old one still running waits
  # for it to answer, and gives up ("timeout waiting for containerd to start").
  for _ in $(seq 1 60); do pgrep -f "$CONTAINERD" >/dev/null 2>&1 || break; sleep 0.5; done
  pkill -KILL -f "$CONTAINERD" 2>/dev/null || true
  start_dockerd
  if ! wait_socket; then
    echo "dockerd did not come up with overlay2; retrying with --storage-driver=vfs" >&2
    pkill -x dockerd || true
    sleep 1
    rm -f /var/run/docker.pid
    start_dockerd --storage-driver=vfs
    wait_socket || { echo "dockerd failed to start; see $LOG" >&2; tail -20 "$LOG" >&2; exit 1; }
  fi
fi

if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
  root=$(mktemp -d)
  mkdir -p "$root/bin"
  cp "$(readlink -f /bin/busybox)" "$root/bin/busybox"
  # `busybox --list` names busybox itself: linking it would overwrite the binary.
  for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] && continue
    ln -sf busybox "$root/bin/$applet"
  done
  mkdir -p "$root/tmp" "$root/etc" "$root/proc" "$root/sys" "$root/dev"
  tar -C "$root" -c . | docker import -c 'ENV PATH=/bin' - "$IMAGE" >/dev/null
  rm -rf "$root"
fi
echo "docker: $(docker version --format '{{.Server.Version}}') image: $IMAGE"
