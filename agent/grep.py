"""`logs --grep`: RE2, whose matching time is linear in the line, whatever the pattern.

Python's `re` backtracks: `(a+)+$` over a line of `a…a!` ran for minutes and ignored Ctrl-C.
RE2 has no backreferences or lookaround; a pattern that needs them is refused, clearly.
"""

from __future__ import annotations

from collections.abc import Callable

import re2

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # the error is ours to say, in one line


def matcher(pattern: str) -> Callable[[str], bool]:
    """Whether a line contains a match; ValueError for a pattern RE2 cannot take."""
    try:
        compiled = re2.compile(pattern, options=_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise ValueError(
            f"--grep {pattern!r}: {reason} (RE2 syntax: no backreferences or lookaround)"
        ) from None
    search = compiled.search
    return lambda line: search(line) is not None
