"""A read position in a container's logs that Docker's `since` can resume from (pure).

Docker's `since` has nanosecond resolution and is inclusive, and many lines can share one
timestamp, so a position is, per stream, the last timestamp seen and how many lines carried
it. Per stream, because stdout and stderr are copied by separate goroutines and their
timestamps interleave out of order in the log; within one stream they only grow.
"""

from __future__ import annotations

from agent.batch import STREAMS, LineBatch
from agent.timestamps import since_param

# The two streams' copiers stamp lines independently, so a line can follow a later-stamped
# line of the other stream in the log; a stream with no position yet may hide such a line
# just before the other stream's position. Re-reading a little earlier catches it.
RESUME_MARGIN_NS = 1_000_000_000


class Cursor:
    """Per stream: [last timestamp ns, lines seen at exactly that timestamp]."""

    __slots__ = ("positions",)

    def __init__(self, positions: dict[str, list[int]] | None = None) -> None:
        self.positions: dict[str, list[int]] = positions or {}

    def advance(self, batch: LineBatch) -> None:
        """Move past the batch's lines and stamp the batch with the position after them.

        Per stream only the run of equal timestamps at its end matters, so the lines are
        walked backwards until each stream in the batch has found one older line.
        """
        streams, stamps = batch.streams, batch.timestamps_ns
        positions = self.positions
        present = [s for s in STREAMS if s in streams]
        runs: dict[str, list[int]] = {}  # stream -> [last ts, lines at it, still counting]
        open_runs = len(present)
        for i in range(len(stamps) - 1, -1, -1):
            stream = streams[i]
            run = runs.get(stream)
            if run is None:
                runs[stream] = [stamps[i], 1, 1]
            elif run[2]:
                if stamps[i] == run[0]:
                    run[1] += 1
                    continue
                run[2] = 0
                open_runs -= 1
                if not open_runs:
                    break
        for stream, (ts, n, whole) in runs.items():
            pos = positions.get(stream)
            if whole and pos is not None and pos[0] == ts:
                pos[1] += n  # the batch's lines of this stream all share the last timestamp
            else:
                positions[stream] = [ts, n]
        batch.position = {s: (pos[0], pos[1]) for s, pos in positions.items()}

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

    def new(self, batch: LineBatch) -> LineBatch:
        if not self._left:
            return batch
        keep = [
            i
            for i, (stream, ts) in enumerate(zip(batch.streams, batch.timestamps_ns, strict=True))
            if self._keep(stream, ts)
        ]
        return batch if len(keep) == len(batch) else batch.take(keep)

    def _keep(self, stream: str, ts_ns: int) -> bool:
        left = self._left.get(stream)
        if left is None:
            return True
        ts, count = left
        if ts_ns < ts:
            return False
        if ts_ns == ts and count > 0:
            self._left[stream] = (ts, count - 1)
            return False
        if count > 0:
            self.lost.append((stream, ts, ts_ns))
        del self._left[stream]  # past the position: the rest of this stream is new
        return True
