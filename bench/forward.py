"""Forwarding stored lines, beside the ingest that stored them: `python bench/forward.py`.

No Docker. Each round, in a fresh SQLite store (a temporary directory), in one process:
  1. ingest: N lines (default 1,000,000) of 100 bytes from 10 containers, in reads of 200
     lines (a busy collector's), written through logagent's group-commit writer
     (`LogStorage.write`, then `flush`), as bench/sync_standby.py does. The lines are a web
     service's (bench/run.py's `log_block`, 10,000 of them over and over: gzip is not
     handed 100 'x's), with their levels found as the agent's shaper finds them; the
     batches are built before the clock starts. The figure: this process's CPU time
     (`time.process_time()`: every thread, aiosqlite's included) per line, and lines/s,
     from the first write to the flush returning.
  2. forward: the same store, still open (an agent's writer and forwarders share it), handed
     on by `agent.forward.runner.Forwarder` from its first line (`start = "stored"`) until
     the forwarder's `stats.sent` reaches N (every batch acknowledged): this process's CPU
     per line and lines/s, from the forwarder's start. Three destinations, each new to the
     store (so each reads every line), in an order rotated each round:
       - otlp, 1,000 lines a batch, and otlp with the default 500: OTLP/HTTP to a receiver
         in a process of its own (its CPU is not counted: it is shown apart), which gunzips
         each body, parses it (`ExportLogsServiceRequest.FromString`), counts its records
         and answers 200 with an ExportLogsServiceResponse;
       - ndjson, 1,000 lines a batch, appended to a file in the same temporary directory
         (each batch fsync'ed by the sink).
3 rounds (`--rounds`), each printed; then the medians with min and max, and the ratio the issue
sets a target for: forwarding's CPU per line at most 0.5 of ingest's, in the same round. Then
one more OTLP forward (1,000 a batch) of the last round's first 200,000 lines under cProfile
(timed by the main thread's CPU: aiosqlite's thread is not seen, nor the waits), and the parts
of a forward step timed apart over the same lines (reading, encoding, gzip, the POST).
Asserts nothing; ~4 minutes on 2 cores at 1,000,000 lines.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gzip
import io
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as base  # bench/run.py: log_block, read_batches, cpu_seconds (puts the repo on sys.path)

from agent.batch import LineBatch
from agent.forward.otlp import GZIP_LEVEL
from agent.forward.records import ids_for
from agent.forward.runner import Forwarder, encode
from agent.forward.settings import Destination
from agent.storage import LogStorage
from agent.storage.described import described_containers
from agent.storage.follow import Position, committed, newer
from agent.storage.reader import LogFilter, StoredRow

HOST = "bench"
CONTAINERS = 10
PER_READ = 200  # lines per read of a busy stream (bench/README.md: ~180 at ingest speed)
BLOCK = 10_000  # distinct lines, repeated
LINGER_S = 0.01
TARGET = 0.5  # forwarding's CPU per line, at most this many times ingest's
OTLP_PATH = "/v1/logs"


@dataclass(frozen=True)
class Case:
    """One destination forwarded each round."""

    label: str
    kind: str
    batch_lines: int


CASES = (Case("otlp 1000", "otlp", 1000), Case("otlp 500", "otlp", 500),
         Case("ndjson 1000", "ndjson", 1000))  # fmt: skip
MAIN = CASES[0]  # the figure


@dataclass
class Figure:
    cpu_us: float  # this process's CPU µs per line
    main_us: float  # of it, the main thread's (the event loop; the rest: SQLite's thread)
    lines_per_s: float
    other_us: float = 0.0  # the receiver's CPU µs per line (a process of its own)


@dataclass
class Results:
    ingest: list[Figure] = field(default_factory=list)
    forward: dict[str, list[Figure]] = field(default_factory=lambda: {c.label: [] for c in CASES})


# -- the receiver, a process of its own ------------------------------------------------------


def receive() -> None:
    """`forward.py --receiver`: an OTLP/HTTP logs receiver on 127.0.0.1, its port printed on
    stdout; GET /count says what it received (records, requests)."""
    from aiohttp import web
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
        ExportLogsServiceRequest,
        ExportLogsServiceResponse,
    )

    seen = {"records": 0, "requests": 0}
    ok = ExportLogsServiceResponse().SerializeToString()

    async def logs(request: web.Request) -> web.Response:
        body = await request.read()  # aiohttp gunzips it (Content-Encoding: gzip)
        if body[:2] == b"\x1f\x8b":  # in case it did not
            body = gzip.decompress(body)
        got = ExportLogsServiceRequest.FromString(body)
        seen["records"] += sum(len(s.log_records) for r in got.resource_logs for s in r.scope_logs)
        seen["requests"] += 1
        return web.Response(body=ok, content_type="application/x-protobuf")

    async def count(_request: web.Request) -> web.Response:
        return web.json_response(seen)

    async def main() -> None:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post(OTLP_PATH, logs)
        app.router.add_get("/count", count)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


class Receiver:
    """The receiver's process: started once, counted by its own /proc CPU."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--receiver"], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}{OTLP_PATH}"

    def cpu(self) -> float:
        return base.cpu_seconds(self.proc.pid)

    async def count(self) -> dict[str, int]:
        import aiohttp

        url = f"http://127.0.0.1:{self.port}/count"
        async with aiohttp.ClientSession() as session, session.get(url) as answer:
            found: dict[str, int] = await answer.json()
            return found

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


