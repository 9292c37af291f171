"""What the store keeps of how each container was run (image, compose project and service,
labels), read back for whoever selects containers among the stored ones: the alert rules,
which also judge a container that is gone (its lines read on catch-up).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
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
