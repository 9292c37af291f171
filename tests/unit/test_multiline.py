"""Multiline events (pure): presets, a start pattern, caps, the timeout, and what the cursor
may move past."""

from __future__ import annotations

import random
import re

from agent.batch import FLAG_CONTINUED, FLAG_TRUNCATED, LineBatch, Source
from agent.grep import matcher
from agent.shaping.multiline import PRESETS, Joiner, _go_call, start_rule

SRC = Source("c" * 64, "app")
JAVA = [
    "2024-05-01 12:00:00 ERROR request failed",
    "java.lang.IllegalStateException: boom",
    "\tat com.example.App.handle(App.java:42)",
    "\tat com.example.App.main(App.java:10)",
    "Caused by: java.io.IOException: disk",
    "\tat com.example.Disk.write(Disk.java:7)",
    "\t... 2 more",
    "2024-05-01 12:00:01 INFO next request",
]
PYTHON = [
    "starting",
    "Traceback (most recent call last):",
    '  File "/app/x.py", line 3, in <module>',
    "    main()",
    '  File "/app/x.py", line 2, in main',
    "    raise ValueError('bad')",
    "ValueError: bad",
    "",
    "During handling of the above exception, another exception occurred:",
    "",
    "Traceback (most recent call last):",
    '  File "/app/x.py", line 9, in <module>',
    "KeyError: 'k'",
    "next line",
]
GO = [
    "listening on :8080",
    "panic: runtime error: index out of range [3] with length 3",
    "",
    "goroutine 1 [running]:",
    "main.main()",
    "\t/app/main.go:10 +0x1d",
    "exit status 2",
    "restarted",
]
RUBY = [
    "/app/x.rb:3:in `foo': boom (RuntimeError)",
    "\tfrom /app/x.rb:7:in `<main>'",
    "ok",
]


def batch(lines: list[str], stream: str = "stdout", start: int = 1000, flags: int = 0) -> LineBatch:
    b = LineBatch(SRC)
    for i, line in enumerate(lines):
        b.append(stream, start + i, f"t{start + i}", line, flags, len(line.encode()))
    return b


def events(joiner: Joiner, lines: list[str]) -> list[str]:
    out = joiner.feed(batch(lines), 0.0).rows.messages
    return out + joiner.flush().rows.messages


def test_java_trace_is_one_event_after_its_log_line() -> None:
    got = events(Joiner(SRC, PRESETS["java"]), JAVA)
    assert got == [JAVA[0], "\n".join(JAVA[1:7]), JAVA[7]]


def test_python_traceback_with_its_chained_traceback_is_one_event() -> None:
    got = events(Joiner(SRC, PRESETS["python"]), PYTHON)
    assert got == ["starting", "\n".join(PYTHON[1:13]), "next line"]


def test_go_panic_with_goroutines_is_one_event() -> None:
    got = events(Joiner(SRC, PRESETS["go"]), GO)
    assert got == [GO[0], "\n".join(GO[1:7]), GO[7]]


def test_ruby_backtrace_is_one_event() -> None:
    assert events(Joiner(SRC, PRESETS["ruby"]), RUBY) == ["\n".join(RUBY[:2]), "ok"]


def test_start_pattern_starts_events() -> None:
    rule = start_rule(matcher(r"^\d{4}-", "multiline.start"))
    lines = ["2024-01 a", "  more", "more", "2024-02 b", "2024-03 c", "x"]
    got = events(Joiner(SRC, rule), lines)
    assert got == ["2024-01 a\n  more\nmore", "2024-02 b", "2024-03 c\nx"]


def test_event_timestamp_is_its_first_lines_and_flags_say_replaced_bytes() -> None:
    j = Joiner(SRC, PRESETS["java"])
    closed = j.feed(batch(JAVA[1:4]), 0.0)
    assert not closed.rows  # still open: the next line may continue it
    closed = j.flush()
    assert closed.rows.timestamps_ns == [1000]
    assert closed.rows.timestamps == ["t1000"]
    assert closed.stamps == [1000, 1001, 1002]


