"""`grep.lines_matching`: the lines joined and searched at once say the same as the set asked
a line at a time, for patterns and lines drawn to meet at the lines' edges."""

from __future__ import annotations

import random
import re
from collections.abc import Callable

import pytest

from agent import grep
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


@pytest.mark.parametrize(("as_bytes", "windows"), [(False, False), (True, False), (True, True)])
def test_the_joined_search_finds_the_lines_the_set_finds(
    monkeypatch: pytest.MonkeyPatch, as_bytes: bool, windows: bool
) -> None:
    """`windows`: every pattern searched joined (none matched a line at a time for what it
    may match), in windows of a few bytes: a window's whole lines hold their own matches."""
    if windows:
        monkeypatch.setattr(grep, "_MAY_SPAN", re.compile(r"(?!x)x"))
        monkeypatch.setattr(grep, "SEARCH_WINDOW", 5)
    rnd = random.Random(11 + as_bytes + windows)
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


@pytest.mark.parametrize(
    ("patterns", "joined"),
    [
        (["Exception"], True),
        (["(?s)Exception.*Caused by", "Exception"], False),  # a review's: 20k lines, 2.5 s
        (["x|[^!]*!"], False),
        ([r"Exception\s+in"], False),
        ([r"(?i)exception", r"status=5\d\d"], True),
    ],
)
def test_a_pattern_that_may_match_a_newline_is_matched_a_line_at_a_time(
    monkeypatch: pytest.MonkeyPatch, patterns: list[str], joined: bool
) -> None:
    """Its leftmost match in the joined text can run on through every later line, so every
    search would scan to the end: the lines are then asked of the set one by one (the
    set is asked of every line; joined, only of those a match touches)."""
    asked: list[str | bytes] = []

    def counted(ps: list[str]) -> Callable[[str | bytes], list[int] | None]:
        which = which_match(ps)

        def ask(line: str | bytes) -> list[int] | None:
            asked.append(line)
            return which(line)

        return ask

    monkeypatch.setattr(grep, "which_match", counted)
    lines = ["Exception here" if i % 10 == 0 else "ordinary line of text" for i in range(1000)]
    which = which_match(patterns)
    expected = [i for i, line in enumerate(lines) if which(line)]
    asked.clear()
    assert grep.lines_matching(patterns)(lines) == expected
    assert len(asked) == (len(expected) if joined else 1000)
