"""Label hints on real containers: multiline events, levels, filters, rate limits, retention,
invalid hints, and exactly once through a stop and a `kill -9` with events open."""

from __future__ import annotations

import io
import json
import logging
import signal
import time
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from agent import commands
from agent.storage import LogStorage
from agent.storage.retention import Retention
from tests.conftest import (
    SOURCE,
    Containers,
    agent_settings,
    eventually,
    query,
    rows_in,
    running_agent,
    start_agent_process,
    stop_process,
    until_reached,
)
from tests.integration.test_api import call

pytestmark = [pytest.mark.docker, pytest.mark.anyio]

# A Java stack trace of $2 lines (header and frames), named $1.
TRACE = (
    'trace() { echo "java.lang.IllegalStateException: boom $1"; i=1; '
    'while [ $i -lt $2 ]; do printf "\\tat com.example.F%s.run(F.java:%s)\\n" $i $i; '
    "i=$((i+1)); done; }; "
)


RATED = "i=0; while [ $i -lt 6 ]; do seq $((i*500+1)) $((i*500+500)); i=$((i+1)); sleep 0.5; done"


def dropped(url: str, cid: str) -> int:
    """Rows a rate limit dropped, as its gaps count them."""
    reasons = query(url, "SELECT reason FROM gaps WHERE container_id = ?", cid)
    return sum(int(str(r).split()[2]) for (r,) in reasons)


def java_trace(name: str, lines: int) -> str:
    frames = [f"\tat com.example.F{i}.run(F.java:{i})" for i in range(1, lines)]
    return "\n".join([f"java.lang.IllegalStateException: boom {name}", *frames])


def label(**hints: str) -> list[str]:
    out = []
    for key, value in hints.items():
        out += ["--label", f"logagent.{key.replace('__', '.')}={value}"]
    return out


def settings(tmp_path: Path, url: str) -> object:
    return replace(agent_settings(tmp_path), db_url=url)


def count(url: str, cid: str) -> int:
    found = query(url, f"SELECT COUNT(*) FROM log_lines WHERE {SOURCE}", cid)
    return int(found[0][0]) if found else 0


async def test_traces_on_both_streams_at_once_are_one_row_each(
    tmp_path: Path, containers: Containers, store_url: str
) -> None:
    script = (
        TRACE + "(echo plain-out-1; trace out 30; echo plain-out-2) & "
        "(echo plain-err-1 >&2; trace err 40 >&2; echo plain-err-2 >&2) & wait"
    )
    async with running_agent(settings(tmp_path, store_url)):  # type: ignore[arg-type]
        await anyio.sleep(1)
        cid = containers.run("traces", script, *label(multiline="java"))
        containers.wait("traces")
        await eventually(lambda: count(store_url, cid) >= 6, limit=30)
        await anyio.sleep(0.5)
    rows = rows_in(store_url, cid)
    out = [m for s, _, m in rows if s == "stdout"]
    err = [m for s, _, m in rows if s == "stderr"]
    assert out == ["plain-out-1", java_trace("out", 30), "plain-out-2"]
    assert err == ["plain-err-1", java_trace("err", 40), "plain-err-2"]
    # The event's timestamp is its first line's: Docker's own, in its order.
    assert [t for _, t, _ in rows] == sorted(t for _, t, _ in rows) or len(rows) == 6


async def test_tty_container_traceback_is_one_event(tmp_path: Path, containers: Containers) -> None:
    script = (
        "echo starting; echo 'Traceback (most recent call last):'; "
        "echo '  File \"/app/x.py\", line 3, in <module>'; echo '    main()'; "
        "echo 'ValueError: bad'; echo done"
    )
    url = f"sqlite:///{tmp_path / 'logs.db'}"
    async with running_agent(settings(tmp_path, url)):  # type: ignore[arg-type]
        await anyio.sleep(1)
        cid = containers.run("tty", script, *label(multiline="python"), tty=True)
        containers.wait("tty")
        await eventually(lambda: count(url, cid) >= 3, limit=30)
    messages = [m for _, _, m in rows_in(url, cid)]
    assert messages == [
        "starting",
        'Traceback (most recent call last):\n  File "/app/x.py", line 3, in <module>\n'
        "    main()\nValueError: bad",
        "done",
    ]


