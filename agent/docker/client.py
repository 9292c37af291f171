"""The agent's only door to the Docker daemon: GET requests over the socket.

Two connection pools, because a follow stream holds its connection for as long as the
container lives: with one shared pool of aiodocker's default 100 connections, 100 open
streams leave an `inspect` waiting forever. Streams get an unbounded pool of their own;
short requests keep aiodocker's bounded one.

Connecting is the one thing retried, and only here (tenacity): "cannot connect" and
"connection lost" are retried; an answer from the daemon (404, 500, ...) never is.

aiodocker's private `Docker._query` / `_query_json` carry the raw requests (its public
`container.log()` drops the stdout/stderr tag); its version is pinned in pyproject.toml and
tests/unit/test_docker_private_api.py checks the signatures we rely on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiodocker
import aiohttp
import anyio
from tenacity import (
    AsyncRetrying,
    before_sleep_log,
    retry_if_exception_type,
    stop_after_attempt,
    stop_never,
    wait_exponential_jitter,
)

log = logging.getLogger("logagent.docker")

DEFAULT_SOCKET = "/var/run/docker.sock"
# Short requests (inspect, list, version) must answer or fail; streams must not time out.
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=30, sock_connect=10)
STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=None)
_CONNECT_FAILED = 900  # aiodocker's status for "could not reach the daemon"


class RestClock:
    """Resumes every rested stream together, on one timer per length of rest.

    A timer and a task wake-up per rest cost as much as the read they save; one timer for
    all streams, and all of them ready in one epoll wake-up, cost 28 % less CPU per line
    reading 100 streams at 100 lines/s (bench/README.md). A stream rests until the next
    tick of its length's timer: at most the rest it asked for, and in steady state about
    that long. Quiet and chatty streams rest for different lengths (docker/pacing.py), so
    each length has its own timer: joining a shorter one would cut the long rests short.
    """

    def __init__(self) -> None:
        self._paused: dict[float, list[asyncio.Transport]] = {}
        self._ticks: dict[float, asyncio.TimerHandle] = {}
        self.ticks = 0

    def rest(self, transport: asyncio.Transport, seconds: float) -> None:
        transport.pause_reading()
        self._paused.setdefault(seconds, []).append(transport)
        if seconds not in self._ticks:
            loop = asyncio.get_running_loop()
            self._ticks[seconds] = loop.call_later(seconds, self._resume_all, seconds)

    def _resume_all(self, seconds: float) -> None:
        del self._ticks[seconds]
        self.ticks += 1
        for transport in self._paused.pop(seconds, []):
            if not transport.is_closing():
                transport.resume_reading()


class LogStream:
    """An open log stream: its body, and a way to let it rest (see `agent.docker.pacing`)."""

    def __init__(self, response: aiohttp.ClientResponse, clock: RestClock) -> None:
        self.body: aiohttp.StreamReader = response.content
        self._response = response
        self._clock = clock

    def rest(self, seconds: float) -> None:
        """Stop reading the socket for up to `seconds`: what Docker sends waits in it.

        Pauses the transport, not aiohttp's protocol, so aiohttp's own flow control stays as
        it is; and only a transport that is reading (aiohttp has not paused it) is paused.
        The next `body.readany()` returns once the clock has resumed it and data is there.
        """
        connection = self._response.connection
        transport = connection.transport if connection is not None else None
        if transport is None or transport.is_closing() or not transport.is_reading():
            return
        self._clock.rest(transport, seconds)


class DockerError(Exception):
    """The daemon answered with an error, or could not be asked."""


class DockerUnavailable(DockerError):
    """Cannot connect to the daemon, or the connection was lost: worth reconnecting."""


class ContainerNotFound(DockerError):
    """No such container (404): it never existed or was removed."""


class LogsUnavailable(DockerError):
    """The container's log driver cannot be read through the API (501)."""


def docker_url(environ: Mapping[str, str] | None = None) -> str:
    """Where the daemon is: DOCKER_SOCKET (a path), else DOCKER_HOST, else the usual socket."""
    env = os.environ if environ is None else environ
    sock = env.get("DOCKER_SOCKET")
    if sock:
        return sock if "://" in sock else "unix://" + sock
    return env.get("DOCKER_HOST") or "unix://" + DEFAULT_SOCKET


def _connector(url: str, limit: int) -> tuple[aiohttp.BaseConnector, str]:
    """A connection pool, and the base URL that requests through it are built on."""
    if url.startswith("unix://"):
        return aiohttp.UnixConnector(url[len("unix://") :], limit=limit), "unix://localhost"
    if url.startswith(("tcp://", "http://")):
        return aiohttp.TCPConnector(limit=limit), "http://" + url.split("://", 1)[1]
    raise DockerError(f"unsupported Docker address {url!r}: use unix:// or tcp://")


def _translate(exc: aiodocker.DockerError, what: str) -> DockerError:
    if exc.status == _CONNECT_FAILED:
        return DockerUnavailable(f"{what}: {exc.message}")
    if exc.status == 404:
        return ContainerNotFound(f"{what}: {exc.message}")
    if exc.status == 409 and "removal" in str(exc.message):
        # "can not get logs from container which is dead or marked for removal": a --rm
        # container that exited before its stream opened; its log is going with it.
        return ContainerNotFound(f"{what}: {exc.message}")
    if exc.status == 501:
        return LogsUnavailable(f"{what}: {exc.message}")
    return DockerError(f"{what}: Docker answered {exc.status}: {exc.message}")


