"""Pure: how long a log stream may rest after a read, so quiet streams wake us less often.

dockerd writes every log line to the socket on its own. A stream with a line every 10 ms
therefore wakes the agent 100 times a second, and the wake-up (epoll, recv, HTTP chunk,
task switch, a batch of one for the writer) costs far more than the line. Resting the
stream a few milliseconds after a small read lets its next lines arrive together.

A busy stream must never rest: the socket buffer holds only a few hundred of Docker's small
writes, and dockerd stops sending when it is full. So the read that follows a rest tells
the rate: if it brought `busy_bytes` or more, the stream rests no more for `backoff`
seconds (doubling while it stays busy, up to `max_backoff`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_REST = 0.03  # ~3 lines per read at 100 lines/s; p99 delay 41 ms there (bench/README.md)


@dataclass
class ReadPacer:
    """One per stream. `after_read` returns the seconds to rest before the next read."""

    rest: float = DEFAULT_REST  # 0 turns pacing off
    small_bytes: int = 2048  # a read under this is "small": a few lines at most
    busy_bytes: int = 16384  # gathered during one rest: ~110 of Docker's 100-byte lines
    backoff: float = 1.0
    max_backoff: float = 8.0
    rests: int = 0  # figures, for metrics and benchmarks
    busy_spells: int = 0
    _rested: bool = field(default=False, repr=False)
    _busy_until: float = field(default=0.0, repr=False)
    _next_backoff: float = field(default=0.0, repr=False)

    def after_read(self, size: int, now: float) -> float:
        """`size`: bytes of the read just handled; `now`: a monotonic clock, in seconds."""
        if self.rest <= 0:
            return 0.0
        if self._rested:
            self._rested = False
            if size >= self.busy_bytes:
                spell = self._next_backoff or self.backoff
                self._busy_until = now + spell
                self._next_backoff = min(spell * 2, self.max_backoff)
                self.busy_spells += 1
                return 0.0
            self._next_backoff = 0.0
        if now < self._busy_until or size >= self.small_bytes:
            return 0.0
        self._rested = True
        self.rests += 1
        return self.rest