async def test_levels_are_stored_and_logs_level_and_json_show_them(
    tmp_path: Path, containers: Containers, store_url: str
) -> None:
    lines = [
        '{"level":"info","msg":"json info"}',
        '{"level":"error","msg":"json error"}',
        "ts=1 level=warn msg=logfmt",
        "ts=2 level=debug msg=logfmt",
        "2024-05-01 12:00:00,123 FATAL text",
        "no level here",
    ]
    script = "; ".join(f"echo '{line}'" for line in lines)
    async with running_agent(settings(tmp_path, store_url)):  # type: ignore[arg-type]
        await anyio.sleep(1)
        cid = containers.run("levels", script)
        containers.wait("levels")
        await eventually(lambda: count(store_url, cid) >= 6, limit=30)
    stored = query(
        store_url, f"SELECT message, level FROM log_lines WHERE {SOURCE} ORDER BY id", cid
    )
    assert [(str(m), lv) for m, lv in stored] == list(
        zip(lines, [3, 5, 4, 2, 6, None], strict=True)
    )
    out = io.StringIO()
    opts = commands.LogsOptions(containers=(cid,), level="warn", json=True)
    assert await commands.logs(store_url, opts, out) == 0
    shown = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(r["message"], r["level"]) for r in shown] == [
        (lines[1], "error"),
        (lines[2], "warn"),
        (lines[4], "fatal"),
    ]
    out = io.StringIO()
    await commands.logs(store_url, commands.LogsOptions(containers=(cid,), level="error"), out)
    assert out.getvalue().splitlines() == [lines[1], lines[4]]


async def test_include_and_exclude_lines_drop_and_count(
    tmp_path: Path, containers: Containers
) -> None:
    script = "echo 'GET /a'; echo 'GET /healthz'; echo 'POST /b'; echo junk; sleep 60"
    s = agent_settings(tmp_path)
    async with running_agent(s):
        await anyio.sleep(1)
        hints = label(include_lines="^(GET|POST) ", exclude_lines="healthz")
        cid = containers.run("filters", script, *hints)
        await eventually(lambda: count(s.db_url, cid) >= 2, limit=30)
        await anyio.sleep(0.5)
        _, body = await call(s.api_socket, "GET", "/collectors")
        mine = next(c for c in body["collectors"] if c["container_id"] == cid)
        assert mine["dropped"] == {"filter": 2}
        assert mine["rows"] == 2 and mine["lines"] == 4
        out = io.StringIO()
        await commands.status(s.db_url, s.api_socket, False, out)
        assert "2 by filter" in out.getvalue()
        assert "include_lines=^(GET|POST)  (label)" in out.getvalue()
    assert [m for _, _, m in rows_in(s.db_url, cid)] == ["GET /a", "POST /b"]