class DockerClient:
    """GET-only client with separate pools for requests and long-lived streams."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or docker_url()
        # Every request either pool sends passes this hook: `requests` records what was
        # really sent (the proof that the agent only reads), when `record_requests` is set.
        self.requests: list[tuple[str, str]] = []
        self.record_requests = False
        trace = aiohttp.TraceConfig()
        trace.on_request_start.append(self._on_request_start)
        sessions = []
        for limit in (100, 0):  # aiodocker's default pool for requests; unbounded for streams
            conn, base = _connector(self.url, limit)
            session = aiohttp.ClientSession(
                connector=conn, timeout=REQUEST_TIMEOUT, trace_configs=[trace]
            )
            sessions.append(aiodocker.Docker(url=base, connector=conn, session=session))
        self._api, self._streams = sessions
        self.rest_clock = RestClock()

    async def _on_request_start(
        self, _session: object, _ctx: object, params: aiohttp.TraceRequestStartParams
    ) -> None:
        if self.record_requests:
            self.requests.append((params.method, params.url.path))

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):  # a cancelled owner still releases the sockets
            for docker in (self._api, self._streams):
                await docker.session.close()  # ours: aiodocker leaves a given session open

    async def __aenter__(self) -> DockerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _get_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        try:
            return await self._api._query_json(path, "GET", params=params)
        except aiodocker.DockerError as exc:
            raise _translate(exc, f"GET /{path}") from None
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise DockerUnavailable(f"GET /{path}: {exc!r}") from None

    async def version(self) -> dict[str, Any]:
        data: dict[str, Any] = await self._get_json("version")
        return data

    async def connect(self, *, attempts: int | None = None, max_wait: float = 30.0) -> None:
        """Reach the daemon, retrying "cannot connect" with capped, jittered back-off."""
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(DockerUnavailable),
            wait=wait_exponential_jitter(multiplier=0.2, max=max_wait, jitter=0.5),
            stop=stop_never if attempts is None else stop_after_attempt(attempts),
            before_sleep=before_sleep_log(log, logging.WARNING),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                try:
                    ver = await self._api._query_json("version", "GET", versioned_api=False)
                except aiodocker.DockerError as exc:
                    raise _translate(exc, f"connect to {self.url}") from None
                except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                    raise DockerUnavailable(f"connect to {self.url}: {exc!r}") from None
        version = "v" + str(ver["ApiVersion"])
        self._api.api_version = version
        self._streams.api_version = version

    async def inspect(self, container_id: str) -> dict[str, Any]:
        data: dict[str, Any] = await self._get_json(f"containers/{container_id}/json")
        return data

    async def list_containers(
        self, *, all: bool = False, filters: dict[str, list[str]] | None = None
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"all": "1" if all else "0"}
        if filters:
            params["filters"] = json.dumps(filters)
        data: list[dict[str, Any]] = await self._get_json("containers/json", params)
        return data

    @asynccontextmanager
    async def events(
        self, *, since: str | None = None, filters: dict[str, list[str]] | None = None
    ) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        """Docker's /events as parsed objects, read with our own request.

        aiodocker's `events.subscribe()` runs an unowned task feeding an unbounded queue;
        here the reader is the caller's own loop and the response closes with the block.
        """
        params: dict[str, Any] = {}
        if since is not None:
            params["since"] = since
        if filters:
            params["filters"] = json.dumps(filters)
        try:
            response = await self._streams._do_query(
                "events", "GET", params=params, timeout=STREAM_TIMEOUT
            )
        except aiodocker.DockerError as exc:
            raise _translate(exc, "GET /events") from None
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise DockerUnavailable(f"GET /events: {exc!r}") from None

        async def parsed() -> AsyncIterator[dict[str, Any]]:
            try:
                async for line in response.content:
                    if line.strip():
                        yield json.loads(line)
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
                raise DockerUnavailable(f"events stream broke: {exc!r}") from None

        try:
            yield parsed()
        finally:
            response.close()

    @asynccontextmanager
    async def logs(
        self,
        container_id: str,
        *,
        follow: bool = True,
        tail: int | str = "all",
        since: str | None = None,
    ) -> AsyncIterator[LogStream]:
        """Open a container's log stream (timestamps on); closed on every exit path."""
        params: dict[str, Any] = {
            "stdout": "1",
            "stderr": "1",
            "follow": "1" if follow else "0",
            "timestamps": "1",
            "tail": str(tail),
        }
        if since is not None:
            params["since"] = since
        path = f"containers/{container_id}/logs"
        try:
            response = await self._streams._do_query(
                path, "GET", params=params, timeout=STREAM_TIMEOUT
            )
        except aiodocker.DockerError as exc:
            raise _translate(exc, f"logs of {container_id[:12]}") from None
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise DockerUnavailable(f"logs of {container_id[:12]}: {exc!r}") from None
        try:
            yield LogStream(response, self.rest_clock)
        finally:
            # An unread body cannot go back to the pool: close drops the connection.
            response.close()
