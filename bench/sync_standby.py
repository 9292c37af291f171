"""PostgreSQL ingest with a standby, asynchronous vs synchronous: `python bench/sync_standby.py`.

Three pairs of PostgreSQL 15 clusters on loopback (tests/pg_pair.py), all in this run:
  a. async: a primary streaming to a hot standby, commits do not wait for it;
  b. sync: the same with the standby in synchronous_standby_names (synchronous_commit=on):
     each commit returns once the standby has flushed its WAL;
  c. lone: a pair whose standby is detached (primary_conninfo emptied): a primary alone,
     the baseline every figure is divided by.
Each round writes through logagent's group-commit writer (`LogStorage.write`, then `flush`,
no Docker, as bench/pg_store.py's follow part does), into a fresh database:
  1. ingest: N lines of 100 bytes from 10 containers, in reads of 200 lines (a busy
     collector's), queued as fast as the writer takes them: lines/s from the first write to
     the flush returning, commits/s, and each commit's time (`on_commit`: the writer's
     transaction, what `stats.last_commit_seconds` holds);
  2. trickle: 50 reads of 10 lines, one at a time, each flushed before the next: the commit's
     time, and write → flushed (that adds the writer's 10 ms linger for small batches); then,
     as the floor, 50 one-row INSERTs (autocommit) over a bare asyncpg connection.
Rounds are interleaved (a b c, then b c a, then c a b), after an uncounted warm-up ingest of
20,000 lines into each; each figure is the median of the rounds. Needs root and Debian's
PostgreSQL 15 (`bash tests/pg-up.sh` installs it). Takes ~1.5 minutes. Asserts nothing.

Both clusters of a pair share this machine's CPUs and run with fsync=off: a sync commit waits
for the standby's walreceiver to have the WAL over loopback, not for a disk or a network.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # agent, tests.pg_pair
sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as base  # bench/run.py: read_batches

from agent.batch import LineBatch, Source
from agent.cursor import Cursor
from agent.storage import LogStorage
from tests.pg_pair import ReplicatedPair, pair_problem, psql, wait_for

LINE = base.LINE  # 100 bytes with its newline, as bench/run.py and bench/pg_store.py write them
CONTAINERS = 10
PER_READ = 200  # lines per read of a busy stream (bench/README.md: ~180 at ingest speed)
TRICKLE_READS = 50
TRICKLE_LINES = 10
KINDS = ("async", "sync", "lone")  # the last is the baseline


@dataclass
class Target:
    kind: str
    pair: ReplicatedPair
    attached: bool  # the standby streams from the primary


@dataclass
class Ingest:
    lines_per_s: float
    commits_per_s: float
    rows_per_commit: float
    commit_ms: list[float]
    wal_mb: float  # WAL the primary wrote during the ingest: what a standby must receive


@dataclass
class Trickle:
    commit_ms: list[float]
    flushed_ms: list[float]
    bare_ms: list[float]  # a one-row INSERT, autocommit, asyncpg alone: the commit's floor


@dataclass
class Results:
    ingest: dict[str, list[Ingest]] = field(default_factory=lambda: {k: [] for k in KINDS})
    trickle: dict[str, list[Trickle]] = field(default_factory=lambda: {k: [] for k in KINDS})


def p99(values: list[float]) -> float:
    """The 99th percentile (of 50 commits: between the two slowest)."""
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def batches(lines: int, stamp: int) -> list[LineBatch]:
    """`lines` lines of 100 bytes from CONTAINERS containers, PER_READ at a time, in turn
    (bench/run.py's `read_batches`)."""
    return base.read_batches(lines, stamp, [LINE], containers=CONTAINERS, per_read=PER_READ)


async def ingest(url: str, lines: int, wal_at: Callable[[], int]) -> Ingest:
    todo = batches(lines, time.time_ns())  # built before the clock starts
    commits: list[float] = []
    async with LogStorage(url, host="bench") as storage:  # the schema made before the clock
        storage.writer.on_commit = lambda _rows, seconds: commits.append(seconds)
        wal = wal_at()
        started = time.perf_counter()
        for batch in todo:
            await storage.write(batch)
            await asyncio.sleep(0)  # a collector's next read comes through the event loop
        await storage.flush()
        took = time.perf_counter() - started
        wal = wal_at() - wal
    return Ingest(
        lines / took,
        len(commits) / took,
        lines / len(commits),
        [1e3 * s for s in commits],
        wal / 1e6,
    )


async def trickle(url: str) -> Trickle:
    source, cursor = Source("t" * 64, "trickle"), Cursor()
    commits: list[float] = []
    flushed: list[float] = []
    async with LogStorage(url, host="bench") as storage:
        for r in range(-1, TRICKLE_READS):  # -1: its first commit makes the container's row
            if r == 0:
                storage.writer.on_commit = lambda _rows, seconds: commits.append(seconds)
            batch = LineBatch(source)
            stamp = time.time_ns()
            for i in range(TRICKLE_LINES):
                batch.append("stdout", stamp + i, "", f"{r} {i} {LINE}"[:99], 0, 100)
            cursor.advance(batch)
            started = time.perf_counter()
            await storage.write(batch)
            await storage.flush()
            if r >= 0:
                flushed.append(1e3 * (time.perf_counter() - started))
            await asyncio.sleep(0.02)  # lines trickling in: the writer idle between them
    bare: list[float] = []
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE TABLE bench_commit (i int)")
        for r in range(TRICKLE_READS):
            started = time.perf_counter()
            await conn.execute("INSERT INTO bench_commit VALUES ($1)", r)
            bare.append(1e3 * (time.perf_counter() - started))
            await asyncio.sleep(0.02)
    finally:
        await conn.close()
    return Trickle([1e3 * s for s in commits], flushed, bare)


def detach_standby(pair: ReplicatedPair) -> None:
    """The standby stops streaming (its walreceiver ends): the primary is alone."""
    psql(pair.standby_port, "ALTER SYSTEM SET primary_conninfo = ''")
    psql(pair.standby_port, "SELECT pg_reload_conf()")
    wait_for(
        "standby detached",
        lambda: (psql(pair.primary_port, "SELECT count(*) FROM pg_stat_replication") == "0", None),
        stall=60,
    )


def replication(target: Target) -> str:
    rows = psql(
        target.pair.primary_port,
        "SELECT application_name || ' ' || state || ' ' || sync_state FROM pg_stat_replication",
    )
    return rows.replace("\n", ", ") or "none"


def one_round(targets: list[Target], r: int, lines: int, results: Results) -> None:
    shift = r % len(targets)
    for target in targets[shift:] + targets[:shift]:
        pair = target.pair

        def wal_at(port: int = pair.primary_port) -> int:
            return int(psql(port, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint"))

        got = asyncio.run(ingest(pair.primary_url(f"ingest{r}"), lines, wal_at))
        if target.attached:
            pair.wait_caught_up()  # the standby's replay done before the next figure
        slow = asyncio.run(trickle(pair.primary_url(f"trickle{r}")))
        if target.attached:
            pair.wait_caught_up()
        results.ingest[target.kind].append(got)
        results.trickle[target.kind].append(slow)
        print(
            f"   round {r + 1} {target.kind:>5}: {got.lines_per_s:>9,.0f} lines/s, "
            f"{got.commits_per_s:6.1f} commits/s of {got.rows_per_commit:,.0f} rows, commit "
            f"median {statistics.median(got.commit_ms):.2f} ms; trickle commit median "
            f"{statistics.median(slow.commit_ms):.2f} ms, write → flushed "
            f"{statistics.median(slow.flushed_ms):.2f} ms",
            flush=True,
        )


def table(results: Results, lines: int) -> None:
    med = statistics.median
    ing, tri = results.ingest, results.trickle

    def per_kind(values: Callable[[str], list[float]]) -> dict[str, float]:
        """The median over the rounds, for each kind."""
        return {k: med(values(k)) for k in KINDS}

    rows: list[tuple[str, dict[str, float], str]] = [  # figure, value per kind, format
        ("ingest lines/s", per_kind(lambda k: [x.lines_per_s for x in ing[k]]), ",.0f"),
        ("ingest commits/s", per_kind(lambda k: [x.commits_per_s for x in ing[k]]), ".1f"),
        ("ingest rows per commit", per_kind(lambda k: [x.rows_per_commit for x in ing[k]]), ",.0f"),
        ("ingest WAL MB per commit",
         per_kind(lambda k: [x.wal_mb * x.rows_per_commit / lines for x in ing[k]]), ".1f"),
        ("ingest commit ms, median", per_kind(lambda k: [med(x.commit_ms) for x in ing[k]]), ".1f"),
        ("ingest commit ms, p99", per_kind(lambda k: [p99(x.commit_ms) for x in ing[k]]), ".1f"),
        ("trickle commit ms, median",
         per_kind(lambda k: [med(x.commit_ms) for x in tri[k]]), ".2f"),
        ("trickle commit ms, p99", per_kind(lambda k: [p99(x.commit_ms) for x in tri[k]]), ".2f"),
        ("trickle write → flushed ms, median",
         per_kind(lambda k: [med(x.flushed_ms) for x in tri[k]]), ".2f"),
        ("trickle write → flushed ms, p99",
         per_kind(lambda k: [p99(x.flushed_ms) for x in tri[k]]), ".2f"),
        ("bare 1-row commit ms, median", per_kind(lambda k: [med(x.bare_ms) for x in tri[k]]),
         ".3f"),
        ("bare 1-row commit ms, p99", per_kind(lambda k: [p99(x.bare_ms) for x in tri[k]]),
         ".3f"),
    ]  # fmt: skip
    spread = {
        k: f"{min(x.lines_per_s for x in ing[k]):,.0f}–{max(x.lines_per_s for x in ing[k]):,.0f}"
        for k in KINDS
    }
    print(
        f"\nlogagent ingest with a standby, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
        f"{lines:,} lines/round, median of {len(ing['lone'])} rounds\n"
    )
    print("| figure | a. async standby | b. sync standby | c. lone primary | a/c | b/c | b/a |")
    print("|---|---|---|---|---|---|---|")
    for name, v, fmt in rows:
        a, b, c = (v[k] for k in KINDS)
        print(
            f"| {name} | {a:{fmt}} | {b:{fmt}} | {c:{fmt}} | "
            f"{a / c:.2f}× | {b / c:.2f}× | {b / a:.2f}× |"
        )
    print(f"| ingest lines/s, min–max | {spread['async']} | {spread['sync']} | {spread['lone']} "
          "| | | |")  # fmt: skip
    by = {name: v for name, v, _ in rows}
    a, b, c = (by["ingest lines/s"][k] for k in KINDS)
    slow, fast = (by["trickle commit ms, median"][k] for k in ("sync", "async"))
    wal = by["ingest WAL MB per commit"]["sync"]
    bare_slow, bare_fast = (by["bare 1-row commit ms, median"][k] for k in ("sync", "async"))
    print(
        f"\nConclusion: a sync standby gives {b / a:.2f}× the async standby's ingest lines/s "
        f"(async {a / c:.2f}×, sync {b / c:.2f}× a lone primary: each big commit also waits for "
        f"the standby to have flushed its {wal:.0f} MB of WAL), and a trickled commit takes "
        f"{slow:.2f} vs {fast:.2f} ms ({slow - fast:+.2f} ms, {slow / fast:.2f}×; a bare one-row "
        f"commit {bare_slow:.3f} vs {bare_fast:.3f} ms). This is "
        "loopback with fsync=off: the wait is a local round trip; over a network each commit "
        "adds at least one round trip to the standby, and its disk flush where fsync is on."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lines", type=int, default=200_000)
    args = parser.parse_args()
    if (problem := pair_problem()) is not None:
        print(f"cannot run: {problem}", file=sys.stderr)
        return 1
    print(
        "PostgreSQL ingest through logagent's writer, the primary of: a. an async standby, "
        "b. a sync standby (synchronous_commit=on), c. no standby (baseline)\n"
        f"   ingest: {args.lines:,} lines of 100 bytes, {CONTAINERS} containers, reads of "
        f"{PER_READ} lines, then flush; trickle: {TRICKLE_READS} reads of {TRICKLE_LINES} "
        f"lines, each flushed, and {TRICKLE_READS} bare one-row commits; {args.rounds} "
        "interleaved rounds, "
        "a fresh database each",
        flush=True,
    )
    logging.getLogger("logagent").setLevel(logging.ERROR)  # not "writing to the server at"
    results = Results()
    with contextlib.ExitStack() as stack:
        started = time.perf_counter()
        targets: list[Target] = []
        for kind in KINDS:
            pair = stack.enter_context(ReplicatedPair(sync=kind == "sync"))
            pair.create_database("warmup")
            for r in range(args.rounds):  # before a standby is detached: it waits for it
                pair.create_database(f"ingest{r}")
                pair.create_database(f"trickle{r}")
            if kind == "lone":
                detach_standby(pair)
            targets.append(Target(kind, pair, attached=kind != "lone"))
        print(f"   3 pairs ready in {time.perf_counter() - started:.0f} s; replication: "
              + "; ".join(f"{t.kind} {replication(t)}" for t in targets), flush=True)  # fmt: skip
        for target in targets:  # not counted: the first ingest into a cluster is cold
            asyncio.run(ingest(target.pair.primary_url("warmup"), 20_000, lambda: 0))
            if target.attached:
                target.pair.wait_caught_up()
        for r in range(args.rounds):
            one_round(targets, r, args.lines, results)
    table(results, args.lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
