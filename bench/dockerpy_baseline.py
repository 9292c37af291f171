"""The baseline a Python user would write by hand: docker-py follows a container's logs and
writes each line into SQLite with executemany batches.

docker-py cannot keep stdout and stderr apart on this call (its demux helper fails on the
chunked body), so every line is stored with one stream for both.

Usage: python bench/dockerpy_baseline.py CONTAINER_ID DB_PATH
Prints the wall time (time.time()) at which the last line was committed.
"""

from __future__ import annotations

import sqlite3
import sys
import time

import docker

BATCH = 5000


def main() -> None:
    cid, db_path = sys.argv[1], sys.argv[2]
    db = sqlite3.connect(db_path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE IF NOT EXISTS lines (ts TEXT, message TEXT)")
    container = docker.from_env().containers.get(cid)
    print("ready", flush=True)
    batch: list[tuple[str, str]] = []
    pending = b""
    for chunk in container.logs(stream=True, follow=True, timestamps=True):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            ts, _, message = line.partition(b" ")
            batch.append((ts.decode(), message.decode("utf-8", "replace")))
        if len(batch) >= BATCH:
            db.executemany("INSERT INTO lines VALUES (?, ?)", batch)
            db.commit()
            batch.clear()
    if batch:
        db.executemany("INSERT INTO lines VALUES (?, ?)", batch)
        db.commit()
    print(time.time(), flush=True)


if __name__ == "__main__":
    main()
