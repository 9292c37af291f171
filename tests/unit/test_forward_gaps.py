"""Pure parts of retention's forward gaps (agent/storage/forward_gaps.py): which of the rows
deleted a destination would have sent."""

from __future__ import annotations

from agent.alerts.selection import Selection
from agent.storage.described import StoredContainer
from agent.storage.forward_gaps import EVERYTHING, level_clause, picked
from agent.storage.sends import Sends
from agent.storage.sql import Marks

WEB, DB = StoredContainer("w", "web-1"), StoredContainer("d", "db-1")
SPANS = [["w", "web-1", 3, 1, 2], ["d", "db-1", 4, 1, 2], ["gone", "old", 5, 1, 2]]


def test_a_min_level_keeps_rows_at_or_above_it_never_one_without_a_level() -> None:
    assert level_clause(EVERYTHING, Marks("sqlite")) == ("", [])
    m = Marks("postgres")  # the forwarder's own clause (reader.LogFilter): a literal level
    assert level_clause(Sends(min_level=4), m) == (" AND l.level >= 4", [])
    assert level_clause(Sends(min_level=5), m) == (" AND l.level >= 5 AND l.level >= 4", [])


def test_only_picked_containers_count_and_one_not_described_counts_to_be_safe() -> None:
    web_only = Sends(picks=Selection(names=("web-*",)).picks)
    known = {"w": WEB, "d": DB}  # "gone": the store has no description of it
    assert picked(SPANS, web_only, known) == [SPANS[0], SPANS[2]]
    assert picked(SPANS, EVERYTHING, known) == SPANS
