"""The store's connection: one tortoise context per user, shared by the writer and the read side.

tortoise keeps global state; a `TortoiseContext` of our own per opened store keeps two stores
(a test's, the agent's and `logagent logs`') apart in one process.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import (
    AbstractAsyncContextManager,
    asynccontextmanager,
    contextmanager,
    suppress,
)
from functools import partial
from pathlib import Path
from typing import Any, TextIO, TypeVar

import anyio
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.backends.base.config_generator import expand_db_url
from tortoise.connection import get_connections
from tortoise.context import TortoiseContext
from tortoise.transactions import in_transaction

from agent.redact import redact
from agent.storage.errors import describe, wrapped
from agent.storage.pg_url import split_hosts, with_hosts
from agent.storage.postgres import schema_lock
from agent.storage.schema import create_schema

T = TypeVar("T")
log = logging.getLogger("logagent.storage")
CONNECTION = "default"  # the tortoise connection name every query of ours uses
# SQLite's own habits: WAL (tortoise's default), readers never block the writer and a busy
# writer makes readers wait rather than fail; NORMAL sync is crash-safe for the process in WAL.
# auto_vacuum=INCREMENTAL lets retention shrink the file; SQLite takes it only before the
# first table and before journal_mode=WAL, and tortoise applies pragmas in this dict's order.
# The WAL is copied into the database every 10,000 pages (40 MiB), not SQLite's 1,000: with
# 100 busy containers each commit rewrites each one's index leaf, and a page rewritten
# between two checkpoints is copied once (the SQLite thread: 6.4 to 5.2 µs a line; the WAL
# file then stays near 40 MiB on disk).
_SQLITE_FIRST = {"auto_vacuum": "INCREMENTAL"}
_SQLITE_PRAGMAS = {"busy_timeout": 5000, "synchronous": "NORMAL", "wal_autocheckpoint": 10000}
_MODELS = ["agent.storage.models"]


class StorageError(Exception):
    """The store cannot be opened or written; the message says which and why."""


class StoreLocked(StorageError):
    """Another agent writes to this store: two would store every line twice."""


# SQLite result codes after which writing again cannot help (sqlite3's `sqlite_errorcode`).
_FATAL_SQLITE = {
    3: "SQLITE_PERM",
    8: "SQLITE_READONLY",
    11: "SQLITE_CORRUPT",
    14: "SQLITE_CANTOPEN",
    23: "SQLITE_AUTH",
    26: "SQLITE_NOTADB",
}


# SQLite result codes of a statement refused for its values: SQLITE_TOOBIG, SQLITE_MISMATCH,
# SQLITE_RANGE.
_REFUSED_SQLITE = {18: "SQLITE_TOOBIG", 20: "SQLITE_MISMATCH", 25: "SQLITE_RANGE"}


def refused(exc: BaseException) -> str | None:
    """Why the store refuses these values for good, if that is what `exc` says: PostgreSQL's
    data exceptions (SQLSTATE class 22: a NUL byte, a value too long or out of range), an
    integer SQLite cannot hold. Retrying the same rows cannot help; other rows may pass."""
    for seen in wrapped(exc):
        if isinstance(seen, OverflowError):
            return f"a number out of the store's range ({seen})"
        code = getattr(seen, "sqlstate", None)
        if isinstance(code, str) and code.startswith("22"):
            return f"{seen} (SQLSTATE {code})"
        sqlite_code = getattr(seen, "sqlite_errorcode", None)
        if sqlite_code is not None and (name := _REFUSED_SQLITE.get(sqlite_code & 0xFF)):
            return f"{seen} ({name})"
    return None


def fatal(exc: BaseException) -> str | None:
    """The SQLite code name if `exc` (or what it wraps) says the store is unusable for good."""
    for seen in wrapped(exc):
        code = getattr(seen, "sqlite_errorcode", None)
        if code is not None:
            return _FATAL_SQLITE.get(code & 0xFF)
    return None


def transaction() -> AbstractAsyncContextManager[BaseDBAsyncClient]:
    """tortoise's `in_transaction` on our connection, without its leaks (`entered`)."""
    return entered(in_transaction(CONNECTION))


