"""Lines retention deletes before a forward destination acknowledged them: a gap of that
destination (`logagent gaps --forward NAME`), recorded in the deleting transaction — never
silence. (A batch in flight may still arrive: the gap says they may be missing.)

A destination's position (consumer_positions, `fwd:<name>:…`) names its own host's last row
sent; rows of that host after it, in what retention is about to delete (a batch of rows, or a
PostgreSQL day dropped whole by any agent of the fleet), were never sent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

from agent.storage.follow import Position
from agent.storage.gaps import record_forward_gaps
from agent.storage.models import ConsumerPosition, ContainerCursor
from agent.storage.sql import Marks

PREFIX = "fwd:"  # forward/runner.py's consumer names
REASON = "lines removed by retention before the destination acknowledged them"


def consumer_name(destination: str, host_part: str) -> str:
    return f"{PREFIX}{destination}:{host_part}"


def destination_of(name: str) -> str:
    return name.removeprefix(PREFIX).split(":", 1)[0]


Where = Callable[[Marks], tuple[str, list[Any]]]  # the rows to delete: SQL on `l`, values


async def unsent_deleted(
    conn: BaseDBAsyncClient, table: str, where: Where, host: str | None = None
) -> None:
    """Record, for each forward destination (of `host` alone when the rows are that host's),
    the rows of `table` that `where` names (about to be deleted) which it has not sent: per
    container, how many and when."""
    _, found = await conn.execute_query(
        f"SELECT name, position FROM {ConsumerPosition._meta.db_table} WHERE name LIKE '{PREFIX}%'"
    )
    for name, token in found:
        try:
            ids = Position.parse(str(token)).as_dict()
        except ValueError:
            continue
        if len(ids) != 1:  # a forwarder's position names its own host alone
            continue
        ((owner, after),) = ids.items()
        if host is not None and owner != host:
            continue
        m = Marks(conn.capabilities.dialect)
        clause, values = where(m)
        _, spans = await conn.execute_query(
            f"SELECT c.container_id, c.container_name, COUNT(*), MIN(l.timestamp_ns), "
            f'MAX(l.timestamp_ns) FROM "{table}" l JOIN {ContainerCursor._meta.db_table} c '
            f"ON c.id = l.source_id WHERE {clause} AND l.host = {m()} AND l.id > {m()} "
            "GROUP BY c.container_id, c.container_name",
            [*values, owner, after],
        )
        if spans:
            await record_forward_gaps(
                conn,
                owner,
                destination_of(str(name)),
                [[cid, cname, f"{n} {REASON}", lo, hi] for cid, cname, n, lo, hi in spans],
            )
