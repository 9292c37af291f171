"""A read position in a container's logs that Docker's `since` can resume from (pure).

Docker's `since` has nanosecond resolution and is inclusive, and many lines can share one
timestamp, so a position is, per stream, the last timestamp seen and how many lines carried
it. Per stream, because stdout and stderr are copied by separate goroutines and their
timestamps interleave out of order in the log; within one stream they only grow.
"""

from __future__ import annotations

from itertools import islice
from operator import lt

from agent.batch import FLAG_CONTINUED, STREAMS, LineBatch
from agent.timestamps import since_param

# The two streams' copiers stamp lines independently, so a line can follow a later-stamped
# line of the other stream in the log; a stream with no position yet may hide such a line
# just before the other stream's position. Re-reading a little earlier catches it.
RESUME_MARGIN_NS = 1_000_000_000


def resume_since(ns: int) -> str:
    """The `since` value that re-reads every line stamped from `ns` on, less the margin."""
    return since_param(max(0, ns - RESUME_MARGIN_NS))


class Cursor:
    """Per stream: [last timestamp ns, lines seen at exactly that timestamp]."""

    __slots__ = ("positions",)

    def __init__(self, positions: dict[str, list[int]] | None = None) -> None:
        self.positions: dict[str, list[int]] = positions or {}

    def advance(self, batch: LineBatch) -> None:
        """Move past the batch's lines and stamp the batch with the position after them."""
        batch.position = self.advance_over(batch.streams, batch.timestamps_ns)

    def advance_over(self, streams: list[str], stamps: list[int]) -> dict[str, tuple[int, int]]:
        """Move past these lines (each stream's in order); the position after them.

        Per stream only the run of equal timestamps at its end matters, so the lines are
        walked backwards until each stream in the batch has found one older line.
        """
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
        return {s: (pos[0], pos[1]) for s, pos in positions.items()}

    @property
    def empty(self) -> bool:
        return not self.positions

    @property
    def last_ns(self) -> int | None:
        """Docker's timestamp of the newest line seen, on any stream."""
        return max((pos[0] for pos in self.positions.values()), default=None)

    @property
    def first_ns(self) -> int | None:
        """Docker's timestamp of the oldest stream position: a re-read starts before it."""
        return min((pos[0] for pos in self.positions.values()), default=None)

    def since(self) -> str | None:
        """The `since` value that re-reads everything not yet seen (and a little more)."""
        first = self.first_ns
        return None if first is None else resume_since(first)

    def skipper(self) -> Skipper:
        return Skipper({s: (pos[0], pos[1]) for s, pos in self.positions.items()})

    def copy(self) -> Cursor:
        return Cursor({s: list(pos) for s, pos in self.positions.items()})


_DROP, _PAST = 0, 1
MAX_HELD = 100_000  # lines held back while it is not yet known whether they were re-sent
# ... and their bytes: a TTY line printing a future stamp moves the position ahead, and every
# later line would be held (+50-100 MiB, outside max_queue_bytes). Past either bound the held
# lines go on as late ones, which the collector checks against the store: none lost, none
# stored twice, and the position comes back to the lines' own time.
MAX_HELD_BYTES = 4 * 1024 * 1024


class _Episode:
    """One stream passing its position again: lines before it, and the `count` lines at it,
    are seen again (`_DROP`); the first line after is `_PAST`. `matched`: the lines at the
    position all came by on the way.

    The skipper (a re-read from `since`) and the re-send guard (a live stream going back)
    both decide with this. A re-read that passes without `matched` means Docker no longer had
    those lines (rotated away). On a live stream, a re-send replays the log forward through
    the position (`matched`); a host clock stepped back gives new lines older timestamps that
    never meet the position's own lines exactly (held lines are new, not re-sent).
    """

    __slots__ = ("held", "held_bytes", "left", "matched", "spilled", "ts")

    def __init__(self, ts: int, count: int) -> None:
        self.ts, self.left, self.matched = ts, count, count == 0
        self.held: list[int] = []  # indexes into `ResendGuard._rows`
        self.held_bytes = 0
        self.spilled = False  # past the bounds: its lines go on as late ones, held no more

    def see(self, ts: int) -> int:
        if ts < self.ts:
            return _DROP
        if ts == self.ts and self.left > 0:
            self.left -= 1
            self.matched = self.left == 0
            return _DROP
        return _PAST


class Skipper:
    """Drops, from a re-read starting at `Cursor.since()`, the lines already seen.

    The re-read must hold the lines at each stream's position: when a stream goes past its
    position before they all appeared, Docker no longer has them (its json-file rotated
    past the cursor) and `lost` says which span of which stream is gone.
    """

    __slots__ = ("_left", "lost")

    def __init__(self, left: dict[str, tuple[int, int]]) -> None:
        self._left = {stream: _Episode(ts, count) for stream, (ts, count) in left.items()}
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
        episode = self._left.get(stream)
        if episode is None:
            return True
        if episode.see(ts_ns) == _DROP:
            return False
        if not episode.matched:
            self.lost.append((stream, episode.ts, ts_ns))
        del self._left[stream]  # past the position: the rest of this stream is new
        return True


