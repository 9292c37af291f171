"""The local control API (aiohttp): collectors, health, metrics.

Served on a unix socket (mode 0600: only its owner may steer the agent) and, if configured,
on a loopback TCP port where every request must carry the configured bearer token.
"""

from __future__ import annotations

import hmac
import logging
import os
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from aiohttp import web
from anyio.abc import TaskStatus
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from agent.alerts.runner import AlertRunner
from agent.collectors.docker import DockerLogCollector, docker_key
from agent.collectors.records import Registry
from agent.discovery.events import EventsFollower
from agent.discovery.hand import HandControl, Refused
from agent.docker.client import DockerClient
from agent.docker.errors import BadReference, ContainerNotFound, DockerError
from agent.forward.runner import Forwarder
from agent.storage.tallies import Tallies
from agent.storage.writer_stats import WriterStats
from agent.timestamps import format_timestamp

log = logging.getLogger("logagent.api")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def collector_view(c: DockerLogCollector, tallies: Tallies) -> dict[str, Any]:
    tally = tallies.of(c.container_id)
    return {
        "key": c.key,
        "container_id": c.container_id,
        "container_name": c.container_name,
        "state": c.state,
        "lines": c.lines,
        "bytes": c.reader.bytes,
        "last_timestamp": format_timestamp(last) if (last := c.reader.last_timestamp_ns) else None,
        "error": c.error,
        "rows": c.reader.rows,
        "dropped": dict(tally.dropped) if tally is not None else {},
        "hints": list(c.hints.given),
        "hint_problems": list(c.hints.problems),
    }


class UnsafeSocketDir(OSError):
    """The socket's folder lets other users replace or reach the socket."""


def _prepare_socket_path(path: Path) -> None:
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True)  # only the agent's user can reach in
    st = path.parent.stat()
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise UnsafeSocketDir(
            f"{path.parent} is not owned by this user or is writable by others "
            f"(mode {stat.filemode(st.st_mode)}): another user could replace the socket"
        )
    if path.is_socket():
        path.unlink()  # left by an agent that did not stop cleanly


@dataclass(frozen=True)
class Listeners:
    """Where the API listens: a unix socket (steering) and, optionally, loopback TCP."""

    socket: str = ""
    tcp_host: str = "127.0.0.1"
    tcp_port: int = 0
    token: str = ""


