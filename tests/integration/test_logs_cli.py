"""`logagent logs` reads the store like `docker logs` reads the daemon."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from tests.conftest import (
    ROOT,
    Containers,
    agent_settings,
    docker,
    eventually,
    numbered_bursts,
    rows_in,
    running_agent,
)
from tests.integration.test_collector import docker_reference

pytestmark = [pytest.mark.docker, pytest.mark.anyio]


def logagent(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LOGAGENT_DB_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "agent", *args], env=env, cwd=ROOT, capture_output=True, text=True
    )


async def test_logs_json_equals_docker_logs_also_after_rm(
    tmp_path: Path, containers: Containers, store_url: str
) -> None:
    script = 'for i in $(seq 1 200); do echo "out $i"; echo "err $i" >&2; done; echo "ünï ✓"'
    async with running_agent(replace(agent_settings(tmp_path), db_url=store_url)):
        cid = containers.run("finished", script)
        containers.wait("finished")
        await eventually(lambda: len(rows_in(store_url, cid)) >= 401)
        await anyio.sleep(0.3)
    expected = docker_reference(cid)
    docker("rm", cid)
    name = f"{containers.prefix}-finished"
    for ref in (name, cid, cid[:8]):
        done = logagent(store_url, "logs", "--json", ref)
        assert done.returncode == 0, done.stderr
        objs = [json.loads(line) for line in done.stdout.splitlines()]
        assert {tuple(sorted(o)) for o in objs} == {
            ("container_id", "container_name", "host", "message", "stream", "timestamp")
        }
        got = [(o["stream"], o["timestamp"], o["message"]) for o in objs]
        assert sorted(got) == sorted(expected)
        for stream in ("stdout", "stderr"):  # per stream, Docker's order
            assert [g for g in got if g[0] == stream] == [e for e in expected if e[0] == stream]
    only_err = logagent(store_url, "logs", "--stream", "stderr", "--tail", "3", name)
    assert only_err.stdout.splitlines() == ["err 198", "err 199", "err 200"]
    grep = logagent(store_url, "logs", "--grep", r"^out 1\d$", "-t", name)
    assert [line.split(" ", 1)[1] for line in grep.stdout.splitlines()] == [
        f"out {i}" for i in range(10, 20)
    ]
    assert logagent(store_url, "logs", "--since", "1h", name).stdout.count("\n") == 401
    assert logagent(store_url, "logs", "--until", "1h", name).stdout == ""
    missing = logagent(store_url, "logs", "nope-no-such")
    assert missing.returncode == 2
    assert missing.stderr.strip() == "logagent: no stored logs for container 'nope-no-such'"


async def test_escape_sequence_attack_is_escaped_unless_raw(
    tmp_path: Path, containers: Containers, store_url: str
) -> None:
    async with running_agent(replace(agent_settings(tmp_path), db_url=store_url)):
        cid = containers.run("attack", r"printf '\033]0;pwned\007 \033[2J gotcha\n'")
        await eventually(lambda: len(rows_in(store_url, cid)) == 1)
    safe = logagent(store_url, "logs", cid).stdout
    assert safe == "\\x1b]0;pwned\\x07 \\x1b[2J gotcha\n"
    assert logagent(store_url, "logs", "--raw", cid).stdout == "\x1b]0;pwned\x07 \x1b[2J gotcha\n"


async def test_follow_prints_every_line_once_while_the_agent_writes(
    tmp_path: Path, containers: Containers, store_url: str
) -> None:
    """On both stores: SQLite polled, PostgreSQL woken by its commits (LISTEN/NOTIFY)."""
    script = "sleep 1; " + numbered_bursts(50, 0.02)
    async with running_agent(replace(agent_settings(tmp_path), db_url=store_url)):
        cid = containers.run("followed", script)
        await eventually(lambda: len(rows_in(store_url, cid)) > 0)
        env = {**os.environ, "LOGAGENT_DB_URL": store_url}
        out_path = tmp_path / "follow.out"
        with open(out_path, "w") as out:
            follower = subprocess.Popen(
                [sys.executable, "-m", "agent", "logs", "-f", cid], env=env, cwd=ROOT, stdout=out
            )
        try:
            await eventually(lambda: out_path.read_text().count("\n") >= 50_000, limit=120)
            await anyio.sleep(0.5)
        finally:
            follower.terminate()
            follower.wait(timeout=10)
    assert out_path.read_text().splitlines() == [str(i) for i in range(1, 50_001)]


async def test_a_service_is_one_history_across_its_containers_and_where_filters_fields(
    tmp_path: Path, containers: Containers, store_url: str
) -> None:
    """A compose service recreated three times is one history (`--service`), also once its
    containers are removed; `--where` judges a JSON or logfmt line's fields, the same on both
    backends."""
    compose = ["-l", "com.docker.compose.project=shop", "-l", "com.docker.compose.service=web"]
    async with running_agent(replace(agent_settings(tmp_path), db_url=store_url)):
        cids = []
        for n in (1, 2, 3):
            script = (
                f'echo \'{{"status": 200, "n": {n}}}\'; echo \'status=503 n={n} msg="down"\'; '
                f'echo \'{{"status": 504, "user": {{"id": "4{n}"}}}}\'; echo plain {n}'
            )
            cids.append(containers.run(f"web-{n}", script, *compose))
            containers.wait(f"web-{n}")
            await eventually(lambda c=cids[-1]: len(rows_in(store_url, c)) >= 4)  # type: ignore[misc]
        containers.run("other", "echo '{\"status\": 500}'")
        containers.wait("other")
        await anyio.sleep(0.3)
    docker("rm", cids[0])  # a removed container's history stays in its service's
    done = logagent(store_url, "logs", "--service", "shop/web")
    assert done.returncode == 0, done.stderr
    lines = [line.split(" | ", 1)[1] for line in done.stdout.splitlines()]
    assert [line for line in lines if line.startswith("plain")] == ["plain 1", "plain 2", "plain 3"]
    assert len(lines) == 12
    where = logagent(store_url, "logs", "--service", "shop/web", "--where", "status>=500")
    assert [line.split(" | ", 1)[1] for line in where.stdout.splitlines()] == [
        text
        for n in (1, 2, 3)
        for text in (f'status=503 n={n} msg="down"', f'{{"status": 504, "user": {{"id": "4{n}"}}}}')
    ]
    nested = logagent(store_url, "logs", "--service", "shop/web", "--where", 'user.id="42"')
    assert nested.stdout.splitlines() == [
        f'{containers.prefix}-web-2 | {{"status": 504, "user": {{"id": "42"}}}}'
    ]
    by_name = logagent(store_url, "logs", "--service", f"{containers.prefix}-web-3", "--json")
    assert len(by_name.stdout.splitlines()) == 4  # a plain name: the containers that had it
    bad = logagent(store_url, "logs", "--where", "status >= high")
    assert bad.returncode == 2 and ">= compares numbers" in bad.stderr
    missing = logagent(store_url, "logs", "--service", "shop/nope")
    assert missing.returncode == 2 and "no stored logs for service 'shop/nope'" in missing.stderr
