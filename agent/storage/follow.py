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
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
from tortoise.backends.base.client import BaseDBAsyncClient

from agent.storage.db import entered, fatal
from agent.storage.generation import Session, sessions_of
from agent.storage.models import ContainerCursor, HostCommit, LogLine
from agent.storage.postgres import FEATURE_NOT_SUPPORTED, commit_signal, sqlstate
from agent.storage.reader import PAGE, LogFilter, StoredRow, select_rows
from agent.storage.sql import Marks

log = logging.getLogger("logagent.storage")
MAX_ID = 2**63 - 1
MAX_HOSTS = 10_000  # in a position read from outside (a URL): far more than any fleet
_MAX_HOST = 255  # the hosts column's width
_MAX_TOKEN = 1 << 20


@dataclass(frozen=True)
class Position:
    """Per host, the id of the last row read (a host not named: none of its rows yet), and
    the host's writer session it was read under (`epochs`: storage/generation.py)."""

    ids: tuple[tuple[str, int], ...] = ()
    epochs: tuple[tuple[str, int], ...] = ()

    @classmethod
    def of(cls, ids: dict[str, int], epochs: dict[str, int] | None = None) -> Position:
        return cls(tuple(sorted(ids.items())), tuple(sorted((epochs or {}).items())))

    def as_dict(self) -> dict[str, int]:
        return dict(self.ids)

    def of_host(self, host: str) -> Position:
        """This host's id and session alone."""
        return Position(
            *(tuple(p for p in pairs if p[0] == host) for pairs in (self.ids, self.epochs))
        )

    def token(self) -> str:
        """The position as URL-safe text (the viewer's `after`, a consumer's stored row)."""
        epochs = dict(self.epochs)
        pairs = [[h, at, epochs[h]] if h in epochs else [h, at] for h, at in self.ids]
        raw = json.dumps(pairs, separators=(",", ":"), ensure_ascii=False).encode()
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
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ValueError(f"position: not one this viewer gave ({exc})") from None
        if not isinstance(pairs, list) or len(pairs) > MAX_HOSTS:
            raise ValueError("position: not a list of hosts")
        ids: dict[str, int] = {}
        epochs: dict[str, int] = {}
        for pair in pairs:
            match pair:
                case [str() as host, int() as at, *more] if (
                    len(host) <= _MAX_HOST
                    and _id(at)
                    and (not more or (len(more) == 1 and _id(more[0])))
                ):
                    ids[host] = at
                    if more:
                        epochs[host] = more[0]
                case _:
                    raise ValueError("position: each host needs a name and a row id")
        return cls.of(ids, epochs)


def _id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ID


@dataclass(frozen=True)
class Committed(Position):
    """Where every host's writer stands now: its last committed row id, its current session
    (`epochs`), and its sessions, newest last (epoch, the last id when it began)."""

    sessions: tuple[tuple[str, tuple[Session, ...]], ...] = ()


async def committed(db: BaseDBAsyncClient) -> Committed:
    """Where every host's writer stands now: its last committed row id."""
    _, rows = await db.execute_query(
        f"SELECT host, last_id, sessions FROM {HostCommit._meta.db_table}"
    )
    ids: dict[str, int] = {}
    epochs: dict[str, int] = {}
    sessions: dict[str, tuple[Session, ...]] = {}
    for h, i, text in rows:
        ids[str(h)] = int(i)
        if known := sessions_of(text):
            epochs[str(h)] = known[-1][0]
            sessions[str(h)] = tuple(known)
    base = Position.of(ids, epochs)
    return Committed(base.ids, base.epochs, tuple(sorted(sessions.items())))


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
    return rows, moved(after, upto, cut)


@dataclass(frozen=True, slots=True)
class Scanned:
    """Committed rows as a first look sees them, enough to tell whether one is wanted, column
    by column: their ids, levels and messages (SQLite's as bytes: not decoded, as most rows
    are passed over). Columns, not a tuple a row: made and walked in C."""

    ids: Sequence[int]
    levels: Sequence[int | None]
    messages: Sequence[str | bytes]

    def __len__(self) -> int:
        return len(self.ids)


NOTHING_SCANNED = Scanned((), (), ())


