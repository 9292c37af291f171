"""Forwarding at work: each destination follows this host's committed rows (the follow seam)
from a position of its own, sends a batch, and commits the position once the destination has
it. At least once: after a crash the batch that was not yet committed is sent again, each
record with the same id (agent/forward/records.py). A destination that is down never slows
ingest (the store is the buffer); it is tried again with a growing pause.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import TaskStatus
from tortoise.backends.base.client import BaseDBAsyncClient

from agent.forward.http_sink import HttpSink
from agent.forward.loki import CONTENT_TYPE as LOKI_TYPE
from agent.forward.loki import loki_push
from agent.forward.otlp import CONTENT_TYPE as OTLP_TYPE
from agent.forward.otlp import otlp_request
from agent.forward.otlp import rejected as otlp_rejected
from agent.forward.records import Ids, ids_for, ndjson_lines, syslog_frame
from agent.forward.settings import Destination
from agent.forward.sinks import (
    FileSink,
    PartlyRejected,
    Refused,
    Sink,
    SinkError,
    SyslogSink,
)
from agent.storage import consumers
from agent.storage.db import transaction
from agent.storage.described import Described, StoredContainer, described_as
from agent.storage.follow import Position, committed, newer, one_server, rewound
from agent.storage.forward_gaps import consumer_name as forward_consumer
from agent.storage.forward_gaps import unconfigured
from agent.storage.gaps import record_forward_gaps
from agent.storage.reader import LogFilter, StoredRow
from agent.storage.signal import IDLE_S, CommitSignal

log = logging.getLogger("logagent.forward")

MAX_PAUSE_S = 60.0


def consumer_name(host: str, destination: str) -> str:
    """The destination's position in consumer_positions: one per host and destination
    (storage/forward_gaps.py finds them by their prefix)."""
    readable = re.sub(r"[^a-z0-9._:-]", "-", host.lower())[:12]
    exact = hashlib.sha256(host.encode()).hexdigest()[:8]
    return forward_consumer(destination, f"{readable}:{exact}")


def sink_for(d: Destination) -> Sink:
    if d.kind == "ndjson":
        return FileSink(d.path)
    if d.kind == "syslog":
        return SyslogSink(d.host, d.port, tls=d.tls, ca_file=d.ca_file)
    kind = OTLP_TYPE if d.kind == "otlp" else LOKI_TYPE
    sink = HttpSink(d.url, kind, dict(d.headers), ca_file=d.ca_file, header_files=d.header_files)
    if d.kind == "otlp":
        sink.partial = (OTLP_TYPE, otlp_rejected)
    return sink


def encode(
    d: Destination, rows: list[StoredRow], known: dict[str, StoredContainer], ids: Ids
) -> bytes:
    """The payload of a batch for this destination."""
    kind = d.kind
    if kind == "ndjson":
        return ndjson_lines(rows, ids)
    if kind == "syslog":
        return b"".join(syslog_frame(r, ids, d.max_message_bytes) for r in rows)
    if kind == "otlp":
        return otlp_request(rows, known, time.time_ns(), ids)
    return loki_push(rows, known, ids)


@dataclass
class ForwardStats:
    """What `status` and the metrics say of a destination."""

    sent: int = 0  # lines the destination acknowledged (this run)
    batches: int = 0
    failures: int = 0
    refused: int = 0  # lines the destination refused for good: gaps of the destination
    last_error: str | None = None
    lag_rows: int = 0  # this host's committed rows not yet sent (an upper bound: filtered too)
    lag_seconds: float = 0.0  # the age of the oldest line not yet sent, 0 when caught up
    last_sent_ns: int | None = None
    rate: float = 0.0  # lines acknowledged per second, over the last 10 s or more
    _since: tuple[float, int] = (0.0, 0)  # (monotonic time, sent) the rate is measured from

    def shown(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def count(self, lines: int) -> None:
        self.sent += lines
        self.batches += 1
        self.last_sent_ns = time.time_ns()
        now = time.monotonic()
        then, sent_then = self._since
        if now - then >= 10.0:
            self.rate = round((self.sent - sent_then) / (now - then), 1) if then else 0.0
            self._since = (now, self.sent)


class Forwarder:
    def __init__(
        self,
        db: BaseDBAsyncClient,
        host: str,
        d: Destination,
        *,
        sink: Sink | None = None,
        described: Described | None = None,
        commits: CommitSignal | None = None,
        configured: Collection[str] = (),
    ) -> None:
        self.db, self.host, self.d = db, host, d
        self._configured = {d.name, *configured}  # every destination's name in the config
        # This agent's commits (LogStorage.commits): with nothing to send, the next step
        # waits for one (or IDLE_S) instead of reading the store every `linger`.
        self._commits = commits
        self.sink = sink or sink_for(d)
        self.name = consumer_name(host, d.name)
        self.stats = ForwardStats()
        self._sends = d.sends()  # what it sends: its rows' filter, its containers' judge
        self._filter = LogFilter(host=host, min_level=self._sends.min_level)
        self._describe = self._sends.picks is not None or d.kind in ("otlp", "loki")
        self._described = described or Described(db, host)  # the agent's: one for all
        self._partial: list[tuple[StoredRow, str]] = []  # a batch's lines a 2xx may not have
        self._refused: list[tuple[StoredRow, str]] = []  # a batch's lines refused for good
        self._saved = 0  # of those, how many a split's part recorded already
        self._after = Position()  # where the batch being sent takes the position
        self._resume: Position | None = None  # where a split's parts sent so far took it
        # A batch's size while a split goes on: a split cut by a failure (a 429) starts
        # again at the size it had reached, not from the whole batch, which a strict rate
        # limit (one request a second) would cut at its first part again, for ever. Once a
        # batch is sent, split or not, the next is whole again.
        self._cap: int | None = None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        position = await consumers.load(self.db, self.name)
        if position is None:  # new here: every stored line, or from now on
            upto = (await committed(self.db)).as_dict().get(self.host) or 0
            position = Position.of({self.host: 0 if self.d.from_start else upto})
            await self._save(position)
            await self._say_unconfigured(upto)
        task_status.started()
        pause = 1.0
        try:
            while True:
                woken = self._commits.armed() if self._commits is not None else None
                self._resume, cap = None, self._cap
                try:
                    position, read = await self._step(position)
                except Exception as exc:  # the destination or the store away: the same rows
                    self._failed(exc)
                    if self._resume is not None:  # but the parts of a split it took
                        position = self._resume
                    narrowed = self._cap is not None and self._cap < (cap or self.d.batch_lines)
                    if self._resume is not None or narrowed:
                        pause = 1.0  # a split went on: no back-off for that
                    asked = exc.retry_after if isinstance(exc, SinkError) else None
                    await anyio.sleep(max(pause, asked or 0.0))
                    pause = min(pause * 2, MAX_PAUSE_S)
                    continue
                pause = 1.0
                if not read and woken is not None:  # nothing new: until a commit
                    with anyio.move_on_after(IDLE_S):
                        await woken.wait()
                if read < self.d.batch_lines:  # a batch not full waits for more lines
                    await anyio.sleep(self.d.linger_s)
        finally:
            await self.sink.aclose()

    async def _say_unconfigured(self, upto: int) -> None:
        """A destination new here, beside positions of destinations no longer configured that
        have rows to send: maybe one renamed, whose lines the new name will not send (it
        starts anew). Said, with how to get them (a review: a rename dropped them in silence)."""
        try:
            positions = await unconfigured(self.db, self.host, self._configured)
            left = [(name, upto - after) for name, after in positions if after < upto]
        except Exception as exc:  # only a word of advice: never a reason not to forward
            log.debug("forward %s: could not read the other positions: %s", self.d.name, exc)
            return
        if left:
            said = ", ".join(f"{name} ({n} rows not sent)" for name, n in left)
            log.warning(
                "forward %s is new here and starts %s; destinations no longer in the config "
                "still have lines to send: %s. If %s is one of them renamed, give it its old "
                "name back to send them (an unused position is dropped after a day).",
                self.d.name, "at the first stored line" if self.d.from_start else "from now",
                said, self.d.name,
            )  # fmt: skip

    async def _step(self, position: Position) -> tuple[Position, int]:
        """One batch: read, send, commit the position. How many rows it read (no more than
        a split cut by a failure had reached: `_cap`)."""
        async with one_server(self.db) as conn:  # the bound and the rows: one server's
            upto = await committed(conn)
            position = rewound(position, upto)
            mine = upto.of_host(self.host)
            limit = min(self.d.batch_lines, self._cap or self.d.batch_lines)
            rows, after = await newer(conn, self._filter, position, mine, limit=limit)
            known: dict[str, StoredContainer] = {}
            if self._describe and rows:
                known = await self._described.of({r.container_id for r in rows}, conn)
        self._lag(position, mine, rows)
        if not rows:
            if after != position:
                await self._save(after)
            return after, 0
        rows, after = self._bounded(rows, after)
        picks = self._sends.picks
        wanted = [r for r in rows if picks is None
                  or picks(described_as(known, r.container_id, r.container_name))]  # fmt: skip
        ids = ids_for(dict(upto.sessions).get(self.host, ()))
        self._partial, self._refused, self._saved, self._after = [], [], 0, after
        if wanted:
            await self._send(wanted, known, ids)
        self._cap = None  # sent, split or not: the next batch is whole again
        unsaved = self._refused[self._saved :]
        await self._save(after, self._gaps(unsaved) + self._gaps(self._partial, quiet=True))
        if self.stats.last_error is not None:
            log.warning("forward %s: sending works again", self.d.name)
            self.stats.last_error = None
        self.stats.count(len(wanted) - len(self._refused))
        return after, len(rows)

    async def _send(
        self, rows: list[StoredRow], known: dict[str, StoredContainer], ids: Ids
    ) -> None:
        """Send these rows; those the receiver refuses for what they hold go to `_refused`,
        with why. A refused batch is split until each line refused is alone: one hostile
        line costs only itself, never its neighbours; each part done is recorded at once, so
        a failure of the next (a 429 of a receiver's rate limit: a split is many requests)
        resumes after it, never from the whole batch again (a review's endless loop)."""
        try:
            await self.sink.send(encode(self.d, rows, known, ids))
        except PartlyRejected as exc:  # passed; which ones it does not say: any may be
            log.error("forward %s: %s", self.d.name, exc)
            self.stats.refused += exc.rejected
            self._partial += [(r, f"may be among {exc}") for r in rows]
        except Refused as exc:
            if len(rows) == 1:
                self._refused.append((rows[0], str(exc)))
                return
            half = len(rows) // 2
            self._cap = half  # if this fails part way, the next batch is no larger
            await self._send(rows[:half], known, ids)
            await self._settle(rows[half - 1].id)
            await self._send(rows[half:], known, ids)

    async def _settle(self, last_id: int) -> None:
        """The parts of a split batch up to this row are done: the position there, with the
        gaps of the lines refused so far."""
        refused, self._saved = self._refused[self._saved :], len(self._refused)
        partial, self._partial = self._partial, []
        at = Position.of({self.host: last_id}, dict(self._after.epochs))
        await self._save(at, self._gaps(refused) + self._gaps(partial, quiet=True))
        self._resume = at

    def _bounded(self, rows: list[StoredRow], after: Position) -> tuple[list[StoredRow], Position]:
        """At most `batch_bytes` (the first line always): the position then stops at the
        last row taken."""
        total, kept = 0, 0
        for row in rows:
            total += len(row.message) + 200
            if kept and total > self.d.batch_bytes:
                break
            kept += 1
        if kept == len(rows):
            return rows, after
        ids = {**after.as_dict(), self.host: rows[kept - 1].id}
        return rows[:kept], Position.of(ids, dict(after.epochs))

    def _gaps(
        self, refused: list[tuple[StoredRow, str]], *, quiet: bool = False
    ) -> list[list[Any]]:
        """Lines refused as gaps of this destination, one per container (recorded with the
        position that passes them: `logagent gaps --forward NAME`)."""
        if not refused:
            return []
        spans: dict[str, list[StoredRow]] = {}
        for row, _ in refused:
            spans.setdefault(row.container_id, []).append(row)
        why = refused[0][1]
        if not quiet:  # a partial success is said and counted when it comes
            self.stats.refused += len(refused)
            log.error("forward %s: %d lines refused for good, recorded as a gap: %s",
                      self.d.name, len(refused), why)  # fmt: skip
        return [
            [cid, got[0].container_name, f"{len(got)} lines refused: {why}",
             min(r.timestamp_ns for r in got), max(r.timestamp_ns for r in got)]
            for cid, got in spans.items()
        ]  # fmt: skip

    async def _save(self, position: Position, refused: list[list[Any]] | None = None) -> None:
        """The position (its own host's alone: retention tells what it did not send by
        it, storage/forward_gaps.py), with the gaps of a refused batch."""
        mine = {self.host: position.as_dict().get(self.host, 0)}
        position = Position.of(mine, {h: e for h, e in position.epochs if h == self.host})
        async with transaction() as conn:
            if refused:
                await record_forward_gaps(conn, self.host, self.d.name, refused)
            await consumers.save(conn, self.name, position)

    def _lag(self, position: Position, upto: Position, rows: list[StoredRow]) -> None:
        behind = upto.as_dict().get(self.host, 0) - position.as_dict().get(self.host, 0)
        self.stats.lag_rows = max(behind, 0)
        oldest = rows[0].timestamp_ns if rows else None
        self.stats.lag_seconds = (time.time_ns() - oldest) / 1e9 if oldest else 0.0

    def _failed(self, exc: Exception) -> None:
        said = str(exc) if isinstance(exc, SinkError) else f"{type(exc).__name__}: {exc}"
        self.stats.failures += 1
        if self.stats.last_error is None:  # once per outage
            log.error("forward %s: not sent, tried again (the store keeps the lines): %s",
                      self.d.name, said)  # fmt: skip
        self.stats.last_error = said
