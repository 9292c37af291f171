"""The whole agent against a real dockerd: discovery, labels, short-lived containers."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import anyio
import pytest

from agent.app import Agent
from agent.collectors.docker import DockerLogCollector
from tests.conftest import (
    IMAGE,
    RUN_ID,
    TEST_LABEL,
    Containers,
    agent_settings,
    docker,
    eventually,
    running_agent,
    stored_rows,
    until_decided,
    until_reached,
)
from tests.integration.test_collector import docker_reference

pytestmark = [pytest.mark.docker, pytest.mark.anyio]


def messages(tmp_path: Path, cid: str) -> list[str]:
    return [r[2] for r in stored_rows(tmp_path, cid)]


async def test_started_container_is_collected_unless_labelled_off(
    tmp_path: Path, containers: Containers
) -> None:
    async with running_agent(agent_settings(tmp_path)) as agent:
        plain = containers.run("plain", "seq 1 100; sleep 30")
        off = containers.run("off", "seq 1 100; sleep 30", "--label", "logagent.enable=false")
        await eventually(lambda: len(stored_rows(tmp_path, plain)) == 100)
        assert await until_decided(agent, off) == "excluded by label logagent.enable=false"
        assert agent.manager is not None and agent.manager.get(off) is None
        assert stored_rows(tmp_path, off) == []
    assert messages(tmp_path, plain) == [str(i) for i in range(1, 101)]


async def test_opt_in_mode_collects_only_labelled(tmp_path: Path, containers: Containers) -> None:
    async with running_agent(agent_settings(tmp_path, collect_all=False)) as agent:
        plain = containers.run("plain", "echo no; sleep 30")
        opted = containers.run("opted", "echo yes; sleep 30", "--label", "logagent.enable=true")
        await eventually(lambda: messages(tmp_path, opted) == ["yes"])
        assert (await until_decided(agent, plain)).startswith("excluded")
        assert agent.manager is not None and agent.manager.get(plain) is None
    assert stored_rows(tmp_path, plain) == []


async def test_created_containers_are_made_ready_for_their_start(
    tmp_path: Path, containers: Containers
) -> None:
    def create(name: str, *args: str) -> str:
        full = f"{containers.prefix}-{name}"
        containers.names.append(full)
        out = docker(
            "create", "--network", "none", "--name", full, "--label", f"{TEST_LABEL}={RUN_ID}",
            *args, IMAGE, "sh", "-c", f"echo {name}",
        )  # fmt: skip
        return out.decode().strip()

    async with running_agent(agent_settings(tmp_path)) as agent:
        registry = agent.registry
        registry.max_prepared = 2

        def prepared() -> list[str]:
            return [r.id for r in registry if r.prepared is not None]

        def decided(cid: str) -> bool:
            rec = registry.get(cid)
            return rec is not None and rec.decision is not None

        names = {create(f"made{i}"): f"made{i}" for i in range(3)}
        off = create("off", "--label", "logagent.enable=false")
        # Inspected (and its cursor read) at `create`; of three, one made way (which one
        # depends on the order the inspects answered in).
        await eventually(lambda: len(prepared()) == 2 and decided(off))
        await anyio.sleep(0.5)
        ready = [cid for cid in names if cid in prepared()]
        assert len(ready) == 2 and off not in prepared()
        (evicted,) = set(names) - set(ready)
        docker("start", ready[0])
        await eventually(lambda: messages(tmp_path, ready[0]) == [names[ready[0]]])
        assert ready[0] not in prepared()  # used by its start
        docker("rm", f"{containers.prefix}-{names[ready[1]]}")
        await eventually(lambda: ready[1] not in prepared())  # dropped at `destroy`
        docker("start", evicted)  # started the slower way, read all the same
        await eventually(lambda: messages(tmp_path, evicted) == [names[evicted]])


async def test_already_running_container_starts_at_initial_tail(
    tmp_path: Path, containers: Containers
) -> None:
    cid = containers.run("before", "seq 1 500; sleep 30")
    await anyio.sleep(1)
    async with running_agent(agent_settings(tmp_path, initial_tail=100)):
        await eventually(lambda: len(stored_rows(tmp_path, cid)) == 100)
    assert messages(tmp_path, cid) == [str(i) for i in range(401, 501)]


async def test_short_lived_container_has_all_1000_lines(
    tmp_path: Path, containers: Containers
) -> None:
    async with running_agent(agent_settings(tmp_path)):
        cid = containers.run("short", "seq 1 1000")  # exits within milliseconds
        await eventually(lambda: len(stored_rows(tmp_path, cid)) >= 1000)
        await anyio.sleep(0.5)
    assert messages(tmp_path, cid) == [str(i) for i in range(1, 1001)]


async def test_container_that_came_and_went_while_the_agent_started_is_read(
    tmp_path: Path, containers: Containers
) -> None:
    """A first run's listing is history, except what was created since the agent started.

    Found running the README's command: a container started with the agent, exited before
    its first listing, had no line stored (its start event came before the subscription).
    """
    agent = Agent(agent_settings(tmp_path), self_ids=[])
    await anyio.sleep(1.1)  # Docker's `Created` is in whole seconds
    cid = containers.run("quick", "echo one; echo two >&2")
    containers.wait("quick")
    async with anyio.create_task_group() as tg:
        await tg.start(partial(agent.run, signals=False))
        try:
            await eventually(lambda: len(stored_rows(tmp_path, cid)) == 2)
        finally:
            agent.stop.set()
    assert sorted(messages(tmp_path, cid)) == ["one", "two"]


async def test_fifty_containers_at_once_then_none_active(
    tmp_path: Path, containers: Containers
) -> None:
    names = [f"{containers.prefix}-many{i}" for i in range(50)]
    containers.names += names
    for name in names:
        docker(
            "create", "--network", "none", "--name", name,
            "--label", f"logagent-test.run={containers.prefix.split('-')[2]}",
            "logagent-test/busybox:latest", "sh", "-c", "sleep 1; seq 1 20",
        )  # fmt: skip
    async with running_agent(agent_settings(tmp_path)) as agent:
        docker("start", *names)
        ids = [docker("inspect", "-f", "{{.Id}}", n).decode().strip() for n in names]
        await eventually(lambda: all(len(stored_rows(tmp_path, i)) == 20 for i in ids), limit=60)
        assert agent.manager is not None
        manager = agent.manager
        await eventually(lambda: manager.active_collectors() == {}, limit=30)
    for i in ids:
        assert messages(tmp_path, i) == [str(n) for n in range(1, 21)]


async def test_docker_restart_stores_both_runs_once(tmp_path: Path, containers: Containers) -> None:
    async with running_agent(agent_settings(tmp_path)):
        cid = containers.run("restarted", "seq 1 200; sleep 1000")
        await eventually(lambda: len(stored_rows(tmp_path, cid)) == 200)
        docker("restart", "-t", "1", cid)
        await eventually(lambda: len(stored_rows(tmp_path, cid)) >= 400)
        await anyio.sleep(1)
    rows = stored_rows(tmp_path, cid)
    assert [r[2] for r in rows] == [str(i) for i in range(1, 201)] * 2
    assert rows == docker_reference(cid)


async def test_pause_and_unpause_lose_and_double_nothing(
    tmp_path: Path, containers: Containers
) -> None:
    script = 'i=0; while [ $i -lt 300 ]; do echo "n $i"; i=$((i+1)); sleep 0.01; done'
    async with running_agent(agent_settings(tmp_path)):
        cid = containers.run("paused", script)
        await anyio.sleep(0.7)
        docker("pause", cid)
        await anyio.sleep(1)
        docker("unpause", cid)
        containers.wait("paused")
        await eventually(lambda: len(stored_rows(tmp_path, cid)) >= 300)
        await anyio.sleep(0.5)
    assert [r[2] for r in stored_rows(tmp_path, cid)] == [f"n {i}" for i in range(300)]


async def test_log_driver_none_is_one_clear_error_and_others_go_on(
    tmp_path: Path, containers: Containers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with running_agent(agent_settings(tmp_path)):
        silent = containers.run("silent", "echo lost; sleep 30", "--log-driver", "none")
        normal = containers.run("normal", "echo kept; sleep 30")
        await eventually(lambda: messages(tmp_path, normal) == ["kept"])
        await anyio.sleep(0.5)
    errors = [
        r for r in caplog.records if r.levelno >= logging.ERROR and silent[:12] in r.getMessage()
    ]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert (
        "does not support reading" in errors[0].getMessage()
        or "501" in errors[0].getMessage()
        or "logging driver" in errors[0].getMessage()
    )


@pytest.mark.timeout(900)  # judged by progress (until_reached), slow when busy
async def test_a_dead_run_still_being_read_gives_way_to_the_next_run(
    tmp_path: Path,
    containers: Containers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A container started again while its last run's rest is still being read: the new
    run's stream resumes from the stored position (the rest included), so the old read may
    end; before, the new run waited behind it for the container's lock. Each line once."""
    monkeypatch.setattr(DockerLogCollector, "drain_timeout", 0.2)
    n = 200_000
    settings = agent_settings(tmp_path, max_queue_bytes=2 << 20)
    async with running_agent(settings) as agent:
        assert agent.reconciler is not None
        agent.reconciler.die_grace = 0.05
        cid = containers.run("twice", f"yes {'y' * 99} | head -n {n}")
        await anyio.to_thread.run_sync(docker, "wait", cid)  # no wall-clock budget: it ends
        docker("start", cid)
        await anyio.to_thread.run_sync(docker, "wait", cid)
        assert len(stored_rows(tmp_path, cid)) < 2 * n
        await until_reached(lambda: len(stored_rows(tmp_path, cid)), 2 * n)
        await anyio.sleep(0.5)
    assert stored_rows(tmp_path, cid) == docker_reference(cid)


