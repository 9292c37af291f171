"""`logagent stats`: lines per time bucket, stacked by stream or level, from the counts kept
per minute (storage/counts.py) — never from the rows, so months answer at once.

The same numbers as `logagent logs | wc -l` over each bucket, for containers, streams, a
level and a host (a text filter, `--grep` or `--where`, narrows lines, not counts).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from typing import TextIO

from agent.commands import UsageError, reading
from agent.durations import parse_duration
from agent.level_names import NAMES, level_of_word
from agent.storage.counts import HOUR_NS, MINUTE_NS, histogram
from agent.storage.cursors import source_ids
from agent.storage.reader import resolve_containers, service_containers
from agent.timestamps import format_timestamp
from agent.when import parse_when

MAX_BUCKETS = 10_000
NICE_S = (60, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600, 86400, 7 * 86400)


@dataclass(frozen=True)
class StatsOptions:
    containers: tuple[str, ...] = ()
    service: str | None = None
    since: str | None = None  # default: 24 h ago
    until: str | None = None  # default: now
    bucket: str | None = None  # default: ~60 buckets over the range
    by: str = "stream"  # or "level"
    streams: tuple[str, ...] = ()
    level: str | None = None
    host: str | None = None
    json: bool = False


def bucket_for(span_ns: int) -> int:
    """A round bucket giving about 60 of them over the span (a minute at least)."""
    want = span_ns / 60 / 1e9
    return next((s for s in NICE_S if s >= want), NICE_S[-1]) * 10**9


async def stats(db_url: str, opts: StatsOptions, out: TextIO = sys.stdout) -> int:
    now = time.time_ns()
    try:
        lo = parse_when(opts.since) if opts.since else now - 86400 * 10**9
        hi = parse_when(opts.until) if opts.until else now
        bucket = int(parse_duration(opts.bucket) * 1e9) if opts.bucket else bucket_for(hi - lo)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if hi <= lo:
        raise UsageError("stats: --until must come after --since")
    if bucket < MINUTE_NS or bucket % MINUTE_NS:
        raise UsageError("stats: --bucket is whole minutes (1m, 5m, 1h, 1d)")
    if (hi - lo) // bucket > MAX_BUCKETS:
        raise UsageError(f"stats: at most {MAX_BUCKETS} buckets: a longer --bucket")
    align = HOUR_NS if bucket % HOUR_NS == 0 else MINUTE_NS
    async with reading(db_url) as db:
        try:
            ids = await resolve_containers(db, list(opts.containers))
            if opts.service is not None:
                ids += [c for c in await service_containers(db, opts.service) if c not in ids]
        except LookupError as exc:
            raise UsageError(str(exc)) from None
        sources = await source_ids(db, ids) if ids else None
        rows = await histogram(
            db,
            source_ids=sources,
            host=opts.host,
            streams=opts.streams,
            min_level=level_of_word(opts.level) if opts.level else None,
            lo_ns=lo // align * align,  # whole hours read the hourly counts
            hi_ns=hi,
            bucket_ns=bucket,
            by=opts.by,
        )
    keys = sorted({_key(k, opts.by) for _, k, _ in rows})
    table: dict[int, dict[str, int]] = {}
    for start, k, n in rows:
        cell = table.setdefault(start, {})
        cell[_key(k, opts.by)] = cell.get(_key(k, opts.by), 0) + n
    if opts.json:
        for start in sorted(table):
            shown = {"start": format_timestamp(start), "lines": sum(table[start].values())}
            out.write(json.dumps({**shown, opts.by: table[start]}) + "\n")
        return 0
    out.write("\t".join(["START", *(k.upper() for k in keys), "LINES"]) + "\n")
    for start in sorted(table):
        cell = table[start]
        counts = [str(cell.get(k, 0)) for k in keys]
        out.write("\t".join([format_timestamp(start), *counts, str(sum(cell.values()))]) + "\n")
    return 0


def _key(k: str | int, by: str) -> str:
    if by == "stream":
        return str(k)
    return NAMES.get(int(k), "none")
