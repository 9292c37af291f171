"""Pure: which containers an alert rule watches, and where a container may ask its alerts
to go.

Each list is alternatives (globs); the lists given must all hold: `names = ["web-*"]` with
`images = ["nginx:*"]` is the web containers run from nginx. A container is judged as the
store describes it (storage/described.py), so a rule also judges one that is gone.

A container's label `logagent.alert.destinations` may name destinations (comma-separated)
that its rule lists in `label_destinations`: they are added to the rule's own, which a label
can never take away — a label is set by whoever runs the container, so it picks among what
the operator allowed, never a URL of its own, and never silences the rule's pager.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from agent.alerts.destinations import AlertConfigError
from agent.storage.described import StoredContainer

KEYS = ("names", "images", "projects", "services", "labels")
DESTINATIONS_LABEL = "logagent.alert.destinations"
MAX_GLOBS = 100


@dataclass(frozen=True)
class Selection:
    names: tuple[str, ...] = ()
    images: tuple[str, ...] = ()
    projects: tuple[str, ...] = ()  # compose projects
    services: tuple[str, ...] = ()  # compose services
    labels: tuple[str, ...] = ()  # `key` or `key=value`, both sides globs

    def picks(self, c: StoredContainer) -> bool:
        return (
            _any(self.names, c.name)
            and _any(self.images, c.image)
            and _any(self.projects, c.project)
            and _any(self.services, c.service)
            and (not self.labels or any(_label(p, c.labels.items()) for p in self.labels))
        )

    def shown(self) -> dict[str, list[str]]:
        return {k: list(getattr(self, k)) for k in KEYS if getattr(self, k)}


def parse_selection(table: dict[str, Any], where: str) -> Selection:
    lists: dict[str, tuple[str, ...]] = {}
    for key in KEYS:
        globs = table.get(key, [])
        if (
            not isinstance(globs, list)
            or len(globs) > MAX_GLOBS
            or not all(isinstance(g, str) and 0 < len(g) <= 255 for g in globs)
        ):
            raise AlertConfigError(f"{where}.{key}: expected a list of globs")
        lists[key] = tuple(globs)
    return Selection(**lists)


def picked_destinations(
    c: StoredContainer, allowed: frozenset[str], own: tuple[str, ...]
) -> tuple[str, ...]:
    """The rule's own destinations, and those of `allowed` the container's label names."""
    said = c.labels.get(DESTINATIONS_LABEL, "")
    picked = [d.strip() for d in said.split(",")[:64] if d.strip() in allowed]
    return tuple(dict.fromkeys([*own, *picked]))


def _any(globs: tuple[str, ...], value: str) -> bool:
    return not globs or any(fnmatchcase(value, g) for g in globs)


def _label(pattern: str, labels: Iterable[tuple[str, str]]) -> bool:
    key, sep, value = pattern.partition("=")
    return any(fnmatchcase(k, key) and (not sep or fnmatchcase(v, value)) for k, v in labels)
