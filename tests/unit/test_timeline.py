"""agent/timeline.py and the events' rendering (render.event_line): pure."""

from __future__ import annotations

import json

from agent import render
from agent.storage.life import LifeView
from agent.storage.reader import StoredRow
from agent.timeline import Timeline


def row(i: int, ts: int) -> StoredRow:
    return StoredRow(i, "h", "c" * 64, "web", "stdout", ts, "", f"line {i}", 0)


def event(i: int, ts: int, action: str = "die", name: str = "web") -> LifeView:
    return LifeView(i, "h", "c" * 64, name, "2026-12-04T00:00:00Z", ts, action, 1, None)


def test_events_go_before_the_first_line_stamped_after_them() -> None:
    t = Timeline([event(2, 25), event(1, 5), event(3, 30)])
    pieces = t.split([row(1, 10), row(2, 20), row(3, 30)])
    shape = [[r.id for r in p] if isinstance(p, list) else f"e{p.id}" for p in pieces]
    assert shape == ["e1", [1, 2], "e2", "e3", [3]]
    assert t.rest() == []


def test_later_events_wait_for_later_pages_or_the_end() -> None:
    t = Timeline([event(1, 50)])
    assert t.split([row(1, 10)]) == [[row(1, 10)]]
    assert t.split([]) == []
    assert [e.id for e in t.rest()] == [1]


def test_a_follower_adds_each_event_once_and_tail_drops_the_older() -> None:
    t = Timeline([event(1, 5)])
    t.add([event(1, 5), event(2, 40)])
    assert t.last_id == 2
    t.drop_before(10)
    assert [e.id for e in t.rest()] == [2]


def test_an_event_is_rendered_safe_for_a_terminal_and_as_data_in_json() -> None:
    hostile = event(1, 5, name="web\x1b[2J")
    text = render.event_line(hostile, as_json=False, timestamps=True, prefix=True)
    assert "\x1b" not in text and text.endswith("--- die (exit code 1)\n")
    data = json.loads(render.event_line(hostile, as_json=True, timestamps=False, prefix=False))
    assert data["container_name"] == "web\x1b[2J" and data["event"] == "die"
    assert "\x1b" not in render.event_line(hostile, as_json=True, timestamps=False, prefix=False)
