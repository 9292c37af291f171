"""What every collector offers: a source, start/stop, and events for lines and errors."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol

from agent.entry import LogEntry

# "log" handlers may be async (storage's write waits when its queue is full: backpressure);
# "error" and "end" handlers are plain functions, so they run even in a cancelled scope.
LogHandler = Callable[[LogEntry], Awaitable[None] | None]
# "lines" handlers take every decoded chunk at once: the fast path (storage.write_many).
LinesHandler = Callable[[list[LogEntry]], Awaitable[None]]
ErrorHandler = Callable[[Any, BaseException], None]
EndHandler = Callable[[Any], None]
GapHandler = Callable[[Any, str, int, int], Awaitable[None]]
EventName = Literal["log", "lines", "error", "end", "gap"]

log = logging.getLogger("logagent.collector")


class LogCollector(Protocol):
    source: str

    @property
    def key(self) -> str: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def on(self, event: EventName, handler: Any) -> None: ...


class Emitter:
    """The three events a collector raises; handlers are awaited in order of registration."""

    def __init__(self) -> None:
        self._log: list[LogHandler] = []
        self._lines: list[LinesHandler] = []
        self._error: list[ErrorHandler] = []
        self._end: list[EndHandler] = []
        self._gap: list[GapHandler] = []

    def on(self, event: EventName, handler: Any) -> None:
        if event == "log":
            self._log.append(handler)
        elif event == "lines":
            self._lines.append(handler)
        elif event == "error":
            self._error.append(handler)
        elif event == "end":
            self._end.append(handler)
        elif event == "gap":
            self._gap.append(handler)
        else:
            raise ValueError(
                f"unknown collector event {event!r}: use log, lines, error, end or gap"
            )
