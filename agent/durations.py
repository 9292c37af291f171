"""Durations as people write them: 20ms, 30s, 10m, 2h, 7d, 1h30m (pure)."""

from __future__ import annotations

import math
import re

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|[smhd])")
_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
# The longest duration anyone means: 100 years. A label is set by whoever runs a container,
# and 400 nines made infinity (int() of it crashed the agent); 200000d overflowed the BIGINT
# nanoseconds of a retention cut-off. 100 years in ns fits int64 with room (a cut-off
# `now - max` stays above 1678).
MAX_SECONDS = 100 * 365 * 86400


def parse_duration(text: str) -> float:
    """Seconds, at most MAX_SECONDS; raises ValueError for anything else."""
    parts = _PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r} is not a duration like 20ms, 30s, 10m, 2h, 7d or 1h30m")
    seconds = sum(float(n) * _UNIT[u] for n, u in parts)
    if not math.isfinite(seconds) or seconds > MAX_SECONDS:
        raise ValueError(f"{text[:40]!r} is longer than 100 years (36500d)")
    return seconds


def format_duration(seconds: float) -> str:
    """As parse_duration reads it: the largest unit that holds it whole (7d, 36h, 90s)."""
    for unit in ("d", "h", "m", "s"):
        size = _UNIT[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{round(seconds * 1000)}ms"