@asynccontextmanager
async def entered(context: Any) -> AsyncIterator[BaseDBAsyncClient]:
    """A tortoise transaction context, entered and left without its leaks.

    On PostgreSQL, tortoise's pooled transaction takes a connection from the pool, makes
    itself the task's connection, then sends BEGIN; when BEGIN fails (the server cut that
    connection a moment before) it neither gives the connection back nor stops being the
    task's connection. After a few such cuts every query waits forever for a free one (seen:
    the writer stuck for good), and every later transaction of the task runs nested on the
    dead one (seen: a forwarder's position never saved, its batch sent again and again). So
    a failed start gives the connection back and the task its own again; so does a failed
    end (the release can raise before tortoise resets the task's connection).

    SQLite's context takes its lock and then opens the connection if it is closed: a failure
    to open would hold the lock for good (every later transaction waiting), and from outside
    that lock cannot be told from another transaction's. So the connection is opened here
    first, before the lock is taken (tortoise's own step, which then finds it open)."""
    if getattr(context, "_trxlock", None) is not None:
        await context.ensure_connection()
    try:
        conn = await context.__aenter__()
    except BaseException:
        with anyio.CancelScope(shield=True):
            await _give_back(context)
        _forget(context)
        raise
    try:
        yield conn
    except BaseException as exc:
        try:
            await context.__aexit__(type(exc), exc, exc.__traceback__)
        finally:
            _forget(context)
        raise
    try:
        await context.__aexit__(None, None, None)
    finally:
        _forget(context)


def _forget(context: object) -> None:
    """The task's connection as it was before the transaction, when tortoise did not set it
    back (a failed BEGIN, a failed release); and SQLite's transaction lock, taken before the
    connection was set, released (a failed BEGIN would hold it for ever). tortoise's private
    API, pinned by tests/unit/test_tortoise_private_api.py: the token `set` returned, kept
    as `context.token`, `_used` once reset; SQLite's lock as `context._trxlock`."""
    token = getattr(context, "token", None)
    if token is None or getattr(token, "_used", False):
        return  # never set, or set back by tortoise
    with suppress(ValueError, RuntimeError):  # set in another context: nothing to undo here
        get_connections().reset(token)
    lock = getattr(context, "_trxlock", None)
    if lock is not None and lock.locked():
        lock.release()


async def _give_back(context: object) -> None:
    """tortoise's private API (pinned by tests/unit/test_tortoise_private_api.py; the other
    uses are listed in docs/architecture.md): a pooled transaction keeps its client in
    `client`, the connection it took in `client._connection`, and the pool in
    `client._parent._pool` (tortoise 1.1)."""
    client = getattr(context, "client", None)
    pool = getattr(getattr(client, "_parent", None), "_pool", None)
    connection = getattr(client, "_connection", None)
    if pool is None or connection is None:
        return  # SQLite, or the pool gave nothing
    try:
        with anyio.fail_after(10):
            await pool.release(connection)
    except Exception:  # a connection that cannot even be reset: the pool makes a new one
        connection.terminate()
        await pool.release(connection)


async def in_child_task(work: Callable[[], Awaitable[T]]) -> T:
    """Run `work` in a task of its own, for a long-lived task's database work.

    tortoise makes a transaction the task's connection and sets it back in a `finally` that
    first releases the connection to the pool; when PostgreSQL cut the connection the
    release can raise before that, and every later transaction of the task then runs on the
    dead connection (seen: "connection has been released back to the pool", for good). A
    child task's connection dies with the child.
    """
    done: list[T] = []
    failed: list[Exception] = []

    async def run() -> None:
        try:
            done.append(await work())
        except Exception as exc:
            failed.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
    if failed:
        raise failed[0]
    return done[0]


def expanded(db_url: str, *, writer: bool = False) -> dict[str, Any]:
    """tortoise's connection of a URL; a PostgreSQL one of several hosts through our engine
    (storage/pg_client.py). The writer's connects only to a server that takes writes: after
    a failover, to the promoted standby (libpq's `target_session_attrs=read-write`)."""
    single, hosts = split_hosts(db_url)
    conn = expand_db_url(single)
    if conn["engine"] == "tortoise.backends.asyncpg":
        creds = with_hosts(conn["credentials"], hosts)
        if writer:
            creds["target_session_attrs"] = "read-write"
        if "hosts" in creds:
            conn["engine"] = "agent.storage.pg_client"
        conn["credentials"] = creds
    return conn


