"""The fleet's store survives losing its server (issue 27): two real PostgreSQL clusters with
streaming replication (tests/pg_pair.py), the primary killed with -9 in the middle of a burst,
the standby promoted. The agents write through a multi-host URL and find the new primary
themselves; in the end the new primary's store equals `docker logs -t`, 0 lost, 0 doubled.

With asynchronous replication the newest commits are really lost (the standby's walreceiver is
paused first, so what the primary wrote since never reaches it): the agent sees that the store
holds fewer of its commits than were acknowledged and reads those lines again from Docker.
With a synchronous standby nothing acknowledged is lost and nothing is read again.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp.test_utils import TestClient, TestServer

from agent.storage import LogStorage
from agent.storage.db import StoreLocked
from agent.storage.follow import committed
from agent.storage.reader import open_store
from agent.web.auth import Access
from agent.web.server import Viewer
from tests.conftest import (
    ROOT,
    RUN_ID,
    SOURCE,
    Containers,
    eventually,
    execute,
    numbered_bursts,
    query,
    require_or_skip,
    rows_in,
    start_agent_process,
    stop_process,
    until_reached,
)
from tests.integration.test_collector import docker_reference
from tests.integration.test_web import HOST, PORT
from tests.pg_pair import ReplicatedPair, pair_problem

pytestmark = [pytest.mark.anyio, pytest.mark.docker]

BURSTS = 100  # per container: 100,000 numbered lines (conftest.numbered_bursts)
N = BURSTS * 1000
FLEET_LABEL = "logagent-test.failover"  # which host's agent sees a container


@pytest.fixture
def pair_needed() -> None:
    require_or_skip(pair_problem())


@pytest.fixture
def async_pair(pair_needed: None) -> Iterator[ReplicatedPair]:
    with ReplicatedPair(sync=False) as pair:
        pair.create_database("logs")
        yield pair


def count(url: str, cids: list[str]) -> int:
    """Lines of these containers stored so far; -1 while the server is away."""
    try:
        return sum(
            int(query(url, f"SELECT COUNT(*) FROM log_lines WHERE {SOURCE}", cid)[0][0])
            for cid in cids
        )
    except Exception:  # killed, refusing, starting up: not yet
        return -1


def commits(url: str, host: str = "test-host") -> int:
    """The host's commits as this server holds them; -1 while it is away."""
    try:
        found = query(url, "SELECT COALESCE(commits, 0) FROM host_commits WHERE host = ?", host)
    except Exception:
        return -1
    return int(found[0][0]) if found else 0


