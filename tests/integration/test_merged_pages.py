"""storage/merged.py: several containers' rows in time order, a step at a time, each row read
once (a review: a service's search read every container's next page again at each step)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from agent.batch import LineBatch, Source
from agent.storage import LogStorage, merged
from agent.storage.merged import MergedPages
from agent.storage.reader import LogFilter, StoredRow, older
from tests.conftest import db_url

pytestmark = [pytest.mark.anyio]


async def fill(storage: LogStorage, containers: int, rows: int) -> list[str]:
    """Rows of each container at random times, many equal across containers."""
    rng = random.Random(9)
    cids = [f"{c:064x}" for c in range(1, containers + 1)]
    for cid in cids:
        batch = LineBatch(Source(cid, f"svc-{cid[-2:]}"))
        for ts in sorted(rng.randrange(10**9, 10**9 + rows // 2) for _ in range(rows)):
            batch.append("stdout", ts, "", f"{cid[-2:]} at {ts}", 0, 10)
        await storage.write(batch)
    await storage.flush()
    return cids


async def test_steps_give_every_row_once_in_order_and_read_each_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    read = 0
    real_older = older

    async def counted(*args: object, **kw: object) -> list[StoredRow]:
        nonlocal read
        page = await real_older(*args, **kw)  # type: ignore[arg-type]
        read += len(page)
        return page

    monkeypatch.setattr(merged, "older", counted)
    async with LogStorage(db_url(tmp_path), host="h") as storage:
        cids = await fill(storage, 12, 1_500)
        flt = LogFilter(container_ids=tuple(cids))
        every = sorted(await older(storage.db, LogFilter(), before=None, limit=10**6),
                       key=lambda r: (r.timestamp_ns, r.id))  # fmt: skip
        rng = random.Random(4)
        for start in (None, (every[9_000].timestamp_ns, every[9_000].id)):
            read = 0
            pages = MergedPages(storage.db, flt, start, backward=True, page=2_000)
            got: list[StoredRow] = []
            while step := await pages.take(rng.choice([1, 7, 200, 2_000])):
                got += step
            want = [r for r in reversed(every)
                    if start is None or (r.timestamp_ns, r.id) < start]  # fmt: skip
            assert got == want
            assert read <= len(want) + 12 * 2_000  # each row read once, a page ahead at most
        read = 0  # one container, as many rows as a page: one read, not one more (a review)
        one = MergedPages(storage.db, LogFilter(container_ids=(cids[0],) * 2), None,
                          backward=True, page=200)  # fmt: skip
        assert len(await one.take(200)) == 200 and read == 200
        after = (every[3_000].timestamp_ns, every[3_000].id)
        forward = MergedPages(storage.db, flt, after, backward=False, page=500)
        got = []
        while step := await forward.take(rng.choice([3, 500])):
            got += step
        assert got == every[3_001:]
