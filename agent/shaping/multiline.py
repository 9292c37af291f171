"""Pure: a stream's lines joined into multiline events (a stack trace is one row).

Per stream one event is open at a time. A rule says of each line whether it continues the
open event; an event is closed when a line starts the next one, when it holds `max_lines`
lines or `max_bytes` bytes, when no line followed for `timeout` seconds (`expire`), or at the
end of the stream (`flush`). An event's row has its first line's timestamp and the lines
joined by "\n".

Exactly once: the caller is told, per closed event, which lines it consumed; the read
position moves past those only, so a line of an event still open is read again after a
restart, never stored half.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.batch import FLAG_CONTINUED, FLAG_REPLACED, FLAG_TRUNCATED, LineBatch, Source

DEFAULT_MAX_LINES = 500
DEFAULT_TIMEOUT = 1.0

# A rule: (line, state) -> (continues the open event, the state for the next line).
Rule = Callable[[str, int], tuple[bool, int]]


def start_rule(pattern: Callable[[str], bool]) -> Rule:
    """`logagent.multiline.start`: a line matching it starts an event, others continue."""

    def rule(line: str, state: int) -> tuple[bool, int]:
        return not pattern(line), 0

    return rule


_JAVA = re.compile(
    r"[\t ]+(?:at |\.\.\. \d+ (?:more|common frames omitted))"
    r"|[\t ]*(?:Caused by|Suppressed|Wrapped by): "
    r"|[\t ]*nested exception is"
)


def _java(line: str, state: int) -> tuple[bool, int]:
    """`at …` frames, `... N more`, `Caused by:` and `Suppressed:` continue the line that
    named the exception (as Fluent Bit's built-in java parser joins them)."""
    return _JAVA.match(line) is not None, 0


_RUBY = re.compile(r"[\t ]+(?:\d+: )?from \S")


def _ruby(line: str, state: int) -> tuple[bool, int]:
    """`\tfrom file.rb:3:in ...` lines continue the line before them."""
    return _RUBY.match(line) is not None, 0


_TB, _TB_END, _TB_CHAIN = 1, 2, 3
_CHAINED = (
    "During handling of the above exception",
    "The above exception was the direct cause",
)


def _python(line: str, state: int) -> tuple[bool, int]:
    """A traceback: `Traceback (most recent call last):`, indented frames, then the line
    naming the exception; chained tracebacks ("During handling of …") stay in the event."""
    if state == _TB:
        return True, _TB if line[:1] in (" ", "\t") else _TB_END
    if state in (_TB_END, _TB_CHAIN):
        if not line.strip() or line.startswith(_CHAINED):
            return True, _TB_CHAIN
        if state == _TB_CHAIN and line.startswith("Traceback (most recent call last)"):
            return True, _TB
    if line.startswith("Traceback (most recent call last)"):
        return False, _TB
    return False, 0


_PANIC = 1
_GO_START = re.compile(r"(?:panic: |fatal error: |goroutine \d+ \[)")
_GO_MORE = re.compile(r"goroutine \d+ \[|created by |\[signal |exit status \d|panic: |[\t ]")
_GO_CALL_PREFIX = re.compile(r"[\w./*()\[\]{}-]++")  # possessive: one pass


def _go_call(line: str) -> bool:
    r"""A dump's call line, `pkg.(*T).Method(0x1, ...)`: what `[\w./*()\[\]{}-]+\(.*\)\s*$`
    matches, told in one pass (that pattern backtracked on a line of brackets: 20 s of CPU
    on the event loop for 64 KB, as a container's own line can be). A "(" inside the run of
    name characters that starts the line, and a ")" last but for white space."""
    end = line.rstrip()
    if not end.endswith(")"):
        return False
    prefix = _GO_CALL_PREFIX.match(end)
    return prefix is not None and end.find("(", 1, min(prefix.end(), len(end) - 1)) >= 0


def _go(line: str, state: int) -> tuple[bool, int]:
    """A panic or fatal error with its goroutine dump (blank lines included)."""
    if state == _PANIC and (not line or _GO_MORE.match(line) or _go_call(line)):
        return True, _PANIC
    if _GO_START.match(line):
        return False, _PANIC
    return False, 0


PRESETS: dict[str, Rule] = {"java": _java, "python": _python, "go": _go, "ruby": _ruby}


@dataclass(slots=True)
class _Event:
    stream: str
    timestamp_ns: int
    timestamp: str
    flags: int
    parts: list[str] = field(default_factory=list)
    stamps: list[int] = field(default_factory=list)  # of its lines: the cursor moves past them
    size: int = 0
    last_flags: int = 0
    touched: float = 0.0


@dataclass(slots=True)
class Shaped:
    """Rows, and the lines they consumed (per stream, in order: the cursor moves past them).

    The joiner's answer (its rows are the events it closed) and the shaper's (agent/shaping/
    shaper.py: those rows filtered, limited and given a level)."""

    rows: LineBatch
    streams: list[str] = field(default_factory=list)
    stamps: list[int] = field(default_factory=list)


class Joiner:
    """One container's open events, one per stream."""

    def __init__(
        self,
        source: Source,
        rule: Rule,
        *,
        max_lines: int = DEFAULT_MAX_LINES,
        max_bytes: int = 1024 * 1024,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.source = source
        self.rule = rule
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self.timeout = timeout
        self._open: dict[str, _Event] = {}
        self._state: dict[str, int] = {}

    @property
    def holding(self) -> int:
        """Lines in open events."""
        return sum(len(e.stamps) for e in self._open.values())

    def first_stamps(self) -> dict[str, int]:
        """Per stream with an open event, its first line's timestamp."""
        return {stream: event.stamps[0] for stream, event in self._open.items()}

    def deadline(self) -> float | None:
        """When the oldest open event is due to be closed by the timeout."""
        if not self._open:
            return None
        return min(e.touched for e in self._open.values()) + self.timeout

    def feed(self, batch: LineBatch, now: float) -> Shaped:
        out = Shaped(LineBatch(self.source))
        self._expire(now, out)
        opened, state, rule = self._open, self._state, self.rule
        for stream, ts, text, message, flags, size in batch.rows():
            event = opened.get(stream)
            if flags & FLAG_CONTINUED and event is not None and event.last_flags & FLAG_TRUNCATED:
                joins, glue = True, ""  # the next piece of a long line: the same line
            else:
                joins, state[stream] = rule(message, state.get(stream, 0))
                glue = "\n"
            if event is not None and (
                not joins
                or len(event.stamps) >= self.max_lines
                or event.size + len(glue) + size > self.max_bytes
            ):
                self._close(event, out)
                event = None
            if event is None:
                event = opened[stream] = _Event(stream, ts, text, flags & FLAG_CONTINUED)
            elif glue:
                event.parts.append(glue)
                event.size += 1
            event.parts.append(message)
            event.stamps.append(ts)
            event.size += size
            event.flags |= flags & FLAG_REPLACED
            event.last_flags = flags
            event.touched = now
            if len(event.stamps) >= self.max_lines and not flags & FLAG_TRUNCATED:
                self._close(event, out)
        return out

    def forget(self) -> None:
        """Drop the open events, not stored: their lines are read again (a write cancelled
        before its lines were queued moves the read position back before them)."""
        self._open.clear()
        self._state.clear()

    def expire(self, now: float) -> Shaped:
        """Close the events no line has followed for `timeout` seconds."""
        out = Shaped(LineBatch(self.source))
        self._expire(now, out)
        return out

    def flush(self) -> Shaped:
        """The stream ended: every open event is whole."""
        out = Shaped(LineBatch(self.source))
        for event in list(self._open.values()):
            self._close(event, out)
        self._state.clear()
        return out

    def _expire(self, now: float, out: Shaped) -> None:
        for event in list(self._open.values()):
            if now - event.touched >= self.timeout:
                self._close(event, out)
                self._state.pop(event.stream, None)  # what follows starts afresh

    def _close(self, event: _Event, out: Shaped) -> None:
        del self._open[event.stream]
        out.rows.append(
            event.stream,
            event.timestamp_ns,
            event.timestamp,
            "".join(event.parts),
            event.flags | (event.last_flags & FLAG_TRUNCATED),
            event.size,
        )
        out.streams += [event.stream] * len(event.stamps)
        out.stamps += event.stamps
