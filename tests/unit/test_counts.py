"""agent/storage/counts.py's pure part: a read's lines as counts per minute."""

from __future__ import annotations

import random
from collections import Counter

from agent.storage.counts import MINUTE_NS, minute_of, tally


def test_a_minute_is_sql_s_integer_division_also_before_1970() -> None:
    """SQLite and PostgreSQL divide toward zero; the counts made in SQL (an upgrade, a day
    dropped) must fall in the minutes the commit's counts did."""
    assert [minute_of(t) for t in (0, MINUTE_NS - 1, MINUTE_NS)] == [0, 0, 1]
    assert [minute_of(t) for t in (-1, -MINUTE_NS, -MINUTE_NS - 1)] == [0, -1, -1]


def test_the_fast_path_and_the_slow_one_count_the_same() -> None:
    rng = random.Random(5)
    for _ in range(300):
        n = rng.randint(1, 40)
        base = rng.choice([0, -3 * MINUTE_NS, 10**18])
        stamps = [base + rng.randint(0, rng.choice([10, 2 * MINUTE_NS])) for _ in range(n)]
        streams = [rng.choice(["stdout", "stdout", "stderr"]) for _ in range(n)]
        levels: list[int | None] = [rng.choice([None, None, 5]) for _ in range(n)]
        expected = Counter(
            (7, minute_of(t), s, lv or 0) for t, s, lv in zip(stamps, streams, levels, strict=True)
        )
        assert tally(7, stamps, streams, levels) == expected
        assert tally(7, stamps, streams, []) == Counter(
            (7, minute_of(t), s, 0) for t, s in zip(stamps, streams, strict=True)
        )
