"""Retention's gaps of the forward destinations (agent/storage/forward_gaps.py): what it deletes
before a destination sent it is that destination's gap, but only what it would have sent (its
min_level, its selection), on either backend: a day dropped whole and rows trimmed one by one."""

from __future__ import annotations

import re
import time
from collections import Counter

import pytest

from agent.app import forward_sends
from agent.batch import Line, LineBatch, Source
from agent.forward.runner import consumer_name
from agent.forward.settings import parse_forward
from agent.level_names import DEBUG, ERROR, WARN
from agent.storage import LogStorage, consumers
from agent.storage.db import transaction
from agent.storage.follow import Position
from agent.storage.partitions import DAY_NS
from agent.storage.retention import Retention
from tests.conftest import execute, query

pytestmark = [pytest.mark.anyio]

NOW = (20_000 * DAY_NS) + 12 * 3600 * 1_000_000_000  # a fixed noon: the days are known
CUTOFF = NOW - 7 * DAY_NS
LEVELS = [None, DEBUG, WARN, ERROR]  # by turns: a quarter each
_GAP = re.compile(r"forward (?P<to>\S+): (?P<n>\d+) lines removed by retention")
SIEM = {  # warnings and above of the web containers
    "name": "siem",
    "kind": "ndjson",
    "path": "/nowhere/out.ndjson",
    "min_level": "warn",
    "names": ["web-*"],
}


async def write_leveled(storage: LogStorage, cid: str, name: str) -> None:
    """40 lines ten days old (PostgreSQL drops their day whole), 40 just before the cut-off
    (trimmed row by row), 20 now (kept); their levels by turns, none first."""
    stamps = (
        [NOW - 10 * DAY_NS + i for i in range(40)]
        + [CUTOFF - 40 + i for i in range(40)]
        + [NOW + i for i in range(20)]
    )
    lines = [Line("stdout", ts, str(ts), f"line {i}", 0, 7) for i, ts in enumerate(stamps)]
    batch = LineBatch.of(Source(cid, name), lines)
    batch.levels = [LEVELS[i % len(LEVELS)] for i in range(len(lines))]
    await storage.write(batch)


def missed(url: str) -> Counter[tuple[str, str]]:
    """Lines each destination missed, by destination and container name."""
    found: Counter[tuple[str, str]] = Counter()
    for reason, name in query(
        url, "SELECT reason, container_name FROM gaps WHERE kind = 'forward'"
    ):
        m = _GAP.match(reason)
        assert m is not None, reason
        found[(m["to"], name)] += int(m["n"])
    return found


async def test_only_lines_a_destination_would_send_are_its_gap(store_url: str) -> None:
    """`siem` sends warnings and above of the web containers: retention deleting what it did
    not send counts only those (a line without a level is not sent: its read says
    `level >= N`). `gone` is no longer configured: it counts every line, as ever."""
    (siem,) = parse_forward([SIEM], {})
    async with LogStorage(store_url, host="h", max_batch=50) as storage:
        await write_leveled(storage, "w" * 64, "web-1")
        await write_leveled(storage, "d" * 64, "db-1")
        await storage.flush()
        async with transaction() as conn:  # neither has sent anything
            for destination in ("siem", "gone"):
                await consumers.save(conn, consumer_name("h", destination), Position.of({"h": 0}))
        sends = forward_sends([siem])
        retention = Retention(
            storage, max_age_s=7 * 86400, max_bytes=0, batch_rows=7, forwarded=sends
        )
        report = await retention.run_once(NOW)
    assert report.by_age == 160
    assert query(store_url, "SELECT COUNT(*) FROM log_lines") == [(40,)]
    assert missed(store_url) == {
        ("siem", "web-1"): 40,  # of 80 deleted: the warnings and errors
        ("gone", "web-1"): 80,
        ("gone", "db-1"): 80,
    }


async def test_another_hosts_destination_is_counted_whole_when_a_day_goes(pg_url: str) -> None:
    """A day dropped whole holds the fleet's rows: another host's destination of the same
    name is judged by that host's config, which this agent does not know: every line of it
    not sent is its gap."""
    (siem,) = parse_forward([SIEM], {})
    async with LogStorage(pg_url, host="h2", max_batch=50) as other:
        await write_leveled(other, "v" * 64, "web-2")
        await other.flush()
    execute(pg_url, "UPDATE agent_state SET retention_s = 604800 WHERE host = 'h2'")  # 7 days
    async with LogStorage(pg_url, host="h", max_batch=50) as storage:
        await write_leveled(storage, "w" * 64, "web-1")
        await storage.flush()
        async with transaction() as conn:
            for host in ("h", "h2"):
                await consumers.save(conn, consumer_name(host, "siem"), Position.of({host: 0}))
        sends = forward_sends([siem])
        retention = Retention(storage, max_age_s=7 * 86400, max_bytes=0, forwarded=sends)
        await retention.run_once(NOW)
    assert missed(pg_url) == {
        ("siem", "web-1"): 40,  # this host's: its warnings and errors
        ("siem", "web-2"): 40,  # the other host's day, every line of it
    }


async def test_a_destination_taken_out_of_the_config_loses_its_position(store_url: str) -> None:
    """Its position would never move again, and retention would record a gap of it with
    every batch it deletes, for as long as the agent runs: retention's pass drops it once it
    has not moved for a day (`stale`); one out of the config for less (a start with a config
    file missed: `lately`) keeps it, as do the configured one and another host's."""
    (siem,) = parse_forward([SIEM], {})
    async with LogStorage(store_url, host="h") as storage:
        async with transaction() as conn:
            for host, destination in (("h", "siem"), ("h", "lately"), ("h", "stale"),
                                      ("other", "stale")):  # fmt: skip
                await consumers.save(conn, consumer_name(host, destination), Position.of({host: 3}))
        execute(store_url, "UPDATE consumer_positions SET updated_ns = 0")
        lately = consumer_name("h", "lately")  # [a-z0-9._:-] alone
        execute(store_url, f"UPDATE consumer_positions SET updated_ns = {time.time_ns()} "
                f"WHERE name = '{lately}'")  # fmt: skip
        retention = Retention(storage, max_age_s=7 * 86400, max_bytes=0,
                              forwarded=forward_sends([siem]))  # fmt: skip
        await retention.run_once(NOW)
        kept = query(store_url, "SELECT name FROM consumer_positions WHERE name LIKE 'fwd:%'")
    assert sorted(n for (n,) in kept) == sorted(
        consumer_name(h, d) for h, d in (("h", "siem"), ("h", "lately"), ("other", "stale"))
    )
