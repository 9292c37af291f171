"""The read commands against a store that is away, and `status` of containers that ended."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from agent import commands
from agent.batch import LineBatch, Source
from agent.storage import LogStorage, StorageError
from agent.timestamps import format_timestamp
from tests.conftest import ROOT, serve_unix, short_socket_path

pytestmark = [pytest.mark.anyio]

SECRET = "s3cret-Pw"
LOGAGENT = ROOT / ".venv" / "bin" / "logagent"


def unreachable_url() -> str:
    """A PostgreSQL URL, with a password, on a port of 127.0.0.1 that nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"postgres://logagent:{SECRET}@127.0.0.1:{port}/logs"


@pytest.mark.parametrize("command", [["logs"], ["logs", "-f"], ["status"], ["gaps"]])
def test_a_read_command_against_an_unreachable_postgres_says_one_line(
    command: list[str],
) -> None:
    url = unreachable_url()
    env = {**os.environ, "LOGAGENT_DB_URL": url, "LOGAGENT_API_SOCKET": short_socket_path()}
    done = subprocess.run(
        [str(LOGAGENT), *command], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    shown = url.replace(SECRET, "***")
    assert lines[0].startswith(f"logagent: storage error: cannot read database '{shown}': ")
    assert "Connect call failed" in lines[0]
    assert "check that the database server runs there" in lines[0]
    assert SECRET not in done.stderr


async def test_opening_an_unreachable_store_says_so_without_the_password() -> None:
    url = unreachable_url()
    with pytest.raises(StorageError) as caught:
        async with LogStorage(url, host="h"):
            pass
    said = str(caught.value)
    assert said.startswith(f"cannot open database '{url.replace(SECRET, '***')}': ")
    assert "check that the database server runs there" in said
    assert SECRET not in said


@asynccontextmanager
async def agent_answering(collecting: list[str]) -> AsyncIterator[str]:
    """A control socket that answers as a running agent collecting these containers."""

    async def listing(_r: web.Request) -> web.Response:
        return web.json_response(
            {
                "collectors": [{"container_id": c} for c in collecting],
                "stopped": [],
                "failed": [],
                "excluded": [],
            }
        )

    app = web.Application()
    app.add_routes([web.get("/collectors", listing)])
    async with serve_unix(app) as path:
        yield path


async def stored(url: str, states: dict[str, str]) -> None:
    """One line per container, an hour ago, then its state as a collector marks it."""
    async with LogStorage(url, host="test-host") as storage:
        for name, state in states.items():
            source = Source(name * 12, name)
            ns = time.time_ns() - 3600 * 10**9
            batch = LineBatch(source)
            batch.append("stdout", ns, format_timestamp(ns), f"last words of {name}", 0, 14)
            batch.levels.append(None)
            batch.position = {"stdout": (ns, 1)}  # the cursor: `status` takes its last line here
            await storage.write(batch)
            await storage.mark(source, state)
        await storage.flush()


@pytest.mark.parametrize("agent_runs", [True, False])
async def test_status_shows_ended_containers_as_ended_with_no_lag(
    store_url: str, agent_runs: bool
) -> None:
    await stored(store_url, {"a": "exited", "b": "removed", "c": "running", "d": "running"})
    async with agent_answering(["d" * 12]) as sock:
        out = io.StringIO()
        await commands.status(store_url, sock if agent_runs else short_socket_path(), False, out)
        as_json = io.StringIO()
        await commands.status(store_url, sock if agent_runs else short_socket_path(), True, as_json)
    rows = {line.split("\t")[0]: line.split("\t") for line in out.getvalue().splitlines()}
    state, lag = 2, 6  # NAME ID STATE LINES BYTES LAST LINE LAG GAPS DROPPED
    assert (rows["a"][state], rows["a"][lag]) == ("exited", "-")
    assert (rows["b"][state], rows["b"][lag]) == ("removed", "-")
    assert rows["c"][state] == ("not collecting" if agent_runs else "-")
    assert rows["c"][lag].endswith("s") and float(rows["c"][lag][:-1]) >= 3600
    assert rows["d"][state] == ("collecting" if agent_runs else "-")
    by_name = {c["container_name"]: c for c in json.loads(as_json.getvalue())["containers"]}
    assert by_name["a"]["state"] == "exited" and by_name["a"]["lag_seconds"] is None
    assert by_name["c"]["lag_seconds"] >= 3600
