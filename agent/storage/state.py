"""This host's agent in the store: when it was last alive and the last Docker event it handled.

"While the agent was down" is measured from the heartbeat: containers created since are read
from their first line, and Docker replays the events since the last one handled.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import anyio
from tortoise.backends.base.client import BaseDBAsyncClient

from agent.docker.life_events import LifeEvent
from agent.storage.db import StorageError, fatal, in_child_task, transaction
from agent.storage.generation import Generation, StoreRewound
from agent.storage.life import record_life
from agent.storage.models import AgentState
from agent.storage.signal import CommitSignal
from agent.storage.sql import Marks

log = logging.getLogger("logagent.storage")

MAX_PENDING_LIFE = 100_000  # life events held while the store is down, at most
LIFE_LINGER_S = 0.05  # a burst of events (a compose stack stopping) is one transaction


@dataclass(frozen=True)
class PreviousRun:
    last_seen_ns: int  # its last heartbeat
    last_event_ns: int | None  # the last Docker event it handled


class AgentStateStore:
    def __init__(
        self, host: str, *, heartbeat_seconds: float = 2.0, commits: CommitSignal | None = None
    ) -> None:
        self.host = host
        self.commits = commits  # told when life events are stored: the alert rules wake
        self.heartbeat_seconds = heartbeat_seconds
        self.previous: PreviousRun | None = None  # the last run's, read before the first beat
        self.last_event_ns: int | None = None  # set by the events follower, saved with a beat
        self._life: list[LifeEvent] = []  # containers' lives not yet stored (storage/life.py)
        self._held_at: int | None = None  # an event was not kept: the position stays before it
        self._saving = anyio.Lock()
        self._wake = anyio.Event()
        self._sql = ""
        # The writer's count of this host's commits: a save checks the store still holds
        # them (an idle agent sees a failover within a heartbeat; nothing is saved over it).
        self.generation: Generation | None = None

    def handled(self, time_ns: int, life: LifeEvent | None = None) -> None:
        """The events follower handled this event: the position moves past it, and a life
        event is stored with it, in one transaction (`save`), soon."""
        self.last_event_ns = time_ns
        if life is not None:
            if len(self._life) >= MAX_PENDING_LIFE:
                if self._held_at is None:  # the position stays before it: a restart replays
                    self._held_at = time_ns - 1
                    log.error(
                        "%d container events wait for the store: the next are not kept now; "
                        "the events position stays before them",
                        len(self._life),
                    )
            else:
                self._life.append(life)
            self._wake.set()

    @property
    def pending_life(self) -> int:
        return len(self._life)

    async def open(self, db: BaseDBAsyncClient) -> None:
        table = AgentState._meta.db_table
        self._sql = (
            f"INSERT INTO {table} (host, last_seen_ns, last_event_ns, last_shutdown_ns) "
            f"VALUES ({Marks(db.capabilities.dialect).many(4)}) ON CONFLICT (host) DO UPDATE SET "
            "last_seen_ns = excluded.last_seen_ns, "
            f"last_event_ns = COALESCE(excluded.last_event_ns, {table}.last_event_ns), "
            "last_shutdown_ns = excluded.last_shutdown_ns"
        )
        _, rows = await db.execute_query(
            f"SELECT last_seen_ns, last_event_ns FROM {table} "
            f"WHERE host = {Marks(db.capabilities.dialect)()}",
            [self.host],
        )
        if rows:
            self.previous = PreviousRun(int(rows[0][0]), rows[0][1])

    async def save(self, *, shutdown: bool = False) -> None:
        """The heartbeat, the events position and the life events it has passed, together."""
        async with self._saving:
            now = time.time_ns()
            position, life = self.last_event_ns, list(self._life)  # one instant: no await
            if self._held_at is not None and position is not None:
                position = min(position, self._held_at)
            async with transaction() as conn:
                if self.generation is not None:
                    await self.generation.check(conn)
                if life:
                    await record_life(conn, self.host, life)
                await conn.execute_query(
                    self._sql, [self.host, now, position, now if shutdown else None]
                )
            del self._life[: len(life)]
            if life and self.commits is not None:
                self.commits.notified()

    async def heartbeat(self) -> None:
        """Record that the agent is alive, every few seconds, for as long as it runs; and
        store life events soon after they come (one save for a burst)."""
        while True:
            self._wake = anyio.Event()  # an event handled from here on wakes the next wait
            try:
                await in_child_task(self.save)  # see there: why
            except StoreRewound:
                raise
            except Exception as exc:  # the writer reports database failures; keep beating
                if (code := fatal(exc)) is not None:  # unless the store is unusable for good
                    raise StorageError(f"the store cannot be written ({code}): {exc}") from exc
                log.debug("heartbeat not saved: %s", exc)
            with anyio.move_on_after(self.heartbeat_seconds):
                await self._wake.wait()
                await anyio.sleep(LIFE_LINGER_S)
