"""Pure: how long a log stream may rest after a read, so quiet streams wake us less often.

dockerd writes every log line to the socket on its own. A stream with a line every 10 ms
therefore wakes the agent 100 times a second, and the wake-up (epoll, recv, HTTP chunk,
task switch, a batch of one for the writer) costs far more than the line. Resting the
stream a few milliseconds after a small read lets its next lines arrive together.

How long depends on the stream's rate. A rest only saves wake-ups when lines arrive during
it, and it delays every line that does: for a stream of a few lines a second a long rest
gathers nothing and only adds delay, so it rests `rest` (30 ms: a line written at 10 lines/s
is committed within 50 ms at p99). A chatty stream, whose rate over the last `window` is
`chatty_rate` (25 lines/s) or more, rests `chatty_rest` (150 ms) instead: at 100 lines/s it
reads 15 lines at a time, for 40 % of the agent's CPU per line with 30 ms, and its lines wait
up to 150 ms (no budget is set for them; peers batch for a second).

A busy stream must never rest: the socket buffer holds only a few hundred of Docker's small
writes, and dockerd stops sending when it is full. So the read that follows a rest tells
the rate: if it brought `busy_bytes` or more, the stream rests no more for `backoff`
seconds (doubling while it stays busy, up to `max_backoff`).

`ReadPacer` decides (pure); `RestClock` carries the rests out, one timer for many streams.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from agent.docker.inspect import ContainerInfo

# A stream rests only if its log keeps at least this much: dockerd writes at most ~30 MB/s
# to one container's json-file, so a log rotated at a few MiB can rotate away during a rest
# (up to 100 ms, 250 ms when chatty), and dockerd's blocked follower then skips the rotated
# file (measured: 4.5k of 300k lines stored at max-size=200k; every line once it no longer
# rests).
MIN_RESTING_LOG_BYTES = 8 * 1024 * 1024

DEFAULT_REST = 0.03  # 10 lines/s, gaps of 0-200 ms: p99 40 ms to commit (bench/README.md)
DEFAULT_CHATTY_REST = 0.15  # 100 busy streams: 0.55x -> 0.22x dockerd's CPU (bench/README.md)


_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def may_rest(info: ContainerInfo) -> bool:
    """Whether a container's stream may rest at all (from its inspect).

    Never a `--rm` container's (Docker ends its stream when it removes it, and lines still
    unsent then are gone), nor one whose log rotates at under MIN_RESTING_LOG_BYTES.
    """
    if info.auto_remove:
        return False
    size = info.log_max_size
    if not size:
        return True
    number = size.strip().lower().rstrip("b")
    unit = number[-1:] if number[-1:] in _UNITS else ""
    try:
        limit = float(number[: len(number) - len(unit)]) * _UNITS[unit]
    except ValueError:
        return False  # an odd size: do not bet lines on it
    return limit >= MIN_RESTING_LOG_BYTES


@dataclass
class ReadPacer:
    """One per stream. `after_read` returns the seconds to rest before the next read."""

    rest: float = DEFAULT_REST  # 0 turns pacing off
    chatty_rest: float = DEFAULT_CHATTY_REST  # if not longer than `rest`: `rest` for every rate
    # Lines a second (over `window`) from which a stream is chatty: a rate, not lines per
    # rest, so a longer chatty rest does not make slower streams (10 lines/s, whose delay has
    # a budget) chatty by chance.
    chatty_rate: float = 25.0
    window: float = 1.0  # seconds over which the rate is counted
    small_bytes: int = 2048  # a read under this is "small": a few lines at most
    busy_bytes: int = 16384  # gathered during one rest: ~110 of Docker's 100-byte lines
    backoff: float = 1.0
    max_backoff: float = 8.0
    rests: int = 0  # figures, for metrics and benchmarks
    chatty_rests: int = 0
    busy_spells: int = 0
    _rested: bool = field(default=False, repr=False)
    _busy_until: float = field(default=0.0, repr=False)
    _next_backoff: float = field(default=0.0, repr=False)
    _chatty: bool = field(default=False, repr=False)
    _window_start: float | None = field(default=None, repr=False)
    _window_lines: int = field(default=0, repr=False)

    def after_read(self, size: int, now: float, lines: int = 1) -> float:
        """`size`: bytes of the read just handled; `now`: a monotonic clock, in seconds;
        `lines`: the lines it completed."""
        if self.rest <= 0:
            return 0.0
        self._count(lines, now)
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
        if self._chatty and self.chatty_rest > self.rest:
            self.chatty_rests += 1
            return self.chatty_rest
        return self.rest

    def _count(self, lines: int, now: float) -> None:
        """The rate over the last window decides whether the stream is chatty."""
        if self._window_start is None:
            self._window_start = now
        self._window_lines += lines
        elapsed = now - self._window_start
        if elapsed >= self.window:
            rate = self._window_lines / elapsed
            self._chatty = rate >= self.chatty_rate
            self._window_start, self._window_lines = now, 0


class RestClock:
    """Resumes every rested stream together, on one timer per length of rest.

    A timer and a task wake-up per rest cost as much as the read they save; one timer for
    all streams, and all of them ready in one epoll wake-up, cost 28 % less CPU per line
    reading 100 streams at 100 lines/s (bench/README.md). A stream rests until the next
    tick of its length's timer: at most the rest it asked for, and in steady state about
    that long. Quiet and chatty streams rest for different lengths, so each length has its
    own timer: joining a shorter one would cut the long rests short.
    """

    def __init__(self) -> None:
        self._paused: dict[float, list[asyncio.Transport]] = {}
        self._ticks: dict[float, asyncio.TimerHandle] = {}
        self.ticks = 0

    def rest(self, transport: asyncio.Transport, seconds: float) -> None:
        """Stop reading `transport` until the next tick of the `seconds` timer.

        Only a transport that is reading (aiohttp has not paused it for its own flow
        control) is paused, so aiohttp's flow control stays as it is.
        """
        if transport.is_closing() or not transport.is_reading():
            return
        transport.pause_reading()
        self._paused.setdefault(seconds, []).append(transport)
        if seconds not in self._ticks:
            loop = asyncio.get_running_loop()
            self._ticks[seconds] = loop.call_later(seconds, self._resume_all, seconds)

    def _resume_all(self, seconds: float) -> None:
        del self._ticks[seconds]
        self.ticks += 1
        for transport in self._paused.pop(seconds, []):
            if not transport.is_closing():  # a stream stopped during its rest
                transport.resume_reading()