class ResendGuard:
    """Keeps a live stream's lines moving forward, per stream (Docker's timestamps only grow).

    A line older than its stream's position opens an episode (see `_Episode`): re-sent lines
    are dropped and counted in `resent`; lines that were new after all (a clock stepped back)
    are let through, late, and counted in `stepped_back`.
    """

    def __init__(self, cursor: Cursor) -> None:
        self._cursor = cursor
        self._episodes: dict[str, _Episode] = {}
        self._rows: list[tuple[str, int, str, str, int, int]] = []  # held rows
        self._held_bytes = 0  # their sizes, against MAX_HELD_BYTES
        self.resent = 0
        self.stepped_back = 0
        # Of the last `filter`'s output, the lines let through as a clock stepped back: the
        # collector asks the store about them (a re-send cut short looks the same).
        self.late: list[int] = []
        # Per stream, the last line let through (timestamp, text): Docker re-sending exactly
        # that line sends it with the position's own timestamp, which alone says nothing.
        self._tail: dict[str, tuple[int, str]] = {}

    def filter(self, batch: LineBatch) -> LineBatch:
        positions = self._cursor.positions
        if self.late:
            self.late = []
        if not self._episodes and _forward(batch, positions):
            self._remember_tail(batch)
            return batch  # the fast path: nearly every batch
        out = LineBatch(batch.source)
        tails = dict(self._tail)
        last = {s: [p[0], p[1]] for s, p in positions.items()}  # as lines pass, per stream
        for row in batch.rows():
            stream, ts = row[0], row[1]
            episode = self._episodes.get(stream)
            pos = last.get(stream)
            if episode is None:
                if pos is None or ts >= pos[0]:
                    self._admit(out, last, tails, row)
                    continue
                episode = self._episodes[stream] = _Episode(pos[0], pos[1])
            if episode.see(ts) == _DROP:
                if episode.spilled:
                    self._late(out, last, row)
                elif len(episode.held) < MAX_HELD and self._held_bytes < MAX_HELD_BYTES:
                    episode.held.append(len(self._rows))
                    self._rows.append(row)
                    episode.held_bytes += row[5]
                    self._held_bytes += row[5]
                else:  # past the bounds: what it holds and what follows go on late
                    episode.spilled = True
                    self._release(episode, out, last)
                    self._late(out, last, row)
                continue
            del self._episodes[stream]
            self._verdict(episode, out, last)
            self._admit(out, last, tails, row)  # (a replay may send the last line twice)
        if not self._episodes:
            self._rows.clear()
            self._held_bytes = 0
        self._remember_tail(out)
        return out

    def _admit(
        self,
        out: LineBatch,
        last: dict[str, list[int]],
        tails: dict[str, tuple[int, str]],
        row: tuple[str, int, str, str, int, int],
    ) -> None:
        """A line at or after its stream's position: passed, unless it is the last line
        again (same stamp, same text, not a piece of a long line)."""
        stream, ts = row[0], row[1]
        pos = last.get(stream)
        if (
            pos is not None
            and ts == pos[0]
            and tails.get(stream) == (ts, row[3])
            and not row[4] & FLAG_CONTINUED
        ):
            self.resent += 1
            return
        _pass(out, last, row)
        tails[stream] = (ts, row[3])

    def _remember_tail(self, batch: LineBatch) -> None:
        streams, stamps, messages = batch.streams, batch.timestamps_ns, batch.messages
        if not stamps:
            return
        last = streams[-1]
        self._tail[last] = (stamps[-1], messages[-1])
        if streams.count(last) == len(streams):
            return
        seen = {last}
        for i in range(len(streams) - 2, -1, -1):
            if streams[i] not in seen:
                seen.add(streams[i])
                self._tail[streams[i]] = (stamps[i], messages[i])

    def _verdict(self, episode: _Episode, out: LineBatch, last: dict[str, list[int]]) -> None:
        if episode.matched:
            self.resent += len(episode.held)
            self._held_bytes -= episode.held_bytes
            return
        self._release(episode, out, last)

    def _release(self, episode: _Episode, out: LineBatch, last: dict[str, list[int]]) -> None:
        """Its held lines go on as late ones: the collector checks them against the store."""
        for i in episode.held:
            self._late(out, last, self._rows[i])
        episode.held = []
        self._held_bytes -= episode.held_bytes
        episode.held_bytes = 0

    def _late(
        self, out: LineBatch, last: dict[str, list[int]], row: tuple[str, int, str, str, int, int]
    ) -> None:
        self.stepped_back += 1  # until the store says it had it (were_stored)
        self.late.append(len(out))
        _pass(out, last, row)

    def were_stored(self, count: int) -> None:
        """`count` of the late lines were in the store already: a re-send after all."""
        self.stepped_back -= count
        self.resent += count

    def finish(self) -> int:
        """End of stream: lines still held are taken as re-sent; how many."""
        held = sum(len(e.held) for e in self._episodes.values())
        self.resent += held
        self._episodes.clear()
        self._rows.clear()
        self._held_bytes = 0
        return held


def _pass(
    out: LineBatch, last: dict[str, list[int]], row: tuple[str, int, str, str, int, int]
) -> None:
    out.append(*row)
    pos = last.get(row[0])
    if pos is None or pos[0] != row[1]:
        last[row[0]] = [row[1], 1]
    else:
        pos[1] += 1


def _rising(stamps: list[int]) -> bool:
    """Each timestamp after the one before (equal ones take the slow path too)."""
    return all(map(lt, stamps, islice(stamps, 1, None)))


def _forward(batch: LineBatch, positions: dict[str, list[int]]) -> bool:
    """Every stream's lines in order, all after its position (C-speed checks; a line at
    the position's own timestamp takes the slow path: it may be the last line again)."""
    streams, stamps = batch.streams, batch.timestamps_ns
    if not stamps:
        return True
    first = streams[0]
    if streams.count(first) == len(streams):  # one stream, the usual case
        pos = positions.get(first)
        return (pos is None or stamps[0] > pos[0]) and _rising(stamps)
    for stream in STREAMS:
        mine = [t for s, t in zip(streams, stamps, strict=True) if s == stream]
        if not mine:
            continue
        pos = positions.get(stream)
        if (pos is not None and mine[0] <= pos[0]) or not _rising(mine):
            return False
    return True
