"""DockerLogCollector: follows one container's log stream and writes its lines to a sink.

It runs in a cancel scope of its own inside a task group it is given (the manager's), so
`stop()` ends exactly this stream. It never restarts itself: when it fails, it says why
(`state`, `error`, `exception`, and the sink's `ended`) and ends.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import anyio
from anyio.abc import TaskGroup, TaskStatus

from agent import gaps
from agent.batch import LineBatch, Source
from agent.collectors.options import StreamOptions
from agent.cursor import Cursor, ResendGuard
from agent.docker.client import DockerClient, LogStream
from agent.docker.errors import ContainerNotFound, DockerUnavailable
from agent.docker.frames import FrameDecoder, FrameError
from agent.docker.inspect import ContainerInfo
from agent.docker.pacing import ReadPacer, may_rest
from agent.docker.translate import mapped
from agent.shaping.hints import Hints
from agent.shaping.multiline import Shaped
from agent.shaping.shaper import Shaper

log = logging.getLogger("logagent.collector")
# anyio's clock on asyncio (the loop's time is time.monotonic), read without looking the
# running loop up on every read of every stream.
_now = time.monotonic

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
    ended: Callable[[DockerLogCollector], None]
    # Of these lines (stream, timestamp, text), the indexes the store holds already.
    stored: Callable[[Source, list[tuple[str, int, str]]], Awaitable[set[int]]]


class ContainerVanished(Exception):
    """The container was removed while its stream was being followed."""


class DockerLogCollector:
    """One container's logs: `await start()` returns once the stream is open."""

    # A graceful stop's plain read of what Docker holds gets this long; a dead container's
    # rest is read for as long as it comes, and given up only after this much more silence.
    drain_timeout: float = 5.0
    # How long a dead container's plain read may send nothing before it is given up.
    dead_rest_patience: float = 300.0

    def __init__(
        self,
        container_id: str,
        container_name: str | None = None,
        *,
        source: Source | None = None,
        sink: LogSink | None = None,
        client: DockerClient | None = None,
        task_group: TaskGroup | None = None,
        options: StreamOptions = DEFAULT_OPTIONS,
        follow: bool = True,
        info: ContainerInfo | None = None,
        cursor: Cursor | None = None,
        hints: Hints | None = None,
    ) -> None:
        self.source = source or Source(container_id, container_name or container_id[:12])
        self.container_id = container_id
        self.container_name = self.source.container_name
        self.tail = options.tail
        self.follow = follow
        self.max_line_bytes = options.max_line_bytes
        # A follow stream rests a little after a small read (see docker/pacing.py).
        rest = options.read_rest if follow else 0.0
        self.pacer = ReadPacer(rest=rest, chatty_rest=options.chatty_rest)
        self._sink = sink
        self._client = client
        self._task_group = task_group
        self._info = info
        self._scope: anyio.CancelScope | None = None
        self._follow_scope: anyio.CancelScope | None = None
        self._done = anyio.Event()
        self._exited = False  # stopped because the container ended (see `stop`)
        # Progress, for telling a slow rest from a silent one: when a line was last read or
        # a store call last returned, and how many store calls are waiting now.
        self._progress_at = 0.0
        self._in_store = 0
        self._rest_elsewhere = anyio.Event()  # a new run of the container reads it
        self.state = "new"  # new, running, ended, failed, stopped
        self.opened = False  # the stream was opened: a failure after it is the collector's
        self.error: str | None = None
        self.exception: BaseException | None = None
        self._chunked = True  # the log stream in HTTP/1.1 chunks: see DockerClient.logs
        self.lines = 0  # read (past the re-send guard)
        self.rows = 0  # stored: lines, or events of lines (hints)
        self.bytes = 0
        self.reads = 0
        self.last_timestamp_ns = 0
        # What has been delivered to the store, per stream. Given one, the collector resumes
        # after it: Docker's `since` re-sends lines at the cursor's timestamp; the skipper
        # drops them.
        self.cursor = cursor.copy() if cursor is not None else Cursor()
        # The container's hints (agent/shaping/hints.py): multiline events, filters, rate, levels.
        self.hints = hints or Hints()
        if self.hints.retention_s is not None:
            self.source.max_age_s = int(self.hints.retention_s)
        self.shaper = Shaper(self.source, self.hints, max_bytes=self.max_line_bytes)
        # What has been read: past the cursor by the lines of multiline events still open
        # (the cursor moves past an event only once it is whole), else the cursor itself.
        self.seen = self.cursor if self.shaper.passthrough else self.cursor.copy()
        self._skipper = self.seen.skipper()
        # Docker re-sends lines after a json-file rotation: each stream only moves forward.
        self.guard = ResendGuard(self.seen)
        self.since = self.seen.since()
        if self.since is not None:
            self.tail = "all"

    @property
    def key(self) -> str:
        return docker_key(self.container_id)

    def __repr__(self) -> str:
        return f"<DockerLogCollector {self.container_name} {self.container_id[:12]} {self.state}>"

    async def start(self) -> None:
        """Open the stream; raises ContainerNotFound, LogsUnavailable, DockerUnavailable, ..."""
        if self._task_group is None or self._sink is None or self._client is None:
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
                await self._while_reading(self.drain_timeout + 1)
            else:
                with anyio.move_on_after(self.drain_timeout + 1):
                    await self._done.wait()
        if self._scope is not None:
            self._scope.cancel()
            await self._done.wait()

    async def _while_reading(self, stall: float) -> None:
        """Until the stream ends: a dead container's rest is all there will ever be of it,
        unless the container runs again (`rest_read_elsewhere`).

        A fixed budget cut a plain read of 200k lines on a busy machine, and they stayed
        unread until the next start. Silence is reported, not acted on, for a long while:
        with `since`, Docker parses its log file up to the position before it sends a line
        (a 45 MB file sent nothing for over a second beside two busy processes).
        """
        async with anyio.create_task_group() as tg:

            async def cut() -> None:
                await self._rest_elsewhere.wait()
                log.info("%s runs again: its new stream reads the rest", self._where())
                tg.cancel_scope.cancel()

            tg.start_soon(cut)
            if not await self.ends_unless_silent(stall):
                log.warning(
                    "%s: the plain read of its rest has sent nothing for %.0f s; waiting for "
                    "it (Docker reads its log file up to the position first)",
                    self._where(),
                    stall,
                )
                if not await self.ends_unless_silent(self.dead_rest_patience):
                    log.error(
                        "%s: the plain read of its rest sent nothing for %.0f s more: closed; "
                        "the agent's next start reads the rest from the stored position",
                        self._where(),
                        self.dead_rest_patience,
                    )
                    await self._mark("exited")
            tg.cancel_scope.cancel()

    def rest_read_elsewhere(self) -> None:
        """The container runs again: the new run's stream resumes from the stored position
        and reads this rest itself, so the dead run's read of it may end (it held the
        container's lock, and the new run waited behind it)."""
        self._rest_elsewhere.set()

    async def ends_unless_silent(self, stall: float) -> bool:
        """Wait for the stream's end (True), or until it has made no progress for `stall` s
        (False). Progress is a line read or a store call returning; time spent waiting on
        the store (room in its queue, a lookup) is not silence: a store slower than Docker
        made a dead container's busy stream look stalled."""
        began = _now()
        while True:
            now = _now()
            quiet = 0.0 if self._in_store else now - max(self._progress_at, began)
            if quiet >= stall:
                return False
            with anyio.move_on_after(stall - quiet):
                await self._done.wait()
                return True

    @contextmanager
    def _storing(self) -> Iterator[None]:
        """Around every wait on the store: `ends_unless_silent` counts it as progress."""
        self._in_store += 1
        try:
            yield
        finally:
            self._in_store -= 1
            self._progress_at = _now()

    async def wait(self) -> None:
        """Return when the stream has ended, failed or been stopped."""
        await self._done.wait()

    async def _run(self, *, task_status: TaskStatus[None]) -> None:
        assert self._client is not None and self._sink is not None
        client, started = self._client, False
        try:
            with anyio.CancelScope() as scope:
                self._scope = scope
                try:
                    info = self._info or await client.inspect(self.container_id)
                    tty = info.tty
                    if not may_rest(info):  # --rm, or a log that rotates quickly
                        self.pacer.rest = 0.0
                    # A --rm container's stream is chunked, so that a cut shows (client.py)
                    self._chunked = info.auto_remove
                    decoder = self._decoder(tty)
                    async with client.logs(
                        self.container_id,
                        follow=self.follow,
                        tail=self.tail,
                        since=self.since,
                        chunked=self._chunked,
                    ) as stream:
                        self.state = "running"
                        started = self.opened = True
                        task_status.started()
                        self.source.project = info.project
                        await self._mark("running")
                        with anyio.CancelScope() as follow_scope:
                            self._follow_scope = follow_scope
                            await self._read(stream, decoder, paced=True)
                    if self.follow and follow_scope.cancelled_caught:
                        # Stopped while the container runs: an open event may go on; it is
                        # left to the next start, which reads it again from its first line.
                        # A shutdown drain has its budget; a dead container's rest is read
                        # as long as it comes (stop() watches that it does).
                        with anyio.move_on_after(math.inf if self._exited else self.drain_timeout):
                            await self._catch_up(client, tty, ended=self._exited)
                        if not self._exited:
                            await self._keep_open_events()
                        else:
                            await self._mark("exited")
                    elif self.follow and not await _removed_after_exit(client, info, self.source):
                        await self._catch_up(client, tty)
                        await self._mark("exited")
                    else:
                        await self._end_of(decoder)
                        if self.follow:
                            await self._mark("removed")
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
            self._sink.ended(self)  # e.g. the cursor is kept: before anyone waiting resumes
            self._done.set()

    async def _cut_by_removal(self) -> None:
        """Docker broke the stream off as it removed the container, before it said the stream
        was finished: what it had not sent is lost, and a gap says so."""
        assert self._sink is not None
        reason = gaps.cut_by_removal(self.last_timestamp_ns)
        log.warning("%s: %s", self._where(), reason)
        with self._storing():
            await self._sink.gap(self.source, reason, self.last_timestamp_ns or None, None)
        await self._mark("removed")
        self.state = "ended"

    async def _mark(self, state: str) -> None:
        """The container's state as the store shows it (the viewer's list): committed by a
        batch of no lines when nothing else is on its way."""
        assert self._sink is not None
        self.source.state = state
        with self._storing():
            await self._sink.write(LineBatch(self.source))

    def _where(self) -> str:
        return f"{self.container_name} ({self.container_id[:12]})"

    def _failed(self, exc: Exception) -> None:
        self.state, self.exception = "failed", exc
        self.error = f"{type(exc).__name__}: {exc}"

    def _decoder(self, tty: bool) -> FrameDecoder:
        return FrameDecoder(self.source, tty=tty, max_line_bytes=self.max_line_bytes)

    async def _read(self, stream: LogStream, decoder: FrameDecoder, *, paced: bool) -> None:
        """Read a stream to its end, each chunk's lines delivered as one batch."""
        body, pacer, joiner = stream.body, self.pacer, self.shaper.joiner
        errors = mapped(f"log stream of {self.container_name}")
        while True:
            due = joiner.deadline() if joiner is not None else None
            with errors:
                if due is None:
                    chunk = await body.readany()
                else:  # an open event is closed when no line follows it in time
                    with anyio.move_on_after(max(0.0, due - _now())) as timer:
                        chunk = await body.readany()
                    if timer.cancelled_caught:
                        await self._store(self.shaper.expire(_now()))
                        continue
            if not chunk:
                return
            self.reads += 1
            try:
                lines = decoder.feed(chunk)
            except FrameError as exc:
                if exc.lines is not None:
                    await self._deliver(self._skipper.new(exc.lines))
                raise
            if lines:
                await self._deliver(self._skipper.new(lines))
            if decoder.notices:
                _report_notices(decoder)
            if paced and (rest := pacer.after_read(len(chunk), _now(), len(lines))):
                stream.rest(rest)

    async def _catch_up(self, client: DockerClient, tty: bool, *, ended: bool = True) -> None:
        """Re-read what the ended follow stream did not send.

        dockerd closes a follow stream when the container stops, and a last line without a
        newline (logged when the process exits) is never sent on it; a plain read has it.
        Lines already read are skipped.
        """
        since = self.seen.since() or self.since
        decoder = self._decoder(tty)
        self._skipper = self.seen.skipper()
        tail = "all" if not self.seen.empty else self.tail
        async with client.logs(
            self.container_id, follow=False, tail=tail, since=since, chunked=self._chunked
        ) as stream:
            await self._read(stream, decoder, paced=False)
        await self._end_of(decoder, ended=ended)

    async def _end_of(self, decoder: FrameDecoder, *, ended: bool = True) -> None:
        await self._deliver(self._skipper.new(decoder.finish()))
        _report_notices(decoder)
        if ended and self.shaper.joiner is not None:  # the stream is over: events are whole
            await self._store(self.shaper.flush())
        if held := self.guard.finish():
            log.warning(
                "%s: the stream ended while %d lines older than the last stored one were "
                "held back: taken as re-sent by Docker, not stored",
                self._where(),
                held,
            )

    async def _deliver(self, batch: LineBatch) -> None:
        assert self._sink is not None
        skipper = self._skipper
        while skipper.lost:  # lines Docker no longer has: a gap, never silence
            stream, from_ns, to_ns = skipper.lost.pop(0)
            reason = gaps.rotated(stream)
            log.warning("%s: %s", self._where(), reason)
            with self._storing():
                await self._sink.gap(self.source, reason, from_ns, to_ns)
        guard = self.guard
        before = guard.resent, guard.stepped_back
        batch = guard.filter(batch)
        if guard.late:
            batch = await self._drop_stored(batch, guard.late)
        if (guard.resent, guard.stepped_back) != before:
            _report_guard(self._where(), self.guard, before)
        if not batch:
            return
        if self.seen is not self.cursor:
            self.seen.advance(batch)
        self.lines += len(batch)
        self._progress_at = _now()
        self.last_timestamp_ns = batch.timestamps_ns[-1]
        await self._store(self.shaper.shape(batch, _now()))

    async def _keep_open_events(self) -> None:
        """A stream whose only lines are in an open event has no position to resume from,
        and the next start would begin at `initial_tail`: its position becomes the event's
        first line, none of its lines seen (a re-read from there has the whole event)."""
        assert self._sink is not None
        joiner = self.shaper.joiner
        if joiner is None:
            return
        fresh = {s: ts for s, ts in joiner.first_stamps().items() if s not in self.cursor.positions}
        if not fresh:
            return
        for stream, ts in fresh.items():
            self.cursor.positions[stream] = [ts, 0]
        empty = LineBatch(self.source)
        empty.position = {s: (p[0], p[1]) for s, p in self.cursor.positions.items()}
        with self._storing():
            await self._sink.write(empty)

    async def _store(self, shaped: Shaped) -> None:
        """Rows to the sink, with the position past the lines they consumed (also when every
        one was filtered out: the position is committed all the same)."""
        assert self._sink is not None
        rows = shaped.rows
        if not shaped.stamps and rows.dropped is None:
            return
        before = self.cursor.copy()
        rows.position = self.cursor.advance_over(shaped.streams, shaped.stamps)
        try:
            with self._storing():
                await self._sink.write(rows)  # waits while the store's queue is full
        except BaseException:
            # Not queued (a stop cancelled the wait): the position goes back before these
            # lines, so the drain's re-read has them. Found by a SIGTERM mid-burst that lost
            # the 71 lines of a batch waiting on a full queue.
            self.cursor.positions = before.positions
            raise
        self.rows += len(rows)
        self.bytes += rows.nbytes

    async def _drop_stored(self, batch: LineBatch, late: list[int]) -> LineBatch:
        """Lines the guard let through as a clock stepped back, that the store holds
        already: a re-send whose replay never reached the stored position (dockerd lost
        its file on the way) looks the same. New lines of a stepped clock are not there."""
        assert self._sink is not None
        rows = list(zip(batch.streams, batch.timestamps_ns, batch.messages, strict=True))
        is_late = set(late)
        in_batch = {row for i, row in enumerate(rows) if i not in is_late}  # not stored yet
        drop = {i for i in late if rows[i] in in_batch}
        asked = [i for i in late if i not in drop]
        found: set[int] = set()
        if asked:
            with self._storing():
                found = await self._sink.stored(self.source, [rows[i] for i in asked])
        drop.update(asked[j] for j in found)
        if not drop:
            return batch
        self.guard.were_stored(len(drop))
        return batch.take([i for i in range(len(batch)) if i not in drop])


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


def _report_guard(where: str, guard: ResendGuard, before: tuple[int, int]) -> None:
    """Said once per stream and kind, then counted (metrics: logagent_resent_lines...)."""
    if guard.resent and not before[0]:
        log.warning(
            "%s: Docker sent lines again that were already stored (it does after a log "
            "rotation): dropped, counted in logagent_resent_lines",
            where,
        )
    if guard.stepped_back and not before[1]:
        log.warning(
            "%s: lines came with timestamps before the last stored one, and were not a "
            "re-send (the host clock stepped back?): stored late, counted in "
            "logagent_clock_stepped_back_lines",
            where,
        )


def _report_notices(decoder: FrameDecoder) -> None:
    """What the daemon itself put in the stream: logged, not stored."""
    for notice in decoder.notices:
        log.warning("%s", notice)
    decoder.notices.clear()
