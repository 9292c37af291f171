"""The viewer's volume histogram: lines per time bucket of the view's selection, stacked by
stream or level, read from the stored counts (storage/counts.py), never from the rows — so
months answer at once. Text filters (a search, `where`) narrow lines, not counts: the answer
says so rather than pretend. The gaps and containers' lives of the span come with it.

The span: the view's since/until; without `since`, from the selection's first counted minute
(the last 24 h if it has none; 15 minutes at least); without `until`, to now.
"""

from __future__ import annotations

import time
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

from agent.level_names import NAMES
from agent.storage.counts import HOUR_NS, HOURLY, MINUTE_NS, TABLE, histogram
from agent.storage.cursors import source_ids
from agent.storage.sql import Marks
from agent.timestamps import format_timestamp
from agent.web.pages import Pages
from agent.web.query import HistogramQuery, ViewQuery

DAY_NS = 24 * HOUR_NS
SHORTEST_NS = 15 * MINUTE_NS  # without `since`: a young container's minutes, not one wide bar
# Round buckets, a minute at least; past a week, whole weeks.
NICE_NS = [m * MINUTE_NS for m in (1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440, 2880)]
NICE_NS.append(7 * DAY_NS)
LEVEL_KEYS = ["none", *NAMES.values()]  # the order a stack is drawn in, bottom up
STREAM_KEYS = ["stdout", "stderr", "tty"]
# A span is drawn within 1824..2116: rounded out to whole buckets (weeks, at its widest) it
# still fits the store's BIGINT (`until` near 2262, the edge a query may ask, overflowed it).
EDGE_NS = 2**62


def span_of(lo: int, hi: int, buckets: int) -> tuple[int, int, int]:
    """Pure: (first bucket's start, bucket, end) for at most `buckets` round buckets over
    lo..hi: a start on a whole minute (an hour for buckets of hours, which read the hourly
    counts) and an end on the minute after `hi` (the counts' grain)."""
    end = -(-hi // MINUTE_NS) * MINUTE_NS
    for bucket in NICE_NS:
        start = _aligned(lo, bucket)
        if -(-(end - start) // bucket) <= buckets:
            return start, bucket, end
    weeks = -(-(end - _aligned(lo, DAY_NS)) // (buckets * 7 * DAY_NS))
    bucket = max(1, weeks) * 7 * DAY_NS
    return _aligned(lo, bucket), bucket, end


def _aligned(ns: int, bucket: int) -> int:
    grain = HOUR_NS if bucket % HOUR_NS == 0 else MINUTE_NS
    return ns // grain * grain


async def first_counted(
    db: BaseDBAsyncClient, sources: list[int] | None, host: str | None
) -> int | None:
    """The selection's first counted minute (None: nothing counted): its first hour from the
    hourly counts, then the minute within it."""
    m = Marks(db.capabilities.dialect)
    clauses: list[str] = ["1 = 1"]
    values: list[Any] = []
    if sources is not None:
        if not sources:
            return None
        clauses.append(f"source_id IN ({m.many(len(sources))})")
        values += sources
    if host is not None:
        clauses.append(f"host = {m()}")
        values.append(host)
    where = " AND ".join(clauses)
    _, rows = await db.execute_query(f"SELECT MIN(minute) FROM {HOURLY} WHERE {where}", values)
    if not rows or rows[0][0] is None:
        return None
    hour = int(rows[0][0])  # then its first minute, within that hour (the minute index)
    _, rows = await db.execute_query(
        f"SELECT MIN(minute) FROM {TABLE} WHERE {where} AND minute >= {hour} "
        f"AND minute < {hour + 60}",
        values,
    )
    return int(rows[0][0] if rows and rows[0][0] is not None else hour) * MINUTE_NS


async def histogram_json(
    db: BaseDBAsyncClient, pages: Pages, view: ViewQuery, asked: HistogramQuery
) -> dict[str, Any]:
    """The view's histogram: buckets (start in ms, lines per key), its keys, the span, and
    the gaps and lives within it."""
    flt = view.flt
    sources = await source_ids(db, list(flt.container_ids)) if flt.container_ids else None
    now = time.time_ns()
    hi = flt.until_ns if flt.until_ns is not None else now
    lo = flt.since_ns
    if lo is None:
        first = await first_counted(db, sources, flt.host)
        lo = min(first if first is not None else hi - DAY_NS, hi - SHORTEST_NS)
    lo, hi = (max(-EDGE_NS, min(EDGE_NS, ns)) for ns in (lo, hi))
    if hi <= lo:
        hi = lo + MINUTE_NS  # an empty span: one empty minute, drawn as such
    start, bucket, end = span_of(lo, hi, asked.buckets)
    rows = await histogram(
        db, source_ids=sources, host=flt.host, streams=flt.streams, min_level=flt.min_level,
        lo_ns=lo, hi_ns=end, bucket_ns=bucket, by=asked.by, origin_ns=start,
    )  # fmt: skip
    n = -(-(end - start) // bucket)
    counts: list[dict[str, int]] = [{} for _ in range(n)]
    for at, key, lines in rows:
        name = str(key) if asked.by == "stream" else NAMES.get(int(key), "none")
        cell = counts[(at - start) // bucket]
        cell[name] = cell.get(name, 0) + lines
    order = STREAM_KEYS if asked.by == "stream" else LEVEL_KEYS
    seen = {k for cell in counts for k in cell}
    return {
        "by": asked.by,
        "keys": [k for k in order if k in seen],
        "start_ms": start // 1_000_000,
        "end_ms": end // 1_000_000,
        "bucket_ms": bucket // 1_000_000,
        "lo_ms": lo // 1_000_000,  # the span asked (the buckets' grid may start before it)
        "hi_ms": hi // 1_000_000,
        "since": format_timestamp(start),
        "until": format_timestamp(end),
        "buckets": [
            {"ms": (start + i * bucket) // 1_000_000, "lines": sum(c.values()), "by": c}
            for i, c in enumerate(counts)
        ],
        "total": sum(lines for _, _, lines in rows),
        # a search or `where` narrows the lines, not the counts: said, not hidden
        "all_lines": view.texts,
        "gaps": await pages.gaps(flt, start, end),
        "events": await pages.events(flt, start, end),
    }
