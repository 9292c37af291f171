"""The alerts' outbox under a destination that is down (no Docker: alerts committed to the
outbox as the rules commit them, the sender posting to a real HTTP server in the test)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import anyio
import pytest

from agent.alerts.rules import parse_alerts
from agent.alerts.runner import AlertRunner
from agent.batch import Line, LineBatch, Source
from agent.storage import LogStorage, outbox
from agent.storage.db import transaction
from agent.storage.follow import committed
from tests.conftest import eventually
from tests.integration.test_alerts import Receiver, receiving

pytestmark = [pytest.mark.anyio]


async def test_a_destination_down_with_hundreds_pending_holds_back_no_other(
    tmp_path: Path,
) -> None:
    """400 alerts wait for `down` (nothing listens there), older than the one for `up`: the
    first failure puts all of `down`'s off together, and `up` gets its alert at the next
    round. (Before, each round tried and put off one of `down`'s, and a page of 50 of them
    came first at every round: `up` waited for good.)"""
    async with receiving(Receiver()) as rx:
        settings = parse_alerts({
            "destinations": [{"name": "down", "url": "http://127.0.0.1:9/hook"},
                             {"name": "up", "url": rx.url}],
            "rules": [{"name": "errors", "match": "ERROR", "destinations": ["down", "up"]}],
        })  # fmt: skip
        made = [
            outbox.Outgoing(f"{n:032d}", "down", "h", "errors", json.dumps({"n": n}))
            for n in range(400)
        ]
        made.append(outbox.Outgoing("u" * 32, "up", "h", "errors", json.dumps({"n": "up"})))
        async with LogStorage(f"sqlite:///{tmp_path}/s.db", host="h") as storage:
            position = await committed(storage.db)
            async with transaction() as conn:
                await outbox.record_step(conn, "alerts:test", position, "{}", made)
            runner = AlertRunner(storage.db, settings, "h")
            async with anyio.create_task_group() as tg:
                await tg.start(runner.run)
                await eventually(lambda: len(rx.got) >= 1)
                tg.cancel_scope.cancel()
            _, waiting = await storage.db.execute_query(
                "SELECT COUNT(*) FROM alert_outbox WHERE destination = 'down' AND status = ?",
                [outbox.PENDING],
            )
    assert [body for _, body in rx.got] == [{"n": "up"}]
    assert waiting[0][0] == 400  # kept, every one, for when it answers


async def test_a_step_that_changes_nothing_of_the_state_does_not_write_it_again(
    tmp_path: Path,
) -> None:
    """The position is committed with each step; the rules' state only when it changed (it
    can be large on a busy host)."""
    settings = parse_alerts({
        "destinations": [{"name": "down", "url": "http://127.0.0.1:9/hook"}],
        "rules": [{"name": "errors", "match": "ERROR", "destinations": ["down"]}],
    })  # fmt: skip
    source = Source("c" * 64, "web-1")

    async def write(storage: LogStorage, text: str) -> None:
        await storage.write(LineBatch.of(source, [Line("stdout", time.time_ns(), "", text)]))
        await storage.flush()

    async def written(storage: LogStorage) -> tuple[int, str]:
        """When the state was last written, and the rules' position."""
        _, state = await storage.db.execute_query("SELECT updated_ns FROM alert_state")
        _, at = await storage.db.execute_query(
            "SELECT position FROM consumer_positions WHERE name LIKE 'alerts:%'"
        )
        return int(state[0][0]), str(at[0][0]) if at else ""

    async with LogStorage(f"sqlite:///{tmp_path}/s.db", host="h") as storage:
        runner = AlertRunner(storage.db, settings, "h", commits=storage.commits)
        async with anyio.create_task_group() as tg:
            await tg.start(runner.run)
            first, at = await written(storage)
            for text in ("fine", "still fine"):
                await write(storage, text)
                with anyio.fail_after(30):
                    while (await written(storage))[1] == at:  # noqa: ASYNC110
                        await anyio.sleep(0.05)
                state_at, at = await written(storage)
                assert state_at == first  # moved on, the state as it was
            await write(storage, "ERROR boom")
            with anyio.fail_after(30):
                while (await written(storage))[0] == first:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
