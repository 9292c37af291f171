"""The follow seam: committed rows in commit order, from a position the follower keeps.

A host's rows are written by its one writer, one transaction at a time, so its row ids grow
in the order they commit. Across hosts they do not: an id taken by one host's open
transaction can become visible after a higher id of another host's, and a follower that
reads `id > the last id seen` passes over it for good. So a position is an id per host, and
each commit records its host's last id (`host_commits`) in the same transaction
(agent/storage/writer.py): a follower reads a host's rows up to that id and no further.

`logs -f` and the viewer's live tail follow this way; so shall alerts and forwarders, with
a position of their own committed in the store (storage/consumers.py; `Position.token` is
its stored form).
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
from tortoise.backends.base.client import BaseDBAsyncClient

from agent.storage.models import ContainerCursor, HostCommit, LogLine
from agent.storage.postgres import commit_signal
from agent.storage.reader import PAGE, LogFilter, StoredRow, select_rows
from agent.storage.sql import Marks

MAX_ID = 2**63 - 1
MAX_HOSTS = 10_000  # in a position read from outside (a URL): far more than any fleet
_MAX_HOST = 255  # the hosts column's width
_MAX_TOKEN = 1 << 20


@dataclass(frozen=True)
class Position:
    """Per host, the id of the last row read (a host not named: none of its rows yet)."""

    ids: tuple[tuple[str, int], ...] = ()

    @classmethod
    def of(cls, ids: dict[str, int]) -> Position:
        return cls(tuple(sorted(ids.items())))

    def as_dict(self) -> dict[str, int]:
        return dict(self.ids)

    def token(self) -> str:
        """The position as URL-safe text (the viewer's `after`, a consumer's stored row)."""
        raw = json.dumps(self.ids, separators=(",", ":"), ensure_ascii=False).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=") or "-"

    @classmethod
    def parse(cls, token: str) -> Position:
        """ValueError, with the reason, for anything `token` never made."""
        if token == "-":
            return cls()
        if len(token) > _MAX_TOKEN:
            raise ValueError("position: too long")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            pairs = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"position: not one this viewer gave ({exc})") from None
        if not isinstance(pairs, list) or len(pairs) > MAX_HOSTS:
            raise ValueError("position: not a list of hosts")
        ids: dict[str, int] = {}
        for pair in pairs:
            match pair:
                case [str() as host, int() as at] if (
                    len(host) <= _MAX_HOST and not isinstance(at, bool) and 0 <= at <= MAX_ID
                ):
                    ids[host] = at
                case _:
                    raise ValueError("position: each host needs a name and a row id")
        return cls.of(ids)


async def committed(db: BaseDBAsyncClient) -> Position:
    """Where every host's writer stands now: its last committed row id."""
    _, rows = await db.execute_query(f"SELECT host, last_id FROM {HostCommit._meta.db_table}")
    return Position.of({str(h): int(i) for h, i in rows})


def upto_clause(upto: Position, marks: Marks) -> tuple[str, list[Any]]:
    """Rows at or before `upto`, per host (a host it does not name: none)."""
    if not upto.ids:
        return "1 = 0", []
    parts: list[str] = []
    values: list[Any] = []
    for host, at in upto.ids:
        parts.append(f"(l.host = {marks()} AND l.id <= {marks()})")
        values += [host, at]
    top = max(at for _, at in upto.ids)
    return f"l.id <= {top} AND ({' OR '.join(parts)})", values


def _between(after: Position, upto: Position, marks: Marks) -> tuple[str, list[Any]] | None:
    """Rows after `after` and at or before `upto`, per host; None if there are none."""
    seen = after.as_dict()
    parts: list[str] = []
    values: list[Any] = []
    for host, at in upto.ids:
        since = seen.get(host)
        if since is not None and since >= at:
            continue
        if since is None:  # a host new to this follower: through its containers' index
            parts.append(
                f"(l.host = {marks()} AND l.id <= {marks()} AND l.source_id IN (SELECT id "
                f"FROM {ContainerCursor._meta.db_table} WHERE host = {marks()}))"
            )
            values += [host, at, host]
        else:  # a range of the primary key
            parts.append(f"(l.host = {marks()} AND l.id > {marks()} AND l.id <= {marks()})")
            values += [host, since, at]
    if not parts:
        return None
    return f"({' OR '.join(parts)})", values


async def newer(
    db: BaseDBAsyncClient, flt: LogFilter, after: Position, upto: Position, *, limit: int = PAGE
) -> tuple[list[StoredRow], Position]:
    """The filter's rows after `after` up to `upto`, in id order, and the position they
    reach: past the rows the filter left out too, so a quiet filter does not read them again."""
    if _between(after, upto, Marks("sqlite")) is None:
        return [], after

    def pending(m: Marks) -> tuple[str, list[Any]]:
        between = _between(after, upto, m)  # numbered after the filter's own marks
        assert between is not None
        return between

    rows = await select_rows(db, flt, pending, "l.id", limit)
    # A full page stops at its last id: beyond it, a host may have more.
    cut = rows[-1].id if len(rows) >= limit else MAX_ID
    return rows, _moved(after, upto, cut)


