"""Pure: the levels a row may have (trace … fatal) by number, name and the words people write.

Below both sides: the write side (shaping/levels.py) detects a line's level, the read side
(`logs --level`, the viewer, render.py) names and parses it; neither imports the other.
"""

from __future__ import annotations

TRACE, DEBUG, INFO, WARN, ERROR, FATAL = 1, 2, 3, 4, 5, 6
NAMES = {TRACE: "trace", DEBUG: "debug", INFO: "info", WARN: "warn", ERROR: "error", FATAL: "fatal"}

# The words people and libraries write for each level (lower case).
WORDS = {
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


def level_of_word(word: str) -> int | None:
    """A level's number from what a line or a person writes (`WARN`, `warning`, `40`)."""
    if word.isdigit():  # pino's 10..60; a longer run of digits is none (int() of 5,000
        # digits raises, and that killed the line's collector), nor are other scripts' digits
        return _NUMBERS.get(int(word)) if len(word) <= 8 and word.isascii() else None
    return WORDS.get(word.lower())
