"""SQLite's search: `logs --grep` of a rare word with and without the search index, and what
building the index costs a row (#26).

`python bench/search.py [rows]` (default 2,000,000) — no Docker: the agent's own store
(LogStorage) is filled with 100-byte lines, one in 100,000 holding a rare word; then the
same `logagent logs --grep` runs as a process (median of 3) before the index is built and
after, beside the command's own start-up (the same over 10 rows), the index's build time
(CPU µs a row, in process) and its size on disk.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.batch import LineBatch, Source  # noqa: E402
from agent.storage import LogStorage, search_index  # noqa: E402
from agent.storage.search_index import SearchIndexer  # noqa: E402

RARE = "zebracorn"


async def fill(url: str, rows: int) -> None:
    src = Source("b" * 64, "bench")
    start = time.time_ns() - 86400 * 10**9
    async with LogStorage(url, host="bench") as storage:
        for at in range(0, rows, 5_000):
            batch = LineBatch(src)
            for i in range(at, min(at + 5_000, rows)):
                word = RARE if i % 100_000 == 50_000 else "request"
                text = f"2026-12-07 INFO {word} handled path=/api/v1/items/{i} took 3ms ".ljust(
                    100, "x"
                )
                batch.append("stdout", start + i * 1_000_000, "", text, 0, 100)
            await storage.write(batch)
        await storage.flush()


async def build(url: str) -> tuple[float, int]:
    """CPU seconds to index every row, and how many."""
    async with LogStorage(url, host="bench") as storage:
        await search_index.prepare(storage.db, on=True)
        indexer = SearchIndexer(storage.db)
        started = time.process_time()
        while await indexer.step():
            pass
        return time.process_time() - started, indexer.indexed


def grep(url: str) -> tuple[float, int]:
    env = {**os.environ, "LOGAGENT_DB_URL": url}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "agent", "logs", "--grep", RARE], env=env, cwd=ROOT,
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return time.perf_counter() - started, len(done.stdout.splitlines())


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000_000
    with tempfile.TemporaryDirectory(prefix="logagent-bench-search-") as tmp:
        path = Path(tmp) / "logs.db"
        url = f"sqlite:///{path}"
        anyio.run(fill, f"sqlite:///{Path(tmp) / 'small.db'}", 10)
        startup = statistics.median(
            grep(f"sqlite:///{Path(tmp) / 'small.db'}")[0] for _ in range(3)
        )
        anyio.run(fill, url, rows)
        size = path.stat().st_size
        scans = [grep(url) for _ in range(3)]
        cpu, indexed = anyio.run(build, url)
        indexed_size = path.stat().st_size
        found = [grep(url) for _ in range(3)]
    assert {n for _, n in scans} == {n for _, n in found}, "the index changed the answer"
    before = statistics.median(t for t, _ in scans)
    after = statistics.median(t for t, _ in found)
    print(f"rows {rows:,}, rare word in {scans[0][1]} of them; the command's own start-up "
          f"(the same grep over 10 rows) {startup:.2f} s")  # fmt: skip
    print(f"logs --grep {RARE}: scan {before:.2f} s, through the index {after:.2f} s "
          f"({before / after:.1f}x), target < 1 s: {'PASS' if after < 1 else 'MISS'}")  # fmt: skip
    print(f"index build: {cpu / indexed * 1e6:.2f} µs CPU a row ({indexed:,} rows)")
    print(f"store {size / 1e6:.0f} MB, with the index {indexed_size / 1e6:.0f} MB "
          f"(+{(indexed_size - size) / size:.0%})")  # fmt: skip


if __name__ == "__main__":
    main()
