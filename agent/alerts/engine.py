"""Pure: rules applied to committed rows, in commit order, with a state that is committed
with the position it has reached (so a restart neither loses nor repeats a match).

Time is the lines' own (Docker's timestamps), not the clock's: lines read on catch-up, after
the agent was down, fall into the windows and cooldowns they were written in, and a replay
of the same rows gives the same alerts with the same ids.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from agent.alerts.rules import Rule
from agent.storage.reader import StoredRow

MAX_LINE_CHARS = 4096  # of the matching line, in a notification


@dataclass(frozen=True)
class Alert:
    id: str  # the same for the same rule and line, however often computed: the idempotency key
    rule: str
    host: str
    container_id: str
    container_name: str
    time_ns: int
    line: str
    count: int  # matches within the rule's window that made it fire
    more: int  # matches held back by the cooldown since the last notification
    row_id: int
    destinations: tuple[str, ...]

    def payload(self) -> dict[str, Any]:
        out = asdict(self)
        out["destinations"] = list(self.destinations)
        return out


@dataclass
class _Track:
    hits: list[int]  # times of matches within the window, oldest first (at most threshold)
    quiet_until: int = 0
    held: int = 0

    def as_json(self) -> list[Any]:
        return [self.hits, self.quiet_until, self.held]


class Engine:
    def __init__(self, rules: tuple[Rule, ...], host: str) -> None:
        self.rules, self.host = rules, host
        self._tracks: dict[str, _Track] = {}

    def feed(self, rows: list[StoredRow]) -> list[Alert]:
        fired: list[Alert] = []
        for row in rows:
            for rule in self.rules:
                if rule.watches(row.container_name) and rule.matches(row.message):
                    alert = self._matched(rule, row)
                    if alert is not None:
                        fired.append(alert)
        if rows:
            self._forget_quiet(rows[-1].timestamp_ns)
        return fired

    def _forget_quiet(self, now_ns: int) -> None:
        """Tracks with nothing left to count (no hit in any window, cooldown over, nothing
        held): dropped, so the state does not grow with every container ever seen."""
        longest = max((r.window_ns for r in self.rules), default=0)
        for key in [
            k
            for k, t in self._tracks.items()
            if not t.held and t.quiet_until <= now_ns and all(h <= now_ns - longest for h in t.hits)
        ]:
            del self._tracks[key]

    def _matched(self, rule: Rule, row: StoredRow) -> Alert | None:
        key = f"{rule.name}\x00{row.container_id}"
        track = self._tracks.get(key)
        if track is None:
            track = self._tracks[key] = _Track([])
        ts = row.timestamp_ns
        if ts < track.quiet_until:
            track.held += 1
            return None
        track.hits = [t for t in track.hits if t > ts - rule.window_ns]
        track.hits.append(ts)
        if len(track.hits) < rule.threshold:
            return None
        count, more = len(track.hits), track.held
        track.hits, track.held, track.quiet_until = [], 0, ts + rule.cooldown_ns
        return Alert(
            _alert_id(self.host, rule.name, row.id),
            rule.name,
            self.host,
            row.container_id,
            row.container_name,
            ts,
            row.message[:MAX_LINE_CHARS],
            count,
            more,
            row.id,
            rule.destinations,
        )

    def state(self) -> str:
        """What the engine knows, as text to commit with the position."""
        return json.dumps({k: t.as_json() for k, t in self._tracks.items()}, separators=(",", ":"))

    def restore(self, text: str | None) -> None:
        """The state `state()` gave, as committed; one it cannot read starts afresh."""
        self._tracks = {}
        if not text:
            return
        try:
            data = json.loads(text)
            for key, (hits, quiet_until, held) in data.items():
                self._tracks[str(key)] = _Track([int(t) for t in hits], int(quiet_until), int(held))
        except (ValueError, TypeError):
            self._tracks = {}


def _alert_id(host: str, rule: str, row_id: int) -> str:
    return hashlib.sha256(f"{host}\x00{rule}\x00{row_id}".encode()).hexdigest()[:32]
