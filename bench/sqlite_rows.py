"""SQLite alone: CPU per inserted row for the log_lines schema and the variants weighed for it.

`python bench/sqlite_rows.py [rows]` — no Docker, no agent: bare `sqlite3`, WAL, NORMAL sync,
5,000-row transactions of 100-byte messages, as the agent's writer commits them. It bounds
what any store-side change can buy (bench/README.md, "Second pass").
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


def full_row(ts: int) -> tuple[object, ...]:
    return (HOST, CID, NAME, "stdout", ts, TS_TEXT, MSG, 0)


def slim_row(ts: int) -> tuple[object, ...]:
    return (HOST, 7, 1, ts, MSG, 0)


def measure(
    ddl: list[str], insert: str, row: Callable[[int], tuple[object, ...]], n: int
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
        rows = [row(base + i * 5000) for i in range(n)]
        started = time.process_time()
        for k in range(0, n, 5000):
            db.execute("BEGIN")
            db.executemany(insert, rows[k : k + 5000])
            db.execute("COMMIT")
        cpu = time.process_time() - started
        size = sum(os.path.getsize(path + s) for s in ("", "-wal") if os.path.exists(path + s))
        db.close()
    return 1e6 * cpu / n, size / 2**20


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    cases = [
        ("log_lines today: 2 indexes", [FULL, BY_CID, BY_TS], FULL_INSERT, full_row),
        ("log_lines today, no index", [FULL], FULL_INSERT, full_row),
        ("integer source key, no ts text", [SLIM, BY_SOURCE, BY_TS], SLIM_INSERT, slim_row),
        ("integer source key, no index", [SLIM], SLIM_INSERT, slim_row),
    ]
    print(f"{n:,} rows | µs CPU per row | MB")
    for label, ddl, insert, row in cases:
        us, mb = measure(ddl, insert, row, n)
        print(f"{label:34s} | {us:5.2f} | {mb:4.0f}")


if __name__ == "__main__":
    main()
