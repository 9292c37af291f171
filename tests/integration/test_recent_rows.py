"""The rows just committed, held for this host's followers (storage/recent.py): what a
follower takes from memory is what it would read from the store, row for row, or nothing."""

from __future__ import annotations

import random

import pytest

from agent.batch import Line, LineBatch, Source
from agent.storage import LogStorage
from agent.storage.follow import Position, committed, newer, scan
from agent.storage.reader import PAGE, LogFilter
from agent.storage.recent import newer_held, scan_held

pytestmark = [pytest.mark.anyio]
T0 = 1_700_000_000_000_000_000
WORDS = ["GET /", "ERROR x", "naïve ☃", "", "a\nb", "level=warn msg=y", "\u202eevil"]


async def write_commits(storage: LogStorage, rnd: random.Random, commits: int) -> list[int]:
    """`commits` commits of 1-40 lines from three containers, levels mixed; the host's last
    committed id after each."""
    sources = [Source(c * 64, f"app-{c}") for c in "abc"]
    bounds: list[int] = []
    t = T0
    for _ in range(commits):
        for _ in range(rnd.randint(1, 3)):
            lines = []
            for _ in range(rnd.randint(1, 40)):
                t += rnd.randint(0, 3)
                lines.append(Line(rnd.choice(["stdout", "stderr"]), t, "", rnd.choice(WORDS)))
            batch = LineBatch.of(rnd.choice(sources), lines)
            batch.levels = [rnd.choice([None, 2, 4, 5]) for _ in lines]
            await storage.write(batch)
        await storage.flush()  # a commit (or two: the writer's own grouping)
        bounds.append((await committed(storage.db)).as_dict()["h"])
    return bounds


def plain(scanned: list[tuple[int, int | None, str | bytes]]) -> list[tuple[int, int | None, str]]:
    return [(i, lv, m.decode() if isinstance(m, bytes) else m) for i, lv, m in scanned]


async def test_what_a_follower_takes_from_memory_is_what_it_reads(store_url: str) -> None:
    rnd = random.Random(7)
    async with LogStorage(store_url, host="h") as storage:
        recent = storage.recent
        recent.followed = True
        bounds = await write_commits(storage, rnd, 30)
        upto = await committed(storage.db)
        epochs = dict(upto.epochs)
        mine = Position(tuple((h, at) for h, at in upto.ids if h == "h"))
        mine = Position(mine.ids, upto.epochs)
        held = 0
        for at in sorted({0, *bounds, *rnd.sample(range(bounds[-1]), 40)}):
            after = Position.of({"h": at}, epochs)
            for limit in (1, 7, PAGE):
                got = scan_held(recent, "h", after, upto, limit=limit)
                read = await scan(storage.db, "h", after, upto, limit=limit)
                if got is not None:
                    held += 1
                    assert (plain(got[0]), got[1]) == (plain(read[0]), read[1])
                for level in (None, 4):
                    flt = LogFilter(host="h", min_level=level)
                    rows = newer_held(recent, "h", level, after, mine, limit=limit)
                    stored = await newer(storage.db, flt, after, mine, limit=limit)
                    if rows is not None:
                        held += 1
                        assert rows == stored
        if store_url.startswith("sqlite"):
            assert held > 100 and recent.taken > 0
            # A follower caught up to the commit before the last takes the last from memory.
            after = Position.of({"h": bounds[-2]}, epochs)
            assert scan_held(recent, "h", after, upto, limit=PAGE) is not None
        else:  # PostgreSQL's COPY does not say the ids it took: always read
            assert held == 0


async def test_a_follower_of_another_session_or_behind_what_is_held_reads_the_store(
    tmp_path: object,
) -> None:
    url = f"sqlite:///{tmp_path}/logs.db"
    async with LogStorage(url, host="h") as storage:
        recent = storage.recent
        recent.followed = True
        recent.max_rows = 50
        bounds = await write_commits(storage, random.Random(3), 20)
        upto = await committed(storage.db)
        epochs = dict(upto.epochs)
        last = Position.of({"h": bounds[-2]}, epochs)
        assert scan_held(recent, "h", last, upto, limit=PAGE) is not None
        other = Position.of({"h": bounds[-2]}, {"h": epochs["h"] + 1})
        assert scan_held(recent, "h", other, upto, limit=PAGE) is None
        assert scan_held(recent, "h", Position.of({"h": bounds[-2]}), upto, limit=PAGE) is None
        behind = Position.of({"h": 0}, epochs)  # let go: more than 50 rows ago
        assert scan_held(recent, "h", behind, upto, limit=PAGE) is None
        assert newer_held(recent, "h", None, behind, upto, limit=PAGE) is None
        assert scan_held(recent, "h", Position(), upto, limit=PAGE) is None  # a new follower


async def test_nothing_is_held_until_someone_follows(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/logs.db"
    async with LogStorage(url, host="h") as storage:
        bounds = await write_commits(storage, random.Random(5), 5)
        upto = await committed(storage.db)
        after = Position.of({"h": bounds[-2]}, dict(upto.epochs))
        assert scan_held(storage.recent, "h", after, upto, limit=PAGE) is None