async def scan(
    db: BaseDBAsyncClient, host: str, after: Position, upto: Position, *, limit: int = PAGE
) -> tuple[Scanned, Position]:
    """This host's rows after `after` up to `upto` in id order, read narrowly (no join, no
    row object of ten fields: a third of `newer`'s cost a row), and the position they reach.
    Whoever wants a few of them whole reads those by id (reader.rows_by_id)."""
    only = Position(tuple((h, at) for h, at in upto.ids if h == host))
    sqlite = str(db.capabilities.dialect) == "sqlite"
    m = Marks(str(db.capabilities.dialect))
    between = _between(after, only, m)
    if between is None:
        return NOTHING_SCANNED, moved(after, upto, MAX_ID)
    clause, values = between
    text = "CAST(l.message AS BLOB)" if sqlite else "l.message"
    sql = (
        f"SELECT l.id, l.level, {text} FROM {LogLine._meta.db_table} l WHERE {clause} "
        f"ORDER BY l.id LIMIT {int(limit)}"
    )
    found: list[tuple[int, int | None, str | bytes]]
    if sqlite:  # plain tuples from sqlite3 itself; tortoise would make a dict a row
        async with db.acquire_connection() as conn:
            cursor = await conn.execute(sql, values)
            cursor.row_factory = None
            found = await cursor.fetchall()
            await cursor.close()
    else:
        _, rows = await db.execute_query(sql, values)
        found = [(int(r[0]), r[1], r[2]) for r in rows]
    if not found:
        return NOTHING_SCANNED, moved(after, upto, MAX_ID)
    ids, levels, messages = zip(*found, strict=True)
    cut = ids[-1] if len(found) >= limit else MAX_ID
    return Scanned(ids, levels, messages), moved(after, upto, cut)


def moved(after: Position, upto: Position, cut: int) -> Position:
    """Where a read from `after` up to `upto` leaves a follower: past `cut` no further."""
    ids = after.as_dict()
    for host, at in upto.ids:
        ids[host] = max(ids.get(host, 0), min(at, cut))
    return Position.of(ids, {**dict(after.epochs), **dict(upto.epochs)})


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
    store holds: its later rows are new rows, not ones already seen.

    And a host whose writer began a session since the follower read: the store may have
    lost rows the follower saw, and their ids be taken again by rows it never saw. It read
    for sure only what every later session found when it began (a session it does not know
    of: what each found)."""
    now, current, seen = upto.as_dict(), dict(upto.epochs), dict(after.epochs)
    sessions = dict(upto.sessions) if isinstance(upto, Committed) else {}
    ids: dict[str, int] = {}
    for host, at in after.ids:
        if host in now:
            epoch, known = seen.get(host), sessions.get(host, ())
            if epoch is not None and known and epoch != current.get(host):
                epochs = [e for e, _ in known]
                later = known[epochs.index(epoch) + 1 :] if epoch in epochs else known
                at = min(at, *(began for _, began in later))
            elif epoch is None or epoch != current.get(host):
                at = min(at, now[host])
            # Else read under the current session and ahead of this server: it lags (a
            # standby), or lost rows no session has written over yet; the writer's next
            # rows come under a new session, which says where to go back to. Wait.
        ids[host] = at
    return Position.of(ids, {**seen, **current})


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
            waker = await signal_for(stack, db_url)
        away = False
        while True:
            woken = waker.armed() if waker is not None else None
            try:
                async with one_server(db) as conn:
                    upto = await committed(conn)
                    after = rewound(after, upto)
                    rows, after = await newer(conn, flt, after, upto)
            except Exception as exc:
                if not _transient(exc):
                    raise
                if not away:  # once per outage
                    log.warning("the store cannot be read (%s): reading again when it can", exc)
                away = True
                await anyio.sleep(max(poll_seconds, 1.0))
                yield [], after
                continue
            if away:
                log.warning("the store is read again")
                away = False
            if rows:
                yield rows, after
                continue
            if woken is not None:
                with anyio.move_on_after(5):
                    await woken.wait()
            else:
                await anyio.sleep(poll_seconds)
            yield [], after


def one_server(db: BaseDBAsyncClient) -> AbstractAsyncContextManager[BaseDBAsyncClient]:
    """PostgreSQL: the bound and the rows read in one transaction, so on one connection: a
    pool whose connections reach different servers (a read URL of several, after a restart
    or a failover) must not give the bound of one and the rows of another that lags (skipped
    for good). Every follower reads a step through it (`follow`, the alert rules, the
    forwarders). tortoise's `_in_transaction` (pinned: tests/unit/test_tortoise_private_api.py),
    entered as our own transactions are (db.entered: a failed BEGIN leaks nothing)."""
    if str(db.capabilities.dialect) == "postgres":
        return entered(db._in_transaction())
    return nullcontext(db)


async def signal_for(stack: AsyncExitStack, db_url: str) -> Waker | None:
    """A commit signal of our own; none (polling) where the server cannot give one: a
    standby in recovery refuses LISTEN, and a server away is read again later."""
    try:
        return await stack.enter_async_context(commit_signal(db_url))
    except Exception as exc:
        if not _transient(exc) and sqlstate(exc) != FEATURE_NOT_SUPPORTED:
            raise
        log.info("following by polling: no commit signal from the server (%s)", exc)
        return None


def _transient(exc: BaseException) -> bool:
    """A store away for a while (cut, restarting, failed over), not a fault of the query
    or a store unusable for good, which are raised."""
    code = sqlstate(exc)
    return fatal(exc) is None and not (code is not None and code.startswith(("42", "22")))
