"""`grep.lines_matching`: the lines joined and searched at once say the same as the set asked
a line at a time, for patterns and lines drawn to meet at the lines' edges."""

from __future__ import annotations

import random

import pytest

from agent.grep import lines_matching, matcher, which_match

PIECES = [
    "a", "b", "ab", "é", "☃", "^", "$", r"\b", r"\B", ".", ".*", "[^a]", r"\s", r"\n", "x*",
    "(?i)A", "(?s).", r"\d+", "(?:a|b)", "b{2,3}", "(?m)^a", "a$", "^$", "[a-z]+", r"\w",
    r"\A", r"\z", "(?-m)^a", "|",
]  # fmt: skip
ALPHABET = "ab \n1é☃xA"


def drawn_patterns(rnd: random.Random) -> list[str]:
    out: list[str] = []
    while len(out) < rnd.randint(1, 4):
        pattern = "".join(rnd.choice(PIECES) for _ in range(rnd.randint(1, 4)))
        try:
            matcher(pattern)
        except ValueError:
            continue
        out.append(pattern)
    return out


def drawn_lines(rnd: random.Random) -> list[str]:
    return [
        "".join(rnd.choice(ALPHABET) for _ in range(rnd.randint(0, 8)))
        for _ in range(rnd.randint(1, 30))
    ]


@pytest.mark.parametrize("as_bytes", [False, True])
def test_the_joined_search_finds_the_lines_the_set_finds(as_bytes: bool) -> None:
    rnd = random.Random(11 + as_bytes)
    for _ in range(3000):
        patterns = drawn_patterns(rnd)
        texts = drawn_lines(rnd)
        lines: list[str | bytes] = [t.encode() for t in texts] if as_bytes else list(texts)
        which = which_match(patterns)
        expected = [i for i, line in enumerate(lines) if which(line)]
        assert lines_matching(patterns)(lines) == expected, (patterns, texts)


def test_ascii_lines_and_a_firehose_of_them() -> None:
    patterns = ["ERROR|FATAL", "^Traceback|Exception in thread", r"status=5\d\d", "(?i)panic"]
    lines = [f"level=info status={200 + i % 400} msg=ok" for i in range(5000)]
    lines[17] = "Traceback (most recent call last):"
    lines[4999] = "PANIC at the end"
    found = lines_matching(patterns)(lines)
    which = which_match(patterns)
    assert found == [i for i, line in enumerate(lines) if which(line)]
    assert 17 in found and 4999 in found and len(found) > 1000
    assert lines_matching(patterns)([]) == []