# -- the rounds ------------------------------------------------------------------------------


def batches(lines: int, stamp: int) -> list[LineBatch]:
    """`lines` lines of the web service's block, from CONTAINERS containers, PER_READ at a
    time, with their levels (bench/run.py's `read_batches`)."""
    block = base.log_block(BLOCK)
    return base.read_batches(
        lines, stamp, block, leveled=True, containers=CONTAINERS, per_read=PER_READ
    )


def destination(case: Case, name: str, receiver: Receiver, tmp: Path) -> Destination:
    where = {"url": receiver.url} if case.kind == "otlp" else {"path": str(tmp / f"{name}.ndjson")}
    return Destination(name=name, kind=case.kind, batch_lines=case.batch_lines,
                       linger_s=LINGER_S, from_start=True, **where)  # fmt: skip


async def ingest(storage: LogStorage, todo: list[LineBatch]) -> Figure:
    cpu, main, wall = time.process_time(), time.thread_time(), time.perf_counter()
    for batch in todo:
        await storage.write(batch)
        await asyncio.sleep(0)  # a collector's next read comes through the event loop
    await storage.flush()
    cpu, main, wall = (time.process_time() - cpu, time.thread_time() - main,
                       time.perf_counter() - wall)  # fmt: skip
    n = sum(len(b) for b in todo)
    return Figure(1e6 * cpu / n, 1e6 * main / n, n / wall)


async def forward(
    storage: LogStorage, d: Destination, n: int, receiver: Receiver, *, limit_s: float = 300.0
) -> Figure:
    """From the forwarder's start to its `stats.sent` reaching n (polled every 10 ms)."""
    fwd = Forwarder(storage.db, storage.host, d)
    before = await receiver.count() if d.kind == "otlp" else None
    other = receiver.cpu()
    cpu, main, wall = time.process_time(), time.thread_time(), time.perf_counter()
    async with anyio.create_task_group() as tg:
        await tg.start(fwd.run)
        while fwd.stats.sent < n:
            if fwd.stats.failures or time.perf_counter() - wall > limit_s:
                raise TimeoutError(f"forward {d.name}: {fwd.stats.shown()}")
            await anyio.sleep(0.01)
        cpu, main, wall = (time.process_time() - cpu, time.thread_time() - main,
                           time.perf_counter() - wall)  # fmt: skip
        other = receiver.cpu() - other
        tg.cancel_scope.cancel()
    if fwd.stats.failures or fwd.stats.refused or fwd.stats.sent != n:
        print(f"   ! forward {d.name}: {fwd.stats.shown()}", flush=True)
    if before is not None:
        got = (await receiver.count())["records"] - before["records"]
        if got != n:
            print(f"   ! forward {d.name}: the receiver counted {got:,} of {n:,}", flush=True)
    rx = 1e6 * other / n if d.kind == "otlp" else 0.0
    return Figure(1e6 * cpu / n, 1e6 * main / n, n / wall, rx)


