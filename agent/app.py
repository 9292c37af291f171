"""Wires the parts and owns their lifetimes: the one place that knows every part.

SIGTERM or SIGINT: stop discovery, stop every collector, flush storage, close the Docker
client, return 0. A second signal exits at once.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Iterable

import anyio
from anyio.abc import TaskStatus

from agent.alerts.runner import AlertRunner
from agent.api import ControlAPI, Listeners
from agent.collectors.manager import LogCollectorManager
from agent.collectors.records import Registry
from agent.config import Settings
from agent.discovery.events import EventsFollower
from agent.discovery.hand import HandControl
from agent.discovery.own_container import own_container_ids
from agent.discovery.reconciler import Reconciler
from agent.docker.client import DockerClient
from agent.forward.runner import Forwarder
from agent.forward.settings import Destination
from agent.metrics import AgentMetrics, build_registry
from agent.policy import Scope
from agent.redact import redact
from agent.shaping.hints import longest, parse_retention
from agent.storage import LogStorage, label_retention, search_index
from agent.storage.described import Described
from agent.storage.generation import StoreRewound
from agent.storage.retention import Retention
from agent.storage.search_index import SearchIndexer
from agent.storage.sends import Sends

log = logging.getLogger("logagent")


async def _watch_signals(stop: anyio.Event) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            if stop.is_set():
                log.warning("second %s: exiting at once", signal.Signals(signum).name)
                os._exit(1)
            log.info("%s: shutting down", signal.Signals(signum).name)
            stop.set()


class Agent:
    """The running agent; its parts are there to look at while `run` runs."""

    def __init__(
        self,
        settings: Settings,
        *,
        self_ids: list[str] | None = None,
        record_requests: bool = False,
    ) -> None:
        self.settings = settings
        self.self_ids = own_container_ids() if self_ids is None else self_ids
        self.record_requests = record_requests  # keep every Docker request (tests, audits)
        self.stop = anyio.Event()
        self.started_ns = time.time_ns()  # containers created since are read in full
        self.registry = Registry()
        self.client: DockerClient | None = None
        self.storage: LogStorage | None = None
        self.manager: LogCollectorManager | None = None
        self.reconciler: Reconciler | None = None
        self.follower: EventsFollower | None = None
        self.alerts: AlertRunner | None = None
        self.forwarders: list[Forwarder] = []
        self.rewinds = 0  # sessions ended by a store that lost acknowledged commits

    async def run(
        self, *, signals: bool = True, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> int:
        """Run until `stop` is set (or a signal); `started` once the first listing is done.

        A store found rewound (failed over to a standby that missed the newest commits, or
        restored from a backup) ends the session: everything read and not committed is let
        go, and a new session starts from what the store holds, as a restart would."""
        started = False

        def once() -> None:
            nonlocal started
            if not started:
                started = True
                task_status.started()

        while True:
            try:
                return await self._session(signals=signals, started=once)
            except Exception as exc:
                if self.stop.is_set() or not _rewound(exc):
                    raise
            self.rewinds += 1
            self.registry = self.registry.after_rewind()  # its positions were ahead
            log.warning("collection starts again from what the store holds (rewind %d)",
                        self.rewinds)  # fmt: skip
            await anyio.sleep(min(2.0 ** (self.rewinds - 1), 30.0))  # never a storm of them

    async def _recap_label_retention(self, storage: LogStorage) -> None:
        """Rows kept for longer than any container may now keep them, cut to that
        (storage/label_retention.py); never what stops the start."""
        s = self.settings
        bound = s.retention_label_max_age_s
        for rule in s.hint_rules:
            if "retention" in rule.values:
                bound = longest(bound, parse_retention(rule.values["retention"]))
        try:
            cut = await label_retention.recap(storage.db, storage.host, bound)
        except Exception as exc:
            log.warning("could not cut rows kept for longer than a label may ask: %s", exc)
            return
        if cut:
            log.warning("%d containers' rows were kept for longer than retention.label_max_age "
                        "(and [[hints.rules]]) now let any keep them: cut to it", cut)  # fmt: skip

    async def _session(self, *, signals: bool, started: Callable[[], None]) -> int:
        s = self.settings
        # Opened first, outside any task group: a store or socket that cannot be used is one
        # plain error (cli.py makes it one line), not an exception group.
        async with (
            DockerClient(s.docker_url or None) as client,
            LogStorage(
                s.db_url,
                host=s.host or None,
                max_queue_bytes=s.max_queue_bytes,
                lock_wait=10.0 if self.rewinds else 0.0,  # the last session's lock ending
            ) as storage,
            anyio.create_task_group() as outer,
        ):
            if signals:
                outer.start_soon(_watch_signals, self.stop)
            async with (
                LogCollectorManager(
                    storage,
                    client=client,
                    registry=self.registry,
                    tail=s.initial_tail,
                    max_line_bytes=s.max_line_bytes,
                    read_rest=s.read_rest_s,
                    chatty_rest=s.chatty_rest_s,
                    hint_rules=s.hint_rules,
                    default_rate=s.default_rate,
                    label_retention_max_s=s.retention_label_max_age_s,
                ) as manager,
            ):
                self.client, self.storage, self.manager = client, storage, manager
                client.record_requests = self.record_requests
                previous = storage.state.previous
                reconciler = self.reconciler = Reconciler(
                    client,
                    manager,
                    self.registry,
                    storage,
                    s.policy,
                    initial_tail=s.initial_tail,
                    self_ids=self.self_ids,
                    scope=Scope(s.scope_labels),
                    started_ns=self.started_ns,
                    last_seen_ns=previous.last_seen_ns if previous else None,
                )
                follower = self.follower = EventsFollower(
                    client,
                    reconciler,
                    storage.state,
                    scope=Scope(s.scope_labels),
                    since_ns=(previous.last_event_ns or previous.last_seen_ns)
                    if previous
                    else None,
                )
                retention = Retention(
                    storage,
                    max_age_s=s.retention_max_age_s,
                    max_bytes=s.retention_max_bytes,
                    forwarded=forward_sends(s.forward),
                )
                await search_index.prepare(storage.db, on=s.search_index)
                await self._recap_label_retention(storage)
                indexer = SearchIndexer(storage.db, storage.commits) if s.search_index else None
                described = Described(storage.db, storage.host)  # followers' containers
                if s.alerts.on:
                    self.alerts = AlertRunner(
                        storage.db, s.alerts, storage.host, described=described,
                        recent=storage.recent, reader=await storage.followers_db(),
                        commits=storage.commits,
                    )  # fmt: skip
                self.forwarders = [
                    Forwarder(
                        storage.db,
                        storage.host,
                        d,
                        described=described,
                        commits=storage.commits,
                        configured=[f.name for f in s.forward],
                    )
                    for d in s.forward
                ]
                metrics, on_commit = build_registry(
                    AgentMetrics(
                        storage=storage,
                        manager=manager,
                        follower=follower,
                        retention=retention,
                        alerts=self.alerts,
                        forwarders=self.forwarders,
                    )
                )
                storage.writer.on_commit = on_commit
                api = ControlAPI(
                    Listeners(s.api_socket, s.api_tcp_host, s.api_tcp_port, s.api_token),
                    registry=self.registry,
                    hand=HandControl(
                        client,
                        manager,
                        self.registry,
                        initial_tail=s.initial_tail,
                        scope=Scope(s.scope_labels),
                        self_ids=self.self_ids,
                    ),
                    client=client,
                    writer=storage.writer.stats,
                    tallies=storage.writer.tallies,
                    follower=follower,
                    metrics=metrics,
                    alerts=self.alerts,
                    forwarders=self.forwarders,
                )
                log.info(
                    "logagent starting: docker %s, database %s",
                    redact(client.url),
                    redact(s.db_url),
                )
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._cancel_on_stop, tg.cancel_scope)
                    await tg.start(api.serve)
                    tg.start_soon(retention.run_forever, s.retention_interval_s)
                    if indexer is not None:  # behind the writer, a chunk a transaction
                        tg.start_soon(indexer.run_forever)
                    if self.alerts is not None:  # its rules resume where they were
                        await tg.start(self.alerts.run)
                    for forwarder in self.forwarders:  # each from its own position
                        await tg.start(forwarder.run)
                    await tg.start(reconciler.run)
                    await tg.start(follower.run)  # waits for the daemon, however long
                    started()
                # discovery is stopped: read every stream up to now, then stop it
                with anyio.CancelScope(shield=True):
                    await manager.stop_all(drain=True)
                # leaving the blocks: manager.stop_all(), storage flush, client close
            log.info("logagent stopped: %d lines written", storage.writer.stats.rows)
            outer.cancel_scope.cancel()
        return 0

    async def _cancel_on_stop(self, scope: anyio.CancelScope) -> None:
        await self.stop.wait()
        scope.cancel()


def forward_sends(destinations: Iterable[Destination]) -> dict[str, Sends]:
    """What each configured destination sends, by name: retention counts only that as
    what it missed (storage/forward_gaps.py), judged as its forwarder judges."""
    return {d.name: d.sends() for d in destinations}


def _rewound(exc: BaseException) -> bool:
    """Whether `exc` (a task group's, or one it caused) says the store was rewound."""
    if isinstance(exc, StoreRewound):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return any(_rewound(e) for e in exc.exceptions)
    return False


async def run_agent(settings: Settings) -> int:
    return await Agent(settings).run()
