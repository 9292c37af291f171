"""A person's start and stop (the control API), through the manager like every other.

A stop by hand lasts until the container's next start event or a start by hand: listings
after a reconnect leave it stopped (agent/discovery/restart_rules.py).
"""

from __future__ import annotations

from collections.abc import Mapping

from agent.collectors.docker import DockerLogCollector
from agent.collectors.manager import LogCollectorManager
from agent.collectors.records import Registry
from agent.docker.client import DockerClient
from agent.docker.errors import ContainerNotFound
from agent.policy import ENABLE_LABEL, Scope, is_own, label_says_no


class Refused(Exception):
    """A person asked to collect a container the agent must not collect; says why."""


class HandControl:
    def __init__(
        self,
        client: DockerClient,
        manager: LogCollectorManager,
        registry: Registry,
        *,
        initial_tail: int | str,
        scope: Scope,
        self_ids: list[str],
    ) -> None:
        self.client = client
        self.manager = manager
        self.registry = registry
        self.initial_tail = initial_tail
        self.scope = scope
        self.self_ids = self_ids

    async def start(self, ref: str) -> DockerLogCollector:
        """Start collecting a container (name or id), resuming at its cursor."""
        info = await self.client.inspect(ref)
        self._check(info.id, info.labels)
        rec = self.registry.record(info.id, info.name)
        rec.stopped_by_hand = False
        async with rec.lock:
            return await self.manager.start_docker_collector(
                info.id, rec.name, tail=self.initial_tail, follow=info.running, info=info
            )

    def _check(self, cid: str, labels: Mapping[str, str]) -> None:
        """A hand start overrides the config's lists, but not the container owner's label,
        the agent's scope, nor the rule that the agent never reads itself."""
        if label_says_no(labels):
            raise Refused(f"the container says {ENABLE_LABEL}={labels[ENABLE_LABEL]}")
        if (wanted := self.scope.missing(labels)) is not None:
            raise Refused(f"the container is outside this agent's scope (label {wanted})")
        if is_own(cid, self.self_ids):
            raise Refused("that is the agent's own container")

    async def stop(self, ref: str) -> DockerLogCollector | None:
        """Stop collecting a container (name, id or prefix), storing what it wrote up to now."""
        collector = self.manager.get(ref)
        if collector is None:
            try:
                collector = self.manager.get((await self.client.inspect(ref)).id)
            except ContainerNotFound:
                return None
            if collector is None:
                return None
        rec = self.registry.record(collector.container_id)
        rec.stopped_by_hand = True
        await self.manager.stop_collector(collector.container_id, drain=True)
        return collector
