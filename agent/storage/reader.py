"""The read side: what the CLI shows, straight from the store (never from the daemon)."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from itertools import islice
from typing import Any, NamedTuple

from tortoise.backends.base.client import BaseDBAsyncClient

from agent.grep import bounded, matcher, program_size
from agent.storage.db import open_db
from agent.storage.gaps import FORWARD_GAP
from agent.storage.models import AgentState, ContainerCursor, Gap, LogLine
from agent.storage.postgres import INVALID_REGULAR_EXPRESSION, sqlstate
from agent.storage.sql import Marks
from agent.timestamps import format_timestamp
from agent.where import ESCAPE


def open_store(
    db_url: str, *, snapshot_ok: bool = False, statement_timeout_s: float | None = None
) -> AbstractAsyncContextManager[BaseDBAsyncClient]:
    """A read connection of its own (SQLite WAL: readers never block the agent's writer);
    the read side never creates or upgrades a store. `snapshot_ok`: a one-shot reader may
    read a SQLite file as it is when nothing else can (a full disk, no agent: see open_db);
    a long-lived one (the viewer, `logs -f`) may not, as it would never see new lines.
    `statement_timeout_s`: PostgreSQL cancels a statement that runs longer (the viewer's:
    whoever reaches it types its searches)."""
    return open_db(
        db_url, create=False, snapshot_ok=snapshot_ok, statement_timeout_s=statement_timeout_s
    )


class StoredRow(NamedTuple):
    """One stored line with its container, as the read side shows it."""

    id: int
    host: str
    container_id: str
    container_name: str
    stream: str
    timestamp_ns: int
    timestamp: str  # as stored: "" for Docker's own spelling (see `rfc3339`)
    message: str
    flags: int
    level: int | None = None

    @property
    def rfc3339(self) -> str:
        """Docker's timestamp text, as `docker logs -t` shows it: derived from the
        nanoseconds when the row keeps none (only where a stamp is shown: `logs` without
        `-t` pays nothing for it)."""
        return self.timestamp or format_timestamp(self.timestamp_ns)


# The lines (l) with their container's id and name from its cursor row (c), in StoredRow's
# order.
_COLUMNS = (
    "l.id, l.host, c.container_id, c.container_name, l.stream, l.timestamp_ns, l.timestamp, "
    "l.message, l.flags, l.level"
)
_FROM = f"{LogLine._meta.db_table} l JOIN {ContainerCursor._meta.db_table} c ON c.id = l.source_id"
PAGE = 5000


@dataclass(frozen=True)
class LogFilter:
    """What `logagent logs` selects; empty fields select everything."""

    container_ids: tuple[str, ...] = ()
    since_ns: int | None = None
    until_ns: int | None = None
    streams: tuple[str, ...] = ()
    host: str | None = None
    pattern: str | None = None  # PostgreSQL only: a regex (its own syntax) the line matches
    min_level: int | None = None  # this level and above (agent/shaping/levels.py)
    # Text every line holds (the names of a `--where`'s fields: agent/where.py): a first cut
    # in SQL, before the conditions themselves are judged on the rows read.
    contains: tuple[str, ...] = ()
    # SQLite's search index (storage/search_index.py): an FTS5 query naming every row a
    # --grep can match, the last row id it has indexed (the rows after: all read), and
    # whether its answer is few enough rows to read by id (else the rows are walked in
    # order and each checked against it).
    indexed: tuple[str, int, bool] | None = None

    def where(self, marks: Marks) -> tuple[list[str], list[Any]]:
        clauses: list[str] = []
        values: list[Any] = []
        if self.pattern is not None:  # the trigram index finds the rows (schema.py)
            clauses.append(f"l.message ~ {marks()}")
            values.append(self.pattern)
        if self.container_ids:
            # By source id, through the cursors table: the planner then walks the lines'
            # (source_id, timestamp_ns, id) index, not every newer line of other containers.
            clauses.append(
                f"l.source_id IN (SELECT id FROM {ContainerCursor._meta.db_table} "
                f"WHERE container_id IN ({marks.many(len(self.container_ids))}))"
            )
            values += self.container_ids
        if self.since_ns is not None:
            clauses.append(f"l.timestamp_ns >= {marks()}")
            values.append(self.since_ns)
        if self.until_ns is not None:
            clauses.append(f"l.timestamp_ns < {marks()}")
            values.append(self.until_ns)
        if self.streams:
            clauses.append(f"l.stream IN ({marks.many(len(self.streams))})")
            values += self.streams
        if self.host:
            clauses.append(f"l.host = {marks()}")
            values.append(self.host)
        if self.indexed is not None:
            query, upto, few = self.indexed
            named = f"SELECT rowid FROM log_search WHERE log_search MATCH {marks()}"
            if few:  # the planner reads these rows by id, then sorts them
                tail = f"SELECT id FROM {LogLine._meta.db_table} WHERE id > {int(upto)}"
                clauses.append(f"l.id IN ({named} UNION ALL {tail})")
            else:
                clauses.append(f"(l.id > {int(upto)} OR l.id IN ({named}))")
            values.append(query)
        if self.contains:  # as where.may_hold: every name's text, or an escape
            found = "instr(l.message, {}) > 0" if marks.sqlite else "strpos(l.message, {}) > 0"
            every = " AND ".join(found.format(marks()) for _ in self.contains)
            clauses.append(f"(({every}) OR {found.format(marks())})")
            values += [*self.contains, ESCAPE]
        if self.min_level is not None:
            level = int(self.min_level)  # a literal: the partial index on level >= 4 is
            clauses.append(f"l.level >= {level}")  # only chosen when the query says so
            if level > 4:
                clauses.append("l.level >= 4")
        return clauses, values


async def check_pattern(db: BaseDBAsyncClient, pattern: str, what: str = "--grep") -> None:
    """ValueError, in a line, for a pattern PostgreSQL's regex engine refuses."""
    try:
        await db.execute_query("SELECT '' ~ $1", [pattern])
    except Exception as exc:
        if sqlstate(exc) != INVALID_REGULAR_EXPRESSION:
            raise
        raise ValueError(f"{what} {pattern!r}: {exc} (PostgreSQL's regex syntax)") from None


async def where_matched(
    db: BaseDBAsyncClient, pattern: str | None, what: str = "--grep", max_program: int | None = None
) -> tuple[str | None, Callable[[str], bool] | None]:
    """Where a pattern is matched: PostgreSQL in SQL (`LogFilter.pattern`: its regex syntax,
    the trigram index), SQLite here with RE2 (the matcher, for every row read). ValueError
    for a pattern the engine refuses, or (`max_program`: a viewer's search) one that RE2
    measures as costlier than that."""
    if pattern is None:
        return None, None
    if _dialect(db) == "postgres":
        if max_program is not None:  # as RE2 counts it: PostgreSQL's cost grows with it too
            bounded(pattern, what, program_size(pattern), max_program)
        await check_pattern(db, pattern, what)
        return pattern, None
    return None, matcher(pattern, what, max_program)


def _dialect(db: BaseDBAsyncClient) -> str:
    return str(db.capabilities.dialect)


async def resolve_containers(db: BaseDBAsyncClient, refs: list[str]) -> list[str]:
    """Names, ids or unique id prefixes → full ids, from every container ever stored."""
    _, rows = await db.execute_query(
        "SELECT DISTINCT container_id, container_name, former_names "
        f"FROM {ContainerCursor._meta.db_table}"
    )
    known = [(str(r[0]), str(r[1])) for r in rows]
    known += [  # the names it had before a `docker rename`
        (str(r[0]), old) for r in rows if r[2] for old in str(r[2]).split("\n") if old
    ]
    ids: list[str] = []
    for ref in refs:
        exact = [cid for cid, name in known if ref in (cid, name)]
        found = exact or sorted({cid for cid, _ in known if cid.startswith(ref)})
        if not found:
            raise LookupError(f"no stored logs for container {ref!r}")
        if len(set(found)) > 1 and not exact:
            raise LookupError(f"container id prefix {ref!r} is ambiguous: {len(found)} match")
        ids += [f for f in dict.fromkeys(found) if f not in ids]  # a name it had twice: once
    return ids


async def several_hosts(
    db: BaseDBAsyncClient, container_ids: Sequence[str], host: str | None
) -> bool:
    """Whether a selection's lines come from more than one host (these containers', or
    every container's with none named): then each line says its host as well as its name —
    a name two hosts share, or compose labels anyone may set on another host, would let one
    host's lines pass for the other's."""
    if host is not None:
        return False
    table = ContainerCursor._meta.db_table
    if not container_ids:
        _, rows = await db.execute_query(f"SELECT COUNT(DISTINCT host) FROM {table}")
        return int(rows[0][0]) > 1
    hosts: set[str] = set()
    for at in range(0, len(container_ids), 500):
        chunk = list(container_ids[at : at + 500])
        m = Marks(_dialect(db))
        _, rows = await db.execute_query(
            f"SELECT DISTINCT host FROM {table} WHERE container_id IN ({m.many(len(chunk))})",
            chunk,
        )
        hosts.update(str(r[0]) for r in rows)
    return len(hosts) > 1


async def service_containers(db: BaseDBAsyncClient, service: str) -> list[str]:
    """A service's containers, current and removed: `PROJECT/SERVICE` for compose's (as
    their labels said; stored since layout 9), a plain name for containers that had it. A
    removed one none of whose lines or gaps is left is not one of them: it adds nothing to
    the timeline, and a CI service runs thousands (past the viewer's bound of a view)."""
    project, sep, name = service.rpartition("/")
    cursors = ContainerCursor._meta.db_table
    kept = (
        f"(lines > 0 OR state IS NULL OR state <> 'removed' OR EXISTS (SELECT 1 FROM "
        f"{Gap._meta.db_table} g WHERE g.host = {cursors}.host "
        f"AND g.container_id = {cursors}.container_id AND (g.kind IS NULL OR g.kind <> "
        f"'{FORWARD_GAP}')))"
    )
    if sep:
        m = Marks(_dialect(db))
        _, rows = await db.execute_query(
            f"SELECT DISTINCT container_id FROM {ContainerCursor._meta.db_table} "
            f"WHERE project = {m()} AND service = {m()} AND {kept}",
            [project, name],
        )
        found = sorted(str(r[0]) for r in rows)
    else:  # every container that had the name, now or before a rename
        _, rows = await db.execute_query(
            f"SELECT DISTINCT container_id, container_name, former_names "
            f"FROM {ContainerCursor._meta.db_table} WHERE {kept}"
        )
        found = sorted(
            str(r[0]) for r in rows if name == r[1] or name in str(r[2] or "").split("\n")
        )
    if not found:
        raise LookupError(f"no stored logs for service {service!r}")
    return found


async def select_rows(
    db: BaseDBAsyncClient,
    flt: LogFilter,
    extra: Callable[[Marks], tuple[str, list[Any]]],
    order: str,
    limit: int,
) -> list[StoredRow]:
    """The filter's rows, plus one more condition (numbered after the filter's marks), in an
    order, at most `limit` of them."""
    marks = Marks(_dialect(db))
    clauses, values = flt.where(marks)
    clause, more = extra(marks)
    sql = (
        f"SELECT {_COLUMNS} FROM {_FROM} "
        f"WHERE {' AND '.join([*clauses, clause])} ORDER BY {order} LIMIT {int(limit)}"
    )
    if _dialect(db) == "sqlite":
        # SQLite builds our rows itself, in its thread: a row object made once, not twice
        # (tortoise's sqlite3.Row, then ours) — a fifth of `logs --json`'s time.
        async with db.acquire_connection() as conn:
            cursor = await conn.execute(sql, [*values, *more])
            cursor.row_factory = _stored_row
            found: list[StoredRow] = await cursor.fetchall()
            await cursor.close()
        return found
    _, rows = await db.execute_query(sql, [*values, *more])
    return [StoredRow(*r) for r in rows]


def _stored_row(_cursor: object, row: tuple[Any, ...]) -> StoredRow:
    return tuple.__new__(StoredRow, row)


async def older(
    db: BaseDBAsyncClient, flt: LogFilter, *, before: tuple[int, int] | None, limit: int
) -> list[StoredRow]:
    """Up to `limit` rows just before `before` (timestamp, id), newest first: a page of the
    viewer's scroll-back. Several containers are read one index range each, then merged: one
    query over all of them would sort every row they have."""
    if len(flt.container_ids) > 1:
        pages = [
            await older(db, replace(flt, container_ids=(cid,)), before=before, limit=limit)
            for cid in flt.container_ids
        ]
        merged = heapq.merge(*pages, key=lambda r: (r.timestamp_ns, r.id), reverse=True)
        return list(islice(merged, limit))

    def page_before(m: Marks) -> tuple[str, list[Any]]:
        if before is None:
            return "1 = 1", []
        clause = f"l.timestamp_ns <= {m()} AND (l.timestamp_ns < {m()} OR l.id < {m()})"
        return clause, [before[0], before[0], before[1]]

    return await select_rows(db, flt, page_before, "l.timestamp_ns DESC, l.id DESC", limit)


async def later(
    db: BaseDBAsyncClient, flt: LogFilter, *, after: tuple[int, int], limit: int
) -> list[StoredRow]:
    """Up to `limit` rows just after `after` (timestamp, id), oldest first: the lines that
    follow one (an alert's context). One container's index range, as `older` reads."""

    def page_after(m: Marks) -> tuple[str, list[Any]]:
        clause = f"l.timestamp_ns >= {m()} AND (l.timestamp_ns > {m()} OR l.id > {m()})"
        return clause, [after[0], after[0], after[1]]

    return await select_rows(db, flt, page_after, "l.timestamp_ns, l.id", limit)


async def rows_by_id(db: BaseDBAsyncClient, ids: list[int]) -> list[StoredRow]:
    """These rows whole, in id order (a few a scan picked out: follow.scan)."""
    found: list[StoredRow] = []
    for at in range(0, len(ids), 500):
        chunk = ids[at : at + 500]

        def wanted(m: Marks, chunk: list[int] = chunk) -> tuple[str, list[Any]]:
            return f"l.id IN ({m.many(len(chunk))})", list(chunk)

        found += await select_rows(db, LogFilter(), wanted, "l.id", len(chunk))
    return found


# A gap of a forward destination (storage/gaps.py) is not a loss of the store's.
NOT_FORWARD = "(kind IS NULL OR kind <> 'forward')"


async def gaps_between(
    db: BaseDBAsyncClient, container_ids: tuple[str, ...], lo: int | None, hi: int | None
) -> list[dict[str, Any]]:
    """Gaps of these containers (all: none given) from `lo` to before `hi`, by the time the
    loss began (or ended, or was recorded)."""
    marks = Marks(_dialect(db))
    at = "COALESCE(from_ns, to_ns, created_ns)"
    clauses: list[str] = [NOT_FORWARD]  # the store's own losses, not a destination's
    values: list[Any] = []
    if container_ids:
        clauses.append(f"container_id IN ({marks.many(len(container_ids))})")
        values += container_ids
    if lo is not None:
        clauses.append(f"{at} >= {marks()}")
        values.append(lo)
    if hi is not None:
        clauses.append(f"{at} < {marks()}")
        values.append(hi)
    _, rows = await db.execute_query(
        f"SELECT container_id, container_name, reason, {at} FROM {Gap._meta.db_table} "
        f"WHERE {' AND '.join(clauses)} ORDER BY 4 LIMIT 1000",
        values,
    )
    return [
        {"container_id": r[0], "container_name": r[1], "reason": r[2], "ns": int(r[3])}
        for r in rows
    ]


async def container_summary(db: BaseDBAsyncClient, host: str | None = None) -> list[dict[str, Any]]:
    """Per known container (of one host, or every host): lines and bytes stored, its last
    line's time, its gaps."""
    cursors, gaps = ContainerCursor._meta.db_table, Gap._meta.db_table
    marks = Marks(_dialect(db))
    where, values = ("WHERE c.host = " + marks(), [host]) if host else ("", [])
    _, rows = await db.execute_query(
        f"SELECT c.host, c.container_id, c.container_name, c.lines, c.bytes, "
        f"COALESCE(c.stdout_ts, 0), COALESCE(c.stderr_ts, 0), COALESCE(c.tty_ts, 0), "
        f"(SELECT COUNT(*) FROM {gaps} g WHERE g.container_id = c.container_id "
        f"AND g.host = c.host AND {NOT_FORWARD}), c.project, c.state FROM {cursors} c {where} "
        "ORDER BY c.host, c.container_name",
        values,
    )
    out = [
        {
            "host": r[0],
            "container_id": r[1],
            "container_name": r[2],
            "lines": int(r[3]),
            "bytes": int(r[4]),
            "last_ns": max(int(r[5]), int(r[6]), int(r[7])) or None,
            "gaps": int(r[8]),
            "project": r[9],
            "state": r[10],
        }
        for r in rows
    ]
    marks = Marks(_dialect(db))
    where = "AND host = " + marks() if host else ""
    _, orphans = await db.execute_query(
        f"SELECT host, container_id, container_name, COUNT(*) FROM {gaps} g "
        f"WHERE NOT EXISTS (SELECT 1 FROM {cursors} c WHERE c.container_id = g.container_id "
        f"AND c.host = g.host) {where} GROUP BY host, container_id, container_name",
        values,
    )
    for r in orphans:
        out.append(
            {"host": r[0], "container_id": r[1], "container_name": r[2], "lines": 0,
             "bytes": 0, "last_ns": None, "gaps": int(r[3])}
        )  # fmt: skip
    return out


async def fleet_summary(db: BaseDBAsyncClient) -> list[dict[str, Any]]:
    """Per host that ever ran an agent on this store: its last heartbeat, and whether its
    agent stopped cleanly then (else it was killed, or is cut off)."""
    state = AgentState._meta.db_table
    _, rows = await db.execute_query(
        f"SELECT host, last_seen_ns, last_shutdown_ns FROM {state} ORDER BY host"
    )
    return [
        {"host": r[0], "last_seen_ns": int(r[1]), "stopped": r[2] is not None and r[2] == r[1]}
        for r in rows
    ]
