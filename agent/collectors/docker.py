"""DockerLogCollector: follows one container's log stream and writes its lines to a sink.

It runs in a cancel scope of its own inside a task group it is given (the manager's), so
`stop()` ends exactly this stream. It never restarts itself: when it fails, it says why
(`state`, `error`, `exception`) and ends, handing its position back in a `StreamEnd`.
This module is the stream's life (open, follow, drain, catch up, end); the read loop is
`reading.StreamReader`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import anyio
from anyio.abc import TaskGroup, TaskStatus

from agent import gaps
from agent.batch import LineBatch, Source
from agent.collectors.options import StreamOptions
from agent.collectors.progress import Progress
from agent.collectors.reading import StreamReader
from agent.collectors.resend import StoredLines
from agent.collectors.stream_end import StreamEnd
from agent.containers import identity
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


class ContainerVanished(Exception):
    """The container was removed while its stream was being followed."""


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
        source = source or Source(container_id, container_name or container_id[:12])
        self.source = identity(source, info, self.hints)
        self.container_id = container_id
        self.container_name = self.source.container_name
        self.follow = follow
        self._sink = sink or _UNWIRED
        self._client, self._task_group, self._info = client, task_group, info
        self._scope: anyio.CancelScope | None = None
        self._follow_scope: anyio.CancelScope | None = None
        self._exited = False  # stopped because the container ended (see `stop`)
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

    async def stop(self, *, drain: bool = False, exited: bool = False) -> None:
        """End this collector and wait until its connection is released.

        With `drain`, the follow stream is closed and one plain read from the cursor fetches
        what Docker holds up to now (at most `drain_timeout` seconds): a graceful shutdown
        then stores every line written before it. `exited`: the container is gone, so open
        multiline events are whole and stored (else they wait for the next start).
        """
        self._exited |= exited  # a second stop does not undo that it ended
        if drain and self._follow_scope is not None and self.state == "running":
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
                    async with reader.open(client, follow=self.follow) as stream:
                        self.state = "running"
                        started = self.opened = True
                        task_status.started()
                        if info.project != self.source.project:
                            self.identify(replace(self.source, project=info.project))
                        await reader.mark("running")
                        with anyio.CancelScope() as follow_scope:
                            self._follow_scope = follow_scope
                            await reader.read(stream, decoder, paced=True)
                    if self.follow and follow_scope.cancelled_caught:
                        # Stopped while the container runs: an open event may go on; it is
                        # left to the next start, which reads it again from its first line.
                        # A shutdown drain has its budget; a dead container's rest is read
                        # as long as it comes (stop() watches that it does).
                        with anyio.move_on_after(math.inf if self._exited else self.drain_timeout):
                            await reader.catch_up(client, info.tty, ended=self._exited)
                        if not self._exited:
                            await reader.keep_open_events()
                        else:
                            await reader.mark("exited")
                    elif self.follow and not await _removed_after_exit(client, info, self.source):
                        await reader.catch_up(client, info.tty)
                        await reader.mark("exited")
                    else:
                        await reader.end_of(decoder)
                        if self.follow:
                            await reader.mark("removed")
                    self.state = "ended"
                except DockerUnavailable as exc:
                    if self.opened and await _gone(client, self.container_id):
                        await self._cut_by_removal()
                    else:
                        self._failed(exc)
                        if not started:
                            raise
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

    async def _cut_by_removal(self) -> None:
        """Docker broke the stream off as it removed the container, before it said the stream
        was finished: what it had not sent is lost, and a gap says so."""
        last = self.reader.last_timestamp_ns
        await self.reader.gap(gaps.cut_by_removal(last), last or None, None)
        await self.reader.mark("removed")
        self.state = "ended"

    def _failed(self, exc: Exception) -> None:
        self.state, self.exception = "failed", exc
        self.error = f"{type(exc).__name__}: {exc}"


async def _gone(client: DockerClient, container_id: str) -> bool:
    """Whether the container is removed (or on its way out); False if the daemon is away."""
    try:
        return (await client.inspect(container_id)).going
    except ContainerNotFound:
        return True
    except DockerUnavailable:
        return False


async def _removed_after_exit(client: DockerClient, info: ContainerInfo, source: Source) -> bool:
    """A follow stream also ends when the container is removed.

    For a `--rm` container that is its normal end: True, and the stream had every line
    (but a last one without newline, which dockerd sends only on a plain read, and there
    is nothing left to read). Any other container removed mid-stream is an error.
    """
    if not await _gone(client, source.container_id):
        return False  # (a daemon gone away: the catch-up's read will say so)
    if info.auto_remove:
        log.info(
            "%s (%s) was removed after it exited (--rm): its stream ended with it",
            source.container_name,
            source.container_id[:12],
        )
        return True
    raise ContainerVanished(
        f"container {source.container_name} ({source.container_id[:12]}) was removed "
        "while its logs were being followed"
    )