async def one_round(
    tmp: Path, r: int, n: int, receiver: Receiver, results: Results, *, keep: bool
) -> None:
    """Ingest into a fresh store, then each case forwards all of it; the store is removed
    after unless `keep` (the profile reads it)."""
    todo = batches(n, time.time_ns() - 3600 * 10**9)  # built before the clock starts
    async with LogStorage(f"sqlite:///{tmp}/store.db", host=HOST) as storage:
        got = await ingest(storage, todo)
        del todo
        results.ingest.append(got)
        said = [f"ingest {got.cpu_us:.2f} µs/line (main {got.main_us:.2f}), "
                f"{got.lines_per_s:,.0f}/s"]  # fmt: skip
        shift = r % len(CASES)
        for case in CASES[shift:] + CASES[:shift]:
            d = destination(case, f"r{r}-{case.kind}-{case.batch_lines}", receiver, tmp)
            fig = await forward(storage, d, n, receiver)
            results.forward[case.label].append(fig)
            rx = f", receiver {fig.other_us:.2f}" if case.kind == "otlp" else ""
            said.append(f"{case.label} {fig.cpu_us:.2f} µs/line (main {fig.main_us:.2f}{rx}), "
                        f"{fig.lines_per_s:,.0f}/s")  # fmt: skip
            if d.path:
                os.unlink(d.path)
    print(f"   round {r + 1}: " + "; ".join(said), flush=True)
    if not keep:
        for name in os.listdir(tmp):
            if name.startswith("store.db"):
                os.unlink(tmp / name)


# -- the table -------------------------------------------------------------------------------


def spread(values: Sequence[float], digits: int) -> str:
    f = f",.{digits}f"
    return f"{statistics.median(values):{f}} ({min(values):{f}}–{max(values):{f}})"


def table(results: Results, n: int) -> None:
    med = statistics.median
    ing = results.ingest
    rounds = len(ing)
    print(
        f"\nlogagent forwarding bench, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
        f"{n:,} lines a round, SQLite, median of {rounds} rounds (min–max)\n"
    )
    print("| path | CPU µs/line | of it main thread | lines/s | CPU / ingest's, same round "
          "| target | |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    print(f"| ingest (writer: write → flush) | {spread([x.cpu_us for x in ing], 2)} | "
          f"{spread([x.main_us for x in ing], 2)} | {spread([x.lines_per_s for x in ing], 0)} "
          "| 1.00× | | |")  # fmt: skip
    for case in CASES:
        fw = results.forward[case.label]
        ratios = [f.cpu_us / i.cpu_us for f, i in zip(fw, ing, strict=True)]
        ratio = med(ratios)
        target, mark = "", ""
        if case == MAIN:
            target, mark = f"≤ {TARGET}×", "PASS" if ratio <= TARGET else "MISS"
        cpu, main = spread([x.cpu_us for x in fw], 2), spread([x.main_us for x in fw], 2)
        rate, low, high = spread([x.lines_per_s for x in fw], 0), min(ratios), max(ratios)
        print(f"| forward {case.label} | {cpu} | {main} | {rate} | {ratio:.2f}× "
              f"({low:.2f}–{high:.2f}) | {target} | {mark} |")  # fmt: skip
    for case in CASES:
        if case.kind == "otlp":
            rx = [x.other_us for x in results.forward[case.label]]
            print(f"| (the receiver's process, {case.label}) | {spread(rx, 2)} | | | | | |")


# -- where the forwarder's CPU goes -----------------------------------------------------------


async def profile(tmp: Path, n: int, receiver: Receiver, top: int) -> None:
    """One more OTLP forward (MAIN) of the store's first n lines under cProfile, then the
    pieces of a forward apart over the same lines."""
    async with LogStorage(f"sqlite:///{tmp}/store.db", host=HOST) as storage:
        d = destination(MAIN, "profiled", receiver, tmp)
        prof = cProfile.Profile(time.thread_time)  # the main thread's CPU, not its waits
        prof.enable()
        fig = await forward(storage, d, n, receiver)
        prof.disable()
        print(f"\ncProfile of one forward {MAIN.label} ({n:,} lines; {fig.cpu_us:.2f} µs/line "
              "of CPU with the profiler on), the main thread's CPU seconds:")  # fmt: skip
        for key in ("cumulative", "tottime"):
            text = io.StringIO()
            stats = pstats.Stats(prof, stream=text)
            stats.sort_stats(key).print_stats(top)
            body = text.getvalue()
            print(f"-- top {top} by {key}:")
            print(body[body.index("   ncalls") :].rstrip())
        await pieces(storage, n, receiver, tmp)


