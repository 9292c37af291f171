"""The local control API (aiohttp): collectors, health, metrics.

Served on a unix socket (mode 0600: only its owner may steer the agent) and, if configured,
on a loopback TCP port where every request must carry the configured bearer token.
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from aiohttp import web
from anyio.abc import TaskStatus
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agent.collectors.docker import DockerLogCollector
from agent.docker.client import ContainerNotFound, DockerError
from agent.docker.timestamps import format_timestamp
from agent.metrics import build_registry

if TYPE_CHECKING:
    from agent.app import Agent

log = logging.getLogger("logagent.api")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def collector_view(c: DockerLogCollector) -> dict[str, Any]:
    return {
        "key": c.key,
        "container_id": c.container_id,
        "container_name": c.container_name,
        "state": c.state,
        "lines": c.lines,
        "bytes": c.bytes,
        "last_timestamp": format_timestamp(c.last_timestamp_ns) if c.last_timestamp_ns else None,
        "error": c.error,
    }


def _prepare_socket_path(path: Path) -> None:
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True)  # only the agent's user can reach in
    if path.is_socket():
        path.unlink()  # left by an agent that did not stop cleanly


class ControlAPI:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.registry = build_registry(agent)

    def app(self, *, token: str | None) -> web.Application:
        middlewares = [self._auth(token)] if token is not None else []
        app = web.Application(middlewares=middlewares)
        app.add_routes(
            [
                web.get("/collectors", self.list_collectors),
                web.post("/collectors/{container}", self.start_collector),
                web.delete("/collectors/{container}", self.stop_collector),
                web.get("/healthz", self.healthz),
                web.get("/metrics", self.metrics),
            ]
        )
        return app

    @staticmethod
    def _auth(token: str) -> Any:
        expected = f"Bearer {token}".encode()

        @web.middleware
        async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return web.json_response({"error": "missing or wrong bearer token"}, status=401)
            return await handler(request)

        return check

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        s = self.agent.settings
        runners: list[web.AppRunner] = []
        try:
            if s.api_socket:
                runner = web.AppRunner(self.app(token=None), access_log=None)
                await runner.setup()
                runners.append(runner)
                try:
                    await self._bind_unix(runner, Path(s.api_socket))
                except OSError as exc:
                    log.error("control API socket %s not opened: %s", s.api_socket, exc)
            if s.api_tcp_port:
                runner = web.AppRunner(self.app(token=s.api_token), access_log=None)
                await runner.setup()
                runners.append(runner)
                await web.TCPSite(runner, s.api_tcp_host, s.api_tcp_port).start()
                log.info("control API on http://%s:%d", s.api_tcp_host, s.api_tcp_port)
            task_status.started()
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                for runner in runners:
                    await runner.cleanup()

    @staticmethod
    async def _bind_unix(runner: web.AppRunner, path: Path) -> None:
        _prepare_socket_path(path)
        await web.UnixSite(runner, str(path)).start()
        os.chmod(path, 0o600)
        log.info("control API on unix socket %s", path)

    # -- handlers ------------------------------------------------------------------------

    async def list_collectors(self, _request: web.Request) -> web.Response:
        manager, discovery = self.agent.manager, self.agent.discovery
        assert manager is not None and discovery is not None
        active = [collector_view(c) for c in manager.active_collectors().values()]
        failed = [{"key": k, "state": "failed", "error": why} for k, why in manager.failed.items()]
        stopped = [
            {"key": f"docker:{cid}", "container_id": cid, "state": "stopped by hand"}
            for cid in sorted(discovery.stopped_by_hand)
        ]
        excluded = [
            {"container_id": cid, "state": "excluded", "reason": d.reason}
            for cid, d in discovery.decisions.items()
            if not d.collect
        ]
        return web.json_response(
            {"collectors": active, "failed": failed, "stopped": stopped, "excluded": excluded}
        )

    async def start_collector(self, request: web.Request) -> web.Response:
        assert self.agent.discovery is not None
        ref = request.match_info["container"]
        try:
            collector = await self.agent.discovery.start_by_hand(ref)
        except ContainerNotFound:
            return web.json_response({"error": f"no such container: {ref}"}, status=404)
        except DockerError as exc:
            return web.json_response({"error": str(exc)}, status=409)
        log.info("started by hand: %s", collector.container_name)
        return web.json_response(collector_view(collector))

    async def stop_collector(self, request: web.Request) -> web.Response:
        assert self.agent.discovery is not None
        ref = request.match_info["container"]
        collector = await self.agent.discovery.stop_by_hand(ref)
        if collector is None:
            return web.json_response({"error": f"no collector for {ref}"}, status=404)
        log.info("stopped by hand: %s", collector.container_name)
        return web.json_response(collector_view(collector))

    async def healthz(self, _request: web.Request) -> web.Response:
        client, storage, discovery = self.agent.client, self.agent.storage, self.agent.discovery
        docker_ok = False
        if client is not None:
            with anyio.move_on_after(2):
                try:
                    await client.version()
                    docker_ok = True
                except DockerError:
                    pass
        db_ok = storage is not None and storage.failing is None
        events_ok = discovery is not None and discovery.connected
        body = {
            "docker": docker_ok,
            "database": db_ok,
            "events": events_ok,
            "database_error": storage.failing if storage is not None else None,
        }
        return web.json_response(body, status=200 if docker_ok and db_ok and events_ok else 503)

    async def metrics(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )
