"""DockerLogCollector: follows one container's log stream and writes its lines to a sink.

It runs in a cancel scope of its own inside a task group it is given (the manager's), so
`stop()` ends exactly this stream. It never restarts itself: when it fails, it says why
(`state`, `error`, `exception`) and ends, handing its position back in a `StreamEnd`.
This module is the stream's life (open, follow, drain, catch up, end); the read loop is
`reading.StreamReader`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
from anyio.abc import TaskGroup, TaskStatus

from agent.batch import LineBatch, Source
from agent.collectors.ending import (
    ContainerVanished,
    Refollow,
    after_follow,
    cut_by_removal,
    gone,
    removed_with_rm,
)
from agent.collectors.options import StreamOptions
from agent.collectors.progress import Progress
from agent.collectors.reading import StreamReader
from agent.collectors.resend import StoredLines
from agent.collectors.stream_end import StreamEnd
from agent.cursor import Cursor, ResendGuard
from agent.docker.client import DockerClient
from agent.docker.errors import ContainerNotFound, DockerUnavailable
from agent.docker.inspect import ContainerInfo
from agent.docker.pacing import ReadPacer, may_rest
from agent.shaping.hints import Hints

log = logging.getLogger("logagent.collector")

DEFAULT_OPTIONS = StreamOptions()
KEY_PREFIX = "docker:"


def docker_key(container_id: str) -> str:
    """A collector's key, `docker:<id>`, as the control API shows it."""
    return container_id if container_id.startswith(KEY_PREFIX) else KEY_PREFIX + container_id


def container_of(key: str) -> str:
    """The container id or name in a key (or the text itself when it is not one)."""
    return key.removeprefix(KEY_PREFIX)


@dataclass(frozen=True)
class LogSink:
    """What a collector writes to: one typed sink, not a general event system.

    `write` is the hot path, once per read, and may wait (the store's queue is full:
    backpressure); `ended` is a plain function, so it runs even in a cancelled scope, before
    anyone waiting on the collector resumes.
    """

    write: Callable[[LineBatch], Awaitable[None]]
    gap: Callable[[Source, str, int | None, int | None], Awaitable[None]]
    ended: Callable[[StreamEnd], None]


async def _unwired(*_: object) -> None:
    raise RuntimeError("this collector has no sink")


_UNWIRED = LogSink(write=_unwired, gap=_unwired, ended=lambda end: None)


class _NoStore:
    async def already_stored(self, source: Source, lines: list[tuple[str, int, str]]) -> set[int]:
        raise RuntimeError("this collector has no store")


