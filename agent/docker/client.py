"""The agent's only door to the Docker daemon: GET requests over the socket.

Two connection pools, because a follow stream holds its connection for as long as the
container lives: with one shared pool of aiodocker's default 100 connections, 100 open
streams leave an `inspect` waiting forever. Streams get an unbounded pool of their own;
short requests keep aiodocker's bounded one.

Connecting is the one thing retried, and only here (tenacity): "cannot connect" and
"connection lost" are retried; an answer from the daemon (404, 500, ...) never is.

aiodocker's public API serves version, inspect and list. The two streams (logs, events) need
the raw response, which only its private `Docker._do_query` gives (its `container.log()`
drops the stdout/stderr tag and `events.subscribe()` runs a task of its own): that call is
made in `_open_stream` alone, aiodocker is pinned to a minor version in pyproject.toml, and
tests/unit/test_docker_private_api.py fails if that method's signature changes.

A log stream is asked for in HTTP/1.0 unless it may be cut short (`logs(chunked=False)`):
dockerd flushes every line as an HTTP chunk of its own, and aiohttp handles each chunk in
Python (a call, a split record, a resume): ~0.5 µs a line, a tenth of the agent's cost on a
firehose (bench/README.md, #19). In HTTP/1.0 the body simply runs until dockerd
closes the connection. The price: a stream cut short looks like one that ended. For a
container that outlives its stream that costs nothing, as the read that follows the end
(the catch-up) fetches all after the position; a `--rm` container's log may be gone by then,
so its stream stays chunked, where a cut shows (a gap is recorded).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import aiodocker
import aiohttp
import anyio
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_never,
    wait_exponential_jitter,
)

from agent.docker.address import docker_url
from agent.docker.errors import BadReference, DockerError, DockerUnavailable
from agent.docker.event_lines import EventLines
from agent.docker.inspect import ContainerInfo
from agent.docker.pacing import RestClock
from agent.docker.translate import mapped

log = logging.getLogger("logagent.docker")

# Short requests (inspect, list, version) must answer or fail; streams must not time out.
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=30, sock_connect=10)
STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=None)


class LogStream:
    """An open log stream: its body, and a way to let it rest (see `agent.docker.pacing`)."""

    def __init__(self, response: aiohttp.ClientResponse, clock: RestClock) -> None:
        self.body: aiohttp.StreamReader = response.content
        self._response = response
        self._clock = clock

    def rest(self, seconds: float) -> None:
        """Stop reading the socket for up to `seconds`: what Docker sends waits in it.

        The next `body.readany()` returns once the clock has resumed it and data is there.
        """
        connection = self._response.connection
        if connection is not None and connection.transport is not None:
            self._clock.rest(connection.transport, seconds)


# Docker's own rule for container names and ids (daemon/names: RestrictedNameChars).
_REFERENCE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}")


def container_segment(ref: str) -> str:
    """A container name or id as one URL path segment: checked, then quoted.

    Every path sent to Docker with a container in it is built from this, so a crafted name
    (`../../version`, `x/export?`) can never reach another endpoint.
    """
    if not _REFERENCE.fullmatch(ref):
        raise BadReference(f"{ref[:80]!r} is not a container name or id")
    return quote(ref, safe="")


def _connector(url: str, limit: int, close: bool) -> tuple[aiohttp.BaseConnector, str]:
    """A connection pool, and the base URL that requests through it are built on.

    `close`: a connection serves one request (it asks for `Connection: close`)."""
    if url.startswith("unix://"):
        path = url[len("unix://") :]
        return aiohttp.UnixConnector(path, limit=limit, force_close=close), "unix://localhost"
    if url.startswith(("tcp://", "http://")):
        pool = aiohttp.TCPConnector(limit=limit, force_close=close)
        return pool, "http://" + url.split("://", 1)[1]
    raise DockerError(f"unsupported Docker address {url!r}: use unix:// or tcp://")


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
        # aiodocker's default pool for requests; unbounded ones for streams (see the doc)
        for limit, version in (
            (100, aiohttp.HttpVersion11),
            (0, aiohttp.HttpVersion11),
            (0, aiohttp.HttpVersion10),
        ):
            # An HTTP/1.0 body ends with its connection: it never goes back to a pool.
            conn, base = _connector(self.url, limit, close=version == aiohttp.HttpVersion10)
            session = aiohttp.ClientSession(
                connector=conn, timeout=REQUEST_TIMEOUT, trace_configs=[trace], version=version
            )
            sessions.append(aiodocker.Docker(url=base, connector=conn, session=session))
        self._api, self._streams, self._unchunked = sessions
        self.rest_clock = RestClock()

    async def _on_request_start(
        self, _session: object, _ctx: object, params: aiohttp.TraceRequestStartParams
    ) -> None:
        if self.record_requests:
            self.requests.append((params.method, params.url.path))

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):  # a cancelled owner still releases the sockets
            for docker in (self._api, self._streams, self._unchunked):
                await docker.session.close()  # ours: aiodocker leaves a given session open

    async def __aenter__(self) -> DockerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def version(self) -> dict[str, Any]:
        with mapped(f"GET version from {self.url}"):
            data: dict[str, Any] = await self._api.version()
        return data

    async def connect(self, *, attempts: int | None = None, max_wait: float = 30.0) -> None:
        """Reach the daemon, retrying "cannot connect" with capped, jittered back-off."""
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(DockerUnavailable),
            wait=wait_exponential_jitter(multiplier=0.2, max=max_wait, jitter=0.5),
            stop=stop_never if attempts is None else stop_after_attempt(attempts),
            before_sleep=self._log_retry,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                ver = await self.version()
        version = "v" + str(ver["ApiVersion"])
        for docker in (self._api, self._streams, self._unchunked):
            docker.api_version = version

    def _log_retry(self, state: RetryCallState) -> None:
        """One line a person can act on: which socket, which attempt, the next wait."""
        error = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning(
            "Retrying the Docker daemon at %s in %.1f s (attempt %d failed: %s)",
            self.url,
            wait,
            state.attempt_number,
            _root_cause(error),
        )

    async def inspect(self, container_id: str) -> ContainerInfo:
        """The container as the agent uses it, parsed here once (docker/inspect.py)."""
        segment = container_segment(container_id)
        with mapped(f"inspect {container_id[:64]}"):
            data: dict[str, Any] = await self._api.containers.container(segment).show()
        return ContainerInfo.of(data)

    async def list_containers(
        self, *, all: bool = False, filters: dict[str, list[str]] | None = None
    ) -> list[ContainerInfo]:
        params: dict[str, Any] = {"all": "1" if all else "0"}
        if filters:
            params["filters"] = json.dumps(filters)
        with mapped("list containers"):
            listed = await self._api.containers.list(**params)
        return [ContainerInfo.listed(_listed(c)) for c in listed]

    async def _open_stream(
        self, path: str, params: dict[str, Any], *, chunked: bool = True
    ) -> aiohttp.ClientResponse:
        """The one use of aiodocker's private API: a raw streaming GET (see the module doc)."""
        docker = self._streams if chunked else self._unchunked
        response: aiohttp.ClientResponse = await docker._do_query(
            path, "GET", params=params, timeout=STREAM_TIMEOUT
        )
        return response

    @asynccontextmanager
    async def events(
        self, *, since: str | None = None, filters: dict[str, list[str]] | None = None
    ) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        """Docker's /events as parsed objects; the response closes with the block."""
        params: dict[str, Any] = {}
        if since is not None:
            params["since"] = since
        if filters:
            params["filters"] = json.dumps(filters)
        with mapped("GET /events"):
            response = await self._open_stream("events", params)

        async def parsed() -> AsyncIterator[dict[str, Any]]:
            lines = EventLines()
            with mapped("events stream"):
                async for chunk in response.content.iter_any():
                    events = lines.feed(chunk)
                    for why in lines.skipped:
                        log.error("skipped %s", why)
                    lines.skipped.clear()
                    for event in events:
                        yield event

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
        chunked: bool = True,
    ) -> AsyncIterator[LogStream]:
        """Open a container's log stream (timestamps on); closed on every exit path.

        `chunked=False`: in HTTP/1.0, cheaper per line, but a cut looks like the end (see
        the module doc): only for a container whose log outlives the stream."""
        params: dict[str, Any] = {
            "stdout": "1",
            "stderr": "1",
            "follow": "1" if follow else "0",
            "timestamps": "1",
            "tail": str(tail),
        }
        if since is not None:
            params["since"] = since
        path = f"containers/{container_segment(container_id)}/logs"
        with mapped(f"logs of {container_id[:12]}"):
            response = await self._open_stream(path, params, chunked=chunked)
        try:
            yield LogStream(response, self.rest_clock)
        finally:
            # An unread body cannot go back to the pool: close drops the connection.
            response.close()


def _root_cause(error: BaseException | None) -> str:
    """What really went wrong under aiodocker's "Cannot connect ... via unix://localhost"."""
    seen = error
    while seen is not None:
        if isinstance(seen, aiohttp.ClientConnectorError):
            return seen.os_error.strerror or str(seen.os_error)
        seen = seen.__cause__ or seen.__context__
    return str(error)


def _listed(container: aiodocker.containers.DockerContainer) -> dict[str, Any]:
    """A listed container as the daemon sent it (aiodocker wraps each in an object)."""
    out: dict[str, Any] = {}
    for key in ("Id", "Names", "Image", "Labels", "State", "Created"):
        try:
            out[key] = container[key]
        except KeyError:
            continue
    return out
