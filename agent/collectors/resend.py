"""Lines a stepped-back clock let through that the store may hold already: asked of the
store, through a narrow protocol of its own (not the ingest sink's).

A re-send whose replay never reached the stored position (dockerd lost its file on the way)
looks like a host clock that stepped back: both send lines older than the last stored one.
The re-send guard (cursor.py) lets such lines through as `late`; this looks them up.
"""

from __future__ import annotations

from typing import Protocol

from agent.batch import LineBatch, Source
from agent.collectors.progress import Progress
from agent.cursor import ResendGuard


class StoredLines(Protocol):
    """The store's answer to "which of these lines do you hold?" (LogStorage has it)."""

    async def already_stored(self, source: Source, lines: list[tuple[str, int, str]]) -> set[int]:
        """Of these lines (stream, timestamp, text), the indexes the store holds already."""
        ...


class ResendLookup:
    """One per stream: drops the late lines the store holds, and counts them on the guard."""

    def __init__(self, store: StoredLines, guard: ResendGuard, progress: Progress) -> None:
        self._store = store
        self._guard = guard
        self._progress = progress

    async def drop_stored(self, batch: LineBatch, late: list[int]) -> LineBatch:
        """The batch without its late lines that are stored already (or repeat a line of
        this batch that is not late: then the first one is stored, not both). New lines of
        a stepped clock are not in the store, and stay."""
        rows = list(zip(batch.streams, batch.timestamps_ns, batch.messages, strict=True))
        is_late = set(late)
        in_batch = {row for i, row in enumerate(rows) if i not in is_late}  # not stored yet
        drop = {i for i in late if rows[i] in in_batch}
        asked = [i for i in late if i not in drop]
        found: set[int] = set()
        if asked:
            with self._progress.storing():
                found = await self._store.already_stored(batch.source, [rows[i] for i in asked])
        drop.update(asked[j] for j in found)
        if not drop:
            return batch
        self._guard.were_stored(len(drop))
        return batch.take([i for i in range(len(batch)) if i not in drop])
