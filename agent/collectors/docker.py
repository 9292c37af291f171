"""DockerLogCollector: follows one container's log stream and emits its lines.

It runs in a cancel scope of its own inside a task group it is given (the manager's), so
`stop()` ends exactly this stream. It never restarts itself: when it fails, it says why
(`error` handlers, `state`, `error`) and ends.
"""

from __future__ import annotations

import logging
from inspect import isawaitable
from typing import Any

import aiohttp
import anyio
from anyio.abc import TaskGroup, TaskStatus

from agent.collectors.base import Emitter
from agent.cursor import Cursor, Skipper
from agent.docker.client import ContainerNotFound, DockerClient, DockerUnavailable, LogStream
from agent.docker.frames import DEFAULT_MAX_LINE_BYTES, FrameDecoder, FrameError
from agent.docker.pacing import DEFAULT_CHATTY_REST, DEFAULT_REST, ReadPacer
from agent.entry import LogEntry

log = logging.getLogger("logagent.collector")

DEFAULT_TAIL: int | str = 100
_READ_ERRORS = (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError)


class ContainerVanished(Exception):
    """The container was removed while its stream was being followed."""


class DockerLogCollector(Emitter):
    """One container's logs: `await start()` returns once the stream is open."""

    source = "docker"

    def __init__(
        self,
        container_id: str,
        container_name: str | None = None,
        *,
        client: DockerClient | None = None,
        task_group: TaskGroup | None = None,
        tail: int | str = DEFAULT_TAIL,
        since: str | None = None,
        follow: bool = True,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        read_rest: float = DEFAULT_REST,
        chatty_rest: float = DEFAULT_CHATTY_REST,
        info: dict[str, Any] | None = None,
        cursor: Cursor | None = None,
    ) -> None:
        super().__init__()
        self.container_id = container_id
        self.container_name = container_name or container_id[:12]
        self.tail = tail
        self.since = since
        self.follow = follow
        self.max_line_bytes = max_line_bytes
        # A follow stream rests a little after a small read (see docker/pacing.py).
        self.pacer = ReadPacer(rest=read_rest if follow else 0.0, chatty_rest=chatty_rest)
        self._client = client
        self._owns_client = client is None
        self._task_group = task_group
        self._info = info
        self._scope: anyio.CancelScope | None = None
        self._follow_scope: anyio.CancelScope | None = None
        self.drain_timeout = 5.0
        self._done = anyio.Event()
        self.state = "new"  # new, running, ended, failed, stopped
        self.error: str | None = None
        self.lines = 0
        self.bytes = 0
        self.reads = 0
        self.last_timestamp_ns = 0
        self.notices = 0
        # What has been delivered, per stream. Given one, the collector resumes after it:
        # Docker's `since` re-sends lines at the cursor's timestamp; the skipper drops them.
        self.cursor = cursor.copy() if cursor is not None else Cursor()
        self._skipper = self.cursor.skipper()
        if not self.cursor.empty:
            self.since, self.tail = self.cursor.since(), "all"

    @property
    def key(self) -> str:
        return f"docker:{self.container_id}"

    def __repr__(self) -> str:
        return f"<DockerLogCollector {self.container_name} {self.container_id[:12]} {self.state}>"

    async def start(self) -> None:
        """Open the stream; raises ContainerNotFound, LogsUnavailable, DockerUnavailable, ..."""
        if self._task_group is None:
            raise RuntimeError(
                "DockerLogCollector needs a task group to run in: pass task_group=, "
                "or start it with LogCollectorManager.start_docker_collector()"
            )
        if self.state != "new":
            raise RuntimeError(f"{self!r} was already started; create a new collector")
        await self._task_group.start(self._run)

    async def stop(self, *, drain: bool = False) -> None:
        """End this collector and wait until its connection is released.

        With `drain`, the follow stream is closed and one plain read from the cursor fetches
        what Docker holds up to now (at most `drain_timeout` seconds): a graceful shutdown
        then stores every line written before it.
        """
        if drain and self._follow_scope is not None and self.state == "running":
            self._follow_scope.cancel()
            with anyio.move_on_after(self.drain_timeout + 1):
                await self._done.wait()
        if self._scope is not None:
            self._scope.cancel()
            await self._done.wait()

    async def wait(self) -> None:
        """Return when the stream has ended, failed or been stopped."""
        await self._done.wait()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    async def _run(self, *, task_status: TaskStatus[None]) -> None:
        started = False
        client = self._client or DockerClient()
        try:
            with anyio.CancelScope() as scope:
                self._scope = scope
                try:
                    info = self._info or await client.inspect(self.container_id)
                    tty = bool((info.get("Config") or {}).get("Tty"))
                    if (info.get("HostConfig") or {}).get("AutoRemove"):
                        # Its log goes with it: what is not read when --rm removes it is
                        # lost, and a rest lets the socket fill and dockerd fall behind.
                        self.pacer.rest = 0.0
                    decoder = FrameDecoder(
                        self.container_id,
                        self.container_name,
                        tty=tty,
                        max_line_bytes=self.max_line_bytes,
                    )
                    async with client.logs(
                        self.container_id, follow=self.follow, tail=self.tail, since=self.since
                    ) as stream:
                        self.state = "running"
                        started = True
                        task_status.started()
                        with anyio.CancelScope() as follow_scope:
                            self._follow_scope = follow_scope
                            await self._pump(stream, decoder)
                    if self.follow and follow_scope.cancelled_caught:
                        with anyio.move_on_after(self.drain_timeout):
                            await self._catch_up(client, tty)
                    elif self.follow and not await self._removed_after_exit(client, info):
                        await self._catch_up(client, tty)
                    else:
                        await self._deliver(self._skipper.new(decoder.finish()))
                        self._report_notices(decoder)
                    self.state = "ended"
                except Exception as exc:
                    self.state = "failed"
                    self.error = f"{type(exc).__name__}: {exc}"
                    if not started:
                        raise
                    self._emit_error(exc)
            if scope.cancelled_caught:
                self.state = "stopped"
        finally:
            if self._owns_client:
                with anyio.CancelScope(shield=True):
                    await client.close()
            for end in self._end:
                end(self)  # e.g. the manager keeps the cursor: before anyone waiting resumes
            self._done.set()

    async def _pump(self, stream: LogStream, decoder: FrameDecoder) -> None:
        body, pacer = stream.body, self.pacer
        while True:
            try:
                chunk = await body.readany()
            except _READ_ERRORS as exc:
                raise DockerUnavailable(
                    f"log stream of {self.container_name} broke: {exc!r}"
                ) from None
            if not chunk:
                return
            self.reads += 1
            try:
                lines = decoder.feed(chunk)
            except FrameError as exc:
                await self._deliver(self._skipper.new(exc.lines))
                raise
            if lines:
                await self._deliver(self._skipper.new(lines))
            if decoder.notices:
                self._report_notices(decoder)
            rest = pacer.after_read(len(chunk), anyio.current_time(), len(lines))
            if rest:
                stream.rest(rest)

    async def _catch_up(self, client: DockerClient, tty: bool) -> None:
        """Re-read what the ended follow stream did not send.

        dockerd closes a follow stream when the container stops, and a last line without a
        newline (logged when the process exits) is never sent on it; a plain read has it.
        Lines already delivered are skipped by the cursor.
        """
        since = self.cursor.since() or self.since
        decoder = FrameDecoder(
            self.container_id, self.container_name, tty=tty, max_line_bytes=self.max_line_bytes
        )
        skipper = self._skipper = self.cursor.skipper()
        tail = "all" if not self.cursor.empty else self.tail
        async with client.logs(self.container_id, follow=False, tail=tail, since=since) as stream:
            while chunk := await stream.body.readany():
                try:
                    lines = decoder.feed(chunk)
                except FrameError as exc:
                    await self._deliver(skipper.new(exc.lines))
                    raise
                await self._deliver(skipper.new(lines))
        await self._deliver(skipper.new(decoder.finish()))
        self._report_notices(decoder)

    async def _report_lost(self, skipper: Skipper) -> None:
        """Lines Docker no longer has (rotated past the cursor): a gap, never silence."""
        while skipper.lost:
            stream, from_ns, to_ns = skipper.lost.pop(0)
            reason = f"{stream} lines no longer in Docker's log (rotated past the cursor)"
            log.warning("%s (%s): %s", self.container_name, self.container_id[:12], reason)
            for handler in self._gap:
                await handler(self, reason, from_ns, to_ns)

    async def _deliver(self, lines: list[LogEntry]) -> None:
        if self._skipper.lost:
            await self._report_lost(self._skipper)
        if not lines:
            return
        self.cursor.advance(lines)
        for many in self._lines:
            await many(lines)
        for handler in self._log:
            for entry in lines:
                result = handler(entry)
                if isawaitable(result):
                    await result
        self.lines += len(lines)
        self.bytes += sum(e.size for e in lines)
        self.last_timestamp_ns = lines[-1].timestamp_ns

    def _report_notices(self, decoder: FrameDecoder) -> None:
        for notice in decoder.notices:
            log.warning("%s", notice)
        self.notices += len(decoder.notices)
        decoder.notices.clear()

    async def _removed_after_exit(self, client: DockerClient, info: dict[str, Any]) -> bool:
        """A follow stream also ends when the container is removed.

        For a `--rm` container that is its normal end: True, and the stream had every line
        (but a last one without newline, which dockerd sends only on a plain read, and there
        is nothing left to read). Any other container removed mid-stream is an error.
        """
        try:
            status = ((await client.inspect(self.container_id)).get("State") or {}).get("Status")
        except ContainerNotFound:
            status = "removed"
        if status not in ("removing", "removed", "dead"):
            return False
        if (info.get("HostConfig") or {}).get("AutoRemove"):
            log.info(
                "%s (%s) was removed after it exited (--rm): its stream ended with it",
                self.container_name,
                self.container_id[:12],
            )
            return True
        raise ContainerVanished(
            f"container {self.container_name} ({self.container_id[:12]}) was removed "
            "while its logs were being followed"
        )

    def _emit_error(self, exc: BaseException) -> None:
        if not self._error:
            log.error(
                "collector for %s (%s) failed: %s",
                self.container_name,
                self.container_id[:12],
                self.error,
            )
        for handler in self._error:
            handler(self, exc)
