"""PostgreSQL as the store, measured beside baselines of the same run: `python bench/pg_store.py`.

1. ingest: one container writing 1,000,000 lines, followed live by the agent into PostgreSQL,
   beside the same into SQLite, beside bare asyncpg binary COPY of the same rows (no agent).
2. fleet: 3 and 6 agents (each its own host name and container) writing into one database at
   once: total lines/s, and the CPU of PostgreSQL's processes and of dockerd per line.
3. grep: a rare word over N rows (default 1M; `--grep-rows 10000000`), `logs --grep` with the
   trigram index beside the same without it (and the SQL alone, EXPLAIN ANALYZE).
4. follow: `logs -f` latency from a batch's commit to its line printed, PostgreSQL (woken
   by NOTIFY) beside SQLite (polling every 0.2 s).

Needs root, dockerd and the test image (`bash tests/docker-up.sh`) and the test cluster
(`bash tests/pg-up.sh`, 127.0.0.1:55432). Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as base

from agent.batch import Line, LineBatch, Source
from agent.cursor import Cursor
from agent.storage import LogStorage
from agent.storage.partitions import DAY_NS

PG = f"postgres://postgres@127.0.0.1:{os.environ.get('LOGAGENT_TEST_PG_PORT', '55432')}"
DBS: list[str] = []


def pg_admin(sql: str) -> None:
    subprocess.run(["psql", "-qAt", f"{PG}/postgres", "-c", sql], check=True, capture_output=True)


def new_db(name: str) -> str:
    db = f"logagent_bench_{base.RUN}_{name}"
    pg_admin(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    pg_admin(f"CREATE DATABASE {db}")
    DBS.append(db)
    return f"{PG}/{db}"


def fetch(url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    async def go() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(url)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(go())


def postgres_cpu() -> float:
    """utime+stime of every process of the PostgreSQL user (the test cluster's server)."""
    pids = subprocess.run(["pgrep", "-u", "postgres"], capture_output=True, text=True).stdout
    total = 0.0
    for pid in pids.split():
        try:
            total += base.cpu_seconds(int(pid))
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def container(name: str, label: str, n: int) -> str:
    full = f"{base.PREFIX}-{name}"
    base.made.append(full)
    return base.docker(
        "create", "--network", "none", "--name", full, "--label", base.LABEL, "--label", label,
        base.IMAGE, "sh", "-c", f"sleep 2; yes {base.LINE} | head -n {n}",
    ).strip()  # fmt: skip


def stored(url: str, cid: str) -> int:
    if url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(url.split("///", 1)[1], timeout=10) as conn:
            try:
                row = conn.execute(
                    "SELECT lines FROM container_cursors WHERE container_id = ?", (cid,)
                ).fetchone()
            except sqlite3.OperationalError:
                return 0
        return int(row[0]) if row else 0
    found = fetch(url, "SELECT lines FROM container_cursors WHERE container_id = $1", cid)
    return int(found[0][0]) if found else 0


# -- 1. ingest ------------------------------------------------------------------------------


def ingest_one(tmp: Path, url: str, name: str, n: int) -> tuple[float, float]:
    """lines/s and the agent's CPU µs per line, one container followed live."""
    label = f"logagent-bench.agent={name}"  # not logagent.*: those are hints
    agent = base.AgentProcess(tmp, name, url, host=name, label=label)
    cid = container(name, label, n)
    a0 = base.cpu_seconds(agent.proc.pid)
    base.start(cid)
    base.wait_for(lambda: stored(url, cid) >= n, 600, step=0.05)
    done = time.time()
    cpu = 1e6 * (base.cpu_seconds(agent.proc.pid) - a0) / n
    first = base.first_line_time(cid)
    agent.stop()
    base.remove(f"{base.PREFIX}-{name}")
    return n / (done - first), cpu


def bare_copy(url: str, n: int, *, trigram: bool = True) -> float:
    """asyncpg binary COPY of n rows into the store's own table (its indexes, its day
    partition), 20,000 a transaction: the server's ceiling for our rows, no agent."""

    async def go() -> float:
        async with LogStorage(url, host="bench"):
            pass  # the schema
        conn = await asyncpg.connect(url)
        if not trigram:
            await conn.execute("DROP INDEX log_lines_message_trgm")
        day = time.time_ns() // DAY_NS
        await conn.execute(
            f"CREATE TABLE log_lines_bare PARTITION OF log_lines FOR VALUES FROM ({day * DAY_NS}) "
            f"TO ({(day + 1) * DAY_NS})"
        )
        ts = time.time_ns()
        stamp = "2026-11-27T12:00:00.000000000Z"
        batch = 20_000
        columns = ["host", "source_id", "stream", "timestamp_ns", "timestamp", "message", "flags"]
        started = time.perf_counter()
        for b in range(n // batch):
            rows = [("h", 1, "stdout", ts + b * batch + i, stamp, f"{b * batch + i} {base.LINE}", 0)
                    for i in range(batch)]  # fmt: skip
            async with conn.transaction():
                await conn.copy_records_to_table("log_lines", records=rows, columns=columns)
        took = time.perf_counter() - started
        await conn.close()
        return n / took

    return asyncio.run(go())


def pin(cpus: str, *names: str) -> None:
    """Every thread of the named processes onto `cpus` (their children inherit it)."""
    for name in names:
        pids = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True).stdout
        pids += subprocess.run(["pgrep", "-u", name], capture_output=True, text=True).stdout
        for pid in set(pids.split()):
            subprocess.run(["taskset", "-a", "-cp", cpus, pid], capture_output=True)


def ingest(tmp: Path, rounds: int, n: int, apart: bool = False) -> None:
    """`apart`: the host (dockerd, containerd, the agent, the container) on CPU 0 and
    PostgreSQL on CPU 1, as a fleet's server is a machine of its own; SQLite's run gets the
    same one CPU for the host."""
    where = "host on CPU 0, PostgreSQL on CPU 1" if apart else "all sharing both CPUs"
    print(f"1. ingest: {n:,} lines of 100 bytes, live, {rounds} rounds ({where})", flush=True)
    if apart:
        pin("0", "dockerd", "containerd", "containerd-shim-runc-v2")
        pin("1", "postgres")
        os.sched_setaffinity(0, {0})  # the agents this script starts inherit it
    try:
        _ingest(tmp, rounds, n, " (host on 1 CPU, PG apart)" if apart else "")
    finally:
        if apart:
            pin("0-1", "dockerd", "containerd", "containerd-shim-runc-v2", "postgres")
            os.sched_setaffinity(0, {0, 1})


def _ingest(tmp: Path, rounds: int, n: int, how: str) -> None:
    got: dict[str, list[float]] = {"pg": [], "sqlite": [], "copy": []}
    cpu: dict[str, list[float]] = {"pg": [], "sqlite": []}
    for r in range(rounds):
        rate, us = ingest_one(tmp, new_db(f"ingest{r}"), f"pg{r}", n)
        got["pg"].append(rate)
        cpu["pg"].append(us)
        rate, us = ingest_one(tmp, f"sqlite:///{tmp}/ingest{r}.db", f"sq{r}", n)
        got["sqlite"].append(rate)
        cpu["sqlite"].append(us)
        got["copy"].append(bare_copy(new_db(f"copy{r}"), n))
        print("   round", r + 1, {k: f"{v[-1]:,.0f}" for k, v in got.items()}, flush=True)
    pg, sq, cp = (statistics.median(got[k]) for k in ("pg", "sqlite", "copy"))
    base.report(f"ingest lines/s, PostgreSQL vs SQLite{how}", base.spread(got["pg"]),
                f"SQLite {base.spread(got['sqlite'])}", pg / sq, "≥ 1.0×", pg >= sq)  # fmt: skip
    base.report(f"ingest lines/s, PostgreSQL vs bare COPY{how}", base.spread(got["pg"]),
                f"COPY {base.spread(got['copy'])}", pg / cp, "", None)  # fmt: skip
    base.report(f"agent CPU µs/line, PostgreSQL vs SQLite{how}",
                f"{statistics.median(cpu['pg']):.2f}",
                f"SQLite {statistics.median(cpu['sqlite']):.2f}",
                statistics.median(cpu["pg"]) / statistics.median(cpu["sqlite"]),
                "", None)  # fmt: skip


# -- 2. fleet -------------------------------------------------------------------------------


def fleet(tmp: Path, hosts: int, n: int) -> None:
    print(f"2. fleet: {hosts} agents, one container of {n:,} lines each, one database", flush=True)
    url = new_db(f"fleet{hosts}")
    agents, cids = [], []
    for h in range(hosts):
        name = f"f{hosts}h{h}"
        label = f"logagent-bench.agent={name}"  # not logagent.*: those are hints
        agents.append(base.AgentProcess(tmp, name, url, host=name, label=label))
        cids.append(container(name, label, n))
    dpid = base.dockerd_pid()
    p0, d0 = postgres_cpu(), base.cpu_seconds(dpid)
    base.start(*cids)
    base.wait_for(lambda: all(stored(url, c) >= n for c in cids), 900, step=0.1)
    done = time.time()
    pg_cpu, d_cpu = postgres_cpu() - p0, base.cpu_seconds(dpid) - d0
    first = min(base.first_line_time(c) for c in cids)
    total = hosts * n
    for agent in agents:
        agent.stop()
    base.remove(*(f"{base.PREFIX}-f{hosts}h{h}" for h in range(hosts)))
    base.report(f"fleet of {hosts}: total lines/s; PostgreSQL CPU µs/line vs dockerd's",
                f"{total / (done - first):,.0f}/s, PG {1e6 * pg_cpu / total:.2f}",
                f"dockerd {1e6 * d_cpu / total:.2f}", pg_cpu / d_cpu, "", None)  # fmt: skip


# -- 3. grep --------------------------------------------------------------------------------


def grep(tmp: Path, rows: int) -> None:
    print(f"3. grep: a rare word over {rows:,} rows", flush=True)
    url = new_db(f"grep{rows}")

    async def make() -> None:
        async with LogStorage(url, host="bench"):
            pass  # the schema, with its partitions' parent and the trigram index
        conn = await asyncpg.connect(url)
        await conn.execute("DROP INDEX log_lines_message_trgm")
        await conn.execute(
            "INSERT INTO container_cursors (host, container_id, container_name, stdout_n, "
            "stderr_n, tty_n, lines, bytes, updated_ns) VALUES ('bench', $1, 'grep', 0, 0, "
            "0, 0, 0, 0)",
            "g" * 64,
        )
        day = time.time_ns() // 86_400_000_000_000 * 86_400_000_000_000
        await conn.execute(
            f"CREATE TABLE log_lines_bench PARTITION OF log_lines FOR VALUES FROM ({day}) "
            f"TO ({day + 86_400_000_000_000})"
        )
        # Lines of real-looking text (md5 words); ten carry the rare word.
        await conn.execute(
            "INSERT INTO log_lines (host, source_id, stream, timestamp_ns, timestamp, message, "
            f"flags) SELECT 'bench', 1, 'stdout', {day} + i, 't', 'GET /api/' || md5(i::text) "
            "|| ' 200 ' || (i % 997) || 'ms user=' || md5((i * 7)::text) || "
            f"CASE WHEN i % ({rows} / 10) = 0 THEN ' zanzibar-7' ELSE '' END, 0 "
            f"FROM generate_series(1, {rows}) i"
        )
        await conn.execute("VACUUM ANALYZE log_lines")
        await conn.close()

    asyncio.run(make())
    env = {**os.environ, "LOGAGENT_DB_URL": url, "LOGAGENT_API_SOCKET": ""}

    def timed_grep() -> tuple[float, int]:
        started = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-m", "agent", "logs", "--grep", "zanzibar-7"],
            env=env, cwd=base.ROOT, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        return time.perf_counter() - started, len(out.splitlines())

    def sql_ms() -> float:
        plan = fetch(url, "EXPLAIN ANALYZE SELECT id FROM log_lines WHERE message ~ 'zanzibar-7'")
        return float(plan[-1][0].split()[2])

    without = [timed_grep() for _ in range(3)]
    sql_without = statistics.median(sql_ms() for _ in range(3))
    started = time.perf_counter()
    fetch(url, "CREATE INDEX log_lines_message_trgm ON log_lines USING gin (message gin_trgm_ops)")
    build = time.perf_counter() - started
    fetch(url, "ANALYZE log_lines")
    with_index = [timed_grep() for _ in range(3)]
    sql_with = statistics.median(sql_ms() for _ in range(3))
    assert {n for _, n in with_index + without} == {10}, (with_index, without)
    w, wo = statistics.median(t for t, _ in with_index), statistics.median(t for t, _ in without)
    base.report(f"logs --grep rare word, {rows:,} rows, trigram index vs none (s)",
                f"{w:.2f} (SQL {sql_with:.1f} ms)", f"no index {wo:.2f} (SQL {sql_without:.0f} ms)",
                w / wo, "< 1 s at 10M", w < 1.0 if rows >= 10_000_000 else None)  # fmt: skip
    size = fetch(url, "SELECT pg_size_pretty(pg_relation_size('log_lines_bench')), "
                 "pg_size_pretty(pg_relation_size(format('%I', indexname)::regclass)) "
                 "FROM pg_indexes WHERE tablename = 'log_lines_bench' "
                 "AND indexdef LIKE '%gin%'")  # fmt: skip
    print(f"   index build {build:.0f} s; table {size[0][0]}, trigram index {size[0][1]}")


# -- 4. follow latency ----------------------------------------------------------------------


def follow(tmp: Path, samples: int) -> None:
    print(f"4. logs -f: commit → printed, {samples} lines", flush=True)
    out: dict[str, list[float]] = {}
    for name, url in (("pg", new_db("follow")), ("sqlite", f"sqlite:///{tmp}/follow.db")):
        out[name] = asyncio.run(_follow(url, samples))
    pg, sq = statistics.median(out["pg"]), statistics.median(out["sqlite"])
    base.report("logs -f commit → printed, ms (median, p90)",
                f"PG NOTIFY {pg:.1f}, {statistics.quantiles(out['pg'], n=10)[-1]:.1f}",
                f"SQLite poll {sq:.1f}, {statistics.quantiles(out['sqlite'], n=10)[-1]:.1f}",
                pg / sq, "", None)  # fmt: skip


async def _follow(url: str, samples: int) -> list[float]:
    latencies: list[float] = []
    async with LogStorage(url, host="bench") as storage:
        source, cursor = Source("f" * 64, "follow"), Cursor()

        async def write(text: str) -> float:
            batch = LineBatch.of(source, [Line("stdout", time.time_ns(), "t", text, 0, 1)])
            cursor.advance(batch)
            await storage.write(batch)
            await storage.flush()
            return time.perf_counter()

        await write("first")
        env = {**os.environ, "LOGAGENT_DB_URL": url, "LOGAGENT_API_SOCKET": ""}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agent", "logs", "-f", "follow", env=env, cwd=base.ROOT,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None
        await proc.stdout.readline()  # "first": it is following now
        for i in range(samples):
            await asyncio.sleep(0.05 + (i % 7) * 0.03)
            committed = await write(f"line {i}")
            await proc.stdout.readline()
            latencies.append(1000 * (time.perf_counter() - committed))
        proc.terminate()
        await proc.wait()
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--fleet-lines", type=int, default=200_000)
    parser.add_argument("--grep-rows", type=int, default=1_000_000)
    parser.add_argument("--only", choices=["ingest", "fleet", "grep", "follow"])
    parser.add_argument(
        "--apart", action="store_true", help="ingest also with PostgreSQL on a CPU of its own"
    )
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="logagent-bench-pg-"))
    try:
        if args.only in (None, "ingest"):
            ingest(tmp, args.rounds, args.lines)
            if args.apart:
                ingest(tmp, args.rounds, args.lines, apart=True)
        if args.only in (None, "fleet"):
            fleet(tmp, 3, args.fleet_lines)
            fleet(tmp, 6, args.fleet_lines)
        if args.only in (None, "grep"):
            grep(tmp, args.grep_rows)
        if args.only in (None, "follow"):
            follow(tmp, 60)
    finally:
        for proc in base.agents:
            if proc.poll() is None:
                proc.kill()
        base.remove(*base.made)
        for db in DBS:
            pg_admin(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    print(f"\nlogagent PostgreSQL bench, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores\n")
    print("| figure | logagent | baseline | ratio | target | |")
    print("|---|---|---|---|---|---|")
    for row in base.rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
