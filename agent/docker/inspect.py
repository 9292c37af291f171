"""A container's inspect, parsed once at the edge into the few facts the agent reads (pure).

Vector's `ContainerMetadata::from_details` does the same: the daemon's answer is ~19 KB of
nested dicts (3.8 MB for 200 idle containers, by tracemalloc), and digging into it with
`info.get("Config") or {}` in every part made each part know its shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"
# Labels the store keeps of a container (whoever runs it sets them): this many, each key and
# value cut to the store's name width.
MAX_KEPT_LABELS = 64
_LABEL_WIDTH = 255
_FIRST_LABELS = ("logagent.", "com.docker.compose.")


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    """What the agent uses of `GET /containers/{id}/json`."""

    id: str
    name: str  # without Docker's leading "/"
    image: str = ""  # Config.Image: what it was run as
    labels: Mapping[str, str] = field(default_factory=dict)
    tty: bool = False
    auto_remove: bool = False  # --rm: Docker ends its stream as it removes it
    log_max_size: str = ""  # the json-file driver's max-size, as given ("10m"), or ""
    running: bool = False
    status: str = ""  # State.Status: created, running, exited, removing, dead, ...
    created_s: int = 0  # when it was created (Unix seconds; listings only)
    started_at: str = ""  # State.StartedAt: which run of it this is (inspect only)

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> ContainerInfo:
        config = raw.get("Config") or {}
        host = raw.get("HostConfig") or {}
        state = raw.get("State") or {}
        log_config = (host.get("LogConfig") or {}).get("Config") or {}
        cid = str(raw.get("Id") or "")
        labels = config.get("Labels") or {}
        return cls(
            id=cid,
            name=str(raw.get("Name") or "").lstrip("/") or cid[:12],
            image=str(config.get("Image") or ""),
            labels={str(k): str(v) for k, v in labels.items()},
            tty=bool(config.get("Tty")),
            auto_remove=bool(host.get("AutoRemove")),
            log_max_size=str(log_config.get("max-size") or ""),
            running=bool(state.get("Running")),
            status=str(state.get("Status") or ""),
            started_at=str(state.get("StartedAt") or ""),
        )

    @classmethod
    def listed(cls, raw: Mapping[str, Any]) -> ContainerInfo:
        """A container as `GET /containers/json` lists it (a shape of its own). Not for
        opening a stream: a listing has no TTY, `--rm` or log size (they stay False, "")."""
        cid = str(raw.get("Id") or "")
        names = raw.get("Names") or ["/" + cid[:12]]
        labels = raw.get("Labels") or {}
        status = str(raw.get("State") or "")
        return cls(
            id=cid,
            name=str(names[0]).lstrip("/") or cid[:12],
            image=str(raw.get("Image") or ""),
            labels={str(k): str(v) for k, v in labels.items()},
            running=status == "running",
            status=status,
            created_s=int(raw.get("Created") or 0),
        )

    @property
    def project(self) -> str | None:
        """Its compose project (a label), for the viewer's grouping."""
        return self.labels.get(COMPOSE_PROJECT) or None

    @property
    def service(self) -> str | None:
        """Its compose service (a label): with the project, a history across containers."""
        return self.labels.get(COMPOSE_SERVICE) or None

    @property
    def kept_labels(self) -> tuple[tuple[str, str], ...]:
        """Its labels as the store keeps them: at most MAX_KEPT_LABELS — ours and compose's
        first, then the others in order (an image's many `org.*` cannot push out ours) —
        each key and value cut to 255 characters, NULs replaced (PostgreSQL's text cannot
        hold one); then sorted."""
        ranked = sorted(
            self.labels.items(), key=lambda kv: (not kv[0].startswith(_FIRST_LABELS), kv[0])
        )
        return tuple(
            sorted(
                (
                    k[:_LABEL_WIDTH].replace("\x00", "\ufffd"),
                    v[:_LABEL_WIDTH].replace("\x00", "\ufffd"),
                )
                for k, v in ranked[:MAX_KEPT_LABELS]
            )
        )

    @property
    def going(self) -> bool:
        """Removed, or on its way out."""
        return self.status in ("removing", "dead")


def _fit(text: str) -> str:
    return text[:_LABEL_WIDTH].replace("\x00", "\ufffd")
