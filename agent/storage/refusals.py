"""Values the store refuses for good (a NUL byte in PostgreSQL's text, a stamp out of
BIGINT's range): one container's bad row costs only it, never a wedged writer.

A refused commit is tried again batch by batch; a batch refused alone is cleaned (NUL →
U+FFFD) or set aside as a gap of its container with the reason, its position committed, so
that after a restart Docker does not send it again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from agent.batch import FLAG_REPLACED, LineBatch, Lost
from agent.storage.commit import CommitSql
from agent.storage.db import refused
from agent.storage.writer_stats import WriterStats
from agent.timestamps import NS_RANGE

log = logging.getLogger("logagent.storage")


class RefusedRows:
    def __init__(self, sql: CommitSql, stats: WriterStats) -> None:
        self._sql = sql
        self._stats = stats
        # The held batches the commit in flight is about (a copy: the writer's list grows
        # while it waits to retry): when its answer is lost and it was applied, these, and
        # only these, are stored (a cleaned copy of one, or its gap, stands for it).
        self.attempt: list[LineBatch] = []

    async def commit_held(
        self, held: list[LineBatch], settle: Callable[[list[LineBatch]], None]
    ) -> None:
        """All held batches in one commit; if the store refuses some of their values for
        good, each batch on its own (`settle`d as it goes)."""
        self.attempt = list(held)
        if (why := await self._refused(held)) is not None:
            log.warning("the store refused a commit (%s): committing batch by batch", why)
            for b in list(held):
                self.attempt = [b]
                await self._commit_alone(b)
                settle([b])
        self.attempt = []

    async def _commit_alone(self, batch: LineBatch) -> None:
        if (why := await self._refused([batch])) is None:
            return
        if any("\x00" in m for m in batch.messages):
            clean = batch.take(list(range(len(batch))))
            clean.messages = [m.replace("\x00", "\ufffd") for m in batch.messages]
            clean.flags = [f | FLAG_REPLACED if "\x00" in m else f
                           for f, m in zip(batch.flags, batch.messages, strict=True)]  # fmt: skip
            clean.position, clean.dropped, clean.lost = batch.position, batch.dropped, batch.lost
            clean.state = batch.state
            if (why := await self._refused([clean])) is None:
                return
        low, high = NS_RANGE.start, NS_RANGE.stop - 1  # a gap's bounds are BIGINT columns
        stamps = [min(max(t, low), high) for t in batch.timestamps_ns]
        reason = f"{len(batch)} lines the store refuses: {why}"[:500]
        aside = LineBatch(
            batch.source, position=batch.position, dropped=batch.dropped, state=batch.state
        )
        aside.lost = Lost(reason, min(stamps, default=None), max(stamps, default=None))
        self._stats.refused_rows += len(batch)
        log.error("%s (%s): %s", batch.container_name, batch.container_id[:12], reason)
        # Its own gap goes in with it, in one commit: `attempt` stands for the batch, and an
        # answer lost between two commits lost a gap or stored one twice (a review's finding).
        own = [LineBatch(batch.source, lost=batch.lost)] if batch.lost is not None else []
        if await self._refused([aside, *own]) is not None:
            aside.position = {}  # the position itself is out of range: the gaps alone
            if (why := await self._refused([aside, *own])) is not None:
                # Never a wedge: this is said in the log and counted, and the rest goes on.
                log.error("%s: not even its gap can be stored: %s", batch.container_name, why)

    async def _refused(self, batches: list[LineBatch]) -> str | None:
        """Commit these; None, or why the store refuses their values for good (any other
        failure is raised: the store is away, the batches are kept and retried)."""
        try:
            await self._sql.commit(batches)
        except Exception as exc:
            if (why := refused(exc)) is None:
                raise
            return why
        return None
