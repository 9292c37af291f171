"""What a database error wraps: tortoise puts the driver's own error in `args[0]` or chains
it as the cause, and the driver's error carries the code that says what happened."""

from __future__ import annotations

from collections.abc import Iterator


def wrapped(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then what it wraps, outermost first."""
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        inner = seen.args[0] if seen.args and isinstance(seen.args[0], BaseException) else None
        seen = inner or seen.__cause__ or seen.__context__
