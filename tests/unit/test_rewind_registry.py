"""A rewound store ends the agent's session; what the next one keeps of the last (pure)."""

from __future__ import annotations

from agent.collectors.records import Registry
from agent.cursor import Cursor
from agent.discovery.restart_rules import Start, after_listing

NOW_S = 1_800_000_000
LAST_SEEN_NS = NOW_S * 1_000_000_000  # the store's last heartbeat (rewound too)
OLD_S = NOW_S - 3600  # created long before it


def start_of(registry: Registry, cid: str) -> Start | None:
    return after_listing(
        registry.record(cid),
        running=True,
        created_s=OLD_S,
        last_seen_ns=LAST_SEEN_NS,
        started_ns=LAST_SEEN_NS,
        initial_tail=100,
    )


def test_a_container_read_before_the_rewind_is_owed_from_its_first_line() -> None:
    """Its first lines may have been lost with the store: with no stored position, the next
    session reads it from the start, not from the initial tail (a silent loss)."""
    old = Registry()
    old.record("read").cursor = Cursor()
    old.record("stopped").stopped_by_hand = True
    old.record("seen-only")  # listed, never read: nothing owed
    fresh = old.after_rewind()
    assert {r.id for r in fresh} == {"read", "stopped"}
    assert start_of(fresh, "read") == Start("all", follow=True)
    assert start_of(fresh, "stopped") is None  # a hand stop stays
    assert start_of(fresh, "seen-only") == Start(100, follow=True)
    read = fresh.get("read")
    assert read is not None and read.cursor is None  # the store's position is the truth
