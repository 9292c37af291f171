"""Lines per minute, per container, stream and level: what a histogram reads instead of rows.

Written in the transaction that stores the lines (storage/commit.py) and taken off in the
one that deletes them (retention), so the counts equal `COUNT(*)` of the rows they stand
for, after a `kill -9` or a retention pass as well. A histogram of months reads ~1,440 rows
a day per container and stream, never the lines.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

from agent.storage.models import ContainerCursor, LineCount, LineCountHourly, LogLine
from agent.storage.sql import Marks

MINUTE_NS = 60_000_000_000
TABLE = LineCount._meta.db_table
HOURLY = LineCountHourly._meta.db_table  # the same, a row an hour (`minute`: its first)
HOUR_NS = 60 * MINUTE_NS
NO_LEVEL = 0  # a line with no level is counted under 0 (a key column cannot be NULL)

Key = tuple[int, int, str, int]  # source id, minute, stream, level


def minute_of(ts_ns: int) -> int:
    """A stamp's minute as SQL's integer division gives it (toward zero, also before 1970),
    so the counts made here and those made in SQL (upgrade, dropped days) agree."""
    return ts_ns // MINUTE_NS if ts_ns >= 0 else -(-ts_ns // MINUTE_NS)


def tally(
    sid: int, stamps: Sequence[int], streams: Sequence[str], levels: Sequence[int | None]
) -> Counter[Key]:
    """One container's lines as counts. A read within one minute (most of a busy
    container's) costs a few C-speed passes, not a minute and a tuple a line."""
    n = len(stamps)
    out: Counter[Key] = Counter()
    if not n:
        return out
    low = min(stamps)
    if low >= 0 and low // MINUTE_NS == max(stamps) // MINUTE_NS:  # one minute: no list
        minute, first = low // MINUTE_NS, streams[0]
        level = levels[0] if levels else None
        if streams.count(first) != n:
            marks = levels or [None] * n
            for (stream, lvl), k in Counter(zip(streams, marks, strict=True)).items():
                out[(sid, minute, stream, lvl or NO_LEVEL)] += k
        elif not levels or levels.count(level) == n:  # one stream, one level
            out[(sid, minute, first, level or NO_LEVEL)] = n
        else:  # one stream: its levels counted
            for lvl, k in Counter(levels).items():
                out[(sid, minute, first, lvl or NO_LEVEL)] += k
        return out
    minutes = [t // MINUTE_NS if t >= 0 else minute_of(t) for t in stamps]
    marks = levels if levels else [None] * n
    for (minute, stream, lvl), k in Counter(zip(minutes, streams, marks, strict=True)).items():
        out[(sid, minute, stream, lvl or NO_LEVEL)] += k
    return out


def hour_start(minute: int) -> int:
    """The first minute of a minute's hour, as SQL's division toward zero gives it."""
    return (minute // 60 if minute >= 0 else -(-minute // 60)) * 60


def by_hour(counts: Counter[Key]) -> Counter[Key]:
    out: Counter[Key] = Counter()
    for (sid, minute, stream, level), n in counts.items():
        out[(sid, hour_start(minute), stream, level)] += n
    return out


async def add(conn: BaseDBAsyncClient, host: str, counts: Counter[Key]) -> None:
    """In the caller's transaction: these lines counted in, per minute and per hour."""
    m = Marks(conn.capabilities.dialect)
    for table, per in ((TABLE, counts), (HOURLY, by_hour(counts))):
        await conn.execute_many(
            f"INSERT INTO {table} (host, source_id, minute, stream, level, n) VALUES "
            f"({m.many(6)}) ON CONFLICT (source_id, minute, stream, level) "
            f"DO UPDATE SET n = {table}.n + excluded.n",
            [[host, *key, n] for key, n in per.items()],
        )
        m = Marks(conn.capabilities.dialect)


async def take_off(conn: BaseDBAsyncClient, counts: Counter[Key]) -> None:
    """In the caller's transaction: deleted lines counted out (a minute or an hour left
    empty goes)."""
    if not counts:
        return
    dialect = conn.capabilities.dialect

    def where(m: Marks) -> str:
        return f"source_id = {m()} AND minute = {m()} AND stream = {m()} AND level = {m()}"

    for table, per in ((TABLE, counts), (HOURLY, by_hour(counts))):
        m = Marks(dialect)
        await conn.execute_many(
            f"UPDATE {table} SET n = n - {m()} WHERE {where(m)}",
            [[n, *key] for key, n in per.items()],
        )
        await conn.execute_many(
            f"DELETE FROM {table} WHERE {where(Marks(dialect))} AND n <= 0",
            [list(k) for k in per],
        )


def counted_rows(rows: list[Sequence[Any]]) -> Counter[Key]:
    """(source id, timestamp_ns, stream, level) of deleted rows, as counts to take off."""
    out: Counter[Key] = Counter()
    for sid, ts, stream, level in rows:
        out[(int(sid), minute_of(int(ts)), str(stream), int(level or NO_LEVEL))] += 1
    return out


def grouped_sql(table: str) -> str:
    """The counts of a whole table of lines (a partition to drop, a store to upgrade)."""
    return (
        f"SELECT source_id, timestamp_ns / {MINUTE_NS}, stream, COALESCE(level, {NO_LEVEL}), "
        f'COUNT(*) FROM "{table}" GROUP BY 1, 2, 3, 4'
    )


async def backfill(db: BaseDBAsyncClient) -> int:
    """A store from before the counts (layout 10, hourly 11): its lines counted once, in a
    statement each. Each row's host is its container's."""
    lines, cursors = LogLine._meta.db_table, ContainerCursor._meta.db_table
    _, rows = await db.execute_query(f"SELECT COUNT(*) FROM {HOURLY}")
    if not int(rows[0][0]):
        await db.execute_query(
            f"INSERT INTO {HOURLY} (host, source_id, minute, stream, level, n) "
            f"SELECT host, source_id, minute / 60 * 60, stream, level, SUM(n) FROM {TABLE} "
            "GROUP BY host, source_id, minute / 60 * 60, stream, level"
        )
    _, rows = await db.execute_query(f"SELECT COUNT(*) FROM {TABLE}")
    if int(rows[0][0]):
        return 0
    await db.execute_query(
        f"INSERT INTO {TABLE} (host, source_id, minute, stream, level, n) "
        f"SELECT c.host, l.source_id, l.timestamp_ns / {MINUTE_NS}, l.stream, "
        f"COALESCE(l.level, {NO_LEVEL}), COUNT(*) FROM {lines} l "
        f"JOIN {cursors} c ON c.id = l.source_id GROUP BY c.host, l.source_id, "
        f"l.timestamp_ns / {MINUTE_NS}, l.stream, COALESCE(l.level, {NO_LEVEL})"
    )
    await db.execute_query(
        f"INSERT INTO {HOURLY} (host, source_id, minute, stream, level, n) "
        f"SELECT host, source_id, minute / 60 * 60, stream, level, SUM(n) FROM {TABLE} "
        "GROUP BY host, source_id, minute / 60 * 60, stream, level"
    )
    _, rows = await db.execute_query(f"SELECT COALESCE(SUM(n), 0) FROM {TABLE}")
    return int(rows[0][0])


async def histogram(
    db: BaseDBAsyncClient,
    *,
    source_ids: list[int] | None,
    host: str | None,
    streams: tuple[str, ...],
    min_level: int | None,
    lo_ns: int,
    hi_ns: int,
    bucket_ns: int,
    by: str,
    origin_ns: int | None = None,
) -> list[tuple[int, str | int, int]]:
    """Lines per bucket from `lo_ns` to before `hi_ns` (whole minutes), stacked by stream or
    level: (bucket start, stream or level number, lines). `source_ids` None: every container.
    Buckets start at `origin_ns` (default `lo_ns`; a whole minute), the first may begin
    before `lo_ns`: it counts only the lines from there. Buckets of whole hours from an
    hour's start read the hourly counts (24 rows a day) for the whole hours within the span,
    the minutes of a part of an hour at either end from the minute counts: an hour's row
    counts its lines outside the span too (a review's finding)."""
    per = max(1, bucket_ns // MINUTE_NS)
    lo, hi = lo_ns // MINUTE_NS, -(-hi_ns // MINUTE_NS)
    origin = lo if origin_ns is None else min(lo, origin_ns // MINUTE_NS)
    parts = [(TABLE, lo, hi)]
    if per % 60 == 0 and origin % 60 == 0:
        # The first whole hour's start: none before 1970, whose hourly rows are keyed by
        # division toward zero (hour_start), not by the hour they begin.
        head = min(hi, max(-(-lo // 60) * 60, 0))
        tail = max(head, hi - hi % 60)  # the last whole hour's end
        parts = [(TABLE, lo, head), (HOURLY, head, tail), (TABLE, tail, hi)]
    if source_ids is not None and not source_ids:
        return []
    # One statement for each part: its span's two values first, then the filter's.
    m = Marks(db.capabilities.dialect)
    clauses = [f"minute >= {m()}", f"minute < {m()}"]
    values: list[Any] = []
    if source_ids is not None:
        clauses.append(f"source_id IN ({m.many(len(source_ids))})")
        values += source_ids
    if host is not None:
        clauses.append(f"host = {m()}")
        values.append(host)
    if streams:
        clauses.append(f"stream IN ({m.many(len(streams))})")
        values += list(streams)
    if min_level is not None:
        clauses.append(f"level >= {int(min_level)}")
    column = "stream" if by == "stream" else "level"
    bucket = f"(minute - {origin}) / {per}"
    where = " AND ".join(clauses)
    summed: Counter[tuple[int, str | int]] = Counter()
    for table, start, stop in parts:
        if start >= stop:
            continue
        _, rows = await db.execute_query(
            f"SELECT {bucket}, {column}, SUM(n) FROM {table} WHERE {where} "
            f"GROUP BY {bucket}, {column}",
            [start, stop, *values],
        )
        for r in rows:
            summed[(int(r[0]), r[1])] += int(r[2])
    return [((origin + b * per) * MINUTE_NS, key, n) for (b, key), n in sorted(summed.items())]
