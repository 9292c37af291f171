"""`logagent run` as a process, and the agent across a restart of the Docker daemon."""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from pathlib import Path

import anyio
import pytest

from agent import gaps
from tests.conftest import (
    Containers,
    agent_settings,
    docker,
    eventually,
    query,
    running_agent,
    start_agent_process,
    stop_process,
    stored_rows,
)
from tests.integration.test_collector import docker_reference

pytestmark = [pytest.mark.docker, pytest.mark.anyio]


async def test_sigterm_exits_0_with_every_line_before_it_stored(
    tmp_path: Path, containers: Containers
) -> None:
    script = 'i=0; while true; do echo "n $i"; echo "e $i" >&2; i=$((i+1)); sleep 0.002; done'
    cids = [containers.run(f"busy{i}", script) for i in range(3)]
    proc = start_agent_process(tmp_path)
    await eventually(lambda: all(len(stored_rows(tmp_path, c)) > 300 for c in cids))
    for cid in cids:
        docker("pause", cid)  # from here on nothing more is written
    written = {cid: docker_reference(cid) for cid in cids}
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    output = (tmp_path / "agent.log").read_bytes()
    assert proc.returncode == 0, output.decode()
    assert b"Traceback" not in output
    for cid in cids:
        rows = stored_rows(tmp_path, cid)
        assert sorted(rows) == sorted(written[cid])
        assert len(rows) == len(written[cid])


def messages(tmp_path: Path, cid: str) -> list[str]:
    return [r[2] for r in stored_rows(tmp_path, cid)]


def _stop_dockerd() -> None:
    subprocess.run(["pkill", "-TERM", "-x", "dockerd"], check=False)
    for _ in range(600):  # dockerd gives each running container 10 s to stop
        if subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True).returncode != 0:
            break
        time.sleep(0.1)


@pytest.mark.daemon_restart
async def test_agent_reconnects_after_daemon_restart(
    tmp_path: Path, containers: Containers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with running_agent(agent_settings(tmp_path)) as agent:
        before = containers.run("before", "echo before-restart; sleep 1000", "--stop-timeout", "1")
        await eventually(
            lambda: [r[2] for r in stored_rows(tmp_path, before)] == ["before-restart"]
        )
        await anyio.to_thread.run_sync(_stop_dockerd)
        await anyio.sleep(3)  # the daemon stays down: the agent must retry, not spin or die
        retries_while_down = sum("Retrying" in r.getMessage() for r in caplog.records)
        await anyio.to_thread.run_sync(
            lambda: subprocess.run(
                ["bash", str(Path(__file__).parents[1] / "docker-up.sh")], check=True
            )
        )
        assert agent.follower is not None
        discovery = agent.follower
        await eventually(lambda: discovery.connected, limit=60)
        after = containers.run("after", "echo after-restart; sleep 1000")
        await eventually(
            lambda: [r[2] for r in stored_rows(tmp_path, after)] == ["after-restart"], limit=30
        )
        assert discovery.reconnects >= 1
    assert 1 <= retries_while_down <= 30, retries_while_down
    # the container that ran before the restart was stored once, not again after reconnecting
    assert messages(tmp_path, before) == ["before-restart"]


async def test_full_disk_is_reported_and_a_second_signal_exits_at_once(
    tmp_path: Path, small_disk: Path, containers: Containers
) -> None:
    # Still running when the agent starts (a first run does not import exited containers).
    script = "yes aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa | head -n 200000; sleep 1000"
    cid = containers.run("filler", script, "--stop-timeout", "1")
    proc = start_agent_process(tmp_path, f"sqlite:///{small_disk}/logs.db", ready=False)
    log = tmp_path / "agent.log"
    await eventually(lambda: b"database or disk is full" in log.read_bytes(), limit=30)
    proc.send_signal(signal.SIGTERM)  # the flush cannot finish: shutdown waits for it
    await eventually(lambda: b"shutting down" in log.read_bytes())
    await anyio.sleep(0.5)
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)
    assert proc.returncode == 1
    text = log.read_text()
    assert "second SIGTERM: exiting at once" in text
    assert "Traceback" not in text
    assert cid


async def test_a_cancelled_agent_still_closes_its_database(tmp_path: Path) -> None:
    """Cancelled from outside (an embedding's task group, a test that fails inside
    `running_agent`), the agent must still close its database: aiosqlite's thread is not a
    daemon, and left open it kept the process from exiting (a failed test hung pytest)."""
    with anyio.CancelScope() as scope:
        async with running_agent(agent_settings(tmp_path)):
            scope.cancel()
            await anyio.sleep(10)
    assert scope.cancelled_caught
    with anyio.fail_after(3):
        while [t for t in threading.enumerate() if "connection_worker" in t.name]:  # noqa: ASYNC110
            await anyio.sleep(0.05)


