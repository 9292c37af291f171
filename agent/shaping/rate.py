"""Pure: a container's line filters and its rate limit.

The rate limit counts rows per window of Docker's timestamps (a second for `N/s`), not of
the agent's clock: a re-read after a restart decides the same, and a backlog read at once is
judged by when its lines were written. Dropped rows are never silent: each span of drops is
one gap, and the span as it stands is committed with the batch that dropped its last rows
(`Dropped`), so a `kill -9` loses no count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agent.batch import Dropped

SPAN_NS = 60 * 1_000_000_000  # a runaway container gets one gap a minute, not one a second


@dataclass(frozen=True)
class Rate:
    lines: int
    window_s: int  # 1, 60 or 3600

    def __str__(self) -> str:
        return f"{self.lines}/{ {1: 's', 60: 'm', 3600: 'h'}[self.window_s] }"


def parse_rate(text: str) -> Rate:
    """`100/s`, `6000/m`, `1e5/h` is not one: a whole number of lines per s, m or h."""
    count, sep, unit = text.strip().partition("/")
    windows = {"s": 1, "m": 60, "h": 3600}
    if not sep or unit not in windows or not count.isdigit() or int(count) < 1:
        raise ValueError(f"{text!r} is not a rate like 100/s, 6000/m or 100000/h")
    return Rate(int(count), windows[unit])


class RateLimit:
    """At most `rate.lines` rows per window; the rest dropped and counted in spans."""

    def __init__(self, rate: Rate) -> None:
        self.rate = rate
        self._window_ns = rate.window_s * 1_000_000_000
        self._window = -1
        self._used = 0
        self._span: list[int] | None = None  # [from ns, to ns, count, last window]
        self.dropped = 0

    def admit(self, ts_ns: int) -> bool:
        window = ts_ns // self._window_ns
        if window < self._window:
            # A late line of a window already passed (the other stream, a stepped clock):
            # not held against it.
            return True
        if window > self._window:
            self._window, self._used = window, 0
        if self._used < self.rate.lines:
            self._used += 1
            return True
        self.dropped += 1
        span = self._span
        if span is None or window > span[3] + 1 or ts_ns - span[0] >= SPAN_NS:
            self._span = [ts_ns, ts_ns, 1, window]  # a new span: a new gap row
        else:
            span[1], span[2], span[3] = max(span[1], ts_ns), span[2] + 1, window
        return False

    def span(self) -> Dropped | None:
        """The current span of drops, as it stands (None before the first drop)."""
        if self._span is None:
            return None
        first, last, count, _ = self._span
        return Dropped(first, last, count, f"rate limit: {count} lines dropped over {self.rate}")


def line_filter(
    include: Callable[[str], bool] | None, exclude: Callable[[str], bool] | None
) -> Callable[[str], bool] | None:
    """Whether a row is kept (None: every row is)."""
    if include is None and exclude is None:
        return None
    if exclude is None:
        assert include is not None
        return include
    if include is None:
        return lambda message: not exclude(message)
    return lambda message: include(message) and not exclude(message)
