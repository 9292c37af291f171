"""Discovery: Docker's container events and listings → manager start/stop calls.

Subscribe first, then list, so no container slips between the two. When the events stream
breaks because the daemon went away, reconnect (the client retries with tenacity), resume
events from the last one seen, re-list, and start collectors for admitted running containers
that have none: collectors that ended with the daemon come back this way. A collector that
failed for another reason is not restarted here: only its container's next start event is.
A container is made ready at `create` so that its `start` costs one request (`_prepare`).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from agent.collectors.docker import DockerLogCollector
from agent.collectors.manager import LogCollectorManager, docker_key
from agent.cursor import Cursor
from agent.docker.client import (
    ContainerNotFound,
    DockerClient,
    DockerError,
    DockerUnavailable,
    LogsUnavailable,
)
from agent.docker.timestamps import since_param
from agent.policy import Decision, Policy, decide
from agent.storage import LogStorage

log = logging.getLogger("logagent.discovery")

_HEX64 = re.compile(r"[0-9a-f]{64}")
# A dying container's stream runs to its end however long that takes while lines keep coming
# (an agent behind a fast writer needs many seconds); it is cut only after this long without one.
_DIE_GRACE = 10.0


def own_container_ids(proc: Path = Path("/proc/self")) -> list[str]:
    """The agent's own container id(s), if it runs in one: never collect ourselves."""
    ids: list[str] = []
    for name in ("cgroup", "mountinfo"):
        try:
            text = (proc / name).read_text()
        except OSError:
            continue
        if name == "mountinfo":
            # /var/lib/docker/containers/<id>/hostname is bind-mounted into every container
            ids += re.findall(r"/containers/([0-9a-f]{64})/", text)
        else:
            ids += _HEX64.findall(text)
    hostname = os.environ.get("HOSTNAME", "")
    if re.fullmatch(r"[0-9a-f]{12}", hostname) and Path("/.dockerenv").exists():
        ids.append(hostname)
    return sorted(set(ids))


