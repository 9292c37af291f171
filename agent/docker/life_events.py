"""Pure: which of Docker's container events are a container's life, as the store keeps them.

People alert on a container dying (and with what exit code), being killed or OOM-killed,
turning unhealthy, and starting again (issue 25); the rest of /events (create, attach,
exec_*, ...) is the agent's own business. Docker spells health changes
`health_status: unhealthy` and gives the exit code, the signal and the name as attributes
(strings: a label set by whoever runs the container can be anything, so each is bounded).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

KEPT = ("start", "restart", "die", "kill", "oom", "health_status")
HEALTH = ("healthy", "unhealthy", "starting")
_MAX_NAME = 255


@dataclass(frozen=True)
class LifeEvent:
    container_id: str
    container_name: str
    time_ns: int
    action: str  # one of KEPT
    exit_code: int | None = None  # die
    detail: str | None = None  # kill: the signal; health_status: the new status


def life_event(
    action: str, container_id: str, attrs: Mapping[str, str], time_ns: int | None
) -> LifeEvent | None:
    """The event as a container's life knows it, or None if it is not one (or has no time:
    without Docker's timeNano it cannot be stored exactly once)."""
    if time_ns is None or not container_id:
        return None
    kind, _, rest = action.partition(":")
    if kind not in KEPT:
        return None
    name = str(attrs.get("name", "") or container_id[:12])[:_MAX_NAME]
    if kind == "health_status":
        status = rest.strip() or str(attrs.get("health_status", ""))
        return LifeEvent(container_id, name, time_ns, kind, detail=_known(status, HEALTH))
    if kind == "die":
        return LifeEvent(container_id, name, time_ns, kind, exit_code=_code(attrs))
    if kind == "kill":
        return LifeEvent(container_id, name, time_ns, kind, detail=_signal(attrs))
    return LifeEvent(container_id, name, time_ns, kind)


def _code(attrs: Mapping[str, str]) -> int | None:
    text = str(attrs.get("exitCode", ""))
    return int(text) if text.isdigit() and len(text) <= 3 else None


def _signal(attrs: Mapping[str, str]) -> str | None:
    text = str(attrs.get("signal", ""))
    return text if text.isalnum() and len(text) <= 16 else None


def _known(status: str, allowed: tuple[str, ...]) -> str | None:
    return status if status in allowed else None
