"""DockerLogCollector + manager + storage against a real dockerd and a real SQLite file.

The reference is the Docker CLI: `docker logs` gives each line's exact text (the CLI writes
the 16 KiB pieces back to back), `docker logs -t` the timestamp Docker gave it.
"""

from __future__ import annotations

import os
import subprocess
import time
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import anyio
import pytest
from tortoise.queryset import QuerySet

from agent.batch import FLAG_CONTINUED, FLAG_REPLACED, FLAG_TRUNCATED
from agent.collectors.docker import DockerLogCollector
from agent.docker.client import DockerClient
from agent.docker.errors import ContainerNotFound, LogsUnavailable
from agent.storage.models import ContainerCursor, LogLine
from agent.timestamps import format_timestamp, parse_timestamp
from tests.conftest import Containers, agent_parts, docker

pytestmark = [pytest.mark.anyio]  # Docker: marked per test, only where it is used

Row = tuple[str, str, str]  # stream, timestamp text, message


def _split(data: bytes) -> list[bytes]:
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


def _cli_logs(name: str, *extra: str) -> tuple[bytes, bytes]:
    done = subprocess.run(["docker", "logs", *extra, name], capture_output=True, check=True)
    return done.stdout, done.stderr


def docker_reference(name: str, *, tty: bool = False) -> list[Row]:
    """What Docker holds for a container, per stream, as (stream, timestamp, text)."""
    plain, timed = _cli_logs(name), _cli_logs(name, "-t")
    rows: list[Row] = []
    for index, stream in enumerate(["tty"] if tty else ["stdout", "stderr"]):
        texts, stamps = _split(plain[index]), _split(timed[index])
        assert len(texts) == len(stamps), (stream, len(texts), len(stamps))
        for text, stamped in zip(texts, stamps, strict=True):
            if tty and text.endswith(b"\r"):
                text = text[:-1]
            stamp = stamped.split(b" ", 1)[0].decode()
            rows.append((stream, stamp, text.decode("utf-8", "replace")))
    return rows


async def lines_of(container_id: str) -> QuerySet[LogLine]:
    """The stored lines of a container: those whose source is its cursor row."""
    source = await ContainerCursor.get_or_none(container_id=container_id)
    return LogLine.filter(source_id=source.id if source else -1)


async def stored(container_id: str) -> list[Row]:
    """Rows of a container in insertion order, with capped pieces joined back."""
    rows = (
        await (await lines_of(container_id))
        .order_by("id")
        .values_list("stream", "timestamp", "timestamp_ns", "message", "flags")
    )
    out: list[Row] = []
    open_piece: dict[str, int] = {}
    for stream, text, ns, message, flags in rows:
        ts = text or format_timestamp(ns)
        if flags & FLAG_CONTINUED:
            idx = open_piece[stream]
            s, t, m = out[idx]
            out[idx] = (s, t, m + message)
        else:
            out.append((stream, ts, message))
        if flags & FLAG_TRUNCATED:
            open_piece[stream] = len(out) - 1
    return out


def by_stream(rows: list[Row]) -> dict[str, list[Row]]:
    streams: dict[str, list[Row]] = {}
    for row in rows:
        streams.setdefault(row[0], []).append(row)
    return streams


async def collect_finished(
    tmp_path: Path,
    containers: Containers,
    name: str,
    script: str,
    *args: str,
    tty: bool = False,
) -> tuple[str, list[Row]]:
    """Run a container to its end while a collector follows it; return its stored rows."""
    cid, _collector, rows = await follow_to_end(tmp_path, containers, name, script, *args, tty=tty)
    return cid, rows


