"""A store written by an older logagent is upgraded in place, on a real SQLite file."""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from agent.batch import Dropped, Line, LineBatch, Source
from agent.storage import LogStorage, StorageError
from agent.storage.follow import committed, history
from agent.storage.reader import LogFilter, open_store, resolve_containers
from agent.storage.schema import SCHEMA_VERSION
from tests.conftest import db_url, execute, query, write_line

pytestmark = [pytest.mark.anyio]

# The two tables as logagent 0.1 created them (tortoise's DDL at commit 75d11b2).
OLD_LAYOUT = """
CREATE TABLE "container_cursors" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "host" VARCHAR(255) NOT NULL,
    "container_id" VARCHAR(64) NOT NULL,
    "container_name" VARCHAR(255) NOT NULL,
    "stdout_ts" BIGINT,
    "stdout_n" INT NOT NULL,
    "stderr_ts" BIGINT,
    "stderr_n" INT NOT NULL,
    "tty_ts" BIGINT,
    "tty_n" INT NOT NULL,
    "lines" BIGINT NOT NULL,
    "bytes" BIGINT NOT NULL,
    "updated_ns" BIGINT NOT NULL,
    CONSTRAINT "uid_container_c_host_a917e6" UNIQUE ("host", "container_id")
);
CREATE TABLE "log_lines" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "host" VARCHAR(255) NOT NULL,
    "container_id" VARCHAR(64) NOT NULL,
    "container_name" VARCHAR(255) NOT NULL,
    "stream" VARCHAR(8) NOT NULL,
    "timestamp_ns" BIGINT NOT NULL,
    "timestamp" VARCHAR(40) NOT NULL,
    "message" TEXT NOT NULL,
    "flags" SMALLINT NOT NULL
);
CREATE INDEX "idx_log_lines_contain_b93b76" ON "log_lines" ("container_id", "timestamp_ns", "id");
CREATE INDEX "idx_log_lines_timesta_290ba9" ON "log_lines" ("timestamp_ns");
"""
T0 = 1_764_000_000_000_000_000


def old_store(path: Path, fill_to: int = 0) -> None:
    """Two containers: `a` with its cursor row, `b` (lines only); ids with a hole in them.

    With `fill_to`, more lines of `b` until the file has that many bytes.
    """
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript(OLD_LAYOUT)
        conn.execute(
            "INSERT INTO container_cursors (host, container_id, container_name, stdout_ts, "
            "stdout_n, stderr_n, tty_n, lines, bytes, updated_ns) "
            "VALUES ('h', 'a' , 'app', ?, 1, 0, 0, 3, 9, 1)",
            (T0 + 3,),
        )
        rows = [
            (1, "a", "app", T0 + 1, "a1"),
            (2, "b", "batch", T0 + 2, "b1"),
            (5, "a", "app", T0 + 2, "a2"),
            (7, "a", "app", T0 + 3, "a3"),
        ]
        conn.executemany(
            "INSERT INTO log_lines VALUES (?, 'h', ?, ?, 'stdout', ?, 'ts', ?, 0)", rows
        )
        conn.commit()
        n = 8
        while path.stat().st_size < fill_to:
            more = [
                (n + i, "b", "batch", T0 + n + i, f"{n + i:08d} " + "x" * 90) for i in range(50)
            ]
            conn.executemany(
                "INSERT INTO log_lines VALUES (?, 'h', ?, ?, 'stdout', ?, 'ts', ?, 0)", more
            )
            conn.commit()
            n += 50


def lines_and_layout(path: Path) -> tuple[int, list[str]]:
    with closing(sqlite3.connect(path)) as conn:
        count = conn.execute("SELECT COUNT(*) FROM log_lines").fetchone()[0]
        columns = [r[1] for r in conn.execute("PRAGMA table_info(log_lines)")]
    return int(count), columns


async def test_old_store_is_upgraded_with_every_line_kept(tmp_path: Path) -> None:
    old_store(tmp_path / "logs.db")
    async with LogStorage(db_url(tmp_path), host="h") as storage:
        cursor = await storage.load_cursor("a")
        assert cursor.positions == {"stdout": [T0 + 3, 1]}  # resumes where 0.1 stopped
        await write_line(storage, "a", "app", Line("stdout", T0 + 4, "ts", "a4", 0, 2))
        await write_line(storage, "b", "batch", Line("stdout", T0 + 5, "ts", "b2", 0, 2))
        await storage.flush()
    async with open_store(db_url(tmp_path)) as db:
        ids = await resolve_containers(db, ["app"])
        rows = [
            r async for page in history(db, LogFilter(), upto=await committed(db)) for r in page
        ]
        app = [
            r
            async for page in history(db, LogFilter(tuple(ids)), upto=await committed(db))
            for r in page
        ]
    assert [(r[0], r[2], r[3], r[7]) for r in rows[:4]] == [
        (1, "a", "app", "a1"),
        (2, "b", "batch", "b1"),
        (5, "a", "app", "a2"),
        (7, "a", "app", "a3"),
    ]
    assert [r[7] for r in rows[4:]] == ["a4", "b2"]
    assert min(r[0] for r in rows[4:]) > 7  # new ids follow the old: `logs -f` stays right
    assert [r[7] for r in app] == ["a1", "a2", "a3", "a4"]
    with closing(sqlite3.connect(tmp_path / "logs.db")) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        lines = dict(conn.execute("SELECT container_id, lines FROM container_cursors"))
    assert "log_lines_old" not in names
    assert "idx_log_lines_contain_b93b76" not in names
    assert lines == {"a": 4, "b": 2}


