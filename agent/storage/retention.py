"""Retention: delete the oldest rows past an age or a size, a small batch per transaction.

Each batch is one short transaction, so the writer is never locked out for long (the longest
is measured and kept in `max_lock_seconds`). Deleted rows come off their containers' totals,
each pass is recorded in `prunes`, and SQLite's freed pages are returned to the file system
(incremental vacuum), so the file does not grow without bound.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import anyio
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from agent.storage.models import ContainerCursor, LogLine, Prune
from agent.storage.sql import Marks
from agent.storage.store import LogStorage

log = logging.getLogger("logagent.retention")

BATCH_ROWS = 1000  # measured: ~25 ms a 500-row batch here, far under 100 ms
VACUUM_PAGES = 2000  # 8 MiB of 4 KiB pages per step


@dataclass
class PruneReport:
    by_age: int = 0
    by_size: int = 0
    max_lock_seconds: float = 0.0


class Retention:
    def __init__(
        self,
        storage: LogStorage,
        *,
        max_age_s: float,
        max_bytes: int,
        batch_rows: int = BATCH_ROWS,
    ) -> None:
        self.storage = storage
        self.max_age_s = max_age_s
        self.max_bytes = max_bytes
        self.batch_rows = batch_rows
        self.max_lock_seconds = 0.0
        self.pruned_rows = 0

    async def run_forever(self, interval_s: float) -> None:
        while True:
            try:
                await self.run_once()
            except Exception as exc:  # a failed pass is reported and tried at the next one
                log.error("retention pass failed: %s", exc)
            await anyio.sleep(interval_s)

    async def run_once(self, now_ns: int | None = None) -> PruneReport:
        report = PruneReport()
        db = self.storage.db
        sqlite = self.storage.dialect == "sqlite"
        if self.max_age_s > 0:
            cutoff = (now_ns or time.time_ns()) - int(self.max_age_s * 1_000_000_000)
            while deleted := await self._delete_batch(db, report, before_ns=cutoff):
                report.by_age += deleted
        if sqlite and self.max_bytes > 0:
            while await self._used_bytes(db) > self.max_bytes:
                deleted = await self._delete_batch(db, report, before_ns=None)
                if not deleted:
                    break
                report.by_size += deleted
        for reason, rows in (("max_age", report.by_age), ("max_bytes", report.by_size)):
            if rows:
                await self._record(db, reason, rows)
                log.info("retention (%s) deleted %d rows", reason, rows)
        if sqlite and (report.by_age or report.by_size):
            await self._vacuum(db)
        self.pruned_rows += report.by_age + report.by_size
        return report

    async def _delete_batch(
        self, db: BaseDBAsyncClient, report: PruneReport, *, before_ns: int | None
    ) -> int:
        """Delete up to `batch_rows` oldest rows (older than `before_ns`, if given)."""
        table, cursors = LogLine._meta.db_table, ContainerCursor._meta.db_table
        marks = Marks(self.storage.dialect)
        where = f"WHERE timestamp_ns < {marks()} " if before_ns is not None else ""
        values = [before_ns] if before_ns is not None else []
        async with in_transaction("default") as conn:
            started = time.perf_counter()  # the writer is locked out from here on
            _, rows = await conn.execute_query(
                f"SELECT id, source_id, LENGTH(message) FROM {table} {where}"
                f"ORDER BY timestamp_ns, id LIMIT {int(self.batch_rows)}",
                values,
            )
            if not rows:
                return 0
            ids = [r[0] for r in rows]
            await conn.execute_query(
                f"DELETE FROM {table} WHERE id IN ({Marks(self.storage.dialect).many(len(ids))})",
                ids,
            )
            per_source: dict[int, list[int]] = {}
            for _, sid, size in rows:
                tally = per_source.setdefault(int(sid), [0, 0])
                tally[0] += 1
                tally[1] += int(size or 0)
            m = Marks(self.storage.dialect)
            update = (
                f"UPDATE {cursors} SET lines = lines - {m()}, bytes = bytes - {m()} "
                f"WHERE id = {m()}"
            )
            await conn.execute_many(update, [[n, b, sid] for sid, (n, b) in per_source.items()])
            held = time.perf_counter() - started
        report.max_lock_seconds = max(report.max_lock_seconds, held)
        self.max_lock_seconds = max(self.max_lock_seconds, held)
        return len(ids)

    async def _record(self, db: BaseDBAsyncClient, reason: str, rows: int) -> None:
        _, oldest = await db.execute_query(
            f"SELECT MIN(timestamp_ns) FROM {LogLine._meta.db_table}"
        )
        await db.execute_query(  # plain SQL: see agent/storage/gaps.py
            f"INSERT INTO {Prune._meta.db_table} (host, reason, rows, oldest_kept_ns, at_ns) "
            f"VALUES ({Marks(self.storage.dialect).many(5)})",
            [self.storage.host, reason, rows, oldest[0][0], time.time_ns()],
        )

    @staticmethod
    async def _used_bytes(db: BaseDBAsyncClient) -> int:
        _, pages = await db.execute_query("PRAGMA page_count")
        _, free = await db.execute_query("PRAGMA freelist_count")
        _, size = await db.execute_query("PRAGMA page_size")
        used = int(pages[0][0]) - int(free[0][0])
        return used * int(size[0][0])

    async def _vacuum(self, db: BaseDBAsyncClient) -> None:
        """Give freed pages back to the file system, a few MiB per step."""
        while True:
            _, free = await db.execute_query("PRAGMA freelist_count")
            if int(free[0][0]) == 0:
                return
            started = time.perf_counter()
            await db.execute_script(f"PRAGMA incremental_vacuum({VACUUM_PAGES})")
            self.max_lock_seconds = max(self.max_lock_seconds, time.perf_counter() - started)
            _, after = await db.execute_query("PRAGMA freelist_count")
            if int(after[0][0]) >= int(free[0][0]):
                return  # auto_vacuum is off for this file (created before it was set)
