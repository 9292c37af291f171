"""Wires the parts and owns their lifetimes: the one place that knows every part.

SIGTERM or SIGINT: stop discovery, stop every collector, flush storage, close the Docker
client, return 0. A second signal exits at once.
"""

from __future__ import annotations

import logging
import os
import signal

import anyio

from agent.collectors.manager import LogCollectorManager
from agent.config import Settings
from agent.discovery import Discovery
from agent.docker.client import DockerClient
from agent.storage import LogStorage

log = logging.getLogger("logagent")


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


async def _watch_signals(stop: anyio.Event) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            if stop.is_set():
                log.warning("second %s: exiting at once", signal.Signals(signum).name)
                os._exit(1)
            log.info("%s: shutting down", signal.Signals(signum).name)
            stop.set()


async def run_agent(settings: Settings, stop: anyio.Event | None = None) -> int:
    """Run until `stop` is set or a signal arrives; returns the exit code."""
    stop = stop or anyio.Event()
    async with anyio.create_task_group() as outer:
        outer.start_soon(_watch_signals, stop)
        async with (
            DockerClient(settings.docker_url or None) as client,
            LogStorage(settings.db_url, host=settings.host or None) as storage,
            LogCollectorManager(
                storage,
                client=client,
                tail=settings.initial_tail,
                max_line_bytes=settings.max_line_bytes,
            ) as manager,
        ):
            discovery = Discovery(
                client, manager, settings.policy, initial_tail=settings.initial_tail
            )
            async with anyio.create_task_group() as tg:
                tg.start_soon(discovery.run)
                log.info("logagent running: docker %s, database %s", client.url, settings.db_url)
                await stop.wait()
                tg.cancel_scope.cancel()
            # leaving the blocks: manager.stop_all(), storage flush, client close
        log.info("logagent stopped: %d lines written", storage.rows)
        outer.cancel_scope.cancel()
    return 0
