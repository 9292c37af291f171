"""The writer's per-container tallies: what metrics and status show of a container."""

from __future__ import annotations

import time

from agent.batch import Line, LineBatch, Source
from agent.storage.tallies import Tallies

SRC = Source("c" * 64, "app")


def lines(*streams: str) -> LineBatch:
    return LineBatch.of(
        SRC, [Line(s, i, "", "x" * (i + 1), 0, i + 1) for i, s in enumerate(streams)]
    )


def test_lines_bytes_and_rows_kept_out_are_counted_per_container() -> None:
    tallies = Tallies()
    batch = lines("stdout", "stderr", "stdout")
    batch.kept_out = {"filter": 2}
    tallies.count(batch)
    tallies.count(
        LineBatch.of(Source(SRC.container_id, "renamed"), [Line("stdout", 9, "", "y", 0, 1)])
    )
    tally = tallies.of(SRC.container_id)
    assert tally is not None
    assert tally.committed == {"stdout": [3, 5], "stderr": [1, 2]}
    assert tally.dropped == {"filter": 2}
    assert tally.name == "renamed"  # the series' label follows the container's name


def test_a_removed_containers_series_go_after_the_grace_and_not_before() -> None:
    tallies = Tallies(grace=0.2)
    tallies.count(lines("stdout"))
    tallies.count(LineBatch(SRC, state="removed"))
    assert [cid for cid, _ in tallies.series()] == [SRC.container_id]
    time.sleep(0.25)
    assert tallies.series() == []


def test_batches_with_nothing_to_count_make_no_series() -> None:
    tallies = Tallies()
    tallies.count(LineBatch(SRC, state="running"))
    assert tallies.series() == []


def test_removed_containers_go_with_nothing_scraping() -> None:
    """A host of short-lived containers and no Prometheus: their tallies still go, when the
    next container is removed after their grace (not only when metrics are read)."""
    tallies = Tallies(grace=0.0)
    for n in range(100):
        source = Source(f"{n:064d}", f"job-{n}")
        tallies.count(LineBatch.of(source, [Line("stdout", 1, "", "x", 0, 1)]))
        tallies.count(LineBatch(source, state="removed"))
    assert len(tallies._of) <= 1 and len(tallies._going) <= 1  # the last one's, at most
