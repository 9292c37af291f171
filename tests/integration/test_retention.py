"""Retention on a real SQLite file while the writer keeps writing."""

from __future__ import annotations

import os
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from agent.batch import Line
from agent.storage import LogStorage
from agent.storage.retention import Retention
from tests.conftest import db_url, write_line

pytestmark = [pytest.mark.anyio]
DAY = 86400 * 1_000_000_000


def entry(ts_ns: int, n: int, size: int = 20) -> Line:
    text = f"{n:08d} " + "x" * max(0, size - 9)
    return Line("stdout", ts_ns, str(ts_ns), text, 0, len(text))


def query(tmp_path: Path, sql: str) -> list[tuple[int, ...]]:
    with closing(sqlite3.connect(tmp_path / "logs.db")) as conn:
        return conn.execute(sql).fetchall()


async def test_max_age_deletes_exactly_the_old_rows_while_writing(tmp_path: Path) -> None:
    now = time.time_ns()
    cutoff = now - 7 * DAY
    async with LogStorage(db_url(tmp_path), host="h") as storage:
        for i in range(10_000):  # old (8 days) and young rows, two containers
            cid = "old" if i % 2 else "mix"
            await write_line(storage, cid, cid, entry(now - 8 * DAY + i, i))
        for i in range(3_000):
            await write_line(storage, "mix", "mix", entry(now - DAY + i, i))
        await storage.flush()
        retention = Retention(storage, max_age_s=7 * 86400, max_bytes=0, batch_rows=500)

        written = 0

        async def keep_writing() -> None:
            nonlocal written
            while True:
                await write_line(storage, "live", "live", entry(time.time_ns(), written))
                written += 1
                if written % 100 == 0:
                    await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            tg.start_soon(keep_writing)
            report = await retention.run_once(now)
            tg.cancel_scope.cancel()
        await storage.flush()
    assert report.by_age == 10_000
    assert query(tmp_path, f"SELECT COUNT(*) FROM log_lines WHERE timestamp_ns < {cutoff}") == [
        (0,)
    ]
    assert query(
        tmp_path,
        "SELECT COUNT(*) FROM log_lines l JOIN container_cursors c ON c.id = l.source_id "
        "WHERE c.container_id = 'mix'",
    ) == [(3_000,)]
    assert query(
        tmp_path,
        "SELECT COUNT(*) FROM log_lines l JOIN container_cursors c ON c.id = l.source_id "
        "WHERE c.container_id = 'live'",
    ) == [(written,)]
    totals = dict(query(tmp_path, "SELECT container_id, lines FROM container_cursors"))
    assert totals == {"old": 0, "mix": 3_000, "live": written}
    assert query(tmp_path, "SELECT reason, rows FROM prunes") == [("max_age", 10_000)]
    print(f"\nlongest retention transaction: {report.max_lock_seconds * 1000:.1f} ms")


async def test_max_bytes_keeps_the_file_under_its_limit(tmp_path: Path) -> None:
    now = time.time_ns()
    async with LogStorage(db_url(tmp_path), host="h") as storage:
        for i in range(60_000):  # ~ 60 MB of messages
            await write_line(storage, "big", "big", entry(now - DAY + i, i, size=1000))
        await storage.flush()
        before = os.path.getsize(tmp_path / "logs.db")
        report = await Retention(storage, max_age_s=0, max_bytes=10 * 1024 * 1024).run_once()
    after = os.path.getsize(tmp_path / "logs.db")
    assert before > 50 * 1024 * 1024
    assert after <= 11 * 1024 * 1024, (before, after)
    assert report.by_size > 0
    kept = query(
        tmp_path, "SELECT MIN(CAST(substr(message, 1, 8) AS INTEGER)), COUNT(*) FROM log_lines"
    )
    assert kept[0][0] == 60_000 - kept[0][1]  # the oldest went first
    assert query(tmp_path, "SELECT reason FROM prunes") == [("max_bytes",)]


