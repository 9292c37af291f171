"""Containers' lives stored once (issue 25, part 1), against a real dockerd.

start, die with its exit code, kill with its signal, oom, restart and a failing health check are
stored as Docker's /events said them; an agent restart (a clean stop or a kill -9) resumes
the events a little before where it stopped, and nothing is stored twice or missed.
"""

from __future__ import annotations

import io
import json
import signal
from collections import Counter
from pathlib import Path

import pytest

from agent import commands
from tests.conftest import (
    Containers,
    agent_settings,
    db_url,
    docker,
    eventually,
    query,
    running_agent,
    start_agent_process,
    stop_process,
)

pytestmark = [pytest.mark.anyio, pytest.mark.docker]


def lives(tmp_path: Path, cid: str) -> list[tuple[str, int | None, str | None]]:
    return [
        (str(a), c, d)
        for a, c, d in query(
            db_url(tmp_path),
            "SELECT action, exit_code, detail FROM container_events WHERE container_id = ? "
            "ORDER BY time_ns, id",
            cid,
        )
    ]


def actions(tmp_path: Path, cid: str) -> Counter[str]:
    return Counter(a for a, _, _ in lives(tmp_path, cid))


async def test_lives_are_stored_once_across_a_restart_and_read_by_logagent_events(
    tmp_path: Path, containers: Containers
) -> None:
    settings = agent_settings(tmp_path)
    async with running_agent(settings):
        exits = containers.run("exits", "exit 3")
        sick = containers.run(
            "sick", "sleep 120",
            "--health-cmd", "false", "--health-interval", "1s", "--health-retries", "1",
        )  # fmt: skip
        killed = containers.run("killed", "trap 'exit 7' TERM; sleep 120 & wait")
        again = containers.run("again", "sleep 120")
        # /dev/zero has no newline: tail holds it all, over the limit
        greedy = containers.run(
            "greedy", "tail /dev/zero", "--memory", "16m", "--memory-swap", "16m"
        )
        await eventually(lambda: ("die", 3, None) in lives(tmp_path, exits), limit=60)
        docker("kill", "-s", "TERM", killed)
        docker("restart", "-t", "0", again)
        await eventually(lambda: ("kill", None, "15") in lives(tmp_path, killed), limit=60)
        await eventually(lambda: actions(tmp_path, again)["restart"] == 1, limit=60)
        await eventually(
            lambda: ("health_status", None, "unhealthy") in lives(tmp_path, sick), limit=90
        )
        await eventually(lambda: actions(tmp_path, killed)["die"] == 1, limit=60)
        await eventually(lambda: ("die", 137, None) in lives(tmp_path, greedy), limit=60)
    before = {cid: lives(tmp_path, cid) for cid in (exits, sick, killed, again, greedy)}
    assert before[exits] == [("start", None, None), ("die", 3, None)]
    assert ("die", 7, None) in before[killed]
    assert actions(tmp_path, again)["start"] == 2  # its run, and the restart's
    assert [a for a, _, _ in before[greedy]] == ["start", "oom", "die"]
    # A second agent resumes the events where the first stopped; Docker replays from there.
    last = max(t for (t,) in query(db_url(tmp_path), "SELECT time_ns FROM container_events"))
    async with running_agent(settings) as agent:

        def replayed() -> bool:  # up to the last event the first agent stored, at least
            follower = agent.follower
            return follower is not None and (follower.last_event_ns or 0) >= last

        await eventually(replayed, limit=60)
    # (what it handled is saved when it stops, with the position)
    for cid, seen in before.items():
        sick_now = lives(tmp_path, cid)
        if cid == sick:  # its health is checked every second: more may come, never twice
            assert sick_now[: len(seen)] == seen
        else:
            assert sick_now == seen, cid

    out = io.StringIO()
    name = f"{containers.prefix}-exits"
    assert await commands.events(db_url(tmp_path), name, as_json=True, out=out) == 0
    got = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(e["action"], e["exit_code"]) for e in got] == [("start", None), ("die", 3)]
    assert got[0]["container_name"] == name and got[0]["time"].endswith("Z")
    text = io.StringIO()
    await commands.events(db_url(tmp_path), exits[:12], out=text)
    assert "die (exit code 3)" in text.getvalue()


async def test_an_opted_out_containers_life_is_not_stored(
    tmp_path: Path, containers: Containers
) -> None:
    async with running_agent(agent_settings(tmp_path)):
        out = containers.run("private", "exit 4", "--label", "logagent.enable=false")
        marker = containers.run("marker", "exit 5")
        await eventually(lambda: ("die", 5, None) in lives(tmp_path, marker), limit=60)
        containers.wait("private")
    assert lives(tmp_path, out) == []


async def test_a_kill_9_loses_no_life_and_repeats_none(
    tmp_path: Path, containers: Containers
) -> None:
    agent = start_agent_process(tmp_path)
    try:
        first = containers.run("first", "exit 5")
        await eventually(lambda: ("die", 5, None) in lives(tmp_path, first), limit=60)
        second = containers.run("second", "exit 6")
        containers.wait("second")
        agent.send_signal(signal.SIGKILL)  # its die may be stored or not yet: either way
        agent.wait(timeout=30)
        agent = start_agent_process(tmp_path)
        await eventually(lambda: ("die", 6, None) in lives(tmp_path, second), limit=60)
    finally:
        stop_process(agent)
    assert lives(tmp_path, first) == [("start", None, None), ("die", 5, None)]
    assert lives(tmp_path, second) == [("start", None, None), ("die", 6, None)]


async def test_logs_with_events_puts_a_containers_life_among_its_lines(
    tmp_path: Path, containers: Containers
) -> None:
    async with running_agent(agent_settings(tmp_path)):
        cid = containers.run("lived", "sleep 1; echo one; echo two; exit 3")
        await eventually(lambda: ("die", 3, None) in lives(tmp_path, cid), limit=60)
    name = f"{containers.prefix}-lived"
    text = io.StringIO()
    opts = commands.LogsOptions(containers=(name,), events=True)
    assert await commands.logs(db_url(tmp_path), opts, out=text) == 0
    assert text.getvalue() == "--- start\none\ntwo\n--- die (exit code 3)\n"
    plain = io.StringIO()
    await commands.logs(db_url(tmp_path), commands.LogsOptions(containers=(name,)), out=plain)
    assert plain.getvalue() == "one\ntwo\n"  # without --events, as before
    as_json = io.StringIO()
    opts = commands.LogsOptions(containers=(name,), events=True, json=True)
    await commands.logs(db_url(tmp_path), opts, out=as_json)
    got = [json.loads(line) for line in as_json.getvalue().splitlines()]
    assert [g.get("event") or g["message"] for g in got] == ["start", "one", "two", "die"]
    assert got[-1]["exit_code"] == 3 and "stream" not in got[-1]
    tail = io.StringIO()
    opts = commands.LogsOptions(containers=(name,), events=True, tail=1)
    await commands.logs(db_url(tmp_path), opts, out=tail)
    assert tail.getvalue() == "two\n--- die (exit code 3)\n"  # only the tail's span
    none = io.StringIO()
    opts = commands.LogsOptions(containers=(name,), events=True, tail=0)
    await commands.logs(db_url(tmp_path), opts, out=none)
    assert none.getvalue() == ""  # no line, no span: no event either
