"""Containers' lives in the store: die (with its exit code), oom, kill, health, start, restart.

Written by the agent state's save (storage/state.py), in the transaction that moves the
events position past them: a crash loses neither, and the replay that follows a restart
meets the unique key (host, container, time, action) and stores nothing twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tortoise.backends.base.client import BaseDBAsyncClient

from agent.docker.life_events import LifeEvent
from agent.storage.models import ContainerEvent
from agent.storage.sql import Marks
from agent.timestamps import format_timestamp

TABLE = ContainerEvent._meta.db_table


async def record_life(conn: BaseDBAsyncClient, host: str, events: Sequence[LifeEvent]) -> None:
    """These events, each once (plain SQL: see storage/gaps.py for why not Model.create)."""
    await conn.execute_many(
        f"INSERT INTO {TABLE} (host, container_id, container_name, time_ns, action, "
        f"exit_code, detail) VALUES ({Marks(conn.capabilities.dialect).many(7)}) "
        "ON CONFLICT (host, container_id, time_ns, action) DO NOTHING",
        [
            [host, e.container_id, e.container_name, e.time_ns, e.action, e.exit_code, e.detail]
            for e in events
        ],
    )


async def last_life_id(db: BaseDBAsyncClient, host: str) -> int:
    """The newest event's id on this host (0: none yet), where a new follower begins."""
    _, rows = await db.execute_query(
        f"SELECT MAX(id) FROM {TABLE} WHERE host = {Marks(db.capabilities.dialect)()}", [host]
    )
    return int(rows[0][0] or 0) if rows else 0


@dataclass(frozen=True)
class LifeView:
    id: int
    host: str
    container_id: str
    container_name: str
    time: str  # RFC 3339, nanoseconds
    time_ns: int
    action: str
    exit_code: int | None
    detail: str | None


async def list_life(
    db: BaseDBAsyncClient,
    *,
    container: str | None = None,
    container_ids: Sequence[str] = (),
    host: str | None = None,
    after_id: int | None = None,
    limit: int | None = None,
    since_ns: int | None = None,
    until_ns: int | None = None,
    newest: bool = False,
) -> list[LifeView]:
    """In time order (`newest`: the newest `limit` of them, still in time order);
    `container` is a name or an id prefix, `container_ids` full ids (any of them; none:
    every container); `after_id`: those after it, in id order (a follower's page)."""
    marks = Marks(db.capabilities.dialect)
    where: list[str] = []
    params: list[object] = []
    if container and (prefix := _hex(container)):
        where.append(f"(container_name = {marks()} OR container_id LIKE {marks()})")
        params += [container, prefix + "%"]
    elif container:
        where.append(f"container_name = {marks()}")
        params.append(container)
    if container_ids:
        where.append(f"container_id IN ({marks.many(len(container_ids))})")
        params += list(container_ids)
    if after_id is not None:
        where.append(f"id > {marks()}")
        params.append(after_id)
    if host:
        where.append(f"host = {marks()}")
        params.append(host)
    if since_ns is not None:
        where.append(f"time_ns >= {marks()}")
        params.append(since_ns)
    if until_ns is not None:
        where.append(f"time_ns < {marks()}")
        params.append(until_ns)
    _, rows = await db.execute_query(
        "SELECT id, host, container_id, container_name, time_ns, action, exit_code, detail "
        f"FROM {TABLE}{' WHERE ' + ' AND '.join(where) if where else ''} "
        + (
            "ORDER BY time_ns DESC, id DESC"
            if newest
            else "ORDER BY id"  # a follower's page by id: a cut page resumes after its last
            if after_id is not None
            else "ORDER BY time_ns, id"
        )
        + (f" LIMIT {int(limit)}" if limit is not None else ""),
        params,
    )
    found = [
        LifeView(
            int(r[0]),
            str(r[1]),
            str(r[2]),
            str(r[3]),
            format_timestamp(int(r[4])),
            int(r[4]),
            str(r[5]),
            None if r[6] is None else int(r[6]),
            None if r[7] is None else str(r[7]),
        )
        for r in rows
    ]
    return found[::-1] if newest else found


def _hex(text: str) -> str | None:
    """`text` if it can be an id prefix (hex: no LIKE wildcard can be in it), else None."""
    return text.lower() if text and all(c in "0123456789abcdefABCDEF" for c in text) else None
