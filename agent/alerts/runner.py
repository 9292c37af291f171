"""The alerts at work: the rules follow this host's committed rows (the follow seam), and the
sender delivers the outbox.

Exactly once: a step of the rules commits its alerts (pending), the rules' state and its
position in one transaction (storage/outbox.py); the sender posts each pending alert and then
marks it sent. A crash between the post and the mark posts it again, once, with the same id,
in the payload and in the `Idempotency-Key` header. A destination that fails keeps its alerts
pending, tried again with a growing pause (at most 5 minutes): nothing is dropped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections import Counter
from typing import Any

import aiohttp
import anyio
from anyio.abc import TaskStatus
from tortoise.backends.base.client import BaseDBAsyncClient

from agent.alerts.delivery import SEND_TIMEOUT, deliver
from agent.alerts.engine import MAX_LINE_CHARS, Alert, Engine
from agent.alerts.rules import AlertSettings, Destination
from agent.storage import consumers, outbox
from agent.storage.db import in_child_task, transaction
from agent.storage.described import Described
from agent.storage.follow import Position, committed, one_server, rewound, scan
from agent.storage.life import last_life_id, list_life
from agent.storage.reader import PAGE, LogFilter, StoredRow, later, older, rows_by_id
from agent.storage.recent import MAX_ROWS as HELD
from agent.storage.recent import RecentRows, scan_held
from agent.storage.signal import IDLE_S, CommitSignal

log = logging.getLogger("logagent.alerts")

MAX_PAUSE_S = 300.0
STEP_GAP_S = 0.1  # at least this between steps of the rules that follow commits
SEND_ROUND_S = 1.0  # the sender's rounds while alerts are pending (retries, context waits)
SEND_IDLE_S = 30.0  # ... and with none: each new one wakes it (`_wake`)
CONTEXT_WAIT_S = 5.0  # an alert waits this long at most for the lines after its match


def consumer_name(host: str) -> str:
    """The rules' position in consumer_positions: one per host (a fleet's agents each
    evaluate their own host's rows: one notification per match, not one per agent)."""
    readable = re.sub(r"[^a-z0-9._:-]", "-", host.lower())[:40]
    exact = hashlib.sha256(host.encode()).hexdigest()[:12]  # `Web_1` and `web-1` differ
    return f"alerts:{readable}:{exact}"


def outgoing(alerts: list[Alert]) -> list[outbox.Outgoing]:
    return [
        outbox.Outgoing(a.id, d, a.host, a.rule, json.dumps(a.payload()))
        for a in alerts
        for d in a.destinations
    ]


