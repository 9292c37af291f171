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
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from aiohttp import ClientConnectionResetError, web
from tortoise.backends.base.client import BaseDBAsyncClient

from agent import render
from agent.level_names import level_of_word
from agent.storage.follow import Position, Waker, committed, follow, history
from agent.storage.postgres import commit_signal
from agent.storage.reader import (
    LogFilter,
    StoredRow,
    container_summary,
    gaps_between,
    older,
    open_store,
    resolve_containers,
    where_matched,
)
from agent.web.auth import ALLOWED, Access, Verdict, is_loopback
from agent.when import parse_when

log = logging.getLogger("logagent.web")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STATIC = Path(__file__).resolve().parent / "static"
FILES = {"app.js": "text/javascript", "app.css": "text/css"}  # what /static/ serves, only
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
MAX_PAGE = 1000
SEARCH_SCAN = 2000  # rows read per step of a search, whose matches are sent as found
TOKEN_COOKIE = "logagent_token"
# Live tails at once, per viewer: each polls SQLite or shares the one PostgreSQL listener,
# and a local user must not be able to starve the store with thousands.
MAX_TAILS = 64
# Bounds of what a URL may ask (aiohttp caps the request line at 8 KiB besides).
MAX_REFS = 100  # containers named in one view
MAX_TEXT = 255  # characters of a container reference or a host: the columns' width
MAX_SEARCH = 1000  # characters of a search
MAX_WHEN = 64  # characters of a since or until
_INT64 = range(-(2**63), 2**63)


class BadQuery(ValueError):
    """A query parameter the viewer cannot use: a 400 with the reason."""


@dataclass(frozen=True)
class ViewQuery:
    """What the page asks for, from its URL: the filter, and a search on top of it."""

    flt: LogFilter
    search: Callable[[str], bool] | None  # SQLite: matched here (RE2); PostgreSQL: in SQL
    prefix: bool  # several containers: the text download names each line's container


async def parse_query(db: BaseDBAsyncClient, params: Any) -> ViewQuery:
    """The view a URL asks for. Every parameter is bounded here, before a response begins:
    anything else is a BadQuery (a 400 with the reason), never a 500 or a cut body."""
    refs = params.getall("c", [])
    if len(refs) > MAX_REFS:
        raise BadQuery(f"c: {len(refs)} containers, more than the {MAX_REFS} a view shows")
    for ref in refs:
        _text("c", ref, MAX_TEXT)
    try:
        ids = await resolve_containers(db, refs) if refs else []
    except LookupError as exc:
        raise BadQuery(str(exc)) from None
    since, until = _when(params, "since"), _when(params, "until")
    stream = params.get("stream") or ""
    if stream and stream not in ("stdout", "stderr", "tty"):
        raise BadQuery(f"stream: {stream[:40]!r} is not stdout, stderr or tty")
    level = None
    if word := params.get("level"):
        # ASCII only: level_of_word reads "²" as a number (str.isdigit), which int() refuses
        level = level_of_word(word) if word.isascii() and len(word) <= 16 else None
        if level is None:
            raise BadQuery(f"level: {word[:40]!r} is not a level")
    text = _text("q", params.get("q") or "", MAX_SEARCH) or None
    expression = text if text is None or params.get("re") == "1" else _literal(text)
    try:
        pattern, search = await where_matched(db, expression, "search")
    except ValueError as exc:
        raise BadQuery(str(exc)) from None
    flt = LogFilter(
        tuple(ids),
        since,
        until,
        (stream,) if stream else (),
        _text("host", params.get("host") or "", MAX_TEXT) or None,
        pattern,
        level,
    )
    return ViewQuery(flt, search, len(ids) != 1)


def _text(key: str, text: str, most: int) -> str:
    """A text parameter, bounded: a NUL is never stored (the writer stores U+FFFD), and
    PostgreSQL refuses one in a query."""
    if len(text) > most:
        raise BadQuery(f"{key}: {len(text)} characters, more than {most}")
    if "\x00" in text:
        raise BadQuery(f"{key}: a NUL character, which no stored value holds")
    return text