async def follow_to_end(
    tmp_path: Path,
    containers: Containers,
    name: str,
    script: str,
    *args: str,
    tty: bool = False,
) -> tuple[str, DockerLogCollector, list[Row]]:
    """`collect_finished`, also giving the collector (its figures)."""
    cid = containers.run(name, f"sleep 0.3; {script}", *args, tty=tty)
    async with agent_parts(tmp_path, tail="all") as (_storage, manager):
        collector = await manager.start_docker_collector(cid)
        with anyio.fail_after(120):
            await collector.wait()
        assert collector.state == "ended", collector.error
        await manager.stop_all()
        rows = await stored(cid)
    return cid, collector, rows


CASES = {
    "ten-thousand": "seq 1 10000",
    "interleaved": 'for i in $(seq 1 300); do echo "out $i"; echo "err $i" >&2; done',
    "line-20k": "head -c 20480 /dev/zero | tr '\\0' a; echo; echo after",
    "line-3m": "head -c 3145728 /dev/urandom | base64 -w 0; echo; echo after",
    "not-utf8": "printf 'bad \\377\\376 bytes\\n'; printf 'half \\303\\n'; echo fine",
    "no-final-newline": "echo first; printf 'last without newline'",
    "unicode": "echo 'héllo wörld ✓ 日本語 🎉'; echo 'ünï' >&2",
    "empty-lines": "echo; echo; echo x; echo; echo '' >&2",
}


LONG = {"line-20k", "line-3m"}


@pytest.mark.docker
@pytest.mark.parametrize(
    ("case", "driver"),
    [(c, "json-file") for c in sorted(CASES)] + [(c, "local") for c in sorted(set(CASES) - LONG)],
)
async def test_stored_rows_equal_docker_logs(
    case: str, driver: str, tmp_path: Path, containers: Containers
) -> None:
    _cid, rows = await collect_finished(
        tmp_path, containers, case, CASES[case], "--log-driver", driver
    )
    expected = docker_reference(f"{containers.prefix}-{case}")
    assert by_stream(rows) == by_stream(expected)
    assert rows, "nothing stored"


def quiet(n: int, start_at: int = 0) -> str:
    """`n` lines on each stream, one every 10 ms from Unix second `start_at` (host clock).

    No fork per line: busybox `read -t` on an empty fifo is the 10 ms sleep.
    """
    return (
        "mkfifo /tmp/f; exec 3<>/tmp/f; "
        f"while [ $(date +%s) -lt {start_at} ]; do read -t 0.05 -u 3 x; done; "
        f"for i in $(seq 1 {n}); do "
        'echo "out $i"; echo "err $i" >&2; read -t 0.01 -u 3 x; done'
    )


@pytest.mark.docker
async def test_dockerd_sends_an_http_1_0_log_stream_unchunked_and_byte_for_byte_the_same(
    containers: Containers,
) -> None:
    """The agent reads most log streams in HTTP/1.0 (client.py: no chunk per line to handle);
    the real dockerd then sends the body unchunked, to the connection's close, and the bytes
    are those of the chunked stream."""
    cid = containers.run(
        "unchunked", 'for i in $(seq 1 500); do echo "l $i"; echo "e $i" >&2; done'
    )
    await anyio.to_thread.run_sync(containers.wait, "unchunked")
    bodies = {}
    async with DockerClient() as client:
        for chunked in (True, False):
            async with client.logs(cid, follow=True, chunked=chunked) as stream:
                response = stream._response
                bodies[chunked] = (
                    response.version,
                    response.headers.get("Transfer-Encoding"),
                    await stream.body.read(),
                )
    assert bodies[True][:2] == (aiohttp.HttpVersion11, "chunked")
    assert bodies[False][:2] == (aiohttp.HttpVersion10, None)
    assert bodies[False][2] == bodies[True][2] and bodies[True][2].count(b"\n") == 1000


@pytest.mark.docker
async def test_quiet_stream_rests_between_reads_and_keeps_every_line(
    tmp_path: Path, containers: Containers
) -> None:
    _cid, collector, rows = await follow_to_end(tmp_path, containers, "rested", quiet(150))
    assert by_stream(rows) == by_stream(docker_reference(f"{containers.prefix}-rested"))
    assert collector.pacer.rests > 0 and collector.pacer.busy_spells == 0
    # Dockerd writes each line on its own; resting 30 ms gathers several per read.
    assert collector.reads * 3 < len(rows), (collector.reads, len(rows))


