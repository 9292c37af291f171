"""A stream that ends while the re-send guard holds lines older than its position: the
store decides which were a re-send, the others are stored, and the position stays where it
was (no line after them read, and stored, twice)."""

from __future__ import annotations

import pytest

from agent.batch import Line, LineBatch, Source
from agent.collectors.progress import Progress
from agent.collectors.reading import StreamReader
from agent.cursor import Cursor
from agent.docker.pacing import ReadPacer
from agent.shaping.hints import Hints

pytestmark = [pytest.mark.anyio]
SOURCE = Source("c" * 64, "web")


class Store:
    """The sink and the store's lookup, in memory."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, int, str]] = []
        self.positions: list[dict[str, tuple[int, int]]] = []

    async def write(self, batch: LineBatch) -> None:
        self.rows += zip(batch.streams, batch.timestamps_ns, batch.messages, strict=True)
        self.positions.append(dict(batch.position))

    async def already_stored(self, _source: Source, lines: list[tuple[str, int, str]]) -> set[int]:
        return {i for i, line in enumerate(lines) if line in self.rows}

    async def gap(self, *_: object) -> None:
        raise AssertionError("no gap")


def lines(*stamps: int) -> LineBatch:
    return LineBatch.of(SOURCE, [Line("stdout", ts, "", f"line {ts}") for ts in stamps])


async def test_lines_held_when_the_stream_ends_are_asked_of_the_store() -> None:
    store = Store()
    reader = StreamReader(
        SOURCE, write=store.write, gap=store.gap, lookup=store,  # type: ignore[arg-type]
        cursor=Cursor(), hints=Hints(), pacer=ReadPacer(rest=0.0), max_line_bytes=16384,
        progress=Progress(), tail="all",
    )  # fmt: skip
    await reader._deliver(lines(1, 2, 3))
    await reader._deliver(lines(7, 8))  # Docker's follower skipped 4..6 after a rotation
    await reader._deliver(lines(3, 4, 5))  # ... replays from before the skip; the stream ends
    await reader.end_of(reader.decoder(False))
    assert [ts for _, ts, _ in store.rows] == [1, 2, 3, 7, 8, 4, 5]  # 3 was a re-send
    assert store.positions[-1] == {"stdout": (8, 1)}  # not back at 5: 7 and 8 not read again
    assert reader.cursor.positions == {"stdout": [8, 1]}
    assert (reader.guard.resent, reader.guard.stepped_back) == (1, 2)