@asynccontextmanager
async def followers_connection(db_url: str) -> AsyncIterator[BaseDBAsyncClient]:
    """SQLite: a connection of the followers' own, for their reads. On the writer's, each
    read waits for the writer's whole transaction (tortoise holds the connection's lock for
    it): a step of the alert rules made four or five such waits on a firehose and fell
    behind what the writer holds for it (storage/recent.py), then read back from the store.
    In WAL mode a reader neither waits for the writer nor stops it, and each read sees what
    was committed when it began. Writes stay on the writer's connection; its options are
    the store's (a read side's: none that writes)."""
    from tortoise.backends.sqlite.client import SqliteClient

    options = tortoise_config(db_url, create=False)["connections"][CONNECTION]["credentials"]
    client = SqliteClient(**{**options, "connection_name": "followers"})
    try:
        await client.create_connection(with_db=True)
        yield client
    finally:
        with anyio.CancelScope(shield=True):  # its thread is not a daemon: always closed
            await client.close()


def sqlite_path(db_url: str) -> Path | None:
    """The file of a SQLite store (None for another database, or an in-memory one)."""
    try:
        conn = expanded(db_url)
    except Exception as exc:
        url, said = redact(db_url), redact(str(exc), db_url)
        raise StorageError(f"database URL {url!r} is not usable: {said}") from exc
    if conn["engine"] != "tortoise.backends.sqlite":
        return None
    path = str(conn["credentials"]["file_path"])
    return None if path == ":memory:" else Path(path).resolve()


async def _set_timeout(ms: int, connection: Any) -> None:
    await connection.execute(f"SET statement_timeout = {int(ms)}")


def tortoise_config(
    db_url: str, *, create: bool = True, statement_timeout_s: float | None = None
) -> dict[str, Any]:
    """`create=False` (the read side) sets no pragma that writes: `auto_vacuum` writes the
    header even when unchanged, and fails on a full disk, where reading must still work.
    `statement_timeout_s`: PostgreSQL's statement_timeout for every connection of the pool."""
    conn = expanded(db_url, writer=create)
    if statement_timeout_s is not None and conn["engine"] != "tortoise.backends.sqlite":
        # SET at each acquire (asyncpg's pool `setup`: its release runs RESET ALL), not as a
        # startup parameter, which PgBouncer refuses unless told to ignore it
        # (docs/scaling.md puts it in front)
        conn["credentials"]["setup"] = partial(
            _set_timeout, max(1, int(statement_timeout_s * 1000))
        )
    if conn["engine"] == "tortoise.backends.sqlite":
        creds = {**(_SQLITE_FIRST if create else {}), **conn["credentials"]}
        for key, value in _SQLITE_PRAGMAS.items():
            creds.setdefault(key, value)
        conn["credentials"] = creds
    return {
        "connections": {CONNECTION: conn},
        "apps": {"logagent": {"models": _MODELS, "default_connection": CONNECTION}},
    }


@contextmanager
def _private_files() -> Iterator[None]:
    """Files created meanwhile are the agent user's alone (SQLite gives its -wal and -shm
    files the database file's own mode)."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def _make_private(path: Path) -> None:
    """A store made by an older logagent (0644): every secret a container printed was
    readable by any local user. Narrow it, and its WAL files, to the owner."""
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            if file.stat().st_mode & 0o077:
                file.chmod(0o600)
        except FileNotFoundError:
            continue


def _lock_file(path: Path) -> Path:
    """The file an agent holds locked for as long as it writes the store at `path`."""
    return Path(f"{path}.lock")


@contextmanager
def agent_lock(path: Path) -> Iterator[None]:
    """Held for the writer's life: a second agent on the same store refuses to start."""
    lock = _lock_file(path)
    with _private_files():
        handle: TextIO = open(lock, "a+")  # noqa: SIM115 (held, closed in finally)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise StoreLocked(
                f"another logagent (pid {holder}) is writing to {path}: two agents on one "
                "store would store every line twice"
            ) from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()  # releases the lock


