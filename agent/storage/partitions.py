"""PostgreSQL only: the lines table is partitioned by the UTC day of Docker's timestamp.

Retention then drops a past day whole — instant, and no dead rows left for VACUUM — and
trims row by row only the day its cut-off falls in; a `--since/--until` read skips the days
outside it. A day's partition exists before its first line is written: the writer makes the
days of a batch it has not seen (`ensure_days`), so an agent back after a week, or a
container's old log read with `initial_tail = "all"`, lands in partitions of its own days.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable

from tortoise.backends.base.client import BaseDBAsyncClient

from agent.storage.models import LogLine
from agent.storage.postgres import LOCK_NOT_AVAILABLE, sqlstate

DAY_NS = 86_400 * 1_000_000_000
_DDL_KEY = 0x6C6F_6770_6172_7473  # "logparts": serialises partition DDL among a fleet's agents


def day_of(ns: int) -> int:
    """Days since 1970-01-01 (UTC) of a timestamp in nanoseconds."""
    return ns // DAY_NS


def partition_name(day: int) -> str:
    """`log_lines_20261127` for a day (a day number outside years 1..9999: `log_lines_dN`)."""
    try:
        date = datetime.date(1970, 1, 1) + datetime.timedelta(days=day)
    except OverflowError:
        return f"{LogLine._meta.db_table}_d{day}".replace("-", "m")
    return f"{LogLine._meta.db_table}_{date:%Y%m%d}"


def partitioned_ddl(tortoise_ddl: str) -> str:
    """tortoise's CREATE TABLE for the lines, made a table partitioned by day.

    A partitioned table's primary key must hold the partition key: (id, timestamp_ns) keeps
    `id` first, so reads by id (`logs -f`) still use it.
    """
    single_key = '"id" BIGSERIAL NOT NULL PRIMARY KEY,'
    if single_key not in tortoise_ddl or not tortoise_ddl.rstrip().endswith(")"):
        raise RuntimeError(f"unexpected DDL for {LogLine._meta.db_table}: {tortoise_ddl!r}")
    body = tortoise_ddl.replace(single_key, '"id" BIGSERIAL NOT NULL,').rstrip()[:-1].rstrip()
    return f'{body},\n    PRIMARY KEY ("id", "timestamp_ns")\n) PARTITION BY RANGE ("timestamp_ns")'


async def is_partitioned(db: BaseDBAsyncClient) -> bool:
    _, rows = await db.execute_query(
        "SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid "
        "WHERE c.relname = $1 AND pg_table_is_visible(c.oid)",
        [LogLine._meta.db_table],
    )
    return bool(rows)


async def existing_days(db: BaseDBAsyncClient) -> dict[int, str]:
    """The days that have a partition, and their tables' names."""
    _, rows = await db.execute_query(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent "
        "WHERE p.relname = $1 AND pg_table_is_visible(p.oid)",
        [LogLine._meta.db_table],
    )
    days: dict[int, str] = {}
    for name, bound in rows:  # FOR VALUES FROM ('…') TO ('…')
        low = str(bound).split("(", 1)[1].split(")", 1)[0].strip("'")
        days[day_of(int(low))] = str(name)
    return days


async def ensure_days(conn: BaseDBAsyncClient, days: Iterable[int]) -> None:
    """Create the partitions of `days` that are missing, in the caller's transaction — a
    short one of its own: creating a partition locks the whole table until the commit.

    A transaction-level advisory lock makes agents of a fleet take turns (two CREATEs of one
    partition at once would fail); a day that exists is not touched (no table lock then).
    """
    await conn.execute_query(f"SELECT pg_advisory_xact_lock({_DDL_KEY})")
    table = LogLine._meta.db_table
    for day in sorted(set(days)):
        name = partition_name(day)
        _, found = await conn.execute_query("SELECT to_regclass($1)", [f'"{name}"'])
        if found[0][0] is not None:
            continue
        await conn.execute_query(
            f'CREATE TABLE "{name}" PARTITION OF "{table}" '
            f"FOR VALUES FROM ({day * DAY_NS}) TO ({(day + 1) * DAY_NS})"
        )


RETIRED = "_retired"  # a detached day waiting to be counted off its containers and dropped


async def retire(conn: BaseDBAsyncClient, name: str) -> str | None:
    """Detach a day's partition and rename it out of the writer's way, in one short
    transaction (the caller's): its new name, or None if the table lock was not had
    within 2 s.

    Detaching takes the parent's lock first, as writers do, so the two never deadlock, and
    counting its rows happens after, with nothing waiting on it. The lock timeout matters: a
    lock request waits behind a long read (a big `logs`), and every writer would queue
    behind the request. The new name is the detaching transaction's own (its id): a day
    retired before by a pass that stopped, then made again by a late line of that day, is
    retired again beside it (a review: one name for both, and every pass after failed).
    """
    table = LogLine._meta.db_table
    await conn.execute_query("SET LOCAL lock_timeout = '2s'")
    try:
        await conn.execute_query(f'ALTER TABLE "{table}" DETACH PARTITION "{name}"')
    except Exception as exc:
        if sqlstate(exc) == LOCK_NOT_AVAILABLE:
            return None
        raise
    _, rows = await conn.execute_query("SELECT txid_current()")
    retired = f"{name}_{int(rows[0][0])}{RETIRED}"
    await conn.execute_query(f'ALTER TABLE "{name}" RENAME TO "{retired}"')
    return retired


def retired_day(table: str) -> str:
    """The day's partition a retired table was, by name (before `retire` renamed it)."""
    name = table.removesuffix(RETIRED)
    head, _, txid = name.rpartition("_")
    return head if txid.isdigit() and head != LogLine._meta.db_table else name


async def retired_tables(db: BaseDBAsyncClient) -> list[str]:
    """Days detached by a retention pass that did not get to drop them (the agent stopped)."""
    _, rows = await db.execute_query(
        "SELECT relname FROM pg_class WHERE relkind = 'r' AND relname LIKE $1 "
        "AND pg_table_is_visible(oid) ORDER BY relname",
        [f"{LogLine._meta.db_table}\\_%{RETIRED}"],
    )
    return [str(r[0]) for r in rows]


def whole_days_before(days: dict[int, str], cutoff_ns: int) -> list[tuple[int, str]]:
    """Pure: the partitions whose every possible row is older than `cutoff_ns`, oldest first."""
    return sorted((d, n) for d, n in days.items() if (d + 1) * DAY_NS <= cutoff_ns)
