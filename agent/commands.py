"""What the read-side commands do: the store in, text out. `cli.py` only parses arguments."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from functools import partial
from typing import Any, TextIO

import aiohttp
from tortoise.backends.base.client import BaseDBAsyncClient

from agent import render
from agent.level_names import level_of_word
from agent.storage import outbox, search_index
from agent.storage.db import StorageError
from agent.storage.errors import describe, unreachable
from agent.storage.follow import committed, follow, history
from agent.storage.gaps import list_gaps
from agent.storage.life import list_life
from agent.storage.reader import (
    LogFilter,
    StoredRow,
    container_summary,
    fleet_summary,
    open_store,
    resolve_containers,
    service_containers,
    several_hosts,
    where_matched,
)
from agent.timeline import Timeline
from agent.when import parse_when
from agent.where import both, checker, leaves
from agent.where import parse as parse_where


@dataclasses.dataclass(frozen=True)
class LogsOptions:
    containers: tuple[str, ...] = ()
    since: str | None = None
    until: str | None = None
    streams: tuple[str, ...] = ()
    grep: str | None = None
    tail: int | None = None
    host: str | None = None
    level: str | None = None  # a name of agent/shaping/levels.py: this level and above
    timestamps: bool = False
    follow: bool = False
    json: bool = False
    raw: bool = False
    poll_seconds: float = 0.2
    events: bool = False  # the containers' lives among their lines (storage/life.py)
    where: str | None = None  # conditions on a JSON or logfmt line's fields (agent/where.py)
    service: str | None = None  # PROJECT/SERVICE (compose) or a name: all its containers


class UsageError(ValueError):
    """A wrong argument: printed as one line, exit code 2."""


@asynccontextmanager
async def reading(db_url: str, *, once: bool = True) -> AsyncIterator[BaseDBAsyncClient]:
    """The store, for a read-side command. PostgreSQL connects at the first query, not at
    the opening: a server that is away or refuses us, then or later (`logs -f`), is one
    StorageError saying what to check (cli.py prints it as a line), not asyncpg's traceback.
    `once`: the command reads and ends (not `logs -f`).
    """
    try:
        async with open_store(db_url, snapshot_ok=once) as db:
            yield db
    except StorageError:
        raise
    except Exception as exc:
        if unreachable(exc) is None:
            raise
        raise StorageError(f"cannot read database {describe(db_url, exc)}") from exc


async def logs(db_url: str, opts: LogsOptions, out: TextIO = sys.stdout) -> int:
    """Print stored lines like `docker logs`: history first, then (-f) new rows as stored."""
    try:
        since = parse_when(opts.since) if opts.since is not None else None
        until = parse_when(opts.until) if opts.until is not None else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    async with reading(db_url, once=not opts.follow) as db:
        try:
            pattern, matches = await where_matched(db, opts.grep)
            ids = await resolve_containers(db, list(opts.containers))
            if opts.service is not None:
                ids += [c for c in await service_containers(db, opts.service) if c not in ids]
            conditions = parse_where(opts.where) if opts.where is not None else ()
        except (LookupError, ValueError) as exc:
            raise UsageError(str(exc)) from None
        level = level_of_word(opts.level) if opts.level is not None else None
        flt = LogFilter(tuple(ids), since, until, opts.streams, opts.host, pattern, level,
                        leaves(conditions))  # fmt: skip
        matches = both(matches, checker(conditions)) if conditions else matches
        if matches is not None and opts.grep is not None:  # SQLite: its index narrows
            flt = await search_index.narrowed(db, flt, opts.grep)
        prefix = len(ids) != 1
        hosts = await several_hosts(db, ids, opts.host)  # then each line says its host
        seen = await committed(db)  # history is what is committed now; -f takes over there

        life = partial(list_life, db, container_ids=ids, host=opts.host, since_ns=since)
        timeline = Timeline(await life(until_ns=until)) if opts.events else None
        show = partial(
            render.event_line,
            as_json=opts.json,
            timestamps=opts.timestamps,
            prefix=prefix,
            hosts=hosts,
        )

        def emit(rows: list[StoredRow]) -> None:
            for piece in timeline.split(rows) if timeline is not None else [rows]:
                if isinstance(piece, list):
                    out.write(
                        render.rows_text(
                            piece,
                            matches=matches,
                            as_json=opts.json,
                            timestamps=opts.timestamps,
                            prefix=prefix,
                            raw=opts.raw,
                            hosts=hosts,
                        )
                    )
                else:
                    out.write(show(piece))
            out.flush()

        def emit_rest() -> None:  # the events after every line so far
            if timeline is not None:
                out.write("".join(show(event) for event in timeline.rest()))
                out.flush()

        shown = False
        async for page in history(db, flt, upto=seen, tail=opts.tail):
            if timeline is not None and opts.tail is not None and page:
                timeline.drop_before(page[0].timestamp_ns)  # only the tail's span
            shown = shown or bool(page)
            emit(page)
        if timeline is not None and opts.tail is not None and not shown:
            timeline.rest()  # no line in the tail (--tail 0): no span, no event
        emit_rest()
        if opts.follow:
            new = follow(db_url, db, flt, after=seen, poll_seconds=opts.poll_seconds)
            async with aclosing(new) as stored:
                async for rows, _ in stored:
                    if timeline is not None:  # the events stored since the last look
                        timeline.add(await life(after_id=timeline.last_id))
                    if rows:
                        emit(rows)
                    emit_rest()
    return 0


async def gaps(
    db_url: str,
    container: str | None,
    as_json: bool,
    out: TextIO = sys.stdout,
    forward: str | None = None,
) -> int:
    async with reading(db_url):
        found = await list_gaps(container, forward)
    for gap in found:
        if as_json:
            out.write(json.dumps(dataclasses.asdict(gap)) + "\n")
        else:
            span = f"{gap.start or '?'} .. {gap.end or '?'}"
            said = f"{gap.container_name}\t{gap.container_id[:12]}\t{span}\t{gap.reason}"
            out.write(render.terminal_safe(said) + "\n")  # names and reasons are anyone's
    return 0


async def events(
    db_url: str,
    container: str | None,
    *,
    since: str | None = None,
    until: str | None = None,
    host: str | None = None,
    as_json: bool = False,
    out: TextIO = sys.stdout,
) -> int:
    """Containers' lives as stored (start, die and its exit code, kill, oom, health), in
    time order: also of containers long gone."""
    try:
        since_ns = parse_when(since) if since is not None else None
        until_ns = parse_when(until) if until is not None else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    async with reading(db_url) as db:
        found = await list_life(
            db, container=container, host=host, since_ns=since_ns, until_ns=until_ns
        )
    for e in found:
        if as_json:
            out.write(json.dumps(dataclasses.asdict(e)) + "\n")
            continue
        name = render.terminal_safe(e.container_name)
        out.write(f"{e.time}\t{name}\t{e.container_id[:12]}\t{render.life_text(e)}\n")
    return 0


class AgentUnreachable(RuntimeError):
    """No agent answers on the control socket."""


async def api_call(socket_path: str, method: str, path: str) -> tuple[int, Any]:
    """One request to the running agent's control API over its unix socket."""
    try:
        async with (
            aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=socket_path)) as session,
            session.request(method, f"http://logagent{path}") as response,
        ):
            return response.status, await response.json()
    except (aiohttp.ClientConnectionError, FileNotFoundError) as exc:
        raise AgentUnreachable(
            f"no agent answers on {socket_path} ({exc.__class__.__name__}): is `logagent run` "
            "running, and is api.socket the same?"
        ) from None


