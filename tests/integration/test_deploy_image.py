"""The image people deploy, built from deploy/Dockerfile and run as a user runs it: the agent
in its own container with the socket mounted, against the real dockerd.

No base image can be pulled here: tests/image-up.sh makes one with debootstrap and builds the
agent's wheels beforehand, so the build installs with no network (as an offline site would).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import (
    ROOT,
    RUN_ID,
    TEST_LABEL,
    Containers,
    docker,
    eventually,
    query,
    require_or_skip,
    stored_rows,
    until_reached,
)
from tests.integration.test_collector import docker_reference

pytestmark = [pytest.mark.anyio, pytest.mark.docker]

BASE = os.environ.get("LOGAGENT_TEST_BASE", "logagent-test/bookworm-python:latest")
# Writes numbered lines, about one a millisecond, until told to stop (a file appears).
NEIGHBOUR = 'i=0; while [ ! -e /tmp/stop ]; do echo "n $i"; i=$((i+1)); usleep 1000; done; echo end'
SELF_EXCLUDED = "excluded: this is the agent's own container"


def _missing() -> str | None:
    probe = subprocess.run(["docker", "image", "inspect", BASE], capture_output=True)
    if probe.returncode != 0:
        return f"base image {BASE} missing"
    if not list((ROOT / "deploy" / "wheels").glob("setuptools-*.whl")):
        return "no wheels in deploy/wheels"
    return None


@pytest.fixture(scope="module")
def agent_image() -> Iterator[str]:
    """deploy/Dockerfile built on the debootstrap base: the source, and wheels for the rest."""
    if (problem := _missing()) is not None:
        require_or_skip(f"{problem}: run tests/image-up.sh as root")
    tag = f"logagent-test/agent:{RUN_ID}"
    docker(
        "build", "-q", "--network", "none", "--build-arg", f"BASE={BASE}",
        "-f", str(ROOT / "deploy" / "Dockerfile"), "-t", tag, str(ROOT),
    )  # fmt: skip
    try:
        yield tag
    finally:
        docker("rmi", "-f", tag, check=False)


def _state_dir(tmp_path: Path, scope: str) -> tuple[Path, Path]:
    """A data folder the image's user (10001) owns, and a config scoping it to `scope`."""
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, 10001, -1)
    config = tmp_path / "agent.toml"
    config.write_text(f'[docker]\nscope_labels = ["{scope}"]\n')
    config.chmod(0o644)
    return data, config


def _socket_gid() -> str:
    return str(os.stat("/var/run/docker.sock").st_gid)


def _cursors(data: Path, container_id: str) -> int:
    url = f"sqlite:///{data / 'logs.db'}"
    sql = "SELECT count(*) FROM container_cursors WHERE container_id = ?"
    rows = query(url, sql, container_id)
    assert rows, "no cursors table: nothing was stored"
    return int(rows[0][0])


async def test_the_image_collects_a_neighbour_exactly_never_itself_and_survives_restart(
    tmp_path: Path, containers: Containers, agent_image: str
) -> None:
    scope = f"logagent-test.image={uuid.uuid4().hex[:8]}"
    data, config = _state_dir(tmp_path, scope)
    agent_name = f"{containers.prefix}-agent"
    containers.names.append(agent_name)
    # The compose file's flags. `logagent.enable=true` undoes the image's own opt-out label,
    # so only the agent's knowledge of its own container keeps it from reading itself.
    agent_id = docker(
        "run", "-d", "--name", agent_name, "--network", "none",
        "--label", f"{TEST_LABEL}={RUN_ID}", "--label", scope, "--label", "logagent.enable=true",
        "--group-add", _socket_gid(), "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges:true", "--read-only",
        "--tmpfs", "/run/logagent:mode=0700,uid=10001", "--tmpfs", "/tmp", "--memory", "256m",
        "-v", "/var/run/docker.sock:/var/run/docker.sock",
        "-v", f"{data}:/var/lib/logagent", "-v", f"{config}:/etc/logagent/agent.toml:ro",
        agent_image, "--config", "/etc/logagent/agent.toml",
    ).decode().strip()  # fmt: skip
    await eventually(lambda: SELF_EXCLUDED in _agent_log(agent_name), limit=120)

    neighbour = containers.run("neighbour", NEIGHBOUR, "--label", scope)
    await eventually(lambda: len(stored_rows(data, neighbour)) > 300, limit=120)
    docker("restart", agent_name)  # SIGTERM, then a new start on the same volume
    # The new agent follows the neighbour live again (not only a catch-up after it ended).
    await eventually(lambda: _agent_log(agent_name).count(SELF_EXCLUDED) == 2, limit=120)
    after_restart = len(stored_rows(data, neighbour))
    await eventually(lambda: len(stored_rows(data, neighbour)) > after_restart + 300, limit=120)
    # Its loop sees the file within a millisecond and the container ends, and the exec's own
    # end races it: dockerd may then fail the exec with nothing said (seen in CI). Whether
    # the file was made is what the container's ending says.
    docker("exec", neighbour, "touch", "/tmp/stop", check=False)
    await eventually(lambda: _ended(neighbour), limit=60)
    written = docker_reference(neighbour)
    assert written[-1][2] == "end"
    await until_reached(lambda: len(stored_rows(data, neighbour)), len(written))

    assert stored_rows(data, neighbour) == docker_reference(neighbour)
    assert _cursors(data, agent_id) == 0
    log = _agent_log(agent_name)
    assert log.count(SELF_EXCLUDED) == 2, log  # once before the restart, once after
    # `docker restart` sent SIGTERM: the agent stopped in its own time, not killed after 10 s.
    assert "SIGTERM: shutting down" in log and "logagent stopped:" in log, log
    assert "Traceback" not in log, log