def test_open_event_is_not_consumed_so_the_cursor_stays_before_it() -> None:
    j = Joiner(SRC, PRESETS["java"])
    closed = j.feed(batch(JAVA[:4]), 0.0)  # the log line closes; the trace stays open
    assert closed.rows.messages == [JAVA[0]]
    assert closed.stamps == [1000]
    assert j.holding == 3


def test_max_lines_cuts_events_and_no_line_is_in_two() -> None:
    j = Joiner(SRC, PRESETS["java"], max_lines=3)
    lines = ["Exception: x"] + [f"\tat f{i}()" for i in range(7)]
    closed = j.feed(batch(lines), 0.0)
    rest = j.flush()
    rows = closed.rows.messages + rest.rows.messages
    assert [r.count("\n") + 1 for r in rows] == [3, 3, 2]
    assert "\n".join(rows) == "\n".join(lines)
    assert closed.stamps + rest.stamps == list(range(1000, 1008))


def test_max_bytes_cuts_events() -> None:
    j = Joiner(SRC, start_rule(lambda line: line.startswith("S")), max_bytes=11)
    rows = events(j, ["S1234", "a1234", "b1234"])
    assert rows == ["S1234\na1234", "b1234"]  # 11 bytes, and 17 would be over


def test_timeout_closes_an_open_event() -> None:
    j = Joiner(SRC, PRESETS["java"], timeout=1.0)
    j.feed(batch(JAVA[1:3]), now=10.0)
    assert j.deadline() == 11.0
    assert not j.expire(10.5).rows
    closed = j.expire(11.0)
    assert closed.rows.messages == ["\n".join(JAVA[1:3])]
    assert j.deadline() is None


def test_streams_have_their_own_open_events() -> None:
    j = Joiner(SRC, PRESETS["java"])
    b = LineBatch(SRC)
    for i, (stream, line) in enumerate(
        [
            ("stdout", "Exception: out"),
            ("stderr", "Exception: err"),
            ("stdout", "\tat out()"),
            ("stderr", "\tat err()"),
        ]
    ):
        b.append(stream, i, str(i), line, 0, len(line))
    j.feed(b, 0.0)
    closed = j.flush()
    assert sorted(zip(closed.rows.streams, closed.rows.messages, strict=True)) == [
        ("stderr", "Exception: err\n\tat err()"),
        ("stdout", "Exception: out\n\tat out()"),
    ]


def test_pieces_of_a_long_line_join_without_newline_and_never_start_an_event() -> None:
    j = Joiner(SRC, start_rule(lambda line: True))  # every line starts an event
    b = LineBatch(SRC)
    b.append("stdout", 1, "1", "aaaa", FLAG_TRUNCATED, 4)
    b.append("stdout", 1, "1", "bbbb", FLAG_CONTINUED, 4)
    b.append("stdout", 2, "2", "next", 0, 4)
    rows = j.feed(b, 0.0).rows.messages + j.flush().rows.messages
    assert rows == ["aaaabbbb", "next"]


def test_go_call_lines_are_told_as_the_old_pattern_told_them_in_one_pass() -> None:
    """A dump's call line (`pkg.(*T).M(...)`) is read in one pass: the pattern it replaces
    backtracked on a line of brackets (20 s of CPU at 64 KB, a label and a line away from
    any user). Same answers on lines drawn from the characters that matter."""
    old = re.compile(r"[\w./*()\[\]{}-]+\(.*\)\s*$")
    rng = random.Random(5)
    for _ in range(20_000):
        line = "".join(rng.choice("()a._*[]{}- \tx/é") for _ in range(rng.randrange(0, 12)))
        assert _go_call(line) == bool(old.match(line)), line
    for line in ("main.main()", "main.(*T).Run(0xc000010000, 0x1)  ", "created by x"):
        assert _go_call(line) == bool(old.match(line))
    hostile = "(" * 100_000 + ")" * 100_000 + "x"
    got = events(Joiner(SRC, PRESETS["go"]), ["panic: x", hostile[:-1], hostile, "after"])
    assert got == ["panic: x\n" + hostile[:-1], hostile, "after"]
