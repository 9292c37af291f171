"""`logagent web`: the viewer's HTTP side (aiohttp). It reads the store only, through its own
read connection, and never the Docker socket; every route is a GET.

Every response carries a strict Content-Security-Policy (scripts and styles from this
server only, no inline script, nothing from elsewhere), `nosniff` and no framing. A request
for another Host than the one served is refused (DNS rebinding of a loopback viewer).
"""

from __future__ import annotations

import json
import logging
import signal
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
from aiohttp import ClientConnectionResetError, web
from tortoise.backends.base.client import BaseDBAsyncClient

from agent import render
from agent.alerts.rules import AlertSettings
from agent.storage import outbox
from agent.storage.follow import Position, committed
from agent.storage.merged import MergedPages
from agent.storage.postgres import QUERY_CANCELED, sqlstate
from agent.storage.reader import (
    StoredRow,
    container_summary,
    open_store,
)
from agent.web.alerts import history_json, rules_json
from agent.web.answers import HEADERS, row_json
from agent.web.auth import ALLOWED, Access, Verdict, is_loopback
from agent.web.downloads import stream_download
from agent.web.histogram import histogram_json
from agent.web.live import LiveTails
from agent.web.pages import SEARCH_SCAN, Pages
from agent.web.query import (
    BadQuery,
    before_position,
    int_param,
    matching,
    parse_alerts_query,
    parse_histogram,
    parse_query,
)
from agent.web.services import service_of, services

log = logging.getLogger("logagent.web")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STATIC = Path(__file__).resolve().parent / "static"
FILES = {"app.js": "text/javascript", "app.css": "text/css"}  # what /static/ serves, only
MAX_PAGE = 1000
# PostgreSQL cancels a viewer's statement that runs longer (a search's regex is typed by
# whoever reaches the viewer; the store's other readers and its writer are not bounded).
STATEMENT_TIMEOUT_S = 30.0
TOKEN_COOKIE = "logagent_token"


