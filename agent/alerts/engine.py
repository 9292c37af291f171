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
from agent.render import life_text
from agent.storage.life import LifeView
from agent.storage.reader import StoredRow

MAX_LINE_CHARS = 4096  # of the matching line, in a notification
FORGET_AFTER_NS = 7 * 86400 * 10**9  # a track this much older than the newest line: dropped


@dataclass(frozen=True)
class Alert:
    id: str  # the same for the same rule and line, however often computed: the idempotency key
    rule: str
    host: str
    container_id: str
    container_name: str
    time_ns: int
    line: str  # the matching line, or the event as `die (exit code 3)`
    count: int  # matches within the rule's window that made it fire
    more: int  # matches held back by the cooldown since the last notification
    kind: str  # "line" or "event"
    ref: int  # the line's row id, or the event's id
    destinations: tuple[str, ...]

    def payload(self) -> dict[str, Any]:
        out = asdict(self)
        out["destinations"] = list(self.destinations)
        return out


@dataclass(frozen=True)
class _Seen:
    """A line or an event, as a rule sees it."""

    kind: str
    ref: int
    container_id: str
    container_name: str
    time_ns: int
    text: str


@dataclass
class _Track:
    hits: list[int]  # times of matches within the window, oldest first (at most threshold)
    quiet_until: int = 0
    held: int = 0

    def as_json(self) -> list[Any]:
        return [self.hits, self.quiet_until, self.held]

    def spent(self, now_ns: int, window_ns: int) -> bool:
        """Nothing left to count at `now_ns`: no hit in a window, cooldown over, none held."""
        fresh = any(h > now_ns - window_ns for h in self.hits)
        return not self.held and self.quiet_until <= now_ns and not fresh


class Engine:
    def __init__(self, rules: tuple[Rule, ...], host: str) -> None:
        self.host = host
        self._lines = tuple(r for r in rules if r.event is None)
        self._events = tuple(r for r in rules if r.event is not None)
        self.rules = rules
        self._tracks: dict[str, _Track] = {}
        self.events_after = 0  # the id of the last container event the rules have seen
        self._newest = 0  # the newest line's time seen: the engine's clock for old tracks

    def feed(self, rows: list[StoredRow]) -> list[Alert]:
        fired: list[Alert] = []
        for row in rows:
            for rule in self._lines:
                if rule.watches(row.container_name) and rule.matches(row.message):
                    seen = _Seen("line", row.id, row.container_id, row.container_name,
                                 row.timestamp_ns, row.message)  # fmt: skip
                    if (alert := self._matched(rule, seen)) is not None:
                        fired.append(alert)
        if rows:
            latest: dict[str, int] = {}  # per container, its newest line here: its own clock
            for row in rows:
                latest[row.container_id] = max(latest.get(row.container_id, 0), row.timestamp_ns)
            self._newest = max(self._newest, *latest.values())
            self._forget_quiet(latest, self._newest)
        return fired

    def feed_events(self, events: list[LifeView]) -> list[Alert]:
        """Containers' lives (storage/life.py), in id order: a rule's `event` picks them."""
        fired: list[Alert] = []
        for e in events:
            self.events_after = max(self.events_after, e.id)
            for rule in self._events:
                if rule.watches(e.container_name) and _is(rule.event, e):
                    seen = _Seen("event", e.id, e.container_id, e.container_name, e.time_ns,
                                 life_text(e))  # fmt: skip
                    if (alert := self._matched(rule, seen)) is not None:
                        fired.append(alert)
        return fired

    def _matched(self, rule: Rule, seen: _Seen) -> Alert | None:
        key = f"{rule.name}\x00{seen.container_id}"
        track = self._tracks.get(key)
        if track is None:
            track = self._tracks[key] = _Track([])
        ts = seen.time_ns
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
            _alert_id(self.host, rule.name, seen.kind, seen.ref),
            rule.name,
            self.host,
            seen.container_id,
            seen.container_name,
            ts,
            seen.text[:MAX_LINE_CHARS],
            count,
            more,
            seen.kind,
            seen.ref,
            rule.destinations,
        )

    def _forget_quiet(self, latest: dict[str, int], newest_ns: int) -> None:
        """Tracks with nothing left to count, by their container's own time (a container
        read hours behind the others keeps its cooldown); and any a week older than the
        newest line (a container gone): dropped, so the state does not grow forever."""
        longest = max((r.window_ns for r in self.rules), default=0)
        gone: list[str] = []
        for key, t in self._tracks.items():
            cid = key.rsplit("\x00", 1)[1]
            last = max(t.quiet_until, t.hits[-1] if t.hits else 0)
            now = latest.get(cid)
            if last < newest_ns - FORGET_AFTER_NS or (now is not None and t.spent(now, longest)):
                gone.append(key)
        for key in gone:
            del self._tracks[key]

    def state(self) -> str:
        """What the engine knows, as text to commit with the position."""
        tracks = {k: t.as_json() for k, t in self._tracks.items()}
        return json.dumps({"tracks": tracks, "events_after": self.events_after},
                          separators=(",", ":"))  # fmt: skip

    def restore(self, text: str | None) -> None:
        """The state `state()` gave, as committed; one it cannot read starts afresh."""
        self._tracks, self.events_after = {}, 0
        if not text:
            return
        try:
            data = json.loads(text)
            for key, (hits, quiet_until, held) in data["tracks"].items():
                self._tracks[str(key)] = _Track([int(t) for t in hits], int(quiet_until), int(held))
            self.events_after = int(data["events_after"])
        except (ValueError, TypeError, KeyError):
            self._tracks, self.events_after = {}, 0


def _is(event: str | None, e: LifeView) -> bool:
    """Whether a rule's `event` names this one: `die` is a death with a non-zero exit code
    (an exit 0 is a normal end), `unhealthy` a health check gone bad."""
    if event == "die":
        return e.action == "die" and e.exit_code != 0
    if event == "unhealthy":
        return e.action == "health_status" and e.detail == "unhealthy"
    return e.action == event


def _alert_id(host: str, rule: str, kind: str, ref: int) -> str:
    return hashlib.sha256(f"{host}\x00{rule}\x00{kind}\x00{ref}".encode()).hexdigest()[:32]
