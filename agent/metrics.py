"""Prometheus metrics, read from the agent's parts when scraped: nothing on the hot path.

Only the write latency is observed as it happens (a histogram needs every sample); app.py
wires the writer's `on_commit` to it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.alerts.runner import AlertRunner
from agent.collectors.manager import LogCollectorManager
from agent.discovery.events import EventsFollower
from agent.forward.runner import Forwarder
from agent.storage import LogStorage
from agent.storage.retention import Retention


class AgentMetrics(Collector):
    def __init__(
        self,
        *,
        storage: LogStorage,
        manager: LogCollectorManager,
        follower: EventsFollower,
        retention: Retention,
        alerts: AlertRunner | None = None,
        forwarders: list[Forwarder] | None = None,
    ) -> None:
        self.alerts = alerts
        self.forwarders = forwarders or []
        self.storage = storage
        self.manager = manager
        self.follower = follower
        self.retention = retention

    def collect(self) -> Iterator[Metric]:
        yield from self._lines()
        yield from self._writer()
        yield from self._streams()
        yield CounterMetricFamily(
            "logagent_pruned_rows", "Rows deleted by retention", value=self.retention.pruned_rows
        )
        yield GaugeMetricFamily(
            "logagent_retention_max_lock_seconds",
            "Longest a retention transaction held the database",
            value=self.retention.max_lock_seconds,
        )
        yield CounterMetricFamily(
            "logagent_reconnects",
            "Times the Docker events stream was lost and reconnected",
            value=self.follower.reconnects,
        )
        yield GaugeMetricFamily(
            "logagent_docker_connected",
            "1 while the Docker events stream is live",
            value=1 if self.follower.connected else 0,
        )
        yield GaugeMetricFamily(
            "logagent_container_events_pending",
            "Containers' events (die, oom, ...) handled and not yet stored",
            value=self.storage.state.pending_life,
        )
        if self.alerts is not None:
            yield from self._alerts(self.alerts)
        if self.forwarders:
            yield from self._forward(self.forwarders)

    def _forward(self, forwarders: list[Forwarder]) -> Iterator[Metric]:
        """Per forward destination: what it got, what failed or was refused, its lag."""
        figures = (
            (CounterMetricFamily, "logagent_forward_lines", "Lines a destination acknowledged",
             "sent"),
            (CounterMetricFamily, "logagent_forward_failures",
             "Sends that failed (the batch is sent again)", "failures"),
            (CounterMetricFamily, "logagent_forward_refused_lines",
             "Lines a destination refused for good (gaps of the destination)", "refused"),
            (GaugeMetricFamily, "logagent_forward_lag_rows",
             "This host's committed rows not yet sent", "lag_rows"),
            (GaugeMetricFamily, "logagent_forward_lag_seconds",
             "Age of the oldest line not yet sent", "lag_seconds"),
        )  # fmt: skip
        for kind, name, said, field in figures:
            family = kind(name, said, labels=["destination"])
            for f in forwarders:
                family.add_metric([f.d.name], getattr(f.stats, field))
            yield family

    def _alerts(self, alerts: AlertRunner) -> Iterator[Metric]:
        fired = CounterMetricFamily(
            "logagent_alerts_fired", "Alerts the rules committed, per rule", labels=["rule"]
        )
        for rule, n in list(alerts.fired.items()):
            fired.add_metric([rule], n)
        yield fired
        failed = CounterMetricFamily(
            "logagent_alert_deliveries_failed",
            "Posts of alerts that failed (each is tried again), per destination",
            labels=["destination"],
        )
        for dest, n in list(alerts.failed.items()):
            failed.add_metric([dest], n)
        yield failed
        yield CounterMetricFamily(
            "logagent_alerts_sent", "Alerts delivered (a 2xx answer)", value=alerts.sent
        )
        yield GaugeMetricFamily(
            "logagent_alerts_pending", "Alerts waiting in the outbox", value=alerts.pending
        )

    def _lines(self) -> Iterator[Metric]:
        """Per container and stream, what this process committed (gone with the container)."""
        labels = ["container", "container_id", "stream"]
        lines = CounterMetricFamily(
            "logagent_lines",
            "Lines committed to the store, per container and stream",
            labels=labels,
        )
        size = CounterMetricFamily(
            "logagent_bytes",
            "Bytes of lines committed to the store, per container and stream",
            labels=labels,
        )
        series = self.storage.writer.tallies.series()
        for cid, tally in series:
            name, short = tally.name, cid[:12]
            for stream, (n, b) in list(tally.committed.items()):
                lines.add_metric([name, short, stream], n)
                size.add_metric([name, short, stream], b)
        yield lines
        yield size
        dropped = CounterMetricFamily(
            "logagent_dropped_lines",
            "Rows a container's hints kept out of the store (include/exclude_lines, rate)",
            labels=["container", "container_id", "reason"],
        )
        for cid, tally in series:
            for reason, n in list(tally.dropped.items()):
                dropped.add_metric([tally.name, cid[:12], reason], n)
        yield dropped

    def _writer(self) -> Iterator[Metric]:
        stats = self.storage.writer.stats
        yield CounterMetricFamily("logagent_batches", "Batches committed", value=stats.batches)
        yield CounterMetricFamily(
            "logagent_rows_written", "Rows committed to the store", value=stats.rows
        )
        yield CounterMetricFamily(
            "logagent_write_errors", "Failed batch commits (retried)", value=stats.write_errors
        )
        yield GaugeMetricFamily(
            "logagent_queue_depth", "Lines waiting to be committed", value=self.storage.queued
        )
        yield CounterMetricFamily(
            "logagent_gaps", "Spans of lines recorded as lost", value=self.storage.gaps_recorded
        )
        yield CounterMetricFamily(
            "logagent_truncated_rows",
            "Rows that are pieces of a line longer than max_line_bytes",
            value=stats.truncated_rows,
        )
        yield CounterMetricFamily(
            "logagent_refused_rows",
            "Rows the store refuses for good (a value out of its range), set aside as gaps",
            value=stats.refused_rows,
        )
        yield CounterMetricFamily(
            "logagent_followed_rows_from_memory",
            "Rows the alert rules took as the writer committed them, not read back from the "
            "store (SQLite)",
            value=self.storage.recent.taken if self.storage.recent is not None else 0,
        )

    def _streams(self) -> Iterator[Metric]:
        manager = self.manager
        yield GaugeMetricFamily(
            "logagent_active_collectors",
            "Containers being collected",
            value=len(manager.active_collectors()),
        )
        yield CounterMetricFamily(
            "logagent_collector_errors", "Collectors that failed", value=manager.errors
        )
        f = manager.figures()
        yield CounterMetricFamily(
            "logagent_stream_reads", "Reads from Docker's log streams", value=f.reads
        )
        yield CounterMetricFamily(
            "logagent_stream_rests",
            "Times a quiet stream rested before its next read (docker.read_rest)",
            value=f.rests,
        )
        yield CounterMetricFamily(
            "logagent_stream_chatty_rests",
            "Of those, the longer rests of chatty streams (docker.read_rest_chatty)",
            value=f.chatty_rests,
        )
        yield CounterMetricFamily(
            "logagent_stream_busy_spells",
            "Times a resting stream proved busy and stopped resting for a while",
            value=f.busy_spells,
        )
        yield CounterMetricFamily(
            "logagent_resent_lines",
            "Lines Docker sent again (after a log rotation) that were stored already: dropped",
            value=f.resent,
        )
        yield CounterMetricFamily(
            "logagent_clock_stepped_back_lines",
            "Lines older than their stream's last stored line that were not a re-send: stored",
            value=f.stepped_back,
        )


def build_registry(metrics: AgentMetrics) -> tuple[CollectorRegistry, Callable[[int, float], None]]:
    """The registry to serve, and the writer's `on_commit` that feeds the latency histogram."""
    registry = CollectorRegistry()
    registry.register(metrics)
    latency = Histogram(
        "logagent_write_seconds",
        "Time to commit one batch",
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        registry=registry,
    )
    return registry, lambda _rows, seconds: latency.observe(seconds)
