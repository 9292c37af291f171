"""Hardening, tried as a hostile local user and a careless operator would, on the real dockerd."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import aiohttp
import anyio
import pytest
from yarl import URL

from agent.batch import Line
from agent.storage import LogStorage
from tests.conftest import (
    IMAGE,
    ROOT,
    Containers,
    agent_settings,
    db_url,
    docker,
    eventually,
    running_agent,
    short_socket_path,
    start_agent_process,
    stored_rows,
    until_decided,
    write_line,
)
from tests.integration.test_api import TOKEN, call

pytestmark = [pytest.mark.anyio]  # Docker: marked per test, only where it is used


def logagent(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        env={**os.environ, **(env or {})}, cwd=ROOT, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


@pytest.mark.docker
async def test_store_files_and_folder_are_the_agents_alone(
    tmp_path: Path, containers: Containers
) -> None:
    store = tmp_path / "data" / "logs.db"
    settings = replace(agent_settings(tmp_path), db_url=f"sqlite:///{store}")
    async with running_agent(settings):
        cid = containers.run("secret", "echo password=hunter2")
        await eventually(lambda: Path(f"{store}-wal").exists())
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in store.parent.iterdir()}
    assert stat.S_IMODE(store.parent.stat().st_mode) == 0o700
    assert modes == {name: 0o600 for name in modes} and {"logs.db", "logs.db-wal"} <= set(modes)
    assert cid


async def test_a_store_left_world_readable_is_narrowed(tmp_path: Path) -> None:
    async with LogStorage(db_url(tmp_path), host="h"):
        pass
    (tmp_path / "logs.db").chmod(0o644)  # as logagent before 0.2 left it
    async with LogStorage(db_url(tmp_path), host="h"):
        pass
    assert stat.S_IMODE((tmp_path / "logs.db").stat().st_mode) == 0o600


@pytest.mark.docker
async def test_a_second_agent_on_the_same_store_refuses_to_start(tmp_path: Path) -> None:
    first = start_agent_process(tmp_path)
    try:
        await eventually(lambda: (tmp_path / "logs.db.lock").exists() and first.poll() is None)
        await anyio.sleep(1)
        second = start_agent_process(tmp_path, ready=False)
        with anyio.fail_after(60):
            while second.poll() is None:  # noqa: ASYNC110
                await anyio.sleep(0.1)
        assert second.returncode == 2
        log = (tmp_path / "agent.log").read_text()
        assert f"another logagent (pid {first.pid}) is writing to" in log
        assert "Traceback" not in log
        assert first.poll() is None  # the first goes on
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=30)


async def test_the_queue_is_bounded_in_bytes_while_the_store_is_locked(tmp_path: Path) -> None:
    bound = 8 * 1024 * 1024
    async with LogStorage(db_url(tmp_path), host="h", max_queue_bytes=bound) as storage:
        await write_line(storage, "c" * 64, "big", Line("stdout", 1, "t", "first", 0, 5))
        await storage.flush()
        written = 0

        async def producer() -> None:
            nonlocal written
            for n in range(64):
                text = f"{n:04d}" + "z" * (512 * 1024 - 4)
                await write_line(
                    storage, "c" * 64, "big", Line("stdout", 2 + n, "t", text, 0, len(text))
                )
                written += 1

        with closing(sqlite3.connect(tmp_path / "logs.db", timeout=10)) as locker:
            locker.execute("BEGIN EXCLUSIVE")  # another process holds the store
            async with anyio.create_task_group() as tg:
                tg.start_soon(producer)
                await eventually(lambda: storage.writer.queued_bytes >= bound)
                await anyio.sleep(0.5)
                assert written < 64  # held back, not buffered
                assert storage.writer.queued_bytes <= bound + 513 * 1024  # + one line
                locker.rollback()
        await storage.flush()
    with closing(sqlite3.connect(tmp_path / "logs.db")) as conn:
        assert conn.execute("SELECT COUNT(*) FROM log_lines").fetchone()[0] == 65


@pytest.mark.docker
async def test_api_paths_cannot_reach_other_docker_endpoints(tmp_path: Path) -> None:
    settings = agent_settings(tmp_path)
    async with running_agent(settings, record_requests=True) as agent:
        assert agent.client is not None
        before = len(agent.client.requests)
        crafted = ("..%2F..%2Fversion", "x%2Fexport%3F", "a%20b", "%2E%2E", "-x", "a%00b")
        async with aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=settings.api_socket)
        ) as session:
            for ref in crafted:  # sent as written, as curl --path-as-is would
                url = URL(f"http://agent/collectors/{ref}", encoded=True)
                for method in ("POST", "DELETE"):
                    async with session.request(method, url) as response:
                        assert response.status == 400, (method, ref, response.status)
                        assert "not a container name or id" in (await response.json())["error"]
        sent = agent.client.requests[before:]
    assert sent == [], sent  # nothing reached Docker


@pytest.mark.docker
async def test_a_hand_start_respects_the_owner_label_and_the_scope(
    tmp_path: Path, containers: Containers
) -> None:
    settings = agent_settings(tmp_path)
    async with running_agent(settings) as agent:
        off = containers.run("optout", "echo private; sleep 30", "--label", "logagent.enable=false")
        name = f"{containers.prefix}-outside"
        containers.names.append(name)
        outside = docker(
            "run", "-d", "--network", "none", "--name", name, IMAGE, "sh", "-c", "sleep 30"
        ).decode().strip()  # fmt: skip
        status, body = await call(settings.api_socket, "POST", f"/collectors/{off}")
        assert status == 403 and "logagent.enable=false" in body["error"]
        status, body = await call(settings.api_socket, "POST", f"/collectors/{outside}")
        assert status == 403 and "scope" in body["error"]
        assert "logagent.enable=false" in await until_decided(agent, off)
        assert agent.manager is not None
        assert agent.manager.get(off) is None and agent.manager.get(outside) is None
    assert stored_rows(tmp_path, off) == [] and stored_rows(tmp_path, outside) == []


@pytest.mark.docker
async def test_the_tcp_token_reads_metrics_and_steers_nothing(
    tmp_path: Path, containers: Containers
) -> None:
    port = 20000 + (os.getpid() + 7) % 20000
    settings = agent_settings(tmp_path, api_tcp_port=port, api_token=TOKEN)
    async with running_agent(settings), aiohttp.ClientSession() as session:
        cid = containers.run("steady", "while true; do echo tick; sleep 0.1; done")
        await eventually(lambda: len(stored_rows(tmp_path, cid)) > 2)
        base = f"http://127.0.0.1:{port}"
        good = {"Authorization": f"bearer {TOKEN}"}  # the scheme is case-insensitive
        async with session.get(f"{base}/metrics", headers=good) as response:
            assert response.status == 200
        async with session.get(f"{base}/healthz", headers=good) as response:
            assert response.status == 200
        for method, path in [("DELETE", f"/collectors/{cid}"), ("POST", f"/collectors/{cid}"),
                             ("GET", "/collectors")]:  # fmt: skip
            async with session.request(method, base + path, headers=good) as response:
                assert response.status in (404, 405), (method, path, response.status)
        weird = {"Authorization": "Bearer t\u00f6ken-\u2603"}
        async with session.get(f"{base}/metrics", headers=weird) as response:
            assert response.status == 401
        count = len(stored_rows(tmp_path, cid))
        await eventually(lambda: len(stored_rows(tmp_path, cid)) > count)  # still collected


@pytest.mark.docker
async def test_a_socket_folder_others_can_write_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = Path(short_socket_path()).parent
    folder.chmod(0o777)
    settings = agent_settings(tmp_path, api_socket=str(folder / "agent.sock"))
    async with running_agent(settings):
        await anyio.sleep(0.2)
    assert not (folder / "agent.sock").exists()
    assert any("writable by others" in r.getMessage() for r in caplog.records)


def corrupt(path: Path) -> None:
    with open(path, "r+b") as f:
        f.seek(4096)
        f.write(os.urandom(8192))


@pytest.mark.docker
async def test_a_corrupted_store_ends_the_agent_with_one_line(tmp_path: Path) -> None:
    async with LogStorage(db_url(tmp_path), host="test-host") as storage:
        for n in range(2000):
            await write_line(storage, "d" * 64, "x", Line("stdout", n, "t", "y" * 100, 0, 100))
    corrupt(tmp_path / "logs.db")
    proc = start_agent_process(tmp_path, ready=False)
    proc.wait(timeout=60)
    text = (tmp_path / "agent.log").read_text()
    assert proc.returncode == 1, text
    assert "Traceback" not in text
    assert "logagent: storage error:" in text
    assert "malformed" in text or "not a database" in text


async def test_start_up_errors_are_one_line_with_the_right_exit_code(tmp_path: Path) -> None:
    bad_socket = logagent("run", env={"DOCKER_SOCKET": "ftp://nowhere"})
    assert bad_socket.returncode == 2
    assert one_line_error(bad_socket).startswith("logagent: config error: docker.socket")
    (tmp_path / "adir.db").mkdir()  # a store path that cannot be a file
    unusable = logagent("run", env={"LOGAGENT_DB_URL": f"sqlite:///{tmp_path}/adir.db",
                                    "LOGAGENT_API_SOCKET": ""})  # fmt: skip
    assert unusable.returncode == 1
    assert one_line_error(unusable).startswith("logagent: storage error:")


@pytest.mark.docker
async def test_events_with_huge_labels_do_not_stop_the_agent(
    tmp_path: Path, containers: Containers
) -> None:
    # 640 KB of labels, in every event of the container: past aiohttp's 512 KiB line limit.
    labels = [f"--label=big{i}={'L' * 80_000}" for i in range(8)]
    async with running_agent(agent_settings(tmp_path)) as agent:
        big = containers.run("biglabel", "echo big", *labels)
        after = containers.run("after", "echo after")
        await eventually(lambda: [r[2] for r in stored_rows(tmp_path, after)] == ["after"])
        assert agent.follower is not None and agent.follower.connected
    assert [r[2] for r in stored_rows(tmp_path, big)] == ["big"]


async def test_read_side_commands_never_create_a_store(tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "logs.db"
    env = {"LOGAGENT_DB_URL": f"sqlite:///{missing}", "LOGAGENT_API_SOCKET": short_socket_path()}
    for command in (["logs"], ["status"], ["gaps"]):
        done = logagent(*command, env=env)
        assert done.returncode == 1, done
        assert one_line_error(done) == (
            f"logagent: storage error: no store at {missing}: is storage.db_url "
            "(LOGAGENT_DB_URL) right?"
        )
    assert not missing.exists() and not missing.parent.exists()


@pytest.mark.docker
async def test_bad_times_and_patterns_are_one_line_and_ctrl_c_ends_logs(
    tmp_path: Path, containers: Containers
) -> None:
    async with running_agent(agent_settings(tmp_path)):
        cid = containers.run("aaa", "printf 'a%.0s' $(seq 1 30000); echo '!'; echo fine")
        await eventually(lambda: len(stored_rows(tmp_path, cid)) == 2)
    env = {"LOGAGENT_DB_URL": f"sqlite:///{tmp_path}/logs.db"}
    for since in ("inf", "1e300", "99999999999999d", ""):
        done = logagent("logs", "--since", since, cid, env=env)
        assert done.returncode == 2, (since, done.stderr)
        one_line_error(done)
    started = time.monotonic()
    slow = logagent("logs", "--grep", "(a+)+$", cid, env=env, timeout=120)
    assert slow.returncode == 0 and slow.stdout == ""
    print(f"\n--grep '(a+)+$' over a 30,000-byte line: {time.monotonic() - started:.2f} s")
    follower = subprocess.Popen(
        [sys.executable, "-m", "agent", "logs", "-f", cid],
        env={**os.environ, **env}, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert follower.stdout is not None
        follower.stdout.readline()  # it is following
        follower.send_signal(signal.SIGINT)
        follower.wait(timeout=5)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 130
    assert b"Traceback" not in follower.communicate()[1]


@pytest.mark.docker
async def test_a_removed_containers_metrics_go_after_the_grace(
    tmp_path: Path, containers: Containers
) -> None:
    settings = agent_settings(tmp_path)
    async with running_agent(settings) as agent:
        agent.storage.writer.tallies.grace = 3.0
        cid = containers.run("counted", "echo one")
        await eventually(lambda: len(stored_rows(tmp_path, cid)) == 1)

        async def metrics() -> str:
            async with (
                aiohttp.ClientSession(
                    connector=aiohttp.UnixConnector(path=settings.api_socket)
                ) as session,
                session.get("http://agent/metrics") as response,
            ):
                return await response.text()

        await eventually(lambda: agent.registry.get(cid) is not None)
        assert cid[:12] in await metrics()
        docker("rm", cid)
        await eventually(lambda: agent.registry.get(cid) is None)
        assert cid[:12] in await metrics()  # its last counts, for a last scrape
        # The grace begins when the removal is committed (storage/tallies.py), which a busy
        # machine may delay: waited on, not timed.
        with anyio.fail_after(60):
            while cid[:12] in await metrics():  # noqa: ASYNC110 (a scrape, polled)
                await anyio.sleep(0.1)
