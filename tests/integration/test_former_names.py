"""A container's former names (storage/cursors.position_sql), on both backends: each kept
once, in a bounded list (no Docker: a store written through the writer)."""

from __future__ import annotations

import pytest

from agent.batch import LineBatch, Source
from agent.storage import LogStorage
from agent.storage.cursors import FORMER_NAMES_MAX
from tests.conftest import query

pytestmark = [pytest.mark.anyio]


async def test_a_container_renamed_in_a_loop_keeps_each_former_name_once_and_a_bounded_list(
    store_url: str,
) -> None:
    """Whoever runs a container may rename it in a loop (`docker rename a b; docker rename b
    a`): its row kept every step (a review: 2,000 renames, 122 KB in one row, read at every
    lookup of a name). Each former name is kept once, the newest of them up to a bound."""
    cid = "f" * 64
    async with LogStorage(store_url, host="h") as storage:
        names = ["a" * 60, "b" * 60] * 20 + [f"n{i:03d}" + "x" * 50 for i in range(150)]
        names += [f"s{i:03d}" for i in range(800)] + [f"l{i:03d}" + "y" * 250 for i in range(40)]
        for version, name in enumerate(names):
            await storage.write(LineBatch(Source(cid, name, version=version)))
            await storage.flush()
    ((current, former),) = query(
        store_url, f"SELECT container_name, former_names FROM container_cursors "
        f"WHERE container_id = '{cid}'"
    )  # fmt: skip
    kept = former.splitlines()
    assert current == "l039" + "y" * 250 and kept[-1] == "l038" + "y" * 250  # the newest kept
    assert "a" * 60 not in kept and "s000" not in kept  # ... and the oldest gone
    # Short names replaced by long ones do not make the list grow (a review: 81 times the
    # bound once each new name took one old one's place), and no name is cut.
    assert len(kept) == len(set(kept)) and len(former) <= FORMER_NAMES_MAX
    assert all(k[0] in "l" and len(k) == 254 for k in kept), kept[:2]


async def test_a_name_a_container_had_twice_names_it_once(store_url: str) -> None:
    """Renamed a → b → a, `a` is its name and a former one: it was named twice, and a view
    of it showed each line twice (a review's finding)."""
    from agent.storage.reader import LogFilter, older, resolve_containers

    cid = "e" * 64
    async with LogStorage(store_url, host="h") as storage:
        for version, name in enumerate(["a", "b", "a"]):
            batch = LineBatch(Source(cid, name, version=version))
            batch.append("stdout", 10**18 + version, "", f"line as {name}", 0, 5)
            await storage.write(batch)
            await storage.flush()
        ids = await resolve_containers(storage.db, ["a"])
        assert ids == [cid]
        rows = await older(storage.db, LogFilter(container_ids=tuple(ids)), before=None, limit=9)
    assert [r.message for r in rows] == ["line as a", "line as b", "line as a"]
