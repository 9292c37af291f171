"""The viewer's live tails (Server-Sent Events of rows as they are committed): at most
`max_tails` at once, each following the store through the follow seam (storage/follow.py),
woken by PostgreSQL's commits through one shared listener, or polling SQLite."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack, aclosing

import anyio
from aiohttp import web
from tortoise.backends.base.client import BaseDBAsyncClient

from agent.storage.follow import Position, Waker, follow, signal_for
from agent.web.answers import HEADERS, row_json
from agent.web.query import ViewQuery, matching

# Live tails at once, per viewer: each polls SQLite or shares the one PostgreSQL listener,
# and a local user must not be able to starve the store with thousands.
MAX_TAILS = 64


class LiveTails:
    def __init__(self, db: BaseDBAsyncClient, db_url: str) -> None:
        self.db, self.db_url = db, db_url
        self.poll_seconds = 0.2  # SQLite's live tail; PostgreSQL is woken by commits
        self.waker: Waker | None = None  # PostgreSQL: one listener shared by every tail
        self.max_tails = MAX_TAILS
        self.open = 0

    async def listen(self, stack: AsyncExitStack) -> None:
        """PostgreSQL: one LISTEN connection for every tail of this viewer, held by `stack`
        (a connection per tail let 110 tails use up the server's slots)."""
        if str(self.db.capabilities.dialect) == "postgres":
            self.waker = await signal_for(stack, self.db_url)

    async def serve(
        self, request: web.Request, view: ViewQuery, after: Position
    ) -> web.StreamResponse:
        """The view's rows committed after `after`, as they come; a 503 past `max_tails`."""
        if self.open >= self.max_tails:
            return web.Response(
                status=503,
                text=f"{self.open} live tails are open, the most this viewer serves\n",
                headers={"Retry-After": "10"},
            )
        self.open += 1
        try:
            return await self._serve(request, view, after)
        finally:
            self.open -= 1

    async def _serve(
        self, request: web.Request, view: ViewQuery, after: Position
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={**HEADERS, "Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        new = follow(
            self.db_url,
            self.db,
            view.flt,
            after=after,
            poll_seconds=self.poll_seconds,
            waker=self.waker,
        )
        said = anyio.current_time()
        async with aclosing(new) as stored:
            async for rows, reached in stored:
                shown = await matching(view.search, rows)
                if shown:
                    data = json.dumps([row_json(r) for r in shown])
                    await response.write(
                        f"event: rows\ndata: {data}\nid: {reached.token()}\n\n".encode()
                    )
                elif anyio.current_time() - said < 15:
                    continue
                else:  # a comment now and then: a dead client is found out
                    await response.write(b": keep-alive\n\n")
                said = anyio.current_time()
        return response
