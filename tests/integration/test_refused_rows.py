"""Rows the store can never take cost only their own container (both backends).

Anyone who runs a container can print a NUL byte (PostgreSQL's text cannot hold one), name
it or its compose project past the columns' 255 characters, or print, on a TTY, a stamp in
Docker's format past 2262 (no 64-bit nanosecond count holds it). Before, such a row failed
every commit it was in, retried for ever: every collector of the host waited behind it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from agent.batch import FLAG_REPLACED, LineBatch, Source
from agent.storage import LogStorage
from tests.conftest import Containers, agent_settings, query, rows_in, running_agent
from tests.integration.test_fleet_follow import progressing

pytestmark = [pytest.mark.anyio]
T0 = 1_764_000_000_000_000_000


def lines(source: Source, texts: list[str], first_ns: int = T0) -> LineBatch:
    batch = LineBatch(source)
    for i, text in enumerate(texts):
        batch.append("stdout", first_ns + i, "", text, 0, len(text))
    batch.position = {"stdout": (first_ns + len(texts) - 1, 1)}
    return batch


async def test_a_refused_batch_is_set_aside_as_a_gap_and_the_rest_is_stored(
    store_url: str,
) -> None:
    good, nul, huge = Source("a" * 64, "good"), Source("b" * 64, "nul"), Source("c" * 64, "huge")
    long_name = Source("d" * 64, "n" * 300, project="p" * 300)
    async with LogStorage(store_url, host="h", retry_delay=0.05) as storage:
        await storage.write(lines(good, ["one", "two"]))
        await storage.write(lines(nul, ["a\x00b", "fine"]))
        await storage.write(lines(huge, ["too late"], first_ns=2**64))  # no int64 holds it
        await storage.write(lines(long_name, ["named"]))
        await storage.write(lines(good, ["three"], first_ns=T0 + 10))
        await storage.flush()
        assert storage.writer.stats.refused_rows == 1
    assert [m for _s, _t, m in rows_in(store_url, good.container_id)] == ["one", "two", "three"]
    expected = "a\x00b" if store_url.startswith("sqlite") else "a\ufffdb"  # SQLite holds a NUL
    assert [m for _s, _t, m in rows_in(store_url, nul.container_id)] == [expected, "fine"]
    if not store_url.startswith("sqlite"):
        flags = query(store_url, "SELECT flags FROM log_lines WHERE message = 'a\ufffdb'")
        assert flags == [(FLAG_REPLACED,)]
    assert rows_in(store_url, huge.container_id) == []
    ((reason,),) = query(store_url, f"SELECT reason FROM gaps WHERE container_id = '{'c' * 64}'")
    assert reason.startswith("1 lines the store refuses: ")
    assert "out of the store's range" in reason or "bigint out of range" in reason
    (name, project), *_ = query(
        store_url,
        f"SELECT container_name, project FROM container_cursors WHERE container_id = '{'d' * 64}'",
    )
    assert (name, project) == ("n" * 255, "p" * 255)
    assert [m for _s, _t, m in rows_in(store_url, long_name.container_id)] == ["named"]
    # A position out of range is not stored either: the gap alone is.
    (ts,) = query(
        store_url, f"SELECT stdout_ts FROM container_cursors WHERE container_id = '{'c' * 64}'"
    )[0]
    assert ts is None


@pytest.mark.docker
async def test_hostile_containers_cannot_stop_a_neighbour_being_collected(
    tmp_path: Path, containers: Containers, store_url: str
) -> None:
    settings = replace(agent_settings(tmp_path), db_url=store_url)
    async with running_agent(settings):
        nul = containers.run("nul", "printf 'before\\n'; printf 'a\\000b\\n'; printf 'after\\n'")
        stamp = containers.run(
            "stamp", "printf 'x9999-12-31T23:59:59.999999999Z y\\n'; echo done", tty=True
        )
        named = containers.run(
            "n" * 200, "echo named", "--label", "com.docker.compose.project=" + "p" * 300
        )
        neighbour = containers.run("neighbour", "seq 1 20000")
        await progressing(lambda: len(rows_in(store_url, neighbour)), 20_000)
        await progressing(lambda: len(rows_in(store_url, nul)), 3)
        await progressing(lambda: len(rows_in(store_url, stamp)), 2)
        await progressing(lambda: len(rows_in(store_url, named)), 1)
    # The decoder stores a NUL as U+FFFD on either store (docker/frames.py)
    assert [m for _s, _t, m in rows_in(store_url, nul)] == ["before", "a\ufffdb", "after"]
    assert [m for _s, _t, m in rows_in(store_url, stamp)] == [
        "x9999-12-31T23:59:59.999999999Z y",
        "done",
    ]
    assert [m for _s, _t, m in rows_in(store_url, neighbour)] == [str(i) for i in range(1, 20001)]
    (project,) = query(
        store_url, f"SELECT project FROM container_cursors WHERE container_id = '{named}'"
    )[0]
    assert project == "p" * 255
