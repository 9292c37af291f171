"""Pure: text that every match of an RE2 pattern must contain, for an index to narrow by.

`ERROR|FATAL` → ["ERROR", "FATAL"] (a match holds one of them); `status=5\\d\\d` →
["status=5"]; `disk (full|quota)` → ["disk "]. A pattern this cannot read for certain
(a group with flags, a class where a literal would be, an alternative without 3 literal
characters in a row) gives None: its caller reads every row instead. Wrong here means lines
missed, so every doubt is a None.
"""

from __future__ import annotations

import re

MIN_LITERAL = 3  # a trigram index finds nothing shorter
_META = set(".^$*+?()[]{}|\\")
# Under (?i), RE2 folds these ASCII letters with characters outside ASCII too (K and the
# Kelvin sign, S and the long s): an index's own folding may not; such a pattern reads all.
_WIDE_FOLDS = set("kKsS")
_OCTAL = re.compile(r"\\[0-9]")


def required(pattern: str) -> tuple[list[str], bool] | None:
    """The literals (one of which every match holds) and whether they are case-insensitive;
    None when no such list can be given for certain."""
    if "[:" in pattern or "\\Q" in pattern or "\\E" in pattern or _OCTAL.search(pattern):
        return None  # POSIX classes, quoted text, octal escapes: not read here
    ci = False
    if pattern.startswith("(?i)"):
        ci, pattern = True, pattern[4:]
    alternatives = _split_top(pattern)
    if alternatives is None:
        return None
    out: list[str] = []
    for alt in alternatives:
        run = _longest_run(alt)
        if run is None or len(run) < MIN_LITERAL or (ci and _WIDE_FOLDS & set(run)):
            return None
        if not run.isascii() and ci:
            return None
        out.append(run)
    return out, ci


def _structure(text: str, start: int = 0) -> tuple[list[tuple[int, str, int]], bool]:
    """The ( ) | of `text` from `start` that are not escaped or in a class, each with the
    depth after it; and whether every class closed."""
    found: list[tuple[int, str, int]] = []
    depth, i, in_class = 0, start, False
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            if text[i + 1 : i + 2] == "]" or text[i + 1 : i + 3] == "^]":
                i += 1 + (text[i + 1] == "^")  # a ] first is a literal ]
        elif c in "()|":
            depth += {"(": 1, ")": -1, "|": 0}[c]
            found.append((i, c, depth))
        i += 1
    return found, not in_class


def _split_top(pattern: str) -> list[str] | None:
    """The pattern's top-level alternatives; None if its brackets do not close."""
    marks, closed = _structure(pattern)
    if not closed or any(d < 0 for _, _, d in marks) or (marks and marks[-1][2] != 0):
        return None
    parts: list[str] = []
    start = 0
    for i, c, depth in marks:
        if c == "|" and depth == 0:
            parts.append(pattern[start:i])
            start = i + 1
    parts.append(pattern[start:])
    return parts


def _longest_run(alt: str) -> str | None:
    """The longest run of characters the alternative matches literally, in order, once
    each; None for what is not read for certain (an inline flag)."""
    best, run, i = "", "", 0
    while i < len(alt):
        c = alt[i]
        char: str | None = None
        step = 1
        if c == "\\":
            nxt = alt[i + 1 : i + 2]
            if not nxt:
                return None
            if not nxt.isalnum() and nxt.isascii():  # \. \- \( …: the character itself
                char, step = nxt, 2
            else:  # \d \w \b \x41 \pL …: a class or an assertion
                best, run = max(best, run, key=len), ""
                i += _escape_length(alt, i)
                continue
        elif c == "(":  # a group: not read inside (what it holds may be an alternative)
            if alt[i + 1 : i + 2] == "?" and not alt.startswith(("(?:", "(?P<"), i):
                return None  # a flag, which changes what follows
            best, run = max(best, run, key=len), ""
            end = _group_end(alt, i)
            if end is None:
                return None
            i = end + 1
            continue
        elif c in _META:
            best, run = max(best, run, key=len), ""
            i += _skip(alt, i)
            continue
        else:
            char = c
        after = alt[i + step : i + step + 1]
        if after in ("?", "*") or (after == "{" and alt[i + step + 1 : i + step + 2] == "0"):
            best, run = max(best, run, key=len), ""  # this character may be absent
            i += step
            continue
        if after in ("+", "{"):  # at least once: it ends the run
            run += char
            best, run = max(best, run, key=len), ""
            i += step
            continue
        run += char
        i += step
    return max(best, run, key=len)


def _group_end(alt: str, i: int) -> int | None:
    """The index of the ) that closes the group opened at `i`."""
    marks, _ = _structure(alt, i)
    return next((j for j, c, depth in marks if c == ")" and depth == 0), None)


def _escape_length(alt: str, i: int) -> int:
    """How long an escape like \\x41, \\x{263a}, \\pL or \\p{Greek} is."""
    kind = alt[i + 1 : i + 2]
    if kind in ("x", "p", "P") and alt[i + 2 : i + 3] == "{":
        end = alt.find("}", i)
        return (end - i + 1) if end > 0 else len(alt) - i
    if kind == "x":
        return 4
    if kind in ("p", "P"):
        return 3
    return 2


def _skip(alt: str, i: int) -> int:
    """Past a metacharacter: a whole class [...] or {m,n}, else the one character."""
    c = alt[i]
    if c == "[":
        j = i + 1
        if alt[j : j + 1] == "^":
            j += 1
        if alt[j : j + 1] == "]":
            j += 1
        while j < len(alt) and alt[j] != "]":
            j += 2 if alt[j] == "\\" else 1
        return j - i + 1
    if c == "{":
        end = alt.find("}", i)
        return (end - i + 1) if end > 0 else 1
    return 1
