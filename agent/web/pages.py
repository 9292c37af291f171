"""What a page of the viewer's lines carries beside them: the lines after a linked one
(`at`), and the gaps and containers' lives of the span it covers."""

from __future__ import annotations

from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

from agent import render
from agent.storage.life import list_life
from agent.storage.merged import MergedPages
from agent.storage.reader import LogFilter, StoredRow, gaps_between
from agent.web.query import ViewQuery, matching

SEARCH_SCAN = 2000  # rows read per step of a search, whose matches are sent as found
AT_SCAN = 50 * SEARCH_SCAN  # rows read at most for the lines after a linked one (`at`)


class Pages:
    def __init__(self, db: BaseDBAsyncClient) -> None:
        self.db = db

    async def after(
        self, view: ViewQuery, row: StoredRow, want: int
    ) -> tuple[list[StoredRow], bool]:
        """Up to `want` lines of the view after `row`, oldest first, and whether more follow
        (also when AT_SCAN rows were read without finding them all: then, more may)."""
        found: list[StoredRow] = []
        scanned = 0
        step = want + 1 if view.search is None else SEARCH_SCAN
        pages = MergedPages(self.db, view.flt, (row.timestamp_ns, row.id), backward=False,
                            page=step)  # fmt: skip
        while scanned < AT_SCAN:
            page = await pages.take(step)
            scanned += len(page)
            found += await matching(view.search, page)
            if len(found) > want:
                return found[:want], True
            if len(page) < step:
                return found, False
        return found, True

    async def gaps(self, flt: LogFilter, lo: int | None, hi: int | None) -> list[dict[str, Any]]:
        """The gaps of the view's containers from `lo` (inclusive) to `hi` (exclusive)."""
        found = await gaps_between(self.db, flt.container_ids, lo, hi)
        return [
            {"name": g["container_name"], "cid": g["container_id"], "reason": g["reason"],
             "ns": str(g["ns"])}
            for g in found
        ]  # fmt: skip

    async def events(self, flt: LogFilter, lo: int | None, hi: int | None) -> list[dict[str, Any]]:
        """The view's containers' lives (storage/life.py) from `lo` to before `hi`."""
        found = await list_life(
            self.db, container_ids=flt.container_ids, host=flt.host, since_ns=lo, until_ns=hi,
            limit=1000, newest=True,
        )  # fmt: skip
        return [
            {"name": e.container_name, "cid": e.container_id, "ns": str(e.time_ns),
             "ts": e.time, "what": render.life_text(e)}
            for e in found
        ]  # fmt: skip