async def collectors(socket_path: str, action: str, container: str | None, out: TextIO) -> int:
    if action == "ls":
        _, body = await api_call(socket_path, "GET", "/collectors")
        for c in body["collectors"]:
            out.write(
                f"{c['container_name']}\t{c['container_id'][:12]}\t{c['state']}\t"
                f"{c['lines']} lines\t{c['last_timestamp'] or '-'}\n"
            )
        for c in body["stopped"]:
            out.write(f"-\t{c['container_id'][:12]}\tstopped by hand\n")
        for c in body["failed"]:
            out.write(f"-\t{c['key'][7:19]}\tfailed: {c['error']}\n")
        return 0
    if not container:
        raise UsageError(f"collectors {action} needs a container name or id")
    status, body = await api_call(
        socket_path, "POST" if action == "start" else "DELETE", f"/collectors/{container}"
    )
    if status != 200:
        out.write(f"logagent: {body.get('error', status)}\n")
        return 1
    out.write(f"{body['container_name']}\t{body['container_id'][:12]}\t{body['state']}\n")
    return 0


HEARTBEAT_STALE_S = 10  # an agent beats every 2 s: this much silence means it is not running
# The store's container states after which nothing more comes: the collector marks them
# only once the stream is read to its end and stored, so such a container lags behind nothing.
ENDED = ("exited", "removed")


def shown_state(live: str | None, stored: str | None, agent: str) -> str:
    """What `status` says a container is doing: the running agent's word for it, else the
    store's for one that ended (as the viewer shows it), else whether it should be read."""
    if live is not None:
        return live
    if stored is not None and stored in ENDED:
        return stored
    return "not collecting" if agent == "running" else "-"


