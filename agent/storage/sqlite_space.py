"""SQLite's file: the bytes its rows use, and its freed pages given back (incremental vacuum),
so that retention by size has a measure and the file does not grow without bound."""

from __future__ import annotations

import time

from tortoise.backends.base.client import BaseDBAsyncClient

VACUUM_PAGES = 2000  # 8 MiB of 4 KiB pages per step


async def used_bytes(db: BaseDBAsyncClient) -> int:
    _, pages = await db.execute_query("PRAGMA page_count")
    _, free = await db.execute_query("PRAGMA freelist_count")
    _, size = await db.execute_query("PRAGMA page_size")
    used = int(pages[0][0]) - int(free[0][0])
    return used * int(size[0][0])


async def vacuum(db: BaseDBAsyncClient) -> float:
    """Give freed pages back to the file system, a few MiB per step; the longest step
    (the writer waits through it)."""
    longest = 0.0
    while True:
        _, free = await db.execute_query("PRAGMA freelist_count")
        if int(free[0][0]) == 0:
            return longest
        started = time.perf_counter()
        await db.execute_script(f"PRAGMA incremental_vacuum({VACUUM_PAGES})")
        longest = max(longest, time.perf_counter() - started)
        _, after = await db.execute_query("PRAGMA freelist_count")
        if int(after[0][0]) >= int(free[0][0]):
            return longest  # auto_vacuum is off for this file (created before it was set)
