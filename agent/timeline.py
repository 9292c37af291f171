"""Pure: stored lines and containers' lives in one time order (`logs --events`).

Lines come page by page in Docker's order (timestamp, then arrival); a container's events
(storage/life.py) are few, and are put between the lines at their time: an event goes
before the first line stamped after it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from agent.storage.life import LifeView
from agent.storage.reader import StoredRow

Piece = list[StoredRow] | LifeView


class Timeline:
    def __init__(self, events: Iterable[LifeView] = ()) -> None:
        self._pending: deque[LifeView] = deque()
        self._seen: set[int] = set()
        self.last_id = 0  # the newest event taken, for a follower's next query
        self.add(events)

    def add(self, events: Iterable[LifeView]) -> None:
        """More events (a follower's): each once, kept in time order."""
        fresh = [e for e in events if e.id not in self._seen]
        if not fresh:
            return
        self._seen.update(e.id for e in fresh)
        self.last_id = max(self.last_id, *(e.id for e in fresh))
        merged = sorted([*self._pending, *fresh], key=lambda e: (e.time_ns, e.id))
        self._pending = deque(merged)

    def drop_before(self, time_ns: int) -> None:
        """Events older than what is shown (`--tail`: only the last lines' span)."""
        while self._pending and self._pending[0].time_ns < time_ns:
            self._pending.popleft()

    def split(self, rows: list[StoredRow]) -> list[Piece]:
        """The rows, with each pending event due before one of them put in its place."""
        pending = self._pending
        if not pending or not rows or pending[0].time_ns > rows[-1].timestamp_ns:
            return [rows] if rows else []
        pieces: list[Piece] = []
        start = 0
        for i, row in enumerate(rows):
            if pending and pending[0].time_ns <= row.timestamp_ns:
                if i > start:
                    pieces.append(rows[start:i])
                start = i
                while pending and pending[0].time_ns <= row.timestamp_ns:
                    pieces.append(pending.popleft())
        pieces.append(rows[start:])
        return pieces

    def rest(self) -> list[LifeView]:
        """The events after every line shown so far."""
        rest = list(self._pending)
        self._pending.clear()
        return rest
