"""The alerts' outbox and state in the store (agent/alerts/).

A step of the rules commits, in one transaction, the alerts it fired (pending, one row per
destination), the rules' state and the consumer's position: a crash before the commit
repeats the step, which gives the same alerts with the same ids (the unique key takes them
once); after it, the alerts wait in the outbox. The sender marks each sent once its
destination said so: a crash between the send and the mark sends it again, once, with the
same id (the receiver's idempotency key).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

from agent.storage import consumers
from agent.storage.follow import Position
from agent.storage.models import AlertOutbox, AlertState
from agent.storage.sql import Marks

OUTBOX, STATE = AlertOutbox._meta.db_table, AlertState._meta.db_table
PENDING, SENT = "pending", "sent"


async def load_state(db: BaseDBAsyncClient, name: str) -> str | None:
    _, rows = await db.execute_query(
        f"SELECT state FROM {STATE} WHERE name = {Marks(db.capabilities.dialect)()}", [name]
    )
    return str(rows[0][0]) if rows else None


@dataclass(frozen=True)
class Outgoing:
    """An alert for one destination, as the outbox keeps it (its payload: JSON text)."""

    alert_id: str
    destination: str
    host: str
    rule: str
    payload: str


async def record_step(
    conn: BaseDBAsyncClient,
    name: str,
    position: Position,
    state: str | None,
    alerts: list[Outgoing],
) -> None:
    """In the caller's transaction: the alerts, the state (None: unchanged since the last
    step, not written again), the position."""
    dialect = conn.capabilities.dialect
    now = time.time_ns()
    if alerts:
        await conn.execute_many(
            f"INSERT INTO {OUTBOX} (alert_id, destination, host, rule, payload, created_ns, "
            f"status, attempts, next_ns) VALUES ({Marks(dialect).many(9)}) "
            "ON CONFLICT (alert_id, destination) DO NOTHING",
            [
                [a.alert_id, a.destination, a.host, a.rule, a.payload, now, PENDING, 0, now]
                for a in alerts
            ],
        )
    if state is not None:
        m = Marks(dialect)
        await conn.execute_query(
            f"INSERT INTO {STATE} (name, state, updated_ns) VALUES ({m.many(3)}) ON CONFLICT "
            "(name) DO UPDATE SET state = excluded.state, updated_ns = excluded.updated_ns",
            [name, state, now],
        )
    await consumers.save(conn, name, position)


@dataclass(frozen=True)
class Pending:
    id: int
    alert_id: str
    destination: str
    payload: str
    attempts: int
    created_ns: int = 0
    host: str = ""


async def due(db: BaseDBAsyncClient, host: str, *, limit: int = 50) -> list[Pending]:
    """This host's pending alerts whose time to be tried has come, oldest first."""
    m = Marks(db.capabilities.dialect)
    _, rows = await db.execute_query(
        f"SELECT id, alert_id, destination, payload, attempts, created_ns FROM {OUTBOX} "
        f"WHERE host = {m()} AND status = {m()} AND next_ns <= {m()} ORDER BY id LIMIT {limit}",
        [host, PENDING, time.time_ns()],
    )
    return [
        Pending(int(r[0]), str(r[1]), str(r[2]), str(r[3]), int(r[4]), int(r[5]), host)
        for r in rows
    ]


async def mark_sent(db: BaseDBAsyncClient, pending: Pending) -> None:
    m = Marks(db.capabilities.dialect)
    await db.execute_query(
        f"UPDATE {OUTBOX} SET status = {m()}, sent_ns = {m()}, attempts = {m()} WHERE id = {m()}",
        [SENT, time.time_ns(), pending.attempts + 1, pending.id],
    )


