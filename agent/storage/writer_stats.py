"""What the writer did so far: one record, for metrics, health and benchmarks, written by
the parts of the writer that do each thing (writer.py, outage.py, refusals.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class WriterStats:
    batches: int = 0  # commits
    rows: int = 0
    write_errors: int = 0
    truncated_rows: int = 0
    refused_rows: int = 0  # set aside as gaps: values the store refuses for good
    last_commit_seconds: float = 0.0
    failing: str | None = None  # the last write error, while it persists
    failing_since_ns: int | None = None  # when writing began to fail (the store went away)
    server: str | None = None  # PostgreSQL: the server written to (address:port), since
