"""The histogram's cost: 30 days of a container writing 1,000,000 lines a day, as the counts
the agent keeps per minute and per hour (storage/counts.py), read into 60 buckets (#26).

`python bench/histogram.py [postgres-url]` — the counts of 30 days (two streams, three
levels: 259,200 rows a minute and 4,320 an hour, standing for 30,000,000 lines) are written
straight into a fresh store, as the writer would have left them; then `counts.histogram`
over the 30 days in 12-hour buckets, by stream and by level, median of 7, on SQLite and
(given a URL of a database to fill) on PostgreSQL. Beside it, one day's COUNT(*) of rows
grouped the same way, from 1,000,000 real rows, as the baseline a histogram without counts
would pay for each day.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.batch import LineBatch, Source
from agent.storage import LogStorage
from agent.storage.counts import HOUR_NS, MINUTE_NS, histogram

DAYS, PER_DAY = 30, 1_000_000


async def measure(url: str) -> dict[str, float]:
    now = time.time_ns()
    lo = (now - DAYS * 86400 * 10**9) // HOUR_NS * HOUR_NS  # as stats and the viewer align
    async with LogStorage(url, host="bench") as storage:
        db = storage.db
        batch = LineBatch(Source("h" * 64, "histogram"))
        batch.append("stdout", lo, "", "first", 0, 5)
        await storage.write(batch)  # the container's row (its source id)
        await storage.flush()
        _, rows = await db.execute_query("SELECT id FROM container_cursors")
        sid = int(rows[0][0])
        await db.execute_query("DELETE FROM line_counts")
        per_minute = PER_DAY // 1440
        counts = [
            ["bench", sid, lo // MINUTE_NS + m, stream, level, per_minute // 6]
            for m in range(DAYS * 1440)
            for stream in ("stdout", "stderr")
            for level in (0, 3, 5)
        ]
        hourly = [
            ["bench", sid, lo // MINUTE_NS + h * 60, stream, level, 60 * (per_minute // 6)]
            for h in range(DAYS * 24)
            for stream in ("stdout", "stderr")
            for level in (0, 3, 5)
        ]
        await db.execute_query("DELETE FROM line_counts_hourly")
        mark = "?" if storage.dialect == "sqlite" else "$"
        marks = ", ".join("?" if mark == "?" else f"${i}" for i in range(1, 7))
        for table, rows_ in (("line_counts", counts), ("line_counts_hourly", hourly)):
            for at in range(0, len(rows_), 20_000):
                await db.execute_many(
                    f"INSERT INTO {table} (host, source_id, minute, stream, level, n) "
                    f"VALUES ({marks})",
                    rows_[at : at + 20_000],
                )
        out: dict[str, float] = {}
        for by in ("stream", "level"):
            times = []
            for _ in range(7):
                started = time.perf_counter()
                found = await histogram(
                    db, source_ids=[sid], host=None, streams=(), min_level=None,
                    lo_ns=lo, hi_ns=now, bucket_ns=12 * HOUR_NS,
                    by=by,
                )  # fmt: skip
                times.append(time.perf_counter() - started)
                assert sum(n for _, _, n in found) >= DAYS * 1440 * 6 * (per_minute // 6) - 1
            out[f"histogram 30 days by {by}, ms"] = statistics.median(times) * 1000
        return out


async def baseline(url: str) -> float:
    """COUNT(*) of one day's 1,000,000 rows grouped per minute and stream: seconds."""
    start = time.time_ns() - 86400 * 10**9
    async with LogStorage(url, host="bench") as storage:
        src = Source("r" * 64, "rows")
        for at in range(0, PER_DAY, 10_000):
            batch = LineBatch(src)
            for i in range(at, at + 10_000):
                batch.append("stdout", start + i * 86_400_000, "", "x" * 90, 0, 90)
            await storage.write(batch)
        await storage.flush()
        started = time.perf_counter()
        await storage.db.execute_query(
            f"SELECT timestamp_ns / {MINUTE_NS}, stream, COUNT(*) FROM log_lines "
            f"WHERE timestamp_ns >= {start} GROUP BY 1, 2"
        )
        return time.perf_counter() - started


def main() -> None:
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="logagent-bench-histogram-") as tmp:
        results["sqlite"] = anyio.run(measure, f"sqlite:///{Path(tmp) / 'counts.db'}")
        rows_s = anyio.run(baseline, f"sqlite:///{Path(tmp) / 'rows.db'}")
    if len(sys.argv) > 1:
        results["postgres"] = anyio.run(measure, sys.argv[1])
    for backend, figures in results.items():
        for name, ms in figures.items():
            verdict = "PASS" if ms < 100 else "MISS"
            print(f"{backend}: {name}: {ms:.1f} (target < 100 ms: {verdict})")
    print(f"baseline, sqlite: one day's 1,000,000 rows counted per minute from the rows: "
          f"{rows_s * 1000:.0f} ms (30 days: ~{rows_s * 30:.1f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
