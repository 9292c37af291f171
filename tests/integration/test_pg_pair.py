"""The replicated pair of tests/pg_pair.py does what failover tests count on: a standby that
has what was replicated, a pause that really keeps WAL from it (so a failover really loses
the commits made since), and a sync primary whose commits really wait for the standby."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import anyio
import pytest

from tests.conftest import require_or_skip
from tests.pg_pair import ReplicatedPair, pair_problem, psql, wait_for

pytestmark = [pytest.mark.anyio]


def _pair(sync: bool) -> Iterator[ReplicatedPair]:
    require_or_skip(pair_problem())
    with ReplicatedPair(sync=sync) as pair:
        yield pair


@pytest.fixture
def async_pair() -> Iterator[ReplicatedPair]:
    yield from _pair(sync=False)


@pytest.fixture
def sync_pair() -> Iterator[ReplicatedPair]:
    yield from _pair(sync=True)


async def sql(port: int, statement: str, limit: float = 60) -> str:
    """`statement` in database t, from a thread (psql, killed after `limit` s)."""
    return await anyio.to_thread.run_sync(partial(psql, port, statement, "t", limit))


async def test_failover_after_a_pause_loses_what_the_primary_wrote_since(
    async_pair: ReplicatedPair,
) -> None:
    pair = async_pair
    await anyio.to_thread.run_sync(pair.create_database, "t")
    await sql(
        pair.primary_port, "CREATE TABLE n (i int); INSERT INTO n SELECT generate_series(1, 100)"
    )
    await anyio.to_thread.run_sync(pair.wait_caught_up)
    assert await sql(pair.standby_port, "SELECT count(*), max(i) FROM n") == "100|100"

    await anyio.to_thread.run_sync(pair.pause_replication)
    await sql(pair.primary_port, "INSERT INTO n SELECT generate_series(101, 200)")
    assert await sql(pair.primary_port, "SELECT count(*) FROM n") == "200"  # committed there
    await anyio.to_thread.run_sync(pair.kill_primary)
    await anyio.to_thread.run_sync(pair.promote)

    assert await sql(pair.standby_port, "SELECT pg_is_in_recovery()") == "f"
    await sql(pair.standby_port, "INSERT INTO n VALUES (1000)")  # writable
    assert await sql(pair.standby_port, "SELECT count(*), max(i) FROM n") == "101|1000"
    assert await sql(pair.standby_port, "SELECT count(*) FROM n WHERE i BETWEEN 101 AND 200") == "0"


async def test_sync_commit_waits_for_the_standby(sync_pair: ReplicatedPair) -> None:
    pair = sync_pair
    await anyio.to_thread.run_sync(pair.create_database, "t")
    await sql(pair.primary_port, "CREATE TABLE n (i int)")  # the standby is up: returns
    await anyio.to_thread.run_sync(pair.pause_replication)

    committed = anyio.Event()

    async def commit() -> None:
        await sql(pair.primary_port, "INSERT INTO n VALUES (1)", limit=120)
        committed.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(commit)
        waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'"
        await anyio.to_thread.run_sync(
            partial(
                wait_for,
                "the commit waiting for the standby",
                lambda: (psql(pair.primary_port, waiting) == "1", None),
                stall=30,
            )
        )
        await anyio.sleep(2)
        assert not committed.is_set(), "the commit returned without the standby"
        # Flushed locally, but not visible to others until the standby has it.
        assert await sql(pair.primary_port, "SELECT count(*) FROM n") == "0"

        await anyio.to_thread.run_sync(pair.resume_replication)
        with anyio.fail_after(60):
            await committed.wait()
    await anyio.to_thread.run_sync(pair.wait_caught_up)
    assert await sql(pair.standby_port, "SELECT count(*) FROM n") == "1"
