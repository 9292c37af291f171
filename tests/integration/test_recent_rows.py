"""The rows just committed, held for this host's followers (storage/recent.py): what a
follower takes from memory is what it would read from the store, row for row, or nothing."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import anyio
import pytest

from agent.batch import Line, LineBatch, Source
from agent.storage import LogStorage
from agent.storage import store as store_module
from agent.storage.db import transaction
from agent.storage.follow import Position, Scanned, committed, scan
from agent.storage.reader import PAGE
from agent.storage.recent import MAX_COMMITS, scan_held

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


def plain(scanned: Scanned) -> list[tuple[int, int | None, str]]:
    return [
        (i, lv, m.decode() if isinstance(m, bytes) else m)
        for i, lv, m in zip(scanned.ids, scanned.levels, scanned.messages, strict=True)
    ]


async def test_what_a_follower_takes_from_memory_is_what_it_reads(store_url: str) -> None:
    rnd = random.Random(7)
    async with LogStorage(store_url, host="h") as storage:
        recent = storage.recent
        if recent is None:  # PostgreSQL's COPY does not say the ids it took: always read
            assert store_url.startswith("postgres")
            return
        recent.followed = True
        bounds = await write_commits(storage, rnd, 30)
        upto = await committed(storage.db)
        epochs = dict(upto.epochs)
        held = 0
        for at in sorted({0, *bounds, *rnd.sample(range(bounds[-1]), 40)}):
            after = Position.of({"h": at}, epochs)
            for limit in (1, 7, PAGE):
                got = scan_held(recent, "h", after, upto, limit=limit)
                read = await scan(storage.db, "h", after, upto, limit=limit)
                if got is not None:
                    held += 1
                    assert (plain(got[0]), got[1]) == (plain(read[0]), read[1])
        assert held > 30 and recent.taken > 0
        # A follower caught up to the commit before the last takes the last from memory.
        after = Position.of({"h": bounds[-2]}, epochs)
        assert scan_held(recent, "h", after, upto, limit=PAGE) is not None


async def test_a_follower_of_another_session_or_behind_what_is_held_reads_the_store(
    tmp_path: object,
) -> None:
    url = f"sqlite:///{tmp_path}/logs.db"
    async with LogStorage(url, host="h") as storage:
        recent = storage.recent
        assert recent is not None
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
        assert scan_held(recent, "h", Position(), upto, limit=PAGE) is None  # a new follower


async def test_nothing_is_held_until_someone_follows(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/logs.db"
    async with LogStorage(url, host="h") as storage:
        bounds = await write_commits(storage, random.Random(5), 5)
        upto = await committed(storage.db)
        after = Position.of({"h": bounds[-2]}, dict(upto.epochs))
        assert scan_held(storage.recent, "h", after, upto, limit=PAGE) is None


async def test_long_lines_are_held_by_their_size_not_their_count(tmp_path: object) -> None:
    """A review's finding: 20,000 rows of 16 KB lines held 320 MB. The newest commits are held
    up to `max_chars` of messages; a commit larger than that alone is not held."""
    url = f"sqlite:///{tmp_path}/logs.db"
    async with LogStorage(url, host="h") as storage:
        recent = storage.recent
        assert recent is not None
        recent.followed, recent.max_chars = True, 100_000
        src = Source("a" * 64, "app")
        for i in range(10):  # commits of 4 lines of 10,000 characters
            lines = [Line("stdout", T0 + 4 * i + j, "", "x" * 10_000) for j in range(4)]
            await storage.write(LineBatch.of(src, lines))
            await storage.flush()
        assert recent._rows == 8 and recent._chars == 80_000  # the last two commits
        await storage.write(LineBatch.of(src, [Line("stdout", T0 + 99, "", "y" * 200_000)]))
        await storage.flush()
        assert recent._rows == 0 and recent._chars == 0  # too large alone: nothing held


async def test_a_trickle_of_one_row_commits_holds_at_most_max_commits(tmp_path: object) -> None:
    """Each commit held is a few lists: a trickle (a row a commit) is held by its commits."""
    url = f"sqlite:///{tmp_path}/logs.db"
    async with LogStorage(url, host="h") as storage:
        recent = storage.recent
        assert recent is not None
        recent.followed = True
        src = Source("a" * 64, "app")
        for i in range(MAX_COMMITS + 20):
            await storage.write(LineBatch.of(src, [Line("stdout", T0 + i, "", f"r{i}")]))
            await storage.flush()
        assert len(recent._held) == MAX_COMMITS and recent._rows == MAX_COMMITS
        upto = await committed(storage.db)
        after = Position.of({"h": upto.as_dict()["h"] - 10}, dict(upto.epochs))
        got = scan_held(recent, "h", after, upto, limit=PAGE)
        assert got is not None and list(got[0].messages) == [f"r{i}" for i in range(510, 520)]


async def test_followers_read_on_their_own_connection_while_the_writer_holds_a_transaction(
    store_url: str,
) -> None:
    """On SQLite the followers' reads do not wait for a transaction of the writer's (tortoise
    holds the writer's connection for the whole of it): they see what was committed before
    it. The connection's thread ends with the store."""
    threads = set(threading.enumerate())
    async with LogStorage(store_url, host="h") as storage:
        reader = await storage.followers_db()
        if storage.dialect != "sqlite":
            assert reader is storage.db
            return
        assert reader is not storage.db and await storage.followers_db() is reader
        await write_commits(storage, random.Random(3), 2)
        before = await committed(storage.db)
        async with transaction() as conn:  # a writer's transaction, open
            await conn.execute_query("UPDATE host_commits SET at_ns = at_ns + 1")
            with anyio.fail_after(10):  # not behind the transaction: it would never end
                assert await committed(reader) == before
    with anyio.fail_after(10):
        while set(threading.enumerate()) - threads:  # noqa: ASYNC110 (a thread cannot notify)
            await anyio.sleep(0.01)


async def test_followers_share_the_writer_s_connection_where_their_own_would_not_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Not in WAL mode (a reader would hold the writer back), or when theirs cannot be
    opened (said), the followers read on the writer's connection; the store's own options
    are kept (its journal mode is not turned to WAL behind the operator's back)."""
    url = f"sqlite:///{tmp_path / 'delete.db'}?journal_mode=DELETE"
    async with LogStorage(url, host="h") as storage:
        assert await storage.followers_db() is storage.db
        _, mode = await storage.db.execute_query("PRAGMA journal_mode")
        assert str(mode[0][0]).lower() == "delete"

    def refused(db_url: str) -> object:
        raise OSError("no more file handles")

    monkeypatch.setattr(store_module, "followers_connection", refused)
    async with LogStorage(f"sqlite:///{tmp_path / 'wal.db'}", host="h") as storage:
        assert await storage.followers_db() is storage.db
        assert await storage.followers_db() is storage.db  # said once
    said = [r.getMessage() for r in caplog.records if "followers read" in r.getMessage()]
    assert len(said) == 1 and "no more file handles" in said[0], said
