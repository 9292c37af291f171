"""A commit whose answer is lost (storage/writer.py `_settle_unsure`), on both backends: the
store's count of this host's commits says whether it was applied, and the writer commits
again exactly what it did not store — a gap is not stored twice, a rate limit's drop not
taken as stored. (The loss is made here: a real server cuts a connection after COMMIT rarely
enough that no test could wait for it.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from agent.batch import Dropped, Line, LineBatch, Lost, Source
from agent.storage import LogStorage
from agent.storage import commit as commit_module
from tests.conftest import eventually, query

pytestmark = [pytest.mark.anyio]
T0 = 1_765_000_000_000_000_000
SOURCE = Source("c" * 64, "web-1")


def losing(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The next commit's transaction fails once: "after" it was applied (its answer lost),
    or "before" anything of it was; set the list's one item to choose."""
    real = commit_module.transaction
    when: list[str] = [""]

    @asynccontextmanager
    async def transaction() -> AsyncIterator[Any]:
        if when[0] == "before":
            when[0] = ""
            raise ConnectionResetError("the connection was cut before the commit")
        async with real() as conn:
            yield conn
        if when[0] == "after":
            when[0] = ""
            raise ConnectionResetError("the commit was applied, its answer lost")

    monkeypatch.setattr(commit_module, "transaction", transaction)
    return when


async def first_line(storage: LogStorage) -> dict[str, tuple[int, int]]:
    batch = LineBatch.of(SOURCE, [Line("stdout", T0, "", "first")])
    batch.position = {"stdout": (T0, 1)}
    await storage.write(batch)
    await storage.flush()
    return batch.position


def gaps(url: str) -> list[str]:
    return [str(r[0]) for r in query(url, "SELECT reason FROM gaps ORDER BY id")]


async def test_a_gap_in_a_commit_whose_answer_was_lost_is_stored_once(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    when = losing(monkeypatch)
    async with LogStorage(store_url, host="h", retry_delay=0.05) as storage:
        await first_line(storage)
        when[0] = "after"
        await storage.record_gap(SOURCE, "lost for a reason", from_ns=T0)
        await storage.flush()
        assert when[0] == ""  # the loss did happen
    assert gaps(store_url) == ["lost for a reason"]


async def test_a_drop_in_a_commit_that_was_not_applied_is_committed_again(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of a rate limit's drop alone keeps the position of the batch before it: by
    positions it looked stored though the commit was not applied, and the drop was lost."""
    when = losing(monkeypatch)
    async with LogStorage(store_url, host="h", retry_delay=0.05) as storage:
        position = await first_line(storage)
        when[0] = "before"
        drop = LineBatch(SOURCE, position=position)
        drop.dropped = Dropped(T0 + 1, T0 + 9, 40, "rate limit: 40 lines dropped")
        await storage.write(drop)
        await storage.flush()
        assert when[0] == ""
    assert gaps(store_url) == ["rate limit: 40 lines dropped"]


async def test_batches_queued_while_the_writer_waits_to_retry_are_stored(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit applied, its answer lost; while the writer waits to try again, a line and a
    rate limit's drop (which keeps the position before it) are queued. Only what the
    failed commit was about is taken as stored: the line queued since was once counted
    stored and never written, and the drop looked stored by its position (a review's
    findings)."""
    when = losing(monkeypatch)
    async with LogStorage(store_url, host="h", retry_delay=0.3) as storage:
        await first_line(storage)
        when[0] = "after"
        second = LineBatch.of(SOURCE, [Line("stdout", T0 + 1, "", "second")])
        second.position = {"stdout": (T0 + 1, 1)}
        await storage.write(second)
        await eventually(lambda: not when[0])  # the commit of `second` tried, answer lost
        third = LineBatch.of(SOURCE, [Line("stdout", T0 + 2, "", "third")])
        third.position = {"stdout": (T0 + 2, 1)}
        await storage.write(third)
        drop = LineBatch(SOURCE, position=third.position)
        drop.dropped = Dropped(T0 + 3, T0 + 9, 40, "rate limit: 40 lines dropped")
        await storage.write(drop)
        await storage.flush()
    lines = query(store_url, "SELECT message FROM log_lines ORDER BY id")
    assert [str(m) for (m,) in lines] == ["first", "second", "third"]
    assert gaps(store_url) == ["rate limit: 40 lines dropped"]


async def test_a_refused_batch_and_its_own_gap_are_one_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch the store refuses is set aside as a gap, with its position; a gap of its own
    went in a second commit. The answer of the first lost (it was applied) left the batch
    settled and its own gap never stored; the second not applied stored the refusal twice
    (a review's findings). One commit now holds both. (SQLite: a stamp past BIGINT.)"""
    url = f"sqlite:///{tmp_path / 'logs.db'}"
    real = commit_module.transaction
    counted = {"n": 0, "lose": -1}

    @asynccontextmanager
    async def transaction() -> AsyncIterator[Any]:
        counted["n"] += 1
        async with real() as conn:
            yield conn
        if counted["n"] == counted["lose"]:
            raise ConnectionResetError("the commit was applied, its answer lost")

    monkeypatch.setattr(commit_module, "transaction", transaction)
    async with LogStorage(url, host="h", retry_delay=0.05) as storage:
        await first_line(storage)
        # the next transactions: all held (refused), the batch alone (refused), its gaps
        counted["lose"] = counted["n"] + 3
        bad = LineBatch.of(SOURCE, [Line("stdout", 2**63 + 5, "", "past BIGINT")])
        bad.position = {"stdout": (T0 + 1, 1)}
        bad.lost = Lost("its own gap", T0, T0 + 1)
        await storage.write(bad)
        await storage.flush()
        assert counted["n"] >= counted["lose"]  # the loss did happen
    said = gaps(url)
    assert (
        len(said) == 2
        and said[0].startswith("1 lines the store refuses")
        and (said[1] == "its own gap")
    ), said
