"""The group-commit writer: batches in through a bounded queue, one transaction per commit.

The writer commits whatever is queued as soon as its previous commit ends, so commits grow
under load and an idle line waits only for one commit. The queue (an anyio memory object
stream) is bounded: a slow or failing database slows the collectors (they wait in `write`)
instead of growing memory, and a failed commit is kept and tried again — nothing is dropped.
Each container's read position is written in the same transaction as its lines.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from itertools import repeat
from typing import Any, TypedDict

import anyio
from anyio.abc import TaskStatus

from agent.batch import (
    FLAG_CONTINUED,
    FLAG_REPLACED,
    FLAG_TRUNCATED,
    STREAMS,
    LineBatch,
    Lost,
    Source,
)
from agent.storage.cursors import add_sources, commit_sql, position_sql, stored_positions
from agent.storage.db import StorageError, fatal, in_child_task, refused, transaction
from agent.storage.gaps import record_drops, record_lost
from agent.storage.models import LOG_LINE_COLUMNS, LogLine, fit
from agent.storage.partitions import day_of, ensure_days
from agent.storage.postgres import COMMITS
from agent.storage.sql import Marks
from agent.timestamps import NS_RANGE

log = logging.getLogger("logagent.storage")

# Memory held by lines read from Docker but not yet committed, at most (a slow or full disk, a
# locked store): then collectors wait, and Docker's own log files hold the rest.
DEFAULT_QUEUE_BYTES = 16 * 1024 * 1024
# What a queued line costs beyond its bytes: its Python objects (text, Docker's timestamp, the
# integers, list slots). Measured: 319 bytes for a 100-byte line.
LINE_OVERHEAD = 220
# SQLite: rows per INSERT statement. Each executed statement costs SQLite a fresh VDBE run and
# an AUTOINCREMENT update: one row per statement spent 3.1 µs a row, 100 rows 1.8 (bench/
# README.md, #19). 100 rows of 8 columns stays under 999, the oldest builds' bound.
ROWS_PER_INSERT = 100
# ... as INSERT OR FAIL: a statement of many rows that may abort half-way makes SQLite copy
# every page it touches into a statement journal first (a temp file past 64 KiB: 12,000
# writes a second with 100 busy containers). FAIL keeps the rows before a failing one, and
# needs no journal; the transaction still commits all or nothing (the writer rolls it back).
_INSERT_SQLITE = "INSERT OR FAIL"


def memory_of(batch: LineBatch) -> int:
    """The memory a queued batch holds, as the queue's bound counts it."""
    return batch.nbytes + LINE_OVERHEAD * len(batch)


class WriterOptions(TypedDict, total=False):
    """What a store's owner may set of its writer (LogStorage passes them on)."""

    max_queue: int
    max_queue_bytes: int
    max_batch: int
    retry_delay: float
    linger: float
    report_every: float


@dataclass
class WriterStats:
    """What the writer did so far: for metrics, health and benchmarks."""

    batches: int = 0  # commits
    rows: int = 0
    write_errors: int = 0
    truncated_rows: int = 0
    refused_rows: int = 0  # set aside as gaps: values the store refuses for good
    last_commit_seconds: float = 0.0
    failing: str | None = None  # the last write error, while it persists
    failing_since_ns: int | None = None  # when writing began to fail (the store went away)


