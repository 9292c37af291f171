"""SQLite's search index (storage/search_index.py): `logs --grep` through it prints exactly
what the RE2 scan prints, for 50 patterns, with the index whole or half built; retention
takes rows out of it; an index turned off is dropped."""

from __future__ import annotations

import io
import random
import sqlite3
import time
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import pytest

from agent import commands
from agent.batch import LineBatch, Source
from agent.config import ConfigError, load_settings
from agent.storage import LogStorage, search_index
from agent.storage.follow import Position
from agent.storage.retention import Retention
from agent.storage.search_index import SearchIndexer
from tests.conftest import (
    Containers,
    agent_settings,
    db_url,
    eventually,
    query,
    rows_in,
    running_agent,
)

pytestmark = [pytest.mark.anyio]
DAY = 86400 * 10**9

WORDS = ["ERROR", "error", "Error", "timeout", "TimeOut", "panic", "PANIC", "status=503",
         "status=200", "GET /api/v1/items", "POST /login", "disk full", "disk quota",
         "héllo wörld", "HÉLLO", "naïve café", "日本語のログ", "connection refused", "a.b",
         "x[1]", "path\\to", 'say "hi"', "SIGSEGV", "segfault", "100%", "under_score",
         "kelvin K", "\u212a kelvin sign", "long s \u017f", "tab\there", "Straße"]  # fmt: skip
PATTERNS = [
    "ERROR", "error", "(?i)error", "ERROR|FATAL", "timeout", "(?i)timeout", "panic|PANIC",
    r"status=5\d\d", r"status=\d+", "status=200$", "^GET /api", r"GET /api/v\d+/items",
    "POST /lo+gin", "disk (full|quota)", "disk full|disk quota", "héllo", "(?i)héllo",
    "wörld$", "café", "日本語", "ログ", "connection refused", r"a\.b", "a.b", r"x\[1\]",
    r"path\\to", '"hi"', "SIGSEGV|segfault", "seg(fault|v)", "100%", "under_score",
    "(?i)kelvin", "kelvin", "(?i)straße", "Straße", r"tab\there", "tab.here", "[Ee]rror",
    r"\bERROR\b", "(?i)sigsegv", "ab?c", "line [0-9]+7$", "(?:POST|GET) /", "refused$",
    "quota", "(?i)QUOTA", "xyzzy", "^$", "l", r"\d{3}",
]  # fmt: skip


async def logs(url: str, pattern: str) -> str:
    out = io.StringIO()
    await commands.logs(url, commands.LogsOptions(grep=pattern, json=True), out)
    return out.getvalue()


async def fill(storage: LogStorage, n: int, start_ns: int) -> None:
    rng = random.Random(3)
    src = Source("c" * 64, "web")
    for at in range(0, n, 100):
        batch = LineBatch(src)
        for i in range(at, at + 100):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 3))) + f" line {i}"
            batch.append("stdout", start_ns + i * 10**6, "", text, 0, len(text.encode()))
        await storage.write(batch)
    await storage.flush()


@pytest.mark.parametrize("few", [50_000, 0], ids=["read-by-id", "walked-in-order"])
async def test_grep_through_the_index_prints_what_the_scan_prints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, few: int
) -> None:
    """Both ways a search uses the index: few rows named (read by id, sorted), or many
    (walked in order, each checked against the index's answer)."""
    monkeypatch.setattr(search_index, "FEW", few)
    url = db_url(tmp_path)
    async with LogStorage(url, host="h") as storage:
        await fill(storage, 4_000, time.time_ns() - DAY)
        scanned = {p: await logs(url, p) for p in PATTERNS}  # no index yet: every row read
        await search_index.prepare(storage.db, on=True)
        indexer = SearchIndexer(storage.db)
        await indexer.step()  # half built: a chunk indexed, the tail read as rows
        assert 0 < indexer.indexed < 4_000
        half = {p: await logs(url, p) for p in PATTERNS}
        while await indexer.step():
            pass
        assert indexer.indexed == 4_000
        whole = {p: await logs(url, p) for p in PATTERNS}
    for p in PATTERNS:
        assert half[p] == scanned[p], p
        assert whole[p] == scanned[p], p
    assert sum(1 for p in PATTERNS if scanned[p]) > 40  # the patterns do find lines
    narrowed = [p for p in PATTERNS if search_index.match_expression(p) is not None]
    assert len(narrowed) > 25  # most go through the index


async def test_retention_takes_rows_out_of_the_index_and_off_drops_it(tmp_path: Path) -> None:
    url = db_url(tmp_path)
    now = time.time_ns()
    async with LogStorage(url, host="h") as storage:
        await search_index.prepare(storage.db, on=True)
        await fill(storage, 2_000, now - 10 * DAY)
        await fill(storage, 1_000, now - DAY)
        indexer = SearchIndexer(storage.db)
        while await indexer.step():
            pass
        report = await Retention(storage, max_age_s=7 * 86400, max_bytes=0).run_once(now)
        assert report.by_age > 0
        await storage.db.execute_query(
            "INSERT INTO log_search(log_search) VALUES ('integrity-check')"
        )  # the index and the rows agree
        assert await logs(url, "ERROR") != ""
        await search_index.prepare(storage.db, on=False)
        assert not await search_index.exists(storage.db)
    with closing(sqlite3.connect(tmp_path / "logs.db")) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM consumer_positions")]
    assert "search-index" not in names


async def test_an_index_kept_on_is_kept_from_one_start_to_the_next(tmp_path: Path) -> None:
    """Each start prepares the index: one that is there stays, with its position (a
    review: every second start dropped it, and the next built it again from the first row)."""
    url = db_url(tmp_path)
    for start in range(3):
        async with LogStorage(url, host="h") as storage:
            await fill(storage, 1_000, time.time_ns() - DAY)
            await search_index.prepare(storage.db, on=True)
            indexer = SearchIndexer(storage.db)
            while await indexer.step():
                pass
            assert indexer.indexed == 1_000  # this start's rows alone
            assert await search_index.indexed_upto(storage.db) == 1_000 * (start + 1)


@pytest.mark.docker
async def test_the_agent_indexes_behind_its_writer_when_asked(
    tmp_path: Path, containers: Containers
) -> None:
    settings = replace(agent_settings(tmp_path), search_index=True)
    async with running_agent(settings):
        cid = containers.run("indexed", "for i in $(seq 1 3000); do echo line $i; done")
        containers.wait("indexed")
        await eventually(lambda: len(rows_in(settings.db_url, cid)) == 3000)

        def indexed() -> bool:
            found = query(settings.db_url, "SELECT position FROM consumer_positions "
                          "WHERE name = 'search-index'")  # fmt: skip
            top = query(settings.db_url, "SELECT MAX(id) FROM log_lines")
            return bool(found) and Position.parse(found[0][0]).as_dict()["*"] == top[0][0]

        await eventually(indexed, limit=60)
    out = io.StringIO()
    await commands.logs(settings.db_url, commands.LogsOptions(grep="line 2999$"), out)
    assert out.getvalue() == f"{containers.prefix}-indexed | line 2999\n"  # found by the index
    config = tmp_path / "pg.toml"
    config.write_text('[storage]\ndb_url = "postgres://u@h/db"\nsearch_index = true\n')
    with pytest.raises(ConfigError, match=r"storage\.search_index: for SQLite only"):
        load_settings(config, environ={})
