"""tortoise's private API that agent/storage/ relies on, pinned.

When BEGIN fails, a pooled transaction has taken a connection that it never gives back;
`_give_back` finds it as `context.client._connection` and the pool as
`context.client._parent._pool`. A tortoise that renames these fails here, not in production
(where the symptom would be a writer waiting forever for a free connection).
"""

from __future__ import annotations

import inspect

from tortoise.backends.asyncpg.client import AsyncpgDBClient, TransactionWrapper
from tortoise.backends.base.client import TransactionContextPooled


def test_a_pooled_transaction_keeps_its_client() -> None:
    assert "client" in TransactionContextPooled.__slots__
    source = inspect.getsource(TransactionContextPooled.__aenter__)
    # The connection is taken before BEGIN, and kept on the client.
    assert source.index("_pool.acquire()") < source.index("begin()")
    assert "self.client._connection = await self.client._parent._pool.acquire()" in source


def test_the_transaction_client_knows_its_parent_and_connection() -> None:
    source = inspect.getsource(TransactionWrapper.__init__)
    assert "self._parent" in source and "self._connection" in source


def test_the_client_holds_its_pool() -> None:
    assert "_pool" in inspect.getsource(AsyncpgDBClient._expire_connections)


def test_aiosqlite_names_its_worker_threads_after_their_function() -> None:
    """agent/storage/db.py (`_connection_threads_ended`) finds aiosqlite's workers by the name
    Python gives a thread after its target: a renamed function fails here."""
    import threading

    from aiosqlite import core

    thread = threading.Thread(target=core._connection_worker_thread, args=(None,))
    assert "_connection_worker_thread" in thread.name
    source = inspect.getsource(core.Connection.__init__)
    assert "target=_connection_worker_thread" in source and "name=" not in source


def test_the_sqlite_client_connects_as_the_snapshot_client_copies() -> None:
    """agent/storage/sqlite_snapshot.py re-does `create_connection` with a read-only URI: it
    keeps tortoise's connection in `_connection`, sets `row_factory` on aiosqlite's `_conn`
    and calls `_post_connect`, as tortoise does. A tortoise that connects otherwise fails
    here."""
    from tortoise.backends.sqlite.client import SqliteClient

    source = inspect.getsource(SqliteClient.create_connection)
    assert "self._connection = await aiosqlite.connect(self.filename" in source
    assert "self._connection._conn.row_factory = sqlite3.Row" in source
    assert "await self._post_connect()" in source


def test_the_pool_is_made_by_create_pool_from_the_client_s_host_and_port() -> None:
    """agent/storage/pg_client.py gives asyncpg every host of a multi-host URL by replacing
    `host` and `port` in what `create_connection` hands `create_pool`."""
    source = inspect.getsource(AsyncpgDBClient.create_connection)
    assert '"host": self.host' in source and '"port": self.port' in source
    assert "self.create_pool(" in source and "**self._template" in source
    params = inspect.signature(AsyncpgDBClient.create_pool).parameters
    assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def test_a_client_opens_a_transaction_of_its_own() -> None:
    """agent/storage/follow.py reads a follower's bound and rows on one connection through
    `_in_transaction` (what tortoise's `in_transaction` calls), a context yielding a client."""
    from tortoise.backends.base.client import TransactionContext

    source = inspect.getsource(AsyncpgDBClient._in_transaction)
    assert "TransactionContextPooled" in source
    assert hasattr(TransactionContext, "__aenter__")


def test_a_transaction_sets_the_task_s_connection_before_begin_with_a_token() -> None:
    """agent/storage/db.py (`_forget`) sets the task's connection back after a failed BEGIN:
    the token `set` returned is `context.token`, `_used` once reset; SQLite's context takes
    its lock (`_trxlock`) before setting it."""
    from tortoise.backends.sqlite.client import SqliteTransactionContext
    from tortoise.connection import ConnectionToken

    for context in (TransactionContextPooled, SqliteTransactionContext):
        assert "token" in context.__slots__
        source = inspect.getsource(context.__aenter__)
        assert source.index("self.token = get_connections().set(") < source.index("begin()")
    source = inspect.getsource(SqliteTransactionContext.__aenter__)
    assert source.index("self._trxlock.acquire()") < source.index("self.token =")
    # ... and opens a closed connection after the lock: db.entered opens it before
    assert source.index("self._trxlock.acquire()") < source.index("self.ensure_connection()")
    assert "_parent.create_connection" in inspect.getsource(SqliteTransactionContext)
    assert "_used" in inspect.getsource(ConnectionToken)
