"""Where the Docker daemon is: read by the config (every command), so it loads no client."""

from __future__ import annotations

import os
from collections.abc import Mapping

DEFAULT_SOCKET = "/var/run/docker.sock"


def docker_url(environ: Mapping[str, str] | None = None) -> str:
    """Where the daemon is: DOCKER_SOCKET (a path), else DOCKER_HOST, else the usual socket."""
    env = os.environ if environ is None else environ
    sock = env.get("DOCKER_SOCKET")
    if sock:
        return sock if "://" in sock else "unix://" + sock
    return env.get("DOCKER_HOST") or "unix://" + DEFAULT_SOCKET
