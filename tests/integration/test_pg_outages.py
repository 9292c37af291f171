"""A fleet's PostgreSQL on a bad day: restarted, stopped for 30 s, its connections cut, and
the agent killed in the middle of a COPY. Each time the store ends equal to `docker logs -t`.

The agent runs as a process of its own (a hang in it cannot hang the tests); the server is
the test cluster, restarted with pg_ctl as its user.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import anyio
import pytest

from agent.storage import LogStorage
from agent.storage.db import StoreLocked, in_child_task, open_db, transaction
from agent.storage.follow import committed, one_server
from tests.conftest import (
    PG_DATA,
    SOURCE,
    Containers,
    eventually,
    numbered_bursts,
    pg_ctl,
    query,
    rows_in,
    start_agent_process,
    stop_process,
    until_reached,
)
from tests.integration.test_collector import docker_reference

pytestmark = [pytest.mark.anyio]  # Docker: marked per test, only where it is used

N = 200_000  # numbered lines, in 200 bursts (conftest.numbered_bursts)


def counter(url: str, cid: str) -> int:
    """Lines of the container stored so far; while the server is down, -1."""
    try:
        found = query(
            url,
            f"SELECT COUNT(*) FROM log_lines WHERE {SOURCE}",
            cid,
        )
    except OSError:
        return -1
    except Exception as exc:  # the server starting or stopping
        if "starting up" in str(exc) or "shutting down" in str(exc):
            return -1
        raise
    return int(found[0][0]) if found else 0


def assert_exactly_once(url: str, cid: str) -> None:
    rows = rows_in(url, cid)
    assert len(rows) == N
    assert [r[2] for r in rows] == [str(i) for i in range(1, N + 1)]
    assert rows == docker_reference(cid)


@pytest.mark.docker
async def test_postgresql_restarted_and_down_30s_mid_burst_loses_and_doubles_nothing(
    tmp_path: Path, containers: Containers, pg_url: str
) -> None:
    proc = start_agent_process(tmp_path, pg_url)
    cid = containers.run("outage", numbered_bursts(200, 0.25))  # ~60 s of lines
    await eventually(lambda: counter(pg_url, cid) > 10_000, limit=60)
    await anyio.to_thread.run_sync(pg_ctl, "restart", "-m", "fast")
    before = max(counter(pg_url, cid), 0)
    await eventually(lambda: counter(pg_url, cid) > before + 10_000, limit=120)
    await anyio.to_thread.run_sync(pg_ctl, "stop", "-m", "fast")
    try:
        await anyio.sleep(30)  # the container keeps writing; Docker keeps its lines
        assert proc.poll() is None, "the agent exited while the store was down"
    finally:
        await anyio.to_thread.run_sync(pg_ctl, "start")
    await anyio.to_thread.run_sync(containers.wait, "outage")
    await until_reached(lambda: counter(pg_url, cid), N)
    await anyio.sleep(1)
    stop_process(proc)
    assert_exactly_once(pg_url, cid)
    log = (tmp_path / "agent.log").read_text()
    # Each outage is said once when it starts and once when it ends, not at every retry.
    said = log.count("will retry")
    assert 1 <= said <= 2 and log.count("writing works again") == said, log[-3000:]


@pytest.mark.docker
async def test_connections_cut_mid_burst_are_made_again(
    tmp_path: Path, containers: Containers, pg_url: str
) -> None:
    proc = start_agent_process(tmp_path, pg_url)
    cut = (
        "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    locks = "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
    await anyio.sleep(1.5)
    cid = containers.run("cut", numbered_bursts(200, 0.05))
    for reached in (20_000, 60_000, 100_000):
        await eventually(lambda r=reached: counter(pg_url, cid) > r, limit=120)
        await eventually(lambda: query(pg_url, locks)[0][0] > 0)  # the host claimed
        assert query(pg_url, cut)[0][0] >= 2  # the writer's and the host lock's
    await until_reached(lambda: counter(pg_url, cid), N)
    # The host is claimed again: a second agent under its name is refused.
    await eventually(lambda: query(pg_url, locks)[0][0] > 0)
    with pytest.raises(StoreLocked):
        async with LogStorage(pg_url, host="test-host"):
            pass
    await anyio.sleep(1)
    stop_process(proc)
    assert_exactly_once(pg_url, cid)
    assert (tmp_path / "agent.log").read_text().count("taken again") == 3


@pytest.mark.docker
async def test_kill_9_in_the_middle_of_a_copy_then_restart_stores_each_line_once(
    tmp_path: Path, containers: Containers, pg_url: str
) -> None:
    import asyncpg

    copying = (
        "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND state = 'active' AND query LIKE 'COPY%'"
    )
    server_log = Path(PG_DATA) / "server.log"
    cut_mid_transaction = server_log.read_text(errors="replace").count("open transaction")
    watch = await asyncpg.connect(pg_url)
    proc = start_agent_process(tmp_path, pg_url)
    try:
        cid = containers.run("copy", numbered_bursts(200, 0.02))
        await eventually(lambda: counter(pg_url, cid) > 20_000, limit=60)
        for _attempt in range(5):  # until a kill lands inside a COPY's transaction
            with anyio.fail_after(60):
                while not await watch.fetchval(copying):
                    pass
            stop_process(proc, signal.SIGKILL)
            assert counter(pg_url, cid) < N, "the burst ended before the agent was killed"
            proc = start_agent_process(tmp_path, pg_url)
            await anyio.sleep(0.5)
            if (
                server_log.read_text(errors="replace").count("open transaction")
                > cut_mid_transaction
            ):
                break
        else:
            pytest.fail("no kill landed inside a COPY in 5 tries")
        await anyio.to_thread.run_sync(containers.wait, "copy")
        await until_reached(lambda: counter(pg_url, cid), N)
        await anyio.sleep(1)
        stop_process(proc)
    finally:
        await watch.close()
        if proc.poll() is None:
            proc.kill()
    assert_exactly_once(pg_url, cid)


async def test_the_writer_survives_its_connections_cut_at_any_moment(pg_url: str) -> None:
    """Cut 8 s long at random moments (inside a COPY, a commit, a rollback, a release): a
    cut once left tortoise's task connection on a dead one, and the writer failed for good."""
    import random

    import asyncpg

    from agent.batch import Line, LineBatch, Source
    from agent.cursor import Cursor

    loop = asyncio.get_running_loop()
    report = loop.get_exception_handler()

    def unless_cut(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """asyncpg leaves a future's error unread when the server cuts a COPY (asyncio logs
        it in the agent); anything else still fails the test."""
        if not isinstance(context.get("exception"), asyncpg.ConnectionDoesNotExistError):
            (report or asyncio.BaseEventLoop.default_exception_handler)(loop, context)  # type: ignore[arg-type]

    rng = random.Random(7)
    written = 0
    cursor = Cursor()  # as a collector does: each batch carries its position
    loop.set_exception_handler(unless_cut)
    async with LogStorage(pg_url, host="h", retry_delay=0.1) as storage:
        admin = await asyncpg.connect(pg_url)
        try:
            source = Source("k" * 64, "cut")
            end = anyio.current_time() + 8
            while anyio.current_time() < end:
                lines = [Line("stdout", 10**18 + written + j, "t", str(written + j), 0, 6)
                         for j in range(500)]  # fmt: skip
                written += 500
                batch = LineBatch.of(source, lines)
                cursor.advance(batch)
                await storage.write(batch)
                if rng.random() < 0.3:
                    await admin.fetchval(
                        "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                await anyio.sleep(rng.uniform(0, 0.05))
            await until_reached(lambda: storage.writer.stats.rows, written)
            errors = storage.writer.stats.write_errors
        finally:
            await admin.close()
            loop.set_exception_handler(report)
    assert errors > 0  # cuts did land
    stored = query(pg_url, "SELECT COUNT(*), COUNT(DISTINCT message) FROM log_lines")
    assert stored == [(written, written)]


async def test_a_begin_the_server_cut_leaves_a_follower_s_task_its_own_connection(
    pg_url: str,
) -> None:
    """A long-lived follower (a forwarder, the alert rules) whose step meets a connection the
    server cut while the agent was busy: BEGIN fails, and the task's later transactions
    still work. (tortoise had made the dead transaction the task's connection for good: a
    forwarder's position was never saved again, its batch sent again and again.)"""
    cut = (
        "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    met = 0
    async with open_db(pg_url) as db:
        for _ in range(5):
            async with one_server(db) as conn:  # the pool's connections, made and idle
                await committed(conn)
            query(pg_url, cut)  # in this thread: the loop is busy while the server cuts them
            try:
                async with one_server(db) as conn:
                    await committed(conn)
            except Exception:
                met += 1
            async with transaction() as conn:  # this task's own, and a child task's
                await conn.execute_query("SELECT 1")

            async def save() -> None:
                async with transaction() as conn:
                    await conn.execute_query("SELECT 1")

            await in_child_task(save)
            if met:
                break
    assert met, "the cut was never met: the test proved nothing"
