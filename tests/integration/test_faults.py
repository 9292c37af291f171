"""Faults: a malformed stream, a full disk, the default manager."""

from __future__ import annotations

import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import anyio
import pytest
from aiohttp import web

from agent.batch import Line
from agent.collectors.docker import DockerLogCollector
from agent.collectors.manager import LogCollectorManager
from agent.docker.client import DockerClient
from agent.storage import LogStorage
from agent.storage.models import Gap, LogLine
from agent.timestamps import format_timestamp
from tests.conftest import db_url, eventually, in_fresh_python, serve_unix, write_line

pytestmark = [pytest.mark.anyio]

TS = b"2026-11-26T11:59:02.760761749Z"


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def serve_daemon(inspect: Handler, logs: Handler) -> AsyncIterator[str]:
    """A fake daemon's socket: /version, an inspect and a log stream, as given."""

    async def version(_r: web.Request) -> web.Response:
        return web.json_response({"ApiVersion": "1.41"})

    app = web.Application()
    app.add_routes(
        [
            web.get("/version", version),
            web.get("/v1.41/version", version),
            web.get("/v1.41/containers/{cid}/json", inspect),
            web.get("/v1.41/containers/{cid}/logs", logs),
        ]
    )
    async with serve_unix(app, handler_cancellation=True) as path:
        yield path


@asynccontextmanager
async def collecting_from(
    sock: str, url: str
) -> AsyncIterator[tuple[LogStorage, LogCollectorManager]]:
    """A store and a collector manager reading the fake daemon on `sock`."""
    async with (
        LogStorage(url, host="h") as storage,
        DockerClient("unix://" + sock) as client,
        LogCollectorManager(storage, client=client) as manager,
    ):
        yield storage, manager


async def run_to_end(manager: LogCollectorManager, container_id: str) -> DockerLogCollector:
    collector = await manager.start_docker_collector(container_id)
    with anyio.fail_after(10):
        await collector.wait()
    return collector


