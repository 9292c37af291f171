"""Containers' own retention as the store keeps it, cut to what the config now lets a label
ask (`retention.label_max_age`).

A container's row keeps its retention (`max_age_s`) from its last commit. A row written
before the cap, or under a longer one, kept what its label asked — for ever, say — until the
container ran again, and a container that is gone never does. At the agent's start its
retention is worked out again from what the row keeps of how it was run (labels, name,
image), as the collectors' hints would now give it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

from tortoise.backends.base.client import BaseDBAsyncClient

from agent.storage.db import transaction
from agent.storage.models import ContainerCursor
from agent.storage.sql import Marks

TABLE = ContainerCursor._meta.db_table
# A container's retention from its labels, name and image (None: the host's); the hints'.
RetentionOf = Callable[[Mapping[str, str], str, str], float | None]


async def recap(db: BaseDBAsyncClient, host: str, cap_s: float, retention_of: RetentionOf) -> int:
    """This host's rows kept longer than `cap_s` (0: no cap), worked out again; how many
    changed."""
    if cap_s <= 0:
        return 0
    m = Marks(db.capabilities.dialect)
    _, rows = await db.execute_query(
        f"SELECT id, container_name, image, labels, max_age_s FROM {TABLE} WHERE host = {m()} "
        f"AND max_age_s IS NOT NULL AND (max_age_s = 0 OR max_age_s > {m()})",
        [host, int(cap_s)],
    )
    changed: list[list[object]] = []
    for row_id, name, image, text, stored in rows:
        try:
            labels = json.loads(text) if text else {}
        except ValueError:
            labels = {}
        asked = retention_of(labels if isinstance(labels, dict) else {}, name, image or "")
        now = None if asked is None else int(asked)
        if now != stored:
            changed.append([now, row_id])
    if changed:
        m = Marks(db.capabilities.dialect)
        async with transaction() as conn:
            await conn.execute_many(
                f"UPDATE {TABLE} SET max_age_s = {m()} WHERE id = {m()}", changed
            )
    return len(changed)
