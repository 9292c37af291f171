"""A stop that cancels a write waiting on a full queue: the read position goes back before
the lines not queued, and the drain's re-read stores each of them once, with hints too."""

from __future__ import annotations

import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import anyio
import pytest

from agent.batch import LineBatch, Source
from agent.collectors.progress import Progress
from agent.collectors.reading import StreamReader
from agent.cursor import Cursor
from agent.docker.pacing import ReadPacer
from agent.shaping.hints import Hints
from agent.timestamps import format_timestamp

pytestmark = [pytest.mark.anyio]


class _Body:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def readany(self) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""


class _Stream:
    def __init__(self, chunks: list[bytes]) -> None:
        self.body = _Body(chunks)

    def rest(self, seconds: float) -> None:
        pass


class FakeDocker:
    """A fake Docker daemon's log endpoint, for a fault the real one shows only by timing:
    a container writing while the agent's queue is full, and a stop then. It honours
    `tail` and `since` as dockerd does, over a log it is given."""

    def __init__(self) -> None:
        self.log: list[tuple[int, str]] = []
        self.asked: list[tuple[object, object]] = []

    @asynccontextmanager
    async def logs(self, _cid: str, **query: Any) -> AsyncIterator[_Stream]:
        tail, since = query["tail"], query["since"]
        self.asked.append((tail, since))
        lines = self.log
        if since is not None:
            secs, nanos = since.split(".")
            lines = [x for x in lines if x[0] >= int(secs) * 10**9 + int(nanos)]
        if tail != "all":
            lines = lines[-int(tail) :] if int(tail) else []
        data = b"".join(
            struct.pack(">BxxxL", 1, len(p)) + p
            for p in (format_timestamp(ns).encode() + b" " + t.encode() + b"\n" for ns, t in lines)
        )
        yield _Stream([data] if data else [])


@pytest.mark.parametrize(
    ("hints", "position"),
    [(Hints(), True), (Hints(multiline_start="^[HN]"), True), (Hints(), False)],
)
async def test_lines_of_a_write_a_stop_cancelled_are_read_again_once(
    hints: Hints, position: bool
) -> None:
    """With hints, what was read had moved past the lines of the cancelled write, and the
    drain's re-read skipped them: 9 lines lost, no gap (a review's finding). `position`:
    resumed from one; else a container never read, first read at its last 10 lines."""
    docker = FakeDocker()
    base = time.time_ns() - 100 * 10**9
    docker.log = [(base + i * 10**9, f"H{i}") for i in range(100)]  # a line a second
    stored: list[str] = []
    full = anyio.Event()

    async def write(batch: LineBatch) -> None:
        if len(batch) and not full.is_set():
            full.set()  # the queue is full; meanwhile the container writes 50 more
            docker.log += [(time.time_ns() + i, f"N{i}") for i in range(50)]
            await anyio.sleep_forever()
        stored.extend(batch.messages)

    async def gap(*_: object) -> None:
        raise AssertionError("no line is lost")

    cursor = Cursor({"stdout": [base + 89 * 10**9, 1]} if position else {})
    reader = StreamReader(
        Source("c" * 64, "web"), write=write, gap=gap, lookup=None,  # type: ignore[arg-type]
        cursor=cursor, hints=hints, pacer=ReadPacer(rest=0.0), max_line_bytes=16384,
        progress=Progress(), tail=10,
    )  # fmt: skip
    decoder = reader.decoder(False)
    with anyio.CancelScope() as scope:
        async with (
            reader.open(docker, follow=True) as stream,  # type: ignore[arg-type]
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(partial(reader.read, stream, decoder, paced=False))
            await full.wait()
            scope.cancel()  # a stop
    await reader.catch_up(docker, False)  # type: ignore[arg-type]
    # Never read before: from a second before the oldest line that came (H89 is history
    # within it; nothing was stored, so nothing twice).
    first = 90 if position else 89
    assert stored == [f"H{i}" for i in range(first, 100)] + [f"N{i}" for i in range(50)]


class RecordsDocker:
    """A fake Docker daemon's log endpoint (a fault the real one shows only by timing: a
    stream it ends inside a long line): records (stream, stamp, payload, with or without a
    newline) honouring `tail` and `since`; a follow stream stops before the last record."""

    def __init__(self, log: list[tuple[int, int, bytes]]) -> None:
        self.log = log

    @asynccontextmanager
    async def logs(self, _cid: str, **query: Any) -> AsyncIterator[_Stream]:
        tail, since, follow = query["tail"], query["since"], query["follow"]
        records = self.log
        if since is not None:
            secs, nanos = since.split(".")
            records = [r for r in records if r[1] >= int(secs) * 10**9 + int(nanos)]
        if tail != "all":
            records = records[-int(tail) :]
        frames = [
            struct.pack(">BxxxL", s, len(p) + 31) + format_timestamp(ns).encode() + b" " + p
            for s, ns, p in records
        ]
        yield _Stream([b"".join(frames[:-1] if follow else frames)])


@pytest.mark.parametrize("cancelled", [False, True])
async def test_a_long_line_begun_before_the_other_streams_lines_is_read_again(
    cancelled: bool,
) -> None:
    """A review: a stdout line in pieces (a progress bar) begun at T+5, stderr lines at T+7
    and T+8 whole, the stream ended (or its first write cancelled by a stop) before the
    line's last piece: the next read asked from a second before stderr's position (or its
    oldest line), after the long line's first piece: lost, no gap. It asks from that piece's
    stamp too."""
    t, s = time.time_ns() - 60 * 10**9, 10**9
    log = [(1, t - (30 - i) * s, f"H{i}\n".encode()) for i in range(20)]
    log += [(1, t + 5 * s, b"L" * 16384), (2, t + 7 * s, b"err1\n"), (2, t + 8 * s, b"err2\n")]
    log.append((1, t + 5 * s, b"end of the long line\n"))  # its last piece: the first's stamp
    docker = RecordsDocker(log)
    stored: list[str] = []
    full = anyio.Event()

    async def write(batch: LineBatch) -> None:
        if cancelled and len(batch) and not full.is_set():
            full.set()
            await anyio.sleep_forever()  # the queue is full, until a stop
        stored.extend(m[:4] for m in batch.messages)

    async def gap(*_: object) -> None:
        raise AssertionError("no line is lost")

    reader = StreamReader(
        Source("c" * 64, "web"), write=write, gap=gap, lookup=None,  # type: ignore[arg-type]
        cursor=Cursor(), hints=Hints(), pacer=ReadPacer(rest=0.0), max_line_bytes=1 << 20,
        progress=Progress(), tail=4,
    )  # fmt: skip
    decoder = reader.decoder(False)
    with anyio.move_on_after(1):  # a stop, when the write waits for good
        async with reader.open(docker, follow=True) as stream:  # type: ignore[arg-type]
            await reader.read(stream, decoder, paced=False)
    if cancelled:
        await reader.catch_up(docker, False)  # type: ignore[arg-type]
    else:  # Docker ended it: followed again
        decoder = reader.again(False)
        async with reader.open(docker, follow=True) as stream:  # type: ignore[arg-type]
            await reader.read(stream, decoder, paced=False)
        await reader.end_of(decoder)
    assert "LLLL" in stored and stored.count("err1") == 1 and stored.count("err2") == 1
