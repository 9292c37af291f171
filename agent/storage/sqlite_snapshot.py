"""A tortoise engine for reading a SQLite store as it is on disk, when nothing else can.

On a full disk with no agent running, SQLite cannot open a WAL store at all: the first reader
must create its `-shm` index, and that write fails ("disk I/O error"). With no `-wal` file
(its last writer closed cleanly, so every commit is in the main file), the file opened
`immutable` is the whole store, read with no lock and no write. `open_db` uses this only then.

Pinned (tests/unit/test_tortoise_private_api.py): tortoise's `SqliteClient` keeps its
connection in `_connection`, sets `row_factory` on aiosqlite's `_conn` and calls
`_post_connect`; this client does the same with a read-only URI and no pragmas (each would
write).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiosqlite
from tortoise.backends.sqlite.client import SqliteClient


class SnapshotClient(SqliteClient):
    """SQLite through `file:…?mode=ro&immutable=1`: reads only, takes no lock."""

    async def create_connection(self, with_db: bool) -> None:
        if not self._connection:
            uri = f"{Path(self.filename).as_uri()}?mode=ro&immutable=1"  # absolute (open_db)
            self._connection = await aiosqlite.connect(uri, uri=True, isolation_level=None)
            self._connection._conn.row_factory = sqlite3.Row
            await self._post_connect()


client_class = SnapshotClient