@pytest.mark.docker
async def test_quiet_streams_rest_on_one_clock(tmp_path: Path, containers: Containers) -> None:
    script = quiet(100, start_at=int(time.time()) + 3)  # all three write at the same time
    ids = [containers.run(f"clock{i}", script) for i in range(3)]
    async with agent_parts(tmp_path, tail="all") as (_storage, manager):
        collectors = [await manager.start_docker_collector(cid) for cid in ids]
        with anyio.fail_after(60):
            for collector in collectors:
                await collector.wait()
        await manager.stop_all()
        clock = manager.client.rest_clock
        for cid in ids:
            assert len(await stored(cid)) == 200
    rests = sum(c.pacer.rests for c in collectors)
    # One timer resumed the three streams together: far fewer ticks than rests.
    assert 0 < clock.ticks < 0.6 * rests, (clock.ticks, rests)


@pytest.mark.docker
async def test_chatty_stream_rests_longer_than_a_slow_one(
    tmp_path: Path, containers: Containers
) -> None:
    start_at = int(time.time()) + 3
    chatty = containers.run("chatty", quiet(300, start_at))  # 200 lines/s for 3 s
    slow = containers.run(
        "slow",
        "mkfifo /tmp/f; exec 3<>/tmp/f; "
        f"while [ $(date +%s) -lt {start_at} ]; do read -t 0.05 -u 3 x; done; "
        'for i in $(seq 1 20); do echo "slow $i"; read -t 0.15 -u 3 x; done',  # ~6 lines/s
    )
    async with agent_parts(tmp_path, tail="all") as (_storage, manager):
        collectors = [await manager.start_docker_collector(cid) for cid in (chatty, slow)]
        with anyio.fail_after(60):
            for collector in collectors:
                await collector.wait()
        await manager.stop_all()
        for cid, name in [(chatty, "chatty"), (slow, "slow")]:
            rows = await stored(cid)
            assert by_stream(rows) == by_stream(docker_reference(f"{containers.prefix}-{name}"))
    fast, calm = collectors
    # After its first second the chatty stream rests 150 ms on a timer of its own: more
    # lines per read than 30 ms rests would gather (~6); the slow one never rests long.
    assert fast.pacer.chatty_rests > 0 and calm.pacer.chatty_rests == 0, (fast.pacer, calm.pacer)
    assert fast.reads * 8 < fast.lines, (fast.reads, fast.lines)
    assert calm.pacer.rests > 0


@pytest.mark.docker
async def test_busy_stream_is_found_out_and_not_held_back(
    tmp_path: Path, containers: Containers
) -> None:
    n = 100_000
    script = f"yes {'x' * 99} | head -n {n}"
    _cid, collector, rows = await follow_to_end(tmp_path, containers, "busy", script)
    assert len(rows) == n
    assert rows == docker_reference(f"{containers.prefix}-busy")
    # Its first rest filled the socket: from then on it is mostly read without resting.
    # How many reads a busy spell spans depends on the machine's load (CI: 4 rests in
    # ~1,000 reads beside two `yes`), so the claim is a share of reads, not a count.
    assert collector.pacer.busy_spells >= 1
    assert collector.pacer.rests * 20 <= collector.reads, (collector.reads, collector.pacer)


@pytest.mark.docker
async def test_tty_container_rows_equal_docker_logs(tmp_path: Path, containers: Containers) -> None:
    script = "echo one; echo 'two  spaced'; head -c 20000 /dev/zero | tr '\\0' b; echo; printf end"
    _cid, rows = await collect_finished(tmp_path, containers, "tty", script, tty=True)
    expected = docker_reference(f"{containers.prefix}-tty", tty=True)
    assert rows == expected
    assert {r[0] for r in rows} == {"tty"}
    assert [r[2] for r in rows][-1] == "end"


