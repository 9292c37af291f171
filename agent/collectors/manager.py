"""LogCollectorManager: one task group, one collector per container, the store as their sink.

A collector that fails is logged with its container, leaves the active list, and its record
says why (a `Failure`); it is not restarted here: only another `start_docker_collector`
call (a start event, a listing after the daemon came back, a person) does.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from functools import partial
from typing import Any

import anyio
from anyio.abc import TaskGroup

from agent.batch import Source
from agent.collectors.docker import DockerLogCollector, LogSink, container_of
from agent.collectors.options import DEFAULT_TAIL, StreamOptions
from agent.collectors.records import ContainerRecord, Failure, Registry, identity
from agent.collectors.stream_end import StreamEnd, StreamFigures
from agent.cursor import Cursor
from agent.docker.client import DockerClient
from agent.docker.inspect import ContainerInfo
from agent.docker.lines import DEFAULT_MAX_LINE_BYTES
from agent.docker.pacing import DEFAULT_CHATTY_REST, DEFAULT_REST
from agent.shaping.hints import HintRule, Hints, hints_for
from agent.shaping.rate import Rate
from agent.storage import LogStorage

log = logging.getLogger("logagent.manager")


class LogCollectorManager:
    """Starts and stops collectors; use as `async with LogCollectorManager(storage) as m:`."""

    def __init__(
        self,
        storage: LogStorage | None = None,
        *,
        client: DockerClient | None = None,
        registry: Registry | None = None,
        tail: int | str = DEFAULT_TAIL,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        read_rest: float = DEFAULT_REST,
        chatty_rest: float = DEFAULT_CHATTY_REST,
        hint_rules: tuple[HintRule, ...] = (),
        default_rate: Rate | None = None,
        label_retention_max_s: float = 0.0,
    ) -> None:
        self._storage = storage
        self._client = client
        self._owns_client = client is None
        self.registry = registry if registry is not None else Registry()
        self.options = StreamOptions(tail, max_line_bytes, read_rest, chatty_rest)
        self.hint_rules = hint_rules
        self.default_rate = default_rate
        self.label_retention_max_s = label_retention_max_s  # 0: a label may keep for ever
        self.errors = 0
        self._ended = StreamFigures()  # of the collectors that ended
        self._tg: TaskGroup | None = None
        self._sink: LogSink | None = None
        if storage is not None:
            self._sink = LogSink(
                write=storage.writer.write,
                gap=self._gap,
                ended=self._on_end,
            )

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
        return {r.collector.key: r.collector for r in self.registry.active() if r.collector}

    def get(self, ref: str) -> DockerLogCollector | None:
        """The live collector of a container (key, id, name or id prefix), if any."""
        rec = self.registry.find(container_of(ref))
        return rec.collector if rec is not None else None

    async def start_docker_collector(
        self,
        container_id: str,
        container_name: str | None = None,
        *,
        tail: int | str | None = None,
        follow: bool = True,
        info: ContainerInfo | None = None,
    ) -> DockerLogCollector:
        """Start following a container (id, name or id prefix); a no-op if already active.

        It resumes where the container's last stream here ended, or else where the store
        says, or else at `tail`.
        """
        if self._tg is None or self._sink is None:
            raise RuntimeError(
                "LogCollectorManager is not running: use `async with manager:`, with a storage"
            )
        existing = self.get(container_id)
        if existing is not None:
            return existing
        rec = self.registry.find(container_id)
        info = info or (rec.prepared if rec is not None else None)
        info = info or await self.client.inspect(container_id)
        full_id = info.id
        name = container_name or info.name
        rec = self.registry.record(full_id, name)
        if rec.collector is None and rec.cursor is None and self._storage is not None:
            cursor = await self._storage.load_cursor(full_id)
            rec.cursor = rec.cursor or cursor  # a stream that ended meanwhile knows better
        if rec.collector is not None:  # started by someone else while we asked
            return rec.collector
        if rec.hints is None:  # labels never change: read once per container
            rec.hints = self._hints(info, name)
        rec.identify(identity(rec.source, info, rec.hints))
        collector = DockerLogCollector(
            full_id,
            name,
            source=rec.source,
            sink=self._sink,
            lookup=self._storage,
            client=self.client,
            task_group=self._tg,
            options=self.options if tail is None else replace(self.options, tail=tail),
            follow=follow,
            info=info,
            cursor=rec.cursor or Cursor(),
            hints=rec.hints,
        )
        # The position moved into the collector (built: nothing above can lose it now), and
        # comes back in its StreamEnd.
        rec.cursor = None
        rec.collector, rec.failure, rec.prepared = collector, None, None
        try:
            await collector.start()
        except BaseException:
            if rec.collector is collector:
                rec.collector = None
            if not collector.progress.ended.is_set():  # no StreamEnd: the position is its own
                rec.cursor = collector.cursor
            raise
        log.info("collecting %s (%s)", name, full_id[:12])
        return collector

    def _hints(self, info: ContainerInfo, name: str) -> Hints:
        """The container's hints; what cannot be used is said here, once per container."""
        hints = hints_for(
            info.labels,
            name=name,
            image=info.image,
            rules=self.hint_rules,
            default_rate=self.default_rate,
            label_retention_max_s=self.label_retention_max_s,
        )
        for problem in hints.problems:
            log.warning("%s (%s): %s", name, info.id[:12], problem)
        return hints

    async def stop_collector(self, key: str, *, drain: bool = False) -> bool:
        """Stop one collector (key `docker:<id>`, id, name or id prefix); False if none ran.

        `drain`: first read what Docker holds up to now, so nothing written before is lost.
        """
        collector = self.get(key)
        if collector is None:
            return False
        await collector.stop(drain=drain)
        return True

    async def stop_all(self, *, drain: bool = False) -> None:
        """Stop every collector, then wait until what they read is committed."""
        collectors = list(self.active_collectors().values())
        if collectors:
            async with anyio.create_task_group() as tg:
                for collector in collectors:
                    tg.start_soon(partial(collector.stop, drain=drain, settle=drain))
        if self._storage is not None:
            await self._storage.flush()

    def figures(self) -> StreamFigures:
        """What every stream did so far, ended ones included (for metrics)."""
        total = StreamFigures(**vars(self._ended))
        for collector in self.active_collectors().values():
            total.add(collector.reader.figures())
        return total

    async def _gap(
        self, source: Source, reason: str, from_ns: int | None, to_ns: int | None
    ) -> None:
        assert self._storage is not None
        await self._storage.record_gap(source, reason, from_ns=from_ns, to_ns=to_ns)

    def _on_end(self, end: StreamEnd) -> None:
        """The one place a stream's result is written into its container's record."""
        self._ended.add(end.figures)
        collector = end.collector
        rec: ContainerRecord | None = self.registry.get(collector.container_id)
        if rec is None:
            return
        newer = rec.collector is not None and rec.collector is not collector
        if not newer and (not end.position.empty or rec.cursor is None):
            rec.cursor = end.position  # the next stream of this container resumes here
        if rec.collector is collector:
            rec.collector = None
        if end.state == "failed" and end.opened:
            assert end.exception is not None
            self.errors += 1
            rec.failure = Failure.of(end.exception, end.error)
            log.error(
                "collector for %s (%s) failed and will not be restarted: %s",
                collector.container_name,
                collector.container_id[:12],
                end.error,
            )


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
