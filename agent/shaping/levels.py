"""Pure: a line's level (trace … fatal) from JSON, logfmt or a leading word.

Levels are stored as small integers so that `--level warn` is `level >= 4`; a line with no
level that can be read stores NULL. Detection is a few C-speed checks per line: a JSON line
is searched for its level key, not parsed (the message is stored as written anyway).
"""

from __future__ import annotations

import re
from functools import lru_cache
from operator import itemgetter

from agent.level_names import level_of_word

FORMATS = ("auto", "json", "logfmt", "text")

# Keys as libraries write them (lower case: case-sensitive searches stay fast).
_KEYS = r"(?:level|lvl|severity|loglevel|log_level|log\.level|levelname|@l)"
# A level word is at most 13 letters (`informational`), a number at most 8 digits: a longer
# run is cut where it can be none either way, so each word looked up is short (_word_level).
_JSON = re.compile(r'"' + _KEYS + r'"\s*:\s*"?([A-Za-z]{1,16}|\d{1,9})')
# Searched from the key (a fast scan), its start checked after: `level=` alone, or after
# `log`, `log_`, `log.`.
_LOGFMT = re.compile(r'(?:level|lvl|severity)="?([A-Za-z]{1,16})')
_LOGFMT_KEYS = ("level=", "lvl=", "severity=")  # a batch without any skips the search
_JSON_KEYS = tuple(f'"{k}"' for k in ("level", "lvl", "severity", "log.level", "levelname", "@l"))
# A leading word, after at most a timestamp-like prefix ("2024-05-01 12:00:00,123 ERROR x",
# "[WARN] x", nginx's "2024/05/01 12:00:00 [error] x"): in capitals or capitalised ("Error:"),
# any case only in brackets; a lower-case "err 3" is a word, not a level. The prefix starts
# with a digit and is possessive (no backtracking: 0.25 µs, not 0.6, on a timestamped line);
# T and Z are in it only where no letter follows (ISO 8601), so "...Z TRACE" is a level.
_LEVEL_WORDS = "TRACE|DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|ERR|FATAL|CRITICAL|CRIT|PANIC|SEVERE"
_TITLED = "|".join(w.title() for w in _LEVEL_WORDS.split("|") if len(w) > 4)
_STAMP = r"(?:\d[\d\-:.,+/ ]*+(?:[TZ](?![A-Za-z])[\d\-:.,+/ ]*+)*+)?"
_TEXT = re.compile(
    _STAMP + r"(?:[\[(<](?i:(" + _LEVEL_WORDS + r"))[\])>]"
    r"|(" + _LEVEL_WORDS + "|" + _TITLED + r")(?![A-Za-z]))"
    r"|([IWEF])\d{4} \d\d:\d\d:\d\d"  # klog/glog: I0501 12:00:00.123456
)
# What a line _TEXT can match starts with (a digit of the stamp, a bracket, a level word's or
# glog's capital; `\d` also takes other scripts' digits, so any non-ASCII first character
# counts too): a batch whose lines all start otherwise (plain text, JSON) skips the pattern.
_TEXT_STARTS = frozenset("0123456789[(<" + "".join(w[0] for w in _LEVEL_WORDS.split("|")) + "IWEF")
_FIRST = itemgetter(slice(0, 1))


# A level's word as a line writes it (`info`, `WARN`, `30`), looked up once per batch's few
# distinct words: most lines of a service say one of a handful.
_word_level = lru_cache(maxsize=256)(level_of_word)


def _json(messages: list[str]) -> list[int | None]:
    """The level of each JSON line (one that starts with `{`): its level key searched, not
    the line parsed. The searches run in C over the batch (`map`)."""
    return [
        _word_level(m[1]) if m is not None and line[:1] == "{" else None
        for m, line in zip(map(_JSON.search, messages), messages, strict=True)
    ]


def _logfmt(messages: list[str]) -> list[int | None]:
    """The level of each logfmt line: its first key found that is a key (at the start, after
    a space, or after `log`, `log_`, `log.`)."""
    return [
        _word_level(m[1]) if m is not None and (not m.start() or _keyed(line, m.start())) else None
        for m, line in zip(map(_LOGFMT.search, messages), messages, strict=True)
    ]


def _keyed(line: str, at: int) -> bool:
    return line[at - 1].isspace() or line[:at].endswith(("log", "log_", "log."))


def _may_have_text_level(messages: list[str]) -> bool:
    firsts = set(map(_FIRST, messages))
    return not _TEXT_STARTS.isdisjoint(firsts) or not "".join(firsts).isascii()


def levels(fmt: str, messages: list[str]) -> list[int | None]:
    """The level of each message, read as `fmt` says; [] when none has one.

    Per batch, not per line: the text pattern runs in C over every line (`map`), and only
    when some line starts as a level can (_TEXT_STARTS); the JSON and logfmt searches only
    when the batch holds one of their keys at all, then over every line in C. A batch of
    plain lines costs ~0.05 µs a line (0.17 with the pattern on every line; a Python call
    per line ~0.3 µs); of logfmt lines ~0.5, of JSON lines ~0.6, of
    timestamped text lines (`2024-05-01 12:00:00,123 INFO …`) ~0.7.
    """
    out: list[int | None] = []
    if fmt in ("auto", "text") and _may_have_text_level(messages):
        found = list(map(_TEXT.match, messages))
        if any(found):  # the one group that matched: a level word, or glog's letter (I, W,
            # E, F read as words are its levels)
            out = [_word_level(m[m.lastindex or 0]) if m else None for m in found]
    if fmt == "text":
        return out
    joined = "".join(messages)
    for kind, keys, mark, detect in (
        ("json", _JSON_KEYS, "{", _json),
        ("logfmt", _LOGFMT_KEYS, "=", _logfmt),
    ):
        if fmt not in (kind, "auto") or mark not in joined:
            continue
        if not any(key in joined for key in keys):
            continue
        said = detect(messages)
        if out:  # a line's level found before stays
            out = [o if o is not None else d for o, d in zip(out, said, strict=True)]
        elif any(level is not None for level in said):
            out = said
    return out