async def status(
    db_url: str, socket_path: str, as_json: bool, out: TextIO, host: str | None = None
) -> int:
    """Per host of the store, its agent; per known container, what the store holds and what
    this host's agent is doing."""
    live: dict[str, str] = {}
    shaped: dict[str, dict[str, Any]] = {}  # per collected container: its hints, what dropped
    try:
        _, body = await api_call(socket_path, "GET", "/collectors")
        for c in body["collectors"]:
            live[c["container_id"]] = "collecting"
            shaped[c["container_id"]] = {
                "dropped": c.get("dropped", {}),
                "hints": c.get("hints", []),
                "hint_problems": c.get("hint_problems", []),
            }
        for c in body["stopped"]:
            live[c["container_id"]] = "stopped by hand"
        for c in body["failed"]:
            live[c["key"].removeprefix("docker:")] = f"failed: {c['error']}"
        for c in body["excluded"]:
            live[c["container_id"]] = c["reason"]
        agent = "running"
        store = body.get("store") or {}  # which server it writes to; whether that fails
        forward: list[dict[str, Any]] = body.get("forward") or []  # each destination
    except AgentUnreachable:
        agent, store, forward = "not running", {}, []
    async with reading(db_url) as db:
        rows = await container_summary(db, host)
        hosts = [h for h in await fleet_summary(db) if host is None or h["host"] == host]
        alerts = await outbox.waiting(db, host)
    now = time.time_ns()
    for h in hosts:
        silent, stopped = (now - h.pop("last_seen_ns")) / 1e9, h.pop("stopped")
        h["containers"] = sum(1 for r in rows if r["host"] == h["host"])
        h["heartbeat_age_seconds"] = round(silent, 1)
        h["agent"] = (
            "running"
            if silent < HEARTBEAT_STALE_S and not stopped
            else ("stopped" if stopped else "silent")
        )
    for r in rows:
        r["state"] = shown_state(live.get(r["container_id"]), r.get("state"), agent)
        behind = r["last_ns"] and r["state"] not in ENDED
        r["lag_seconds"] = round((now - r["last_ns"]) / 1e9, 3) if behind else None
        r["last_line"] = render.format_ns(r.pop("last_ns"))
        r.update(shaped.get(r["container_id"], {}))
    for cid, state in live.items():
        if not any(r["container_id"] == cid for r in rows):
            blank = {"lines": 0, "bytes": 0, "last_line": None, "lag_seconds": None, "gaps": 0}
            rows.append(
                {"host": "", "container_id": cid, "container_name": "", "state": state, **blank}
            )
    for a in alerts:
        a["oldest_age_seconds"] = round((now - a.pop("oldest_ns")) / 1e9, 1)
    if as_json:
        shown = {"agent": agent, "store": store, "hosts": hosts, "containers": rows,
                 "alerts_pending": alerts, "forward": forward}  # fmt: skip
        out.write(json.dumps(shown) + "\n")
        return 0
    said = agent + (f", writing to {store['server']}" if store.get("server") else "")
    said += f", the store fails: {store['failing']}" if store.get("failing") else ""
    out.write(f"agent: {render.terminal_safe(said)}\n")
    if len(hosts) > 1 or host is not None:
        out.write("HOST\tAGENT\tLAST HEARTBEAT\tCONTAINERS\n")
        for h in hosts:
            out.write(
                f"{h['host']}\t{h['agent']}\t{h['heartbeat_age_seconds']:.0f}s ago\t"
                f"{h['containers']}\n"
            )
    out.write("NAME\tID\tSTATE\tLINES\tBYTES\tLAST LINE\tLAG\tGAPS\tDROPPED\n")
    notes: list[str] = []
    for r in rows:
        lag = "-" if r["lag_seconds"] is None else f"{r['lag_seconds']:.1f}s"
        dropped = ", ".join(f"{n} by {why}" for why, n in r.get("dropped", {}).items()) or "-"
        name = r["container_name"] or "-"
        out.write(
            f"{render.terminal_safe(name)}\t{r['container_id'][:12]}\t{r['state']}\t"
            f"{r['lines']}\t{r['bytes']}\t{r['last_line'] or '-'}\t{lag}\t{r['gaps']}\t"
            f"{dropped}\n"
        )
        if r.get("hints"):
            notes.append(f"{name}: hints {'; '.join(r['hints'])}")
        notes += [f"{name}: hint not used: {p}" for p in r.get("hint_problems", [])]
    for note in notes:
        out.write(render.terminal_safe(note) + "\n")
    for f in forward:  # where to, how far behind, what failed last
        error = f", last error: {f['last_error']}" if f["last_error"] else ""
        out.write(render.terminal_safe(
            f"forward {f['name']} ({f['kind']} to {f['to']}): {f['lag_rows']} rows and "
            f"{f['lag_seconds']:.1f}s behind, {f['sent']} lines sent ({f['rate']}/s){error}")
            + "\n")  # fmt: skip
    for a in alerts:  # a destination's URL is a secret: only its name is shown
        error = f", last error {a['last_error']}" if a["last_error"] else ""
        out.write(
            f"alerts pending for {a['destination']} ({a['host']}): {a['pending']}, the oldest "
            f"{a['oldest_age_seconds']:.0f}s old, tried {a['attempts']} times{error}\n"
        )
    return 0
