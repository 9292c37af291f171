"""Gaps in the store: spans of lines known to be lost for good, and why (agent/gaps.py)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import Q

from agent.batch import Source
from agent.storage.models import Gap
from agent.storage.sql import Marks
from agent.timestamps import format_timestamp

log = logging.getLogger("logagent.storage")


@dataclass(frozen=True)
class GapView:
    host: str
    container_id: str
    container_name: str
    reason: str
    start: str | None
    end: str | None
    recorded: str


async def record_gap(
    db: BaseDBAsyncClient,
    host: str,
    source: Source,
    reason: str,
    from_ns: int | None,
    to_ns: int | None,
) -> None:
    # Plain SQL, not Gap.create(): tortoise caches a model's INSERT across contexts, with
    # the placeholders of the backend it was first built for.
    await db.execute_query(
        f"INSERT INTO {Gap._meta.db_table} (host, container_id, container_name, reason, "
        f"from_ns, to_ns, created_ns) VALUES ({Marks(db.capabilities.dialect).many(7)})",
        [
            host,
            source.container_id,
            source.container_name,
            reason,
            from_ns,
            to_ns,
            time.time_ns(),
        ],
    )
    log.warning(
        "gap recorded for %s (%s): %s", source.container_name, source.container_id[:12], reason
    )


async def list_gaps(container: str | None = None) -> list[GapView]:
    query = Gap.all().order_by("id")
    if container:
        query = query.filter(Q(container_name=container) | Q(container_id__startswith=container))
    return [
        GapView(
            g.host,
            g.container_id,
            g.container_name,
            g.reason,
            format_timestamp(g.from_ns) if g.from_ns is not None else None,
            format_timestamp(g.to_ns) if g.to_ns is not None else None,
            format_timestamp(g.created_ns),
        )
        for g in await query
    ]