async def mark_failed(db: BaseDBAsyncClient, pending: Pending, retry_in_s: float, why: str) -> None:
    """Tried and not delivered: tried again in `retry_in_s`, and so are the destination's
    other alerts due before then. A destination that is down is down for all of them: left
    due, they would fill `due`'s page at every round, and the alerts of destinations that
    work behind them would wait for good (a review: past ~350 pending for one that is down)."""
    m = Marks(db.capabilities.dialect)
    until = time.time_ns() + int(retry_in_s * 1e9)
    await db.execute_query(
        f"UPDATE {OUTBOX} SET attempts = {m()}, next_ns = {m()}, last_error = {m()} "
        f"WHERE id = {m()}",
        [pending.attempts + 1, until, why[:255], pending.id],
    )
    m = Marks(db.capabilities.dialect)
    await db.execute_query(
        f"UPDATE {OUTBOX} SET next_ns = {m()} WHERE host = {m()} AND status = {m()} "
        f"AND next_ns < {m()} AND destination = {m()}",
        [until, pending.host, PENDING, until, pending.destination],
    )


async def pending(db: BaseDBAsyncClient, host: str) -> int:
    """How many of this host's alerts wait to be sent (for status and metrics): read from
    the index on (host, status), not past the sent ones, which grow for months."""
    m = Marks(db.capabilities.dialect)
    _, rows = await db.execute_query(
        f"SELECT COUNT(*) FROM {OUTBOX} WHERE host = {m()} AND status = {m()}", [host, PENDING]
    )
    return int(rows[0][0]) if rows else 0


@dataclass(frozen=True)
class Sent:
    """An alert as `logagent alerts history` shows it."""

    alert_id: str
    destination: str
    host: str
    rule: str
    created_ns: int
    status: str
    attempts: int
    last_error: str | None
    payload: str


async def history(
    db: BaseDBAsyncClient, *, rule: str | None = None, limit: int = 100
) -> list[Sent]:
    """The newest alerts first (all hosts of the store), at most `limit`."""
    m = Marks(db.capabilities.dialect)
    where, params = ("WHERE rule = " + m(), [rule]) if rule else ("", [])
    _, rows = await db.execute_query(
        f"SELECT alert_id, destination, host, rule, created_ns, status, attempts, last_error, "
        f"payload FROM {OUTBOX} {where} ORDER BY id DESC LIMIT {int(limit)}",
        params,
    )
    return [
        Sent(str(r[0]), str(r[1]), str(r[2]), str(r[3]), int(r[4]), str(r[5]), int(r[6]),
             None if r[7] is None else str(r[7]), str(r[8]))
        for r in rows
    ]  # fmt: skip


async def per_rule(db: BaseDBAsyncClient) -> dict[str, tuple[int, int, int | None]]:
    """Per rule: alerts sent, pending, and when the last one was made."""
    _, rows = await db.execute_query(
        f"SELECT rule, SUM(CASE WHEN status = '{SENT}' THEN 1 ELSE 0 END), "
        f"SUM(CASE WHEN status = '{PENDING}' THEN 1 ELSE 0 END), MAX(created_ns) "
        f"FROM {OUTBOX} GROUP BY rule"
    )
    return {str(r[0]): (int(r[1] or 0), int(r[2] or 0), r[3]) for r in rows}


async def waiting(db: BaseDBAsyncClient, host: str | None = None) -> list[dict[str, Any]]:
    """Per host and destination, the alerts still pending: how many, since when, and the
    last error said of them (`logagent status`: a destination that is down shows here)."""
    m = Marks(db.capabilities.dialect)
    where, params = (f"AND host = {m()}", [host]) if host else ("", [])
    _, rows = await db.execute_query(
        f"SELECT host, destination, COUNT(*), MIN(created_ns), MAX(attempts), "
        f"MAX(last_error) FROM {OUTBOX} WHERE status = '{PENDING}' {where} "
        "GROUP BY host, destination ORDER BY host, destination",
        params,
    )
    return [
        {"host": str(r[0]), "destination": str(r[1]), "pending": int(r[2]),
         "oldest_ns": int(r[3]), "attempts": int(r[4] or 0),
         "last_error": None if r[5] is None else str(r[5])}
        for r in rows
    ]  # fmt: skip