async def _connection_threads_ended(before: set[threading.Thread]) -> None:
    """aiosqlite, when its connect fails, queues its worker's stop without awaiting it
    (omnilib/aiosqlite#241): if the loop closes first, the worker's answer finds it closed
    and prints a traceback after our one-line error (3 runs in 20 on a busy machine). The
    workers started since `before` are let finish while the loop still runs."""
    for thread in set(threading.enumerate()) - before:
        if "_connection_worker_thread" in thread.name:  # aiosqlite's: Thread-N (<target>)
            await anyio.to_thread.run_sync(thread.join, 5.0)


def _sqlite_failed(exc: BaseException) -> bool:
    """SQLite itself failed (not our schema check): what it wraps holds a sqlite3 error."""
    return any(isinstance(inner, sqlite3.Error) for inner in wrapped(exc))


def _writer_holds(path: Path) -> bool:
    """Whether an agent holds the store's lock (agent_lock): then it is being written, and
    an immutable read could show stale or torn pages. Opened without creating it."""
    try:
        handle = open(_lock_file(path))  # noqa: SIM115 (closed below)
    except FileNotFoundError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def _whole_in_its_file(path: Path) -> bool:
    """No WAL with commits in it: its last writer closed, every commit is in the file."""
    try:
        return Path(f"{path}-wal").stat().st_size == 0
    except FileNotFoundError:
        return True


def _snapshot_config(path: Path) -> dict[str, Any]:
    """The read side's last resort (agent/storage/sqlite_snapshot.py): on a full disk, SQLite
    cannot create the `-shm` file a WAL store's first reader needs."""
    conn = {"engine": "agent.storage.sqlite_snapshot", "credentials": {"file_path": str(path)}}
    return {
        "connections": {CONNECTION: conn},
        "apps": {"logagent": {"models": _MODELS, "default_connection": CONNECTION}},
    }


@asynccontextmanager
async def open_db(
    db_url: str,
    *,
    create: bool = True,
    snapshot_ok: bool = False,
    statement_timeout_s: float | None = None,
) -> AsyncIterator[BaseDBAsyncClient]:
    """The store, its schema created or upgraded; closed on every exit path.

    `create=False` (the read side): a store that is not there is an error, not a new empty
    file, and an old one is not upgraded. Any failure to open or upgrade (a full disk: a raw
    sqlite3 error from tortoise's commit) is the store's, said once as a StorageError.
    """
    path = sqlite_path(db_url)
    if path is not None:
        if not create and not path.exists():
            raise StorageError(f"no store at {path}: is storage.db_url (LOGAGENT_DB_URL) right?")
        if create and not path.parent.exists():
            path.parent.mkdir(mode=0o700, parents=True)
    ctx = TortoiseContext()
    await ctx.__aenter__()
    threads = set(threading.enumerate())
    try:
        try:
            with _private_files():
                config = tortoise_config(
                    db_url, create=create, statement_timeout_s=statement_timeout_s
                )
                await ctx.init(config=config)
                if create and ctx.db().capabilities.dialect == "postgres":
                    async with schema_lock(db_url):  # one agent at a time creates it
                        await create_schema(ctx)
                else:
                    await create_schema(ctx, upgrade=create)
                if path is not None:
                    _make_private(path)
        except StorageError:
            raise
        except Exception as exc:
            await _connection_threads_ended(threads)
            failed = StorageError(f"cannot open database {describe(db_url, exc)}")
            if not snapshot_ok or path is None or not _sqlite_failed(exc):
                raise failed from exc
            if not _whole_in_its_file(path) or _writer_holds(path):
                raise failed from exc
            try:
                await ctx.__aexit__(None, None, None)
                ctx = TortoiseContext()
                await ctx.__aenter__()
                await ctx.init(config=_snapshot_config(path))
                await create_schema(ctx, upgrade=False)
            except Exception:
                await _connection_threads_ended(threads)
                raise failed from exc
            log.warning(
                "logagent: %s; no agent holds it, so it is read as it is on disk "
                "(without locks: lines stored from now on are not seen)",
                failed,
            )
        yield ctx.db()
    finally:
        # Even when cancelled: aiosqlite's thread is not a daemon, and a connection left
        # open keeps the whole process from exiting.
        with anyio.CancelScope(shield=True):
            await ctx.__aexit__(None, None, None)
