"""A shutdown re-reads only the streams that may hold more than they sent (issue 29).

A graceful stop used to close every follow stream and make one plain read per container of
what Docker holds, so its time grew with the count. A stream with no line for `idle_s`
that reads nothing in `settle_s` more has sent all there is: it is closed without the read.
Measured here by counting the plain reads the collectors ask dockerd for, and by the rows:
none lost, none twice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from agent.collectors.docker import DockerLogCollector
from agent.collectors.manager import LogCollectorManager
from agent.collectors.progress import now
from agent.docker.client import DockerClient
from agent.storage.store import LogStorage
from tests.conftest import Containers, db_url, docker, eventually, stored_rows

pytestmark = [pytest.mark.anyio, pytest.mark.docker]


class CountingClient(DockerClient):
    """The real client, counting the plain (not followed) log reads it opens."""

    plain_reads = 0

    def logs(self, container_id: str, **kw: Any) -> Any:
        if not kw.get("follow", True):
            self.plain_reads += 1
        return super().logs(container_id, **kw)


@asynccontextmanager
async def parts(tmp_path: Path) -> AsyncIterator[tuple[CountingClient, LogCollectorManager]]:
    async with (
        LogStorage(db_url(tmp_path), host="test-host") as storage,
        CountingClient() as client,
        LogCollectorManager(storage, client=client, tail="all") as manager,
    ):
        yield client, manager


def texts(tmp_path: Path, cid: str) -> list[str]:
    return [message for _stream, _ts, message in stored_rows(tmp_path, cid)]


def quick(collector: DockerLogCollector, *, settle: float = 0.5) -> None:
    """Idle after 0.5 s rather than 5 s: the test need not wait for it."""
    collector.idle_s, collector.settle_s = 0.5, settle


async def test_an_idle_stream_is_closed_without_a_reread_and_a_busy_one_is_drained(
    tmp_path: Path, containers: Containers
) -> None:
    idle = containers.run("idle", "echo one; echo two; echo three; sleep 1000")
    busy = containers.run("busy", "i=0; while true; do i=$((i+1)); echo $i; sleep 0.02; done")
    async with parts(tmp_path) as (client, manager):
        for cid in (idle, busy):
            quick(await manager.start_docker_collector(cid))
        await eventually(lambda: len(texts(tmp_path, idle)) == 3, limit=60)
        await eventually(lambda: len(texts(tmp_path, busy)) >= 20, limit=60)
        collector = manager.get(idle)
        assert collector is not None
        await eventually(lambda: now() - collector.progress.at > 0.6)
        assert client.plain_reads == 0
        await manager.stop_all(drain=True)
        assert client.plain_reads == 1  # the busy one's drain alone
    assert texts(tmp_path, idle) == ["one", "two", "three"]
    numbers = [int(text) for text in texts(tmp_path, busy)]
    assert numbers == list(range(1, len(numbers) + 1))  # none lost, none twice
    # What was stored is all Docker had when the stop came, and the next start goes on
    # from there: the rows and the container's own log agree once it is stopped.
    docker("stop", "-t", "1", busy)
    async with parts(tmp_path) as (_client, manager):
        collector = await manager.start_docker_collector(busy)
        with anyio.fail_after(60):
            await collector.wait()
        await manager.stop_all()
    held = docker("logs", busy).decode().split()
    assert [int(t) for t in texts(tmp_path, busy)] == [int(t) for t in held]


async def test_a_line_during_the_settle_makes_the_stream_drain(
    tmp_path: Path, containers: Containers
) -> None:
    cid = containers.run(
        "wakes", "echo first; until [ -f /tmp/go ]; do sleep 0.05; done; echo second; sleep 1000"
    )
    async with parts(tmp_path) as (client, manager):
        collector = await manager.start_docker_collector(cid)
        quick(collector, settle=30.0)  # long: the line comes within it, however busy
        await eventually(lambda: texts(tmp_path, cid) == ["first"], limit=60)
        await eventually(lambda: now() - collector.progress.at > 0.6)
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: manager.stop_all(drain=True))
            await anyio.sleep(0.2)
            docker("exec", cid, "touch", "/tmp/go")
        assert client.plain_reads == 1
    assert texts(tmp_path, cid) == ["first", "second"]
