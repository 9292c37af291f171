"""Create the tables, and first bring a store written by an older logagent up to date.

A deployed agent is upgraded in place, with months of lines in its file: those lines are
converted, in one transaction, never dropped. Each step names the layout it upgrades from.
"""

from __future__ import annotations

import logging

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.context import TortoiseContext
from tortoise.models import Model
from tortoise.transactions import in_transaction
from tortoise.utils import get_schema_sql

from agent.storage import counts, models, partitions
from agent.storage.models import (
    RATE_GAP,
    AgentState,
    ContainerCursor,
    Gap,
    HostCommit,
    LogLine,
    SchemaVersion,
)

log = logging.getLogger("logagent.storage")


# 1: lines carried their container's id and name (0.1, SQLite only); 2: lines carry a source
# id, the store records its version; 3: lines have a level, containers their own retention,
# compose project and state; 4: each host's last committed row id (host_commits), which
# followers read up to; 5: containers' former names (docker rename), agents' retention;
# 6: gaps have a kind (a rate limit's spans were found by their reason's text), and
# consumers their own positions (consumer_positions); 7: containers' lives (container_events);
# 8: alerts (alert_outbox, alert_state); 9: containers' image, compose service and labels;
# 10: lines per minute (line_counts), counted from the lines a store already holds; 11: and
# per hour (line_counts_hourly); 12: each host's commits counted and its writer sessions
# (host_commits.commits, .sessions): a store that lost acknowledged commits is seen; 13:
# container_events indexed by (host, id).
SCHEMA_VERSION = 13
# Columns added since layout 2, made by ALTER TABLE in a store that lacks them (nullable, no
# default: instant on both backends, whatever the rows).
_ADDED = (
    (LogLine._meta.db_table, "level", "SMALLINT"),
    (ContainerCursor._meta.db_table, "max_age_s", "BIGINT"),
    (ContainerCursor._meta.db_table, "project", "VARCHAR(255)"),
    (ContainerCursor._meta.db_table, "state", "VARCHAR(16)"),
    (ContainerCursor._meta.db_table, "former_names", "TEXT"),
    (AgentState._meta.db_table, "retention_s", "BIGINT"),
    (Gap._meta.db_table, "kind", "VARCHAR(16)"),
    (ContainerCursor._meta.db_table, "image", "VARCHAR(255)"),
    (ContainerCursor._meta.db_table, "service", "VARCHAR(255)"),
    (ContainerCursor._meta.db_table, "labels", "TEXT"),
    (HostCommit._meta.db_table, "commits", "BIGINT"),
    (HostCommit._meta.db_table, "sessions", "TEXT"),
)
LEVEL_INDEX = "log_lines_level"


class SchemaTooOld(Exception):
    """A store written by an older logagent, opened by a reader that must not change it."""


class SchemaTooNew(Exception):
    """A store written by a newer logagent: this one would misread or damage it."""


async def create_schema(ctx: TortoiseContext, *, upgrade: bool = True) -> None:
    """Upgrade what an older version wrote, then create whatever table is missing.

    `upgrade=False` (the read side) changes nothing: an old store is an error, and tables
    are only checked.
    """
    db = ctx.db()
    if db.capabilities.dialect == "sqlite":
        old = "container_id" in await _columns(db, LogLine._meta.db_table)
        if old and not upgrade:
            raise SchemaTooOld(
                "the store was written by an older logagent: start `logagent run` once to "
                "upgrade it in place"
            )
        if old:
            await _rows_by_source_id(db)
    # A store already in this layout is not touched: CREATE INDEX IF NOT EXISTS locks its
    # table before it finds the index there, and on a fleet's PostgreSQL an agent starting
    # then blocked every host's writes, or deadlocked with a commit (seen at a failover).
    current = await _version(db) == SCHEMA_VERSION and await _tables_there(db)
    if upgrade and not current and db.capabilities.dialect == "postgres":
        await _partitioned_lines(db)
    if upgrade and not current:
        await ctx.generate_schemas(safe=True)
        await _add_columns(db)
    if upgrade and db.capabilities.dialect == "postgres":
        await _trigram_index(db)
    if upgrade and (await _version(db) or 0) < 4:
        await _commits_from_lines(db)
    if upgrade and (await _version(db) or SCHEMA_VERSION) < 6:
        await _gap_kinds(db)
    if upgrade and (await _version(db) or SCHEMA_VERSION) < 11:
        log.warning("upgrading the store: counting its lines per minute (once)")
        log.warning("counted %d lines", await counts.backfill(db))
    await _check_version(db, write=upgrade)


