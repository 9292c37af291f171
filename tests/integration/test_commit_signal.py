"""The store's followers in the agent wait for its commits (LogStorage.commits) instead of
reading the store again and again: idle, they read nothing; a committed line, or a
container's death stored with the events position, wakes them at once. IDLE_S (their read
in case) is set to an hour here, so only the signal can have woken them."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from agent.alerts import runner as alerts_runner
from agent.alerts.rules import parse_alerts
from agent.batch import Line, LineBatch, Source
from agent.docker.life_events import LifeEvent
from agent.forward import runner as forward_runner
from agent.forward.runner import Forwarder
from agent.forward.settings import Destination
from agent.storage import LogStorage
from agent.storage import commit as commit_module
from agent.storage.follow import Position
from tests.conftest import eventually

pytestmark = [pytest.mark.anyio]
CID = "c" * 64


def counting(monkeypatch: pytest.MonkeyPatch, module: Any) -> list[int]:
    """Each read of the committed bound by `module` (a step of its follower), counted."""
    reads = [0]
    real: Callable[..., Any] = module.committed

    async def committed(db: Any) -> Position:
        reads[0] += 1
        return await real(db)  # type: ignore[no-any-return]

    monkeypatch.setattr(module, "committed", committed)
    return reads


async def write(storage: LogStorage, text: str) -> None:
    """A line and its position, as a collector's batch has (a commit whose answer was lost
    is found stored by its position)."""
    now = time.time_ns()
    batch = LineBatch.of(Source(CID, "web-1"), [Line("stdout", now, "", text)])
    batch.position = {"stdout": (now, 1)}
    await storage.write(batch)
    await storage.flush()


async def outbox_rules(storage: LogStorage) -> list[str]:
    _, rows = await storage.db.execute_query("SELECT rule FROM alert_outbox ORDER BY id")
    return [str(r[0]) for r in rows]


async def until_outbox(storage: LogStorage, rules: list[str]) -> None:
    with anyio.fail_after(30):
        while await outbox_rules(storage) != rules:  # noqa: ASYNC110 (the store cannot tell)
            await anyio.sleep(0.05)


async def test_idle_rules_read_nothing_and_a_line_or_a_death_wakes_them(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(alerts_runner, "IDLE_S", 3600.0)
    reads = counting(monkeypatch, alerts_runner)
    settings = parse_alerts({
        "destinations": [{"name": "hook", "url": "http://127.0.0.1:9/hook"}],
        "rules": [{"name": "errors", "match": "ERROR", "destinations": ["hook"]},
                  {"name": "died", "event": "die", "destinations": ["hook"]}],
    })  # fmt: skip
    async with LogStorage(store_url, host="h") as storage:
        await write(storage, "started")
        rules = alerts_runner.AlertRunner(
            storage.db, settings, "h", recent=storage.recent,
            reader=await storage.followers_db(), commits=storage.commits,
        )  # fmt: skip
        async with anyio.create_task_group() as tg:
            await tg.start(rules.run)
            await eventually(lambda: reads[0] >= 1)  # its first step: nothing to do
            before = reads[0]
            await anyio.sleep(1.0)  # polling (every 0.35 s before) would read 2-3 times
            assert reads[0] - before <= 1  # (the first step's, if it was not done yet)
            await write(storage, "ERROR payment declined")
            await until_outbox(storage, ["errors"])
            storage.state.handled(time.time_ns(), LifeEvent(CID, "web-1", time.time_ns(), "die", 3))
            await storage.state.save()  # as the heartbeat does: the lives, then the signal
            await until_outbox(storage, ["errors", "died"])
            tg.cancel_scope.cancel()


@asynccontextmanager
async def forwarding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[LogStorage, Forwarder]]:
    """A store and a forwarder woken by its commits (to an NDJSON file, a 10 ms linger), its
    first line `one` sent; stopped when the block ends."""
    monkeypatch.setattr(forward_runner, "IDLE_S", 3600.0)
    d = Destination(name="f", kind="ndjson", path=str(tmp_path / "out.ndjson"), linger_s=0.01,
                    from_start=True)  # fmt: skip
    async with LogStorage(f"sqlite:///{tmp_path}/s.db", host="h") as storage:
        forwarder = Forwarder(storage.db, "h", d, commits=storage.commits)
        async with anyio.create_task_group() as tg:
            await tg.start(forwarder.run)
            await write(storage, "one")
            await eventually(lambda: forwarder.stats.sent == 1)
            yield storage, forwarder
            tg.cancel_scope.cancel()


async def test_an_idle_forwarder_reads_nothing_and_a_commit_wakes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = counting(monkeypatch, forward_runner)
    async with forwarding(tmp_path, monkeypatch) as (storage, forwarder):
        before = reads[0]
        await anyio.sleep(1.0)  # a linger of 10 ms polled 100 times a second before
        assert reads[0] - before <= 1  # the step after the send: nothing, then a wait
        await write(storage, "two")
        await eventually(lambda: forwarder.stats.sent == 2)
    assert (tmp_path / "out.ndjson").read_text().count("\n") == 2


async def test_rows_of_a_commit_whose_answer_was_lost_wake_the_followers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit is applied, its answer lost: the writer finds it stored when it tries
    again, and its rows were never told until then."""
    real = commit_module.transaction
    lose = [False]

    @asynccontextmanager
    async def answer_lost() -> AsyncIterator[Any]:
        async with real() as conn:
            yield conn
        if lose[0]:
            lose[0] = False
            raise ConnectionResetError("the commit was applied, its answer lost")

    monkeypatch.setattr(commit_module, "transaction", answer_lost)
    async with forwarding(tmp_path, monkeypatch) as (storage, forwarder):
        lose[0] = True
        await write(storage, "two")
        await eventually(lambda: forwarder.stats.sent == 2)
