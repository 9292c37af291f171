"""Shared test fixtures: a real Docker daemon, containers of our own, a database per test."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, closing, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

from agent.app import Agent
from agent.batch import Line, LineBatch, Source
from agent.collectors.manager import LogCollectorManager
from agent.config import Settings
from agent.docker.address import DEFAULT_SOCKET, docker_url
from agent.docker.client import DockerClient
from agent.policy import Policy
from agent.storage import LogStorage
from agent.timestamps import format_timestamp

IMAGE = os.environ.get("LOGAGENT_TEST_IMAGE", "logagent-test/busybox:latest")
# Every container a test makes carries this label and a name with the run's prefix, so tests
# (and an agent under test) touch nothing else on the daemon.
RUN_ID = uuid.uuid4().hex[:8]
TEST_LABEL = "logagent-test.run"  # not logagent.*: those are hints, and unknown ones are warned of


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def answers_ok(path: str, target: str) -> bool:
    """Whether the HTTP server on the unix socket `path` answers GET `target` with 200;
    OSError if nothing listens there."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(3)
        s.connect(path)
        s.sendall(f"GET {target} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
        return s.recv(256).startswith((b"HTTP/1.0 200", b"HTTP/1.1 200"))


def _daemon_problem() -> str | None:
    url = docker_url()
    path = url[len("unix://") :] if url.startswith("unix://") else DEFAULT_SOCKET
    try:
        if not answers_ok(path, "/_ping"):
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
    # A test that restarts dockerd runs last, so that it cannot disturb the others.
    items.sort(key=lambda item: "daemon_restart" in item.keywords)
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


def require_or_skip(problem: str | None) -> None:
    """What a test needs of this machine (a receiver, a pair of clusters): `problem` says
    what is missing (None: nothing). The test is skipped, or fails when CI is set: CI must
    provide everything, so no test passes there by not running."""
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must provide it: {problem}")
    pytest.skip(problem)


def in_fresh_python(script: str) -> None:
    """Run `script` in a new interpreter (module state as a user's process has it); its
    assertion errors become this test's."""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


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


_sources: weakref.WeakKeyDictionary[LogStorage, dict[str, Source]] = weakref.WeakKeyDictionary()


async def write_line(storage: LogStorage, container_id: str, name: str, line: Line) -> None:
    """Write one line as a collector would (one Source per container and store)."""
    known = _sources.setdefault(storage, {})
    source = known.setdefault(container_id, Source(container_id, name))
    await storage.write(LineBatch.of(source, [line]))


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


@asynccontextmanager
async def serve_unix(app: Any, **runner_kw: Any) -> AsyncIterator[str]:
    """An aiohttp app served on a unix socket of its own (a fake daemon, a fake agent API);
    its path. The server is cleaned up on every exit path."""
    from aiohttp import web

    runner = web.AppRunner(app, shutdown_timeout=1, **runner_kw)
    await runner.setup()
    path = short_socket_path()
    await web.UnixSite(runner, path).start()
    try:
        yield path
    finally:
        await runner.cleanup()


def free_port() -> int:
    """A TCP port free on loopback now (someone may take it before the server that is given
    it binds: its starter retries)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def short_socket_path() -> str:
    """A unix socket path is limited to 107 bytes: pytest's tmp_path can be longer. In a
    folder of its own, mode 0700: the agent refuses a socket folder others can write to."""
    folder = Path(f"/tmp/logagent-test-{uuid.uuid4().hex[:10]}")
    folder.mkdir(mode=0o700)
    return str(folder / "agent.sock")


def agent_settings(tmp_path: Path, *, collect_all: bool = True, **kw: object) -> Settings:
    """Settings for an agent that sees only this run's containers (Docker-side label filter)."""
    kw.setdefault("api_socket", short_socket_path())
    return Settings(
        db_url=db_url(tmp_path),
        host="test-host",
        scope_labels=(f"{TEST_LABEL}={RUN_ID}",),
        policy=Policy(collect_all=collect_all),
        **kw,  # type: ignore[arg-type]
    )


@asynccontextmanager
async def running_agent(settings: Settings, **agent_kw: bool) -> AsyncIterator[Agent]:
    """The whole agent in this process, stopped (gracefully) when the block ends."""
    agent = Agent(settings, self_ids=[], **agent_kw)
    async with anyio.create_task_group() as tg:
        await tg.start(partial(agent.run, signals=False))
        try:
            yield agent
        finally:
            agent.stop.set()


def stored_rows(tmp_path: Path, container_id: str) -> list[tuple[str, str, str]]:
    """(stream, timestamp, message) of a container, in insertion order, read with sqlite3
    (the timestamp's text derived where the row keeps none, as the read side does)."""
    if not (tmp_path / "logs.db").exists():  # connecting would create it
        return []
    return rows_in(db_url(tmp_path), container_id)


async def eventually(check: Callable[[], bool], limit: float = 30) -> None:
    """Poll a condition on the database or the daemon (neither can notify us)."""
    with anyio.fail_after(limit):
        while not check():  # noqa: ASYNC110
            await anyio.sleep(0.05)


async def until_decided(agent: Agent, cid: str) -> str:
    """Wait until the agent has seen the container and decided about it; the reason. An
    absence checked after that is the agent's choice, not its being slow."""

    def decided() -> bool:
        rec = agent.registry.get(cid)
        return rec is not None and rec.decision is not None

    await eventually(decided)
    rec = agent.registry.get(cid)
    assert rec is not None and rec.decision is not None
    return rec.decision.reason


async def until_reached(count: Callable[[], int], target: int, stall: float = 60) -> None:
    """Wait until `count()` reaches `target`; fail only if it stops moving for `stall` s.

    For the long waits (hundreds of thousands of lines): a busy machine makes them slower,
    not wrong, so they are judged by progress, not by a wall-clock budget.
    """
    seen, since = -1, anyio.current_time()
    while (now := count()) < target:
        if now != seen:
            seen, since = now, anyio.current_time()
        elif anyio.current_time() - since > stall:
            raise AssertionError(f"stuck at {now} of {target} for {stall:.0f} s")
        await anyio.sleep(0.1)


PG_PORT = int(os.environ.get("LOGAGENT_TEST_PG_PORT", "55432"))
PG_ADMIN = f"postgres://postgres@127.0.0.1:{PG_PORT}/postgres"


PG_DATA = os.environ.get("LOGAGENT_TEST_PG_DATA", "/tmp/logagent-test-pg")


def pg_ctl(*args: str) -> None:
    """The test cluster's pg_ctl (start, stop -m fast, restart -m fast), as its user, the
    server started with tests/pg-up.sh's options. Nothing of it goes to a pipe: the postmaster
    inherits pipes, and waiting for them to close waited for the server to stop."""
    opts = f"-p {PG_PORT} -c listen_addresses=127.0.0.1 -k {PG_DATA} -c fsync=off "
    opts += "-c max_connections=200"
    command = f"/usr/lib/postgresql/15/bin/pg_ctl -D {PG_DATA} -l {PG_DATA}/server.log -w "
    command += f"-t 120 -o '{opts}' {' '.join(args)}"
    subprocess.run(
        ["su", "postgres", "-c", command],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        check=True, timeout=180,
    )  # fmt: skip


def _pg(sql: str) -> None:
    done = subprocess.run(
        ["psql", "-q", "-h", "127.0.0.1", "-p", str(PG_PORT), "-U", "postgres", "-c", sql],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        require_or_skip(f"no PostgreSQL on port {PG_PORT} ({done.stderr.strip()}): run "
                        "tests/pg-up.sh as root")  # fmt: skip


@contextmanager
def _pg_database() -> Iterator[str]:
    name = f"logagent_test_{RUN_ID}_{uuid.uuid4().hex[:8]}"
    _pg(f"CREATE DATABASE {name}")
    try:
        yield f"postgres://postgres@127.0.0.1:{PG_PORT}/{name}"
    finally:
        _pg(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """This test's own store, on each backend: a file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield db_url(tmp_path)
        return
    with _pg_database() as url:
        yield url


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database of this test's own (for what only a shared store does)."""
    with _pg_database() as url:
        yield url


def query(url: str, sql: str, *args: object) -> list[tuple[Any, ...]]:
    """Rows of a query on either backend, from plain test code (a thread of its own)."""
    if url.startswith("sqlite"):
        with closing(sqlite3.connect(url.split("///", 1)[1], timeout=10)) as conn:
            try:
                return conn.execute(sql, args).fetchall()
            except sqlite3.OperationalError:
                return []

    async def fetch() -> list[tuple[Any, ...]]:
        import asyncpg

        conn = await asyncpg.connect(url)
        try:
            numbered = sql
            for i in range(len(args)):
                numbered = numbered.replace("?", f"${i + 1}", 1)
            # A test calling this from the event loop of an agent it runs blocks that agent
            # until the query returns: a query waiting on the agent's lock (a new day's
            # partition) waited forever. Not yet, then: the caller polls again.
            await conn.execute("SET lock_timeout = '500ms'")
            try:
                return [tuple(r) for r in await conn.fetch(numbered, *args)]
            except (asyncpg.UndefinedTableError, asyncpg.LockNotAvailableError):
                return []
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, fetch()).result()


def execute(url: str, sql: str) -> None:
    """A statement on either backend (a test changing a store behind the agent's back)."""
    if url.startswith("sqlite"):
        with closing(sqlite3.connect(url.split("///", 1)[1], timeout=10)) as conn:
            conn.execute(sql)
            conn.commit()
        return

    async def run() -> None:
        import asyncpg

        conn = await asyncpg.connect(url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


# The lines of the container whose id is bound to the `?`.
SOURCE = "source_id = (SELECT id FROM container_cursors WHERE container_id = ?)"


def numbered_bursts(bursts: int, pause: float) -> str:
    """A container's script: 1 .. 1,000 times `bursts`, printed 1,000 lines at a time with `pause`
    seconds between, so an agent can be stopped, killed or cut in the middle."""
    return (
        f"i=0; while [ $i -lt {bursts} ]; do seq $((i*1000+1)) $((i*1000+1000)); "
        f"i=$((i+1)); sleep {pause}; done"
    )


def stop_process(proc: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM) -> None:
    proc.send_signal(sig)
    proc.wait(timeout=30)


def rows_in(url: str, container_id: str) -> list[tuple[str, str, str]]:
    """(stream, timestamp, message) of a container, in insertion order, on either backend."""
    return [
        (str(s), str(t) or format_timestamp(int(ns)), str(m))
        for s, t, ns, m in query(
            url,
            "SELECT l.stream, l.timestamp, l.timestamp_ns, l.message FROM log_lines l "
            "JOIN container_cursors c ON c.id = l.source_id WHERE c.container_id = ? "
            "ORDER BY l.id",
            container_id,
        )
    ]


ROOT = Path(__file__).resolve().parents[1]


# The processes a test started that the test's end kills if they still run (a test that
# fails mid-way leaves none behind), so a test needs no try/finally of its own for them.
_REAPED: list[subprocess.Popen[bytes]] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Killed as the test's body ends, before its fixtures are torn down (a database is
    dropped, a server stopped: not under a process still using it)."""
    yield
    while _REAPED:
        proc = _REAPED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def start_agent_process(
    tmp_path: Path,
    url: str | None = None,
    *,
    ready: bool = True,
    extra_config: str = "",
    host: str = "test-host",
    scope: str = f"{TEST_LABEL}={RUN_ID}",
) -> subprocess.Popen[bytes]:
    """`logagent run` as a real process on this test's database (or `url`); output in
    agent.log (`{host}.log` for another host than test-host, its config `{host}.toml`). With
    `ready`, returns once its /healthz says it follows Docker's events (a container started
    from then on is read from its first line), however long a busy machine takes; without,
    at once (an agent that is meant to refuse to start). Killed at the test's end if it
    still runs then."""
    name = "agent" if host == "test-host" else host
    config = tmp_path / f"{name}.toml"
    sock = short_socket_path()
    config.write_text(
        f'[storage]\ndb_url = "{url or db_url(tmp_path)}"\nhost = "{host}"\n'
        f'[docker]\nscope_labels = ["{scope}"]\ninitial_tail = "all"\n'
        f'[api]\nsocket = "{sock}"\n{extra_config}'
    )
    with open(tmp_path / f"{name}.log", "ab") as log:  # a pipe nobody reads could block it
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config", str(config)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    _REAPED.append(proc)
    deadline = time.monotonic() + 120
    while ready:
        try:
            if answers_ok(sock, "/healthz"):
                return proc
        except OSError:
            pass  # not listening yet
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            log_text = (tmp_path / f"{name}.log").read_text(errors="replace")[-2000:]
            raise AssertionError(f"the agent never became healthy:\n{log_text}")
        time.sleep(0.05)
    return proc
