"""The viewer's downloads: exactly what `logagent logs` prints for the same filter
(`--json` with format=json), oldest first, streamed; with gzip=1 compressed as it goes."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator

from aiohttp import web
from tortoise.backends.base.client import BaseDBAsyncClient

from agent import render
from agent.storage.follow import committed, history
from agent.storage.reader import several_hosts
from agent.web.answers import HEADERS
from agent.web.query import ViewQuery, matching, parse_download


async def stream_download(
    request: web.Request, db: BaseDBAsyncClient, view: ViewQuery
) -> web.StreamResponse:
    """The view's lines as a file, streamed (a `.gz` whose text is that, with gzip=1)."""
    asked = parse_download(request.query)
    kind = "application/x-ndjson" if asked.as_json else "text/plain; charset=utf-8"
    response = web.StreamResponse(
        headers={
            **HEADERS,
            "Content-Type": "application/gzip" if asked.gzip else kind,
            "Content-Disposition": f'attachment; filename="{asked.filename}"',
        }
    )
    await response.prepare(request)
    # gzip's own framing (wbits 31): a file `gunzip` and every browser read as it is
    packer = zlib.compressobj(6, zlib.DEFLATED, 31) if asked.gzip else None
    async for text in view_text(db, view, as_json=asked.as_json):
        data = text.encode()
        data = packer.compress(data) if packer is not None else data
        if data:
            await response.write(data)
    if packer is not None:
        await response.write(packer.flush())
    await response.write_eof()
    return response


async def view_text(db: BaseDBAsyncClient, view: ViewQuery, *, as_json: bool) -> AsyncIterator[str]:
    """The view as `logagent logs` writes it, a page at a time."""
    upto = await committed(db)
    flt = view.flt  # several hosts' containers: each line says its host, as `logs` prints
    hosts = not as_json and await several_hosts(db, flt.container_ids, flt.host)
    async for page in history(db, flt, upto=upto):
        page = await matching(view.search, page)
        yield render.rows_text(page, matches=None, as_json=as_json, prefix=view.prefix, hosts=hosts)
