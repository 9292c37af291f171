"""The follow seam's other half: a consumer's position, kept in the store by the consumer.

A part that acts on what is stored (alerts, forwarding) follows committed rows with
`follow.follow(..., after=load(...))` and, once it has acted on a page, calls `save` in the
transaction that records what it did: after a restart it resumes exactly there, and what was
written while it was down is read then, never skipped. Each consumer has its own name and
its own position; none shares the collectors' cursors.
"""

from __future__ import annotations

import re
import time

from tortoise.backends.base.client import BaseDBAsyncClient

from agent.storage.follow import Position
from agent.storage.models import ConsumerPosition
from agent.storage.sql import Marks

TABLE = ConsumerPosition._meta.db_table
_NAME = re.compile(r"[a-z0-9][a-z0-9._:-]{0,63}")


class BadConsumer(ValueError):
    """A consumer name or a stored position the seam cannot use; the message says which."""


def _checked(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise BadConsumer(
            f"consumer name {name[:80]!r}: 1-64 of a-z, 0-9, '.', '_', ':', '-', not first"
        )
    return name


async def load(db: BaseDBAsyncClient, name: str) -> Position | None:
    """The consumer's committed position; None if it never saved one (it then decides where
    to begin: from now, or from the start)."""
    m = Marks(db.capabilities.dialect)
    _, rows = await db.execute_query(
        f"SELECT position FROM {TABLE} WHERE name = {m()}", [_checked(name)]
    )
    if not rows:
        return None
    try:
        return Position.parse(str(rows[0][0]))
    except ValueError as exc:
        raise BadConsumer(f"consumer {name}: its stored position is unusable: {exc}") from None


async def save(conn: BaseDBAsyncClient, name: str, position: Position) -> None:
    """Set the consumer's position, in the caller's transaction (`conn`). Read what it
    needs before that transaction: on SQLite a query on the store's own client inside it
    waits for the transaction to end."""
    m = Marks(conn.capabilities.dialect)
    await conn.execute_query(
        f"INSERT INTO {TABLE} (name, position, updated_ns) VALUES ({m.many(3)}) "
        "ON CONFLICT (name) DO UPDATE SET position = excluded.position, "
        "updated_ns = excluded.updated_ns",
        [_checked(name), position.token(), time.time_ns()],
    )