class AlertRunner:
    def __init__(
        self,
        db: BaseDBAsyncClient,
        settings: AlertSettings,
        host: str,
        *,
        poll_s: float = 0.25,
        described: Described | None = None,
        recent: RecentRows | None = None,
        reader: BaseDBAsyncClient | None = None,
        commits: CommitSignal | None = None,
    ) -> None:
        self.db, self.host, self.poll_s = db, host, poll_s
        self._commits = commits  # this agent's commits (LogStorage.commits): the next step
        # A step's reads: on SQLite a connection of their own, not waiting for the writer's
        # commits (LogStorage.followers_db); its commit goes through `db`.
        self.reader = reader or db
        self._recent = recent  # the rows just committed, when the rules are caught up
        if recent is not None:
            recent.followed = True
        self.engine = Engine(settings.rules, host)
        self.destinations: dict[str, Destination] = {d.name: d for d in settings.destinations}
        self.name = consumer_name(host)
        self.fired: Counter[str] = Counter()  # per rule, alerts committed by this run
        self.sent = 0
        self.failed: Counter[str] = Counter()  # per destination, failed posts (tried again)
        self.pending = 0  # alerts waiting in this host's outbox, as last counted
        self._wake = anyio.Event()
        self._described = described or Described(db, host)  # the agent's: one for all

    def summary(self) -> dict[str, Any]:
        """For `GET /alerts`: each rule, what this run fired and sent (no URL: a secret)."""
        rules = [{**r.shown(), "fired": self.fired.get(r.name, 0)} for r in self.engine.rules]
        return {"rules": rules, "sent": self.sent, "pending": self.pending,
                "failed": dict(self.failed)}  # fmt: skip

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(self._follow)
            tg.start_soon(self._send)
            task_status.started()

    # -- the rules ----------------------------------------------------------------------

    async def _follow(self, *, task_status: TaskStatus[None]) -> None:
        position = await consumers.load(self.db, self.name)
        if position is None:  # the first run here: from what is stored now
            position = await committed(self.db)
            self.engine.events_after = await last_life_id(self.db, self.host)
            await self._commit(position, [], self.engine.state())
        state = await outbox.load_state(self.db, self.name)
        self.engine.restore(state)
        task_status.started()
        while True:
            woken = self._commits.armed() if self._commits is not None else None
            try:
                async with one_server(self.reader) as conn:  # bound, rows, events: one server's
                    upto = await committed(conn)
                    position = rewound(position, upto)  # a store restored or failed over
                    # Caught up: all the writer has just committed, from memory, in one step.
                    scanned, after = scan_held(
                        self._recent, self.host, position, upto, limit=HELD
                    ) or await scan(conn, self.host, position, upto, limit=PAGE)
                    wanted = self.engine.candidates(scanned)
                    rows = await rows_by_id(conn, wanted) if wanted else []
                    events = await list_life(
                        conn, host=self.host, after_id=self.engine.events_after, limit=PAGE
                    )
                    ids = {r.container_id for r in rows} | {e.container_id for e in events}
                    known = await self._described.of(ids, conn) if ids else {}
                if after != position or events:
                    now = time.time_ns()
                    unreadable = self.engine.unreadable
                    alerts = self.engine.feed(rows, now, known)
                    if self.engine.unreadable > unreadable:
                        log.warning("alert rules: %d lines whose fields could not be judged",
                                    self.engine.unreadable - unreadable)  # fmt: skip
                    alerts += self.engine.feed_events(events, now, known)
                    if after.ids == upto.ids and len(events) < PAGE:  # caught up: summed up
                        alerts += self.engine.summaries()
                    now_state = self.engine.state()  # once a step: it may be large
                    await self._commit(after, alerts, now_state if now_state != state else None)
                    position, state = after, now_state
                    self.fired.update(a.rule for a in alerts)
                    if alerts:
                        self._wake.set()
                    if after.ids != upto.ids or len(events) >= PAGE:
                        continue  # a page short of the bound: the next at once
            except Exception as exc:  # the store away: the step is done again, from the state
                log.warning("alert rules: could not read or commit a step: %s", exc)
                self.engine.restore(state)
                await anyio.sleep(self.poll_s)
                continue
            await self._rest(woken)

    async def _rest(self, woken: anyio.Event | None) -> None:
        """Until the next step: the next commit since this step began (after STEP_GAP_S, so
        that a firehose's commits make one step, and within what the writer holds for the
        rules: recent.py), or IDLE_S with none; `poll_s` when no commit is told."""
        if woken is None:
            await anyio.sleep(self.poll_s)
            return
        await anyio.sleep(STEP_GAP_S)
        with anyio.move_on_after(IDLE_S):
            await woken.wait()

    async def _commit(self, position: Position, alerts: list[Alert], state: str | None) -> None:
        """The step's alerts, the rules' state (None: as last committed) and position."""

        async def step() -> None:
            async with transaction() as conn:
                await outbox.record_step(conn, self.name, position, state, outgoing(alerts))

        await in_child_task(step)

    # -- delivery -------------------------------------------------------------------------

    async def _send(self) -> None:
        async with aiohttp.ClientSession(timeout=SEND_TIMEOUT) as session:
            while True:
                self._wake = anyio.Event()
                try:
                    down: set[str] = set()  # a destination that failed waits for the next round
                    bodies: dict[str, str | None] = {}  # per alert: its context read once
                    for pending in await outbox.due(self.db, self.host):
                        if pending.destination not in down and not await self._deliver(
                            session, pending, bodies
                        ):
                            down.add(pending.destination)
                    self.pending = await outbox.pending(self.db, self.host)
                except Exception as exc:
                    log.warning("alerts: could not read or mark the outbox: %s", exc)
                    self.pending = max(self.pending, 1)  # so the next round comes soon
                # The next retry's time, or a new alert (only the rules add to this host's
                # outbox, and they wake it).
                with anyio.move_on_after(SEND_ROUND_S if self.pending else SEND_IDLE_S):
                    await self._wake.wait()

    async def _with_context(self, pending: outbox.Pending) -> str | None:
        """The payload, with the rule's `context` lines before and after its match read
        from the store; None while the lines after are not all there and the alert is
        younger than CONTEXT_WAIT_S (a crash and a re-send may then see more of them)."""
        alert = json.loads(pending.payload)
        k = int(alert.get("context") or 0)
        if not k or alert.get("kind") != "line":
            return pending.payload
        flt = LogFilter(container_ids=(str(alert["container_id"]),), host=self.host)
        at = (int(alert["time_ns"]), int(alert["ref"]))
        after = await later(self.db, flt, after=at, limit=k)
        young = time.time_ns() - pending.created_ns < CONTEXT_WAIT_S * 1e9
        if len(after) < k and young:
            return None
        before = await older(self.db, flt, before=at, limit=k)
        alert["before"] = [_context_line(r) for r in reversed(before)]
        alert["after"] = [_context_line(r) for r in after]
        return json.dumps(alert)

    async def _deliver(
        self,
        session: aiohttp.ClientSession,
        pending: outbox.Pending,
        bodies: dict[str, str | None],
    ) -> bool:
        """Post it; whether it was delivered (a failure is marked, with its next try). An
        alert's body (its context lines) is read once a round for all its destinations."""
        dest = self.destinations.get(pending.destination)
        if dest is None:  # removed from the config since: kept, pending, said
            why = f"no destination named {pending.destination!r} in the config"
            await outbox.mark_failed(self.db, pending, MAX_PAUSE_S, why)
            return False
        if pending.alert_id not in bodies:
            bodies[pending.alert_id] = await self._with_context(pending)
        body = bodies[pending.alert_id]
        if body is None:  # the lines after it are not all stored yet: next round
            return True
        ok, why = await deliver(session, dest, body, pending.alert_id)
        if ok:
            await outbox.mark_sent(self.db, pending)
            self.sent += 1
            return True
        self.failed[pending.destination] += 1
        pause = min(MAX_PAUSE_S, 2.0 ** min(pending.attempts, 9))
        log.warning(
            "alert %s to %s not delivered (%s): tried again in %.0f s",
            pending.alert_id[:12],
            pending.destination,
            why,
            pause,
        )
        await outbox.mark_failed(self.db, pending, pause, why)
        return False


def _context_line(row: StoredRow) -> dict[str, Any]:
    return {"time": row.rfc3339, "stream": row.stream, "line": row.message[:MAX_LINE_CHARS]}
