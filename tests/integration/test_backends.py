"""The store on both backends (SQLite, PostgreSQL): the same guarantees, the same read side.

PostgreSQL is a real server (tests/pg-up.sh); each test has a database of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import anyio
import pytest

from agent.app import Agent
from agent.batch import Line, LineBatch, Source
from agent.storage import LogStorage
from agent.storage.commit import ROWS_PER_INSERT
from agent.storage.db import StoreLocked
from agent.storage.retention import Retention
from tests.conftest import (
    IMAGE,
    ROOT,
    RUN_ID,
    TEST_LABEL,
    Containers,
    agent_settings,
    docker,
    eventually,
    query,
    rows_in,
    running_agent,
    write_line,
)
from tests.integration.test_collector import by_stream, docker_reference

pytestmark = [pytest.mark.anyio]  # Docker: marked per test, only where it is used
DAY = 86400 * 1_000_000_000


@pytest.mark.docker
async def test_lines_are_stored_once_across_agent_restarts(
    tmp_path: Path, containers: Containers, store_url: str
) -> None:
    settings = replace(agent_settings(tmp_path), db_url=store_url)
    script = 'for i in $(seq 1 300); do echo "out $i"; echo "err $i" >&2; done; sleep 3; seq 1 200'
    async with running_agent(settings):
        cid = containers.run("twice", script)
        await eventually(lambda: len(rows_in(store_url, cid)) >= 600)
    await anyio.to_thread.run_sync(containers.wait, "twice")  # written while no agent runs
    async with running_agent(settings):
        await eventually(lambda: len(rows_in(store_url, cid)) >= 800)
        await anyio.sleep(0.5)
    assert by_stream(rows_in(store_url, cid)) == by_stream(docker_reference(cid))


async def test_retention_deletes_exactly_the_old_rows(tmp_path: Path, store_url: str) -> None:
    now = time.time_ns()
    async with LogStorage(store_url, host="h") as storage:
        for i in range(3000):
            ts = now - (8 * DAY if i % 3 else DAY) + i
            await write_line(storage, "r" * 64, "ret", Line("stdout", ts, str(ts), f"{i}", 0, 4))
        await storage.flush()
        report = await Retention(storage, max_age_s=7 * 86400, max_bytes=0).run_once(now)
    assert report.by_age == 2000
    assert query(store_url, "SELECT COUNT(*) FROM log_lines") == [(1000,)]
    assert query(store_url, "SELECT lines FROM container_cursors") == [(1000,)]


async def test_a_second_agent_under_the_same_host_name_is_refused(store_url: str) -> None:
    async with LogStorage(store_url, host="same"):
        with pytest.raises(StoreLocked):
            async with LogStorage(store_url, host="same"):
                pass


def logagent(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LOGAGENT_DB_URL": url, "LOGAGENT_API_SOCKET": ""}
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip


@pytest.mark.docker
async def test_three_hosts_write_one_postgresql_each_line_once(
    tmp_path: Path, containers: Containers, pg_url: str
) -> None:
    store_url = pg_url
    hosts = ["alpha", "beta", "gamma"]
    cids: dict[str, str] = {}
    async with anyio.create_task_group() as tg:
        stops = []
        for host in hosts:  # each agent sees only its own host's containers (a label)
            label = f"logagent-test.fleet={RUN_ID}-{host}"
            settings = replace(
                agent_settings(tmp_path),
                db_url=store_url,
                host=host,
                scope_labels=(label,),
                api_socket="",
            )
            agent = Agent(settings, self_ids=[])
            await tg.start(partial(agent.run, signals=False))
            stops.append(agent.stop)
        for host in hosts:
            name = f"{containers.prefix}-{host}"
            containers.names.append(name)
            cids[host] = docker(
                "run", "-d", "--network", "none", "--name", name,
                "--label", f"logagent-test.fleet={RUN_ID}-{host}",
                "--label", f"{TEST_LABEL}={RUN_ID}",
                IMAGE, "sh", "-c", f"sleep 0.5; seq 1 2000 | sed 's/^/{host} /'",
            ).decode().strip()  # fmt: skip
        for host in hosts:
            await eventually(lambda h=host: len(rows_in(store_url, cids[h])) >= 2000, limit=60)
        await anyio.sleep(0.5)
        for stop in stops:
            stop.set()
    for host in hosts:
        rows = rows_in(store_url, cids[host])
        assert [m for _s, _t, m in rows] == [f"{host} {i}" for i in range(1, 2001)]
    assert query(store_url, "SELECT host, COUNT(*) FROM log_lines GROUP BY host ORDER BY host") == [
        ("alpha", 2000),
        ("beta", 2000),
        ("gamma", 2000),
    ]
    beta = logagent(store_url, "logs", "--host", "beta").stdout.splitlines()
    assert beta == [f"{containers.prefix}-beta | beta {i}" for i in range(1, 2001)]
    status = logagent(store_url, "status").stdout
    for host in hosts:
        assert f"{containers.prefix}-{host}" in status


async def test_commits_of_any_size_store_every_row_once_in_order(store_url: str) -> None:
    """SQLite inserts ROWS_PER_INSERT rows per statement and the rest one by one: sizes on
    both sides of that, and several batches in one commit, all land whole and in order."""
    now = time.time_ns()
    k = ROWS_PER_INSERT
    sizes = [1, k - 1, k, k + 1, 2 * k + 7, 3, 5 * k]
    source = Source("s" * 64, "sizes")
    async with LogStorage(store_url, host="h", linger=0.05) as storage:
        n = 0
        for size in sizes:
            lines = [Line("stdout", now + n + i, "", f"line {n + i}", 0, 1) for i in range(size)]
            await storage.write(LineBatch.of(source, lines))
            n += size
        await storage.flush()
    messages = [m for _, _, m in rows_in(store_url, "s" * 64)]
    assert messages == [f"line {i}" for i in range(sum(sizes))]


async def test_a_row_failing_in_the_middle_of_a_statement_leaves_none_of_its_commit(
    tmp_path: Path,
) -> None:
    """SQLite inserts as INSERT OR FAIL (no statement journal), which keeps the rows of a
    statement before a failing one: the commit's transaction still stores all or nothing."""
    url = f"sqlite:///{tmp_path / 'logs.db'}"
    now = time.time_ns()
    lines = [Line("stdout", now + i, "", f"line {i}", 0, 1) for i in range(2 * ROWS_PER_INSERT)]
    lines[ROWS_PER_INSERT + 50] = lines[ROWS_PER_INSERT + 50]._replace(message=None)  # type: ignore[arg-type]
    async with LogStorage(url, host="h", retry_delay=0.05) as storage:
        await storage.write(LineBatch.of(Source("f" * 64, "fails"), lines))
        await eventually(lambda: storage.writer.stats.write_errors >= 2)
        assert "NOT NULL" in (storage.failing or "")
        assert query(url, "SELECT count(*) FROM log_lines") == [(0,)]
        pragmas = []
        for name in ("wal_autocheckpoint", "synchronous", "journal_mode"):
            _, rows = await storage.db.execute_query(f"PRAGMA {name}")
            pragmas += list(rows[0])
    assert pragmas == [10000, 1, "wal"]


