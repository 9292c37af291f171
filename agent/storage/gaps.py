"""Gaps in the store: spans of lines known to be lost for good, and why (agent/gaps.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import Q

from agent.batch import LineBatch
from agent.storage.models import RATE_GAP, Gap, fit, no_nul
from agent.storage.sql import Marks
from agent.timestamps import format_timestamp


@dataclass(frozen=True)
class GapView:
    host: str
    container_id: str
    container_name: str
    reason: str
    start: str | None
    end: str | None
    recorded: str


async def record_lost(conn: BaseDBAsyncClient, host: str, batches: list[LineBatch]) -> None:
    """The gaps these batches carry, in the writer's transaction."""
    # Plain SQL, not Gap.create(): tortoise caches a model's INSERT across contexts, with
    # the placeholders of the backend it was first built for.
    now = time.time_ns()
    await conn.execute_many(
        f"INSERT INTO {Gap._meta.db_table} (host, container_id, container_name, reason, "
        f"from_ns, to_ns, created_ns) VALUES ({Marks(conn.capabilities.dialect).many(7)})",
        [
            [host, b.source.container_id, fit(b.source.container_name), *b.lost, now]
            for b in batches
            if b.lost is not None
        ],
    )


FORWARD_GAP = "forward"  # lines a forward destination never got (kind); its name: reason


def forward_reason(destination: str) -> str:
    return f"forward {destination}: "


async def record_forward_gaps(
    conn: BaseDBAsyncClient, host: str, destination: str, spans: list[list[Any]]
) -> None:
    """Lines a forward destination will never get (refused for good), per container
    (container id, name, reason, from, to), in the transaction that moves its position."""
    now = time.time_ns()
    head = forward_reason(destination)
    await conn.execute_many(
        f"INSERT INTO {Gap._meta.db_table} (host, container_id, container_name, reason, "
        f"from_ns, to_ns, created_ns, kind) VALUES ({Marks(conn.capabilities.dialect).many(8)})",
        [[host, cid, fit(name), no_nul(head + reason), f, t, now,
          FORWARD_GAP] for cid, name, reason, f, t in spans],
    )  # fmt: skip


async def record_drops(conn: BaseDBAsyncClient, host: str, batches: list[LineBatch]) -> None:
    """Rows a rate limit dropped: one gap per span (agent/shaping/rate.py), replaced by each
    batch that adds to it, in that batch's transaction, so its count is exact after a crash."""
    m = Marks(conn.capabilities.dialect)
    table = Gap._meta.db_table
    spans = [b for b in batches if b.dropped is not None]
    await conn.execute_many(
        f"DELETE FROM {table} WHERE host = {m()} AND container_id = {m()} AND from_ns = {m()} "
        f"AND kind = '{RATE_GAP}'",
        [[host, b.source.container_id, b.dropped.from_ns] for b in spans if b.dropped],
    )
    now = time.time_ns()
    await conn.execute_many(
        f"INSERT INTO {table} (host, container_id, container_name, reason, from_ns, to_ns, "
        f"created_ns, kind) VALUES ({Marks(conn.capabilities.dialect).many(8)})",
        [
            [host, b.source.container_id, fit(b.source.container_name), *_span(b), now, RATE_GAP]
            for b in spans
        ],
    )


def _span(b: LineBatch) -> tuple[str, int, int]:
    assert b.dropped is not None
    return b.dropped.reason, b.dropped.from_ns, b.dropped.to_ns


async def list_gaps(container: str | None = None, forward: str | None = None) -> list[GapView]:
    """The store's gaps; with `forward`, that destination's instead (lines it never got)."""
    query = Gap.all().order_by("id")
    if forward is None:
        query = query.filter(Q(kind__isnull=True) | ~Q(kind=FORWARD_GAP))
    else:
        query = query.filter(kind=FORWARD_GAP, reason__startswith=forward_reason(forward))
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