class Discovery:
    """Keeps the manager's collectors in step with the daemon's containers."""

    def __init__(
        self,
        client: DockerClient,
        manager: LogCollectorManager,
        policy: Policy,
        *,
        initial_tail: int | str = 100,
        self_ids: list[str] | None = None,
        scope_labels: list[str] | None = None,
        storage: LogStorage | None = None,
        started_ns: int | None = None,
    ) -> None:
        self.client = client
        self.manager = manager
        self.policy = policy
        self.initial_tail = initial_tail
        self.self_ids = own_container_ids() if self_ids is None else self_ids
        self.scope_labels = scope_labels or []
        self.storage = storage
        # When the agent was last alive on this host (None: never): containers created since
        # are read from their first line, and exited ones are caught up.
        self.last_seen_ns: int | None = None
        # When this agent process started: on a first run, a container created since then
        # (it may have started and exited before the first listing) is new, not history.
        self.started_ns = time.time_ns() if started_ns is None else started_ns
        # Bounds the requests a (re)listing fires at the daemon at once.
        self._limiter = anyio.CapacityLimiter(32)
        self.last_event_ns: int | None = None
        self.connected = False
        self.reconnects = 0
        self.decisions: dict[str, Decision] = {}
        self._locks: dict[str, anyio.Lock] = {}
        # Stopped by a person: not restarted by a re-listing, only by the container's next
        # start event or an explicit start.
        self.stopped_by_hand: set[str] = set()
        self.die_grace = _DIE_GRACE
        # Containers to collect, inspected and their cursor read at `create`, so that their
        # `start` opens the stream at once: a `docker run --rm` that lives milliseconds is
        # removed ~30 ms after its start event, sooner than an inspect and a query of the
        # store took then (8 of 10 lost). Its `start` comes ~150 ms after `create`.
        self.prepared: dict[str, tuple[dict[str, Any], Cursor]] = {}
        self.max_prepared = 1024
        self._tg: TaskGroup | None = None

    def decision(
        self, container_id: str, name: str, image: str, labels: Mapping[str, str]
    ) -> Decision:
        """Apply the policy; log the decision the first time a container is seen."""
        result = decide(
            self.policy,
            container_id=container_id,
            name=name,
            image=image,
            labels=labels,
            self_ids=self.self_ids,
        )
        if self.decisions.get(container_id) != result:
            self.decisions[container_id] = result
            log.info("%s (%s): %s", name, container_id[:12], result.reason)
        return result

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Follow the daemon forever; `started` once the first listing is done."""
        started = False
        if self.storage is not None:
            state = self.storage.previous_state
            if state is not None:
                self.last_seen_ns = state.last_seen_ns
                # Docker replays the events since then: containers that came and went while
                # the agent was down are seen (and, if already removed, recorded as gaps).
                self.last_event_ns = state.last_event_ns or state.last_seen_ns
        async with anyio.create_task_group() as tg:
            self._tg = tg
            while True:
                began = time.monotonic()
                await self.client.connect()
                try:
                    since = since_param(self.last_event_ns) if self.last_event_ns else None
                    filters = {"type": ["container"]}
                    if self.scope_labels:
                        filters["label"] = self.scope_labels
                    async with self.client.events(since=since, filters=filters) as events:
                        self.connected = True
                        await self._sync()
                        if not started:
                            started = True
                            task_status.started()
                        async for event in events:
                            self._dispatch(event)
                    log.warning("the Docker events stream ended; reconnecting")
                except DockerUnavailable as exc:
                    log.warning("lost the Docker daemon (%s); reconnecting", exc)
                except DockerError as exc:
                    log.error("Docker refused the events stream or listing: %s; retrying", exc)
                finally:
                    self.connected = False
                self.reconnects += 1
                if time.monotonic() - began < 1.0:
                    await anyio.sleep(1.0)  # a daemon that hangs up at once must not make us spin

    async def _sync(self) -> None:
        """Every admitted container without a collector: follow the running ones, catch up
        on the exited ones that ran while the agent was down (or since their cursor)."""
        scope = {"label": self.scope_labels} if self.scope_labels else None
        for c in await self.client.list_containers(all=True, filters=scope):
            cid: str = c["Id"]
            name = (c.get("Names") or ["/" + cid[:12]])[0].lstrip("/")
            if not self.decision(cid, name, c.get("Image", ""), c.get("Labels") or {}).collect:
                continue
            key = docker_key(cid)
            if self.manager.get(key) is not None or cid in self.stopped_by_hand:
                continue
            why = self.manager.failed.get(key)
            if why is not None and not why.startswith(DockerUnavailable.__name__):
                continue  # failed for a reason of its own: no automatic restart
            running = c.get("State") == "running"
            since_ns = self.started_ns if self.last_seen_ns is None else self.last_seen_ns
            new = int(c.get("Created", 0)) >= since_ns // 1_000_000_000
            # With a cursor the collector resumes there whatever the tail says.
            tail = "all" if new else self.initial_tail
            if running:
                self._spawn(self._start, cid, name, tail, True, None)
            elif new or self.last_seen_ns is not None:
                self._spawn(self._start, cid, name, "all" if new else 0, False, None)

    def _dispatch(self, event: dict[str, Any]) -> None:
        if event.get("Type") != "container":
            return
        if "timeNano" in event:
            self.last_event_ns = int(event["timeNano"])
            if self.storage is not None:
                self.storage.last_event_ns = self.last_event_ns
        action = str(event.get("Action") or event.get("status") or "")
        actor = event.get("Actor") or {}
        cid = str(actor.get("ID") or event.get("id") or "")
        if not cid:
            return
        attrs: dict[str, str] = actor.get("Attributes") or {}
        if action == "create":
            name = attrs.get("name", cid[:12])
            if self.decision(cid, name, attrs.get("image", ""), attrs).collect:
                self._spawn(self._prepare, cid)
        elif action == "start":
            self.stopped_by_hand.discard(cid)
            name = attrs.get("name", cid[:12])
            if self.decision(cid, name, attrs.get("image", ""), attrs).collect:
                # A container started now is read from its first line: its timestamps can
                # precede State.StartedAt, so `since=StartedAt` would drop its first lines.
                self._spawn(self._start, cid, name, "all", True, event.get("timeNano"))
        elif action in ("die", "destroy"):
            self._spawn(self._ended, cid, action == "destroy")

    def _spawn(self, fn: Any, *args: Any) -> None:
        assert self._tg is not None
        self._tg.start_soon(fn, *args)

    def _lock(self, cid: str) -> anyio.Lock:
        return self._locks.setdefault(cid, anyio.Lock())

    async def _prepare(self, cid: str) -> None:
        """At `create`: what starting its collector needs, before it starts."""
        async with self._lock(cid), self._limiter:
            if self.manager.get(cid) is not None:
                return
            try:
                info = await self.client.inspect(cid)
                cursor = (
                    await self.storage.load_cursor(cid) if self.storage is not None else Cursor()
                )
            except ContainerNotFound:
                return  # already gone (a replayed event): its start, if any, says so
            except Exception as exc:  # the start event then does it all, the slower way
                log.debug("could not prepare %s for its start: %s", cid[:12], exc)
                return
            if len(self.prepared) >= self.max_prepared:  # created, never started nor removed
                self.prepared.pop(next(iter(self.prepared)))
            self.prepared[cid] = (info, cursor)

    async def _start(
        self, cid: str, name: str, tail: int | str, follow: bool, event_ns: int | None
    ) -> None:
        async with self._lock(cid), self._limiter:
            info, cursor = self.prepared.pop(cid, (None, None))
            if not follow and tail == 0 and not await self._has_cursor(cid):
                return  # exited before the agent ever read it, and not new: nothing owed
            existing = self.manager.get(cid)
            if existing is not None:
                if not follow:
                    return  # already being read
                # The previous run's stream drains first; then this run resumes after it.
                await self._until_ended(existing)
            try:
                await self.manager.start_docker_collector(
                    cid, name, tail=tail, follow=follow, info=info, cursor=cursor
                )
            except ContainerNotFound:
                await self._gap(
                    cid, name, "container removed before its logs could be read", event_ns
                )
            except LogsUnavailable as exc:
                self.manager.failed[docker_key(cid)] = str(exc)
                log.error("cannot collect %s (%s): %s", name, cid[:12], exc)
                await self._gap(cid, name, f"logs cannot be read through the API: {exc}", event_ns)
            except DockerUnavailable as exc:
                log.warning("could not start collecting %s: %s", name, exc)
            except DockerError as exc:
                self.manager.failed[docker_key(cid)] = str(exc)
                log.error("cannot collect %s (%s): %s", name, cid[:12], exc)

    async def start_by_hand(self, ref: str) -> DockerLogCollector:
        """A person's start (name or id): whatever the policy says, resuming at the cursor."""
        info = await self.client.inspect(ref)
        cid: str = info["Id"]
        name = str(info.get("Name", "")).lstrip("/") or cid[:12]
        self.stopped_by_hand.discard(cid)
        running = bool((info.get("State") or {}).get("Running"))
        async with self._lock(cid):
            return await self.manager.start_docker_collector(
                cid, name, tail=self.initial_tail, follow=running, info=info
            )

    async def stop_by_hand(self, ref: str) -> DockerLogCollector | None:
        """A person's stop: it lasts until the container starts again or is started by hand."""
        collector = self.manager.get(ref) or next(
            (c for c in self.manager.active_collectors().values() if c.container_name == ref),
            None,
        )
        if collector is None:
            try:
                collector = self.manager.get((await self.client.inspect(ref))["Id"])
            except ContainerNotFound:
                return None
            if collector is None:
                return None
        self.stopped_by_hand.add(collector.container_id)
        await collector.stop(drain=True)
        return collector

    async def _has_cursor(self, cid: str) -> bool:
        if docker_key(cid) in self.manager.cursors:
            return True
        return self.storage is not None and not (await self.storage.load_cursor(cid)).empty

    async def _gap(self, cid: str, name: str, reason: str, from_ns: int | None) -> None:
        if self.storage is None:
            log.warning("%s (%s): %s", name, cid[:12], reason)
            return
        try:
            await self.storage.record_gap(cid, name, reason, from_ns=from_ns)
        except Exception as exc:
            log.error("could not record a gap for %s (%s): %s: %s", name, cid[:12], reason, exc)

    async def _until_ended(self, collector: DockerLogCollector) -> None:
        """Let a dead container's stream reach its end; cut it only once it stalls.

        Measured: an agent 500k lines behind a container that wrote 1M lines in 5 s needs
        another 5-10 s after `die`; a fixed grace cut the stream there and left the rest
        unread until the next start.
        """
        seen = -1
        while collector.bytes != seen:
            seen = collector.bytes
            with anyio.move_on_after(self.die_grace):
                await collector.wait()
                return
        log.warning(
            "log stream of %s (%s) sent nothing for %.0f s after the container ended: "
            "closing it and reading the rest with a plain read",
            collector.container_name,
            collector.container_id[:12],
            self.die_grace,
        )
        await collector.stop(drain=True)

    async def _ended(self, cid: str, destroyed: bool) -> None:
        """die/destroy: let the stream reach its end (the last lines), then stop it."""
        async with self._lock(cid):
            collector = self.manager.get(cid)
            if collector is not None:
                await self._until_ended(collector)
            if destroyed:
                self.prepared.pop(cid, None)
                self.manager.forget(docker_key(cid))
                self.decisions.pop(cid, None)
                self._locks.pop(cid, None)