async def test_graceful_stop_stores_every_line_written_before_it(
    tmp_path: Path, containers: Containers
) -> None:
    script = 'i=0; while true; do echo "n $i"; i=$((i+1)); sleep 0.002; done'
    async with running_agent(agent_settings(tmp_path)) as agent:
        cid = containers.run("busy", script)
        await eventually(lambda: len(stored_rows(tmp_path, cid)) > 200)
        docker("pause", cid)  # nothing more is written from here on
        written = docker_reference(cid)
        agent.stop.set()
    assert stored_rows(tmp_path, cid) == written


@pytest.mark.timeout(900)  # judged by progress (until_reached), slow when busy
@pytest.mark.parametrize("drain_timeout", [5.0, 0.2], ids=["default", "tiny-drain"])
async def test_dead_container_far_ahead_of_the_agent_is_read_to_its_end(
    tmp_path: Path, containers: Containers, monkeypatch: pytest.MonkeyPatch, drain_timeout: float
) -> None:
    """The stream of a container that died is not cut while lines keep coming.

    It writes 300,000 lines in about 1.5 s and exits; reading them takes the agent longer
    than the (shortened) grace after `die`, which used to cut the stream there. Then the
    plain read of the rest was cut when it sent nothing for `drain_timeout` + 1 s: Docker
    parses its log file up to the position first (on a busy machine it stopped at 84,157 of
    300,000). "tiny-drain" makes that happen on any machine: a small queue the collector
    waits on (which is not silence), a die grace and a drain timeout far too short.
    """
    monkeypatch.setattr(DockerLogCollector, "drain_timeout", drain_timeout)
    n = 300_000
    tiny = drain_timeout < 1
    settings = agent_settings(tmp_path, **({"max_queue_bytes": 2 << 20} if tiny else {}))
    async with running_agent(settings) as agent:
        assert agent.reconciler is not None
        agent.reconciler.die_grace = 0.05 if tiny else 0.3
        cid = containers.run("burst", f"yes {'y' * 99} | head -n {n}")
        await anyio.to_thread.run_sync(docker, "wait", cid)  # no wall-clock budget: it ends
        assert len(stored_rows(tmp_path, cid)) < n  # the agent is behind when it dies
        await until_reached(lambda: len(stored_rows(tmp_path, cid)), n)
        await anyio.sleep(0.5)
    assert stored_rows(tmp_path, cid) == docker_reference(cid)
