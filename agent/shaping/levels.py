"""Pure: a line's level (trace … fatal) from JSON, logfmt or a leading word.

Levels are stored as small integers so that `--level warn` is `level >= 4`; a line with no
level that can be read stores NULL. Detection is a few C-speed checks per line: a JSON line
is searched for its level key, not parsed (the message is stored as written anyway).
"""

from __future__ import annotations

import re
from collections.abc import Callable

TRACE, DEBUG, INFO, WARN, ERROR, FATAL = 1, 2, 3, 4, 5, 6
NAMES = {TRACE: "trace", DEBUG: "debug", INFO: "info", WARN: "warn", ERROR: "error", FATAL: "fatal"}
FORMATS = ("auto", "json", "logfmt", "text")

# The words people and libraries write for each level (lower case).
_WORDS = {
    "trace": TRACE, "trc": TRACE, "finest": TRACE, "finer": TRACE,
    "debug": DEBUG, "dbg": DEBUG, "d": DEBUG, "fine": DEBUG, "verbose": DEBUG,
    "info": INFO, "inf": INFO, "i": INFO, "information": INFO, "informational": INFO,
    "notice": INFO, "config": INFO,
    "warn": WARN, "warning": WARN, "wrn": WARN, "w": WARN,
    "error": ERROR, "err": ERROR, "e": ERROR, "severe": ERROR,
    "fatal": FATAL, "ftl": FATAL, "f": FATAL, "critical": FATAL, "crit": FATAL,
    "panic": FATAL, "emerg": FATAL, "emergency": FATAL, "alert": FATAL,
}  # fmt: skip
# Numbers: pino/bunyan (10..60) and syslog severities are not mixed up: only pino's.
_NUMBERS = {10: TRACE, 20: DEBUG, 30: INFO, 40: WARN, 50: ERROR, 60: FATAL}

_KEYS = r"(?:level|lvl|severity|loglevel|log_level|log\.level|levelname|@l)"
_JSON = re.compile(r'"' + _KEYS + r'"\s*:\s*"?([A-Za-z]+|\d+)', re.IGNORECASE)
_LOGFMT = re.compile(r"(?:^|\s)" + _KEYS + r'="?([A-Za-z]+)', re.IGNORECASE)
# A leading word, after at most a timestamp-like prefix ("2024-05-01 12:00:00,123 ERROR x",
# "[WARN] x", nginx's "2024/05/01 12:00:00 [error] x"): in capitals or capitalised ("Error:"),
# any case only in brackets; a lower-case "err 3" is a word, not a level.
_LEVEL_WORDS = "TRACE|DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|ERR|FATAL|CRITICAL|CRIT|PANIC|SEVERE"
_TITLED = "|".join(w.title() for w in _LEVEL_WORDS.split("|") if len(w) > 4)
_TEXT = re.compile(
    r"[\d\-:.,TZ+ /]{0,40}(?:[\[(<](?i:(" + _LEVEL_WORDS + r"))[\])>]"
    r"|(" + _LEVEL_WORDS + "|" + _TITLED + r")(?![A-Za-z]))"
)
_GLOG = re.compile(r"([IWEF])\d{4} \d\d:\d\d:\d\d")  # klog/glog: I0501 12:00:00.123456
_GLOG_LEVEL = {"I": INFO, "W": WARN, "E": ERROR, "F": FATAL}


def level_of_word(word: str) -> int | None:
    """A level's number from what a line or a person writes (`WARN`, `warning`, `40`)."""
    if word.isdigit():
        return _NUMBERS.get(int(word))
    return _WORDS.get(word.lower())


def _json(line: str) -> int | None:
    if not line.startswith("{"):
        return None
    m = _JSON.search(line)
    return level_of_word(m.group(1)) if m else None


def _logfmt(line: str) -> int | None:
    if "=" not in line:
        return None
    m = _LOGFMT.search(line)
    return level_of_word(m.group(1)) if m else None


def _text(line: str) -> int | None:
    m = _TEXT.match(line)
    if m:
        return _WORDS.get((m.group(1) or m.group(2)).lower())
    g = _GLOG.match(line)
    return _GLOG_LEVEL[g.group(1)] if g else None


def _auto(line: str) -> int | None:
    if line.startswith("{"):
        return _json(line)
    return _text(line) or _logfmt(line)


_DETECT: dict[str, Callable[[str], int | None]] = {
    "auto": _auto,
    "json": _json,
    "logfmt": _logfmt,
    "text": _text,
}


def detector(fmt: str) -> Callable[[str], int | None]:
    """The level detector of a format (one of FORMATS)."""
    return _DETECT[fmt]


def levels(fmt: str, messages: list[str]) -> list[int | None]:
    """The level of each message, read as `fmt` says."""
    return list(map(_DETECT[fmt], messages))