async def test_rate_limit_stores_at_most_the_limit_and_records_the_rest_as_gaps(
    tmp_path: Path, containers: Containers, store_url: str
) -> None:
    script = "i=0; while [ $i -lt 3 ]; do seq 1 1000; sleep 1; i=$((i+1)); done"
    async with running_agent(settings(tmp_path, store_url)):  # type: ignore[arg-type]
        await anyio.sleep(1)
        cid = containers.run("rate", script, *label(rate="100/s"))
        containers.wait("rate")
        await eventually(
            lambda: (
                query(store_url, "SELECT COUNT(*) FROM gaps")[0][0] > 0
                and count(store_url, cid) >= 300
            ),
            limit=30,
        )
        await anyio.sleep(1)
    stamps = [
        int(t)
        for (t,) in query(store_url, f"SELECT timestamp_ns FROM log_lines WHERE {SOURCE}", cid)
    ]
    per_second: dict[int, int] = {}
    for t in stamps:
        per_second[t // 1_000_000_000] = per_second.get(t // 1_000_000_000, 0) + 1
    assert max(per_second.values()) <= 100
    reasons = [str(r) for (r,) in query(store_url, "SELECT reason FROM gaps ORDER BY id")]
    dropped = sum(int(r.split()[2]) for r in reasons)
    assert all(r.startswith("rate limit: ") and r.endswith("over 100/s") for r in reasons)
    assert dropped == 3000 - len(stamps), (reasons, len(stamps))


async def test_invalid_hints_collect_with_defaults_and_say_so_once(
    tmp_path: Path, containers: Containers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="logagent.manager")
    s = agent_settings(tmp_path)
    hints = label(multiline__start="(unclosed", rate="fast", format="yaml", colour="blue")
    async with running_agent(s) as agent:
        await anyio.sleep(1)
        cid = containers.run("bad", "echo one; echo '  two'; sleep 60", *hints)
        await eventually(lambda: count(s.db_url, cid) >= 2, limit=30)
        assert agent.manager is not None
        await agent.manager.stop_collector(cid)  # a second start must not say it again
        await agent.manager.start_docker_collector(cid)
        out = io.StringIO()
        await commands.status(s.db_url, s.api_socket, False, out)
    assert [m for _, _, m in rows_in(s.db_url, cid)] == ["one", "  two"]
    said = [
        r.getMessage()
        for r in caplog.records
        if "hint" in r.getMessage() or "label" in r.getMessage()
    ]
    for name in ("multiline.start", "rate", "format", "colour"):
        assert sum(f"label logagent.{name}:" in m for m in said) == 1, said
        assert f"hint not used: label logagent.{name}:" in out.getvalue()


async def test_a_containers_own_retention(
    tmp_path: Path, containers: Containers, store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A label shortens its container's retention, or lengthens it up to what the operator
    lets a label ask (`retention.label_max_age`, here 30d): `for ever` is cut to that."""
    s = replace(settings(tmp_path, store_url), retention_label_max_age_s=30 * 86400)  # type: ignore[type-var]
    async with running_agent(s):  # type: ignore[arg-type]
        await anyio.sleep(1)
        short = containers.run("short", "seq 1 100", *label(retention="3d"))
        longer = containers.run("longer", "seq 1 100", *label(retention="10d"))
        forever = containers.run("forever", "seq 1 100", *label(retention="0"))
        plain = containers.run("plain", "seq 1 100")
        cids = (short, longer, forever, plain)
        for cid in cids:
            await eventually(lambda cid=cid: count(store_url, cid) == 100, limit=30)
    async with LogStorage(store_url, host="test-host") as storage:
        day = 86400 * 1_000_000_000
        retention = Retention(storage, max_age_s=7 * 86400, max_bytes=0)
        report = await retention.run_once(now_ns=time.time_ns() + 4 * day)
        assert (report.by_own_age, report.by_age) == (100, 0)
        assert [count(store_url, c) for c in cids] == [0, 100, 100, 100]
        await retention.run_once(now_ns=time.time_ns() + 12 * day)
        assert [count(store_url, c) for c in cids] == [0, 0, 100, 0]
        await retention.run_once(now_ns=time.time_ns() + 31 * day)
        assert [count(store_url, c) for c in cids] == [0, 0, 0, 0]
    lines = query(store_url, "SELECT container_id, lines FROM container_cursors")
    assert {str(c): int(n) for c, n in lines if str(c) in cids} == dict.fromkeys(cids, 0)
    said = [r.getMessage() for r in caplog.records]
    assert sum("label logagent.retention=0: longer than" in m for m in said) == 1, said


async def test_a_stop_with_an_event_open_stores_it_whole_after_the_restart(
    tmp_path: Path, containers: Containers
) -> None:
    s = agent_settings(tmp_path)
    # 150 lines, more than initial_tail: the restart must resume from the event's first line.
    script = (
        TRACE
        + "sleep 3; trace first 150; sleep 6; i=150; while [ $i -lt 160 ]; do "
        + ('printf "\\tat com.example.F%s.run(F.java:%s)\\n" $i $i; i=$((i+1)); done; echo done')
    )
    hints = label(multiline="java", multiline__timeout="60s")
    cid = containers.run("open", script, *hints)  # running before the agent first sees it
    async with running_agent(s) as agent:
        assert agent.manager is not None

        def read_all() -> bool:
            c = agent.manager.get(cid) if agent.manager else None
            return c is not None and c.lines >= 150

        await eventually(read_all, limit=30)
        assert count(s.db_url, cid) == 0  # the event is open: nothing of it stored
    async with running_agent(s):
        containers.wait("open")
        await eventually(lambda: count(s.db_url, cid) >= 2, limit=30)
    assert [m for _, _, m in rows_in(s.db_url, cid)] == [java_trace("first", 160), "done"]


async def test_kill_9_among_50_line_traces_stores_each_event_once_and_whole(
    tmp_path: Path, containers: Containers
) -> None:
    url = f"sqlite:///{tmp_path / 'logs.db'}"
    traces = 300
    script = TRACE + (
        f"n=0; while [ $n -lt {traces} ]; do trace $n 50; n=$((n+1)); "
        "[ $((n % 10)) -eq 0 ] && sleep 0.1; done"
    )
    plain = "; ".join(
        f'echo \'{{"level":"{lv}","n":{i}}}\'; echo \'GET /healthz\'; sleep 0.02'
        for i, lv in enumerate(["info", "warn", "error"] * 50)
    )
    proc = start_agent_process(tmp_path)
    cid = containers.run("traces", script, *label(multiline="java"))
    other = containers.run("plain", plain, *label(exclude_lines="healthz", format="json"))
    rated = containers.run("rated", RATED, *label(rate="100/s"))
    await eventually(lambda: count(url, cid) > 40, limit=60)
    stop_process(proc, signal.SIGKILL)
    assert count(url, cid) < traces, "the traces ended before the agent was killed"
    proc = start_agent_process(tmp_path)
    containers.wait("traces")
    containers.wait("plain")
    await until_reached(lambda: count(url, cid), traces)
    await until_reached(lambda: count(url, other), 150)
    containers.wait("rated")
    await until_reached(lambda: count(url, rated) + dropped(url, rated), 3000)
    await anyio.sleep(1.5)
    stop_process(proc, signal.SIGTERM)
    assert [m for _, _, m in rows_in(url, cid)] == [java_trace(str(n), 50) for n in range(traces)]
    stored = query(url, f"SELECT message, level FROM log_lines WHERE {SOURCE} ORDER BY id", other)
    levels = {"info": 3, "warn": 4, "error": 5}
    assert [(str(m), lv) for m, lv in stored] == [
        (f'{{"level":"{lv}","n":{i}}}', levels[lv])
        for i, lv in enumerate(["info", "warn", "error"] * 50)
    ]
    # Rate-limited: each line stored or counted dropped, exactly once, across the kill (the
    # span's count is committed with each batch). A restarted limiter starts its second
    # afresh, so the second of the restart may hold up to twice the limit.
    kept = [int(m) for _, _, m in rows_in(url, rated)]
    assert len(kept) == len(set(kept)) and count(url, rated) + dropped(url, rated) == 3000
    stamps = query(url, f"SELECT timestamp_ns FROM log_lines WHERE {SOURCE}", rated)
    per_second: dict[int, int] = {}
    for (t,) in stamps:
        per_second[int(t) // 10**9] = per_second.get(int(t) // 10**9, 0) + 1
    assert max(per_second.values()) <= 200


async def test_config_rule_hints_apply_to_a_container_without_labels(
    tmp_path: Path, containers: Containers
) -> None:
    from agent.policy import Matchers
    from agent.shaping.hints import HintRule

    rule = HintRule(Matchers(names=(f"{containers.prefix}-py*",)), {"multiline": "python"})
    s = replace(agent_settings(tmp_path), hint_rules=(rule,))
    script = (
        "echo 'Traceback (most recent call last):'; echo '  File \"x.py\", line 1'; "
        "echo 'KeyError: 1'; echo after; "
        "(echo 'Traceback (most recent call last):'; echo '  File \"y.py\", line 2'; "
        "echo 'ValueError: 2') >&2"
    )
    async with running_agent(s):
        await anyio.sleep(1)
        cid = containers.run("py", script)
        containers.wait("py")
        await eventually(lambda: count(s.db_url, cid) >= 3, limit=30)
        await anyio.sleep(0.5)
    rows = rows_in(s.db_url, cid)
    assert [m for st, _, m in rows if st == "stdout"] == [
        'Traceback (most recent call last):\n  File "x.py", line 1\nKeyError: 1',
        "after",
    ]
    assert [m for st, _, m in rows if st == "stderr"] == [
        'Traceback (most recent call last):\n  File "y.py", line 2\nValueError: 2'
    ]