def writes_to(tmp_path: Path) -> str | None:
    """The server the agent of `agent.toml` writes to, as `logagent status --json` says."""
    config = str(tmp_path / "agent.toml")
    said = subprocess.run(
        [sys.executable, "-m", "agent", "status", "--json", "--config", config],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if said.returncode != 0:
        return None
    server = json.loads(said.stdout)["store"].get("server")
    return str(server) if server else None


def assert_exact(url: str, cid: str) -> None:
    rows = rows_in(url, cid)
    assert [r[2] for r in rows] == [str(i) for i in range(1, N + 1)]
    assert rows == docker_reference(cid)


async def fail_over(
    pair: ReplicatedPair, primary: str, cids: list[str], *, lose: bool, host: str = "test-host"
) -> int:
    """Mid-burst: (lose: the standby stops hearing, the primary commits on) the primary
    killed with -9, the standby promoted. The host's commits the old primary held."""
    if lose:
        await anyio.to_thread.run_sync(pair.pause_replication)
        seen = count(primary, cids)
        await eventually(lambda: count(primary, cids) > seen + 5_000, limit=120)
    before = commits(primary, host)
    await anyio.to_thread.run_sync(pair.kill_primary)
    await anyio.to_thread.run_sync(pair.promote)
    return before


async def first_commit_after(url: str, hosts: tuple[str, ...]) -> float:
    """Seconds from now (the promotion) to each host's first commit on the new primary."""
    promoted = time.monotonic()
    held = {h: commits(url, h) for h in hosts}
    for host in hosts:
        await eventually(lambda h=host: commits(url, h) > held[h], limit=300)  # type: ignore[misc]
    return time.monotonic() - promoted


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
async def test_primary_killed_mid_burst_and_standby_promoted_loses_and_doubles_nothing(
    tmp_path: Path, containers: Containers, pair_needed: None, sync: bool
) -> None:
    with ReplicatedPair(sync=sync) as pair:
        await anyio.to_thread.run_sync(pair.create_database, "logs")
        primary, standby = pair.primary_url("logs"), pair.standby_url("logs")
        proc = start_agent_process(tmp_path, pair.multi_url("logs"))
        cids = [containers.run(f"burst{i}", numbered_bursts(BURSTS, 0.1)) for i in (1, 2)]
        await eventually(lambda: count(primary, cids) > 40_000, limit=180)
        before = await fail_over(pair, primary, cids, lose=not sync)
        held = commits(standby)
        if sync:  # every commit another session could see was on the standby too
            assert held >= before > 0
        else:  # the newest commits are lost for real
            assert 0 < held < before
        took = await first_commit_after(standby, ("test-host",))
        print(f"\n{'sync' if sync else 'async'}: promotion to the first new commit: {took:.1f} s")
        # `status` says where the agent writes now: the promoted standby.
        await eventually(lambda: writes_to(tmp_path) == f"127.0.0.1:{pair.standby_port}")
        for i in (1, 2):
            await anyio.to_thread.run_sync(containers.wait, f"burst{i}")
        await until_reached(lambda: count(standby, cids), 2 * N)
        await anyio.sleep(1)
        stop_process(proc)
        for cid in cids:
            assert_exact(standby, cid)
    log = (tmp_path / "agent.log").read_text()
    assert "writing to the PostgreSQL server at 127.0.0.1:" in log
    assert f"127.0.0.1:{pair.standby_port}" in log  # it said where it writes after the failover
    if sync:
        assert "collecting again" not in log, log[-3000:]
    else:  # some commits were really lost, and read again from Docker
        assert "collecting again from what it holds" in log, log[-3000:]


async def test_an_idle_agent_says_the_new_server_at_its_first_commit_after_a_failover(
    tmp_path: Path, containers: Containers, pair_needed: None
) -> None:
    """Failed over while the writer is idle, the pool may reconnect to the promoted standby
    without one commit failing: `status` must still say the server the commits now go to."""
    with ReplicatedPair(sync=True) as pair:
        await anyio.to_thread.run_sync(pair.create_database, "logs")
        primary, standby = pair.primary_url("logs"), pair.standby_url("logs")
        proc = start_agent_process(tmp_path, pair.multi_url("logs"))
        before = containers.run("before", "echo one")
        await eventually(lambda: count(primary, [before]) == 1, limit=60)
        assert writes_to(tmp_path) == f"127.0.0.1:{pair.primary_port}"
        await anyio.to_thread.run_sync(pair.kill_primary)
        await anyio.to_thread.run_sync(pair.promote)
        after = containers.run("after", "echo two")
        await eventually(lambda: count(standby, [after]) == 1, limit=60)
        await eventually(lambda: writes_to(tmp_path) == f"127.0.0.1:{pair.standby_port}")
        stop_process(proc)
    log = (tmp_path / "agent.log").read_text()
    assert f"writing to the PostgreSQL server at 127.0.0.1:{pair.standby_port}" in log


async def test_a_fleet_of_two_agents_fails_over_each_host_exact_and_its_name_still_held(
    tmp_path: Path, containers: Containers, async_pair: ReplicatedPair
) -> None:
    pair, hosts = async_pair, ("alpha", "beta")
    primary, standby, url = (
        pair.primary_url("logs"),
        pair.standby_url("logs"),
        pair.multi_url("logs"),
    )
    fleet = [
        start_agent_process(tmp_path, url, host=h, scope=f"{FLEET_LABEL}={RUN_ID}-{h}")
        for h in hosts
    ]
    cids = [
        containers.run(h, numbered_bursts(BURSTS, 0.1), "--label", f"{FLEET_LABEL}={RUN_ID}-{h}")
        for h in hosts
    ]
    await eventually(lambda: count(primary, cids) > 40_000, limit=180)
    before = await fail_over(pair, primary, cids, lose=True, host="alpha")
    assert 0 < commits(standby, "alpha") < before  # the newest commits are lost for real
    took = await first_commit_after(standby, hosts)
    print(f"\nfleet: promotion to each host's first new commit: {took:.1f} s")
    # Each host's name is held on the new primary: a third agent claiming one is refused.
    locks = "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
    await eventually(lambda: query(standby, locks)[0][0] >= 2, limit=60)
    with pytest.raises(StoreLocked):
        async with LogStorage(url, host="alpha"):
            pass
    for h in hosts:
        await anyio.to_thread.run_sync(containers.wait, h)
    await until_reached(lambda: count(standby, cids), 2 * N)
    await anyio.sleep(1)
    for proc in fleet:
        stop_process(proc)
    for host, cid in zip(hosts, cids, strict=True):
        assert_exact(standby, cid)
        assert query(standby, "SELECT DISTINCT host FROM log_lines WHERE " + SOURCE, cid) == [
            (host,)
        ]


def keys(lines: list[str], name: str) -> Counter[tuple[str, str]]:
    """(timestamp, message) of a container's lines as `logs -f --json` printed them."""
    found: Counter[tuple[str, str]] = Counter()
    for line in lines:
        row = json.loads(line)
        if row.get("container_name") == name and "stream" in row:
            found[(row["timestamp"], row["message"])] += 1
    return found


async def test_logs_f_and_the_live_tail_across_a_failover_print_every_new_row_once(
    tmp_path: Path, containers: Containers, async_pair: ReplicatedPair
) -> None:
    """Followers on the multi-host URL (first the primary, then the promoted standby) and on
    the standby itself. A follower ahead of the new primary rewinds to what it holds: every
    row of the new primary is printed, once; what it printed before from the old primary and
    the new primary lacks (read again from Docker) is all it prints twice. On the standby,
    which never had those rows, every line is printed exactly once."""
    pair = async_pair
    primary, standby = pair.primary_url("logs"), pair.standby_url("logs")
    reader = pair.multi_url("logs").split("?")[0]  # the read side: any server that answers
    agent = start_agent_process(tmp_path, pair.multi_url("logs"))
    name = f"{containers.prefix}-tail"
    followers: list[subprocess.Popen[bytes]] = []
    for label, url in (("multi", reader), ("standby", standby)):
        (tmp_path / f"{label}.toml").write_text(f'[storage]\nread_url = "{url}"\n')
        config = str(tmp_path / f"{label}.toml")
        with (
            open(tmp_path / f"{label}.out", "wb") as out,
            open(tmp_path / f"{label}.err", "wb") as err,
        ):
            command = [sys.executable, "-m", "agent", "logs", "-f", "--json", "--config", config]
            followers.append(subprocess.Popen([*command, name], cwd=ROOT, stdout=out, stderr=err))
    tail: list[dict[str, Any]] = []
    try:
        async with open_store(reader) as db:
            viewer = Viewer(db, reader, Access(), "127.0.0.1", PORT)
            async with AsyncExitStack() as stack:
                await viewer.listen(stack)
                async with TestClient(TestServer(viewer.app())) as client:
                    before = (await committed(db)).token()  # the tail takes over from here
                    cid = containers.run("tail", numbered_bursts(BURSTS, 0.1))
                    await eventually(lambda: count(primary, [cid]) > 0, limit=60)  # it is known
                    response = await client.get(f"/api/tail?c={name}&after={before}", headers=HOST)
                    assert response.status == 200

                    async def read_tail() -> None:
                        buffer = b""
                        while chunk := await response.content.readany():
                            buffer += chunk
                            *events, buffer = buffer.split(b"\n\n")
                            for event in events:
                                fields = dict(
                                    f.split(b": ", 1) for f in event.split(b"\n") if b": " in f
                                )
                                if b"data" in fields and fields.get(b"event") == b"rows":
                                    tail.extend(json.loads(fields[b"data"]))

                    async with anyio.create_task_group() as tg:
                        tg.start_soon(read_tail)
                        await eventually(lambda: count(primary, [cid]) > 20_000, limit=180)
                        await fail_over(pair, primary, [cid], lose=True)
                        await anyio.to_thread.run_sync(containers.wait, "tail")
                        await until_reached(lambda: count(standby, [cid]), N)
                        await until_reached(lambda: len(set((r["ts"], r["msg"]) for r in tail)), N)
                        tg.cancel_scope.cancel()
                    response.close()
        for label in ("multi", "standby"):
            out = tmp_path / f"{label}.out"
            await until_reached(lambda o=out: len(keys(o.read_text().splitlines(), name)), N)  # type: ignore[misc]
    finally:
        for proc in (agent, *followers):
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
    stored = Counter((t, m) for _, t, m in rows_in(standby, cid))
    assert len(stored) == N and set(stored.values()) == {1}
    on_standby = keys((tmp_path / "standby.out").read_text().splitlines(), name)
    assert on_standby == stored  # never saw the lost rows: each line once
    for printed in (
        keys((tmp_path / "multi.out").read_text().splitlines(), name),
        Counter((r["ts"], r["msg"]) for r in tail),
    ):
        assert set(printed) == set(stored)  # every row of the new primary
        twice = [k for k, n in printed.items() if n > 1]
        assert all(printed[k] == 2 for k in twice)
        assert len(twice) < N // 4, len(twice)  # only the lost span, read again


async def test_a_store_restored_from_a_dump_taken_10s_earlier_is_exact_after_the_reconnect(
    tmp_path: Path, containers: Containers, pg_url: str
) -> None:
    """The dump is restored into a fresh database, which then takes the store's name (what an
    operator does: the agent's connections are cut, and it finds the older store)."""
    database = pg_url.rsplit("/", 1)[1]
    base = pg_url.rsplit("/", 1)[0]
    admin = f"{base}/postgres"
    dump = tmp_path / "store.dump"
    proc = start_agent_process(tmp_path, pg_url)
    cid = containers.run("restored", numbered_bursts(BURSTS, 0.2))
    await eventually(lambda: count(pg_url, [cid]) > 10_000, limit=180)
    await anyio.to_thread.run_sync(
        lambda: subprocess.run(["pg_dump", "-Fc", "-f", str(dump), pg_url], check=True, timeout=300)
    )
    dumped = commits(pg_url)
    await anyio.sleep(10)
    execute(admin, f"CREATE DATABASE {database}_restore")
    await anyio.to_thread.run_sync(
        lambda: subprocess.run(
            ["pg_restore", "-d", f"{base}/{database}_restore", str(dump)],
            check=True,
            timeout=300,
        )
    )
    assert commits(pg_url) > dumped  # the agent wrote on meanwhile
    execute(admin, f"DROP DATABASE {database} WITH (FORCE)")
    execute(admin, f"ALTER DATABASE {database}_restore RENAME TO {database}")
    await anyio.to_thread.run_sync(containers.wait, "restored")
    await until_reached(lambda: count(pg_url, [cid]), N)
    await anyio.sleep(1)
    stop_process(proc)
    assert_exact(pg_url, cid)
    log = (tmp_path / "agent.log").read_text()
    assert "collecting again from what it holds" in log, log[-3000:]