async def _tables_there(db: BaseDBAsyncClient) -> bool:
    """Every table of ours is there (looked up, no lock taken): a store missing one (a
    partial restore, one dropped by hand) is made whole as an old one is."""
    tables = [
        m._meta.db_table
        for m in vars(models).values()
        if isinstance(m, type) and issubclass(m, Model) and m is not Model and m._meta.db_table
    ]
    if db.capabilities.dialect == "postgres":
        _, rows = await db.execute_query(
            "SELECT COUNT(to_regclass(t)) FROM unnest($1::text[]) AS t", [tables]
        )
        return int(rows[0][0]) == len(tables)
    _, rows = await db.execute_query("SELECT name FROM sqlite_master WHERE type = 'table'")
    return set(tables) <= {str(r[0]) for r in rows}


async def _commits_from_lines(db: BaseDBAsyncClient) -> None:
    """Layout 3 to 4: each host's last row id, from the rows it has (a one-off scan). Every
    agent of a fleet must then be upgraded: an older one's commits move no position."""
    lines, commits = LogLine._meta.db_table, HostCommit._meta.db_table
    await db.execute_script(
        f"INSERT INTO {commits} (host, last_id, at_ns) SELECT host, MAX(id), 0 "
        f"FROM {lines} WHERE true GROUP BY host ON CONFLICT (host) DO NOTHING"
    )


async def _gap_kinds(db: BaseDBAsyncClient) -> None:
    """Layout 5 to 6: the rate limit's spans, until now known by their reason's text (the
    last time text decides anything), get their kind."""
    await db.execute_script(
        f"UPDATE {Gap._meta.db_table} SET kind = '{RATE_GAP}' "
        "WHERE kind IS NULL AND reason LIKE 'rate limit%'"
    )


async def _add_columns(db: BaseDBAsyncClient) -> None:
    """Layout 2 to 3, then the partial index of levels: `logs --level warn` reads the rows
    at warn and above through it; most rows (info, or none) never enter it."""
    for table, column, kind in _ADDED:
        if column not in await _columns(db, table):
            log.warning("upgrading the store: %s gets a column %s", table, column)
            await db.execute_script(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
    await db.execute_script(
        f'CREATE INDEX IF NOT EXISTS "{LEVEL_INDEX}" ON "{LogLine._meta.db_table}" '
        "(timestamp_ns, id) WHERE level >= 4"
    )


async def _partitioned_lines(db: BaseDBAsyncClient) -> None:
    """PostgreSQL's lines table is partitioned by day (agent/storage/partitions.py): made
    here, before tortoise, whose CREATE TABLE IF NOT EXISTS then leaves it be and whose
    indexes go onto every partition."""
    table = LogLine._meta.db_table
    _, found = await db.execute_query("SELECT to_regclass($1)", [table])
    if found[0][0] is not None:
        if not await partitions.is_partitioned(db):
            raise SchemaTooOld(
                f"the table {table} is not partitioned by day: it was made by a development "
                "build of logagent; move its lines to a new database"
            )
        return
    await db.execute_script(partitions.partitioned_ddl(_lines_ddl(db)[0]))


def _lines_ddl(db: BaseDBAsyncClient) -> list[str]:
    """tortoise's statements for the lines table: its CREATE TABLE, then its indexes."""
    table = LogLine._meta.db_table
    return [
        s.strip()
        for s in get_schema_sql(db, safe=True).split(";\n")
        if f'ON "{table}"' in s or f'TABLE IF NOT EXISTS "{table}"' in s
    ]


TRIGRAM_INDEX = "log_lines_message_trgm"


async def _trigram_index(db: BaseDBAsyncClient) -> None:
    """`logs --grep` runs in PostgreSQL, and a trigram index lets a substring or a regex
    with a literal part find its rows without reading every line. Without the extension
    (pg_trgm is in postgresql-contrib; a database owner may create it) grep reads them all."""
    _, found = await db.execute_query("SELECT to_regclass($1)", [TRIGRAM_INDEX])
    if found[0][0] is not None:
        return  # made: CREATE INDEX IF NOT EXISTS would lock the table all the same
    try:
        await db.execute_script(
            "CREATE EXTENSION IF NOT EXISTS pg_trgm; "
            f'CREATE INDEX IF NOT EXISTS "{TRIGRAM_INDEX}" ON "{LogLine._meta.db_table}" '
            "USING gin (message gin_trgm_ops)"
        )
    except Exception as exc:  # the store works without it, only grep is slower
        log.warning("no trigram index for --grep (it reads every line instead): %s", exc)


async def _version(db: BaseDBAsyncClient) -> int | None:
    try:
        _, rows = await db.execute_query(
            f"SELECT version FROM {SchemaVersion._meta.db_table} WHERE id = 1"
        )
    except Exception:  # a store from before versions (read side: no such table)
        rows = []
    return int(rows[0][0]) if rows else None


async def _check_version(db: BaseDBAsyncClient, *, write: bool) -> None:
    table = SchemaVersion._meta.db_table
    found = await _version(db)
    if found is not None and found > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"the store is in layout {found}, newer than this logagent's {SCHEMA_VERSION}: "
            "upgrade logagent"
        )
    if not write and found is not None and found < SCHEMA_VERSION:
        raise SchemaTooOld(
            f"the store is in layout {found}, older than this logagent's {SCHEMA_VERSION}: "
            "start `logagent run` once to upgrade it in place"
        )
    if write and found != SCHEMA_VERSION:
        async with in_transaction("default") as conn:
            await conn.execute_query(f"DELETE FROM {table}")
            await conn.execute_query(
                f"INSERT INTO {table} (id, version) VALUES (1, {SCHEMA_VERSION})"
            )


