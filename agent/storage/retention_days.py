"""Retention on PostgreSQL: a day wholly past the age, holding nothing to keep, is detached
and dropped as a whole (its rows counted off their containers first); the day the cut-off
falls in is left to the row-by-row trim (retention.py)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping

from tortoise.backends.base.client import BaseDBAsyncClient

from agent.storage import partitions
from agent.storage.counts import grouped_sql, take_off
from agent.storage.db import transaction
from agent.storage.forward_gaps import unsent_deleted
from agent.storage.models import AgentState, ContainerCursor
from agent.storage.postgres import LOCK_NOT_AVAILABLE, sqlstate
from agent.storage.sends import Sends
from agent.storage.sql import Marks
from agent.storage.store import LogStorage

log = logging.getLogger("logagent.retention")


async def drop_days(
    storage: LogStorage,
    cutoff_ns: int,
    now_ns: int,
    held: Callable[[float], None],
    forwarded: Mapping[str, Sends],
) -> int:
    """Detach each day older than the cut-off that holds nothing to keep, then count it
    off its containers and drop it (also a day an earlier pass detached and did not get
    to drop). A day that holds rows to keep is trimmed row by row instead. What a forward
    destination did not send of it is its gap (`forwarded`: this host's, forward_gaps.py)."""
    db = storage.db
    dropped = await _drop_retired(storage, forwarded)  # a stopped pass's first: no clash
    for day, name in partitions.whole_days_before(await partitions.existing_days(db), cutoff_ns):
        day_end = (day + 1) * partitions.DAY_NS
        if await _keeps_some(db, name, day_end, now_ns):
            continue
        try:
            async with transaction() as conn:
                started = time.perf_counter()
                retired = await partitions.retire(conn, name)
                # Again, now that no row can come in: one may have since the first look.
                if retired and await _keeps_some(conn, retired, day_end, now_ns):
                    raise _Kept
                held(started)
        except _Kept:
            continue
        if not retired:
            log.warning("retention: %s is in use, it is dropped at a later pass", name)
        storage.writer.days.discard(day)
    return dropped + await _drop_retired(storage, forwarded)


async def _drop_retired(storage: LogStorage, forwarded: Mapping[str, Sends]) -> int:
    """Count each retired day off its containers and drop it; one whose drop waited too long
    for its table (a `pg_dump` may hold it) is left to a later pass."""
    dropped = 0
    for table in await partitions.retired_tables(storage.db):
        try:
            async with transaction() as conn:
                rows = await _count_off_and_drop(conn, table, storage.host, forwarded)
        except Exception as exc:
            if sqlstate(exc) != LOCK_NOT_AVAILABLE:
                raise
            log.warning("retention: %s is in use, it is dropped at a later pass", table)
            continue
        dropped += rows
        log.info("retention dropped %s (%d rows)", partitions.retired_day(table), rows)
    return dropped


async def _count_off_and_drop(
    conn: BaseDBAsyncClient, table: str, host: str, forwarded: Mapping[str, Sends]
) -> int:
    """In the caller's transaction: a retired day's lines, bytes and per-minute counts off
    its containers, what a destination did not send of it recorded, the day dropped; its
    rows. The whole day is read before its containers' rows are locked to count it off,
    and the drop waits 2 s at most for its table: the writers' commits wait on those rows
    meanwhile."""
    _, counted = await conn.execute_query(
        f'SELECT source_id, COUNT(*), COALESCE(SUM(LENGTH(message)), 0) FROM "{table}" '
        "GROUP BY source_id"
    )
    _, per_minute = await conn.execute_query(grouped_sql(table))
    await unsent_deleted(  # any host's rows: every host's destinations
        conn, table, lambda _m: ("1 = 1", []), host=host, sends=forwarded, fleet=True
    )
    await count_off(conn, {int(r[0]): (int(r[1]), int(r[2])) for r in counted})
    minutes = Counter({(int(r[0]), int(r[1]), str(r[2]), int(r[3])): int(r[4])
                       for r in per_minute})  # fmt: skip
    await take_off(conn, minutes)
    await conn.execute_query("SET LOCAL lock_timeout = '2s'")
    await conn.execute_query(f'DROP TABLE "{table}"')
    return sum(int(r[1]) for r in counted)


async def _keeps_some(conn: BaseDBAsyncClient, table: str, day_end_ns: int, now_ns: int) -> bool:
    """Whether the day `table` holds a row that its owner's retention keeps: of a
    container that keeps its lines for ever or longer than the day is old, or of a host
    whose agent keeps them longer (or has not said: an older agent). One such container
    no longer stops every day's drop; a fleet of one config drops whole days."""
    m = Marks(conn.capabilities.dialect)
    older = max(now_ns - day_end_ns, 0) // 1_000_000_000  # seconds past the day's end
    _, rows = await conn.execute_query(
        f'SELECT 1 FROM "{table}" l JOIN {ContainerCursor._meta.db_table} c '
        f"ON c.id = l.source_id LEFT JOIN {AgentState._meta.db_table} a ON a.host = l.host "
        f"WHERE (c.max_age_s IS NOT NULL AND (c.max_age_s = 0 OR c.max_age_s > {m()})) "
        "OR (c.max_age_s IS NULL AND (a.retention_s IS NULL OR a.retention_s = 0 "
        f"OR a.retention_s > {m()})) LIMIT 1",
        [older, older],
    )
    return bool(rows)


async def count_off(conn: BaseDBAsyncClient, per_source: dict[int, tuple[int, int]]) -> None:
    """Take deleted lines and bytes off their containers' totals."""
    m = Marks(conn.capabilities.dialect)
    update = (
        f"UPDATE {ContainerCursor._meta.db_table} SET lines = lines - {m()}, "
        f"bytes = bytes - {m()} WHERE id = {m()}"
    )
    await conn.execute_many(update, [[n, b, sid] for sid, (n, b) in per_source.items()])


class _Kept(Exception):
    """A day's partition holds a row to keep after all: its detaching is rolled back."""
