"""The events follower: Docker's /events, forever, across daemon restarts.

Subscribe first, then list, so no container slips between the two. When the stream breaks
because the daemon went away, reconnect (the client retries with tenacity), resume events
from the last one seen, and list again: collectors that ended with the daemon come back then.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio
from anyio.abc import TaskStatus

from agent.discovery.reconciler import Reconciler
from agent.docker.client import DockerClient
from agent.docker.errors import DockerError, DockerUnavailable
from agent.docker.life_events import life_event
from agent.policy import Scope
from agent.storage.state import AgentStateStore
from agent.timestamps import since_param

log = logging.getLogger("logagent.discovery")


class EventsFollower:
    def __init__(
        self,
        client: DockerClient,
        reconciler: Reconciler,
        state: AgentStateStore,
        *,
        scope: Scope,
        since_ns: int | None,
    ) -> None:
        self.client = client
        self.reconciler = reconciler
        self.state = state  # the last event handled is saved with the agent's heartbeat
        self.scope = scope
        # Docker replays the events since then: containers that came and went while the
        # agent was down are seen (and, if already removed, recorded as gaps).
        self.last_event_ns = since_ns
        self.connected = False
        self.reconnects = 0

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Follow the daemon forever; `started` once the first listing is done."""
        started = False
        while True:
            began = time.monotonic()
            await self.client.connect()
            try:
                since = since_param(self.last_event_ns) if self.last_event_ns else None
                filters = {"type": ["container"], **self.scope.filters()}
                async with self.client.events(since=since, filters=filters) as events:
                    self.connected = True
                    await self.reconciler.sync()
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

    def _dispatch(self, event: dict[str, Any]) -> None:
        if event.get("Type") != "container":
            return
        time_ns = int(event["timeNano"]) if "timeNano" in event else None
        action = str(event.get("Action") or event.get("status") or "")
        actor = event.get("Actor") or {}
        cid = str(actor.get("ID") or event.get("id") or "")
        attrs = actor.get("Attributes") or {}
        if cid:
            self.reconciler.on_event(action, cid, attrs, time_ns)
        if time_ns is not None:
            self.last_event_ns = time_ns
            life = life_event(action, cid, attrs, time_ns)
            if life is not None and not self.reconciler.collects(cid, attrs):
                life = None  # an opted-out container's life is not stored either
            self.state.handled(time_ns, life)