@asynccontextmanager
async def fake_daemon(body: bytes | list[bytes]) -> AsyncIterator[str]:
    """A fake Docker daemon, for faults a real one cannot be made to show on demand: a log
    stream that is not Docker's framing; a re-send that never reaches the stored position
    (dockerd 20.10 did it once, losing its rotated file mid-way). It answers /version, an
    inspect, and that stream."""

    async def inspect(r: web.Request) -> web.Response:
        cid = r.match_info["cid"]
        return web.json_response({"Id": cid, "Name": "/broken", "Config": {"Tty": False}})

    async def logs(r: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/vnd.docker.raw-stream"})
        await response.prepare(r)
        for part in [body] if isinstance(body, bytes) else body:  # parts: read apart
            await response.write(part)
            await anyio.sleep(0.3)
        await anyio.sleep(30)  # a follow stream stays open
        return response

    async with serve_daemon(inspect, logs) as path:
        yield path


def frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxI", stream, len(payload)) + payload


async def test_malformed_frame_stops_the_collector_and_keeps_what_came_before(
    tmp_path: Path,
) -> None:
    good = frame(1, TS + b" first\n") + frame(2, TS + b" second\n")
    bad = b"\x09\x00\x00\x00\x00\x00\x00\x04junk"
    async with (
        fake_daemon(good + bad) as sock,
        collecting_from(sock, db_url(tmp_path)) as (_storage, manager),
    ):
        collector = await run_to_end(manager, "f" * 64)
        assert collector.state == "failed"
        assert "malformed frame header" in (collector.error or "")
        assert "broken" in (collector.error or "")  # the error names the container
        assert manager.active_collectors() == {}
        failed = manager.registry.get("f" * 64)
        assert failed is not None and failed.failure is not None
        await manager.stop_all()
        stored = await LogLine.all().order_by("id").values_list("stream", "message")
    assert stored == [("stdout", "first"), ("stderr", "second")]


def entry(n: int) -> Line:
    text = f"line {n} " + "x" * 200
    return Line("stdout", 1_795_694_342_000_000_000 + n, "t", text, 0, 200)


async def test_full_disk_holds_lines_back_and_loses_none(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLite's own SQLITE_FULL (max_page_count): writes fail, collectors wait, nothing lost;
    the outage is said when it starts, how it goes at doubling intervals, and when it ends."""
    # At most 250 batches (here of one line) queued, and 250 lines taken for the commit that
    # fails: 500 lines held back in all.
    async with LogStorage(
        db_url(tmp_path), host="h", max_queue=250, max_batch=250, retry_delay=0.05,
        report_every=0.1,
    ) as storage:  # fmt: skip
        await write_line(storage, "c" * 64, "full", entry(-1))
        await storage.flush()
        _, rows = await storage.db.execute_query("PRAGMA page_count")
        await storage.db.execute_script(f"PRAGMA max_page_count = {int(rows[0][0]) + 2}")
        written = 0

        async def producer() -> None:
            nonlocal written
            for n in range(2000):
                await write_line(storage, "c" * 64, "full", entry(n))
                written += 1

        async with anyio.create_task_group() as tg:
            tg.start_soon(producer)
            with anyio.fail_after(10):
                while storage.failing is None:  # noqa: ASYNC110 (a state to poll)
                    await anyio.sleep(0.01)
            await anyio.sleep(0.3)
            assert "full" in storage.failing.lower()
            assert written < 2000  # the producer is held back, not buffering without bound
            assert storage.queued <= 500 + 1
            await storage.db.execute_script("PRAGMA max_page_count = 1073741823")
        await storage.flush()
        assert storage.failing is None
        tries = storage.writer.stats.write_errors
        messages = await LogLine.all().order_by("id").values_list("message", flat=True)
    assert [m.split()[1] for m in messages] == [str(n) for n in range(-1, 2000)]
    said = [r.getMessage() for r in caplog.records if r.name == "logagent.storage"]
    assert sum("will retry" in m for m in said) == 1
    # At 0.1 s, 0.3 s, 0.7 s …: a handful, not one at every try
    reports = sum("still fails" in m and "lines wait" in m for m in said)
    assert reports >= 1 and 2 * reports < tries, (reports, tries)
    assert sum("works again" in m for m in said) == 1


def test_default_manager_is_created_lazily() -> None:
    """Importing the module makes no manager (nor a client); the first use makes one, kept.
    In a fresh interpreter: the module's own state is not poked at."""
    script = (
        "import gc\n"
        "import agent.collectors.manager as m\n"
        "made = lambda: sum(isinstance(o, m.LogCollectorManager) for o in gc.get_objects())\n"
        "assert made() == 0, 'importing made a manager'\n"
        "first = m.logCollectorManager\n"
        "assert isinstance(first, m.LogCollectorManager) and m.logCollectorManager is first\n"
        "assert first.active_collectors() == {} and made() == 1\n"
    )
    in_fresh_python(script)


@asynccontextmanager
async def daemon_that_cuts_the_stream(
    body: bytes, versions: list[aiohttp.HttpVersion] | None = None
) -> AsyncIterator[str]:
    """A fake Docker daemon, for a fault dockerd 20.10 does not show (it sends a removed
    `--rm` container's log to its end: 2,000,000 of 2,000,000 lines to a reader sleeping
    300 ms a read): a log stream broken off mid-way, its container gone after."""
    removed = anyio.Event()

    async def inspect(r: web.Request) -> web.Response:
        if removed.is_set():
            return web.json_response({"message": "No such container"}, status=404)
        cid = r.match_info["cid"]
        return web.json_response(
            {
                "Id": cid,
                "Name": "/cut",
                "Config": {"Tty": False},
                "HostConfig": {"AutoRemove": True},
            }
        )

    async def logs(r: web.Request) -> web.StreamResponse:
        if versions is not None:
            versions.append(r.version)
        response = web.StreamResponse(headers={"Content-Type": "application/vnd.docker.raw-stream"})
        response.enable_chunked_encoding()
        await response.prepare(r)
        await response.write(body)
        await anyio.sleep(0.2)
        removed.set()
        assert r.transport is not None
        r.transport.close()  # no final chunk: the stream did not end, it was cut
        return response

    async with serve_daemon(inspect, logs) as path:
        yield path


async def test_stream_cut_by_removal_keeps_its_lines_and_records_a_gap(tmp_path: Path) -> None:
    good = frame(1, TS + b" first\n") + frame(1, TS + b" second\n")
    versions: list[aiohttp.HttpVersion] = []
    async with (
        daemon_that_cuts_the_stream(good, versions) as sock,
        collecting_from(sock, db_url(tmp_path)) as (_storage, manager),
    ):
        collector = await run_to_end(manager, "e" * 64)
        assert (collector.state, collector.error) == ("ended", None)
        await manager.stop_all()
        stored = await LogLine.all().order_by("id").values_list("message", flat=True)
        gaps = await Gap.all().values_list("reason", "from_ns", "to_ns")
    assert stored == ["first", "second"]
    assert len(gaps) == 1
    reason, from_ns, to_ns = gaps[0]
    assert reason.startswith("stream cut by the container's removal after 2026-11-26T11:59:02")
    assert reason.endswith("(count unknown)")
    assert from_ns == 1795694342760761749 and to_ns is None
    assert versions == [aiohttp.HttpVersion11]  # a --rm container's stream is chunked: a cut shows


async def test_an_unchunked_stream_cut_short_loses_nothing_of_a_container_still_there(
    tmp_path: Path,
) -> None:
    """A fake Docker daemon, for a fault dockerd does not show on demand: a follow stream
    broken off mid-way. In HTTP/1.0 (no chunks) a cut looks like the stream's end; the
    container is still there, so the read that follows an end (the catch-up) fetches every
    line after the position, and nothing is lost or stored twice."""
    base = 1_795_694_342_000_000_000
    lines = [
        frame(1, format_timestamp(base + i * 1000).encode() + b" n%d\n" % i) for i in range(10)
    ]
    asked: list[tuple[aiohttp.HttpVersion, str, str]] = []

    async def inspect(r: web.Request) -> web.Response:
        cid = r.match_info["cid"]
        return web.json_response(
            {"Id": cid, "Name": "/cut", "Config": {"Tty": False}, "State": {"Status": "exited"}}
        )

    async def logs(r: web.Request) -> web.StreamResponse:
        follow, since = r.query["follow"], r.query.get("since", "0")
        asked.append((r.version, follow, since))
        secs, _, nanos = since.partition(".")
        since_ns = int(secs) * 1_000_000_000 + int(nanos or 0)
        response = web.StreamResponse(headers={"Content-Type": "application/vnd.docker.raw-stream"})
        await response.prepare(r)
        if follow == "1":
            await response.write(b"".join(lines[:4]))
            assert r.transport is not None
            r.transport.close()  # cut mid-way
            return response
        await response.write(
            b"".join(x for i, x in enumerate(lines) if base + i * 1000 >= since_ns)
        )
        return response

    async with (
        serve_daemon(inspect, logs) as sock,
        collecting_from(sock, db_url(tmp_path)) as (_storage, manager),
    ):
        collector = await run_to_end(manager, "f" * 64)
        assert (collector.state, collector.error) == ("ended", None)
        await manager.stop_all()
        stored = await LogLine.all().order_by("id").values_list("message", flat=True)
        gaps = await Gap.all().count()
    assert stored == [f"n{i}" for i in range(10)] and gaps == 0
    assert [(v, f) for v, f, _ in asked] == [
        (aiohttp.HttpVersion10, "1"),
        (aiohttp.HttpVersion10, "0"),
    ]


@pytest.mark.parametrize("apart", [False, True], ids=["one-read", "stored-first"])
async def test_a_resend_cut_short_is_dropped_and_a_stepped_clock_is_kept(
    apart: bool, store_url: str
) -> None:
    """Lines older than the position that never meet it are either a re-send cut short
    (already read: dropped, whether still in the same read or in the store) or new lines
    of a clock stepped back (stored late)."""
    base = 1_795_694_342_000_000_000

    def line(ts: int, text: str) -> bytes:
        return frame(1, format_timestamp(ts).encode() + b" " + text.encode() + b"\n")

    first = b"".join(line(base + i * 1000, f"n{i}") for i in range(1, 101))
    body = b"".join(line(base + i * 1000, f"n{i}") for i in range(50, 61))  # re-sent
    body += b"".join(line(base + i * 1000, f"n{i}") for i in range(101, 104))
    body += b"".join(line(base + 20_000 + i + 1, f"stepped{i}") for i in range(5))  # new
    body += b"".join(line(base + i * 1000, f"n{i}") for i in range(104, 107))
    async with (
        fake_daemon([first, body] if apart else first + body) as sock,
        collecting_from(sock, store_url) as (storage, manager),
    ):
        collector = await manager.start_docker_collector("d" * 64)
        with anyio.fail_after(30):
            while collector.lines < 111:  # noqa: ASYNC110 (the collector's own count)
                await anyio.sleep(0.02)
        await storage.flush()
        guard = collector.guard
        await manager.stop_all()
        stored = await LogLine.all().order_by("id").values_list("message", flat=True)
    assert stored == [
        *(f"n{i}" for i in range(1, 104)),
        *(f"stepped{i}" for i in range(5)),
        *(f"n{i}" for i in range(104, 107)),
    ]
    assert (guard.resent, guard.stepped_back) == (11, 5)


@asynccontextmanager
async def daemon_that_removes_after_the_stream(
    body: bytes, container: dict[str, object], *, still_listed: bool = False
) -> AsyncIterator[str]:
    """A fake Docker daemon, for faults dockerd shows only by timing: one log stream of
    `body`, after which the container is gone (its inspect 404, unless `still_listed`: the
    removal under way), and so is its log (any later read 404)."""
    ended = anyio.Event()

    async def inspect(r: web.Request) -> web.Response:
        if ended.is_set() and not still_listed:
            return web.json_response({"message": "No such container"}, status=404)
        return web.json_response({"Id": r.match_info["cid"], **container})

    async def logs(r: web.Request) -> web.StreamResponse:
        if ended.is_set():  # the read of the rest: the container is gone
            return web.json_response({"message": "No such container"}, status=404)
        response = web.StreamResponse(headers={"Content-Type": "application/vnd.docker.raw-stream"})
        await response.prepare(r)
        await response.write(body)
        ended.set()
        return response

    async with serve_daemon(inspect, logs) as sock:
        yield sock


@pytest.mark.parametrize("inspect_after", ["gone", "still there"])
async def test_a_container_removed_before_its_rest_is_read_leaves_a_gap(
    tmp_path: Path, inspect_after: str
) -> None:
    """A fake Docker daemon, for a fault dockerd shows only by timing (a review met it with
    `docker rm -f` during an agent's catch-up of a backlog): the follow stream ends, and the
    container is removed before the read of its rest. The stored part was kept, and the rest
    lost in silence (the collector failed on the 404, as it still does). A gap now says so;
    not where the stream ended on its own and the container was then gone."""
    body = frame(1, TS + b" first\n") + frame(1, TS + b" second\n")
    running = {"Name": "/behind", "Config": {"Tty": False}, "State": {"Running": True}}
    listed = inspect_after == "still there"
    async with (
        daemon_that_removes_after_the_stream(body, running, still_listed=listed) as sock,
        collecting_from(sock, db_url(tmp_path)) as (_storage, manager),
    ):
        collector = await run_to_end(manager, "f" * 64)
        assert collector.state == "failed" and collector.error  # reported, as before
        await manager.stop_all()
        stored = await LogLine.all().order_by("id").values_list("message", flat=True)
        gaps = await Gap.all().values_list("reason", "from_ns", "to_ns")
    assert stored == ["first", "second"]
    if inspect_after == "gone":  # the stream ended on its own, then no container: it had all
        assert gaps == []  # (compose down: stop, then rm; a review saw a false gap per one)
    else:  # the read after the stream met the removal: what it had not read is lost
        assert [(r.startswith("stream cut by the container's removal"), t) for r, _, t in gaps] == [
            (True, None)
        ]


@asynccontextmanager
async def daemon_that_ends_a_running_stream(
    status: str, started_at: str, follows: list[str | None], plain: list[str | None]
) -> AsyncIterator[str]:
    """A fake Docker daemon, for a fault dockerd shows only by timing (a review met it with
    `--log-opt max-size=10k` and bursts: "Error grabbing logs: ... no such file"): the first
    follow stream carries n0-n2 and Docker's error and ends while the container is listed
    with `status` and `started_at`; a second carries n2 again, the rest, and the container
    exits. `follows` and `plain` get each follow and plain read's `since`."""
    base = 1_795_694_342_000_000_000
    lines = [frame(1, format_timestamp(base + i * 1000).encode() + b" n%d\n" % i) for i in range(6)]
    ran = {"status": status}

    async def inspect(r: web.Request) -> web.Response:
        state = {"Running": ran["status"] != "exited", "Status": ran["status"],
                 "StartedAt": started_at}  # fmt: skip
        return web.json_response(
            {"Id": r.match_info["cid"], "Name": "/cut", "Config": {"Tty": False}, "State": state}
        )

    async def logs(r: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/vnd.docker.raw-stream"})
        await response.prepare(r)
        if r.query["follow"] != "1":
            plain.append(r.query.get("since"))
        elif not follows:
            follows.append(r.query.get("since"))
            await response.write(b"".join(lines[:3]))
            await response.write(frame(3, b"Error grabbing logs: no such file\n"))
        else:
            follows.append(r.query.get("since"))
            await response.write(b"".join(lines[2:]))
            ran["status"] = "exited"
        return response

    async with serve_daemon(inspect, logs) as sock:
        yield sock


@pytest.mark.parametrize(
    ("status", "started_at", "again"),
    [
        ("running", "2026-12-07T10:00:00.000000000Z", True),
        ("restarting", "2026-12-07T10:00:00.000000000Z", False),  # a restart policy's run
        ("running", "2099-01-01T00:00:00.000000000Z", False),  # a run after the stream's
        ("running", "0001-01-01T00:00:00Z", False),  # Docker's zero time: not known
    ],
)
async def test_a_stream_docker_ends_while_its_container_runs_is_followed_again(
    tmp_path: Path, status: str, started_at: str, again: bool
) -> None:
    """The container was marked exited and read no more; now, if it runs on in the run the
    stream was opened on, it is followed again from the position, each line stored once.
    Not another run (a restart policy's, or one started after): that is the reconciler's."""
    follows: list[str | None] = []
    plain: list[str | None] = []
    async with (
        daemon_that_ends_a_running_stream(status, started_at, follows, plain) as sock,
        collecting_from(sock, db_url(tmp_path)) as (_storage, manager),
    ):
        collector = await manager.start_docker_collector("c" * 64)
        with anyio.fail_after(30):
            await collector.wait()
        assert (collector.state, collector.error) == ("ended", None)
        await manager.stop_all()
        stored = await LogLine.all().order_by("id").values_list("message", flat=True)
    if again:
        assert stored == [f"n{i}" for i in range(6)]
        assert len(follows) == 2 and follows[1] is not None  # again, from the position
    else:
        assert stored == ["n0", "n1", "n2"] and len(follows) == 1 and len(plain) == 1


async def test_a_stop_while_a_stream_waits_to_be_followed_again_is_a_stop(
    tmp_path: Path,
) -> None:
    """A stop (a shutdown's drain) during the pause before following again cancelled the
    scope of the stream already ended: the collector woke, opened a new follow stream, and
    was cut only after its drain timeout (a review's finding). It is a stop: no new follow,
    the plain read of a drain."""
    follows: list[str | None] = []
    plain: list[str | None] = []
    started_at = "2026-12-07T10:00:00.000000000Z"
    async with (
        daemon_that_ends_a_running_stream("running", started_at, follows, plain) as sock,
        collecting_from(sock, db_url(tmp_path)) as (_storage, manager),
    ):
        collector = await manager.start_docker_collector("c" * 64)
        await eventually(lambda: collector.reader.daemon_said is not None)
        await anyio.sleep(0.2)  # in its pause (1 s) now
        await manager.stop_all(drain=True)
        assert collector.state in ("ended", "stopped")
    assert len(follows) == 1 and len(plain) == 1  # no second follow; the drain's read


async def test_a_removed_rm_containers_stream_that_carried_dockers_error_leaves_a_gap(
    tmp_path: Path,
) -> None:
    """A fake Docker daemon, for a fault dockerd shows only by timing (a review's burst of 50
    short-lived --rm containers): the stream carries "Error grabbing logs: ... no such file"
    and ends, and the container is gone. That end was taken as a --rm container's normal
    one, with every line; Docker's error says not, and a gap now records it."""
    error = frame(3, b"Error grabbing logs: open x-json.log: no such file\n")
    short = {"Name": "/short", "Config": {"Tty": False}, "HostConfig": {"AutoRemove": True}}
    async with (
        daemon_that_removes_after_the_stream(frame(1, TS + b" first\n") + error, short) as sock,
        collecting_from(sock, db_url(tmp_path)) as (_storage, manager),
    ):
        collector = await run_to_end(manager, "a" * 64)
        await manager.stop_all()
        stored = await LogLine.all().order_by("id").values_list("message", flat=True)
        gaps = await Gap.all().values_list("reason", flat=True)
    assert collector.state == "ended" and stored == ["first"]
    assert len(gaps) == 1 and gaps[0].startswith("Docker could not send the log (")
    assert "no such file" in gaps[0]


async def test_a_rm_containers_read_after_its_stream_meeting_its_removal_is_its_end(
    tmp_path: Path,
) -> None:
    """A fake Docker daemon, for a fault dockerd shows only by timing (a review saw it in a
    burst): a --rm container's stream ends whole, it is still listed, and the read after
    the stream meets its removal (409 "dead or marked for removal", or a 404). That was
    logged as a failed collector; it is the container's normal end, with no gap."""
    body = frame(1, TS + b" first\n") + frame(1, TS + b" second\n")
    short = {"Name": "/short", "Config": {"Tty": False}, "HostConfig": {"AutoRemove": True}}
    async with (
        daemon_that_removes_after_the_stream(body, short, still_listed=True) as sock,
        collecting_from(sock, db_url(tmp_path)) as (_storage, manager),
    ):
        collector = await run_to_end(manager, "b" * 64)
        await manager.stop_all()
        stored = await LogLine.all().order_by("id").values_list("message", flat=True)
        gaps = await Gap.all().count()
    assert (collector.state, collector.error, stored, gaps) == (
        "ended",
        None,
        ["first", "second"],
        0,
    )


@pytest.mark.parametrize(
    ("ends_running", "brought"),
    [(True, ""), (False, ""), (True, "a stub"), (True, "a stamp")],
)
async def test_a_stream_opened_again_before_any_line_reads_from_its_first_open(
    tmp_path: Path, ends_running: bool, brought: str
) -> None:
    """A fake Docker daemon, for a fault dockerd shows only by timing: a container never read
    before (followed from its last `tail` lines) whose first follow stream ends before any
    line came, with Docker's error, the container running (then followed again) or exited
    (then read once more). The next read asked for the last `tail` lines again: a burst
    written in between, longer than the tail, lost all but its end. It now reads every line
    since the first stream was opened. If the first brought part of a line (`brought`),
    history not yet stored: from that line's stamp, or, if it did not come (a stub of a
    frame), the last `tail` lines again (two reviews' findings)."""
    asked: list[tuple[str, str | None, str | None]] = []  # (follow, tail, since) of each read
    opened_ns = time.time_ns()
    stamps = [opened_ns + (i + 1) * 1_000_000 for i in range(5)]
    lines = [frame(1, format_timestamp(t).encode() + b" n%d\n" % i) for i, t in enumerate(stamps)]
    state = {"Running": True, "Status": "running", "StartedAt": "2026-12-07T10:00:00.000000000Z"}

    async def inspect(r: web.Request) -> web.Response:
        return web.json_response(
            {"Id": r.match_info["cid"], "Name": "/quiet", "Config": {"Tty": False}, "State": state}
        )

    async def logs(r: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/vnd.docker.raw-stream"})
        await response.prepare(r)
        asked.append((r.query["follow"], r.query.get("tail"), r.query.get("since")))
        if len(asked) == 1:  # the first: Docker's error, no line (or half of one)
            if not ends_running:
                state.update(Running=False, Status="exited")
            if brought:  # and cut there
                await response.write(lines[0][: 12 if brought == "a stub" else 45])
            else:
                await response.write(frame(3, b"Error grabbing logs: no such file\n"))
        else:
            await response.write(b"".join(lines))
            state.update(Running=False, Status="exited")
        return response

    async with (
        serve_daemon(inspect, logs) as sock,
        collecting_from(sock, db_url(tmp_path)) as (_storage, manager),
    ):
        collector = await manager.start_docker_collector("d" * 64, tail=2)
        with anyio.fail_after(30):
            await collector.wait()
        await manager.stop_all()
        stored = await LogLine.all().order_by("id").values_list("message", flat=True)
    assert stored == [f"n{i}" for i in range(5)]
    assert asked[0] == ("1", "2", None)
    if brought == "a stub":
        assert asked[1] == ("1", "2", None)
        return
    follow, tail, since = asked[1]
    assert (follow, tail) == ("1" if ends_running else "0", "all")
    assert since is not None
    secs, nanos = since.split(".")
    since_ns = int(secs) * 1_000_000_000 + int(nanos)
    if brought == "a stamp":  # from the stamp of the line it began (less the margin)
        assert since_ns == stamps[0] - 1_000_000_000
        return
    assert opened_ns - 1_000_000_000 <= since_ns <= time.time_ns() - 1_000_000_000
