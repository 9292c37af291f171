"""--since and --until as people write them: an RFC 3339 time, a duration back, Unix seconds."""

from __future__ import annotations

import time

from agent.durations import parse_duration
from agent.timestamps import TimestampError, parse_timestamp


def parse_when(text: str, *, now_ns: int | None = None) -> int:
    """--since/--until: an RFC 3339 time, a duration back from now (10m, 2h, 3d, 1h30m),
    or Unix seconds; as nanoseconds since the epoch."""
    text = text.strip()
    now = time.time_ns() if now_ns is None else now_ns
    try:
        return now - int(parse_duration(text) * 1_000_000_000)
    except ValueError:
        pass
    try:
        return parse_timestamp(text.encode())
    except TimestampError:
        pass
    try:
        return int(float(text) * 1_000_000_000)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an RFC 3339 time, a duration (10m, 2h, 3d) nor Unix seconds"
        ) from None
