"""The read position: lines that share a timestamp are neither lost nor doubled on resume."""

from __future__ import annotations

import random

from agent.batch import Line, LineBatch, Source
from agent.cursor import Cursor, Skipper

SOURCE = Source("c", "n")


def e(stream: str, ts: int, msg: str) -> Line:
    return Line(stream, ts, str(ts), msg)


def advance(cursor: Cursor, lines: list[Line]) -> None:
    cursor.advance(LineBatch.of(SOURCE, lines))


def new(skipper: Skipper, lines: list[Line]) -> list[Line]:
    return skipper.new(LineBatch.of(SOURCE, lines)).lines()


T = 1_795_694_342_000_000_000
# Docker's order: stdout and stderr interleave, and several lines share one timestamp.
LOG = [
    e("stdout", T + 10, "a"),
    e("stdout", T + 10, "b"),
    e("stderr", T + 9, "x"),  # stderr's copier ran behind: an older timestamp, later in the log
    e("stdout", T + 11, "c"),
    e("stderr", T + 11, "y"),
    e("stderr", T + 11, "z"),
    e("stdout", T + 11, "d"),
    e("stdout", T + 12, "f"),
]


def reread(since_ns: int) -> list[Line]:
    """What Docker returns for `since`: every line at or after it, in log order."""
    return [x for x in LOG if x.timestamp_ns >= since_ns]


def test_resume_after_every_prefix_gives_each_line_exactly_once() -> None:
    for cut in range(len(LOG) + 1):
        cursor = Cursor()
        advance(cursor, LOG[:cut])
        since = cursor.since()
        rest = LOG if since is None else new(cursor.skipper(), reread(_ns(since)))
        assert LOG[:cut] + rest == LOG, f"cut at {cut}"


def _ns(since: str) -> int:
    secs, nanos = since.split(".")
    return int(secs) * 1_000_000_000 + int(nanos)


def test_position_counts_lines_at_the_last_timestamp_per_stream() -> None:
    cursor = Cursor()
    advance(cursor, LOG)
    assert cursor.positions == {"stdout": [T + 12, 1], "stderr": [T + 11, 2]}
    assert cursor.since() == "1795694341.000000011"  # a margin before the earliest position


def test_same_timestamp_on_stdout_and_stderr_is_kept_apart() -> None:
    log = [e("stdout", 5, "o1"), e("stderr", 5, "e1"), e("stdout", 5, "o2"), e("stderr", 5, "e2")]
    cursor = Cursor()
    advance(cursor, log[:3])
    assert new(cursor.skipper(), log) == [log[3]]


def test_copy_is_independent() -> None:
    cursor = Cursor()
    advance(cursor, LOG[:1])
    copy = cursor.copy()
    advance(copy, LOG[1:2])
    assert cursor.positions == {"stdout": [T + 10, 1]}
    assert copy.positions == {"stdout": [T + 10, 2]}


def test_rotated_log_is_reported_as_lost_span() -> None:
    cursor = Cursor()
    advance(cursor, LOG[:4])  # up to stdout "c" at T + 11
    rotated = [x for x in LOG if x.timestamp_ns >= T + 12]  # Docker kept only the newest
    skipper = cursor.skipper()
    assert new(skipper, rotated) == rotated
    assert skipper.lost == [("stdout", T + 11, T + 12)]


def test_complete_reread_reports_nothing_lost() -> None:
    cursor = Cursor()
    advance(cursor, LOG[:4])
    skipper = cursor.skipper()
    new(skipper, LOG)
    assert skipper.lost == []


def _forward(positions: dict[str, list[int]], lines: list[Line]) -> None:
    """The definition, line by line: per stream, the last timestamp and lines at it."""
    for line in lines:
        pos = positions.get(line.stream)
        if pos is None or pos[0] != line.timestamp_ns:
            positions[line.stream] = [line.timestamp_ns, 1]
        else:
            pos[1] += 1


def test_advance_by_batches_equals_the_line_by_line_definition() -> None:
    rng = random.Random(11)
    for _ in range(500):
        lines = [
            e(rng.choice(["stdout", "stderr"]), T + rng.randrange(4), "x")
            for _ in range(rng.randrange(1, 12))
        ]
        lines.sort(key=lambda x: x.timestamp_ns)  # per stream, Docker's order
        cursor, expected = Cursor(), {}
        cut = rng.randrange(len(lines) + 1)
        for part in (lines[:cut], lines[cut:]):
            if part:
                advance(cursor, part)
                _forward(expected, part)
        assert cursor.positions == expected, lines


def test_batch_carries_the_position_after_it() -> None:
    cursor = Cursor()
    batch = LineBatch.of(SOURCE, LOG[:3])
    cursor.advance(batch)
    assert batch.position == {"stdout": (T + 10, 2), "stderr": (T + 9, 1)}
