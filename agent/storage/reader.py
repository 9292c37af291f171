"""The read side: what the CLI shows, straight from the store (never from the daemon)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from tortoise.context import TortoiseContext
from tortoise.expressions import Q

from agent.docker.timestamps import format_timestamp
from agent.storage.models import Gap
from agent.storage.writer import StorageError, _tortoise_config


@dataclass(frozen=True)
class GapView:
    host: str
    container_id: str
    container_name: str
    reason: str
    start: str | None
    end: str | None
    recorded: str


@asynccontextmanager
async def open_store(db_url: str) -> AsyncIterator[None]:
    """A read connection of its own (SQLite WAL: readers never block the agent's writer)."""
    ctx = TortoiseContext()
    async with ctx:
        try:
            await ctx.init(config=_tortoise_config(db_url))
            await ctx.generate_schemas(safe=True)
        except StorageError:
            raise
        except Exception as exc:
            raise StorageError(f"cannot open database {db_url!r}: {exc}") from None
        yield


async def list_gaps(container: str | None = None) -> list[GapView]:
    query = Gap.all().order_by("id")
    if container:
        query = query.filter(Q(container_name=container) | Q(container_id__startswith=container))
    return [
        GapView(
            g.host,
            g.container_id,
            g.container_name,
            g.reason,
            format_timestamp(g.from_ns) if g.from_ns is not None else None,
            format_timestamp(g.to_ns) if g.to_ns is not None else None,
            format_timestamp(g.created_ns),
        )
        for g in await query
    ]
