"""A read position in a container's logs that Docker's `since` can resume from (pure).

Docker's `since` has nanosecond resolution and is inclusive, and many lines can share one
timestamp, so a position is, per stream, the last timestamp seen and how many lines carried
it. Per stream, because stdout and stderr are copied by separate goroutines and their
timestamps interleave out of order in the log; within one stream they only grow.
"""

from __future__ import annotations

from collections.abc import Iterable

from agent.docker.timestamps import since_param
from agent.entry import LogEntry

# The two streams' copiers stamp lines independently, so a line can follow a later-stamped
# line of the other stream in the log; a stream with no position yet may hide such a line
# just before the other stream's position. Re-reading a little earlier catches it.
RESUME_MARGIN_NS = 1_000_000_000


class Cursor:
    """Per stream: [last timestamp ns, lines seen at exactly that timestamp]."""

    __slots__ = ("positions",)

    def __init__(self, positions: dict[str, list[int]] | None = None) -> None:
        self.positions: dict[str, list[int]] = positions or {}

    def advance(self, entries: Iterable[LogEntry]) -> None:
        positions = self.positions
        for e in entries:
            pos = positions.get(e.stream)
            if pos is None or pos[0] != e.timestamp_ns:
                positions[e.stream] = [e.timestamp_ns, 1]
            else:
                pos[1] += 1

    @property
    def empty(self) -> bool:
        return not self.positions

    def since(self) -> str | None:
        """The `since` value that re-reads everything not yet seen (and a little more)."""
        if not self.positions:
            return None
        earliest = min(pos[0] for pos in self.positions.values())
        return since_param(max(0, earliest - RESUME_MARGIN_NS))

    def skipper(self) -> Skipper:
        return Skipper({s: (pos[0], pos[1]) for s, pos in self.positions.items()})

    def copy(self) -> Cursor:
        return Cursor({s: list(pos) for s, pos in self.positions.items()})


class Skipper:
    """Drops, from a re-read starting at `Cursor.since()`, the lines already seen.

    The re-read must hold the lines at each stream's position: when a stream goes past its
    position before they all appeared, Docker no longer has them (its json-file rotated
    past the cursor) and `lost` says which span of which stream is gone.
    """

    __slots__ = ("_left", "lost")

    def __init__(self, left: dict[str, tuple[int, int]]) -> None:
        self._left = left
        self.lost: list[tuple[str, int, int]] = []  # (stream, position ns, next line ns)

    def new(self, entries: list[LogEntry]) -> list[LogEntry]:
        if not self._left:
            return entries
        return [e for e in entries if self._keep(e)]

    def _keep(self, e: LogEntry) -> bool:
        left = self._left.get(e.stream)
        if left is None:
            return True
        ts, count = left
        if e.timestamp_ns < ts:
            return False
        if e.timestamp_ns == ts and count > 0:
            self._left[e.stream] = (ts, count - 1)
            return False
        if count > 0:
            self.lost.append((e.stream, ts, e.timestamp_ns))
        del self._left[e.stream]  # past the position: the rest of this stream is new
        return True