async def test_the_start_up_log_shows_the_database_url_without_its_password(
    tmp_path: Path, pg_url: str
) -> None:
    # The test server trusts 127.0.0.1: the password is carried, never checked.
    url = pg_url.replace("postgres://postgres@", "postgres://postgres:s3cret-Pw@", 1)
    proc = start_agent_process(tmp_path, url)
    stop_process(proc)
    text = (tmp_path / "agent.log").read_text()
    assert f"database {url.replace('s3cret-Pw', '***')}" in text
    assert "s3cret-Pw" not in text


def state_and_gaps(tmp_path: Path, cid: str) -> tuple[str, list[str]]:
    """The container's state as the store shows it, and its gaps' reasons."""
    url = f"sqlite:///{tmp_path / 'logs.db'}"
    (state,) = query(url, "SELECT state FROM container_cursors WHERE container_id = ?", cid)
    return str(state[0]), [str(r[0]) for r in query(
        url, "SELECT reason FROM gaps WHERE container_id = ?", cid)]  # fmt: skip


async def test_containers_removed_while_the_agent_was_away_are_shown_removed(
    tmp_path: Path, containers: Containers
) -> None:
    """The next start marks a container removed while the agent was away as removed (also
    when Docker no longer replays its `destroy`: it keeps 256 events, none across its own
    restart); one that was running when last read gets a gap (what it wrote since is lost,
    count unknown), one that had exited and was read to its end does not."""
    proc = start_agent_process(tmp_path)
    kept = ("--label", "logagent.retention=90d")  # its own retention outlives it
    running = containers.run("away-running", "echo first; sleep 600", *kept)
    done = containers.run("away-done", "echo only", *kept)
    await eventually(lambda: all(stored_rows(tmp_path, c) for c in (running, done)))
    containers.wait("away-done")
    await eventually(lambda: state_and_gaps(tmp_path, done)[0] == "exited")
    stop_process(proc)
    docker("rm", "-f", running, done)
    proc = start_agent_process(tmp_path)
    await eventually(lambda: state_and_gaps(tmp_path, running)[0] == "removed")
    await eventually(lambda: state_and_gaps(tmp_path, done)[0] == "removed")
    stop_process(proc)
    assert state_and_gaps(tmp_path, running)[1] == [gaps.REMOVED_WHILE_AWAY]
    assert state_and_gaps(tmp_path, done)[1] == []
    # Neither the mark nor the replayed `destroy` (a bare identity) cleared it.
    ages = query(f"sqlite:///{tmp_path / 'logs.db'}", "SELECT max_age_s FROM container_cursors")
    assert [a for (a,) in ages] == [90 * 86400] * 2


def stored_name(tmp_path: Path, cid: str) -> str:
    url = f"sqlite:///{tmp_path / 'logs.db'}"
    (name,) = query(url, "SELECT container_name FROM container_cursors WHERE container_id = ?", cid)
    return str(name[0])


async def test_events_replayed_after_a_restart_are_no_news_to_streams_opened_since(
    tmp_path: Path, containers: Containers
) -> None:
    """Docker replays the events since the agent's last run. A replayed `start` of a run
    the listing's stream already follows is no news: waiting for that stream to end held
    the container's lock (and a listing's slot) for as long as it ran — a `docker rename`
    of it waited for ever (a review's finding). A container removed while the agent was
    away gets one gap however many of its starts are replayed; a run started while away
    of one that had exited and was read is read."""
    proc = start_agent_process(tmp_path)
    quiet = containers.run("replay-quiet", "echo first; sleep 600")
    gone = containers.run("replay-gone", "echo first; sleep 600")
    rerun = containers.run("replay-rerun", "echo run")
    await eventually(lambda: all(stored_rows(tmp_path, c) for c in (quiet, gone, rerun)))
    containers.wait("replay-rerun")
    await eventually(lambda: state_and_gaps(tmp_path, rerun)[0] == "exited")
    stop_process(proc)
    docker("restart", "-t", "0", quiet, gone)  # a die and a start each, replayed
    docker("start", rerun)
    busy = containers.run("replay-busy", "while true; do echo tick; sleep 0.1; done")
    containers.wait("replay-rerun")
    docker("rm", "-f", gone)
    proc = start_agent_process(tmp_path)
    await eventually(lambda: len(stored_rows(tmp_path, busy)) > 5)
    docker("rename", busy, f"{containers.prefix}-replay-renamed")
    containers.names.append(f"{containers.prefix}-replay-renamed")
    await eventually(lambda: stored_name(tmp_path, busy).endswith("-replay-renamed"))
    await eventually(lambda: len(stored_rows(tmp_path, rerun)) == 2)
    await eventually(lambda: state_and_gaps(tmp_path, gone)[0] == "removed")
    stop_process(proc)
    assert state_and_gaps(tmp_path, gone)[1] == [gaps.REMOVED_WHILE_AWAY]
    assert [m for _, _, m in stored_rows(tmp_path, quiet)] == ["first", "first"]
