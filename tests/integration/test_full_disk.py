"""A full disk at the wrong moment, on a real full file system (a small tmpfs, filled).

A commit that fails must leave nothing in memory that believes it committed: the store is
the truth. Before, a new container's row was given its id inside a transaction whose COMMIT
then failed: every line was stored under a row that did not exist, with no read position.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from agent.batch import LineBatch, Source
from agent.storage import LogStorage
from agent.storage.db import agent_lock
from agent.storage.reader import open_store
from tests.conftest import Containers, agent_settings, query, rows_in, running_agent
from tests.integration.test_collector import docker_reference
from tests.integration.test_fleet_follow import progressing
from tests.integration.test_logs_cli import logagent

pytestmark = [pytest.mark.anyio]
T0 = 1_764_000_000_000_000_000


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs of this test's own (root: CI and the tests run as root)."""
    where = tmp_path / "fs"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(where: Path) -> Path:
    """Fill the file system to its last byte; the filler's path, to free it."""
    filler = where / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12, 512, 1):
            block = b"\0" * size
            try:
                while True:
                    os.write(fd, block)
            except OSError:
                continue
    finally:
        os.close(fd)
    return filler


def batch(source: Source, first: int, n: int) -> LineBatch:
    out = LineBatch(source)
    for i in range(first, first + n):
        out.append("stdout", T0 + i, "", f"line {i}", 0, 8)
    out.position = {"stdout": (T0 + first + n - 1, 1)}
    return out


async def until_failing(storage: LogStorage) -> None:
    with anyio.fail_after(60):
        while storage.failing is None:  # noqa: ASYNC110 (the writer sets no event)
            await anyio.sleep(0.05)


async def test_a_new_containers_first_commit_on_a_full_disk_keeps_its_row(small_fs: Path) -> None:
    url = f"sqlite:///{small_fs / 'logs.db'}"
    async with LogStorage(url, host="h", retry_delay=0.1) as storage:
        filler = fill(small_fs)
        source = Source("c" * 64, "newcomer")
        await storage.write(batch(source, 0, 2000))
        await storage.record_gap(Source("d" * 64, "gapped"), "lost before the disk filled")
        await until_failing(storage)
        async with open_store(url) as db:  # reading works on a full disk
            _, rows = await db.execute_query("SELECT COUNT(*) FROM log_lines")
            assert list(rows[0]) == [0]
        filler.unlink()
        await storage.write(batch(source, 2000, 10))
        await storage.flush()
    cursors = query(url, "SELECT id, container_name, stdout_ts FROM container_cursors ORDER BY id")
    assert [(name, ts) for _id, name, ts in cursors] == [
        ("newcomer", T0 + 2009),
        ("gapped", None),
    ]
    assert query(url, "SELECT source_id, COUNT(*) FROM log_lines GROUP BY source_id") == [
        (cursors[0][0], 2010)
    ]
    assert query(url, "SELECT container_name, reason FROM gaps") == [
        ("gapped", "lost before the disk filled")
    ]
    assert query(url, "SELECT host FROM agent_state") == [("h",)]


async def test_a_full_disk_with_no_agent_running_is_still_read(small_fs: Path) -> None:
    """The agent stopped cleanly (no -wal, no -shm), then the disk filled: SQLite cannot
    create the -shm a WAL store's first reader needs ("disk I/O error"), so the read side
    reads the file as it is, and says so."""
    url = f"sqlite:///{small_fs / 'logs.db'}"
    async with LogStorage(url, host="h") as storage:
        await storage.write(batch(Source("c" * 64, "stopped"), 0, 300))
    assert not (small_fs / "logs.db-wal").exists()  # a clean close leaves the file whole
    filler = fill(small_fs)
    try:
        shown = logagent(url, "logs", "stopped")
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.splitlines() == [f"line {i}" for i in range(300)]
        assert "read as it is on disk" in shown.stderr, shown.stderr
        status = logagent(url, "status")
        assert status.returncode == 0 and "stopped" in status.stdout, status
        # A long-lived reader would never see new lines: it is refused, in one line.
        follow = logagent(url, "logs", "-f", "stopped")
        assert follow.returncode == 1 and follow.stdout == "", follow
        assert len(follow.stderr.splitlines()) == 1 and "storage error" in follow.stderr, follow
        # So is any reader while an agent holds the store (it may be writing).
        with agent_lock(small_fs / "logs.db"):
            held = logagent(url, "logs", "stopped")
        assert held.returncode == 1 and "read as it is" not in held.stderr, held
    finally:
        filler.unlink()
    # With room again, the usual way (and the agent) work on the same files.
    async with LogStorage(url, host="h") as storage:
        await storage.write(batch(Source("c" * 64, "stopped"), 300, 1))
    shown = logagent(url, "logs", "stopped")
    assert shown.stdout.splitlines()[-1] == "line 300" and shown.stderr == "", shown


@pytest.mark.docker
async def test_an_agent_whose_disk_fills_and_frees_stores_every_line_once(
    tmp_path: Path, small_fs: Path, containers: Containers
) -> None:
    """The issue's case: the disk fills while a new container's first batch is written, and
    is freed 8 s later; the agent must end with every line under its container, its read
    position committed, and its own state row."""
    url = f"sqlite:///{small_fs / 'logs.db'}"
    settings = replace(agent_settings(tmp_path), db_url=url)
    async with running_agent(settings) as agent:
        filler = fill(small_fs)
        cid = containers.run("burst", "seq 1 200000")
        storage = agent.storage
        assert storage is not None
        await until_failing(storage)
        await anyio.sleep(8)
        filler.unlink()
        await progressing(lambda: len(rows_in(url, cid)), 200_000)
    assert rows_in(url, cid) == docker_reference(f"{containers.prefix}-burst")
    (ts,) = query(url, "SELECT stdout_ts FROM container_cursors WHERE container_id = ?", cid)[0]
    assert ts is not None
    assert query(url, "SELECT COUNT(*) FROM agent_state WHERE last_shutdown_ns IS NOT NULL") == [
        (1,)
    ]
    shown = logagent(url, "logs", f"{containers.prefix}-burst").stdout.splitlines()
    assert shown == [str(i) for i in range(1, 200_001)]
