"""A person's start and stop (the control API), through the manager like every other.

A stop by hand lasts until the container's next start event or a start by hand: listings
after a reconnect leave it stopped (agent/discovery/restart_rules.py).
"""

from __future__ import annotations

from agent.collectors.docker import DockerLogCollector
from agent.collectors.manager import LogCollectorManager
from agent.containers import Registry
from agent.docker.client import DockerClient
from agent.docker.errors import ContainerNotFound


class HandControl:
    def __init__(
        self,
        client: DockerClient,
        manager: LogCollectorManager,
        registry: Registry,
        *,
        initial_tail: int | str,
    ) -> None:
        self.client = client
        self.manager = manager
        self.registry = registry
        self.initial_tail = initial_tail

    async def start(self, ref: str) -> DockerLogCollector:
        """Start collecting a container (name or id), resuming at its cursor."""
        info = await self.client.inspect(ref)
        cid: str = info["Id"]
        rec = self.registry.record(cid, str(info.get("Name", "")).lstrip("/") or None)
        rec.stopped_by_hand = False
        running = bool((info.get("State") or {}).get("Running"))
        async with rec.lock:
            return await self.manager.start_docker_collector(
                cid, rec.name, tail=self.initial_tail, follow=running, info=info
            )

    async def stop(self, ref: str) -> DockerLogCollector | None:
        """Stop collecting a container (name, id or prefix), storing what it wrote up to now."""
        collector = self.manager.get(ref)
        if collector is None:
            try:
                collector = self.manager.get((await self.client.inspect(ref))["Id"])
            except ContainerNotFound:
                return None
            if collector is None:
                return None
        rec = self.registry.record(collector.container_id)
        rec.stopped_by_hand = True
        await self.manager.stop_collector(collector.container_id, drain=True)
        return collector