class DockerLogCollector:
    """One container's logs: `await start()` returns once the stream is open."""

    # A graceful stop's plain read of what Docker holds gets this long; a dead container's
    # rest is read for as long as it comes, and given up only after this much more silence.
    drain_timeout: float = 5.0
    dead_rest_patience: float = 300.0
    # A shutdown does not re-read a stream that had no line for `idle_s` and reads none in
    # `settle_s` more: the follow stream has sent what Docker holds (issue 29: a shutdown of
    # 1,100 collectors made 1,100 plain reads, and its time grew with the count).
    idle_s: float = 5.0
    settle_s: float = 0.5

    def __init__(
        self,
        container_id: str,
        container_name: str | None = None,
        *,
        source: Source | None = None,
        sink: LogSink | None = None,
        lookup: StoredLines | None = None,
        client: DockerClient | None = None,
        task_group: TaskGroup | None = None,
        options: StreamOptions = DEFAULT_OPTIONS,
        follow: bool = True,
        info: ContainerInfo | None = None,
        cursor: Cursor | None = None,
        hints: Hints | None = None,
    ) -> None:
        """`cursor` is moved in, not copied: the collector owns it until its `StreamEnd`."""
        self.hints = hints or Hints()
        # Its identity as the manager made it (collectors/records.identity); the compose
        # project is checked again once the stream opens.
        self.source = source or Source(container_id, container_name or container_id[:12])
        self.container_id = container_id
        self.container_name = self.source.container_name
        self.follow = follow
        self._sink = sink or _UNWIRED
        self._client, self._task_group, self._info = client, task_group, info
        self._scope: anyio.CancelScope | None = None
        self._follow_scope: anyio.CancelScope | None = None
        self._exited = False  # stopped because the container ended (see `stop`)
        self._settled = False  # stopped idle at a shutdown: no re-read (see `stop`)
        self._refollow = Refollow()  # when Docker ends the stream of a running container
        self.progress = Progress()
        self._rest_elsewhere = anyio.Event()  # a new run of the container reads it
        self.state = "new"  # new, running, ended, failed, stopped
        self.opened = False  # the stream was opened: a failure after it is the collector's
        self.error: str | None = None
        self.exception: BaseException | None = None
        rest = options.read_rest if follow else 0.0  # see docker/pacing.py
        self.reader = StreamReader(
            self.source,
            write=self._sink.write,
            gap=self._sink.gap,
            lookup=lookup or _NoStore(),
            cursor=cursor if cursor is not None else Cursor(),
            hints=self.hints,
            pacer=ReadPacer(rest=rest, chatty_rest=options.chatty_rest),
            max_line_bytes=options.max_line_bytes,
            progress=self.progress,
            tail=options.tail,
        )

    # What the manager, metrics and tests read most of the stream, owned by its reader.
    @property
    def cursor(self) -> Cursor:
        return self.reader.cursor

    @property
    def guard(self) -> ResendGuard:
        return self.reader.guard

    @property
    def pacer(self) -> ReadPacer:
        return self.reader.pacer

    @property
    def lines(self) -> int:
        return self.reader.lines

    @property
    def reads(self) -> int:
        return self.reader.reads

    @property
    def key(self) -> str:
        return docker_key(self.container_id)

    def __repr__(self) -> str:
        return f"<DockerLogCollector {self.container_name} {self.container_id[:12]} {self.state}>"

    def identify(self, source: Source) -> None:
        """Its new identity (a rename): the stream's next batches carry it."""
        self.source, self.container_name = source, source.container_name
        self.reader.identify(source)

    async def start(self) -> None:
        """Open the stream; raises ContainerNotFound, LogsUnavailable, DockerUnavailable, ..."""
        if self._task_group is None or self._sink is _UNWIRED or self._client is None:
            raise RuntimeError(
                "DockerLogCollector needs a task group, a sink and a client to run with: "
                "start it with LogCollectorManager.start_docker_collector()"
            )
        if self.state != "new":
            raise RuntimeError(f"{self!r} was already started; create a new collector")
        await self._task_group.start(self._run)

    async def stop(
        self, *, drain: bool = False, exited: bool = False, settle: bool = False
    ) -> None:
        """End this collector and wait until its connection is released.

        With `drain`, the follow stream is closed and one plain read from the cursor fetches
        what Docker holds up to now (at most `drain_timeout` seconds): a graceful shutdown
        then stores every line written before it. `exited`: the container is gone, so open
        multiline events are whole and stored (else they wait for the next start). `settle`
        (a shutdown): a stream idle for `idle_s` is watched `settle_s` more, and if it stays
        idle it has sent all there is, and is closed without the plain read.
        """
        self._exited |= exited  # a second stop does not undo that it ended
        if drain and self._follow_scope is not None and self.state == "running":
            if settle and not self._exited:
                reader, progress = self.reader, self.progress
                idle = await progress.stays_idle(self.idle_s, self.settle_s, lambda: reader.reads)
                self._settled = idle
            self._follow_scope.cancel()
            if exited:
                where, patience = self.reader.where(), self.dead_rest_patience
                cut = self._rest_elsewhere
                if not await self.progress.rest_read(self.drain_timeout + 1, patience, cut, where):
                    await self.reader.mark("exited")
            else:
                with anyio.move_on_after(self.drain_timeout + 1):
                    await self.progress.ended.wait()
        if self._scope is not None:
            self._scope.cancel()
            await self.progress.ended.wait()

    @property
    def opened_ns(self) -> int:
        """When its first follow stream was asked for (the wall clock; 0 before): a run of
        the container that began before it is one this stream reads, or read."""
        return self._refollow.opened_ns

    def rest_read_elsewhere(self) -> None:
        """The container runs again: the new run's stream resumes from the stored position
        and reads this rest itself, so the dead run's read of it may end (it held the
        container's lock, and the new run waited behind it)."""
        self._rest_elsewhere.set()

    async def wait(self) -> None:
        """Return when the stream has ended, failed or been stopped."""
        await self.progress.ended.wait()

    async def _run(self, *, task_status: TaskStatus[None]) -> None:
        assert self._client is not None
        client, reader, started = self._client, self.reader, False
        try:
            with anyio.CancelScope() as scope:
                self._scope = scope
                try:
                    info = self._info or await client.inspect(self.container_id)
                    if not may_rest(info):  # --rm, or a log that rotates quickly
                        reader.pacer.rest = 0.0
                    # A --rm container's stream is chunked, so that a cut shows (client.py)
                    reader.chunked = info.auto_remove
                    decoder = reader.decoder(info.tty)
                    self._refollow.opened_ns = time.time_ns()
                    async with reader.open(client, follow=self.follow) as stream:
                        self.state = "running"
                        started = self.opened = True
                        task_status.started()
                        described = self.source.described(
                            info.project, info.service, info.image, info.kept_labels
                        )
                        if described is not self.source:
                            self.identify(described)
                        await reader.mark("running")
                        with anyio.CancelScope() as follow_scope:
                            self._follow_scope = follow_scope
                            await reader.read(stream, decoder, paced=True)
                    cut_short = True
                    while self.follow and cut_short and not follow_scope.cancelled_caught:
                        # under a follow scope from the first await: a stop during the pause
                        # or the reopen cancels it, and is a stop (drained) as any other
                        with anyio.CancelScope() as follow_scope:
                            self._follow_scope = follow_scope
                            cut_short = await self._refollow.cut_short(client, reader)
                            if cut_short:
                                decoder = reader.again(info.tty)
                                async with reader.open(client, follow=True) as stream:
                                    await reader.read(stream, decoder, paced=True)
                    if not self.follow:
                        await reader.end_of(decoder)
                    else:
                        stopped = follow_scope.cancelled_caught
                        await after_follow(
                            reader,
                            client,
                            info,
                            decoder,
                            stopped=stopped,
                            exited=self._exited,
                            settled=self._settled,
                            drain_timeout=self.drain_timeout,
                        )
                    self.state = "ended"
                except DockerUnavailable as exc:
                    if self.opened and await gone(client, self.container_id):
                        await cut_by_removal(reader)
                        self.state = "ended"
                    else:
                        self._failed(exc)
                        if not started:
                            raise
                except (ContainerNotFound, ContainerVanished) as exc:
                    if not self.opened:
                        self._failed(exc)
                        raise
                    if info.auto_remove and isinstance(exc, ContainerNotFound):
                        # The read after a --rm container's stream met its removal (409 "dead
                        # or marked for removal"): its normal end, not an error to report.
                        await removed_with_rm(reader, reader.decoder(info.tty))
                        self.state = "ended"
                    else:
                        # Reported as before. A read that met the removal (the agent behind,
                        # a catch-up under way) leaves what Docker had not sent lost, which a
                        # gap now says (a review: a backlog lost so); a stream that ended on its
                        # own and then found its container gone had it all (compose down).
                        if isinstance(exc, ContainerNotFound):
                            await cut_by_removal(reader)
                        self._failed(exc)
                except Exception as exc:
                    self._failed(exc)
                    if not started:
                        raise
            if scope.cancelled_caught:
                self.state = "stopped"
        finally:
            # The position goes back to the manager before anyone waiting resumes.
            self._sink.ended(self._end())
            self.progress.ended.set()

    def _end(self) -> StreamEnd:
        return StreamEnd(
            self,
            self.reader.cursor,
            self.state,
            self.opened,
            exception=self.exception,
            error=self.error,
            figures=self.reader.figures(),
        )

    def _failed(self, exc: Exception) -> None:
        self.state, self.exception = "failed", exc
        self.error = f"{type(exc).__name__}: {exc}"
