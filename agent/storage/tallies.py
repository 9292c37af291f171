"""Per container, what this process committed of it and what its hints kept out: the metric
series' one owner, the writer, which counts each batch as it is committed.

A removed container's series outlive it `grace` seconds, so that a scrape sees its last
counts; then they go: no series per short-lived container for ever.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from agent.batch import STREAMS, LineBatch

REMOVED = "removed"  # the state that starts a container's grace


@dataclass(slots=True)
class Tally:
    name: str  # its name as of its last committed batch (the series' label)
    committed: dict[str, list[int]] = field(default_factory=dict)  # per stream [lines, bytes]
    dropped: dict[str, int] = field(default_factory=dict)  # rows kept out, by why


class Tallies:
    def __init__(self, grace: float = 300.0) -> None:
        self.grace = grace
        self._of: dict[str, Tally] = {}
        self._going: deque[tuple[float, str]] = deque()  # oldest first: (when it goes, id)

    def of(self, container_id: str) -> Tally | None:
        return self._of.get(container_id)

    def count(self, batch: LineBatch) -> None:
        """A committed batch: its lines and bytes per stream, and the rows it kept out."""
        cid = batch.source.container_id
        if batch.state == REMOVED:
            now = time.monotonic()
            self._expire(now)  # here too: with nothing scraping, they would pile up for good
            self._going.append((now + self.grace, cid))
        if not batch.streams and not batch.kept_out:
            return  # a state, a position or a gap: nothing to count
        tally = self._of.get(cid)
        if tally is None:
            tally = self._of[cid] = Tally(batch.source.container_name)
        tally.name = batch.source.container_name
        streams = batch.streams
        for stream in STREAMS:
            n = streams.count(stream)
            if not n:
                continue
            if n == len(streams):
                size = batch.nbytes
            else:
                size = sum(z for s, z in zip(streams, batch.sizes, strict=True) if s == stream)
            lines = tally.committed.setdefault(stream, [0, 0])
            lines[0] += n
            lines[1] += size
        for why, n in (batch.kept_out or {}).items():
            tally.dropped[why] = tally.dropped.get(why, 0) + n

    def series(self) -> list[tuple[str, Tally]]:
        """(container id, tally) of every container with series: those in their grace too."""
        self._expire(time.monotonic())
        return list(self._of.items())

    def _expire(self, now: float) -> None:
        while self._going and self._going[0][0] <= now:
            _, cid = self._going.popleft()
            self._of.pop(cid, None)
