"""Lines per minute (storage/counts.py) equal COUNT(*) of the rows they stand for: after
ingest on both backends, after a kill -9 mid-burst (test_exactly_once.py checks them too),
after retention's row-by-row trim and PostgreSQL's whole-day drops; `logagent stats` prints
them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.batch import Line, LineBatch, Source
from agent.storage import LogStorage
from agent.storage.counts import histogram
from agent.storage.retention import Retention
from tests.conftest import ROOT, query, write_line

pytestmark = [pytest.mark.anyio]
MINUTE = 60 * 10**9
DAY = 86400 * 10**9


def assert_counts_exact(url: str) -> int:
    """The stored counts, per minute and per hour, equal the rows grouped the same way (as
    SQL divides); the number of lines."""
    total = 0
    for table, span in (("line_counts", MINUTE), ("line_counts_hourly", 60 * MINUTE)):
        counted = query(
            url, f"SELECT source_id, minute, stream, level, n FROM {table} ORDER BY 1, 2, 3, 4"
        )
        grouped = query(
            url,
            f"SELECT source_id, timestamp_ns / {span} * {span // MINUTE}, stream, "
            "COALESCE(level, 0), COUNT(*) FROM log_lines GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4",
        )
        assert [_ints(r) for r in counted] == [_ints(r) for r in grouped], table
        total = sum(int(r[4]) for r in grouped)
    return total


def _ints(row: tuple[object, ...]) -> tuple[object, ...]:
    return tuple(v if isinstance(v, str) else int(v) for v in row)  # type: ignore[call-overload]


def logagent(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LOGAGENT_DB_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "agent", *args], env=env, cwd=ROOT, capture_output=True, text=True
    )


async def test_counts_equal_the_rows_per_minute_and_survive_retention(store_url: str) -> None:
    """Ten days of lines, two containers, both streams and some levels, in batches that
    cross minutes; then retention of 7 days (PostgreSQL drops whole days, then trims)."""
    now = time.time_ns()
    start = now - 10 * DAY
    sources = {"a": Source("a", "a"), "b": Source("b", "b")}
    async with LogStorage(store_url, host="h") as storage:
        for i in range(0, 6_000, 50):  # batches of 50 lines, each over ~2 hours
            batch = LineBatch(sources["a" if i % 100 else "b"])
            for j in range(i, i + 50):
                ts = start + j * (10 * DAY // 6_000)
                text = f"line {j}"
                batch.append("stderr" if j % 3 == 0 else "stdout", ts, "", text, 0, len(text))
            batch.levels = [5 if j % 7 == 0 else None for j in range(i, i + 50)]
            await storage.write(batch)
        await storage.flush()
        assert assert_counts_exact(store_url) == 6_000
        stats = logagent(store_url, "stats", "--since", "11d", "--bucket", "1d", "--json")
        assert stats.returncode == 0, stats.stderr
        days = [json.loads(line) for line in stats.stdout.splitlines()]
        assert sum(d["lines"] for d in days) == 6_000 and 10 <= len(days) <= 11
        assert all(d["lines"] == sum(d["stream"].values()) for d in days)
        by_level = logagent(store_url, "stats", "a", "--since", "11d", "--by", "level", "--json")
        levels = [json.loads(line) for line in by_level.stdout.splitlines()]
        errors_of_a = [j for i in range(50, 6_000, 100) for j in range(i, i + 50) if j % 7 == 0]
        assert sum(d["level"].get("error", 0) for d in levels) == len(errors_of_a)
        report = await Retention(storage, max_age_s=7 * 86400, max_bytes=0).run_once(now)
        assert report.by_age > 0
        left = assert_counts_exact(store_url)
    assert left == 6_000 - report.by_age
    (kept,) = query(store_url, "SELECT COUNT(*) FROM log_lines")
    assert int(kept[0]) == left


async def test_hourly_buckets_count_only_the_span_when_it_ends_within_an_hour(
    store_url: str,
) -> None:
    """Buckets of hours read the hourly counts, but a since or an until within an hour ends
    the first or last bucket there: the lines of that hour outside the span are not counted
    (a review: they were, and a bar's count depended on how the span was cut)."""
    hour = 60 * MINUTE
    base = (time.time_ns() - DAY) // hour * hour  # an hour's start, yesterday
    stamps = [base + m * MINUTE for m in (10, 29, 30, 45, 70, 95, 130)]
    async with LogStorage(store_url, host="h") as storage:
        batch = LineBatch(Source("c" * 64, "web"))
        for ts in stamps:
            batch.append("stdout", ts, "", "x", 0, 1)
        await storage.write(batch)
        await storage.flush()
        for since, until in [(0, 30), (0, 60), (0, 90), (0, 120), (20, 150), (60, 100),
                             (30, 45), (0, 180)]:  # fmt: skip
            lo, hi = base + since * MINUTE, base + until * MINUTE
            rows = await histogram(storage.db, source_ids=None, host=None, streams=(),
                                   min_level=None, lo_ns=lo, hi_ns=hi, bucket_ns=hour,
                                   by="stream", origin_ns=base)  # fmt: skip
            got = {(at - base) // hour: n for at, _, n in rows}
            want: dict[int, int] = {}
            for ts in stamps:
                if lo <= ts < hi:
                    want[(ts - base) // hour] = want.get((ts - base) // hour, 0) + 1
            assert got == want, (since, until)


async def test_a_store_from_before_the_counts_is_counted_once_when_upgraded(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'logs.db'}"
    async with LogStorage(url, host="h") as storage:
        for i in range(1_000):
            await write_line(storage, "c", "c", Line("stdout", i * MINUTE // 7, "", f"{i}", 0, 2))
        await storage.flush()
    import sqlite3

    with sqlite3.connect(tmp_path / "logs.db") as conn:  # as layout 9 left it
        conn.execute("DELETE FROM line_counts")
        conn.execute("DELETE FROM line_counts_hourly")
        conn.execute("UPDATE schema_version SET version = 9")
    async with LogStorage(url, host="h"):
        pass
    assert assert_counts_exact(url) == 1_000
    async with LogStorage(url, host="h"):  # a second start counts nothing again
        pass
    assert assert_counts_exact(url) == 1_000
    with sqlite3.connect(tmp_path / "logs.db") as conn:  # as layout 10 left it: no hours
        conn.execute("DELETE FROM line_counts_hourly")
        conn.execute("UPDATE schema_version SET version = 10")
    async with LogStorage(url, host="h"):
        pass
    assert assert_counts_exact(url) == 1_000


async def test_hourly_buckets_before_1970_count_each_line_once(store_url: str) -> None:
    """Before 1970 the hourly rows are keyed by division toward zero, not by their hour:
    such hours come from the minute counts (a review: a line was counted twice)."""
    hour = 60 * MINUTE
    stamp = -90 * MINUTE + 10**9  # 1969-12-31T22:30:01
    async with LogStorage(store_url, host="h") as storage:
        batch = LineBatch(Source("c" * 64, "web"))
        batch.append("stdout", stamp, "", "x", 0, 1)
        await storage.write(batch)
        await storage.flush()
        for since in (-180, -120, -90, -100):
            rows = await histogram(storage.db, source_ids=None, host=None, streams=(),
                                   min_level=None, lo_ns=since * MINUTE, hi_ns=hour,
                                   bucket_ns=hour, by="stream", origin_ns=-3 * hour)  # fmt: skip
            assert {at: n for at, _, n in rows} == {-2 * hour: 1}, since
