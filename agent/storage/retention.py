"""Retention: delete the oldest rows past an age or a size, a small batch per transaction.

On PostgreSQL the lines are partitioned by day (agent/storage/partitions.py): a day wholly
past the age is detached and dropped instead, and only the day the cut-off falls in is
trimmed row by row.

Each batch is one short transaction, so the writer is never locked out for long (the longest
is measured and kept in `max_lock_seconds`). Deleted rows come off their containers' totals,
each pass is recorded in `prunes`, and SQLite's freed pages are returned to the file system
(incremental vacuum), so the file does not grow without bound.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio
from tortoise.backends.base.client import BaseDBAsyncClient

from agent.storage import search_index
from agent.storage.counts import counted_rows, take_off
from agent.storage.db import in_child_task, transaction
from agent.storage.forward_gaps import forget_unconfigured, unsent_deleted
from agent.storage.models import (
    AgentState,
    AlertOutbox,
    ContainerCursor,
    ContainerEvent,
    Gap,
    LogLine,
    Prune,
)
from agent.storage.retention_days import count_off, drop_days
from agent.storage.sends import Sends
from agent.storage.sql import Marks
from agent.storage.sqlite_space import used_bytes, vacuum
from agent.storage.store import LogStorage
from agent.storage.tallies import REMOVED
from agent.timestamps import NS_RANGE

log = logging.getLogger("logagent.retention")

BATCH_ROWS = 1000  # a delete of 500 rows took ~25 ms here: a batch stays well under 100 ms
# A removed container none of whose lines is left is forgotten (its row in container_cursors)
# this long after its last change, or after max_age when that is longer: a host that runs
# thousands of short-lived containers a day would otherwise keep a row for each for ever.
# Gaps and retention passes are kept as long: what was lost is told for a day at least,
# however short max_age.
RECORDS_KEPT_S = 86_400.0


@dataclass
class PruneReport:
    by_age: int = 0
    by_own_age: int = 0  # of containers with their own retention (label logagent.retention)
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
        forwarded: Mapping[str, Sends] | None = None,
    ) -> None:
        self.storage = storage
        self.forwarded = dict(forwarded or {})  # this host's destinations: their gaps count
        self.max_age_s = max_age_s
        self.max_bytes = max_bytes
        self.batch_rows = batch_rows
        self.max_lock_seconds = 0.0
        self.pruned_rows = 0
        self.indexed = False  # SQLite's search index is kept (search_index.py)

    async def run_forever(self, interval_s: float) -> None:
        while True:
            try:
                await in_child_task(self.run_once)  # see there: why
            except Exception as exc:  # a failed pass is reported and tried at the next one
                log.error("retention pass failed: %s", exc)
            await anyio.sleep(interval_s)

    async def run_once(self, now_ns: int | None = None) -> PruneReport:
        report = PruneReport()
        db = self.storage.db
        self.indexed = await search_index.exists(db)
        sqlite = self.storage.dialect == "sqlite"
        now = now_ns or time.time_ns()
        records = _before(now, max(self.max_age_s, RECORDS_KEPT_S))  # gaps, passes, rows
        if self.max_age_s > 0:
            cutoff = _before(now, self.max_age_s)
            if not sqlite:  # whole days, where nothing in them is to be kept
                await self._say_own_retention(db)
                report.by_age += await drop_days(
                    self.storage,
                    cutoff,
                    now,
                    lambda started: self._held(report, started),
                    self.forwarded,
                )
            while deleted := await self._delete_batch(db, report, before_ns=cutoff, own=False):
                report.by_age += deleted
            if trimmed := await self._trim_beside(report, cutoff, records):
                log.info(
                    "retention (max_age) deleted %d container events, sent alerts, gaps and "
                    "passes recorded",
                    trimmed,
                )
        for sid, cut in await self._own_cuts(db, now):
            while deleted := await self._delete_batch(db, report, before_ns=cut, only=sid):
                report.by_own_age += deleted
        if sqlite and self.max_bytes > 0:
            while await used_bytes(db) > self.max_bytes:
                deleted = await self._delete_batch(db, report, before_ns=None)
                if not deleted:
                    break
                report.by_size += deleted
        for reason, rows in (
            ("max_age", report.by_age),
            ("container max_age", report.by_own_age),
            ("max_bytes", report.by_size),
        ):
            if rows:
                await self._record(db, reason, rows)
                log.info("retention (%s) deleted %d rows", reason, rows)
        try:
            gone = await forget_unconfigured(db, self.storage.host, self.forwarded, now_ns=now)
        except Exception as exc:  # the rest of the pass is done all the same
            log.warning("could not drop the positions of removed forward destinations: %s", exc)
            gone = []
        if gone:
            names = ", ".join(gone)
            log.warning("forward destinations no longer in the config: %s; their positions "
                        "are dropped (configured again, each starts anew)", names)  # fmt: skip
        if forgotten := await self._forget_removed(report, records):
            log.info("retention forgot %d removed containers with no line or gap left", forgotten)
        if sqlite and (report.by_age or report.by_own_age or report.by_size):
            held = await vacuum(db)
            self.max_lock_seconds = max(self.max_lock_seconds, held)
        self.pruned_rows += report.by_age + report.by_own_age + report.by_size
        return report

    async def _own_cuts(self, db: BaseDBAsyncClient, now: int) -> list[tuple[int, int]]:
        """This host's containers with a retention of their own (a label, a hint rule) that
        hold a line older than it now: (source id, cut-off). One query per distinct retention
        (a few), each container checked by its index in SQL: a host that has seen thousands of
        such containers does not pay a transaction a container every pass. Another host's
        are that host's to keep: its retention runs with its own config."""
        cursors, m = ContainerCursor._meta.db_table, Marks(self.storage.dialect)
        _, ages = await db.execute_query(
            f"SELECT DISTINCT max_age_s FROM {cursors} "
            f"WHERE host = {m()} AND max_age_s > 0 AND lines > 0",
            [self.storage.host],
        )
        out: list[tuple[int, int]] = []
        for (age,) in ages:
            cut, m = _before(now, int(age)), Marks(self.storage.dialect)
            _, rows = await db.execute_query(
                f"SELECT c.id FROM {cursors} c WHERE c.host = {m()} AND c.max_age_s = {m()} "
                f"AND c.lines > 0 AND EXISTS (SELECT 1 FROM {LogLine._meta.db_table} l "
                f"WHERE l.source_id = c.id AND l.timestamp_ns < {m()})",
                [self.storage.host, int(age), cut],
            )
            out += [(int(r[0]), cut) for r in rows]
        return out

    async def _delete_batch(
        self,
        db: BaseDBAsyncClient,
        report: PruneReport,
        *,
        before_ns: int | None,
        only: int | None = None,
        own: bool = True,
    ) -> int:
        """Delete up to `batch_rows` oldest rows (older than `before_ns`, if given), of one
        container (`only`), or of all but (`own` False) those with a retention of their
        own; this host's rows alone."""
        table = LogLine._meta.db_table
        marks = Marks(self.storage.dialect)
        clauses: list[str] = [f"host = {marks()}"]
        values: list[int | str] = [self.storage.host]
        if before_ns is not None:
            clauses.append(f"timestamp_ns < {marks()}")
            values.append(before_ns)
        if only is not None:
            clauses.append(f"source_id = {marks()}")
            values.append(only)
        if not own:  # a subquery: as many containers as it holds, never too many marks
            clauses.append(
                f"source_id NOT IN (SELECT id FROM {ContainerCursor._meta.db_table} "
                f"WHERE host = {marks()} AND max_age_s IS NOT NULL)"
            )
            values.append(self.storage.host)
        where = f"WHERE {' AND '.join(clauses)} " if clauses else ""
        async with transaction() as conn:
            started = time.perf_counter()  # the writer is locked out from here on
            _, rows = await conn.execute_query(
                f"SELECT id, source_id, LENGTH(message), timestamp_ns, stream, level "
                f"FROM {table} {where}ORDER BY timestamp_ns, id LIMIT {int(self.batch_rows)}",
                values,
            )
            if not rows:
                return 0
            ids = [r[0] for r in rows]
            await unsent_deleted(
                conn,
                table,
                lambda m: (f"l.id IN ({m.many(len(ids))})", ids),
                host=self.storage.host,
                sends=self.forwarded,
            )
            if self.indexed:  # SQLite's search index lets them go first (its position read
                upto = await search_index.indexed_upto(conn)  # in this transaction)
                await search_index.forget(conn, ids, upto or 0)
            await conn.execute_query(
                f"DELETE FROM {table} WHERE id IN ({Marks(self.storage.dialect).many(len(ids))})",
                ids,
            )
            per_source: dict[int, tuple[int, int]] = {}
            for _, sid, size, *_rest in rows:
                n, b = per_source.get(int(sid), (0, 0))
                per_source[int(sid)] = (n + 1, b + int(size or 0))
            await count_off(conn, per_source)
            await take_off(conn, counted_rows([(r[1], r[3], r[4], r[5]) for r in rows]))
            self._held(report, started)
        return len(ids)

    async def _trim_beside(self, report: PruneReport, cutoff: int, records: int) -> int:
        """This host's containers' lives and the alerts it sent, past max_age (`cutoff`), its
        gaps and its retention passes past `records` (RECORDS_KEPT_S at least). An alert
        still pending is kept, however old: it is not delivered; a gap, while the time it
        is about is not past `records` either, or while its container keeps lines by a
        retention of its own (once they are gone, its gaps go too)."""
        own = (  # a container keeping lines by a retention of its own keeps its gaps with them
            f"t.container_id NOT IN (SELECT container_id FROM {ContainerCursor._meta.db_table} "
            "WHERE host = {} AND max_age_s IS NOT NULL AND lines > 0)"
        )
        done = 0
        for table, clause, values in (
            (ContainerEvent._meta.db_table, "t.time_ns < {}", [cutoff]),
            (AlertOutbox._meta.db_table, "t.status = 'sent' AND t.created_ns < {}", [cutoff]),
            (Gap._meta.db_table, "t.created_ns < {} AND COALESCE(t.to_ns, t.from_ns, "
                                 "t.created_ns) < {} AND " + own,
             [records, records, self.storage.host]),
            (Prune._meta.db_table, "t.at_ns < {}", [records]),
        ):  # fmt: skip
            done += await self._delete_where(report, table, clause, values)
        return done

    async def _forget_removed(self, report: PruneReport, before_ns: int) -> int:
        """This host's removed containers with no line and no gap left, unchanged since
        `before_ns`: their rows in container_cursors go (their gaps go first: _trim_beside).
        A container is marked removed at Docker's `destroy`; its ids are never used again."""
        return await self._delete_where(
            report,
            ContainerCursor._meta.db_table,
            "t.state = {} AND t.lines <= 0 AND t.updated_ns < {} AND NOT EXISTS (SELECT 1 FROM "
            f"{Gap._meta.db_table} g WHERE g.host = t.host AND g.container_id = t.container_id)",
            [REMOVED, before_ns],
        )

    async def _delete_where(
        self, report: PruneReport, table: str, clause: str, values: list[Any]
    ) -> int:
        """This host's rows of `table` (as `t`) that `clause` names (a `{}` a mark, its value
        in `values`, in order), deleted a batch a transaction; how many."""
        dialect, host, done = self.storage.dialect, self.storage.host, 0
        while True:
            async with transaction() as conn:
                started = time.perf_counter()
                m = Marks(dialect)
                on_host = m()
                where = clause.format(*(m() for _ in values))  # numbered in order
                _, rows = await conn.execute_query(
                    f"SELECT t.id FROM {table} t WHERE t.host = {on_host} AND {where} "
                    f"ORDER BY t.id LIMIT {int(self.batch_rows)}",
                    [host, *values],
                )
                if rows:
                    ids = [r[0] for r in rows]
                    await conn.execute_query(
                        f"DELETE FROM {table} WHERE id IN ({Marks(dialect).many(len(ids))})",
                        ids,
                    )
                self._held(report, started)
            done += len(rows)
            if len(rows) < self.batch_rows:
                return done

    async def _say_own_retention(self, db: BaseDBAsyncClient) -> None:
        m = Marks(self.storage.dialect)
        await db.execute_query(
            f"INSERT INTO {AgentState._meta.db_table} (host, last_seen_ns, retention_s) "
            f"VALUES ({m.many(3)}) ON CONFLICT (host) DO UPDATE SET "
            "retention_s = excluded.retention_s",
            [self.storage.host, time.time_ns(), math.ceil(self.max_age_s)],
        )

    def _held(self, report: PruneReport, started: float) -> None:
        held = time.perf_counter() - started
        report.max_lock_seconds = max(report.max_lock_seconds, held)
        self.max_lock_seconds = max(self.max_lock_seconds, held)

    async def _record(self, db: BaseDBAsyncClient, reason: str, rows: int) -> None:
        _, oldest = await db.execute_query(
            f"SELECT MIN(timestamp_ns) FROM {LogLine._meta.db_table}"
        )
        await db.execute_query(  # plain SQL: see agent/storage/gaps.py
            f"INSERT INTO {Prune._meta.db_table} (host, reason, rows, oldest_kept_ns, at_ns) "
            f"VALUES ({Marks(self.storage.dialect).many(5)})",
            [self.storage.host, reason, rows, oldest[0][0], time.time_ns()],
        )


def _before(now_ns: int, seconds: float) -> int:
    """The cut-off `seconds` before now, kept within the BIGINT it is compared with."""
    return max(now_ns - int(seconds * 1_000_000_000), NS_RANGE.start)
