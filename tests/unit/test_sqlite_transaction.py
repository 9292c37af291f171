"""A SQLite transaction that cannot open its connection leaves nothing held (db.entered)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest
from tortoise import connections

from agent.storage.db import CONNECTION, open_db, transaction


@pytest.mark.anyio
async def test_a_connection_that_fails_to_open_does_not_hold_the_lock_for_ever(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tortoise takes the transaction lock, then opens a closed connection: a failure there
    held the lock, and every later transaction (the writer's next commit) waited for ever."""
    async with open_db(f"sqlite://{tmp_path}/a.db"):
        client: Any = connections.get(CONNECTION)
        await client.close()  # closed, as after a failure; the next transaction reopens it
        reopen = client.create_connection

        async def refused(**kw: Any) -> None:
            raise sqlite3.OperationalError("unable to open database file")

        monkeypatch.setattr(client, "create_connection", refused)
        with pytest.raises(sqlite3.OperationalError):
            async with transaction():
                pass
        monkeypatch.setattr(client, "create_connection", reopen)
        with anyio.fail_after(10):  # before: held by the failed one, a wait for ever
            async with transaction() as conn:
                _, rows = await conn.execute_query("SELECT 1 AS one")
        assert rows[0]["one"] == 1