async def test_max_age_also_trims_this_hosts_lives_and_sent_alerts_never_a_pending_one(
    store_url: str,
) -> None:
    """Both backends: container events and sent alerts past max_age go with the lines; an
    alert still pending stays (it is not delivered yet), and another host's rows are its own."""
    now = time.time_ns()
    old, young = now - 8 * DAY, now - DAY
    async with LogStorage(store_url, host="h") as storage:
        db = storage.db
        m = "?" if storage.dialect == "sqlite" else "$"

        def marks(n: int) -> str:
            return ", ".join("?" if m == "?" else f"${i}" for i in range(1, n + 1))

        for n, (host, at) in enumerate([("h", old), ("h", young), ("other", old)] * 600):
            await db.execute_query(
                "INSERT INTO container_events (host, container_id, container_name, time_ns, "
                f"action) VALUES ({marks(5)})",
                [host, f"c{n}", "web", at + n, "die"],
            )
        outbox = [("h", old, "sent"), ("h", old, "pending"), ("h", young, "sent"),
                  ("other", old, "sent")]  # fmt: skip
        for n, (host, at, status) in enumerate(outbox):
            await db.execute_query(
                "INSERT INTO alert_outbox (alert_id, destination, host, rule, payload, "
                f"created_ns, status, attempts, next_ns) VALUES ({marks(9)})",
                [f"a{n}", "hook", host, "r", "{}", at, status, 1, at],
            )
        await Retention(storage, max_age_s=7 * 86400, max_bytes=0, batch_rows=500).run_once(now)
        _, events = await db.execute_query(
            "SELECT host, COUNT(*) FROM container_events GROUP BY host ORDER BY host"
        )
        _, alerts = await db.execute_query("SELECT alert_id FROM alert_outbox ORDER BY alert_id")
    assert [tuple(r) for r in events] == [("h", 600), ("other", 600)]  # h's 600 old ones gone
    assert [r[0] for r in alerts] == ["a1", "a2", "a3"]  # a0: h's, sent, old


def sql_marks(storage: LogStorage, n: int) -> str:
    return ", ".join("?" if storage.dialect == "sqlite" else f"${i}" for i in range(1, n + 1))


async def test_a_host_of_short_lived_containers_keeps_no_record_past_its_lines(
    store_url: str,
) -> None:
    """Both backends: a removed container none of whose lines or gaps is left is forgotten
    once it is older than max_age, and so are gaps and retention passes; what still has
    lines or gaps, or is young, or runs, or is another host's, stays, and so do the gaps of
    a container that keeps its lines by a retention of its own."""
    now = time.time_ns()
    old, young = now - 8 * DAY, now - DAY
    async with LogStorage(store_url, host="h") as storage:
        db = storage.db
        cursors = [  # name, host, state, lines, updated, own retention
            ("gone", "h", "removed", 0, old, None), ("gone-lately", "h", "removed", 0, young, None),
            ("gone-with-lines", "h", "removed", 5, old, None),
            ("quiet", "h", "running", 0, old, None), ("theirs", "other", "removed", 0, old, None),
            ("gone-with-a-gap", "h", "removed", 0, old, None), ("kept", "h", "running", 9, old, 0),
            ("own-gone", "h", "removed", 0, old, 3600),
        ]  # fmt: skip
        ids = {}
        for n, (name, host, state, lines, at, own) in enumerate(cursors):
            ids[name] = f"{n:064d}"
            await db.execute_query(
                "INSERT INTO container_cursors (host, container_id, container_name, stdout_n, "
                "stderr_n, tty_n, lines, bytes, updated_ns, state, max_age_s) "
                f"VALUES ({sql_marks(storage, 11)})",
                [host, ids[name], name, 0, 0, 0, lines, 0, at, state, own],
            )
        gaps = [  # reason, host, container, from, to, recorded
            ("old", "h", "web", None, None, old),
            ("about-old-lately", "h", "web", old, old, young),
            ("running-on", "h", "web", old, young, old),
            ("theirs", "other", "web", None, None, old),
            ("lost-lately", "h", "gone-with-a-gap", young, young, young),
            ("kept-for-ever", "h", "kept", None, None, old),
            ("own-gone-lost", "h", "own-gone", None, None, old),  # its lines gone: it goes too
        ]  # fmt: skip
        for reason, host, name, start, end, at in gaps:
            await db.execute_query(
                "INSERT INTO gaps (host, container_id, container_name, reason, from_ns, to_ns, "
                f"created_ns) VALUES ({sql_marks(storage, 7)})",
                [host, ids.get(name, "c" * 64), name, reason, start, end, at],
            )
        for reason, host, at in [
            ("old", "h", old),
            ("young", "h", young),
            ("theirs", "other", old),
        ]:
            await db.execute_query(
                f"INSERT INTO prunes (host, reason, rows, at_ns) VALUES ({sql_marks(storage, 4)})",
                [host, reason, 1, at],
            )
        await Retention(storage, max_age_s=7 * 86400, max_bytes=0, batch_rows=2).run_once(now)
        _, kept = await db.execute_query("SELECT container_name FROM container_cursors")
        _, kept_gaps = await db.execute_query("SELECT reason FROM gaps")
        _, kept_prunes = await db.execute_query("SELECT reason FROM prunes WHERE rows = 1")
    assert sorted(r[0] for r in kept) == ["gone-lately", "gone-with-a-gap", "gone-with-lines",
                                          "kept", "quiet", "theirs"]  # fmt: skip
    assert sorted(r[0] for r in kept_gaps) == ["about-old-lately", "kept-for-ever", "lost-lately",
                                               "running-on", "theirs"]  # fmt: skip
    assert sorted(r[0] for r in kept_prunes) == ["theirs", "young"]


