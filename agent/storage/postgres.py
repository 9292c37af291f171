"""What only PostgreSQL needs: its advisory locks, on a connection of their own.

Many hosts' agents share one database, so two things are serialised there, not in a file:
one agent per host name (a session lock held for the agent's life: a second agent claiming
the same host would store every line twice), and the schema's creation or upgrade (ten agents
starting at once must not race on CREATE TABLE).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from tortoise.backends.base.config_generator import expand_db_url

from agent.storage.errors import wrapped
from agent.storage.pg_url import split_hosts
from agent.storage.signal import CommitSignal

LOCK_NOT_AVAILABLE = "55P03"
FEATURE_NOT_SUPPORTED = "0A000"  # LISTEN on a standby in recovery
INVALID_REGULAR_EXPRESSION = "2201B"
QUERY_CANCELED = "57014"  # statement_timeout ran out (or a cancel)


def sqlstate(exc: BaseException) -> str | None:
    """PostgreSQL's error code of `exc` or of what it wraps (tortoise wraps asyncpg's)."""
    for seen in wrapped(exc):
        if isinstance(code := getattr(seen, "sqlstate", None), str):
            return code
    return None


log = logging.getLogger("logagent.storage")

_SCHEMA_KEY = 0x6C6F_6761_6765_6E74  # "logagent": the schema lock's key


def _connect_args(db_url: str, *, writer: bool = True) -> dict[str, Any]:
    """asyncpg's arguments: every host of the URL; the writer's locks on the primary."""
    single, hosts = split_hosts(db_url)
    creds = expand_db_url(single)["credentials"]
    args = {
        "host": [h for h, _ in hosts] or creds.get("host"),
        "port": [p for _, p in hosts] or creds.get("port"),
        "user": creds.get("user"),
        "password": creds.get("password"),
        "database": creds.get("database"),
    }
    if writer:
        args["target_session_attrs"] = "read-write"
    return args


@asynccontextmanager
async def schema_lock(db_url: str) -> AsyncIterator[None]:
    """Held (waited for) while the schema is created or upgraded, on a connection of its own."""
    import asyncpg  # only a PostgreSQL store loads it (a SQLite agent is ~1 MB smaller)

    conn = await asyncpg.connect(**_connect_args(db_url))
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _SCHEMA_KEY)
        yield
    finally:
        await conn.close()  # the session ends: its locks go with it


# The server a connection reached, as `status` says it (a Unix socket has no address).
SERVER_SQL = "COALESCE(host(inet_server_addr()) || ':' || inet_server_port(), 'local socket')"


async def server_of(db: Any) -> str:
    """The server a connection of `db` reached (after a failover: the promoted standby)."""
    _, rows = await db.execute_query(f"SELECT {SERVER_SQL}")
    return str(rows[0][0])


class HostLock:
    """One agent per host name on a shared store, for the agent's life: an advisory lock on
    a connection of its own. A cut connection (a restart, a proxy, pg_terminate_backend)
    lets the lock go; `keep` takes it again — or, if another agent took the name meanwhile,
    raises HostTaken, which stops this agent (two would store every line twice)."""

    def __init__(self, db_url: str, host: str) -> None:
        self.db_url = db_url
        self.host = host
        self._conn: Any = None
        self.retaken = 0

    async def acquire(self) -> bool:
        import asyncpg

        conn = await asyncpg.connect(**_connect_args(self.db_url))
        try:
            had = bool(
                await conn.fetchval(
                    "SELECT pg_try_advisory_lock(hashtextextended($1, 0))", f"logagent:{self.host}"
                )
            )
        except BaseException:
            await conn.close()
            raise
        if not had:
            await conn.close()
            return False
        self._conn = conn
        return True

    async def keep(self, interval: float = 2.0) -> None:
        """Check the lock's connection every `interval` s; take the lock again when it was
        cut (while the database is down, at the next check)."""
        while True:
            await anyio.sleep(interval)
            if await self._alive():
                continue
            await self._drop()
            try:
                had = await self.acquire()
            except Exception as exc:  # the database is down: the writer says so, try later
                log.debug("host lock: cannot connect yet: %s", exc)
                continue
            if not had:
                raise HostTaken(
                    f"another logagent took host {self.host!r} on this database while this "
                    "one's connection was cut: stopping (two would store every line twice)"
                )
            self.retaken += 1
            log.warning("host lock for %r taken again after its connection was cut", self.host)

    async def _alive(self) -> bool:
        if self._conn is None or self._conn.is_closed():
            return False
        try:
            with anyio.fail_after(10):
                await self._conn.fetchval("SELECT 1")
        except Exception:
            return False
        return True

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()  # no goodbye to a dead server

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await conn.close()  # the session ends: its lock goes with it


class HostTaken(Exception):
    """This host's name was claimed by another agent while our lock's connection was cut."""


COMMITS = "logagent_commits"  # the channel: one notification per committed batch


@asynccontextmanager
async def commit_signal(db_url: str) -> AsyncIterator[CommitSignal]:
    """Woken by every batch committed by any host's agent: `logs -f` on PostgreSQL reads
    when there is something to read instead of polling."""
    import asyncpg

    conn = await asyncpg.connect(**_connect_args(db_url, writer=False))
    signal = CommitSignal()
    await conn.add_listener(COMMITS, signal.notified)
    try:
        yield signal
    finally:
        await conn.close()
