"""One container's lines from the socket to the sink: the read loop of a collector.

A `StreamReader` is handed the container's position and owns it for the collector's life
(the collector hands it back in its `StreamEnd`): `cursor` is what has been given to the
store, `seen` what has been read — past the cursor only by the lines of multiline events
still open (the cursor moves past an event once it is whole), else the same object.

Per read: the decoder's lines → the skipper (what the position says was read) → the re-send
guard (Docker re-sends after a rotation) → the shaper (the container's hints) → the sink,
with the position after them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

import anyio

from agent import gaps
from agent.batch import LineBatch, Source
from agent.collectors.progress import Progress, now
from agent.collectors.resend import ResendLookup, StoredLines
from agent.collectors.stream_end import StreamFigures
from agent.cursor import Cursor, ResendGuard, resume_since
from agent.docker.client import DockerClient, LogStream
from agent.docker.frames import FrameDecoder, FrameError
from agent.docker.pacing import ReadPacer
from agent.docker.translate import mapped
from agent.shaping.hints import Hints
from agent.shaping.multiline import Shaped
from agent.shaping.shaper import Shaper

log = logging.getLogger("logagent.collector")

Write = Callable[[LineBatch], Awaitable[None]]
Gap = Callable[[Source, str, int | None, int | None], Awaitable[None]]


class StreamReader:
    def __init__(
        self,
        source: Source,
        *,
        write: Write,
        gap: Gap,
        lookup: StoredLines,
        cursor: Cursor,
        hints: Hints,
        pacer: ReadPacer,
        max_line_bytes: int,
        progress: Progress,
        tail: int | str,
    ) -> None:
        self.source = source
        self._write, self._gap = write, gap
        self.pacer = pacer
        self.max_line_bytes = max_line_bytes
        self.progress = progress
        self.cursor = cursor
        self.shaper = Shaper(source, hints, max_bytes=max_line_bytes)
        self.seen = cursor if self.shaper.passthrough else cursor.copy()
        self._skipper = self.seen.skipper()
        self.guard = ResendGuard(self.seen)  # each stream only moves forward
        self._resend = ResendLookup(lookup, self.guard, progress)
        self.lines = 0  # read (past the re-send guard)
        self.rows = 0  # stored: lines, or events of lines (hints)
        self.bytes = 0
        self.reads = 0
        self.last_timestamp_ns = 0
        self._tail = tail  # where a container never read before begins
        # When a stream was first opened at `tail` (a number), and one is opened again with
        # no position (Docker ended the first, or it is read once more at a stop or an
        # exit, its lines not stored): not the last `tail` lines again, which would skip any
        # written between, but every line from the oldest that came (`_first_ns`, less the
        # cursor's margin for the other stream's), or, if nothing of the container's came
        # (`_brought`), from the first open (the agent's clock standing for the local
        # daemon's). Only part of a line whose stamp did not come: the last `tail` again.
        self._first_open_ns: int | None = None
        self._brought = False
        self._first_ns: int | None = None
        self.chunked = True  # the log stream in HTTP/1.1 chunks: see DockerClient.logs
        self._decoder: FrameDecoder | None = None  # the one in use, which makes the batches
        # The stamp of a line the last decoder let go of in part (a stream that ended inside
        # a long line, or a frame): the next read asks from it too, whatever the other
        # stream's position (a review: stderr's position, then a stdout line begun more
        # than a second before it and cut, was lost).
        self._held_ns: int | None = None
        self.daemon_said: str | None = None  # the last error dockerd wrote into the stream

    def where(self) -> str:
        return f"{self.source.container_name} ({self.source.container_id[:12]})"

    def decoder(self, tty: bool) -> FrameDecoder:
        """A decoder for a stream opened from where `seen` stands (its Skipper's): what it
        re-sends before each stream's position is dropped undecoded."""
        if self._decoder is not None:
            self._held_ns = self._decoder.held_from()
        self._decoder = FrameDecoder(self.source, tty=tty, max_line_bytes=self.max_line_bytes)
        self._decoder.skip_before = {s: p[0] for s, p in self.seen.positions.items()}
        return self._decoder

    def figures(self) -> StreamFigures:
        p, g = self.pacer, self.guard
        return StreamFigures(self.reads, p.rests, p.chatty_rests, p.busy_spells, g.resent,
                             g.stepped_back)  # fmt: skip

    def identify(self, source: Source) -> None:
        """The container's new identity (a rename): its next batches carry it."""
        self.source = source
        if self._decoder is not None:
            self._decoder.source = source
        if self.shaper.joiner is not None:
            self.shaper.joiner.source = source

    def again(self, tty: bool) -> FrameDecoder:
        """For a follow stream opened again (Docker ended one of a running container): lines
        it re-sends are skipped from the position, and a fresh decoder reads it (what the
        old one held, a frame or a line's pieces, is after the position: it is sent again)."""
        self._skipper = self.seen.skipper()
        self.daemon_said = None  # what dockerd said ended the stream before, not this one
        return self.decoder(tty)

    def open(self, client: DockerClient, *, follow: bool) -> AbstractAsyncContextManager[LogStream]:
        """The container's log stream from where this reader stands: given a position, after
        it (Docker's `since` re-sends lines at its timestamp; the skipper drops them)."""
        start = self.seen.first_ns
        if start is None and self._tail != "all":
            if self._first_open_ns is None:
                self._first_open_ns = time.time_ns()
            else:
                start = self._first_ns if self._brought else self._first_open_ns
        if start is not None and self._held_ns is not None:
            start = min(start, self._held_ns)
        since = None if start is None else resume_since(start)
        tail = self._tail if since is None else "all"
        return client.logs(
            self.source.container_id, follow=follow, tail=tail, since=since, chunked=self.chunked
        )

    async def catch_up(self, client: DockerClient, tty: bool, *, ended: bool = True) -> None:
        """Re-read what the ended follow stream did not send.

        dockerd closes a follow stream when the container stops, and a last line without a
        newline (logged when the process exits) is never sent on it; a plain read has it.
        Lines already read are skipped.
        """
        self._skipper = self.seen.skipper()
        decoder = self.decoder(tty)
        async with self.open(client, follow=False) as stream:
            await self.read(stream, decoder, paced=False)
        await self.end_of(decoder, ended=ended)

    async def read(self, stream: LogStream, decoder: FrameDecoder, *, paced: bool) -> None:
        """Read a stream to its end, each chunk's lines delivered as one batch."""
        body, pacer, joiner = stream.body, self.pacer, self.shaper.joiner
        errors = mapped(f"log stream of {self.source.container_name}")
        while True:
            due = joiner.deadline() if joiner is not None else None
            with errors:
                if due is None:
                    chunk = await body.readany()
                else:  # an open event is closed when no line follows it in time
                    with anyio.move_on_after(max(0.0, due - now())) as timer:
                        chunk = await body.readany()
                    if timer.cancelled_caught:
                        await self._store(self.shaper.expire(now()))
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
            if self._first_ns is None and (lines or decoder.holding):
                self._brought = True  # the oldest of what came: a line, or a line's first part
                held = decoder.held_from()
                stamps = [*lines.timestamps_ns, *([] if held is None else [held])]
                self._first_ns = min(stamps) if stamps else None
            if lines:
                await self._deliver(self._skipper.new(lines))
            if decoder.notices:
                self.daemon_said = _report_notices(decoder)
            if paced and (rest := pacer.after_read(len(chunk), now(), len(lines))):
                stream.rest(rest)

    async def end_of(self, decoder: FrameDecoder, *, ended: bool = True) -> None:
        """The stream is over: its last partial line, and (`ended`) its open events."""
        await self._deliver(self._skipper.new(decoder.finish()))
        self.daemon_said = _report_notices(decoder) or self.daemon_said
        if ended and self.shaper.joiner is not None:  # the stream is over: events are whole
            await self._store(self.shaper.flush())
        if held := self.guard.finish():
            log.warning(
                "%s: the stream ended while %d lines older than the last stored one were "
                "held back: taken as re-sent by Docker, not stored",
                self.where(),
                held,
            )

    async def mark(self, state: str) -> None:
        """The container's state as the store shows it (the viewer's list): committed by a
        batch of no lines when nothing else is on its way."""
        with self.progress.storing():
            await self._write(LineBatch(self.source, state=state))

    async def gap(self, reason: str, from_ns: int | None, to_ns: int | None) -> None:
        log.warning("%s: %s", self.where(), reason)
        with self.progress.storing():
            await self._gap(self.source, reason, from_ns, to_ns)

    async def keep_open_events(self) -> None:
        """A stream whose only lines are in an open event has no position to resume from,
        and the next start would begin at `initial_tail`: its position becomes the event's
        first line, none of its lines seen (a re-read from there has the whole event)."""
        joiner = self.shaper.joiner
        if joiner is None:
            return
        positions = self.cursor.positions
        fresh = {s: ts for s, ts in joiner.first_stamps().items() if s not in positions}
        if not fresh:
            return
        for stream, ts in fresh.items():
            positions[stream] = [ts, 0]
        empty = LineBatch(self.source)
        empty.position = {s: (p[0], p[1]) for s, p in positions.items()}
        with self.progress.storing():
            await self._write(empty)

    async def _deliver(self, batch: LineBatch) -> None:
        skipper = self._skipper
        while skipper.lost:  # lines Docker no longer has: a gap, never silence
            stream, from_ns, to_ns = skipper.lost.pop(0)
            await self.gap(gaps.rotated(stream), from_ns, to_ns)
        guard = self.guard
        before = guard.resent, guard.stepped_back
        batch = guard.filter(batch)
        if guard.late:
            batch = await self._resend.drop_stored(batch, guard.late)
        if (guard.resent, guard.stepped_back) != before:
            _report_guard(self.where(), guard, before)
        if not batch:
            return
        if self.seen is not self.cursor:
            self.seen.advance(batch)
        self.lines += len(batch)
        self.progress.moved()
        self.last_timestamp_ns = batch.timestamps_ns[-1]
        await self._store(self.shaper.shape(batch, now()))

    async def _store(self, shaped: Shaped) -> None:
        """Rows to the sink, with the position past the lines they consumed (also when every
        one was filtered out: the position is committed all the same)."""
        rows = shaped.rows
        if not shaped.stamps and rows.dropped is None:
            return
        before = self.cursor.copy()
        rows.position = self.cursor.advance_over(shaped.streams, shaped.stamps)
        try:
            with self.progress.storing():
                await self._write(rows)  # waits while the store's queue is full
        except BaseException:
            # Not queued (a stop cancelled the wait): the position goes back before these
            # lines, so the drain's re-read has them. Found by a SIGTERM mid-burst that lost
            # the 71 lines of a batch waiting on a full queue. With hints, what was read goes
            # back there too, and the open events go (their lines are read again): else the
            # re-read skipped these lines (a review's finding).
            self.cursor.positions = before.positions
            if self.seen is not self.cursor:
                self.seen.positions = before.copy().positions
                self._skipper = self.seen.skipper()
                if self.shaper.joiner is not None:
                    self.shaper.joiner.forget()
            raise
        self.rows += len(rows)
        self.bytes += rows.nbytes


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


def _report_notices(decoder: FrameDecoder) -> str | None:
    """What the daemon itself put in the stream: logged, not stored; the last of it."""
    for notice in decoder.notices:
        log.warning("%s", notice)
    last = decoder.notices[-1] if decoder.notices else None
    decoder.notices.clear()
    return last
