"""Containers' rows in the store: the source id their lines carry, and their read position.

A container's row is made before its first line is stored; its position is committed by the
writer in the same transaction as its lines (agent/storage/writer.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any, cast

from tortoise.backends.base.client import BaseDBAsyncClient

from agent.batch import RETENTION_UNSAID, STREAMS, Source
from agent.cursor import Cursor
from agent.storage.models import ContainerCursor, fit
from agent.storage.sql import Marks

TABLE = ContainerCursor._meta.db_table
NEWLINE = "'\n'"  # SQL: a newline's literal
FORMER_NAMES_MAX = 4096  # characters of a container's former names kept (~100 names)
_CHUNK = 500  # ids per query: under SQLite's and asyncpg's limits on parameters


# A row's position: per stream, its last timestamp and how many lines carried it.
_POSITION = ", ".join(f"{s}_ts, {s}_n" for s in STREAMS)


def _position(row: Sequence[Any]) -> dict[str, tuple[int | None, int | None]]:
    """The `_POSITION` columns of a row, per stream ((None, n) for a stream never read)."""
    return {s: (row[2 * i], row[2 * i + 1]) for i, s in enumerate(STREAMS)}


async def load_cursor(db: BaseDBAsyncClient, host: str, container_id: str) -> Cursor:
    """The committed position of a container on this host (empty if none)."""
    marks = Marks(db.capabilities.dialect)
    _, rows = await db.execute_query(
        f"SELECT {_POSITION} FROM {TABLE} WHERE host = {marks()} AND container_id = {marks()}",
        [host, container_id],
    )
    return _cursor(list(rows[0])) if rows else Cursor()


async def load_cursors(
    db: BaseDBAsyncClient, host: str, container_ids: list[str]
) -> dict[str, Cursor]:
    """The committed positions of these containers on this host, in a few queries (an
    empty cursor for one the store has none of): a listing of 1,000 containers asked once
    per container took a second of the start-up."""
    found: dict[str, Cursor] = {cid: Cursor() for cid in container_ids}
    for row in await rows_of(db, host, container_ids, _POSITION):
        found[str(row[0])] = _cursor(list(row)[1:])
    return found


async def present(db: BaseDBAsyncClient, host: str, before_ns: int) -> list[Sequence[Any]]:
    """(container id, name, state, newest stored line's ns or None) of this host's
    containers the store does not show as removed, unchanged since `before_ns`."""
    m = Marks(db.capabilities.dialect)
    _, rows = await db.execute_query(
        f"SELECT container_id, container_name, state, stdout_ts, stderr_ts, tty_ts "
        f"FROM {TABLE} WHERE host = {m()} AND (state IS NULL OR state <> 'removed') "
        f"AND updated_ns < {m()}",
        [host, before_ns],
    )
    return [
        (r[0], r[1], r[2], max((int(t) for t in r[3:6] if t is not None), default=None))
        for r in rows
    ]


async def rows_of(
    db: BaseDBAsyncClient, host: str, container_ids: list[str], columns: str
) -> list[Sequence[Any]]:
    """`container_id, <columns>` of these containers' rows on this host, _CHUNK ids a query."""
    out: list[Sequence[Any]] = []
    for at in range(0, len(container_ids), _CHUNK):
        chunk = container_ids[at : at + _CHUNK]
        marks = Marks(db.capabilities.dialect)
        _, rows = await db.execute_query(
            f"SELECT container_id, {columns} FROM {TABLE} "
            f"WHERE host = {marks()} AND container_id IN ({marks.many(len(chunk))})",
            [host, *chunk],
        )
        out += cast("list[Sequence[Any]]", rows)  # typed as dicts: rows that iterate values
    return out


async def source_ids(db: BaseDBAsyncClient, container_ids: list[str]) -> list[int]:
    """The rows' ids (their lines' source_id) of these containers, on every host."""
    found: list[int] = []
    for at in range(0, len(container_ids), _CHUNK):
        chunk = container_ids[at : at + _CHUNK]
        marks = Marks(db.capabilities.dialect)
        _, rows = await db.execute_query(
            f"SELECT id FROM {TABLE} WHERE container_id IN ({marks.many(len(chunk))})", chunk
        )
        found += [int(r[0]) for r in rows]
    return found


def _cursor(position_columns: list[Any]) -> Cursor:
    cursor = Cursor()
    for stream, (ts, n) in _position(position_columns).items():
        if ts is not None:
            cursor.positions[stream] = [int(ts), int(n or 0)]
    return cursor


async def add_sources(conn: BaseDBAsyncClient, host: str, sources: list[Source]) -> dict[str, int]:
    """Give each container its row (once): container id → the row's id, which its lines
    carry. The caller hands the ids out only once this transaction has committed: a commit
    that failed (a full disk) must leave no source believing it has a row."""
    dialect = conn.capabilities.dialect
    now = time.time_ns()
    insert = (
        f"INSERT INTO {TABLE} (host, container_id, container_name, stdout_n, stderr_n, "
        f"tty_n, lines, bytes, updated_ns, image, service, labels) "
        f"VALUES ({Marks(dialect).many(12)}) ON CONFLICT (host, container_id) DO NOTHING"
    )
    await conn.execute_many(
        insert,
        [[host, s.container_id, fit(s.container_name), 0, 0, 0, 0, 0, now, *described(s)]
         for s in sources],
    )  # fmt: skip
    marks = Marks(dialect)
    _, found = await conn.execute_query(
        f"SELECT container_id, id FROM {TABLE} "
        f"WHERE host = {marks()} AND container_id IN ({marks.many(len(sources))})",
        [host, *(s.container_id for s in sources)],
    )
    return {str(cid): int(sid) for cid, sid in found}


def position_sql(dialect: str) -> str:
    """What each commit sets in a container's row; a stream not yet read keeps its NULL."""
    m = Marks(dialect)
    # A name it no longer has (`docker rename`, also while the agent was down) is kept in
    # former_names, each followed by a newline: `logs OLDNAME` still finds its history. Once
    # each, the newest up to about FORMER_NAMES_MAX characters (past it, the oldest goes):
    # whoever runs a container may rename it in a loop (a review's 2,000 renames between
    # two names kept 122 KB in its row, read at every lookup of a name).
    kept = "COALESCE(former_names, '')"
    find = "instr({}, {})" if m.sqlite else "strpos({}, {})"
    known = find.format(f"'\n' || {kept}", "'\n' || container_name || '\n'")
    # Past the bound, its last FORMER_NAMES_MAX characters from the first whole name in them
    # (names are 255 characters at most: some always fit).
    grown = f"({kept} || container_name || '\n')"
    tail = f"substr({grown}, length({grown}) - {FORMER_NAMES_MAX} + 1)"
    cut = f"substr({tail}, {find.format(tail, NEWLINE)} + 1)"
    sets = [
        f"former_names = CASE WHEN container_name <> {m()} AND {known} = 0 "
        f"THEN CASE WHEN length({grown}) > {FORMER_NAMES_MAX} THEN {cut} ELSE {grown} END "
        "ELSE former_names END",
        "container_name = " + m(),
    ]
    for stream in STREAMS:
        sets.append(f"{stream}_ts = COALESCE({m()}, {stream}_ts)")
        sets.append(f"{stream}_n = COALESCE({m()}, {stream}_n)")
    sets += [f"lines = lines + {m()}", f"bytes = bytes + {m()}", f"updated_ns = {m()}"]
    # RETENTION_UNSAID (a bare identity) leaves it; NULL (no retention of its own) sets it
    unsaid = f"CAST({m()} AS BIGINT) = {RETENTION_UNSAID}"
    sets.append(f"max_age_s = CASE WHEN {unsaid} THEN max_age_s ELSE {m()} END")
    sets.append(f"project = COALESCE({m()}, project)")
    sets.append(f"state = COALESCE({m()}, state)")
    return f"UPDATE {TABLE} SET {', '.join(sets)} WHERE id = {m()}"


def described(source: Source) -> list[Any]:
    """What a container's row keeps of how it was run: image, service, labels (JSON)."""
    labels = json.dumps(dict(source.labels), ensure_ascii=False) if source.labels else None
    return [fit(source.image), fit(source.service), labels]


def described_sql(dialect: str) -> str:
    """A container's row told its image, service and labels (a new identity): a value it
    does not know keeps the one stored."""
    m = Marks(dialect)
    return (
        f"UPDATE {TABLE} SET image = COALESCE({m()}, image), service = COALESCE({m()}, "
        f"service), labels = COALESCE({m()}, labels) WHERE id = {m()}"
    )
