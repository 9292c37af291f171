"""SQLite alone: CPU per inserted row for the log_lines schema and the variants weighed for it.

`python bench/sqlite_rows.py [rows]` — no Docker, no agent: bare `sqlite3`, WAL, NORMAL sync,
100-byte messages; one container in 5,000-row transactions (a live ingest), then 100
containers interleaved in 400-row transactions (100 busy containers: each commit touches
every container's index leaf). It bounds what any store-side change can buy (bench/README.md,
"Second pass", "Fourth pass").
"""

from __future__ import annotations

import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable

MSG = "x" * 99
CID, NAME, HOST = "a" * 64, "logagent-bench-1234-agent0", "e3b0c44298fc"
TS_TEXT = "2026-11-26T14:00:00.123456789Z"
FULL = (
    "CREATE TABLE l (id INTEGER PRIMARY KEY, host TEXT, container_id TEXT, container_name TEXT,"
    " stream TEXT, timestamp_ns INT, timestamp TEXT, message TEXT, flags INT)"
)
FULL_INSERT = (
    "INSERT INTO l (host, container_id, container_name, stream, timestamp_ns, timestamp, "
    "message, flags) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
SOURCE = (  # log_lines since the integer source key: Docker's text kept
    "CREATE TABLE l (id INTEGER PRIMARY KEY, host TEXT, source INT, stream TEXT, "
    "timestamp_ns INT, timestamp TEXT, message TEXT, flags INT)"
)
SOURCE_INSERT = (
    "INSERT INTO l (host, source, stream, timestamp_ns, timestamp, message, flags) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
SLIM = (
    "CREATE TABLE l (id INTEGER PRIMARY KEY, host TEXT, source INT, stream INT, "
    "timestamp_ns INT, message TEXT, flags INT)"
)
SLIM_INSERT = (
    "INSERT INTO l (host, source, stream, timestamp_ns, message, flags) VALUES (?, ?, ?, ?, ?, ?)"
)
BY_CID = "CREATE INDEX i1 ON l (container_id, timestamp_ns, id)"
BY_SOURCE = "CREATE INDEX i1 ON l (source, timestamp_ns, id)"
BY_TS = "CREATE INDEX i2 ON l (timestamp_ns)"


CIDS = [f"{i * 7919:064x}" for i in range(100)]


def full_row(ts: int, c: int) -> tuple[object, ...]:
    return (HOST, CIDS[c], f"{NAME}-{c}", "stdout", ts, TS_TEXT, MSG, 0)


def source_row(ts: int, c: int) -> tuple[object, ...]:
    return (HOST, c, "stdout", ts, TS_TEXT, MSG, 0)


def slim_row(ts: int, c: int) -> tuple[object, ...]:
    return (HOST, c, 1, ts, MSG, 0)


def measure(
    ddl: list[str],
    insert: str,
    row: Callable[[int, int], tuple[object, ...]],
    n: int,
    containers: int,
    per_commit: int,
) -> tuple[float, float]:
    """(µs of CPU per row, MB on disk)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "t.db")
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        for statement in ddl:
            db.execute(statement)
        base = 1_764_000_000_000_000_000
        rows = [row(base + i * 5000, i % containers) for i in range(n)]
        started = time.process_time()
        for k in range(0, n, per_commit):
            db.execute("BEGIN")
            db.executemany(insert, rows[k : k + per_commit])
            db.execute("COMMIT")
        cpu = time.process_time() - started
        size = sum(os.path.getsize(path + s) for s in ("", "-wal") if os.path.exists(path + s))
        db.close()
    return 1e6 * cpu / n, size / 2**20


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    cases = [
        (
            "log_lines today: source id, 2 idx",
            [SOURCE, BY_SOURCE, BY_TS],
            SOURCE_INSERT,
            source_row,
        ),
        ("0.1: 64-char id and name, 2 idx", [FULL, BY_CID, BY_TS], FULL_INSERT, full_row),
        ("0.1, no index", [FULL], FULL_INSERT, full_row),
        ("source id, no ts text", [SLIM, BY_SOURCE, BY_TS], SLIM_INSERT, slim_row),
        ("source id, no ts text, no index", [SLIM], SLIM_INSERT, slim_row),
    ]
    for containers, per_commit in ((1, 5000), (100, 400)):
        print(f"{n:,} rows, {containers} container(s), {per_commit} rows a commit")
        print("variant | µs CPU per row (median of 3) | MB")
        for label, ddl, insert, row in cases:
            runs = sorted(measure(ddl, insert, row, n, containers, per_commit) for _ in range(3))
            us, mb = runs[1]
            print(f"{label:34s} | {us:5.2f} | {mb:4.0f}")


if __name__ == "__main__":
    main()
