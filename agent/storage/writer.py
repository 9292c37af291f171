"""The group-commit writer: batches in through a bounded queue, one transaction per commit.

The writer commits whatever is queued as soon as its previous commit ends, so commits grow
under load and an idle line waits only for one commit. The queue (an anyio memory object
stream) is bounded: a slow or failing database slows the collectors (they wait in `write`)
instead of growing memory, and a failed commit is kept and tried again — nothing is dropped.
Each container's read position is written in the same transaction as its lines.

This module is the queue and the loop; the SQL of a commit is `commit.CommitSql`, values the
store refuses for good `refusals.RefusedRows`, how an outage is told `outage.OutageReport`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypedDict

import anyio
from anyio.abc import TaskStatus

from agent.batch import FLAG_CONTINUED, FLAG_TRUNCATED, LineBatch
from agent.storage.commit import CommitSql
from agent.storage.db import StorageError, fatal, in_child_task
from agent.storage.generation import StoreRewound
from agent.storage.options import DEFAULT_QUEUE_BYTES
from agent.storage.outage import OutageReport
from agent.storage.refusals import RefusedRows
from agent.storage.tallies import Tallies
from agent.storage.writer_stats import WriterStats

log = logging.getLogger("logagent.storage")

# What a queued line costs beyond its bytes: its Python objects (text, Docker's timestamp, the
# integers, list slots). Measured: 319 bytes for a 100-byte line.
LINE_OVERHEAD = 220


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
        self._unsure = False  # a commit failed: it may have been applied all the same
        self.stats = WriterStats()
        self.tallies = Tallies()  # per container: metrics and status
        self.sql = CommitSql(host)
        self._refusals = RefusedRows(self.sql, self.stats)
        self._outage = OutageReport(self.stats, report_every)
        self.on_commit: Callable[[int, float], None] | None = None  # (rows, seconds): metrics
        # PostgreSQL: which server the store's connections reach (said again after an outage:
        # after a failover, the new primary).
        self.server_of: Callable[[], Awaitable[str]] | None = None

    @property
    def days(self) -> set[int]:
        """PostgreSQL: the days known to have a partition (retention drops from it)."""
        return self.sql.days

    def open(self, dialect: str) -> None:
        self.sql.open(dialect)
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
        held, stats = self._held, self.stats
        while True:
            if not await self._take():
                return
            rows = sum(len(b) for b in held)
            started = time.perf_counter()
            self.sql.server = None  # the next commit says which server took it
            try:
                if self._unsure:  # the last commit failed: it may have been stored after all
                    await in_child_task(self._settle_unsure)
                    rows = sum(len(b) for b in held)
                if held:
                    await self._refusals.commit_held(held, self._settle)
            except StoreRewound as exc:  # what is held and queued is read again from Docker
                stats.failing = str(exc)
                log.error("%s", exc)
                self.close()
                raise
            except Exception as exc:  # a database failure: keep the rows, report, retry
                self._unsure = True
                self.sql.days.clear()  # another agent's retention may have dropped a day
                if (code := fatal(exc)) is not None:  # retrying cannot help: stop the agent
                    stats.write_errors += 1
                    stats.failing = f"{type(exc).__name__}: {exc}"
                    raise StorageError(
                        f"the store cannot be written ({code}): {exc}; {rows} lines not "
                        "written are read again from Docker at the next start"
                    ) from exc
                if self.sql.server is not None:  # a commit before the failing one took it
                    self._say_server(self.sql.server)
                self._outage.failed(exc, rows, self.queued)
                self._wake()
                await anyio.sleep(self.retry_delay)
                continue
            if stats.failing is not None:
                self._outage.worked()
                if self.sql.server is None:
                    await self.tell_server()
            if self.sql.server is not None:
                self._say_server(self.sql.server)
            if not held:
                self._wake()
                continue
            self._settle(list(held))
            stats.batches += 1
            stats.last_commit_seconds = time.perf_counter() - started
            if self.on_commit is not None:
                self.on_commit(rows, stats.last_commit_seconds)
            self._wake()

    async def tell_server(self) -> None:
        """Say which server is written to (PostgreSQL), in the log and in `stats.server`."""
        if self.server_of is None:
            return
        try:
            server = await in_child_task(self.server_of)
        except Exception as exc:  # the next commit says what fails
            log.debug("which server: %s", exc)
            return
        self._say_server(server)

    def _say_server(self, server: str) -> None:
        if self.stats.server is None:
            log.info("writing to the PostgreSQL server at %s", server)
        elif server != self.stats.server:  # a failover: another server took the writes
            log.warning("writing to the PostgreSQL server at %s", server)
        self.stats.server = server

    async def _settle_unsure(self) -> None:
        """After a commit whose answer was lost: the store's count of this host's commits
        says whether it was applied (StoreRewound if the store is not the one written to).
        Applied: the batches it was about are stored (RefusedRows.attempt, a copy taken
        when it was tried: batches queued since are not); not applied: none. (Judged by
        positions, a gap or a mark of a commit applied was stored twice, and a batch of a
        rate limit's drop alone, which keeps the position before it, looked stored.)"""
        if await self.sql.generation.settle_unsure():
            tried = {id(b) for b in self._refusals.attempt}
            done = [b for b in self._held if id(b) in tried]
            log.warning("%d lines were stored by the commit that failed: not written again",
                        sum(len(b) for b in done))  # fmt: skip
            self._settle(done)
        self._refusals.attempt = []
        self._unsure = False
        # Rows it stored were never told to the followers: a wake costs them one read.
        self.sql.commits.notified()

    async def _take(self) -> bool:
        """Held batches to commit: what a failed commit kept, or the next batch (after a
        linger if it is small) and all queued behind it, up to `max_batch` rows. False: the
        queue is closed and empty."""
        held, receive = self._held, self._receive
        if not held:
            try:
                first = await receive.receive()
            except anyio.EndOfStream:
                return False
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
        return True

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
            self.tallies.count(b)
            if any(b.flags):
                self.stats.truncated_rows += sum(
                    1 for f in b.flags if f & (FLAG_TRUNCATED | FLAG_CONTINUED)
                )