def _ended(name: str) -> bool:
    state = docker("inspect", "-f", "{{.State.Running}}", name, check=False)
    return state.decode().strip() == "false"


def _agent_log(name: str) -> str:
    done = subprocess.run(["docker", "logs", name], capture_output=True, text=True, check=False)
    return done.stdout + done.stderr


def _compose() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    require_or_skip("no docker compose: tests/image-up.sh installs docker-compose")
    raise AssertionError("unreachable")  # require_or_skip skipped or failed


async def test_compose_up_builds_and_starts_the_agent(
    tmp_path: Path, containers: Containers, agent_image: str
) -> None:
    """`docker compose -f deploy/compose.yaml up` as the README says, with an override file
    that scopes it to this test (as an operator's own override would add their settings)."""
    compose = _compose()
    scope = f"logagent-test.image={uuid.uuid4().hex[:8]}"
    data, config = _state_dir(tmp_path, scope)
    key, value = scope.split("=")
    override = tmp_path / "override.yaml"
    override.write_text(
        "services:\n"
        "  logagent:\n"
        f"    labels: {{'{TEST_LABEL}': '{RUN_ID}', '{key}': '{value}'}}\n"
        "    command: ['--config', '/etc/logagent/agent.toml']\n"
        "    volumes:\n"
        f"      - {data}:/var/lib/logagent\n"
        f"      - {config}:/etc/logagent/agent.toml:ro\n"
    )
    project = f"logagent-test-{RUN_ID}-compose"
    env = {**os.environ, "DOCKER_GID": _socket_gid(), "LOGAGENT_BASE": BASE}
    files = ["-p", project, "-f", str(ROOT / "deploy" / "compose.yaml"), "-f", str(override)]

    def run(*args: str, check: bool = True) -> str:
        done = subprocess.run(
            [*compose, *files, *args], capture_output=True, text=True, env=env, check=False
        )
        assert done.returncode == 0 or not check, (args, done.stdout, done.stderr)
        return done.stdout

    try:
        run("up", "-d", "--build")
        agent_name = run("ps", "-q", "logagent").strip()
        # Its first listing done: a container started from here on is new to it.
        await eventually(lambda: SELF_EXCLUDED in _agent_log(agent_name), limit=120)
        neighbour = containers.run("neighbour", "seq 1 2000", "--label", scope)
        docker("wait", neighbour)
        await until_reached(lambda: len(stored_rows(data, neighbour)), 2000)
        assert stored_rows(data, neighbour) == docker_reference(neighbour)
        # The CLI in the agent's container reads the same store (read-only root, volume).
        status = run("exec", "-T", "logagent", "logagent", "status")
        assert containers.prefix + "-neighbour" in status, status
        assert docker("inspect", "-f", "{{.HostConfig.ReadonlyRootfs}}", agent_name) == b"true\n"
        assert docker("inspect", "-f", "{{.Config.User}}", agent_name) == b"10001\n"
    finally:
        run("down", "-v", "--rmi", "local", "--timeout", "20", check=False)
