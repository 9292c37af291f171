"""Shared test fixtures: a real Docker daemon, containers of our own, a database per test."""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.collectors.manager import LogCollectorManager
from agent.docker.client import DEFAULT_SOCKET, DockerClient, docker_url
from agent.storage import LogStorage

IMAGE = os.environ.get("LOGAGENT_TEST_IMAGE", "logagent-test/busybox:latest")
# Every container a test makes carries this label and a name with the run's prefix, so tests
# (and an agent under test) touch nothing else on the daemon.
RUN_ID = uuid.uuid4().hex[:8]
TEST_LABEL = "logagent.test"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _daemon_problem() -> str | None:
    url = docker_url()
    path = url[len("unix://") :] if url.startswith("unix://") else DEFAULT_SOCKET
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(3)
            s.connect(path)
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            if b"200 OK" not in s.recv(256):
                return f"Docker at {path} did not answer /_ping"
    except OSError as exc:
        return f"no Docker daemon at {path} ({exc}); run tests/docker-up.sh as root"
    probe = subprocess.run(
        ["docker", "image", "inspect", IMAGE], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        return f"test image {IMAGE} missing; run tests/docker-up.sh as root"
    return None


_PROBLEM: str | None = None
_CHECKED = False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    global _PROBLEM, _CHECKED
    if not any("docker" in item.keywords for item in items):
        return
    if not _CHECKED:
        _PROBLEM, _CHECKED = _daemon_problem(), True
    if _PROBLEM is None:
        return
    if os.environ.get("CI"):
        raise pytest.UsageError(f"CI must provide Docker: {_PROBLEM}")
    skip = pytest.mark.skip(reason=_PROBLEM)
    for item in items:
        if "docker" in item.keywords:
            item.add_marker(skip)


def docker(*args: str, check: bool = True, input: bytes | None = None) -> bytes:
    done = subprocess.run(["docker", *args], capture_output=True, input=input, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {done.stderr.decode()}")
    return done.stdout


@dataclass
class Containers:
    """Starts containers named with a unique prefix and removes exactly those afterwards."""

    prefix: str
    names: list[str] = field(default_factory=list)

    def run(self, name: str, script: str, *args: str, tty: bool = False) -> str:
        full = f"{self.prefix}-{name}"
        self.names.append(full)
        flags = ["-t"] if tty else []
        out = docker(
            "run", "-d", "--network", "none", "--name", full, "--label", f"{TEST_LABEL}={RUN_ID}",
            *flags, *args, IMAGE, "sh", "-c", script,
        )  # fmt: skip
        return out.decode().strip()

    def wait(self, name: str) -> None:
        docker("wait", f"{self.prefix}-{name}")

    def remove_all(self) -> None:
        if self.names:
            docker("rm", "-f", "-v", *self.names, check=False)


@pytest.fixture
def containers(request: pytest.FixtureRequest) -> Iterator[Containers]:
    safe = "".join(c if c.isalnum() else "-" for c in request.node.name)[:40]
    box = Containers(prefix=f"logagent-test-{RUN_ID}-{safe}")
    try:
        yield box
    finally:
        box.remove_all()


def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'logs.db'}"


@asynccontextmanager
async def agent_parts(
    tmp_path: Path, **manager_kw: object
) -> AsyncIterator[tuple[LogStorage, LogCollectorManager]]:
    """A storage on this test's own file and a manager, torn down in order."""
    async with (
        LogStorage(db_url(tmp_path), host="test-host") as storage,
        DockerClient() as client,
        LogCollectorManager(storage, client=client, **manager_kw) as manager,  # type: ignore[arg-type]
    ):
        yield storage, manager
