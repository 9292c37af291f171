"""Prometheus metrics, read from the agent's parts when scraped: nothing on the hot path.

Only the write latency is observed as it happens (a histogram needs every sample).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from agent.app import Agent


class AgentMetrics(Collector):
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Metric]:
        storage, manager, discovery = self.agent.storage, self.agent.manager, self.agent.discovery
        if storage is not None:
            lines = CounterMetricFamily(
                "logagent_lines",
                "Lines committed to the store, per container and stream",
                labels=["container", "container_id", "stream"],
            )
            size = CounterMetricFamily(
                "logagent_bytes",
                "Bytes of lines committed to the store, per container and stream",
                labels=["container", "container_id", "stream"],
            )
            for (cid, name, stream), (n, b) in list(storage.tallies.items()):
                lines.add_metric([name, cid[:12], stream], n)
                size.add_metric([name, cid[:12], stream], b)
            yield lines
            yield size
            yield CounterMetricFamily(
                "logagent_batches", "Batches committed", value=storage.batches
            )
            yield CounterMetricFamily(
                "logagent_rows_written", "Rows committed to the store", value=storage.rows
            )
            yield CounterMetricFamily(
                "logagent_write_errors",
                "Failed batch commits (retried)",
                value=storage.write_errors,
            )
            yield GaugeMetricFamily(
                "logagent_queue_depth", "Lines waiting to be committed", value=storage.queued
            )
            yield CounterMetricFamily(
                "logagent_gaps", "Spans of lines recorded as lost", value=storage.gaps_recorded
            )
            yield CounterMetricFamily(
                "logagent_truncated_rows",
                "Rows that are pieces of a line longer than max_line_bytes",
                value=storage.truncated_rows,
            )
        if self.agent.retention is not None:
            yield CounterMetricFamily(
                "logagent_pruned_rows",
                "Rows deleted by retention",
                value=self.agent.retention.pruned_rows,
            )
            yield GaugeMetricFamily(
                "logagent_retention_max_lock_seconds",
                "Longest a retention transaction held the database",
                value=self.agent.retention.max_lock_seconds,
            )
        if manager is not None:
            yield GaugeMetricFamily(
                "logagent_active_collectors",
                "Containers being collected",
                value=len(manager.active_collectors()),
            )
            yield CounterMetricFamily(
                "logagent_collector_errors", "Collectors that failed", value=manager.errors
            )
            reads, rests, chatty, spells = manager.read_figures()
            yield CounterMetricFamily(
                "logagent_stream_reads", "Reads from Docker's log streams", value=reads
            )
            yield CounterMetricFamily(
                "logagent_stream_rests",
                "Times a quiet stream rested before its next read (docker.read_rest)",
                value=rests,
            )
            yield CounterMetricFamily(
                "logagent_stream_chatty_rests",
                "Of those, the longer rests of chatty streams (docker.read_rest_chatty)",
                value=chatty,
            )
            yield CounterMetricFamily(
                "logagent_stream_busy_spells",
                "Times a resting stream proved busy and stopped resting for a while",
                value=spells,
            )
        if discovery is not None:
            yield CounterMetricFamily(
                "logagent_reconnects",
                "Times the Docker events stream was lost and reconnected",
                value=discovery.reconnects,
            )
            yield GaugeMetricFamily(
                "logagent_docker_connected",
                "1 while the Docker events stream is live",
                value=1 if discovery.connected else 0,
            )


def build_registry(agent: Agent) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(AgentMetrics(agent))
    latency = Histogram(
        "logagent_write_seconds",
        "Time to commit one batch",
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        registry=registry,
    )
    if agent.storage is not None:
        agent.storage.on_commit = lambda _rows, seconds: latency.observe(seconds)
    return registry