async def test_containers_with_a_retention_of_their_own_are_cut_by_it_however_many(
    store_url: str,
) -> None:
    """Both backends: thousands of containers once labelled with a retention of their own
    (gone since, no line left) cost the pass nothing; those with lines are cut by their own
    age, one kept for ever (0) is not cut, and the others by max_age."""
    now = time.time_ns()
    async with LogStorage(store_url, host="h") as storage:
        for cid, name, ages in [("a" * 64, "own-1d", (2, 0.5)), ("b" * 64, "forever", (10, 0)),
                                ("c" * 64, "plain", (8, 1))]:  # fmt: skip
            for n, days in enumerate(ages):
                at = now - int(days * DAY)
                await write_line(storage, cid, name, Line("stdout", at, str(at), f"{name} {n}"))
        await storage.flush()
        db = storage.db
        for cid, age in [("a" * 64, 86400), ("b" * 64, 0)]:
            await db.execute_query(
                f"UPDATE container_cursors SET max_age_s = {int(age)} WHERE container_id = "
                f"{sql_marks(storage, 1)}",
                [cid],
            )
        await db.execute_query(  # 40,000 of them: more than a statement may bind on SQLite
            "INSERT INTO container_cursors (host, container_id, container_name, stdout_n, "
            "stderr_n, tty_n, lines, bytes, updated_ns, state, max_age_s) "
            + (
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40000) "
                "SELECT 'h', printf('%064d', i), 'ci-' || i, 0, 0, 0, 0, 0, 0, 'exited', 3600 "
                "FROM n"
                if storage.dialect == "sqlite"
                else "SELECT 'h', lpad(i::text, 64, '0'), 'ci-' || i, 0, 0, 0, 0, 0, 0, "
                "'exited', 3600 FROM generate_series(1, 40000) i"
            )
        )
        report = await Retention(storage, max_age_s=7 * 86400, max_bytes=0).run_once(now)
        _, left = await db.execute_query("SELECT message FROM log_lines ORDER BY message")
    assert [r[0] for r in left] == ["forever 0", "forever 1", "own-1d 1", "plain 1"]
    assert (report.by_own_age, report.by_age) == (1, 1)