class Viewer:
    def __init__(
        self,
        db: BaseDBAsyncClient,
        db_url: str,
        access: Access,
        host: str,
        port: int,
        alerts: AlertSettings | None = None,
    ):
        self.db = db
        self.db_url = db_url
        self.access = access
        self.alerts = alerts or AlertSettings()  # the rules shown; their URLs never are
        self.hosts = _served_hosts(host, port)
        self.live = LiveTails(db, db_url)
        self.pages = Pages(db)

    async def listen(self, stack: AsyncExitStack) -> None:
        await self.live.listen(stack)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/", self.index)
        app.router.add_get("/alerts", self.alerts_page)
        app.router.add_get("/login", self.login)
        app.router.add_get("/favicon.ico", self.no_icon)
        app.router.add_get("/static/{name}", self.static)
        app.router.add_get("/api/containers", self.containers)
        app.router.add_get("/api/lines", self.lines)
        app.router.add_get("/api/tail", self.tail)
        app.router.add_get("/api/histogram", self.histogram)
        app.router.add_get("/api/download", self.download)
        app.router.add_get("/api/alerts", self.alert_history)
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.hosts is not None and request.host.lower() not in self.hosts:
            response: web.StreamResponse = web.Response(status=421, text="wrong host\n")
        else:
            verdict = ALLOWED  # /login checks the token it is given itself
            if request.path != "/login":
                authorization = request.headers.get("Authorization")
                cookie = request.cookies.get(TOKEN_COOKIE)
                verdict = await self.access.check(authorization, cookie, request.remote)
            if verdict.allowed:
                response = await self._answer(request, handler)
            else:
                response = self._refused(verdict)
        if not response.prepared:
            response.headers.update(HEADERS)
        return response

    async def _answer(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except BadQuery as exc:
            return web.json_response({"error": str(exc)}, status=400)
        except web.HTTPException as exc:  # 404, 405: with the same headers as the rest
            return web.Response(status=exc.status, text=f"{exc.reason}\n")
        except ClientConnectionResetError:
            # The client went away mid-response (a download or a tail closed): not an error.
            # aiohttp's writer raises this type for a closing transport, and only then.
            log.debug("%s %s: the client went away", request.method, request.path_qs[:200])
            return web.Response(status=204)  # never sent: aiohttp finds the transport closed
        except Exception as exc:
            if sqlstate(exc) != QUERY_CANCELED:
                raise
            said = f"the store took over {STATEMENT_TIMEOUT_S:.0f} s: narrow the view or the search"
            log.warning("%s %s: %s", request.method, request.path_qs[:200], said)
            if request.writer.output_size:  # a stream begun: it ends here, cut
                raise
            return web.json_response({"error": said}, status=503)

    def _refused(self, verdict: Verdict) -> web.StreamResponse:
        if verdict.retry_after:
            return web.Response(
                status=429,
                text=f"too many failed logins: try again in {verdict.retry_after} s\n",
                headers={"Retry-After": str(verdict.retry_after)},
            )
        response = web.Response(status=401, text="log in: /login?token=… or a user\n")
        if self.access.users:
            response.headers["WWW-Authenticate"] = 'Basic realm="logagent"'
        return response

    async def index(self, _request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Content-Type": "text/html"})

    async def alerts_page(self, _request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "alerts.html", headers={"Content-Type": "text/html"})

    async def no_icon(self, _request: web.Request) -> web.StreamResponse:
        return web.Response(status=204)

    async def static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in FILES:  # a fixed list: no path from a request reaches the disk
            raise web.HTTPNotFound()
        return web.FileResponse(STATIC / name, headers={"Content-Type": FILES[name]})

    async def login(self, request: web.Request) -> web.StreamResponse:
        token = request.query.get("token", "")
        verdict = self.access.check_token(token, request.remote)
        if verdict.retry_after:
            return self._refused(verdict)
        if not verdict.allowed:
            return web.Response(status=401, text="wrong token\n")
        response = web.Response(status=302, headers={"Location": "/"})
        response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict")
        return response

    async def containers(self, _request: web.Request) -> web.StreamResponse:
        rows = await container_summary(self.db)
        served = await service_of(self.db)
        out = [
            {
                "id": r["container_id"],
                "name": r["container_name"],
                "host": r["host"],
                "project": r.get("project") or "",
                "service": served.get((r["host"], r["container_id"]), ""),
                "state": r.get("state") or "",
                "lines": r["lines"],
                "last": render.format_ns(r["last_ns"]),
                "last_ns": r["last_ns"],
                "gaps": r["gaps"],
            }
            for r in rows
        ]
        out.sort(key=lambda c: (c["host"], c["project"], c["name"]))
        grouped = services(out)
        for c in out:
            del c["last_ns"]  # an int past 2**53: the page reads `last`
        return web.json_response({"containers": out, "services": grouped})

    async def lines(self, request: web.Request) -> web.StreamResponse:
        """NDJSON, newest first: a page before `before` (`ns:id`), or, with a search, pages
        of matches sent as they are found, until `limit` of them or the history's start.
        With `at` (a row id) and no `before`: the first chunk holds the lines after that one
        (half the limit), then it and the ones before, as a scroll back goes on."""
        view = await parse_query(self.db, request.query)
        limit = int_param(request.query, "limit", 200, 1, MAX_PAGE)
        before = before_position(request.query.get("before"))
        # The newest page says where its live tail takes over: what was committed before it.
        position = None if before is not None else (await committed(self.db)).token()
        newer: list[StoredRow] = []
        # the first chunk's gaps and events: up to `before`, or the view's end
        ceiling = before[0] if before else view.flt.until_ns
        linked = view.at if before is None else None  # a line's link, first asked
        if linked is not None:
            newer, more = await self.pages.after(view, linked, limit // 2)
            if more:  # the newest lines are not shown: no live tail below these (limit=1:
                # none of them is, only the line itself)
                position, ceiling = None, (newer[-1] if newer else linked).timestamp_ns + 1
            before = (linked.timestamp_ns, linked.id + 1)  # from the line itself, down
        response = web.StreamResponse(headers={**HEADERS, "Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        found = scanned = 0
        want = limit - len(newer)
        first = True
        # Each container's rows read once however many steps a search takes (storage/merged.py)
        pages = MergedPages(self.db, view.flt, before, backward=True,
                            page=want if view.search is None else SEARCH_SCAN)  # fmt: skip
        while True:
            top = ceiling if first else before[0] if before else None
            step = want - found if view.search is None else SEARCH_SCAN
            page = await pages.take(step)
            scanned += len(page)
            matched = await matching(view.search, page)
            rows = matched[: want - found]
            found += len(rows)
            done = len(page) < step and len(rows) == len(matched)
            if len(rows) < len(matched):  # cut by the limit: go on after the last one sent
                before = (rows[-1].timestamp_ns, rows[-1].id)
            elif page:
                before = (page[-1].timestamp_ns, page[-1].id)
            bottom = view.flt.since_ns if done or before is None else before[0]
            chunk: dict[str, Any] = {
                "rows": [row_json(r) for r in [*reversed(newer), *rows]],
                "gaps": await self.pages.gaps(view.flt, bottom, top),
                "events": await self.pages.events(view.flt, bottom, top),
                "next": f"{before[0]}:{before[1]}" if before else None,
                "done": done,
                "scanned": scanned if view.search is not None else 0,
                "position": position,
            }
            if linked is not None and first:  # the first chunk of a line's link
                chunk["at"] = {"id": linked.id, "cid": linked.container_id,
                               "newer": position is None}  # fmt: skip
            newer, first = [], False
            await response.write(json.dumps(chunk).encode() + b"\n")
            if done or found >= want:
                break
        await response.write_eof()
        return response

    async def histogram(self, request: web.Request) -> web.StreamResponse:
        """The view's lines per time bucket, from the stored counts (web/histogram.py)."""
        view = await parse_query(self.db, request.query)
        asked = parse_histogram(request.query)
        return web.json_response(await histogram_json(self.db, self.pages, view, asked))

    async def alert_history(self, request: web.Request) -> web.StreamResponse:
        """The configured rules (never a destination's URL) and the newest alerts in the
        outbox, each with its deliveries and a link to its lines (web/alerts.py)."""
        asked = parse_alerts_query(request.query)
        counts = await outbox.per_rule(self.db)
        rows = await outbox.history(self.db, rule=asked.rule, limit=asked.limit)
        body = {
            "rules": rules_json(self.alerts, counts),
            "alerts": history_json(rows),
            "rule": asked.rule,
            "more": len(rows) == asked.limit,  # the limit reached: older ones may be stored
        }
        return web.json_response(body)

    async def download(self, request: web.Request) -> web.StreamResponse:
        """Exactly what `logagent logs` prints for the same filter (web/downloads.py)."""
        return await stream_download(request, self.db, await parse_query(self.db, request.query))

    async def tail(self, request: web.Request) -> web.StreamResponse:
        """Server-Sent Events: rows committed after `after` (a position the newest page of
        /api/lines gave; a reconnecting EventSource sends the last event's id instead)."""
        view = await parse_query(self.db, request.query)
        given = request.headers.get("Last-Event-ID") or request.query.get("after")
        try:
            after = Position.parse(given) if given else await committed(self.db)
        except ValueError as exc:
            raise BadQuery(str(exc)) from None
        return await self.live.serve(request, view, after)


def _served_hosts(host: str, port: int) -> set[str] | None:
    """The Host headers a loopback viewer answers to; None (any) on another address,
    which a token or a password guards."""
    if not is_loopback(host):
        return None
    names = {"localhost", "127.0.0.1", "[::1]", host if ":" not in host else f"[{host}]"}
    return {f"{n}:{port}" for n in names} | (names if port == 80 else set())


async def serve(db_url: str, host: str, port: int, access: Access, alerts: AlertSettings) -> int:
    """Serve the viewer until interrupted; the store is opened for reading only."""
    opened = open_store(db_url, statement_timeout_s=STATEMENT_TIMEOUT_S)
    async with opened as db, AsyncExitStack() as stack:
        viewer = Viewer(db, db_url, access, host, port, alerts)
        await viewer.listen(stack)
        # Live tails never end on their own: on shutdown they are given a second, not 60.
        runner = web.AppRunner(
            viewer.app(), access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
            log.info("viewer on http://%s:%d/ (%s)", host, port,
                     "open: loopback" if access.open else "token or users required")  # fmt: skip
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    break
        finally:
            with anyio.CancelScope(shield=True):
                await runner.cleanup()
    return 0