async def test_current_store_is_left_alone(tmp_path: Path) -> None:
    async with LogStorage(db_url(tmp_path), host="h") as storage:
        await write_line(storage, "a", "app", Line("stdout", T0, "ts", "a1", 0, 2))
    async with LogStorage(db_url(tmp_path), host="h") as storage:
        await write_line(storage, "a", "app", Line("stdout", T0 + 1, "ts", "a2", 0, 2))
    with closing(sqlite3.connect(tmp_path / "logs.db")) as conn:
        assert conn.execute("SELECT id, source_id, message FROM log_lines").fetchall() == [
            (1, 1, "a1"),
            (2, 1, "a2"),
        ]


async def test_upgrade_on_a_full_disk_fails_clearly_and_keeps_the_old_store(
    tmp_path: Path, tiny_disk: Path
) -> None:
    old_store(tiny_disk / "logs.db", fill_to=250_000)
    before = lines_and_layout(tiny_disk / "logs.db")
    assert "container_id" in before[1]
    with pytest.raises(StorageError, match="full"):
        async with LogStorage(f"sqlite:///{tiny_disk / 'logs.db'}", host="h"):
            pass
    assert lines_and_layout(tiny_disk / "logs.db") == before  # rolled back, nothing lost
    # Given room, the same store upgrades with every line.
    shutil.copy(tiny_disk / "logs.db", tmp_path / "logs.db")
    async with LogStorage(db_url(tmp_path), host="h"):
        pass
    count, columns = lines_and_layout(tmp_path / "logs.db")
    assert count == before[0] > 1000
    assert "source_id" in columns and "container_id" not in columns


async def test_layout_2_gets_levels_and_own_retention_and_keeps_its_lines(store_url: str) -> None:
    """A store of the layout before hints (2): the read side asks for an upgrade, the agent
    adds the columns in place; old rows have no level."""
    async with LogStorage(store_url, host="h") as storage:
        await write_line(storage, "a", "app", Line("stdout", T0, "ts", "old", 0, 3))
    for sql in (
        "DROP INDEX log_lines_level",
        "ALTER TABLE log_lines DROP COLUMN level",
        "ALTER TABLE container_cursors DROP COLUMN max_age_s",
        "ALTER TABLE container_cursors DROP COLUMN project",
        "ALTER TABLE container_cursors DROP COLUMN state",
        "UPDATE schema_version SET version = 2",
    ):
        execute(store_url, sql)
    with pytest.raises(StorageError, match=r"layout 2, older .* start `logagent run` once"):
        async with open_store(store_url):
            pass
    async with LogStorage(store_url, host="h") as storage:
        await write_line(storage, "a", "app", Line("stdout", T0 + 1, "ts", "WARN new", 0, 8))
    assert query(store_url, "SELECT message, level FROM log_lines ORDER BY id") == [
        ("old", None),
        ("WARN new", None),  # written without hints: write_line gives no level
    ]
    assert query(store_url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    assert query(store_url, "SELECT max_age_s FROM container_cursors") == [(None,)]


async def test_layout_5_gives_the_rate_limit_s_gaps_their_kind(store_url: str) -> None:
    """Layout 5 knew a rate limit's span by its reason's text; after the upgrade the span is
    found by its kind, and the next batch that adds to it replaces it, not a second row."""
    source = Source("a" * 64, "app")
    async with LogStorage(store_url, host="h") as storage:
        await write_line(storage, "b" * 64, "other", Line("stdout", T0, "ts", "x", 0, 1))
    for sql in (
        "ALTER TABLE gaps DROP COLUMN kind",
        "INSERT INTO gaps (host, container_id, container_name, reason, from_ns, to_ns, "
        f"created_ns) VALUES ('h', '{'a' * 64}', 'app', "
        f"'rate limit: 3 lines dropped over 1/s', {T0}, {T0 + 3}, 1)",
        "INSERT INTO gaps (host, container_id, container_name, reason, from_ns, to_ns, "
        f"created_ns) VALUES ('h', '{'a' * 64}', 'app', 'lost: rotated', {T0}, {T0 + 3}, 1)",
        "UPDATE schema_version SET version = 5",
    ):
        execute(store_url, sql)
    async with LogStorage(store_url, host="h") as storage:
        assert query(store_url, "SELECT reason, kind FROM gaps ORDER BY id") == [
            ("rate limit: 3 lines dropped over 1/s", "rate"),
            ("lost: rotated", None),
        ]
        grown = LineBatch(source, dropped=Dropped(T0, T0 + 9, 9, "rate limit: 9 lines dropped"))
        await storage.write(grown)
        await storage.flush()
    assert query(store_url, "SELECT reason, to_ns, kind FROM gaps ORDER BY id") == [
        ("lost: rotated", T0 + 3, None),
        ("rate limit: 9 lines dropped", T0 + 9, "rate"),
    ]
    assert query(store_url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
