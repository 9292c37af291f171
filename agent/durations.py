"""Durations as people write them: 20ms, 30s, 10m, 2h, 7d, 1h30m (pure)."""

from __future__ import annotations

import re

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|[smhd])")
_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds; raises ValueError for anything else."""
    parts = _PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r} is not a duration like 20ms, 30s, 10m, 2h, 7d or 1h30m")
    return sum(float(n) * _UNIT[u] for n, u in parts)
