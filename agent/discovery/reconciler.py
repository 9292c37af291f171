"""The reconciler: what a listing or a container's event does to its collector.

A container is made ready at `create` (inspected, its position read from the store) so that
its `start` costs nothing more than opening the stream: a `docker run --rm` that lives
milliseconds is removed ~30 ms after its start event, sooner than an inspect and a query of
the store took (8 of 10 lost); its `start` comes ~150 ms after `create`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import replace
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from agent import gaps
from agent.batch import Source
from agent.collectors.docker import DockerLogCollector
from agent.collectors.ending import gone
from agent.collectors.manager import LogCollectorManager
from agent.collectors.records import ContainerRecord, Failure, Registry
from agent.discovery.restart_rules import Start, after_listing, owed_nothing
from agent.docker.client import DockerClient
from agent.docker.errors import (
    ContainerNotFound,
    DockerError,
    DockerUnavailable,
    LogsUnavailable,
)
from agent.policy import Decision, Policy, Scope, decide
from agent.storage import LogStorage

log = logging.getLogger("logagent.discovery")

# A dying container's stream runs to its end however long that takes while lines keep coming
# (an agent behind a fast writer needs many seconds); it is cut only after this long without one.
DIE_GRACE = 10.0
MAX_MARKED_AWAY = 10_000  # containers marked removed while away, remembered (the newest)


class Reconciler:
    """Keeps the manager's collectors in step with the daemon's containers."""

    def __init__(
        self,
        client: DockerClient,
        manager: LogCollectorManager,
        registry: Registry,
        storage: LogStorage,
        policy: Policy,
        *,
        initial_tail: int | str,
        self_ids: list[str],
        scope: Scope,
        started_ns: int,
        last_seen_ns: int | None,
    ) -> None:
        self.client = client
        self.manager = manager
        self.registry = registry
        self.storage = storage
        self.policy = policy
        self.initial_tail = initial_tail
        self.self_ids = self_ids
        self.scope = scope
        self.started_ns = started_ns  # when this agent process started
        self.last_seen_ns = last_seen_ns  # when the agent was last alive here (None: never)
        self.die_grace = DIE_GRACE
        self._limiter = anyio.CapacityLimiter(32)  # requests a (re)listing fires at once
        # Containers this process marked removed while away (a listing soon after, a
        # reconnect, must not record their gap again, whether or not the store shows the
        # mark yet), each with the time up to which their lines are accounted for: a
        # replayed `start` of a run before it needs no gap of its own (None: all of them, a
        # gap was made). The newest MAX_MARKED_AWAY.
        self._marked_away: dict[str, int | None] = {}
        self._tg: TaskGroup | None = None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Own the tasks that events and listings start, for as long as the agent runs."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            task_status.started()
            await anyio.sleep_forever()

    def _spawn(self, fn: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
        assert self._tg is not None, "Reconciler.run is not running"
        self._tg.start_soon(fn, *args)

    def decision(
        self, container_id: str, name: str, image: str, labels: Mapping[str, str]
    ) -> tuple[ContainerRecord, Decision]:
        """Apply the policy; log the decision the first time it is made (or changes)."""
        rec = self.registry.record(container_id, name)
        result = decide(
            self.policy,
            container_id=container_id,
            name=name,
            image=image,
            labels=labels,
            self_ids=self.self_ids,
        )
        if rec.decision != result:
            rec.decision = result
            log.info("%s (%s): %s", name, container_id[:12], result.reason)
        return rec, result

    def collects(self, container_id: str, attrs: Mapping[str, str]) -> bool:
        """Whether the container is collected (its events too): the decision made, or made
        now from an event's attributes (its labels, name and image)."""
        rec = self.registry.get(container_id)
        if rec is not None and rec.decision is not None:
            return rec.decision.collect
        name, image = attrs.get("name", container_id[:12]), attrs.get("image", "")
        return self.decision(container_id, name, image, attrs)[1].collect

    # -- listings ------------------------------------------------------------------------

    async def sync(self) -> None:
        """Every admitted container without a collector: follow the running ones, catch up
        on the exited ones that ran while the agent was down (or since their cursor)."""
        starts: list[tuple[ContainerRecord, Start]] = []
        listed_ns = time.time_ns()  # what the store shows from here on, the listing may not
        listing = await self.client.list_containers(all=True, filters=self.scope.filters() or None)
        for c in listing:
            rec, decision = self.decision(c.id, c.name, c.image, c.labels)
            if not decision.collect:
                continue
            start = after_listing(
                rec,
                running=c.running,
                created_s=c.created_s,
                last_seen_ns=self.last_seen_ns,
                started_ns=self.started_ns,
                initial_tail=self.initial_tail,
            )
            if start is not None:
                starts.append((rec, start))
        await _load_positions(self.storage, [rec for rec, _ in starts])
        for rec, start in starts:
            self._spawn(self._start, rec, start, None)
        # Before the events replayed since the agent's last run are handled (a replayed
        # `die` makes a record, and the container would be taken as known, with no gap).
        await self._removed_while_away({c.id for c in listing}, listed_ns)

    async def _removed_while_away(self, listed: set[str], listed_ns: int) -> None:
        """Containers the store shows as present that Docker no longer has: removed while
        the agent was away, their `destroy` not replayed (Docker keeps its last 256 events,
        none across its own restart; and a replayed one is of a container the agent does not
        know yet). Marked removed, so that the viewer and status do not show them running
        for ever; one last read running may have written lines no one read: a gap says so."""
        try:
            stored = await self.storage.present(listed_ns)
        except Exception as exc:
            log.warning("could not read which stored containers Docker still has: %s", exc)
            return
        for cid, name, state, last_ns in stored:
            rec = self.registry.get(cid)
            if cid in listed or cid in self._marked_away or not _unaccounted(rec):
                continue
            if not await gone(self.client, cid):  # out of scope now, or the daemon away
                continue
            source = Source(cid, name)  # a bare identity: its row keeps its own retention
            if state != "exited":
                await self._gap_of(source, gaps.REMOVED_WHILE_AWAY, last_ns)
            await self.storage.mark(source, "removed")
            self._marked_away[cid] = None if state != "exited" else (last_ns or 0)
            while len(self._marked_away) > MAX_MARKED_AWAY:
                del self._marked_away[next(iter(self._marked_away))]
            self.registry.forget(cid)
            log.info("%s (%s) was removed while the agent was away", name, cid[:12])

    # -- events --------------------------------------------------------------------------

    def on_event(
        self, action: str, cid: str, attrs: Mapping[str, str], time_ns: int | None
    ) -> None:
        if action in ("create", "start"):
            name = attrs.get("name", cid[:12])
            rec, decision = self.decision(cid, name, attrs.get("image", ""), attrs)
            if action == "start":
                rec.stopped_by_hand = False
            if not decision.collect:
                return
            if action == "create":
                self._spawn(self._prepare, rec)
            else:
                # The previous run's: this run reads its rest. (Not one whose stream is not
                # open yet: it reads this run, and its rest read must not be cut at its end.)
                c = rec.collector
                if c is not None and c.opened_ns and _news_to(c, time_ns):
                    c.rest_read_elsewhere()
                # A container started now is read from its first line: its timestamps can
                # precede State.StartedAt, so `since=StartedAt` would drop its first lines.
                self._spawn(self._start, rec, Start("all", follow=True), time_ns)
        elif action in ("die", "destroy"):
            self._spawn(self._ended, cid, action == "destroy", time_ns)
        elif action == "rename" and (name := attrs.get("name", "").lstrip("/")):
            self._spawn(self._renamed, cid, name)

    async def _renamed(self, cid: str, name: str) -> None:
        """`docker rename`: the store, `status` and the viewer show the new name; its
        history is found by either."""
        rec = self.registry.get(cid)
        if rec is None or rec.decision is None or not rec.decision.collect:
            return  # not collected: nothing of it is to be stored
        async with rec.lock:
            old = rec.name
            rec.identify(replace(rec.source, container_name=name))
            await self.storage.renamed(rec.source, old)

    async def _prepare(self, rec: ContainerRecord) -> None:
        """At `create`: what starting its collector needs, before it starts."""
        async with rec.lock, self._limiter:
            if rec.collector is not None:
                return
            try:
                info = await self.client.inspect(rec.id)
                cursor = await self.storage.load_cursor(rec.id)
            except ContainerNotFound:
                return  # already gone (a replayed event): its start, if any, says so
            except Exception as exc:  # the start event then does it all, the slower way
                log.debug("could not prepare %s for its start: %s", rec.id[:12], exc)
                return
            self.registry.prepare(rec, info, cursor)

    async def _start(self, rec: ContainerRecord, start: Start, event_ns: int | None) -> None:
        async with rec.lock:
            existing = rec.collector
            if existing is not None:
                if not start.follow or not _news_to(existing, event_ns):
                    return  # already being read (a replayed `start`: of a run it reads)
                # The previous run's stream drains first; then this run resumes after it.
                # (Not holding a listing's slot meanwhile: that may take as long as it runs.)
                await self._until_ended(existing)
            async with self._limiter:
                await self._open(rec, start, event_ns)

    async def _open(self, rec: ContainerRecord, start: Start, event_ns: int | None) -> None:
        """The container's stream, or a gap or a failure that says why it cannot be read."""
        if owed_nothing(start, await self._has_cursor(rec)):
            return
        try:
            await self.manager.start_docker_collector(
                rec.id, rec.name, tail=start.tail, follow=start.follow
            )
        except ContainerNotFound:
            if not self._accounted(rec.id, event_ns):
                await self._gap(rec, gaps.REMOVED_BEFORE_READ, event_ns)
        except LogsUnavailable as exc:
            rec.failure = Failure.of(exc)
            log.error("cannot collect %s (%s): %s", rec.name, rec.id[:12], exc)
            await self._gap(rec, gaps.unreadable(exc), event_ns)
        except DockerUnavailable as exc:  # the next listing starts it, when it is back
            log.warning("could not start collecting %s: %s", rec.name, exc)
        except DockerError as exc:
            rec.failure = Failure.of(exc)
            log.error("cannot collect %s (%s): %s", rec.name, rec.id[:12], exc)
            # dockerd answers 500 "open ...-json.log: no such file" for a --rm container
            # it is removing: its lines went with it, which a gap says (a review's burst
            # of 50 short-lived containers lost one or two so, in silence)
            if await gone(self.client, rec.id):
                await self._gap(rec, gaps.REMOVED_BEFORE_READ, event_ns)

    def _accounted(self, cid: str, event_ns: int | None) -> bool:
        """A replayed event's run of a container marked removed while away whose lines are
        accounted for: read to the end, or in the gap it was given then."""
        if cid not in self._marked_away:
            return False
        read_to = self._marked_away[cid]
        return read_to is None or (event_ns is not None and event_ns <= read_to)

    async def _has_cursor(self, rec: ContainerRecord) -> bool:
        if (position := rec.position) is not None:  # moved in from the store, or a stream's
            return not position.empty
        return not (await self.storage.load_cursor(rec.id)).empty

    async def _gap(self, rec: ContainerRecord, reason: str, from_ns: int | None) -> None:
        await self._gap_of(rec.source, reason, from_ns)

    async def _gap_of(self, source: Source, reason: str, from_ns: int | None) -> None:
        try:
            await self.storage.record_gap(source, reason, from_ns=from_ns)
        except Exception as exc:
            log.error("could not record a gap for %s (%s): %s: %s", source.container_name,
                      source.container_id[:12], reason, exc)  # fmt: skip

    async def _until_ended(self, collector: DockerLogCollector) -> None:
        """Let a dead container's stream reach its end; cut it only once it stalls.

        Measured: an agent 500k lines behind a container that wrote 1M lines in 5 s needs
        another 5-10 s after `die`; a fixed grace cut the stream there and left the rest
        unread until the next start.
        """
        if await collector.progress.ends_unless_silent(self.die_grace):
            return
        log.warning(
            "log stream of %s (%s) sent nothing for %.0f s after the container ended: "
            "closing it and reading the rest with a plain read",
            collector.container_name,
            collector.container_id[:12],
            self.die_grace,
        )
        await collector.stop(drain=True, exited=True)

    async def _ended(self, cid: str, destroyed: bool, event_ns: int | None = None) -> None:
        """die/destroy: let the stream reach its end (the last lines), then stop it. (A
        replayed `die` of a run before the one its stream reads: nothing to end.)"""
        rec = self.registry.get(cid)
        if rec is None:
            return
        async with rec.lock:
            if rec.collector is not None and (destroyed or _since_opened(rec.collector, event_ns)):
                await self._until_ended(rec.collector)
            if destroyed:
                if rec.stopped_by_hand:  # its logs go now, with whatever it wrote since
                    last = rec.position.last_ns if rec.position is not None else None
                    await self._gap(rec, gaps.STOPPED_THEN_REMOVED, last)
                if rec.decision is None or rec.decision.collect:
                    await self.storage.mark(rec.source, "removed")
                self.registry.forget(cid)


