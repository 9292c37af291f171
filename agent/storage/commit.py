"""One commit of the writer: batches of lines, with their containers' positions, their gaps
and the host's last id, in one transaction (the SQL; the writer decides when and what).

Also the store's answer after a failed commit: which of the held batches it stored anyway.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from functools import partial
from itertools import repeat
from typing import Any

from agent.batch import STREAMS, LineBatch, Source
from agent.storage.counts import Key, tally
from agent.storage.counts import add as add_counts
from agent.storage.cursors import (
    add_sources,
    described,
    described_sql,
    position_sql,
)
from agent.storage.db import in_child_task, transaction
from agent.storage.gaps import record_drops, record_lost
from agent.storage.generation import Generation, count_sql
from agent.storage.models import LOG_LINE_COLUMNS, LogLine, fit
from agent.storage.partitions import day_of, ensure_days
from agent.storage.postgres import COMMITS, SERVER_SQL
from agent.storage.recent import Held, RecentRows
from agent.storage.signal import CommitSignal
from agent.storage.sql import Marks
from agent.storage.tallies import REMOVED

log = logging.getLogger("logagent.storage")

# SQLite: rows per INSERT statement. Each executed statement costs SQLite a fresh VDBE run and
# an AUTOINCREMENT update: one row per statement spent 3.1 µs a row, 100 rows 1.8 (bench/
# README.md, #19). 100 rows of 8 columns stays under 999, the oldest builds' bound.
ROWS_PER_INSERT = 100
# ... as INSERT OR FAIL: a statement of many rows that may abort half-way makes SQLite copy
# every page it touches into a statement journal first (a temp file past 64 KiB: 12,000
# writes a second with 100 busy containers). FAIL keeps the rows before a failing one, and
# needs no journal; the transaction still commits all or nothing (the writer rolls it back).
_INSERT_SQLITE = "INSERT OR FAIL"


class CommitSql:
    """The statements of a commit, built once for the store's dialect."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.days: set[int] = set()  # PostgreSQL: days known to have a partition
        # Per container id, its row's id (the `source_id` of its lines), once committed; a
        # removed container's goes with the commit that says so (a later batch asks again).
        self.ids: dict[str, int] = {}
        # Per container id, the newest identity its row was given (Source.version): what a
        # batch made under an older one shows instead of its own.
        self.identities: dict[str, Source] = {}
        # Per container id, the identity whose image, service and labels its row was told
        # by a commit that succeeded (a failed one tells them again).
        self.told: dict[str, Source] = {}
        # This host's commits the store acknowledged: each commit checks and counts them.
        self.generation = Generation(host)
        self._insert_sql = self._insert_many_sql = self._position_sql = self._commit_sql = ""
        self._count_sql = ""
        self._described_sql = ""
        self._notify_sql = f"SELECT {SERVER_SQL}, pg_notify('{COMMITS}', '')"
        self._copy = False
        # PostgreSQL: the server that acknowledged the newest commit (None: none yet).
        self.server: str | None = None
        # SQLite: each commit's rows, held a moment for this host's followers (recent.py).
        self.recent = RecentRows()
        # Told after each commit of rows: what wakes this host's followers in this process.
        self.commits = CommitSignal()

    def open(self, dialect: str) -> None:
        verb = _INSERT_SQLITE if dialect == "sqlite" else "INSERT"
        into = f"{verb} INTO {LogLine._meta.db_table} ({', '.join(LOG_LINE_COLUMNS)}) VALUES "
        marks = Marks(dialect)
        self._insert_sql = f"{into}({marks.many(len(LOG_LINE_COLUMNS))})"
        self._insert_many_sql = into + ", ".join(
            f"({marks.many(len(LOG_LINE_COLUMNS))})" for _ in range(ROWS_PER_INSERT)
        )
        self._position_sql = position_sql(dialect)
        self._commit_sql = count_sql(dialect, rows=True)
        self._count_sql = count_sql(dialect, rows=False)
        self._described_sql = described_sql(dialect)
        self._copy = dialect == "postgres"

    async def commit(self, batches: list[LineBatch]) -> None:
        """These batches in one transaction (a child task's: see db.in_child_task)."""
        await in_child_task(partial(self._commit, batches))

    async def _commit(self, batches: list[LineBatch]) -> None:
        ids = self.ids
        new = {b.source.container_id: b.source for b in batches if b.source.container_id not in ids}
        if new:
            async with transaction() as conn:
                added = await add_sources(conn, self.host, list(new.values()))
            ids.update(added)  # committed: now the rows exist
        now = time.time_ns()
        columns, positions, told, newest = self._rows(batches, now)
        counted = Counter[Key]()
        for b in batches:  # lines per minute, committed with them (storage/counts.py)
            counted.update(tally(ids[b.container_id], b.timestamps_ns, b.streams, b.levels))
        dropped = {(ids[b.container_id], b.dropped.from_ns): b for b in batches if b.dropped}
        missing = self._missing_days(batches) if self._copy else set()
        if missing:  # in a short transaction of its own: it locks the whole table
            async with transaction() as conn:
                await ensure_days(conn, missing)
        rows = len(columns[0])
        hold = rows > 0 and self.recent.followed and not self._copy
        last_id, server = 0, ""
        async with transaction() as conn:
            if not rows:
                pass  # positions only: every line filtered out, or in an open event
            elif self._copy:
                # PostgreSQL: binary COPY through tortoise's own connection, in the batch's
                # transaction (~2x executemany's rows/s here).
                async with conn.acquire_connection() as raw:
                    await raw.copy_records_to_table(
                        LogLine._meta.db_table,
                        records=list(zip(*columns, strict=True)),
                        columns=LOG_LINE_COLUMNS,
                    )
            else:
                await self._insert(conn, columns)
                if hold:  # one writer: this transaction's rows took consecutive ids
                    _, got = await conn.execute_query("SELECT last_insert_rowid()")
                    last_id = int(got[0][0])
            # The store is still the one written to (its count of this host's commits), and
            # the follow seam's bound: this host's rows are committed up to here.
            gen = self.generation
            changed, _ = await conn.execute_query(
                self._commit_sql if rows else self._count_sql, gen.count_params(now, rows=rows > 0)
            )
            gen.counted(changed)
            if rows:
                await add_counts(conn, self.host, counted)
            await conn.execute_many(self._position_sql, positions)
            if told:  # a new identity: what it was run as, once, not with every commit
                await conn.execute_many(self._described_sql, told)
            if dropped:
                await record_drops(conn, self.host, list(dropped.values()))
            if lost := [b for b in batches if b.lost is not None]:
                await record_lost(conn, self.host, lost)
            if self._copy:  # wakes `logs -f` readers, once per batch, at the commit; and
                # says which server takes it (a failover may reconnect without an error)
                _, said = await conn.execute_query(self._notify_sql)
                server = str(said[0][0])
        self.generation.commits += 1
        if self._copy:
            self.server = server
        if hold:
            messages, levels = columns[5], columns[7]  # LOG_LINE_COLUMNS' message, level
            self.recent.add(Held(self.generation.epoch, last_id - rows + 1, levels, messages))
        if rows:
            self.commits.notified()
        self.days |= missing
        self.told.update(newest)  # committed: a failed commit tells them again
        for b in batches:
            if b.state == REMOVED:
                ids.pop(b.container_id, None)
                self.identities.pop(b.container_id, None)
                self.told.pop(b.container_id, None)

    def _rows(
        self, batches: list[LineBatch], now: int
    ) -> tuple[list[list[Any]], list[list[Any]], list[list[Any]], dict[str, Source]]:
        """The rows column by column, in LOG_LINE_COLUMNS' order (lists joined in C, never a
        tuple per row), per container its position row (position_sql's parameters), for
        each identity new to this writer what its row is told of it (described_sql's), and
        each container's identity as this commit leaves it (kept once it is committed)."""
        sids: list[int] = []
        streams: list[str] = []
        stamps: list[int] = []
        texts: list[str] = []
        messages: list[str] = []
        flags: list[int] = []
        levels: list[int | None] = []
        last: dict[int, LineBatch] = {}  # per source, its last batch: its position
        per_source: dict[int, list[int]] = {}  # per source, [lines, bytes]
        states: dict[int, str] = {}  # per source, the last state said
        latest: dict[int, Source] = {}  # per source, its identity as of its last batch
        ids = self.ids
        for b in batches:
            sid = ids[b.container_id]
            n = len(b)
            sids += repeat(sid, n)
            streams += b.streams
            stamps += b.timestamps_ns
            texts += b.timestamps
            messages += b.messages
            flags += b.flags
            levels += b.levels or repeat(None, n)
            if b.position or sid not in last:  # a batch of no lines may carry no position
                last[sid] = b
            tally = per_source.setdefault(sid, [0, 0])
            tally[0] += len(b)
            tally[1] += b.nbytes
            if b.state is not None:
                states[sid] = b.state
            if sid not in latest or b.source.version >= latest[sid].version:
                latest[sid] = b.source  # a rename queued after lines read under the old name
        positions: list[list[Any]] = []
        told: list[list[Any]] = []
        known = self.identities
        newest: dict[str, Source] = {}
        for sid, b in last.items():
            src = latest[sid]
            if (kept := known.get(b.container_id)) is not None and kept.version > src.version:
                src = kept  # a batch read under an older identity, committed after the new
            if self.told.get(b.container_id) != src and (src.image or src.service or src.labels):
                told.append([*described(src), sid])
            known[b.container_id] = src
            newest[b.container_id] = src
            name = fit(src.container_name)
            age = (src.max_age_s, src.max_age_s)  # position_sql: said or not, then the value
            row: list[Any] = [name, name]
            for stream in STREAMS:
                row += b.position.get(stream, (None, None))
            positions.append(
                [*row, *per_source[sid], now, *age, fit(src.project), states.get(sid), sid]
            )
        hosts = [self.host] * len(sids)
        columns: list[list[Any]] = [hosts, sids, streams, stamps, texts, messages, flags, levels]
        return columns, positions, told, newest

    async def _insert(self, conn: Any, columns: list[list[Any]]) -> None:
        """SQLite: the rows in statements of ROWS_PER_INSERT rows each, the rest one by one.

        The parameters of a statement are one flat list, laid out by strided slice
        assignment, a column at a time (0.2 µs a row less than a tuple per row, chained)."""
        width, n = len(columns), len(columns[0])
        flat: list[Any] = [None] * (width * n)
        for i, column in enumerate(columns):
            flat[i::width] = column
        whole = (n - n % ROWS_PER_INSERT) * width
        step = ROWS_PER_INSERT * width
        if whole:
            await conn.execute_many(
                self._insert_many_sql, [flat[i : i + step] for i in range(0, whole, step)]
            )
        if whole < len(flat):
            await conn.execute_many(
                self._insert_sql, [flat[i : i + width] for i in range(whole, len(flat), width)]
            )

    def _missing_days(self, batches: list[LineBatch]) -> set[int]:
        """The days of these lines without a known partition (all of them: a host clock
        stepped back can put an earlier day after a later one)."""
        days: set[int] = set()
        for b in batches:
            if b.timestamps_ns:
                ts = b.timestamps_ns
                first, last = day_of(min(ts)), day_of(max(ts))
                # Only the days that have lines: a clock once set to 1970 must not make 20k.
                days.update((first, last) if last - first < 2 else map(day_of, ts))
        return days - self.days
