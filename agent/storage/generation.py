"""This host's commits as the store holds them: a store that lost some is seen, not written over.

A failover to a standby that had not received the newest commits, or a store restored from a
backup, holds fewer of this host's commits than its writer saw acknowledged. Writing on would
mix two histories: the stored positions are behind what the collectors read, and Docker's
lines between would never be read again. So each commit checks the count it expects and adds
one (`host_commits.commits`, in the commit's transaction); a count that is not the expected
one raises StoreRewound, and the agent starts collecting afresh from what the store holds
(app.py). The heartbeat checks it too (`check`), so an idle agent sees it within seconds.

A writer's session begins by adding itself to the host's `sessions` with the last id the
store then held: a follower that read under an older session rewinds to it, since ids after
it may be taken again by rows it never saw (follow.rewound).
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

from agent.storage.db import StorageError, transaction
from agent.storage.models import HostCommit, LogLine
from agent.storage.sql import Marks

TABLE = HostCommit._meta.db_table
MAX_SESSIONS = 32  # a host's sessions kept: a follower older than all of them re-reads more
Session = tuple[int, int]  # (epoch, the host's last id when the session began)


class StoreRewound(StorageError):
    """The store does not hold what this host's writer saw it acknowledge (or holds more)."""


def sessions_of(text: object) -> list[Session]:
    """A host's sessions as stored (anything unreadable: none known)."""
    try:
        found = json.loads(str(text)) if text is not None else []
        return [(int(e), int(s)) for e, s in found]
    except (ValueError, TypeError):
        return []


def count_sql(dialect: str, *, rows: bool) -> str:
    """A commit's check and count: one more commit of this host, only if the store holds
    the count this writer expects; a commit of rows also sets the host's last id (the
    follow seam's bound). No row changed means the store is not the one written to.

    PostgreSQL: `currval` is this session's last id from the sequence, which the COPY of
    this transaction has just taken; SQLite: one writer, so the table's largest id."""
    m = Marks(dialect)
    if rows:
        lines = LogLine._meta.db_table
        if dialect == "postgres":
            last = f"currval(pg_get_serial_sequence('{lines}', 'id'))"
        else:
            last = f"(SELECT MAX(id) FROM {lines})"
        moved = f"last_id = {last}, at_ns = {m()}, "
    else:
        moved = ""
    return (
        f"UPDATE {TABLE} SET {moved}commits = COALESCE(commits, 0) + 1 "
        f"WHERE host = {m()} AND COALESCE(commits, 0) = {m()}"
    )


class Generation:
    """The commits of this host the store acknowledged to this writer, and its session."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.commits = 0
        self.epoch = 0

    def count_params(self, now_ns: int, *, rows: bool) -> list[Any]:
        """count_sql's parameters for the next commit."""
        return [now_ns, self.host, self.commits] if rows else [self.host, self.commits]

    def counted(self, changed: int) -> None:
        """count_sql's answer (rows changed), inside the commit's transaction: raise (and
        roll back) if the store did not hold the expected count."""
        if changed != 1:
            raise self._rewound("another count of")

    async def begin(self, db: BaseDBAsyncClient) -> None:
        """A new session: the count read, and the session added to the host's list."""
        m = Marks(db.capabilities.dialect)
        self.epoch = secrets.randbits(62) or 1
        async with transaction() as conn:
            _, rows = await conn.execute_query(
                f"SELECT last_id, commits, sessions FROM {TABLE} WHERE host = {m()}", [self.host]
            )
            if not rows:
                await conn.execute_query(
                    f"INSERT INTO {TABLE} (host, last_id, at_ns, commits, sessions) "
                    f"VALUES ({Marks(db.capabilities.dialect).many(5)})",
                    [self.host, 0, time.time_ns(), 0, json.dumps([[self.epoch, 0]])],
                )
                self.commits = 0
                return
            last_id, commits, text = rows[0][0], rows[0][1], rows[0][2]
            kept = [*sessions_of(text), (self.epoch, int(last_id))][-MAX_SESSIONS:]
            m = Marks(db.capabilities.dialect)
            await conn.execute_query(
                f"UPDATE {TABLE} SET sessions = {m()}, commits = COALESCE(commits, 0) "
                f"WHERE host = {m()}",
                [json.dumps(kept), self.host],
            )
            self.commits = int(commits or 0)

    async def settle_unsure(self) -> bool:
        """After a commit whose answer was lost: one more than expected, it was applied
        (True); as many, it was not; anything else is a store that is not the one written
        to."""
        async with transaction() as conn:
            stored = await self._stored(conn)
        if stored == self.commits + 1:
            self.commits = stored
            return True
        if stored != self.commits:
            raise self._rewound(f"{stored} commits of" if stored is not None else "nothing of")
        return False

    async def check(self, conn: BaseDBAsyncClient) -> None:
        """Raise StoreRewound if the store holds fewer of this host's commits than were
        acknowledged (safe beside a commit in flight: the count only grows, and the one
        expected is taken before the store is asked)."""
        expected = self.commits
        stored = await self._stored(conn)
        if stored is None or stored < expected:
            raise self._rewound(f"{stored} commits of" if stored is not None else "nothing of")

    async def _stored(self, db: BaseDBAsyncClient) -> int | None:
        m = Marks(db.capabilities.dialect)
        _, rows = await db.execute_query(
            f"SELECT COALESCE(commits, 0) FROM {TABLE} WHERE host = {m()}", [self.host]
        )
        return int(rows[0][0]) if rows else None

    def _rewound(self, held: str) -> StoreRewound:
        return StoreRewound(
            f"the store holds {held} host {self.host!r} where {self.commits} commits were "
            "acknowledged: it is not the store written to (a standby promoted before it had "
            "the newest commits, or a backup restored); collecting again from what it holds"
        )