class ControlAPI:
    def __init__(
        self,
        listeners: Listeners,
        *,
        registry: Registry,
        hand: HandControl,
        client: DockerClient,
        writer: WriterStats,
        tallies: Tallies,
        follower: EventsFollower,
        metrics: CollectorRegistry,
        alerts: AlertRunner | None = None,
        forwarders: list[Forwarder] | None = None,
    ) -> None:
        self.alerts = alerts
        self.forwarders = forwarders or []
        self.listeners = listeners
        self.registry = registry
        self.hand = hand
        self.client = client
        self.writer = writer
        self.tallies = tallies
        self.follower = follower
        self.metrics_registry = metrics

    def app(self, *, token: str | None) -> web.Application:
        """The unix socket's app steers (`token` None); the TCP one, behind the token, only
        reads health and metrics: a scraper's token must not stop collection."""
        middlewares = [self._auth(token)] if token is not None else []
        app = web.Application(middlewares=middlewares)
        routes = [web.get("/healthz", self.healthz), web.get("/metrics", self.metrics)]
        if token is None:
            routes += [
                web.get("/collectors", self.list_collectors),
                web.post("/collectors/{container}", self.start_collector),
                web.delete("/collectors/{container}", self.stop_collector),
                web.get("/alerts", self.list_alerts),
                web.get("/forward", self.list_forward),
            ]
        app.add_routes(routes)
        return app

    @staticmethod
    def _auth(token: str) -> Any:
        expected = token.encode()

        @web.middleware
        async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            try:
                raw = given.strip().encode("utf-8", "surrogateescape")
            except UnicodeError:
                raw = b""
            if scheme.lower() != "bearer" or not hmac.compare_digest(raw, expected):
                return web.json_response({"error": "missing or wrong bearer token"}, status=401)
            return await handler(request)

        return check

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        s = self.listeners
        runners: list[web.AppRunner] = []
        try:
            if s.socket:
                runner = web.AppRunner(self.app(token=None), access_log=None)
                await runner.setup()
                runners.append(runner)
                try:
                    await self._bind_unix(runner, Path(s.socket))
                except OSError as exc:
                    log.error("control API socket %s not opened: %s", s.socket, exc)
            if s.tcp_port:
                runner = web.AppRunner(self.app(token=s.token), access_log=None)
                await runner.setup()
                runners.append(runner)
                await web.TCPSite(runner, s.tcp_host, s.tcp_port).start()
                log.info("control API on http://%s:%d", s.tcp_host, s.tcp_port)
            task_status.started()
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                for runner in runners:
                    await runner.cleanup()

    @staticmethod
    async def _bind_unix(runner: web.AppRunner, path: Path) -> None:
        _prepare_socket_path(path)
        old = os.umask(0o077)  # created 0600: never connectable by others, not even briefly
        try:
            await web.UnixSite(runner, str(path)).start()
        finally:
            os.umask(old)
        os.chmod(path, 0o600)  # read and write is all a client needs
        log.info("control API on unix socket %s", path)

    # -- handlers ------------------------------------------------------------------------

    async def list_collectors(self, _request: web.Request) -> web.Response:
        records = list(self.registry)
        active = [
            collector_view(r.collector, self.tallies) for r in records if r.collector is not None
        ]
        failed = [
            {"key": docker_key(r.id), "state": "failed", "error": r.failure.why}
            for r in records
            if r.failure is not None and r.collector is None
        ]
        stopped = [
            {"key": docker_key(r.id), "container_id": r.id, "state": "stopped by hand"}
            for r in records
            if r.stopped_by_hand
        ]
        excluded = [
            {"container_id": r.id, "state": "excluded", "reason": r.decision.reason}
            for r in records
            if r.decision is not None and not r.decision.collect
        ]
        store = {"server": self.writer.server, "failing": self.writer.failing}
        return web.json_response(
            {
                "collectors": active,
                "failed": failed,
                "stopped": stopped,
                "excluded": excluded,
                "store": store,
                "forward": self._forward(),
            }
        )

    async def start_collector(self, request: web.Request) -> web.Response:
        ref = request.match_info["container"]
        try:
            collector = await self.hand.start(ref)
        except BadReference as exc:
            return web.json_response({"error": str(exc)}, status=400)
        except Refused as exc:
            return web.json_response({"error": f"refused: {exc}"}, status=403)
        except ContainerNotFound:
            return web.json_response({"error": f"no such container: {ref}"}, status=404)
        except DockerError as exc:
            return web.json_response({"error": str(exc)}, status=409)
        log.info("started by hand: %s", collector.container_name)
        return web.json_response(collector_view(collector, self.tallies))

    async def stop_collector(self, request: web.Request) -> web.Response:
        ref = request.match_info["container"]
        try:
            collector = await self.hand.stop(ref)
        except BadReference as exc:
            return web.json_response({"error": str(exc)}, status=400)
        if collector is None:
            return web.json_response({"error": f"no collector for {ref}"}, status=404)
        log.info("stopped by hand: %s", collector.container_name)
        return web.json_response(collector_view(collector, self.tallies))

    async def healthz(self, _request: web.Request) -> web.Response:
        docker_ok = False
        with anyio.move_on_after(2):
            try:
                await self.client.version()
                docker_ok = True
            except DockerError:
                pass
        db_ok = self.writer.failing is None
        events_ok = self.follower.connected
        body = {
            "docker": docker_ok,
            "database": db_ok,
            "events": events_ok,
            "database_error": self.writer.failing,
            "database_failing_since": format_timestamp(self.writer.failing_since_ns)
            if self.writer.failing_since_ns
            else None,
        }
        return web.json_response(body, status=200 if docker_ok and db_ok and events_ok else 503)

    async def list_alerts(self, _request: web.Request) -> web.Response:
        """The rules and what this run did with them (never a destination's URL)."""
        if self.alerts is None:
            return web.json_response({"rules": [], "sent": 0, "pending": 0, "failed": {}})
        return web.json_response(self.alerts.summary())

    async def list_forward(self, _request: web.Request) -> web.Response:
        """Each destination: where to (a path or an address, never a secret), its lag in
        rows and seconds, what it sent, its last error."""
        return web.json_response({"forward": self._forward()})

    def _forward(self) -> list[dict[str, Any]]:
        return [{**f.d.shown(), **f.stats.shown()} for f in self.forwarders]

    async def metrics(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.metrics_registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )
