"""`docker rename` of a collected container, against a real dockerd (both backends): the
store, `status` and the viewer take the new name, and the whole history is found by every
name it had — also when it was renamed while the agent was down."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import pytest

from agent import commands
from tests.conftest import Containers, agent_settings, docker, query, rows_in, running_agent
from tests.integration.test_fleet_follow import progressing

pytestmark = [pytest.mark.anyio, pytest.mark.docker]

# Prints a line, then one more each time a file appears: the test says when.
SCRIPT = (
    "echo first; for n in 1 2; do while [ ! -e /tmp/go$n ]; do sleep 0.1; done; "
    "echo after-$n; done; sleep 60"
)


async def logs_of(url: str, ref: str) -> list[str]:
    out = io.StringIO()
    assert await commands.logs(url, commands.LogsOptions(containers=(ref,)), out) == 0
    return out.getvalue().splitlines()


async def test_a_renamed_container_is_found_by_every_name_it_had(
    tmp_path: Path, containers: Containers, store_url: str
) -> None:
    settings = replace(agent_settings(tmp_path), db_url=store_url)
    old, new, newest = (f"{containers.prefix}-{n}" for n in ("old", "new", "newest"))
    async with running_agent(settings):
        cid = containers.run("old", SCRIPT)
        await progressing(lambda: len(rows_in(store_url, cid)), 1)
        docker("rename", old, new)
        containers.names.append(new)  # removed by its name at the end
        docker("exec", new, "touch", "/tmp/go1")
        await progressing(lambda: len(rows_in(store_url, cid)), 2)
    # Renamed while no agent runs: the next one's first commit takes the name it finds.
    docker("rename", new, newest)
    containers.names.append(newest)
    async with running_agent(settings):
        docker("exec", newest, "touch", "/tmp/go2")
        await progressing(lambda: len(rows_in(store_url, cid)), 3)
    names = (
        f"SELECT container_name, former_names FROM container_cursors WHERE container_id = '{cid}'"
    )
    assert query(store_url, names) == [(newest, f"{old}\n{new}\n")]
    for ref in (old, new, newest, cid[:12]):
        assert await logs_of(store_url, ref) == ["first", "after-1", "after-2"], ref
    out = io.StringIO()
    await commands.status(store_url, str(tmp_path / "no-agent.sock"), True, out)
    assert newest in out.getvalue() and f'"{old}"' not in out.getvalue()