# A committed row as a first look sees it, enough to tell whether it is wanted: its id,
# level and message (SQLite's as bytes: not decoded, as most rows are passed over). A plain
# tuple: a named one made by a row factory costs 0.5 us a row more.
Scanned = tuple[int, int | None, str | bytes]


async def scan(
    db: BaseDBAsyncClient, host: str, after: Position, upto: Position, *, limit: int = PAGE
) -> tuple[list[Scanned], Position]:
    """This host's rows after `after` up to `upto` in id order, read narrowly (no join, no
    row object of ten fields: a third of `newer`'s cost a row), and the position they reach.
    Whoever wants a few of them whole reads those by id (reader.rows_by_id)."""
    only = Position(tuple((h, at) for h, at in upto.ids if h == host))
    sqlite = str(db.capabilities.dialect) == "sqlite"
    m = Marks(str(db.capabilities.dialect))
    between = _between(after, only, m)
    if between is None:
        return [], _moved(after, upto, MAX_ID)
    clause, values = between
    text = "CAST(l.message AS BLOB)" if sqlite else "l.message"
    sql = (
        f"SELECT l.id, l.level, {text} FROM {LogLine._meta.db_table} l WHERE {clause} "
        f"ORDER BY l.id LIMIT {int(limit)}"
    )
    found: list[Scanned]
    if sqlite:  # plain tuples from sqlite3 itself; tortoise would make a dict a row
        async with db.acquire_connection() as conn:
            cursor = await conn.execute(sql, values)
            cursor.row_factory = None
            found = await cursor.fetchall()
            await cursor.close()
    else:
        _, rows = await db.execute_query(sql, values)
        found = [(int(r[0]), r[1], r[2]) for r in rows]
    cut = found[-1][0] if len(found) >= limit else MAX_ID
    return found, _moved(after, upto, cut)


def _moved(after: Position, upto: Position, cut: int) -> Position:
    moved = after.as_dict()
    for host, at in upto.ids:
        moved[host] = max(moved.get(host, 0), min(at, cut))
    return Position.of(moved)


async def history(
    db: BaseDBAsyncClient, flt: LogFilter, *, upto: Position, tail: int | None = None
) -> AsyncIterator[list[StoredRow]]:
    """Rows up to `upto` in Docker's order (timestamp, then arrival), page by page: what
    was committed when `upto` was read, so that a follower from `upto` takes over exactly."""
    if tail is not None:
        rows = await select_rows(
            db, flt, lambda m: upto_clause(upto, m), "l.timestamp_ns DESC, l.id DESC", tail
        )
        yield rows[::-1]
        return
    after: tuple[int, int] | None = None
    while True:

        def page_after(m: Marks, after: tuple[int, int] | None = after) -> tuple[str, list[Any]]:
            clause, values = upto_clause(upto, m)
            if after is None:
                return clause, values
            # `ts >= a` alone bounds the index range; the OR then skips what was printed.
            # (A bare OR of both cases makes every page scan from the start.)
            clause += f" AND l.timestamp_ns >= {m()} AND (l.timestamp_ns > {m()} OR l.id > {m()})"
            return clause, [*values, after[0], after[0], after[1]]

        rows = await select_rows(db, flt, page_after, "l.timestamp_ns, l.id", PAGE)
        if not rows:
            return
        yield rows
        if len(rows) < PAGE:
            return
        after = (rows[-1].timestamp_ns, rows[-1].id)


def rewound(after: Position, upto: Position) -> Position:
    """A host whose store holds less than the follower read (restored from a backup, or a
    standby promoted that had not received the newest commits) is followed from what the
    store holds: its later rows are new rows, not ones already seen."""
    now = upto.as_dict()
    ids = {h: min(at, now[h]) if h in now else at for h, at in after.ids}
    return Position.of(ids)


class Waker(Protocol):
    """What wakes a follower: armed before a read, so a commit during the read is not missed."""

    def armed(self) -> anyio.Event: ...


async def follow(
    db_url: str,
    db: BaseDBAsyncClient,
    flt: LogFilter,
    *,
    after: Position,
    poll_seconds: float,
    waker: Waker | None = None,
) -> AsyncGenerator[tuple[list[StoredRow], Position], None]:
    """Rows as they are committed after `after`, with the position they reach; an empty
    list after each wait in which none came. On PostgreSQL a commit wakes it (LISTEN/NOTIFY:
    `waker`, or a connection of its own; a read every 5 s in case a notification is
    missed); on SQLite it polls. Use it under `contextlib.aclosing`."""
    async with AsyncExitStack() as stack:
        if waker is None and str(db.capabilities.dialect) == "postgres":
            waker = await stack.enter_async_context(commit_signal(db_url))
        while True:
            woken = waker.armed() if waker is not None else None
            upto = await committed(db)
            after = rewound(after, upto)
            rows, after = await newer(db, flt, after, upto)
            if rows:
                yield rows, after
                continue
            if woken is not None:
                with anyio.move_on_after(5):
                    await woken.wait()
            else:
                await anyio.sleep(poll_seconds)
            yield [], after