async def test_grep_finds_the_same_lines_on_both_backends(store_url: str) -> None:
    now = time.time_ns()
    words = {7: "zebra42 here", 500: "ZEBRA42 loud", 900: "zebra43 there"}
    async with LogStorage(store_url, host="h") as storage:
        for i in range(1000):
            text = words.get(i, f"filler line {i}")
            await write_line(storage, "g" * 64, "grep", Line("stdout", now + i, str(i), text, 0, 1))
        await storage.flush()

    def grep(pattern: str) -> list[str]:
        return logagent(store_url, "logs", "grep", "--grep", pattern).stdout.splitlines()

    assert grep("zebra42") == ["zebra42 here"]
    assert grep("zebra4[23]") == ["zebra42 here", "zebra43 there"]
    assert grep("(?i)zebra42") == ["zebra42 here", "ZEBRA42 loud"]
    assert grep("^filler line 99$") == ["filler line 99"]
    bad = subprocess.run(
        [sys.executable, "-m", "agent", "logs", "--grep", "zebra(("],
        env={**os.environ, "LOGAGENT_DB_URL": store_url, "LOGAGENT_API_SOCKET": ""},
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2 and "zebra((" in bad.stderr and len(bad.stderr.splitlines()) == 1
    if store_url.startswith("postgres"):  # in the database, through the trigram index
        import asyncpg

        conn = await asyncpg.connect(store_url)
        try:
            await conn.execute("SET enable_seqscan = off")  # as on a big table
            plan = "\n".join(
                r[0]
                for r in await conn.fetch(
                    "EXPLAIN SELECT id FROM log_lines WHERE message ~ 'zebra42'"
                )
            )
        finally:
            await conn.close()
        assert "Bitmap Index Scan" in plan and "message" in plan, plan


async def test_a_commit_takes_each_containers_latest_identity(store_url: str) -> None:
    """A rename queued behind lines read under the old name: the one commit of both leaves
    the new name (the old one among its former names) and the state the last batch said."""
    now = time.time_ns()
    old = Source("r" * 64, "before", project="p", max_age_s=60)
    new = replace(old, container_name="after")
    async with LogStorage(store_url, host="h") as storage:
        await storage.writer.sql.commit([LineBatch(old, state="running")])  # its row
        read = LineBatch.of(old, [Line("stdout", now, "", "read under the old name", 0, 1)])
        read.position = {"stdout": (now, 1)}
        await storage.writer.sql.commit([read, LineBatch(new, state="exited")])
    assert query(
        store_url,
        "SELECT container_name, former_names, project, max_age_s, state, stdout_ts "
        "FROM container_cursors",
    ) == [("after", "before\n", "p", 60, "exited", now)]


async def test_many_positions_load_in_one_call_as_each_alone(store_url: str) -> None:
    """A start-up's listing loads its containers' positions at once (storage/cursors.py):
    the same as one call each, on this host only, and empty for one never stored."""
    t0 = time.time_ns()
    ids = [f"{n:064x}" for n in range(1, 1201)]  # more than two of its queries hold
    async with LogStorage(store_url, host="other") as other:
        batch = LineBatch.of(Source(ids[0], "elsewhere"), [Line("stdout", t0, "", "x", 0, 1)])
        batch.position = {"stdout": (t0, 1)}
        await other.write(batch)
        await other.flush()
    async with LogStorage(store_url, host="h") as storage:
        for n, cid in enumerate(ids[1:], start=1):
            ts = t0 + n
            batch = LineBatch.of(Source(cid, f"c{n}"), [Line("stderr", ts, "", "y", 0, 1)])
            batch.position = {"stderr": (ts, n)}
            await storage.write(batch)
        await storage.flush()
        unknown = "f" * 64
        loaded = await storage.load_cursors([*ids, unknown])
        assert loaded[ids[0]].empty  # the other host's position is not this host's
        assert loaded[unknown].empty
        assert loaded[ids[7]].positions == {"stderr": [t0 + 7, 7]}
        for cid in ids[::97]:
            assert loaded[cid].positions == (await storage.load_cursor(cid)).positions


async def test_a_replayed_life_event_is_stored_once_with_its_position(store_url: str) -> None:
    """storage/life.py: the save after a restart meets the events it stored before (Docker
    replays from the saved position); the events position moves with them."""
    from agent.docker.life_events import LifeEvent

    die = LifeEvent("c" * 64, "web", 1_700_000_000_123_456_789, "die", exit_code=3)
    oom = LifeEvent("c" * 64, "web", 1_700_000_000_123_456_790, "oom")
    for _ in range(2):
        async with LogStorage(store_url, host="h") as storage:
            storage.state.handled(die.time_ns, die)
            storage.state.handled(oom.time_ns, oom)
            storage.state.handled(oom.time_ns + 5)  # a create, say: no life of its own
            assert storage.state.pending_life == 2
            await storage.state.save()
            assert storage.state.pending_life == 0
    rows = query(store_url, "SELECT action, exit_code, time_ns FROM container_events ORDER BY id")
    assert rows == [("die", 3, die.time_ns), ("oom", None, oom.time_ns)]
    assert query(store_url, "SELECT last_event_ns FROM agent_state WHERE host = 'h'") == [
        (oom.time_ns + 5,)
    ]


async def test_a_batch_read_before_a_rename_does_not_bring_the_old_name_back(
    store_url: str,
) -> None:
    """The race a rename has with a batch waiting for room in the queue: built under the old
    identity, queued after the rename's, in the same commit or a later one. The newer
    identity (Source.version, counted by the record) wins; the lines are stored all the same."""
    from agent.collectors.records import ContainerRecord

    now = time.time_ns()
    rec = ContainerRecord(Source("q" * 64, "before"))
    old = rec.source
    rec.identify(replace(old, container_name="after"))
    new = rec.source
    assert new.version == old.version + 1
    rec.identify(replace(new))  # the same identity again: not a new one
    assert rec.source.version == new.version

    def read(source: Source, n: int) -> LineBatch:
        batch = LineBatch.of(source, [Line("stdout", now + n, "", f"line {n}", 0, 1)])
        batch.position = {"stdout": (now + n, 1)}
        return batch

    async with LogStorage(store_url, host="h") as storage:
        await storage.writer.sql.commit([read(old, 1)])
        await storage.writer.sql.commit([LineBatch(new), read(old, 2)])  # one commit
        names = query(store_url, "SELECT container_name, former_names FROM container_cursors")
        assert names == [("after", "before\n")]
        await storage.writer.sql.commit([read(old, 3)])  # a later one
        names = query(store_url, "SELECT container_name, former_names FROM container_cursors")
        assert names == [("after", "before\n")]
    assert len(rows_in(store_url, "q" * 64)) == 3


async def test_life_events_the_store_cannot_hold_keep_the_position_before_them(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store away long enough for the held events to fill up: those not kept are not
    passed over; the saved position stays before them, for Docker's replay."""
    from agent.docker.life_events import LifeEvent
    from agent.storage import state

    monkeypatch.setattr(state, "MAX_PENDING_LIFE", 2)
    t = 1_700_000_000_000_000_000
    async with LogStorage(store_url, host="h") as storage:
        for i in range(4):
            storage.state.handled(t + i, LifeEvent("c" * 64, "web", t + i, "start"))
        await storage.state.save()
    assert query(store_url, "SELECT COUNT(*) FROM container_events") == [(2,)]
    assert query(store_url, "SELECT last_event_ns FROM agent_state WHERE host = 'h'") == [(t + 1,)]
