"""SQLite alone: CPU per row of the statements the writer could send (#19, bench/README.md).

`python bench/sqlite_statements.py [rows]` — no Docker, no agent: bare `sqlite3` on today's
log_lines table and indexes, WAL and NORMAL sync as the agent opens it. Two shapes: one
container in 5,000-row commits (a firehose), and 100 containers of 10 rows each in 1,000-row
commits (100 busy containers resting 100+ ms: each commit touches every container's index
leaf). Variants: one row per INSERT (before), 100 rows per INSERT (a statement journal),
INSERT OR FAIL (none), and the WAL checkpointed every 10,000 pages instead of 1,000.
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import sys
import tempfile
import time
from itertools import chain

DDL = """
CREATE TABLE "log_lines" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, "host" VARCHAR(255) NOT NULL,
    "source_id" INT NOT NULL, "stream" VARCHAR(8) NOT NULL, "timestamp_ns" BIGINT NOT NULL,
    "timestamp" VARCHAR(40) NOT NULL, "message" TEXT NOT NULL, "flags" SMALLINT NOT NULL,
    "level" SMALLINT);
CREATE INDEX "by_source" ON "log_lines" ("source_id", "timestamp_ns", "id");
CREATE INDEX "by_time" ON "log_lines" ("timestamp_ns");
CREATE INDEX "log_lines_level" ON "log_lines" (timestamp_ns, id) WHERE level >= 4;
"""
COLUMNS = "(host, source_id, stream, timestamp_ns, timestamp, message, flags, level)"
ONE = "(?, ?, ?, ?, ?, ?, ?, ?)"


def measure(n: int, shape: tuple[int, int, int], per_statement: int, verb: str, ckpt: int) -> float:
    """µs of CPU per row."""
    containers, group, per_commit = shape
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(os.path.join(tmp, "t.db"), isolation_level=None)
        db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(f"PRAGMA wal_autocheckpoint={ckpt}")
        db.executescript(DDL)
        base = 1_800_000_000_000_000_000
        rows = [
            ("host", (i // group) % containers, "stdout", base + i * 1000, "", "x" * 99, 0, None)
            for i in range(n)
        ]
        one = f"{verb} INTO log_lines {COLUMNS} VALUES {ONE}"
        many = f"{verb} INTO log_lines {COLUMNS} VALUES " + ", ".join([ONE] * per_statement)
        started = time.process_time()
        for at in range(0, n, per_commit):
            part = rows[at : at + per_commit]
            whole = len(part) - len(part) % per_statement
            db.execute("BEGIN")
            if per_statement > 1 and whole:
                flat = list(chain.from_iterable(part[:whole]))
                step = 8 * per_statement
                db.executemany(many, [flat[i : i + step] for i in range(0, len(flat), step)])
                part = part[whole:]
            db.executemany(one, part)
            db.execute("COMMIT")
        cpu = time.process_time() - started
        db.close()
    return 1e6 * cpu / n


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300_000
    variants = [
        ("1 row per INSERT (before)", 1, "INSERT", 1000),
        ("100 rows per INSERT", 100, "INSERT", 1000),
        ("100 rows per INSERT OR FAIL", 100, "INSERT OR FAIL", 1000),
        ("... and checkpoints every 10,000 pages", 100, "INSERT OR FAIL", 10000),
    ]
    shapes = [("1 container, 5,000-row commits", (1, 1, 5000)),
              ("100 containers x 10 rows, 1,000-row commits", (100, 10, 1000))]  # fmt: skip
    for label, shape in shapes:
        print(f"{n:,} rows, {label}: µs CPU per row, median of 3 (min-max)")
        for name, per_statement, verb, ckpt in variants:
            runs = [measure(n, shape, per_statement, verb, ckpt) for _ in range(3)]
            print(f"  {name:40s} {statistics.median(runs):5.2f} ({min(runs):.2f}-{max(runs):.2f})")


if __name__ == "__main__":
    main()