async def pieces(storage: LogStorage, n: int, receiver: Receiver, tmp: Path) -> None:
    """A forward step's parts, each timed apart over the store's first n rows in MAIN's
    batches: CPU time of this process (every thread), and of it the main thread's."""
    db, flt = storage.db, LogFilter(host=HOST)
    fwd = Forwarder(db, HOST, destination(MAIN, "pieces", receiver, tmp))
    upto = await committed(db)
    mine = Position(tuple((h, at) for h, at in upto.ids if h == HOST))
    position = Position.of({HOST: 0})
    pages: list[list[StoredRow]] = []
    found: list[tuple[str, float, float]] = []

    async def timed(what: str, work: Callable[[list[StoredRow]], Awaitable[object]]) -> None:
        cpu, main = time.process_time(), time.thread_time()
        for rows in pages:
            await work(rows)
        cpu, main = time.process_time() - cpu, time.thread_time() - main
        found.append((what, 1e6 * cpu / n, 1e6 * main / n))

    cpu, main = time.process_time(), time.thread_time()
    for _ in range(-(-n // MAIN.batch_lines)):
        rows, position = await newer(db, flt, position, mine, limit=MAIN.batch_lines)
        pages.append(rows)
    cpu, main = time.process_time() - cpu, time.thread_time() - main
    found.append(("read the rows (`follow.newer`; its rows are made in the SQLite thread)",
                  1e6 * cpu / n, 1e6 * main / n))  # fmt: skip
    known = await described_containers(db, HOST, sorted({r.container_id for r in pages[0]}))
    ids = ids_for(dict(upto.sessions).get(HOST, ()))  # as the step makes them
    payloads: list[bytes] = []

    async def otlp(rows: list[StoredRow]) -> None:
        payloads.append(encode(Destination("otlp", "otlp"), rows, known, ids))

    sent = iter(payloads)

    async def send(_rows: list[StoredRow]) -> None:
        await fwd.sink.send(next(sent))

    async def steps(rows: list[StoredRow]) -> None:
        await committed(db)
        fwd._bounded(rows, position)  # the bench may reach in: the step's own parts
        await fwd._save(position)

    await timed("`committed` + `_bounded` + `_save` (the step's own)", steps)
    await timed("OTLP encode (`encode`: `otlp_request`, gzip included)", otlp)
    raw = [gzip.decompress(p) for p in payloads]
    squeeze = iter(raw)

    async def gz(_rows: list[StoredRow]) -> None:
        gzip.compress(next(squeeze), compresslevel=GZIP_LEVEL)

    await timed(f"  of which gzip ({sum(map(len, raw)) / n:.0f} → "
                f"{sum(map(len, payloads)) / n:.0f} bytes a line)", gz)  # fmt: skip

    async def uids(rows: list[StoredRow]) -> None:
        [ids(r) for r in rows]

    await timed("  of which the stable ids (`ids_for`; NDJSON makes them too)", uids)
    await timed("HTTP POST (`HttpSink.send` of those payloads, to the receiver)", send)
    await fwd.sink.aclose()

    async def nd(rows: list[StoredRow]) -> None:
        encode(Destination("nd", "ndjson"), rows, known, ids)

    async def stamps(rows: list[StoredRow]) -> None:
        [r.rfc3339 for r in rows]

    await timed("NDJSON encode (`encode`: `ndjson_lines`)", nd)
    await timed("  of which the timestamp text (`StoredRow.rfc3339`)", stamps)
    print(f"\npieces of a forward, timed apart over the {n:,} rows in batches of "
          f"{MAIN.batch_lines}, CPU µs per line (all threads / the main thread's):")  # fmt: skip
    for what, cpu, main in found:
        print(f"   {cpu:6.2f} / {main:6.2f}  {what}")


# -- main ------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--top", type=int, default=10, help="cProfile entries shown")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--profile-lines", type=int, default=200_000,
                        help="lines forwarded under cProfile and timed in pieces")  # fmt: skip
    parser.add_argument("--receiver", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receiver:
        receive()
        return 0
    n = args.lines
    print(
        f"forwarding {n:,} stored lines beside their ingest, {args.rounds} rounds, a fresh "
        f"SQLite store each: {CONTAINERS} containers, reads of {PER_READ} lines of 100 bytes; "
        "forward: " + ", ".join(c.label for c in CASES) + " (OTLP to a receiver in its own "
        "process, parsing each request)",
        flush=True,
    )
    tmp = Path(tempfile.mkdtemp(prefix="logagent-bench-forward-"))
    receiver = Receiver()
    results = Results()
    started = time.perf_counter()
    try:
        for r in range(args.rounds):
            last = r == args.rounds - 1 and not args.no_profile
            asyncio.run(one_round(tmp, r, n, receiver, results, keep=last))
        table(results, n)
        if not args.no_profile:
            asyncio.run(profile(tmp, min(n, args.profile_lines), receiver, args.top))
        print(f"\n{time.perf_counter() - started:.0f} s in all")
    finally:
        receiver.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
