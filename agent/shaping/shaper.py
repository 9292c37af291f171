"""Pure: one container's hints applied to its batches, in the order Filebeat applies them:
lines joined into events first, then filtered, then rate-limited, then given a level.

`shape` returns the rows to store and the lines they consumed: the read position moves past
the consumed lines (agent/cursor.py), which are all the lines given, but those of events
still open.
"""

from __future__ import annotations

from agent.batch import LineBatch, Source
from agent.grep import matcher
from agent.shaping.hints import Hints
from agent.shaping.levels import levels
from agent.shaping.multiline import PRESETS, Joiner, Shaped, start_rule
from agent.shaping.rate import RateLimit, line_filter

FILTERED, RATE_LIMITED = "filter", "rate limit"  # why rows were kept out (LineBatch.kept_out)


class Shaper:
    def __init__(self, source: Source, hints: Hints, *, max_bytes: int) -> None:
        self.hints = hints
        self.joiner: Joiner | None = None
        if hints.joins:
            rule = (
                start_rule(matcher(hints.multiline_start, "multiline.start"))
                if hints.multiline_start is not None
                else PRESETS[hints.multiline or ""]
            )
            self.joiner = Joiner(
                source,
                rule,
                max_lines=hints.max_lines,
                max_bytes=max_bytes,
                timeout=hints.timeout_s,
            )
        self._keep = line_filter(
            matcher(hints.include_lines, "include_lines") if hints.include_lines else None,
            matcher(hints.exclude_lines, "exclude_lines") if hints.exclude_lines else None,
        )
        self.limit = RateLimit(hints.rate) if hints.rate is not None else None
        self._format = hints.format

    @property
    def passthrough(self) -> bool:
        """Every line is a row: no event is ever held back."""
        return self.joiner is None

    def shape(self, batch: LineBatch, now: float) -> Shaped:
        if self.joiner is None:
            return self._rows(batch, batch.streams, batch.timestamps_ns)
        closed = self.joiner.feed(batch, now)
        return self._rows(closed.rows, closed.streams, closed.stamps)

    def expire(self, now: float) -> Shaped:
        assert self.joiner is not None
        closed = self.joiner.expire(now)
        return self._rows(closed.rows, closed.streams, closed.stamps)

    def flush(self) -> Shaped:
        assert self.joiner is not None
        closed = self.joiner.flush()
        return self._rows(closed.rows, closed.streams, closed.stamps)

    def _rows(self, rows: LineBatch, streams: list[str], stamps: list[int]) -> Shaped:
        keep, limit = self._keep, self.limit
        if keep is not None or limit is not None:
            messages, stamps_of = rows.messages, rows.timestamps_ns
            limited = limit.dropped if limit is not None else 0
            kept, filtered = [], 0
            for i, message in enumerate(messages):
                if keep is not None and not keep(message):
                    filtered += 1
                elif limit is None or limit.admit(stamps_of[i]):
                    kept.append(i)
            if len(kept) != len(rows):
                rows = rows.take(kept)
            kept_out: dict[str, int] = {}  # tallied by the writer with these rows
            if filtered:
                kept_out[FILTERED] = filtered
            if limit is not None and limit.dropped != limited:
                rows.dropped = limit.span()  # committed with these rows: see rate.py
                kept_out[RATE_LIMITED] = limit.dropped - limited
            rows.kept_out = kept_out or None
        rows.levels = levels(self._format, rows.messages)
        return Shaped(rows, streams, stamps)
