"""How a store that fails for a while is reported: at once, then after `report_every` s,
then at doubling intervals up to an hour — an outage of a day is a few lines in the log,
not 86,400 — and once more when writing works again."""

from __future__ import annotations

import logging
import time

from agent.storage.writer_stats import WriterStats

log = logging.getLogger("logagent.storage")


class OutageReport:
    def __init__(self, stats: WriterStats, report_every: float) -> None:
        self._stats = stats  # its `failing` and `failing_since_ns` are this report's
        self.report_every = report_every
        self._report_at = 0.0
        self._report_gap = report_every

    def failed(self, exc: Exception, rows: int, waiting: int) -> None:
        stats = self._stats
        stats.write_errors += 1
        if stats.failing is None:
            stats.failing_since_ns = time.time_ns()
            self._report_at = time.monotonic() + self.report_every
            self._report_gap = self.report_every
            log.error(
                "writing %d lines failed, will retry (collectors wait; Docker keeps the lines): %s",
                rows,
                exc,
            )
        elif time.monotonic() >= self._report_at:
            log.warning(
                "writing still fails after %.0f s (%d tries); %d lines wait, collectors are "
                "paused: %s",
                self._down(),
                stats.write_errors,
                waiting,
                exc,
            )
            self._report_gap = min(self._report_gap * 2, 3600.0)
            self._report_at = time.monotonic() + self._report_gap
        stats.failing = f"{type(exc).__name__}: {exc}"

    def worked(self) -> None:
        stats = self._stats
        if stats.failing is not None:
            log.warning("writing works again after %.0f s of: %s", self._down(), stats.failing)
            stats.failing, stats.failing_since_ns = None, None

    def _down(self) -> float:
        return (time.time_ns() - (self._stats.failing_since_ns or 0)) / 1e9