@pytest.mark.docker
async def test_3m_line_is_stored_as_flagged_pieces_of_the_cap(
    tmp_path: Path, containers: Containers
) -> None:
    cid, _ = await collect_finished(
        tmp_path, containers, "cap", "head -c 3145728 /dev/zero | tr '\\0' c; echo"
    )
    # collect_finished closed the store: reopen it to look at the raw rows
    async with agent_parts(tmp_path):
        flags = await (await lines_of(cid)).order_by("id").values_list("flags", flat=True)
        sizes = [
            len(m)
            for m in await (await lines_of(cid)).order_by("id").values_list("message", flat=True)
        ]
    assert flags == [FLAG_TRUNCATED, FLAG_TRUNCATED | FLAG_CONTINUED, FLAG_CONTINUED]
    assert sizes == [1024 * 1024] * 3


@pytest.mark.docker
async def test_local_driver_long_line_keeps_its_end(tmp_path: Path, containers: Containers) -> None:
    # The `local` driver sends a long line's last piece without its newline; even `docker logs`
    # then runs the next line into it. The rows must still be what the container wrote.
    _cid, rows = await collect_finished(
        tmp_path,
        containers,
        "local20k",
        "head -c 20480 /dev/zero | tr '\\0' a; echo; echo after",
        "--log-driver",
        "local",
    )
    assert [r[2] for r in rows] == ["a" * 20480, "after"]


@pytest.mark.docker
async def test_invalid_utf8_rows_are_flagged(tmp_path: Path, containers: Containers) -> None:
    # json-file already replaces invalid UTF-8 (Go's JSON encoder); `local` keeps the raw bytes.
    cid, _ = await collect_finished(
        tmp_path, containers, "flags", "printf 'x\\377y\\n'; echo ok", "--log-driver", "local"
    )
    async with agent_parts(tmp_path):
        rows = await (await lines_of(cid)).order_by("id").values_list("message", "flags")
    assert rows == [("x\ufffdy", FLAG_REPLACED), ("ok", 0)]


@pytest.mark.docker
async def test_rows_carry_host_name_and_docker_timestamps(
    tmp_path: Path, containers: Containers
) -> None:
    cid, _rows = await collect_finished(tmp_path, containers, "meta", "echo a; echo b")
    async with agent_parts(tmp_path):
        row = await (await lines_of(cid)).order_by("id").first()
        source = await ContainerCursor.get(container_id=cid)
    assert row is not None
    assert row.host == source.host == "test-host"
    assert source.container_name == f"{containers.prefix}-meta"
    # Docker's own UTC spelling is not kept per row: the read side derives the same text
    # (compared with `docker logs -t` by every test through rows_in and stored).
    assert row.timestamp == ""
    assert row.timestamp_ns == parse_timestamp(format_timestamp(row.timestamp_ns).encode())


@pytest.mark.docker
async def test_start_of_missing_container_raises_clearly(tmp_path: Path) -> None:
    async with agent_parts(tmp_path) as (_storage, manager):
        with pytest.raises(ContainerNotFound):
            await manager.start_docker_collector("logagent-test-does-not-exist")
        assert manager.active_collectors() == {}


async def test_collector_without_manager_needs_a_task_group() -> None:
    with pytest.raises(RuntimeError, match="task group"):
        await DockerLogCollector("abc", "abc").start()


@pytest.mark.docker
async def test_log_driver_none_is_a_clear_error(tmp_path: Path, containers: Containers) -> None:
    cid = containers.run("nolog", "sleep 30", "--log-driver", "none")
    async with agent_parts(tmp_path) as (_storage, manager):
        with pytest.raises(LogsUnavailable):
            await manager.start_docker_collector(cid)


