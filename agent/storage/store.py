"""LogStorage: the agent's store, open for its life — the writer, agent state, cursors, gaps."""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from functools import partial
from typing import Any, Unpack

import anyio
from tortoise.backends.base.client import BaseDBAsyncClient

from agent.batch import LineBatch, Lost, Source
from agent.cursor import Cursor
from agent.storage.cursors import load_cursor, load_cursors, present
from agent.storage.db import (
    StorageError,
    StoreLocked,
    agent_lock,
    followers_connection,
    open_db,
    sqlite_path,
)
from agent.storage.errors import describe
from agent.storage.generation import StoreRewound
from agent.storage.models import LogLine
from agent.storage.options import DEFAULT_DB_URL
from agent.storage.postgres import HostLock, HostTaken, server_of
from agent.storage.recent import RecentRows
from agent.storage.signal import CommitSignal
from agent.storage.sql import Marks
from agent.storage.state import AgentStateStore
from agent.storage.writer import LogWriter, WriterOptions

log = logging.getLogger("logagent.storage")


class LogStorage:
    """Use as `async with LogStorage(url) as s:`; closing flushes what was queued."""

    def __init__(
        self,
        db_url: str = DEFAULT_DB_URL,
        *,
        host: str | None = None,
        lock_wait: float = 0.0,
        **writer: Unpack[WriterOptions],
    ) -> None:
        self.db_url = db_url
        # PostgreSQL: how long a host lock held by another session is waited for (a new
        # session of this agent, while its old one's connection ends), before refusing.
        self.lock_wait = lock_wait
        self.host = host or socket.gethostname()
        self.writer = LogWriter(self.host, **writer)  # its options and their defaults: there
        self.state = AgentStateStore(self.host, commits=self.writer.sql.commits)
        self.dialect = "sqlite"
        self.gaps_recorded = 0
        self._db: BaseDBAsyncClient | None = None
        self._opened: AbstractAsyncContextManager[BaseDBAsyncClient] | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._lock = AsyncExitStack()  # the store's lock file or host lock, held while open
        self.host_lock: HostLock | None = None  # PostgreSQL
        self._followers: BaseDBAsyncClient | None = None  # SQLite: the followers' reads

    @property
    def recent(self) -> RecentRows | None:
        """The rows the writer just committed, for this host's followers (recent.py); none
        on PostgreSQL."""
        return self.writer.sql.recent if self.dialect == "sqlite" else None

    @property
    def commits(self) -> CommitSignal:
        """Told when this agent commits rows or containers' lives: its followers (the alert
        rules, the forwarders, the search index) wait on it instead of reading the store
        again and again."""
        return self.writer.sql.commits

    async def followers_db(self) -> BaseDBAsyncClient:
        """Where this host's followers read: on SQLite in WAL mode a connection of their own,
        opened at the first ask and closed with the store (db.followers_connection); else,
        or if it cannot be opened (said), `db`: its reads wait for the writer's commits."""
        db = self.db  # the store is open
        if self._followers is not None:
            return self._followers
        self._followers = db
        if self.dialect != "sqlite" or sqlite_path(self.db_url) is None:
            return db
        try:
            _, mode = await db.execute_query("PRAGMA journal_mode")
            _, locking = await db.execute_query("PRAGMA locking_mode")
            if str(mode[0][0]).lower() != "wal" or str(locking[0][0]).lower() != "normal":
                return db  # a reader would hold the writer back, or wait for it for good
            opened = followers_connection(self.db_url)
            self._followers = await self._lock.enter_async_context(opened)
        except Exception as exc:
            log.warning("followers read on the writer's connection: %s", describe(self.db_url, exc))
        return self._followers

    @property
    def db(self) -> BaseDBAsyncClient:
        if self._db is None:
            raise StorageError("storage is not open")
        return self._db

    async def __aenter__(self) -> LogStorage:
        path = sqlite_path(self.db_url)
        self._lock = AsyncExitStack()
        if path is not None:
            if not path.parent.exists():
                path.parent.mkdir(mode=0o700, parents=True)
            self._lock.enter_context(agent_lock(path))
        opened = open_db(self.db_url)
        try:
            self._db = await opened.__aenter__()
        except BaseException:
            await self._lock.aclose()
            raise
        try:
            self.dialect = self._db.capabilities.dialect
            if self.dialect == "postgres":
                await self._hold_host(self._lock)
            await self.state.open(self._db)
            self.writer.open(self.dialect)
            await self.writer.sql.generation.begin(self._db)
            self.state.generation = self.writer.sql.generation
            if self.dialect == "postgres":
                self.writer.server_of = partial(server_of, self._db)
                await self.writer.tell_server()
            self._tg = anyio.create_task_group()
            await self._tg.__aenter__()
            await self._tg.start(self.writer.run)
            self._tg.start_soon(self._beat)
            if self.host_lock is not None:
                self._tg.start_soon(self._keep_host, self.host_lock)
        except BaseException as exc:
            self._db = None
            await opened.__aexit__(type(exc), exc, exc.__traceback__)
            await self._lock.aclose()
            if isinstance(exc, Exception) and not isinstance(exc, StorageError | StoreLocked):
                raise StorageError(f"cannot open database {describe(self.db_url, exc)}") from exc
            raise
        self._opened = opened
        return self

    async def __aexit__(self, *exc: object) -> None:
        tg, opened, self._tg, self._opened = self._tg, self._opened, None, None
        try:
            if tg is not None:
                if self.writer.stats.failing is None:
                    # Shielded: cancelled inside a transaction, tortoise leaves it as the
                    # task's connection, and closing then fails (the thread stays open).
                    with anyio.move_on_after(30, shield=True):
                        await self.writer.flush()
                        await self.state.save(shutdown=True)
                tg.cancel_scope.cancel()
                await tg.__aexit__(None, None, None)
        finally:
            self.writer.close()
            self._db = self._followers = None
            if opened is not None:
                await opened.__aexit__(None, None, None)  # closes even when cancelled
            with anyio.CancelScope(shield=True):
                await self._lock.aclose()
        if self.writer.queued:
            # Not lost: their containers' cursors did not move, so the next start reads them
            # again from Docker (unless Docker no longer has them: then a gap is recorded).
            log.error(
                "storage closed with %d lines not written (%s); they are read again at the "
                "next start",
                self.writer.queued,
                self.writer.stats.failing,
            )

    async def _hold_host(self, stack: AsyncExitStack) -> None:
        """On a shared PostgreSQL, one agent per host name, for the agent's life."""
        lock = HostLock(self.db_url, self.host)
        waited = 0.0
        while not await lock.acquire():
            if waited >= self.lock_wait:
                raise StoreLocked(
                    f"another logagent holds host {self.host!r} on this database: two agents "
                    "under one host name would store every line twice (set storage.host)"
                )
            await anyio.sleep(0.5)
            waited += 0.5
        stack.push_async_callback(lock.close)
        self.host_lock = lock

    async def _beat(self) -> None:
        """The heartbeat; when it finds the store rewound, no more is written (the writer
        closes: collectors waiting on it end, and what they read is read again)."""
        try:
            await self.state.heartbeat()
        except StoreRewound as exc:
            self.writer.stats.failing = str(exc)
            log.error("%s", exc)
            self.writer.close()
            raise

    @staticmethod
    async def _keep_host(lock: HostLock) -> None:
        try:
            await lock.keep()
        except HostTaken as exc:
            raise StoreLocked(str(exc)) from None

    async def write(self, batch: LineBatch) -> None:
        """Queue a batch (waits while the queue is full)."""
        await self.writer.write(batch)

    async def flush(self) -> None:
        await self.writer.flush()

    @property
    def queued(self) -> int:
        return self.writer.queued

    @property
    def failing(self) -> str | None:
        return self.writer.stats.failing

    async def load_cursor(self, container_id: str) -> Cursor:
        """Where the store says a container of this host was read up to."""
        return await load_cursor(self.db, self.host, container_id)

    async def load_cursors(self, container_ids: list[str]) -> dict[str, Cursor]:
        """`load_cursor` of many containers at once (a start-up's listing)."""
        return await load_cursors(self.db, self.host, container_ids)

    async def present(self, before_ns: int) -> list[Sequence[Any]]:
        """This host's containers not shown as removed (cursors.present)."""
        return await present(self.db, self.host, before_ns)

    async def already_stored(self, source: Source, lines: list[tuple[str, int, str]]) -> set[int]:
        """Of these lines (stream, timestamp, text) of a container, the indexes already in
        the store — after committing what is queued, which may hold them."""
        if not lines:
            return set()
        await self.writer.flush()
        source_id = self.writer.sql.ids.get(source.container_id)
        if source_id is None:
            return set()  # nothing of it was committed by this process
        stamps = sorted({t for _, t, _ in lines})
        there: set[tuple[str, int, str]] = set()
        for at in range(0, len(stamps), 500):  # by exact stamps: a clock stepped back by an
            chunk = stamps[at : at + 500]  # hour must not load an hour of rows
            marks = Marks(self.dialect)
            _, rows = await self.db.execute_query(
                f"SELECT stream, timestamp_ns, message FROM {LogLine._meta.db_table} "
                f"WHERE source_id = {marks()} AND timestamp_ns IN ({marks.many(len(chunk))})",
                [source_id, *chunk],
            )
            # A row stored with a NUL (SQLite, before the decoder replaced it) matches the line
            # as the decoder gives it now.
            there.update((str(s), int(t), str(m).replace("\x00", "\ufffd")) for s, t, m in rows)
        return {i for i, line in enumerate(lines) if line in there}

    async def mark(self, source: Source, state: str) -> None:
        """A container's state as the store shows it (removed: by the reconciler)."""
        await self.writer.write(LineBatch(source, state=state))

    async def renamed(self, source: Source, old_name: str) -> None:
        """`docker rename`: the container's row takes its new name (the source's), and keeps
        the one it had (through the writer: committed, or kept until it can be)."""
        if old_name != source.container_name:  # the commit keeps the old in former_names
            await self.writer.write(LineBatch(source))
            log.info("%s (%s) is now named %s", old_name, source.container_id[:12],
                     source.container_name)  # fmt: skip

    async def record_gap(
        self, source: Source, reason: str, *, from_ns: int | None = None, to_ns: int | None = None
    ) -> None:
        """Store that lines of a container are lost for good, and why: through the writer,
        which keeps it until it is committed (a full disk, a store away)."""
        await self.writer.write(LineBatch(source, lost=Lost(reason, from_ns, to_ns)))
        self.gaps_recorded += 1
        log.warning(
            "gap recorded for %s (%s): %s", source.container_name, source.container_id[:12], reason
        )
