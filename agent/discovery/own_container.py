"""The agent's own container id(s), if it runs in one: never collect ourselves."""

from __future__ import annotations

import os
import re
from pathlib import Path

_HEX64 = re.compile(r"[0-9a-f]{64}")


def own_container_ids(proc: Path = Path("/proc/self")) -> list[str]:
    ids: list[str] = []
    for name in ("cgroup", "mountinfo"):
        try:
            text = (proc / name).read_text()
        except OSError:
            continue
        if name == "mountinfo":
            # /var/lib/docker/containers/<id>/hostname is bind-mounted into every container
            ids += re.findall(r"/containers/([0-9a-f]{64})/", text)
        else:
            ids += _HEX64.findall(text)
    hostname = os.environ.get("HOSTNAME", "")
    if re.fullmatch(r"[0-9a-f]{12}", hostname) and Path("/.dockerenv").exists():
        ids.append(hostname)
    return sorted(set(ids))
