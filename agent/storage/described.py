"""What the store keeps of how each container was run (image, compose project and service,
labels), read back for whoever selects containers among the stored ones: the alert rules
and the forward destinations, which also judge a container that is gone (its lines read on
catch-up), and the OTLP and Loki records (a resource's image and compose names).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the config's rules name StoredContainer: it must load no ORM
    from tortoise.backends.base.client import BaseDBAsyncClient


@dataclass(frozen=True)
class StoredContainer:
    container_id: str
    name: str
    image: str = ""
    project: str = ""
    service: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)


async def described_containers(
    db: BaseDBAsyncClient, host: str, ids: list[str]
) -> dict[str, StoredContainer]:
    """These containers of this host as the store describes them (one it has no row of is
    left out; a row written before layout 9 has no image, service or labels)."""
    from agent.storage.cursors import rows_of  # the ORM's models: not for the config

    found: dict[str, StoredContainer] = {}
    columns = "container_name, image, project, service, labels"
    for cid, name, image, project, service, labels in await rows_of(db, host, ids, columns):
        found[str(cid)] = StoredContainer(
            str(cid), str(name), image or "", project or "", service or "", _labels(labels)
        )
    return found


def described_as(
    containers: Mapping[str, StoredContainer] | None, container_id: str, name: str
) -> StoredContainer:
    """A row's container as the store describes it, under the name the row was read with:
    a description kept from before has the name it had then (renamed since)."""
    found = containers.get(container_id) if containers is not None else None
    if found is None:
        return StoredContainer(container_id, name)
    return found if found.name == name else replace(found, name=name)


class Described:
    """The containers a follower of the store meets a step at a time, as the store describes
    them: kept once it has them (a container's image, compose project and labels do not
    change; its name may: judge a row's container with `described_as`, under the row's
    name); one it knows nothing of yet (no image: its first identity not yet written) is
    asked again at the next step."""

    def __init__(self, db: BaseDBAsyncClient, host: str, *, keep: int = 10_000) -> None:
        self.db, self.host, self.keep = db, host, keep
        self._kept: dict[str, StoredContainer] = {}

    async def of(
        self, ids: Collection[str], conn: BaseDBAsyncClient | None = None
    ) -> dict[str, StoredContainer]:
        """These containers, those the store has a row of (read on `conn` if given: the
        server a step's rows came from)."""
        kept = self._kept
        out = {cid: kept[cid] for cid in ids if cid in kept}
        wanted = [cid for cid in ids if cid not in kept]
        if wanted:
            if len(kept) > self.keep:
                kept.clear()
            for cid, c in (await described_containers(conn or self.db, self.host, wanted)).items():
                out[cid] = c
                if c.image:
                    kept[cid] = c
        return out


def _labels(text: object) -> dict[str, str]:
    if not isinstance(text, str) or not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items()}