async def _load_positions(storage: LogStorage, records: list[ContainerRecord]) -> None:
    """The stored positions of the containers about to start, in a few queries, not one
    per container (a start-up of 1,000); any it cannot load are asked for one by one."""
    owed = [rec for rec in records if rec.cursor is None and rec.collector is None]
    if len(owed) < 2:
        return
    try:
        cursors = await storage.load_cursors([rec.id for rec in owed])
    except Exception as exc:
        log.debug("could not load the positions of %d containers at once: %s", len(owed), exc)
        return
    for rec in owed:
        if rec.cursor is None and rec.collector is None:  # no stream ran meanwhile
            rec.cursor = cursors[rec.id]


def _since_opened(collector: DockerLogCollector, event_ns: int | None) -> bool:
    """Whether a container's event is of the run its stream reads or a later one: not known
    to be from before the stream was opened. Docker replays the events since the agent's
    last run (and after a reconnect): a replayed `start` or `die` of a run the stream was
    opened after is no news, and waiting for that stream to end would wait as long as the
    container runs (a review's 34 busy containers held every slot of a listing)."""
    opened = collector.opened_ns
    return event_ns is None or not opened or event_ns > opened


def _news_to(collector: DockerLogCollector, start_ns: int | None) -> bool:
    """Whether a `start` is of a run the collector does not follow: one after its stream was
    opened, or any while it only reads an exited container's rest (it started meanwhile)."""
    return not collector.follow or _since_opened(collector, start_ns)


def _unaccounted(rec: ContainerRecord | None) -> bool:
    """Whether a stored container Docker no longer lists is the listing's to account for:
    one this process does not know, or whose stream failed for the daemon's absence — a
    --rm container whose stream the daemon's restart cut is removed by the daemon as it
    starts, and no `destroy` survives that restart. Any other known one: its stream, or its
    stream's own end (queued, maybe not yet committed), says what became of it."""
    if rec is None:
        return True
    failure = rec.failure
    return rec.collector is None and failure is not None and failure.transient
