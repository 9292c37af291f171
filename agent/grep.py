"""`logs --grep`: RE2, whose matching time is linear in the line, whatever the pattern.

Python's `re` backtracks: `(a+)+$` over a line of `a…a!` ran for minutes and ignored Ctrl-C.
RE2 has no backreferences or lookaround; a pattern that needs them is refused, clearly.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Sequence
from functools import cache
from itertools import accumulate, repeat
from operator import add
from typing import Any

_SPECIAL = frozenset(".^$*+?{}[]\\|()")
# A pattern from a label is set by whoever runs a container and is matched in the event loop:
# RE2 is linear in the line, but with a factor that grows with the program. `\PN.{999}x`
# (8469 instructions) cost ~24 ms a 1 KB line; at 1000 the worst we found costs ~0.2 ms, and
# a pattern people write (a date, a word list) is under 100.
MAX_LABEL_PROGRAM = 1000
# A viewer's search is typed by whoever reaches the viewer: the same bound, as a search that
# is worth running (a word list, a date, an address) is far under it.
MAX_SEARCH_PROGRAM = MAX_LABEL_PROGRAM


def matcher(
    pattern: str, what: str = "--grep", max_program: int | None = None
) -> Callable[[str], bool]:
    """Whether a line contains a match; ValueError for a pattern RE2 cannot take, or whose
    program is larger than `max_program` instructions (see MAX_LABEL_PROGRAM).

    A literal (or one anchored with ^ or $) needs no engine: `in` or `startswith` answer 15x
    faster than a call into RE2 (~1.1 us a line here), and the same.
    """
    head, tail = pattern.startswith("^"), pattern.endswith("$") and not pattern.endswith("\\$")
    text = pattern[int(head) : len(pattern) - int(tail)]
    if not _SPECIAL.intersection(text):  # a literal, maybe anchored: no engine needed
        if head and tail:
            return lambda line: line == text
        if head:
            return lambda line: line.startswith(text)
        if tail:
            return lambda line: line.endswith(text)
        return lambda line: text in line
    re2 = _re2()
    try:
        compiled = re2.compile(pattern, options=_options())
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise ValueError(
            f"{what} {pattern!r}: {reason} (RE2 syntax: no backreferences or lookaround)"
        ) from None
    if max_program is not None:
        bounded(pattern, what, compiled.programsize, max_program)
    search = compiled.search
    return lambda line: search(line) is not None


def which_match(patterns: list[str]) -> Callable[[str | bytes], list[int] | None]:
    """For patterns already checked by `matcher`: which of them a line (text, or its UTF-8
    bytes: no decoding) contains (their indices, unordered), or None for none. One RE2 set,
    one pass over the line: ten patterns cost ~1.4 us a line here, where ten searches cost
    ~27 (the bench's alert rules)."""
    re2 = _re2()
    found = re2.Set.SearchSet(_options())
    try:
        for pattern in patterns:
            found.Add(pattern)
        found.Compile()
    except re2.error as exc:  # over RE2's memory budget for a set: said, not worked around
        raise ValueError(f"the patterns cannot be matched as one RE2 set ({exc})") from None
    match: Callable[[str | bytes], list[int] | None] = found.Match
    return match


# A pattern that means something else in lines joined by newlines: the text's own start or
# end (\A, \z), or `^`/`$` made to mean them again by clearing the m flag. And one that may
# match a newline (the s flag, a class that holds it, an escape or a range that may name
# it: reviews' `(?s)Exception.*Caused by`, `Exception[\t-~]*Caused by`): its leftmost match
# can run on through later lines, so each search would scan on (quadratic: 20,000 lines
# took 2.5 to 14 s). Matched a line at a time; what the set says is the same either way.
# Each search is also held to SEARCH_WINDOW bytes of whole lines past its start, so a
# pattern this misses costs at most that much a matching line.
_WHOLE_TEXT = re.compile(r"\\[Az]|\(\?[a-zA-Z]*-[a-zA-Z]*m")
_MAY_SPAN = re.compile(r"\(\?[a-zA-Z]*s|\\[sWDCPpnx0-7aftvr]|\[\^|\[:|[\x00-\x1f]")
SEARCH_WINDOW = 16 * 1024


def lines_matching(
    patterns: list[str], which: Callable[[str | bytes], list[int] | None] | None = None
) -> Callable[[Sequence[str | bytes]], list[int]]:
    """For patterns already checked by `matcher`: the indices of the lines (texts, or their
    UTF-8 bytes) that contain a match of any of them, in order — what `which_match` says a
    line at a time, found with one RE2 search a matching line instead of a set's pass a
    line (~1.4 us a line for ten patterns here).

    The lines are joined by newlines and searched with the patterns' alternation in
    multi-line mode; each match's lines are then asked of the set alone. Nothing is passed
    over: a line holding a match is a place where the alternation matches in the joined
    text too (`^` and `$` match at each line's ends, `\b` sees a newline as a line's end),
    so the leftmost match from the start of a line at or before it starts no later than in
    it, and its lines are asked. A pattern for which that does not hold (_WHOLE_TEXT), or that
    may match a newline (_MAY_SPAN), makes them all matched a line at a time. `which`:
    `which_match(patterns)` if the caller has it already."""
    asked = which or which_match(patterns)

    def one_by_one(lines: Sequence[str | bytes]) -> list[int]:
        return [i for i, line in enumerate(lines) if asked(line)]

    if any(_WHOLE_TEXT.search(p) or _MAY_SPAN.search(p) for p in patterns):
        return one_by_one
    re2 = _re2()
    try:
        joined = re2.compile("(?m)" + "|".join(f"(?:{p})" for p in patterns), options=_options())
    except re2.error:  # too large as one: a line at a time
        return one_by_one
    search = joined.search

    def find(lines: Sequence[str | bytes]) -> list[int]:
        if not lines:
            return []
        block, parts = _joined(lines)
        ends = list(accumulate(map(add, map(len, parts), repeat(1))))  # each next line's start
        out: list[int] = []
        pos, size, last = 0, len(block), len(lines) - 1
        while pos <= size:
            # Whole lines only: a line's own match is one in the window too (`$` and `\b`
            # see the newline after the window's last line).
            stop = min(bisect_right(ends, pos + SEARCH_WINDOW), last)
            m = search(block, pos, ends[stop] - 1)
            if m is None:
                pos = ends[stop]
                continue
            start, end = m.span()
            first = bisect_right(ends, start)
            upto = min(bisect_right(ends, max(start, end - 1)), last)
            out += (i for i in range(first, upto + 1) if asked(lines[i]))
            pos = ends[upto]
        return out

    return find


def _joined(lines: Sequence[str | bytes]) -> tuple[bytes, Sequence[str | bytes]]:
    """The lines as one UTF-8 text joined by newlines, and the lines whose lengths are
    their lengths in it (the texts themselves when all of them are ASCII)."""
    if isinstance(lines[0], str):
        try:
            text = "\n".join(lines)  # type: ignore[arg-type]
        except TypeError:  # texts and bytes mixed: each encoded
            pass
        else:
            if text.isascii():
                return text.encode("ascii"), lines
    try:
        return b"\n".join(lines), lines  # type: ignore[arg-type]
    except TypeError:
        parts = [line.encode() if isinstance(line, str) else line for line in lines]
        return b"\n".join(parts), parts


@cache
def _re2() -> Any:
    """RE2, imported when a pattern first needs it: 2.6 MB of the agent's memory that most
    hosts, whose labels ask for no pattern, never use."""
    import re2

    return re2


@cache
def _options() -> Any:
    options = _re2().Options()
    options.log_errors = False  # the error is ours to say, in one line
    return options


def bounded(pattern: str, what: str, size: int | None, max_program: int) -> None:
    """ValueError, in a line, for a pattern of more than `max_program` RE2 instructions."""
    if size is None or size <= max_program:
        return
    counted = (
        "more RE2 instructions than it expands"
        if size >= _TOO_LARGE
        else f"{size} RE2 instructions"
    )
    raise ValueError(
        f"{what} {pattern[:80]!r}: too costly to match ({counted}, at most {max_program}; "
        "a counted repeat like .{999} costs one each)"
    )


def program_size(pattern: str) -> int | None:
    """RE2's instructions for a pattern (None: RE2 refuses its syntax). What a pattern costs to
    compile and match grows with it in PostgreSQL's engine too: nested counted repeats
    like `((a|b){0,9}){0,9}` took it seconds to compile (unbounded by a statement_timeout)."""
    re2 = _re2()
    try:
        return int(re2.compile(pattern, options=_options()).programsize)
    except re2.error as exc:
        said = exc.args[0] if exc.args and isinstance(exc.args[0], bytes) else b""
        if said.startswith((b"invalid repetition size", b"pattern too large")):
            return _TOO_LARGE  # repeats RE2 will not expand: more than any bound
        return None


_TOO_LARGE = 1 << 62
