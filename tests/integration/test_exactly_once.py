"""Every line exactly once across agent restarts, crashes, downtime and daemon restarts."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from functools import partial
from pathlib import Path

import anyio
import pytest

from tests.conftest import (
    IMAGE,
    ROOT,
    RUN_ID,
    SOURCE,
    TEST_LABEL,
    Containers,
    agent_settings,
    db_url,
    docker,
    eventually,
    numbered_bursts,
    running_agent,
    start_agent_process,
    stop_process,
    stored_rows,
    until_reached,
)
from tests.integration.test_agent_process import _stop_dockerd
from tests.integration.test_collector import docker_reference
from tests.integration.test_counts import assert_counts_exact

pytestmark = [pytest.mark.docker, pytest.mark.anyio]

BURST = numbered_bursts(200, 0.02)  # slow enough to stop the agent in the middle


def count(tmp_path: Path, cid: str) -> int:
    with closing(sqlite3.connect(tmp_path / "logs.db", timeout=10)) as conn:
        try:
            row = conn.execute(f"SELECT COUNT(*) FROM log_lines WHERE {SOURCE}", (cid,)).fetchone()
        except sqlite3.OperationalError:
            return 0
    return int(row[0])


def gaps(tmp_path: Path) -> list[tuple[str, str]]:
    with closing(sqlite3.connect(tmp_path / "logs.db", timeout=10)) as conn:
        return conn.execute("SELECT container_name, reason FROM gaps ORDER BY id").fetchall()


async def _restart_mid_burst(tmp_path: Path, containers: Containers, sig: signal.Signals) -> None:
    proc = start_agent_process(tmp_path)
    cid = containers.run("burst", BURST)
    await eventually(lambda: count(tmp_path, cid) > 30_000, limit=60)
    stop_process(proc, sig)
    stopped_at = count(tmp_path, cid)
    assert stopped_at < 200_000, "the burst ended before the agent was stopped"
    proc = start_agent_process(tmp_path)
    containers.wait("burst")
    await until_reached(lambda: count(tmp_path, cid), 200_000)
    await anyio.sleep(1)
    stop_process(proc, signal.SIGTERM)
    rows = stored_rows(tmp_path, cid)
    assert len(rows) == 200_000
    assert [r[2] for r in rows] == [str(i) for i in range(1, 200_001)]
    assert rows == docker_reference(cid)
    assert assert_counts_exact(db_url(tmp_path)) == 200_000  # the histogram's counts too


async def test_kill_9_mid_burst_then_restart_stores_each_line_once(
    tmp_path: Path, containers: Containers
) -> None:
    await _restart_mid_burst(tmp_path, containers, signal.SIGKILL)


async def test_sigterm_mid_burst_then_restart_stores_each_line_once(
    tmp_path: Path, containers: Containers
) -> None:
    await _restart_mid_burst(tmp_path, containers, signal.SIGTERM)


async def test_container_that_ran_while_agent_was_down_is_caught_up(
    tmp_path: Path, containers: Containers
) -> None:
    async with running_agent(agent_settings(tmp_path)):
        pass  # the agent has run on this host: it knows when it went down
    await anyio.sleep(1.1)  # Docker's `Created` has whole seconds
    cid = containers.run("while-down", "seq 1 500")
    containers.wait("while-down")
    async with running_agent(agent_settings(tmp_path)):
        await eventually(lambda: count(tmp_path, cid) >= 500)
        await anyio.sleep(0.5)
    async with running_agent(agent_settings(tmp_path)):
        await anyio.sleep(1)  # a third start reads nothing again
    assert [r[2] for r in stored_rows(tmp_path, cid)] == [str(i) for i in range(1, 501)]


async def test_container_removed_while_agent_was_down_leaves_a_gap(
    tmp_path: Path, containers: Containers
) -> None:
    async with running_agent(agent_settings(tmp_path)):
        pass
    containers.names.append(f"{containers.prefix}-gone")
    docker(
        "run", "--rm", "--network", "none", "--name", f"{containers.prefix}-gone",
        "--label", f"logagent-test.run={containers.prefix.split('-')[2]}",
        "logagent-test/busybox:latest", "echo", "never read",
    )  # fmt: skip
    async with running_agent(agent_settings(tmp_path)):
        await eventually(lambda: bool(gaps(tmp_path)))
    assert gaps(tmp_path) == [
        (f"{containers.prefix}-gone", "container removed before its logs could be read")
    ]
    shown = subprocess.run(
        [sys.executable, "-m", "agent", "gaps", f"{containers.prefix}-gone"],
        env={**os.environ, "LOGAGENT_DB_URL": f"sqlite:///{tmp_path}/logs.db"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert len(shown) == 1
    assert shown[0].startswith(f"{containers.prefix}-gone\t")
    assert shown[0].endswith("\tcontainer removed before its logs could be read")


async def test_cursor_row_matches_the_stored_rows(tmp_path: Path, containers: Containers) -> None:
    script = 'for i in $(seq 1 300); do echo "o $i"; echo "e $i" >&2; done'
    async with running_agent(agent_settings(tmp_path)):
        cid = containers.run("cursor", script)
        await eventually(lambda: count(tmp_path, cid) >= 600)
        await anyio.sleep(0.5)
    with closing(sqlite3.connect(tmp_path / "logs.db")) as conn:
        cursor = conn.execute(
            "SELECT stdout_ts, stdout_n, stderr_ts, stderr_n, tty_ts FROM container_cursors "
            "WHERE container_id = ?",
            (cid,),
        ).fetchone()
        for stream, (ts, n) in (("stdout", cursor[0:2]), ("stderr", cursor[2:4])):
            last = conn.execute(
                f"SELECT MAX(timestamp_ns) FROM log_lines WHERE {SOURCE} AND stream = ?",
                (cid, stream),
            ).fetchone()[0]
            at_last = conn.execute(
                f"SELECT COUNT(*) FROM log_lines WHERE {SOURCE} AND stream = ? "
                "AND timestamp_ns = ?",
                (cid, stream, last),
            ).fetchone()[0]
            assert (ts, n) == (last, at_last)
        assert cursor[4] is None


@pytest.mark.daemon_restart
async def test_daemon_restart_with_restart_always_loses_and_doubles_nothing(
    tmp_path: Path, containers: Containers
) -> None:
    script = 'i=0; while true; do echo "n $i"; i=$((i+1)); sleep 0.005; done'
    async with running_agent(agent_settings(tmp_path)) as agent:
        cid = containers.run("always", script, "--restart", "always", "--stop-timeout", "1")
        await eventually(lambda: count(tmp_path, cid) > 200)
        await anyio.to_thread.run_sync(_stop_dockerd)
        await anyio.to_thread.run_sync(
            lambda: subprocess.run(["bash", str(ROOT / "tests" / "docker-up.sh")], check=True)
        )
        assert agent.follower is not None
        discovery = agent.follower
        await eventually(lambda: discovery.connected, limit=60)
        # the container came back (restart policy) and is collected again, after its old lines
        await eventually(lambda: docker("inspect", "-f", "{{.State.Running}}", cid) == b"true\n")
        before = count(tmp_path, cid)
        await eventually(lambda: count(tmp_path, cid) > before + 100, limit=30)
        docker("pause", cid)
        written = docker_reference(cid)
        agent.stop.set()
    rows = stored_rows(tmp_path, cid)
    if gaps(tmp_path):
        assert set(rows) <= set(written)
    else:
        assert rows == written


async def test_json_file_rotated_past_the_cursor_leaves_a_gap(
    tmp_path: Path, containers: Containers
) -> None:
    rotating = ("--log-opt", "max-size=10k", "--log-opt", "max-file=2")
    script = "seq 1 50; sleep 2; seq 1000 5000; sleep 1000"
    async with running_agent(agent_settings(tmp_path)):
        cid = containers.run("rotating", script, *rotating, "--stop-timeout", "1")
        await eventually(lambda: count(tmp_path, cid) >= 50)
    await anyio.sleep(3)  # 4,000 more lines while the agent is down: ~20 KiB kept of ~30
    async with running_agent(agent_settings(tmp_path)):
        await eventually(lambda: bool(gaps(tmp_path)))
        await anyio.sleep(0.5)
    assert gaps(tmp_path) == [
        (
            f"{containers.prefix}-rotating",
            "stdout lines no longer in Docker's log (rotated past the cursor)",
        )
    ]
    messages = [r[2] for r in stored_rows(tmp_path, cid)]
    assert messages[:50] == [str(i) for i in range(1, 51)]
    assert messages[-1] == "5000"
    assert len(messages) == len(set(messages))  # nothing twice


async def test_rm_containers_of_milliseconds_are_stored(
    tmp_path: Path, containers: Containers
) -> None:
    """`docker run --rm` of a container that lives milliseconds: Docker removes it ~30 ms
    after its start event. Made ready at its `create` (~150 ms earlier), its stream opens
    at once on `start`: measured 10 of 10 stored, 2 of 10 when the start event had to
    inspect and query the store first. Never silence: any not stored is a gap."""
    async with running_agent(agent_settings(tmp_path)):
        names = [f"{containers.prefix}-blink{i}" for i in range(10)]
        containers.names.extend(names)
        for name in names:  # in a thread: the agent runs on this test's event loop
            await anyio.to_thread.run_sync(
                lambda name=name: docker(
                    "run", "--rm", "--network", "none", "--name", name,
                    "--label", f"{TEST_LABEL}={RUN_ID}", IMAGE, "sh", "-c", "seq 1 3",
                )
            )  # fmt: skip
        await anyio.sleep(3)
    with closing(sqlite3.connect(tmp_path / "logs.db", timeout=10)) as conn:
        stored = dict(
            conn.execute(
                "SELECT c.container_name, COUNT(*) FROM log_lines l "
                "JOIN container_cursors c ON c.id = l.source_id GROUP BY c.container_name"
            ).fetchall()
        )
    gapped = {name for name, _reason in gaps(tmp_path)}
    for name in names:
        assert stored.get(name) == 3 or (name in gapped and name not in stored), name
    assert sum(stored.get(name) == 3 for name in names) >= 5, (stored, gapped)


async def test_a_stop_while_a_batch_waits_on_a_full_queue_loses_none_of_it(
    tmp_path: Path, containers: Containers
) -> None:
    """The store is locked (another writer holds it), the queue fills, and a collector is
    stopped (drained) while its batch waits for room: that batch is not queued, so the
    cursor must not have moved past it (a SIGTERM mid-burst once lost 71 lines so)."""
    from agent.collectors.manager import LogCollectorManager
    from agent.docker.client import DockerClient
    from agent.storage import LogStorage
    from tests.conftest import db_url

    cid = containers.run("queue", "seq 1 20000; sleep 3600")
    url = db_url(tmp_path)
    async with (
        LogStorage(url, host="test-host", max_queue_bytes=64 * 1024, retry_delay=0.05) as storage,
        DockerClient() as client,
        LogCollectorManager(storage, client=client, tail="all") as manager,
    ):
        await storage.flush()
        blocker = sqlite3.connect(tmp_path / "logs.db", timeout=10, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # the agent's commits now fail: "database is locked"
        try:
            collector = await manager.start_docker_collector(cid)
            await eventually(lambda: storage.writer.queued_bytes >= 64 * 1024, limit=60)
            await anyio.sleep(0.2)  # the collector is waiting in write() with its next batch
            assert collector.lines > storage.writer.queued  # some lines are read, not queued
            with anyio.fail_after(60):
                stopping = anyio.create_task_group()
                async with stopping:
                    stopping.start_soon(partial(manager.stop_collector, cid, drain=True))
                    await anyio.sleep(0.5)
                    blocker.execute("ROLLBACK")  # the store comes back during the drain
        finally:
            if blocker.in_transaction:
                blocker.execute("ROLLBACK")
            blocker.close()
        await storage.flush()
    rows = stored_rows(tmp_path, cid)
    assert [r[2] for r in rows] == [str(i) for i in range(1, 20001)]
