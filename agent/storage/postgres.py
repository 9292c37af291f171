"""What only PostgreSQL needs: its advisory locks, on a connection of their own.

Many hosts' agents share one database, so two things are serialised there, not in a file:
one agent per host name (a session lock held for the agent's life: a second agent claiming
the same host would store every line twice), and the schema's creation or upgrade (ten agents
starting at once must not race on CREATE TABLE).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from tortoise.backends.base.config_generator import expand_db_url

LOCK_NOT_AVAILABLE = "55P03"
INVALID_REGULAR_EXPRESSION = "2201B"


def sqlstate(exc: BaseException) -> str | None:
    """PostgreSQL's error code of `exc` or of what it wraps (tortoise wraps asyncpg's)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(code := getattr(seen, "sqlstate", None), str):
            return code
        wrapped = seen.args[0] if seen.args and isinstance(seen.args[0], BaseException) else None
        seen = wrapped or seen.__cause__ or seen.__context__
    return None


_SCHEMA_KEY = 0x6C6F_6761_6765_6E74  # "logagent": the schema lock's key


def _connect_args(db_url: str) -> dict[str, Any]:
    creds = expand_db_url(db_url)["credentials"]
    return {
        "host": creds.get("host"),
        "port": creds.get("port"),
        "user": creds.get("user"),
        "password": creds.get("password"),
        "database": creds.get("database"),
    }


@asynccontextmanager
async def session_lock(db_url: str, key: str | None) -> AsyncIterator[bool]:
    """An advisory lock on a connection held while the block runs: the schema's (key None,
    waited for) or a host's (tried: yields whether it was had)."""
    import asyncpg  # only a PostgreSQL store loads it (a SQLite agent is ~1 MB smaller)

    conn = await asyncpg.connect(**_connect_args(db_url))
    try:
        if key is None:
            await conn.execute("SELECT pg_advisory_lock($1)", _SCHEMA_KEY)
            had = True
        else:
            had = bool(
                await conn.fetchval(
                    "SELECT pg_try_advisory_lock(hashtextextended($1, 0))", f"logagent:{key}"
                )
            )
        yield had
    finally:
        await conn.close()  # the session ends: its locks go with it


COMMITS = "logagent_commits"  # the channel: one notification per committed batch


class CommitSignal:
    """Set when a batch was committed since the last `wait`."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def notified(self, *_args: object) -> None:
        self._event.set()

    async def wait(self) -> None:
        """Until the next commit (the caller bounds the wait with its own scope)."""
        await self._event.wait()
        self._event = anyio.Event()


@asynccontextmanager
async def commit_signal(db_url: str) -> AsyncIterator[CommitSignal]:
    """Woken by every batch committed by any host's agent: `logs -f` on PostgreSQL reads
    when there is something to read instead of polling."""
    import asyncpg

    conn = await asyncpg.connect(**_connect_args(db_url))
    signal = CommitSignal()
    await conn.add_listener(COMMITS, signal.notified)
    try:
        yield signal
    finally:
        await conn.close()