async def _columns(db: BaseDBAsyncClient, table: str) -> list[str]:
    if db.capabilities.dialect == "postgres":
        _, rows = await db.execute_query(
            "SELECT column_name FROM information_schema.columns WHERE table_name = $1 "
            "AND table_schema = current_schema()",
            [table],
        )
    else:
        _, rows = await db.execute_query(f"SELECT name FROM pragma_table_info('{table}')")
    return [str(r[0]) for r in rows]


async def _rows_by_source_id(db: BaseDBAsyncClient) -> None:
    """Up to 0.1 (SQLite only), each line held its container's id and name as text.

    Now it holds `source_id`, its container's cursor row. Line ids are kept (a `logs -f`
    resumes by id); a container with lines but no cursor row gets one.
    """
    lines, cursors = LogLine._meta.db_table, ContainerCursor._meta.db_table
    if "container_id" not in await _columns(db, lines):
        return
    _, counted = await db.execute_query(f"SELECT COUNT(*) FROM {lines}")
    log.warning("upgrading the store to source ids: %d stored lines, kept", counted[0][0])
    create = _lines_ddl(db)
    async with in_transaction("default") as conn:
        await conn.execute_query(
            f"INSERT INTO {cursors} (host, container_id, container_name, stdout_n, stderr_n, "
            "tty_n, lines, bytes, updated_ns) "
            "SELECT host, container_id, MAX(container_name), 0, 0, 0, COUNT(*), "
            f"SUM(LENGTH(message)), 0 FROM {lines} WHERE true GROUP BY host, container_id "
            "ON CONFLICT (host, container_id) DO NOTHING"
        )
        await conn.execute_query(f"ALTER TABLE {lines} RENAME TO {lines}_old")
        _, indexes = await conn.execute_query(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
            "AND sql IS NOT NULL",
            [f"{lines}_old"],
        )
        for (name,) in indexes:  # their names are the new table's to take
            await conn.execute_query(f'DROP INDEX "{name}"')
        for statement in create:
            await conn.execute_query(statement)
        await conn.execute_query(
            f"INSERT INTO {lines} (id, host, source_id, stream, timestamp_ns, timestamp, "
            "message, flags) SELECT o.id, o.host, c.id, o.stream, o.timestamp_ns, o.timestamp, "
            f"o.message, o.flags FROM {lines}_old o JOIN {cursors} c "
            "ON c.host = o.host AND c.container_id = o.container_id ORDER BY o.id"
        )
        await conn.execute_query(f"DROP TABLE {lines}_old")
    log.warning("store upgraded")
