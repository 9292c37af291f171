"""The control API, metrics, `status` and `collectors`, and the proof that the agent only reads."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import aiohttp
import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import (
    ROOT,
    Containers,
    agent_settings,
    docker,
    eventually,
    running_agent,
    stored_rows,
)

pytestmark = [pytest.mark.docker, pytest.mark.anyio]
TOKEN = "t0ken-for-tests-only"


async def call(sock: str, method: str, path: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    async with (
        aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=sock)) as session,
        session.request(method, f"http://agent{path}") as response,
    ):
        return response.status, await response.json()


def cli(tmp_path: Path, sock: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "LOGAGENT_DB_URL": f"sqlite:///{tmp_path}/logs.db",
        "LOGAGENT_API_SOCKET": sock,
    }
    return subprocess.run(
        [sys.executable, "-m", "agent", *args], env=env, cwd=ROOT, capture_output=True, text=True
    )


async def test_collectors_can_be_listed_stopped_and_started_by_hand(
    tmp_path: Path, containers: Containers
) -> None:
    settings = agent_settings(tmp_path)
    sock = settings.api_socket
    async with running_agent(settings) as agent:
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        cid = containers.run("steered", "while true; do echo tick; sleep 0.05; done")
        await eventually(lambda: len(stored_rows(tmp_path, cid)) > 5)
        status, body = await call(sock, "GET", "/collectors")
        assert status == 200
        assert [c["container_id"] for c in body["collectors"]] == [cid]

        listed = await anyio.to_thread.run_sync(lambda: cli(tmp_path, sock, "collectors", "ls"))
        assert listed.stdout.startswith(f"{containers.prefix}-steered\t{cid[:12]}\trunning")

        stopped = await anyio.to_thread.run_sync(
            lambda: cli(tmp_path, sock, "collectors", "stop", f"{containers.prefix}-steered")
        )
        assert stopped.returncode == 0, stopped.stderr
        assert agent.manager is not None and agent.reconciler is not None
        assert agent.manager.active_collectors() == {}
        await agent.reconciler.sync()  # a re-listing (as after a reconnect) leaves it stopped
        await anyio.sleep(0.3)
        assert agent.manager.active_collectors() == {}
        _, body = await call(sock, "GET", "/collectors")
        assert body["stopped"][0]["container_id"] == cid
        shown = await anyio.to_thread.run_sync(lambda: cli(tmp_path, sock, "status"))
        assert f"{cid[:12]}\tstopped by hand\t" in shown.stdout

        status, body = await call(sock, "POST", f"/collectors/{cid[:12]}")
        assert status == 200 and body["state"] == "running"
        status, body = await call(sock, "POST", "/collectors/no-such-container-here")
        assert status == 404

        await call(sock, "DELETE", f"/collectors/{cid}")
        docker("restart", "-t", "0", cid)  # its next start event collects it again
        await eventually(lambda: agent.manager is not None and bool(agent.manager.get(cid)))
        shown = await anyio.to_thread.run_sync(lambda: cli(tmp_path, sock, "status", "--json"))
        assert '"state": "collecting"' in shown.stdout
    rows = stored_rows(tmp_path, cid)
    assert len(rows) == len(set(rows))  # stopping and starting by hand doubled nothing


async def test_metrics_parse_and_match_the_rows_stored(
    tmp_path: Path, containers: Containers
) -> None:
    settings = agent_settings(tmp_path)
    async with running_agent(settings):
        cid = containers.run("counted", "seq 1 1234; echo err >&2")
        await eventually(lambda: len(stored_rows(tmp_path, cid)) == 1235)
        await anyio.sleep(0.2)
        async with (
            aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=settings.api_socket)
            ) as session,
            session.get("http://agent/metrics") as response,
        ):
            text = await response.text()
        status, health = await call(settings.api_socket, "GET", "/healthz")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    lines = {
        s.labels["stream"]: s.value
        for s in families["logagent_lines"].samples
        if s.name == "logagent_lines_total" and s.labels["container_id"] == cid[:12]
    }
    assert lines == {"stdout": 1234, "stderr": 1}
    rows = [s for s in families["logagent_rows_written"].samples if s.name.endswith("_total")]
    assert rows[0].value == 1235
    assert "logagent_write_seconds" in families
    assert "logagent_active_collectors" in families
    reads = families["logagent_stream_reads"].samples[0].value
    assert 1 <= reads <= 1235  # the collector ended: its reads are still counted
    paced = {"logagent_stream_rests", "logagent_stream_chatty_rests", "logagent_stream_busy_spells"}
    assert paced <= set(families)
    assert status == 200 and health["docker"] and health["database"] and health["events"]


async def test_tcp_listener_refuses_requests_without_the_token(tmp_path: Path) -> None:
    port = 20000 + os.getpid() % 20000
    settings = agent_settings(tmp_path, api_tcp_port=port, api_token=TOKEN)
    async with running_agent(settings), aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{port}/metrics"  # TCP serves only metrics and health
        async with session.get(url) as response:
            assert response.status == 401
        async with session.get(url, headers={"Authorization": "Bearer wrong"}) as response:
            assert response.status == 401
        async with session.get(url, headers={"Authorization": f"Bearer {TOKEN}"}) as response:
            assert response.status == 200


async def test_the_agent_only_ever_sends_get_requests(
    tmp_path: Path, containers: Containers
) -> None:
    settings = agent_settings(tmp_path)
    async with running_agent(settings, record_requests=True) as agent:
        cid = containers.run("audited", "seq 1 100; sleep 30", "--stop-timeout", "1")
        other = containers.run("short", "echo bye")
        await eventually(lambda: len(stored_rows(tmp_path, cid)) == 100)
        await eventually(lambda: len(stored_rows(tmp_path, other)) == 1)
        docker("restart", "-t", "0", cid)
        await call(settings.api_socket, "DELETE", f"/collectors/{cid}")
        await call(settings.api_socket, "POST", f"/collectors/{cid}")
        await call(settings.api_socket, "GET", "/healthz")
        await anyio.sleep(0.5)
        assert agent.client is not None
        requests = list(agent.client.requests)
    methods = {method for method, _ in requests}
    paths = {path.split("/", 2)[-1] for _, path in requests}
    assert methods == {"GET"}, requests
    assert {"events", "containers/json", "version"} <= paths
    assert any(p.endswith("/logs") for p in paths) and any(p.endswith("/json") for p in paths)
