"""The follow seam for consumers (storage/consumers.py): a position of its own, committed
with what it did, so that a restarted consumer reads exactly what it had not acted on."""

from __future__ import annotations

import pytest

from agent.batch import Line
from agent.storage import LogStorage
from agent.storage.consumers import BadConsumer, load, save
from agent.storage.db import transaction
from agent.storage.follow import Position, committed, newer
from agent.storage.reader import LogFilter
from tests.conftest import execute, write_line

pytestmark = [pytest.mark.anyio]
T0 = 1_700_000_000_000_000_000


async def act_on_new_rows(storage: LogStorage, name: str) -> list[str]:
    """A consumer's step: read what is committed past its position, act (here: collect the
    messages), and commit the position with the act."""
    after = await load(storage.db, name) or Position()
    rows, reached = await newer(storage.db, LogFilter(), after, await committed(storage.db))
    async with transaction() as conn:
        await save(conn, name, reached)
    return [r.message for r in rows]


async def test_a_consumer_resumes_at_its_own_position_after_a_restart(store_url: str) -> None:
    async with LogStorage(store_url, host="h") as storage:
        for i in range(3):
            await write_line(storage, "a" * 64, "app", Line("stdout", T0 + i, "", f"a{i}", 0, 2))
        await storage.flush()
        assert await act_on_new_rows(storage, "alerts") == ["a0", "a1", "a2"]
        assert await act_on_new_rows(storage, "alerts") == []
    async with LogStorage(store_url, host="h") as storage:  # written while it was "down"
        await write_line(storage, "a" * 64, "app", Line("stdout", T0 + 3, "", "a3", 0, 2))
        await storage.flush()
        assert await act_on_new_rows(storage, "alerts") == ["a3"]
        # Another consumer has a position of its own, from the start.
        assert await act_on_new_rows(storage, "forward.syslog") == ["a0", "a1", "a2", "a3"]


async def test_a_position_saved_in_a_failed_transaction_does_not_move(store_url: str) -> None:
    async with LogStorage(store_url, host="h") as storage:
        await write_line(storage, "a" * 64, "app", Line("stdout", T0, "", "a0", 0, 2))
        await storage.flush()
        reached = await committed(storage.db)  # (not inside: SQLite's one connection)
        with pytest.raises(RuntimeError, match="the act failed"):
            async with transaction() as conn:
                await save(conn, "alerts", reached)
                raise RuntimeError("the act failed")
        assert await load(storage.db, "alerts") is None
        assert await act_on_new_rows(storage, "alerts") == ["a0"]


async def test_bad_names_and_stored_positions_are_refused_with_why(store_url: str) -> None:
    async with LogStorage(store_url, host="h") as storage:
        with pytest.raises(BadConsumer, match="consumer name"):
            await load(storage.db, "Robert'); DROP TABLE log_lines;--")
        execute(
            store_url,
            "INSERT INTO consumer_positions (name, position, updated_ns) VALUES ('x', '!!', 0)",
        )
        with pytest.raises(BadConsumer, match="consumer x: its stored position is unusable"):
            await load(storage.db, "x")