@pytest.mark.docker
async def test_starting_an_active_container_is_a_no_op(
    tmp_path: Path, containers: Containers
) -> None:
    cid = containers.run("twice", "while true; do echo tick; sleep 0.2; done")
    async with agent_parts(tmp_path) as (_storage, manager):
        first = await manager.start_docker_collector(cid)
        again = await manager.start_docker_collector(cid[:12])
        assert again is first
        assert list(manager.active_collectors()) == [f"docker:{cid}"]
        assert await manager.stop_collector(f"docker:{cid}")
        assert manager.active_collectors() == {}
        assert first.state == "stopped"
        # a stopped container can be started again: a new collector
        restarted = await manager.start_docker_collector(cid)
        assert restarted is not first and restarted.state == "running"


@pytest.mark.docker
async def test_rm_container_that_exits_ends_its_collector_cleanly(
    tmp_path: Path, containers: Containers
) -> None:
    """`docker run --rm`: removal after exit is its normal end, not a failure."""
    cid = containers.run("autorm", "sleep 0.5; seq 1 300; echo done >&2", "--rm")
    async with agent_parts(tmp_path, tail="all") as (_storage, manager):
        collector = await manager.start_docker_collector(cid)
        with anyio.fail_after(30):
            await collector.wait()
        assert (collector.state, collector.error) == ("ended", None)
        assert [r for r in manager.registry if r.failure] == [] and manager.errors == 0
        rows = await stored(cid)
    assert [m for _s, _t, m in rows if _s == "stdout"] == [str(i) for i in range(1, 301)]
    assert [m for _s, _t, m in rows if _s == "stderr"] == ["done"]


@pytest.mark.docker
async def test_removed_container_ends_its_collector_with_error_only(
    tmp_path: Path, containers: Containers
) -> None:
    doomed = containers.run("doomed", "while true; do echo tick; sleep 0.05; done")
    sibling = containers.run("sibling", "while true; do echo tock; sleep 0.05; done")
    async with agent_parts(tmp_path) as (_storage, manager):
        victim = await manager.start_docker_collector(doomed)
        other = await manager.start_docker_collector(sibling)
        await anyio.sleep(0.5)
        docker("rm", "-f", doomed)
        with anyio.fail_after(30):
            await victim.wait()
        assert victim.state == "failed"
        assert "removed" in (victim.error or "")
        failed = manager.registry.get(doomed)
        assert failed is not None and failed.failure is not None
        assert list(manager.active_collectors()) == [f"docker:{sibling}"]
        before = other.lines
        await anyio.sleep(0.5)
        assert other.state == "running" and other.lines > before


def _open_sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                count += 1
        except OSError:
            pass
    return count


@pytest.mark.docker
async def test_500_start_stop_cycles_leak_no_socket(tmp_path: Path, containers: Containers) -> None:
    cid = containers.run("cycles", "while true; do echo tick; sleep 0.01; done")
    async with agent_parts(tmp_path, tail=1) as (_storage, manager):
        for _ in range(5):  # warm the request pool
            await manager.start_docker_collector(cid)
            await manager.stop_collector(cid)
        before = _open_sockets()
        for _ in range(500):
            await manager.start_docker_collector(cid)
            await manager.stop_collector(cid)
        await manager.stop_all()
        after = _open_sockets()
    assert after <= before, f"{after - before} sockets more after 500 cycles"


@pytest.mark.docker
async def test_500_streams_do_not_starve_other_requests(containers: Containers) -> None:
    ids = [containers.run(f"many{i}", "while true; do echo tick; sleep 1; done") for i in range(5)]
    async with DockerClient() as client, AsyncExitStack() as stack:
        for i in range(500):
            await stack.enter_async_context(client.logs(ids[i % 5], follow=True, tail=0))
        with anyio.fail_after(10):
            info = await client.inspect(ids[0])
            listed = await client.list_containers()
        assert info.id == ids[0]
        assert {c.id for c in listed} >= set(ids)
