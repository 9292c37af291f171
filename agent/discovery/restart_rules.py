"""Pure: which container of a listing gets a stream, and from where.

A listing happens at start-up and after every reconnect. A container that already has a
collector, that a person stopped, or whose stream failed for a reason of its own (not the
daemon going away) gets none: only its next start event (or a person) starts it again.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.collectors.records import ContainerRecord


@dataclass(frozen=True)
class Start:
    tail: int | str  # where to start when the store has no position for it
    follow: bool  # False: an exited container, read to its end once


def after_listing(
    rec: ContainerRecord,
    *,
    running: bool,
    created_s: int,
    last_seen_ns: int | None,
    started_ns: int,
    initial_tail: int | str,
) -> Start | None:
    """`last_seen_ns`: when the agent was last alive on this host (None: never);
    `started_ns`: when this agent process started."""
    if rec.collector is not None or rec.stopped_by_hand:
        return None
    if rec.failure is not None and not rec.failure.transient:
        return None
    # New: created while the agent was down (or, on a first run, since this process started;
    # it may have started and exited before the first listing): read from its first line.
    since_ns = started_ns if last_seen_ns is None else last_seen_ns
    new = created_s >= since_ns // 1_000_000_000 or rec.read_before
    if running:
        return Start("all" if new else initial_tail, follow=True)
    if new or last_seen_ns is not None:
        # Exited: caught up from its cursor (tail 0 when it has none: nothing owed).
        return Start("all" if new else 0, follow=False)
    return None  # a first run: exited containers are history


def owed_nothing(start: Start, has_cursor: bool) -> bool:
    """An exited container the agent never read, and not new: nothing is owed."""
    return not start.follow and start.tail == 0 and not has_cursor
