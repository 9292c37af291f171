"""agent/literals.py: what every match of a pattern must contain (pure)."""

from __future__ import annotations

import random

import pytest

from agent.grep import matcher
from agent.literals import required


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("ERROR|FATAL", (["ERROR", "FATAL"], False)),
        ("(?i)panic", (["panic"], True)),
        (r"status=5\d\d", (["status=5"], False)),
        ("disk (full|quota)", (["disk "], False)),
        ("ab?cde", (["cde"], False)),
        (r"^GET /api/v\d+", (["GET /api/v"], False)),
        (r"\.log$", ([".log"], False)),
        ("héllo wörld", (["héllo wörld"], False)),
        ("a+bcd", (["bcd"], False)),
        ("ab{2,}cd", None),  # a short run on each side: nothing for certain
        ("a.b", None),
        ("(?i)disk", None),  # under (?i) RE2 folds k with the Kelvin sign: not narrowed
        ("(?s)abcd", None),
        ("x|abc", None),
        ("err(or", None),
        ("[abc]+", None),
        (r"\d{4}-\d\d", None),
        ("[[:digit:]abc]", None),  # the review's: a POSIX class ends at its own ]
        ("[^[:space:]xyz]q", None),
        (r"\123abc", None),  # octal: \123 is S
        (r"\012abc", None),
        (r"\Qabc\E?", None),  # a quantifier after \E takes the last quoted character
        (r"abc\Q\E*", None),
    ],
)
def test_what_every_match_contains(pattern: str, expected: object) -> None:
    assert required(pattern) == expected


ALPHABET = "abcAB.-|()[]?*+^$\\dé :QE01{},"
TEXT = "abcABé.- \n"


def test_no_line_a_pattern_matches_lacks_its_literals() -> None:
    """Random patterns and lines: wherever RE2 finds a match, the line holds one of the
    literals (folded, under (?i)). A miss here would be a line a search never shows."""
    rng = random.Random(7)
    checked = 0
    for _ in range(4000):
        pattern = ("(?i)" if rng.random() < 0.2 else "") + "".join(
            rng.choice(ALPHABET) for _ in range(rng.randint(3, 12))
        )
        try:
            matches = matcher(pattern)
        except ValueError:
            continue
        found = required(pattern)
        if found is None:
            continue
        literals, ci = found
        for _ in range(30):
            line = "".join(rng.choice(TEXT) for _ in range(rng.randint(0, 30)))
            line += rng.choice(literals) if rng.random() < 0.5 else ""
            if matches(line):
                checked += 1
                seen = line.lower() if ci else line
                assert any((lit.lower() if ci else lit) in seen for lit in literals), (
                    pattern,
                    line,
                )
    assert checked > 500
