"""Lines retention deletes before a forward destination acknowledged them: a gap of that
destination (`logagent gaps --forward NAME`), recorded in the deleting transaction — never
silence. (A batch in flight may still arrive: the gap says they may be missing.)

A destination's position (consumer_positions, `fwd:<name>:…`) names its own host's last row
sent; rows of that host after it, in what retention is about to delete (a batch of rows, or a
PostgreSQL day dropped whole by any agent of the fleet), were never sent. Of those, only the
rows the destination would have sent count (its min_level and selection, `Sends`): a line it
leaves out is not missing from it.

The positions are read in the deleting transaction, each time: a position read earlier could
be older (over-counting: harmless) but also newer (a position can go back, follow.rewound: a
restored store, a promoted standby), and a destination new since then would be missed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, cast

from tortoise.backends.base.client import BaseDBAsyncClient

from agent.storage.described import StoredContainer, described_containers
from agent.storage.follow import Position
from agent.storage.gaps import record_forward_gaps
from agent.storage.models import ConsumerPosition, ContainerCursor
from agent.storage.reader import LogFilter
from agent.storage.sends import Sends
from agent.storage.sql import Marks

PREFIX = "fwd:"  # forward/runner.py's consumer names
REASON = "lines removed by retention before the destination acknowledged them"


def consumer_name(destination: str, host_part: str) -> str:
    return f"{PREFIX}{destination}:{host_part}"


def destination_of(name: str) -> str:
    return name.removeprefix(PREFIX).split(":", 1)[0]


EVERYTHING = Sends()  # another host's destination, or one no longer in the config
UNUSED_S = 86_400.0  # a destination out of the config loses its position unused this long


Where = Callable[[Marks], tuple[str, list[Any]]]  # the rows to delete: SQL on `l`, values
Span = Sequence[Any]  # container id, name, rows, first and last timestamp


def level_clause(sends: Sends, m: Marks) -> tuple[str, list[Any]]:
    """Pure: the SQL (on `l`) keeping the rows at or above the destination's min_level, as the
    forwarder's read does (reader.LogFilter: `l.level >= N`, so a row without a level is not
    sent)."""
    clauses, values = LogFilter(min_level=sends.min_level).where(m)  # the forwarder's own
    return "".join(f" AND {c}" for c in clauses), values


def picked(spans: Sequence[Span], sends: Sends, known: Mapping[str, StoredContainer]) -> list[Span]:
    """Pure: the spans of the containers the destination picks. A container the store does
    not describe is kept: counting too much is safe, too little is not."""
    if sends.picks is None:
        return list(spans)
    return [s for s in spans if (c := known.get(str(s[0]))) is None or sends.picks(c)]


def _owned(found: Sequence[Any]) -> list[tuple[str, str, int]]:
    """Pure: (name, host, last row sent) of each forward position read as rows of (name,
    token) (typed as dicts by tortoise: rows that iterate values); a forwarder's position
    names its own host alone (anything else is not one: skipped)."""
    out: list[tuple[str, str, int]] = []
    for name, token in found:
        try:
            ids = Position.parse(str(token)).as_dict()
        except ValueError:
            continue
        if len(ids) == 1:
            ((owner, after),) = ids.items()
            out.append((str(name), owner, after))
    return out


async def _unconfigured(
    db: BaseDBAsyncClient, host: str, configured: Collection[str], before_ns: int | None = None
) -> list[tuple[str, int]]:
    """(position name, last row sent) of this host's destinations not in the config (that
    have not moved since `before_ns`, if given)."""
    m = Marks(db.capabilities.dialect)
    unmoved, values = (
        (f" AND updated_ns < {m()}", [before_ns]) if before_ns is not None else ("", [])
    )
    _, found = await db.execute_query(
        f"SELECT name, position FROM {ConsumerPosition._meta.db_table} "
        f"WHERE name LIKE '{PREFIX}%'{unmoved}",
        values,
    )
    return [
        (name, after)
        for name, owner, after in _owned(found)
        if owner == host and destination_of(name) not in configured
    ]


async def unconfigured(
    db: BaseDBAsyncClient, host: str, configured: Collection[str]
) -> list[tuple[str, int]]:
    """This host's positions of destinations not in the config: (destination, last row sent),
    by name. A destination renamed in the config is a new one, and starts anew."""
    return sorted(
        (destination_of(n), after) for n, after in await _unconfigured(db, host, configured)
    )


async def forget_unconfigured(
    db: BaseDBAsyncClient,
    host: str,
    configured: Collection[str],
    *,
    unused_s: float = UNUSED_S,
    now_ns: int | None = None,
) -> list[str]:
    """This host's destinations no longer in the config whose positions have not moved for
    `unused_s`: their positions deleted, their names returned (retention's pass asks, and
    says so). Kept, such a position never moves, and retention would record a gap of it
    with every batch it deletes, for as long as the agent runs; configured again, the
    destination starts anew, as its `start` says. (A run without it for a while, a config
    file missed, keeps its position: a day's gaps are what that costs.)"""
    before = (now_ns or time.time_ns()) - int(unused_s * 1e9)
    gone = [name for name, _ in await _unconfigured(db, host, configured, before)]
    if gone:
        await db.execute_query(
            f"DELETE FROM {ConsumerPosition._meta.db_table} "
            f"WHERE name IN ({Marks(db.capabilities.dialect).many(len(gone))})",
            gone,
        )
    return sorted({destination_of(n) for n in gone})


async def unsent_deleted(
    conn: BaseDBAsyncClient,
    table: str,
    where: Where,
    *,
    host: str,
    sends: Mapping[str, Sends],
    fleet: bool = False,
) -> None:
    """Record, for each forward destination of this `host` (of every host with `fleet`: a
    day's table holds the fleet's rows), the rows of `table` that `where` names (about to be
    deleted) which it has not sent and would have: per container, how many and when. `sends`
    says that of this host's configured destinations by name; another host's, or one no
    longer configured, is counted whole."""
    _, found = await conn.execute_query(
        f"SELECT name, position FROM {ConsumerPosition._meta.db_table} WHERE name LIKE '{PREFIX}%'"
    )
    for name, owner, after in _owned(found):
        if owner != host and not fleet:
            continue
        destination = destination_of(name)
        judged = sends.get(destination, EVERYTHING) if owner == host else EVERYTHING
        m = Marks(conn.capabilities.dialect)
        clause, values = where(m)
        rest = f"l.host = {m()} AND l.id > {m()}"
        level, at_least = level_clause(judged, m)
        _, found_spans = await conn.execute_query(
            f"SELECT c.container_id, c.container_name, COUNT(*), MIN(l.timestamp_ns), "
            f'MAX(l.timestamp_ns) FROM "{table}" l JOIN {ContainerCursor._meta.db_table} c '
            f"ON c.id = l.source_id WHERE {clause} AND {rest}{level} "
            "GROUP BY c.container_id, c.container_name",
            [*values, owner, after, *at_least],
        )
        spans = cast("list[Span]", found_spans)  # typed as dicts: rows that iterate values
        if spans and judged.picks is not None:
            known = await described_containers(conn, owner, [str(s[0]) for s in spans])
            spans = picked(spans, judged, known)
        if spans:
            await record_forward_gaps(
                conn,
                owner,
                destination,
                [[cid, cname, f"{n} {REASON}", lo, hi] for cid, cname, n, lo, hi in spans],
            )
