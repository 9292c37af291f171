"""What a database error wraps: tortoise puts the driver's own error in `args[0]` or chains
it as the cause, and the driver's error carries the code that says what happened: whether
the store is away or refuses us, and so what a person should check."""

from __future__ import annotations

from collections.abc import Iterator

from agent.redact import redact


def wrapped(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then what it wraps, outermost first."""
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        inner = seen.args[0] if seen.args and isinstance(seen.args[0], BaseException) else None
        seen = inner or seen.__cause__ or seen.__context__


# PostgreSQL's error classes that mean "not let in" or "not there", and what to check then.
_URL = "storage.db_url (LOGAGENT_DB_URL)"
_ADVICE_BY_SQLSTATE = {
    "28": f"check the user and password in {_URL}",  # invalid authorization
    "3D": f"create the database (logagent makes its tables, not the database), or fix {_URL}",
    "08": f"check that PostgreSQL runs there and takes connections, and {_URL}",  # connection
    "57": f"check that PostgreSQL runs there and takes connections, and {_URL}",  # shut down
    "53": "PostgreSQL is out of connections (max_connections), memory or disk",  # resources
}
_ADVICE_UNREACHABLE = f"check that the database server runs there and is reachable, and {_URL}"


def unreachable(exc: BaseException) -> tuple[BaseException, str] | None:
    """The error in `exc` (or what it wraps, or a group's) that says the store cannot be
    reached or does not let us in, with what to check; None for any other failure.

    The innermost such error is the one that says most (tortoise's DBConnectionError wraps
    asyncpg's "database does not exist"). A closed stdout (`logs | head`, BrokenPipeError)
    is not the store's.
    """
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (said := unreachable(inner)) is not None:
                return said
        return None
    found: tuple[BaseException, str] | None = None
    for seen in wrapped(exc):
        code = getattr(seen, "sqlstate", None)
        if isinstance(code, str) and code[:2] in _ADVICE_BY_SQLSTATE:
            found = seen, _ADVICE_BY_SQLSTATE[code[:2]]
        elif isinstance(seen, OSError) and not isinstance(seen, BrokenPipeError):
            found = seen, _ADVICE_UNREACHABLE
    return found


def describe(db_url: str, exc: BaseException) -> str:
    """`'<url>': <what failed>[: <what to check>]`, the URL's password masked everywhere:
    the tail of a "cannot open database" message a person can act on."""
    said = unreachable(exc)
    cause, advice = said if said is not None else (exc, None)
    detail = str(cause) or cause.__class__.__name__
    text = f"{redact(db_url)!r}: {redact(detail, db_url)}"
    return f"{text}: {advice}" if advice else text
