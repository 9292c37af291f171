"""--since and --until as people write them: an RFC 3339 time, a duration back, Unix seconds."""

from __future__ import annotations

import time

from agent.durations import parse_duration
from agent.timestamps import NS_RANGE, TimestampError, parse_timestamp

# What a timestamp column holds: nanoseconds since 1970 in a signed 64-bit integer.


def parse_when(text: str, *, now_ns: int | None = None) -> int:
    """--since/--until: an RFC 3339 time, a duration back from now (10m, 2h, 3d, 1h30m),
    or Unix seconds; as nanoseconds since the epoch. ValueError for anything else."""
    text = text.strip()
    if not text:
        raise ValueError("an empty time: give an RFC 3339 time, a duration (10m, 2h) or seconds")
    now = time.time_ns() if now_ns is None else now_ns
    try:
        ns = _parse(text, now)
    except OverflowError:
        ns = NS_RANGE.stop
    if ns not in NS_RANGE:
        raise ValueError(f"{text!r} is out of range (the years 1678 to 2262)")
    return ns


def _parse(text: str, now: int) -> int:
    try:
        return now - int(parse_duration(text) * 1_000_000_000)
    except ValueError:
        pass
    try:
        return parse_timestamp(text.encode())
    except TimestampError:
        pass
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an RFC 3339 time, a duration (10m, 2h, 3d) nor Unix seconds"
        ) from None
    if seconds != seconds:  # nan
        raise OverflowError(text)
    return int(seconds * 1_000_000_000)