class LogWriter:
    def __init__(
        self,
        host: str,
        *,
        max_queue: int = 4096,
        max_queue_bytes: int = DEFAULT_QUEUE_BYTES,
        max_batch: int = 20_000,
        retry_delay: float = 1.0,
        linger: float = 0.01,
        report_every: float = 60.0,
    ) -> None:
        self.host = host
        self.max_batch = max_batch  # rows in one commit, at most (a read's batch may add)
        self.retry_delay = retry_delay
        # While the store fails, how it goes is said after `report_every` s, then at doubling
        # intervals (up to an hour): an outage of a day is a few lines in the log, not 86,400.
        self.report_every = report_every
        self._report_at = 0.0
        self._report_gap = report_every
        # Group commit alone makes one transaction per line or two when lines trickle in from
        # many containers: measured 461 us of CPU per line at 1.4k lines/s over 100 streams.
        # So a small first batch waits `linger` for company; a big one never waits.
        self.linger = linger
        self.linger_below = 512
        # At most `max_queue` batches wait (each one read of a stream), and a batch is let in
        # only while the lines not yet committed hold under `max_queue_bytes`.
        self._send, self._receive = anyio.create_memory_object_stream[LineBatch](max_queue)
        self.max_queue_bytes = max_queue_bytes
        self._held: list[LineBatch] = []  # taken from the queue, committing
        self._appended = 0
        self._committed = 0
        # Batches, not lines, tell `flush` when it is done: a batch may hold no row and still
        # a position to commit (every line filtered out by a hint, an open multiline event).
        self._batches_in = 0
        self._batches_done = 0
        self.queued_bytes = 0
        self._progress = anyio.Event()  # set after every commit (or failure): wakes flush
        self._open = False
        self._insert_sql = ""
        self._insert_many_sql = ""  # ROWS_PER_INSERT rows at once (SQLite)
        self._position_sql = ""
        self._commit_sql = ""
        self._copy = False
        self._unsure = False  # a commit failed: it may have been applied all the same
        self.days: set[int] = set()  # PostgreSQL: days known to have a partition
        self.stats = WriterStats()
        self.on_commit: Callable[[int, float], None] | None = None  # (rows, seconds): metrics

    def open(self, dialect: str) -> None:
        verb = _INSERT_SQLITE if dialect == "sqlite" else "INSERT"
        into = f"{verb} INTO {LogLine._meta.db_table} ({', '.join(LOG_LINE_COLUMNS)}) VALUES "
        self._insert_sql = f"{into}({Marks(dialect).many(len(LOG_LINE_COLUMNS))})"
        marks = Marks(dialect)
        self._insert_many_sql = into + ", ".join(
            f"({marks.many(len(LOG_LINE_COLUMNS))})" for _ in range(ROWS_PER_INSERT)
        )
        self._position_sql = position_sql(dialect)
        self._commit_sql = commit_sql(dialect)
        self._copy = dialect == "postgres"
        self._open = True

    def close(self) -> None:
        """No more writes; a collector still waiting in `write` gets a StorageError."""
        self._open = False
        self._receive.close()
        self._wake()

    @property
    def queued(self) -> int:
        """Lines accepted and not yet committed."""
        return self._appended - self._committed

    async def write(self, batch: LineBatch) -> None:
        """Queue a container's batch; waits (backpressure) while the queue is full."""
        while self.queued_bytes >= self.max_queue_bytes and self._open:
            await self._progress.wait()
        size = memory_of(batch)
        self.queued_bytes += size
        try:
            try:  # without a trip through the event loop when there is room (most writes)
                self._send.send_nowait(batch)
            except anyio.WouldBlock:
                await self._send.send(batch)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            self.queued_bytes -= size
            raise StorageError("storage is not open") from None
        self._appended += len(batch)
        self._batches_in += 1

    async def flush(self) -> None:
        """Return once every line queued before the call is committed."""
        target = self._batches_in
        while self._batches_done < target:
            if not self._open:
                raise StorageError("storage is not open")
            await self._progress.wait()

    def _wake(self) -> None:
        self._progress.set()
        self._progress = anyio.Event()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        held, receive, stats = self._held, self._receive, self.stats
        while True:
            if not held:
                try:
                    first = await receive.receive()
                except anyio.EndOfStream:
                    return
                held.append(first)
                if self.linger and len(first) < self.linger_below:
                    await anyio.sleep(self.linger)
            rows = sum(len(b) for b in held)
            while rows < self.max_batch:
                try:
                    more = receive.receive_nowait()
                except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                    break
                held.append(more)
                rows += len(more)
            started = time.perf_counter()
            try:
                if self._unsure:  # the last commit failed: it may have been stored after all
                    self._settle(await in_child_task(partial(self._stored_already, held)))
                    self._unsure = False
                    rows = sum(len(b) for b in held)
                if held:
                    await self._commit_held(held)
            except Exception as exc:  # a database failure: keep the rows, report, retry
                self._unsure = True
                stats.write_errors += 1
                self.days.clear()  # another agent's retention may have dropped a day
                if (code := fatal(exc)) is not None:  # retrying cannot help: stop the agent
                    stats.failing = f"{type(exc).__name__}: {exc}"
                    raise StorageError(
                        f"the store cannot be written ({code}): {exc}; {rows} lines not "
                        "written are read again from Docker at the next start"
                    ) from exc
                if stats.failing is None:
                    stats.failing_since_ns = time.time_ns()
                    self._report_at = time.monotonic() + self.report_every
                    self._report_gap = self.report_every
                    log.error(
                        "writing %d lines failed, will retry (collectors wait; Docker keeps "
                        "the lines): %s",
                        rows,
                        exc,
                    )
                elif time.monotonic() >= self._report_at:
                    down = (time.time_ns() - (stats.failing_since_ns or 0)) / 1e9
                    log.warning(
                        "writing still fails after %.0f s (%d tries); %d lines wait, "
                        "collectors are paused: %s",
                        down,
                        stats.write_errors,
                        self.queued,
                        exc,
                    )
                    self._report_gap = min(self._report_gap * 2, 3600.0)
                    self._report_at = time.monotonic() + self._report_gap
                stats.failing = f"{type(exc).__name__}: {exc}"
                self._wake()
                await anyio.sleep(self.retry_delay)
                continue
            if stats.failing is not None:
                down = (time.time_ns() - (stats.failing_since_ns or 0)) / 1e9
                log.warning("writing works again after %.0f s of: %s", down, stats.failing)
                stats.failing, stats.failing_since_ns = None, None
            if not held:
                self._wake()
                continue
            self._settle(list(held))
            stats.batches += 1
            stats.last_commit_seconds = time.perf_counter() - started
            if self.on_commit is not None:
                self.on_commit(rows, stats.last_commit_seconds)
            self._wake()

    async def _commit_held(self, held: list[LineBatch]) -> None:
        """All held batches in one commit; if the store refuses some of their values for
        good, each batch on its own, so that one container's bad row costs only it."""
        if (why := await self._refused(held)) is not None:
            log.warning("the store refused a commit (%s): committing batch by batch", why)
            for b in list(held):
                await self._commit_alone(b)
                self._settle([b])

    async def _commit_alone(self, batch: LineBatch) -> None:
        """One batch; a value the store refuses is cleaned (a NUL byte: PostgreSQL's text
        cannot hold one) or the batch set aside, as a gap of its container with the reason,
        and its position committed: after a restart Docker does not send it again."""
        if (why := await self._refused([batch])) is None:
            return
        if any("\x00" in m for m in batch.messages):
            clean = batch.take(list(range(len(batch))))
            clean.messages = [m.replace("\x00", "\ufffd") for m in batch.messages]
            clean.flags = [f | FLAG_REPLACED if "\x00" in m else f
                           for f, m in zip(batch.flags, batch.messages, strict=True)]  # fmt: skip
            clean.position, clean.dropped, clean.lost = batch.position, batch.dropped, batch.lost
            if (why := await self._refused([clean])) is None:
                return
        low, high = NS_RANGE.start, NS_RANGE.stop - 1  # a gap's bounds are BIGINT columns
        stamps = [min(max(t, low), high) for t in batch.timestamps_ns]
        reason = f"{len(batch)} lines the store refuses: {why}"[:500]
        aside = LineBatch(batch.source, position=batch.position, dropped=batch.dropped)
        aside.lost = Lost(reason, min(stamps, default=None), max(stamps, default=None))
        self.stats.refused_rows += len(batch)
        log.error("%s (%s): %s", batch.container_name, batch.container_id[:12], reason)
        if await self._refused([aside]) is not None:
            aside.position = {}  # the position itself is out of range: the gap alone
            if (why := await self._refused([aside])) is not None:
                # Never a wedge: this is said in the log and counted, and the rest goes on.
                log.error("%s: not even its gap can be stored: %s", batch.container_name, why)
        if batch.lost is not None:  # its own gap goes in too
            await in_child_task(partial(self._commit, [LineBatch(batch.source, lost=batch.lost)]))

    async def _refused(self, batches: list[LineBatch]) -> str | None:
        """Commit these; None, or why the store refuses their values for good (any other
        failure is raised: the store is away, the batches are kept and retried)."""
        try:
            await in_child_task(partial(self._commit, batches))  # see there: why
        except Exception as exc:
            if (why := refused(exc)) is None:
                raise
            return why
        return None

    async def _commit(self, batches: list[LineBatch]) -> None:
        new = {id(b.source): b.source for b in batches if b.source.source_id is None}
        if new:
            async with transaction() as conn:
                ids = await add_sources(conn, self.host, list(new.values()))
            for source in new.values():  # committed: now the rows exist
                source.source_id = ids[source.container_id]
        # The rows column by column, in LOG_LINE_COLUMNS' order but the host (one for all):
        # lists joined in C, never a tuple per row.
        sids: list[int] = []
        streams: list[str] = []
        stamps: list[int] = []
        texts: list[str] = []
        messages: list[str] = []
        flags: list[int] = []
        levels: list[int | None] = []
        last: dict[int, LineBatch] = {}  # per source, its last batch: its position
        per_source: dict[int, list[int]] = {}  # per source, [lines, bytes]
        for b in batches:
            sid = b.source.source_id
            assert sid is not None
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
        now = time.time_ns()
        positions: list[list[Any]] = []
        for sid, b in last.items():
            name = fit(b.container_name)
            row: list[Any] = [name, name]
            for stream in STREAMS:
                row += b.position.get(stream, (None, None))
            src = b.source
            positions.append(
                [*row, *per_source[sid], now, src.max_age_s, fit(src.project), src.state, sid]
            )
        dropped = {(b.source.source_id, b.dropped.from_ns): b for b in batches if b.dropped}
        missing = self._missing_days(batches) if self._copy else set()
        if missing:  # in a short transaction of its own: it locks the whole table
            async with transaction() as conn:
                await ensure_days(conn, missing)
        columns: list[list[Any]] = [
            [self.host] * len(sids),
            sids,
            streams,
            stamps,
            texts,
            messages,
            flags,
            levels,
        ]
        async with transaction() as conn:
            if not sids:
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
            if sids:  # the follow seam: this host's rows are committed up to here
                await conn.execute_query(self._commit_sql, [self.host, now])
            await conn.execute_many(self._position_sql, positions)
            if dropped:
                await record_drops(conn, self.host, list(dropped.values()))
            if lost := [b for b in batches if b.lost is not None]:
                await record_lost(conn, self.host, lost)
            if self._copy:  # wakes `logs -f` readers, once per batch, at the commit
                await conn.execute_query(f"SELECT pg_notify('{COMMITS}', '')")
        self.days |= missing

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

    def _settle(self, done: list[LineBatch]) -> None:
        """Count batches as stored (metrics, flush) and let them go."""
        if not done:
            return
        gone = {id(b) for b in done}
        self._held[:] = [b for b in self._held if id(b) not in gone]
        rows = sum(len(b) for b in done)
        self.queued_bytes -= sum(memory_of(b) for b in done)
        self._committed += rows
        self._batches_done += len(done)
        self.stats.rows += rows
        for b in done:
            self._tally(b.source, b)

    async def _stored_already(self, batches: list[LineBatch]) -> list[LineBatch]:
        """Of the batches a failed commit held, those it stored after all.

        A commit can be applied and still fail for us: PostgreSQL cut the connection after
        COMMIT and before its reply, or tortoise failed releasing the connection after it.
        The position committed with the rows tells: per container, every batch up to the one
        whose position is the stored one is in the store (positions move with every line).
        """
        per_source: dict[int, list[LineBatch]] = {}
        for b in batches:
            if b.source.source_id is not None:
                per_source.setdefault(b.source.source_id, []).append(b)
        if not per_source:
            return []
        async with transaction() as conn:
            stored = await stored_positions(conn, list(per_source))
        done: list[LineBatch] = []
        for sid, queued in per_source.items():
            at = stored.get(sid, {})
            last = -1
            for i, b in enumerate(queued):
                if b.position and all(at.get(s) == pos for s, pos in b.position.items()):
                    last = i
            done += queued[: last + 1]
        if done:
            log.warning("%d lines were stored by the commit that failed: not written again",
                        sum(len(b) for b in done))  # fmt: skip
        return done

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

    def _tally(self, source: Source, batch: LineBatch) -> None:
        """Lines and bytes per stream of what was committed, for metrics."""
        streams = batch.streams
        for stream in STREAMS:
            n = streams.count(stream)
            if not n:
                continue
            if n == len(streams):
                size = batch.nbytes
            else:
                size = sum(z for s, z in zip(streams, batch.sizes, strict=True) if s == stream)
            tally = source.committed.setdefault(stream, [0, 0])
            tally[0] += n
            tally[1] += size
        if any(batch.flags):
            self.stats.truncated_rows += sum(
                1 for f in batch.flags if f & (FLAG_TRUNCATED | FLAG_CONTINUED)
            )
