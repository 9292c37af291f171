"""SQLite's search index: an FTS5 `trigram` index of the lines, built behind the writer.

`logs --grep` over a SQLite store reads every row and matches RE2 on each (~26 s for 10M
rows); with `storage.search_index = true` the agent indexes committed rows in chunks, after
their commit, with a position of its own (consumer `search-index`), and a search reads only
the rows the index names plus the tail not indexed yet: the same rows as the scan, since the
index only narrows (literals.py) and RE2 still judges each. Indexing costs ~10 µs of CPU a
row (more than storing it), so it is the operator's choice, off by default. PostgreSQL has
its trigram index (schema.py) and needs none of this.

The index holds no text of its own (`content='log_lines'`, `detail='none'`: ~0.5x the
lines' size); retention takes each row out of it before deleting the row.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import anyio
import anyio.lowlevel
from tortoise.backends.base.client import BaseDBAsyncClient

from agent.literals import MIN_LITERAL, required
from agent.storage import consumers
from agent.storage.db import in_child_task, transaction
from agent.storage.follow import Position
from agent.storage.models import LogLine
from agent.storage.reader import LogFilter
from agent.storage.signal import IDLE_S, CommitSignal

log = logging.getLogger("logagent.search")

TABLE = "log_search"
NAME = "search-index"  # its position among the consumers'
CHUNK = 2_000  # rows a transaction: ~20 ms of the writer's time, then it may commit again
_KEY = "*"
# Rows the index may name for them to be read by id and sorted (a rare word); more, and the
# rows are walked in order, each checked against the index's answer (a common one).
FEW = 50_000  # the position's one key: a SQLite store has one writer


def _sqlite(db: BaseDBAsyncClient) -> bool:
    return str(db.capabilities.dialect) == "sqlite"


async def exists(db: BaseDBAsyncClient) -> bool:
    if not _sqlite(db):
        return False
    _, rows = await db.execute_query(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", [TABLE]
    )
    return bool(rows)


async def prepare(db: BaseDBAsyncClient, *, on: bool) -> None:
    """At the agent's start: the index made (on), or dropped with its position (off: an index
    no longer kept up would answer for rows it does not hold)."""
    if not _sqlite(db):
        return
    if on:
        if not await exists(db):  # made with no position: from the first row
            await _create(db)
        return  # kept, with its position, from one start to the next
    if await exists(db):
        log.warning("storage.search_index is off: dropping the search index")
        async with transaction() as conn:
            await conn.execute_query(f"DROP TABLE {TABLE}")
            await conn.execute_query("DELETE FROM consumer_positions WHERE name = ?", [NAME])


async def _create(db: BaseDBAsyncClient) -> None:
    async with transaction() as conn:
        await conn.execute_query(
            f"CREATE VIRTUAL TABLE {TABLE} USING fts5(message, "
            f"content='{LogLine._meta.db_table}', content_rowid='id', tokenize='trigram', "
            "detail='none')"
        )
        await conn.execute_query("DELETE FROM consumer_positions WHERE name = ?", [NAME])


async def indexed_upto(db: BaseDBAsyncClient) -> int | None:
    """The last row id indexed; None where there is no index (then every search scans)."""
    if not await exists(db):
        return None
    position = await consumers.load(db, NAME)
    return position.as_dict().get(_KEY, 0) if position is not None else 0


def match_expression(pattern: str) -> str | None:
    """An FTS5 query naming every row a match of the RE2 `pattern` can be in (more, never
    fewer); None if none can be given for certain (the rows are all read, as before)."""
    found = required(pattern)
    if found is None:
        return None
    literals, _case_insensitive = found  # the index folds case itself: a wider answer
    alternatives = []
    for literal in literals:
        grams = {literal[i : i + MIN_LITERAL] for i in range(len(literal) - MIN_LITERAL + 1)}
        quoted = ['"' + g.replace('"', '""') + '"' for g in sorted(grams)]
        alternatives.append("(" + " AND ".join(quoted) + ")")
    return " OR ".join(alternatives)


async def narrowed(db: BaseDBAsyncClient, flt: LogFilter, pattern: str) -> LogFilter:
    """The filter of a --grep on SQLite, told which rows the index names (unchanged where
    there is no index, or the pattern has no literal to look up)."""
    expression = match_expression(pattern)
    if expression is None:
        return flt
    upto = await indexed_upto(db)
    if upto is None:
        return flt
    _, counted = await db.execute_query(
        f"SELECT COUNT(*) FROM {TABLE} WHERE {TABLE} MATCH ?", [expression]
    )
    few = int(counted[0][0]) <= FEW
    return replace(flt, indexed=(expression, upto, few))


async def forget(conn: BaseDBAsyncClient, ids: list[int], upto: int) -> None:
    """In retention's transaction, before the rows go: those indexed, out of the index."""
    done = [i for i in ids if i <= upto]
    if not done:
        return
    marks = ", ".join("?" for _ in done)
    await conn.execute_query(
        f"INSERT INTO {TABLE}({TABLE}, rowid, message) SELECT 'delete', id, message "
        f"FROM {LogLine._meta.db_table} WHERE id IN ({marks})",
        done,
    )


class SearchIndexer:
    """Indexes what the writer committed, a chunk a transaction, and keeps its position."""

    def __init__(self, db: BaseDBAsyncClient, commits: CommitSignal | None = None) -> None:
        self.db = db
        self.indexed = 0  # rows indexed by this run (metrics, tests)
        self._commits = commits  # the writer's (LogStorage.commits): caught up, it waits

    async def run_forever(self, poll_s: float = 1.0) -> None:
        """A chunk after another while behind; caught up, a step every `poll_s` at most (a
        second's commits indexed together), and none until the writer commits again."""
        while True:
            woken = self._commits.armed() if self._commits is not None else None
            try:
                if await in_child_task(self.step):
                    await anyio.lowlevel.checkpoint()  # the writer's turn, then the next chunk
                    continue
            except Exception as exc:  # the store away: tried again at the next poll
                log.warning("search index: could not index a chunk: %s", exc)
                woken = None
            await anyio.sleep(poll_s)
            if woken is not None:
                with anyio.move_on_after(IDLE_S):
                    await woken.wait()

    async def step(self) -> int:
        """Index the next chunk of committed rows; how many there were."""
        upto = await indexed_upto(self.db)
        if upto is None:
            return 0
        lines = LogLine._meta.db_table
        async with transaction() as conn:
            _, rows = await conn.execute_query(
                f"SELECT id FROM {lines} WHERE id > ? ORDER BY id LIMIT 1 OFFSET ?",
                [upto, CHUNK - 1],
            )
            if rows:
                last = int(rows[0][0])
            else:
                _, top = await conn.execute_query(f"SELECT MAX(id) FROM {lines}")
                last = int(top[0][0] or 0)
            if last <= upto:
                return 0
            _, counted = await conn.execute_query(
                f"SELECT COUNT(*) FROM {lines} WHERE id > ? AND id <= ?", [upto, last]
            )
            await conn.execute_query(
                f"INSERT INTO {TABLE}(rowid, message) SELECT id, message FROM {lines} "
                "WHERE id > ? AND id <= ?",
                [upto, last],
            )
            await consumers.save(conn, NAME, Position.of({_KEY: last}))
        n = int(counted[0][0])
        self.indexed += n
        return n
