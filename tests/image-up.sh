#!/usr/bin/env bash
# What the deploy image's tests need and cannot pull here: a Debian base image with python3,
# made by debootstrap and `docker import`ed, and the agent's wheels built on this host, so
# that `docker build` installs with no network (a build step cannot reach the registries).
# Idempotent; the base is cached as a tarball between runs on one machine. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE="${LOGAGENT_TEST_BASE:-logagent-test/bookworm-python:latest}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PIP=.venv/bin/pip
[ -x "$PIP" ] || { echo "image-up.sh: no .venv here: run tests/run-all.sh (it makes it)" >&2; exit 1; }
# The wheels are this host's: the base's CPython must be the same minor version.
want=$("$PIP" --version | sed -E 's/.*python ([0-9]+\.[0-9]+).*/\1/')
[ "$want" = 3.11 ] || { echo "image-up.sh: .venv is Python $want; bookworm's is 3.11" >&2; exit 1; }
CACHE="${LOGAGENT_CI_CACHE:-/var/cache/logagent-ci}"
SUITE=bookworm
PACKAGES=python3,python3-venv
KEY="$SUITE-minbase-${PACKAGES//,/-}"

if ! docker image inspect "$BASE" >/dev/null 2>&1; then
  tarball="$CACHE/$KEY.tar"
  if [ ! -s "$tarball" ]; then
    command -v debootstrap >/dev/null 2>&1 || {
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    }
    root=$(mktemp -d)
    trap 'rm -rf "$root"' EXIT
    debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" \
      "$MIRROR" >/tmp/logagent-debootstrap.log 2>&1 \
      || { tail -20 /tmp/logagent-debootstrap.log >&2; exit 1; }
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
      "$root"/usr/share/doc/* "$root"/usr/share/man/*
    mkdir -p "$CACHE"
    tar -C "$root" -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
    rm -rf "$root"
  fi
  docker import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV LANG=C.UTF-8' "$tarball" "$BASE" >/dev/null
fi

# The agent and everything it needs at run time, as wheels for `pip install --no-index`.
# setuptools too: the build makes the agent's own wheel from the source, with no network.
rm -f deploy/wheels/*.whl
"$PIP" wheel -q --disable-pip-version-check . setuptools -w deploy/wheels
rm -f deploy/wheels/logagent-*.whl  # the image builds the agent from its source, never this
rm -rf build  # setuptools leaves its build folder in the tree
# The README's `docker compose -f deploy/compose.yaml up`, tested with Debian's compose.
if ! command -v docker-compose >/dev/null 2>&1 && ! docker compose version >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    docker-compose >/dev/null
fi
echo "image base: $BASE ($(ls deploy/wheels/*.whl | wc -l) wheels)"