def _when(params: Any, key: str) -> int | None:
    text = params.get(key)
    if not text:
        return None
    if not text.isascii() or len(text) > MAX_WHEN:  # float() and re's \d read "١٢" as 12
        raise BadQuery(f"{key}: {text[:40]!r} is not an RFC 3339 time, a duration or seconds")
    try:
        return parse_when(text)
    except ValueError as exc:
        raise BadQuery(f"{key}: {exc}") from None


_META = frozenset(".^$*+?()[]{}|\\")  # what means something to RE2 and to PostgreSQL alike


def _literal(text: str) -> str:
    """A substring as a pattern: its regex characters escaped, nothing else (RE2 refuses a
    backslash before a letter or a non-ASCII character)."""
    return "".join("\\" + ch if ch in _META else ch for ch in text)


def row_json(row: StoredRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "host": row.host,
        "cid": row.container_id,
        "name": row.container_name,
        "stream": row.stream,
        "ns": str(row.timestamp_ns),  # text: a JavaScript number holds 53 bits, not 63
        "ts": row.rfc3339,
        "msg": row.message,
        "flags": row.flags,
        "level": row.level,
    }


class Viewer:
    def __init__(self, db: BaseDBAsyncClient, db_url: str, access: Access, host: str, port: int):
        self.db = db
        self.db_url = db_url
        self.access = access
        self.hosts = _served_hosts(host, port)
        self.poll_seconds = 0.2  # SQLite's live tail; PostgreSQL is woken by commits
        self.waker: Waker | None = None  # PostgreSQL: one listener shared by every tail
        self.max_tails = MAX_TAILS
        self.tails = 0

    async def listen(self, stack: AsyncExitStack) -> None:
        """PostgreSQL: one LISTEN connection for every tail of this viewer, held by `stack`
        (a connection per tail let 110 tails use up the server's slots)."""
        if str(self.db.capabilities.dialect) == "postgres":
            self.waker = await stack.enter_async_context(commit_signal(self.db_url))

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/", self.index)
        app.router.add_get("/login", self.login)
        app.router.add_get("/favicon.ico", self.no_icon)
        app.router.add_get("/static/{name}", self.static)
        app.router.add_get("/api/containers", self.containers)
        app.router.add_get("/api/lines", self.lines)
        app.router.add_get("/api/tail", self.tail)
        app.router.add_get("/api/download", self.download)
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
        out = [
            {
                "id": r["container_id"],
                "name": r["container_name"],
                "host": r["host"],
                "project": r.get("project") or "",
                "state": r.get("state") or "",
                "lines": r["lines"],
                "last": render.format_ns(r["last_ns"]),
                "gaps": r["gaps"],
            }
            for r in rows
        ]
        out.sort(key=lambda c: (c["host"], c["project"], c["name"]))
        return web.json_response({"containers": out})

    async def lines(self, request: web.Request) -> web.StreamResponse:
        """NDJSON, newest first: a page before `before` (`ns:id`), or, with a search, pages
        of matches sent as they are found, until `limit` of them or the history's start."""
        view = await parse_query(self.db, request.query)
        limit = _int(request.query, "limit", 200, 1, MAX_PAGE)
        before = _position(request.query.get("before"))
        # The newest page says where its live tail takes over: what was committed before it.
        position = None if before is not None else (await committed(self.db)).token()
        response = web.StreamResponse(headers={**HEADERS, "Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        found = scanned = 0
        while True:
            top = before[0] if before else None
            step = limit - found if view.search is None else SEARCH_SCAN
            page = await older(self.db, view.flt, before=before, limit=step)
            scanned += len(page)
            matched = page if view.search is None else [r for r in page if view.search(r.message)]
            rows = matched[: limit - found]
            found += len(rows)
            done = len(page) < step and len(rows) == len(matched)
            if len(rows) < len(matched):  # cut by the limit: go on after the last one sent
                before = (rows[-1].timestamp_ns, rows[-1].id)
            elif page:
                before = (page[-1].timestamp_ns, page[-1].id)
            bottom = None if done or before is None else before[0]
            chunk = {
                "rows": [row_json(r) for r in rows],
                "gaps": await self._gaps(view.flt, bottom, top),
                "next": f"{before[0]}:{before[1]}" if before else None,
                "done": done,
                "scanned": scanned if view.search is not None else 0,
                "position": position,
            }
            await response.write(json.dumps(chunk).encode() + b"\n")
            if done or found >= limit:
                break
        await response.write_eof()
        return response

    async def _gaps(self, flt: LogFilter, lo: int | None, hi: int | None) -> list[dict[str, Any]]:
        """The gaps of the view's containers from `lo` (inclusive) to `hi` (exclusive)."""
        found = await gaps_between(self.db, flt.container_ids, lo, hi)
        return [
            {"name": g["container_name"], "cid": g["container_id"], "reason": g["reason"],
             "ns": str(g["ns"])}
            for g in found
        ]  # fmt: skip

    async def tail(self, request: web.Request) -> web.StreamResponse:
        """Server-Sent Events: rows committed after `after` (a position the newest page of
        /api/lines gave; a reconnecting EventSource sends the last event's id instead)."""
        view = await parse_query(self.db, request.query)
        given = request.headers.get("Last-Event-ID") or request.query.get("after")
        try:
            after = Position.parse(given) if given else await committed(self.db)
        except ValueError as exc:
            raise BadQuery(str(exc)) from None
        if self.tails >= self.max_tails:
            return web.Response(
                status=503,
                text=f"{self.tails} live tails are open, the most this viewer serves\n",
                headers={"Retry-After": "10"},
            )
        self.tails += 1
        try:
            return await self._tail(request, view, after)
        finally:
            self.tails -= 1

    async def _tail(
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
                shown = [r for r in rows if view.search is None or view.search(r.message)]
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

    async def download(self, request: web.Request) -> web.StreamResponse:
        """Exactly what `logagent logs` prints for the same filter (`--json` with
        format=json), oldest first, streamed."""
        view = await parse_query(self.db, request.query)
        as_json = request.query.get("format") == "json"
        name = "logs.jsonl" if as_json else "logs.txt"
        response = web.StreamResponse(
            headers={
                **HEADERS,
                "Content-Type": "application/x-ndjson" if as_json else "text/plain; charset=utf-8",
                "Content-Disposition": f'attachment; filename="{name}"',
            }
        )
        await response.prepare(request)
        async for text in view_text(self.db, view, as_json=as_json):
            await response.write(text.encode())
        await response.write_eof()
        return response


async def view_text(db: BaseDBAsyncClient, view: ViewQuery, *, as_json: bool) -> AsyncIterator[str]:
    """The view as `logagent logs` writes it, a page at a time."""
    upto = await committed(db)
    async for page in history(db, view.flt, upto=upto):
        yield render.rows_text(page, matches=view.search, as_json=as_json, prefix=view.prefix)


def _number(key: str, text: str) -> int:
    """A signed 64-bit integer written in ASCII digits: `str.isdigit` also takes "²" and
    "٣", which int() refuses or reads, and a number past int64 fails in SQL mid-response."""
    digits = text[1:] if text.startswith("-") else text
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 19:
        raise BadQuery(f"{key}: {text[:40]!r} is not a number (ASCII digits, 64-bit)")
    value = int(text)
    if value not in _INT64:
        raise BadQuery(f"{key}: {text[:40]!r} is out of range (64-bit)")
    return value


def _int(params: Any, key: str, default: int, low: int, high: int) -> int:
    text = params.get(key)
    if not text:
        return default
    value = _number(key, text)
    if not low <= value <= high:
        raise BadQuery(f"{key}: {value} is not between {low} and {high}")
    return value


def _position(text: str | None) -> tuple[int, int] | None:
    """`before`: "ns:id", a row's nanoseconds (signed) and its id, as /api/lines gave them."""
    if not text:
        return None
    ns, sep, row = text.partition(":")
    if not sep or row.startswith("-"):
        raise BadQuery(f"before: {text[:60]!r} is not ns:id")
    return _number("before", ns), _number("before", row)


def _served_hosts(host: str, port: int) -> set[str] | None:
    """The Host headers a loopback viewer answers to; None (any) on another address,
    which a token or a password guards."""
    if not is_loopback(host):
        return None
    names = {"localhost", "127.0.0.1", "[::1]", host if ":" not in host else f"[{host}]"}
    return {f"{n}:{port}" for n in names} | (names if port == 80 else set())


async def serve(db_url: str, host: str, port: int, access: Access) -> int:
    """Serve the viewer until interrupted; the store is opened for reading only."""
    async with open_store(db_url) as db, AsyncExitStack() as stack:
        viewer = Viewer(db, db_url, access, host, port)
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
