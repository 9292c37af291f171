"""LogCollectorManager: one task group, one collector per container, keyed `docker:<id>`.

A collector that fails is logged with its container, leaves the active list and is not
restarted: only another `start_docker_collector` call (a new start event, a person) does.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import anyio
from anyio.abc import TaskGroup

from agent.collectors.docker import DEFAULT_TAIL, DockerLogCollector
from agent.cursor import Cursor
from agent.docker.client import DockerClient
from agent.docker.frames import DEFAULT_MAX_LINE_BYTES
from agent.docker.pacing import DEFAULT_CHATTY_REST, DEFAULT_REST
from agent.storage import LogStorage

log = logging.getLogger("logagent.manager")

DOCKER_PREFIX = "docker:"


def docker_key(container_id: str) -> str:
    return container_id if container_id.startswith(DOCKER_PREFIX) else DOCKER_PREFIX + container_id


class LogCollectorManager:
    """Starts and stops collectors; use as `async with LogCollectorManager(storage) as m:`."""

    def __init__(
        self,
        storage: LogStorage | None = None,
        *,
        client: DockerClient | None = None,
        tail: int | str = DEFAULT_TAIL,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        read_rest: float = DEFAULT_REST,
        chatty_rest: float = DEFAULT_CHATTY_REST,
    ) -> None:
        self._storage = storage
        self._client = client
        self._owns_client = client is None
        self.tail = tail
        self.max_line_bytes = max_line_bytes
        self.read_rest = read_rest
        self.chatty_rest = chatty_rest
        self._active: dict[str, DockerLogCollector] = {}
        self.failed: dict[str, str] = {}  # key -> why, until the container is started again
        # Where each ended collector stopped: the next collector of that container resumes
        # there, so a restarted container's earlier run is neither lost nor stored twice.
        self.cursors: dict[str, Cursor] = {}
        self.errors = 0
        self._ended_reads = [0, 0, 0, 0]  # reads, rests, chatty rests, busy spells: ended
        self._tg: TaskGroup | None = None

    @property
    def client(self) -> DockerClient:
        if self._client is None:
            self._client = DockerClient()
        return self._client

    async def __aenter__(self) -> LogCollectorManager:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            with anyio.CancelScope(shield=True):
                await self.stop_all()
        finally:
            tg, self._tg = self._tg, None
            if tg is not None:
                tg.cancel_scope.cancel()
                await tg.__aexit__(None, None, None)
            if self._owns_client and self._client is not None:
                await self._client.close()
                self._client = None

    def active_collectors(self) -> dict[str, DockerLogCollector]:
        """The running collectors by key (a copy)."""
        return dict(self._active)

    def get(self, key: str) -> DockerLogCollector | None:
        return self._active.get(docker_key(key))

    async def start_docker_collector(
        self,
        container_id: str,
        container_name: str | None = None,
        *,
        tail: int | str | None = None,
        since: str | None = None,
        follow: bool = True,
        info: dict[str, Any] | None = None,
        cursor: Cursor | None = None,
    ) -> DockerLogCollector:
        """Start following a container (id, name or id prefix); a no-op if already active."""
        if self._tg is None:
            raise RuntimeError("LogCollectorManager is not running: use `async with manager:`")
        existing = self._active.get(docker_key(container_id))
        if existing is not None:
            return existing
        info = info or await self.client.inspect(container_id)
        full_id: str = info["Id"]
        key = docker_key(full_id)
        existing = self._active.get(key)
        if existing is not None:
            return existing
        name = container_name or str(info.get("Name", "")).lstrip("/") or full_id[:12]
        # Where the last collector of this container here ended is newer than any `cursor`
        # given (read from the store earlier, e.g. when the container was created).
        cursor = self.cursors.get(key, cursor)
        if cursor is None and self._storage is not None:
            cursor = await self._storage.load_cursor(full_id)
            existing = self._active.get(key)
            if existing is not None:  # started by someone else while we asked the database
                return existing
        collector = DockerLogCollector(
            full_id,
            name,
            client=self.client,
            task_group=self._tg,
            tail=self.tail if tail is None else tail,
            since=since,
            follow=follow,
            max_line_bytes=self.max_line_bytes,
            read_rest=self.read_rest,
            chatty_rest=self.chatty_rest,
            info=info,
            cursor=cursor,
        )
        if self._storage is not None:
            collector.on("lines", self._storage.write_many)
            collector.on("gap", self._on_gap)
        collector.on("error", self._on_error)
        collector.on("end", self._on_end)
        self._active[key] = collector
        self.failed.pop(key, None)
        try:
            await collector.start()
        except BaseException:
            self._active.pop(key, None)
            raise
        log.info("collecting %s (%s)", name, full_id[:12])
        return collector

    async def stop_collector(self, key: str) -> bool:
        """Stop one collector by key (`docker:<id>`, or the bare id); False if none ran."""
        collector = self._active.get(docker_key(key))
        if collector is None:
            return False
        await collector.stop()
        return True

    async def stop_all(self, *, drain: bool = False) -> None:
        """Stop every collector, then wait until what they read is committed.

        `drain`: each first reads what Docker holds up to now (a graceful shutdown).
        """
        collectors = list(self._active.values())
        if collectors:
            async with anyio.create_task_group() as tg:
                for collector in collectors:
                    tg.start_soon(partial(collector.stop, drain=drain))
        if self._storage is not None:
            await self._storage.flush()

    def forget(self, key: str) -> None:
        """The container is gone for good: drop what is kept about it."""
        self.cursors.pop(docker_key(key), None)
        self.failed.pop(docker_key(key), None)
        if self._storage is not None:
            self._storage.forget(docker_key(key).removeprefix(DOCKER_PREFIX))

    async def _on_gap(
        self, collector: DockerLogCollector, reason: str, from_ns: int, to_ns: int
    ) -> None:
        if self._storage is not None:
            await self._storage.record_gap(
                collector.container_id,
                collector.container_name,
                reason,
                from_ns=from_ns,
                to_ns=to_ns,
            )

    def _on_error(self, collector: DockerLogCollector, exc: BaseException) -> None:
        self.errors += 1
        self.failed[collector.key] = collector.error or repr(exc)
        log.error(
            "collector for %s (%s) failed and will not be restarted: %s",
            collector.container_name,
            collector.container_id[:12],
            collector.error,
        )

    def read_figures(self) -> tuple[int, int, int, int]:
        """Reads, rests, chatty rests and busy spells of every stream so far (docker/pacing.py)."""
        active = list(self._active.values())
        reads, rests, chatty, spells = self._ended_reads
        return (
            reads + sum(c.reads for c in active),
            rests + sum(c.pacer.rests for c in active),
            chatty + sum(c.pacer.chatty_rests for c in active),
            spells + sum(c.pacer.busy_spells for c in active),
        )

    def _on_end(self, collector: DockerLogCollector) -> None:
        ended = self._ended_reads
        ended[0] += collector.reads
        ended[1] += collector.pacer.rests
        ended[2] += collector.pacer.chatty_rests
        ended[3] += collector.pacer.busy_spells
        if not collector.cursor.empty:
            self.cursors[collector.key] = collector.cursor
        if self._active.get(collector.key) is collector:
            del self._active[collector.key]


_default: LogCollectorManager | None = None


def default_manager() -> LogCollectorManager:
    """The shared instance (the seed's `logCollectorManager`), created on first use."""
    global _default
    if _default is None:
        _default = LogCollectorManager()
    return _default


def __getattr__(name: str) -> Any:
    if name == "logCollectorManager":
        return default_manager()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
