"""The store's connection: one tortoise context per user, shared by the writer and the read side.

tortoise keeps global state; a `TortoiseContext` of our own per opened store keeps two stores
(a test's, the agent's and `logagent logs`') apart in one process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.backends.base.config_generator import expand_db_url
from tortoise.context import TortoiseContext

from agent.storage.schema import create_schema

DEFAULT_DB_URL = "sqlite://data/logagent.db"
CONNECTION = "default"  # the tortoise connection name every query of ours uses
# SQLite's own habits: WAL (tortoise's default), readers never block the writer and a busy
# writer makes readers wait rather than fail; NORMAL sync is crash-safe for the process in WAL.
# auto_vacuum=INCREMENTAL lets retention shrink the file; SQLite takes it only before the
# first table and before journal_mode=WAL, and tortoise applies pragmas in this dict's order.
_SQLITE_FIRST = {"auto_vacuum": "INCREMENTAL"}
_SQLITE_PRAGMAS = {"busy_timeout": 5000, "synchronous": "NORMAL"}
_MODELS = ["agent.storage.models"]


class StorageError(Exception):
    """The store cannot be opened or written; the message says which and why."""


def tortoise_config(db_url: str) -> dict[str, Any]:
    try:
        conn = expand_db_url(db_url)
    except Exception as exc:
        raise StorageError(f"database URL {db_url!r} is not usable: {exc}") from exc
    if conn["engine"] == "tortoise.backends.sqlite":
        creds = {**_SQLITE_FIRST, **conn["credentials"]}
        for key, value in _SQLITE_PRAGMAS.items():
            creds.setdefault(key, value)
        conn["credentials"] = creds
        path = creds["file_path"]
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    return {
        "connections": {CONNECTION: conn},
        "apps": {"logagent": {"models": _MODELS, "default_connection": CONNECTION}},
    }


@asynccontextmanager
async def open_db(db_url: str) -> AsyncIterator[BaseDBAsyncClient]:
    """The store, its schema created or upgraded; closed on every exit path.

    Any failure to open or upgrade (a full disk: a raw sqlite3 error from tortoise's commit)
    is the store's, said once as a StorageError.
    """
    ctx = TortoiseContext()
    await ctx.__aenter__()
    try:
        try:
            await ctx.init(config=tortoise_config(db_url))
            await create_schema(ctx)
        except StorageError:
            raise
        except Exception as exc:
            raise StorageError(f"cannot open database {db_url!r}: {exc}") from exc
        yield ctx.db()
    finally:
        # Even when cancelled: aiosqlite's thread is not a daemon, and a connection left
        # open keeps the whole process from exiting.
        with anyio.CancelScope(shield=True):
            await ctx.__aexit__(None, None, None)
