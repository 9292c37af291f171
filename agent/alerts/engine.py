"""Pure: rules applied to committed rows, in commit order, with a state that is committed
with the position it has reached (so a restart neither loses nor repeats a match).

Time is the lines' own (Docker's timestamps), not the clock's: lines read on catch-up, after
the agent was down, fall into the windows and cooldowns they were written in, and a replay
of the same rows gives the same alerts with the same ids. The clock is asked one thing: how
old a match is. One older than its rule's `max_age` (a long outage caught up) is counted
into one summary per rule and container, made when the rules have caught up, not sent.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from agent import where
from agent.alerts.rules import Rule
from agent.grep import lines_matching, which_match
from agent.render import life_text
from agent.storage.described import StoredContainer, described_as
from agent.storage.follow import Scanned
from agent.storage.life import LifeView
from agent.storage.reader import StoredRow
from agent.timestamps import format_timestamp

MAX_LINE_CHARS = 4096  # of the matching line, in a notification
FORGET_AFTER_NS = 7 * 86400 * 10**9  # a track this much older than the newest line: dropped
# A track of a container not in this step, spent by a clock this far (or its rule's max_age,
# if longer) behind the newest line or event, is dropped: a host of short-lived containers
# (CI) would otherwise keep one per container and rule for a week, committed with every step
# (a review: 21,000 of them, 2.8 MB of state and 47 ms to write it, each step). A container
# read further behind the others than that has its matches summed up as old, not counted
# (and any track is dropped a week past the newest, FORGET_AFTER_NS).
BEHIND_NS = 3600 * 10**9
# A track's match this far before the time it last fired, or before a hit it counts (ten
# minutes): the host's clock was stepped back (it ran ahead, NTP mended it), as Docker's
# timestamps are the host's. Its cooldown and hits were of a time that will not come again
# for as long: judged by them, every match until then is held back (a review: silent for a
# day). Lines of one container come in their order, give or take its two streams (a
# second) and a multi-line event, stamped with its first line and open for up to 500 lines.
CLOCK_STEP_NS = 600 * 10**9


@dataclass(frozen=True)
class Alert:
    id: str  # the same for the same rule and line, however often computed: the idempotency key
    rule: str
    host: str
    container_id: str
    container_name: str
    time_ns: int
    line: str  # the matching line, or the event as `die (exit code 3)`
    count: int  # matches within the rule's window that made it fire (a summary: all it counts)
    more: int  # matches held back by the cooldown since the last notification
    kind: str  # "line", "event", or "summary" (matches older than the rule's max_age)
    ref: int  # the line's row id, or the event's id (a summary: its first match's)
    destinations: tuple[str, ...]
    context: int = 0  # lines before and after to send with it, read from the store when sent
    first_ns: int | None = None  # a summary: its oldest match's time

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
    old: int = 0  # matches older than max_age, for the summary
    old_first: int = 0  # the first's time and ref, the last's time
    old_ref: int = 0
    old_last: int = 0
    name: str = ""  # its container's name as the summary says it
    old_hits: list[int] = field(default_factory=list)  # old matches in a window, as `hits`
    old_to: list[str] = field(default_factory=list)  # the summary's destinations

    def as_json(self) -> list[Any]:
        return [self.hits, self.quiet_until, self.held, self.old, self.old_first,
                self.old_ref, self.old_last, self.name, self.old_hits, self.old_to]  # fmt: skip

    def spent(self, now_ns: int, window_ns: int) -> bool:
        """Nothing left to count at `now_ns`: no hit in a window, cooldown over, none held."""
        fresh = any(h > now_ns - window_ns for h in (*self.hits, *self.old_hits))
        return not self.held and not self.old and self.quiet_until <= now_ns and not fresh


class Engine:
    def __init__(self, rules: tuple[Rule, ...], host: str) -> None:
        self.host = host
        self._lines = tuple(r for r in rules if r.event is None)
        # The line rules' patterns in one RE2 set: one pass a line for all of them.
        patterned = [r for r in self._lines if r.pattern]
        self._patterned = tuple(patterned)
        self._unpatterned = tuple(r for r in self._lines if not r.pattern)
        patterns = [r.pattern for r in patterned]
        self._which = which_match(patterns) if patterned else None
        # The same, for a step's rows at once: one search a matching row (the first look).
        self._matching = lines_matching(patterns, self._which) if patterned else None
        self._events = tuple(r for r in rules if r.event is not None)
        self.rules = rules
        self._tracks: dict[str, _Track] = {}
        self.events_after = 0  # the id of the last container event the rules have seen
        self._newest = 0  # the newest line's or event's time seen: the clock for old tracks
        # Per rule: how far behind the newest a clock judges its tracks (BEHIND_NS, or its
        # max_age if longer: what it still counts rather than sums up as old).
        self._behind = {r.name: max(BEHIND_NS, r.max_age_ns) for r in rules}
        # Lines whose fields a rule's `where` could not judge (none known; a defence, so
        # that one line can never stop the rules): counted, the runner says so.
        self.unreadable = 0

    def candidates(self, scanned: Scanned) -> list[int]:
        """The ids of the rows some line rule may want (a first look: its pattern, or a
        level at or above a rule's, or the names of a rule's fields in the line); only
        those are read whole and fed. Most rows of a firehose are passed over here."""
        ids, levels, messages = scanned.ids, scanned.levels, scanned.messages
        unpatterned = self._unpatterned
        found = self._matching(messages) if self._matching is not None else []
        if unpatterned:  # and the rows a rule without a pattern may want, in order
            hit = set(found)
            found = [
                i
                for i, (level, message) in enumerate(zip(levels, messages, strict=True))
                if i in hit or any(_may_want(r, level, message) for r in unpatterned)
            ]
        return [ids[i] for i in found]

    def feed(
        self,
        rows: list[StoredRow],
        now_ns: int | None = None,
        containers: Mapping[str, StoredContainer] | None = None,
    ) -> list[Alert]:
        """The alerts these rows (in commit order) fire; `now_ns` is the clock, for max_age
        (None: no match is judged old); `containers` as the store describes them (one not
        in it is known by its name alone)."""
        fired: list[Alert] = []
        which, patterned, unpatterned = self._which, self._patterned, self._unpatterned
        for row in rows:
            hits = which(row.message) if which is not None else None
            if not hits and not unpatterned:  # most lines of a firehose: no rule's pattern
                continue
            candidates = [patterned[i] for i in sorted(hits)] if hits else []
            fields: where.Fields | None = None  # a line's fields, read once for all rules
            c = described_as(containers, row.container_id, row.container_name)
            for rule in (*candidates, *unpatterned) if unpatterned else candidates:
                if not (
                    (rule.min_level is None or (row.level or 0) >= rule.min_level)
                    and (not rule.streams or row.stream in rule.streams)
                    and rule.watches(c)
                ):
                    continue
                if rule.fields_hold is not None:
                    try:
                        if fields is None:
                            fields = where.fields_of(row.message) or {}
                        if not rule.fields_hold(row.message, fields):
                            continue
                    except (ValueError, TypeError, OverflowError, RecursionError):
                        self.unreadable += 1  # a line no check foresaw: not a match, said
                        continue
                seen = _Seen("line", row.id, row.container_id, row.container_name,
                             row.timestamp_ns, row.message)  # fmt: skip
                if (alert := self._matched(rule, seen, now_ns, c)) is not None:
                    fired.append(alert)
        if rows:
            latest: dict[str, int] = {}  # per container, its newest line here: its own clock
            for row in rows:
                latest[row.container_id] = max(latest.get(row.container_id, 0), row.timestamp_ns)
            self._seen_upto(max(latest.values()), now_ns)
            self._forget_quiet(latest, self._newest)
        return fired

    def _seen_upto(self, newest_ns: int, now_ns: int | None) -> None:
        """The newest time seen: never past the clock by more than a step (a clock that ran
        ahead and came back would judge every other container's tracks spent)."""
        self._newest = max(self._newest, newest_ns)
        if now_ns is not None:
            self._newest = min(self._newest, now_ns + CLOCK_STEP_NS)

    def feed_events(
        self,
        events: list[LifeView],
        now_ns: int | None = None,
        containers: Mapping[str, StoredContainer] | None = None,
    ) -> list[Alert]:
        """Containers' lives (storage/life.py), in id order: a rule's `event` picks them."""
        fired: list[Alert] = []
        for e in events:
            self.events_after = max(self.events_after, e.id)
            c = described_as(containers, e.container_id, e.container_name)
            for rule in self._events:
                if rule.watches(c) and _is(rule.event, e):
                    seen = _Seen("event", e.id, e.container_id, e.container_name, e.time_ns,
                                 life_text(e))  # fmt: skip
                    if (alert := self._matched(rule, seen, now_ns, c)) is not None:
                        fired.append(alert)
        if events:
            self._seen_upto(max(e.time_ns for e in events), now_ns)
            self._forget_quiet({}, self._newest)
        return fired

    def summaries(self) -> list[Alert]:
        """One alert per rule and container that counted matches older than its max_age:
        asked for once the rules have caught up with the store (a long outage is one
        notification, not a storm). Its id is its first match's, as a replay finds it."""
        out: list[Alert] = []
        by_name = {r.name: r for r in self.rules}
        for key, track in self._tracks.items():
            rule = by_name.get(key.rsplit("\x00", 1)[0])
            track.old_hits = []  # caught up: what was below its threshold never fired
            if not track.old or rule is None:
                continue
            cid = key.rsplit("\x00", 1)[1]
            text = (
                f"{track.old} matches from {format_timestamp(track.old_first)} to "
                f"{format_timestamp(track.old_last)}, older than the rule's max_age when read "
                "(the agent was away): summarised, not sent one by one"
            )
            alert_id = _alert_id(self.host, rule.name, "summary", track.old_ref, cid,
                                 track.old_first)  # fmt: skip
            out.append(
                Alert(
                    alert_id,
                    rule.name,
                    self.host,
                    cid,
                    track.name or cid[:12],
                    track.old_last,
                    text,
                    track.old,
                    0,
                    "summary",
                    track.old_ref,
                    tuple(track.old_to) or rule.destinations,
                    first_ns=track.old_first,
                )
            )
            track.old = track.old_first = track.old_ref = track.old_last = 0
            track.old_to = []
        return out

    def _matched(
        self, rule: Rule, seen: _Seen, now_ns: int | None, container: StoredContainer
    ) -> Alert | None:
        key = f"{rule.name}\x00{seen.container_id}"
        track = self._tracks.get(key)
        if track is None:
            track = self._tracks[key] = _Track([])
        ts = seen.time_ns
        if now_ns is not None and ts < now_ns - rule.max_age_ns:  # read long after: summed
            # What would have fired: a window that reached the threshold (no cooldown: it
            # is one notification anyway); its matches are counted.
            window = [t for t in track.old_hits if ts - rule.window_ns < t <= ts + CLOCK_STEP_NS]
            window.append(ts)
            if len(window) < rule.threshold:
                track.old_hits = window
                return None
            if not track.old:
                track.old_first, track.old_ref = min(window), seen.ref
                track.old_to = list(rule.destinations_for(container))
            track.old += len(window)
            track.old_hits = []
            track.old_last = max(track.old_last, ts)
            track.name = seen.container_name
            return None
        if track.quiet_until and ts < track.quiet_until - rule.cooldown_ns - CLOCK_STEP_NS:
            track.quiet_until = 0  # it fired by a clock that ran ahead: see CLOCK_STEP_NS
        if ts < track.quiet_until:
            track.held += 1
            return None
        track.hits = [t for t in track.hits if ts - rule.window_ns < t <= ts + CLOCK_STEP_NS]
        track.hits.append(ts)
        if len(track.hits) < rule.threshold:
            return None
        count, more = len(track.hits), track.held
        track.hits, track.held, track.quiet_until = [], 0, ts + rule.cooldown_ns
        return Alert(
            _alert_id(self.host, rule.name, seen.kind, seen.ref, seen.container_id, ts),
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
            rule.destinations_for(container),
            rule.context if seen.kind == "line" else 0,
        )

    def _forget_quiet(self, latest: dict[str, int], newest_ns: int) -> None:
        """Tracks with nothing left to count, by their container's own time (`latest`: a
        container read behind the others keeps its cooldown), or if it is not in this step
        by a clock its rule's `_behind` the newest; and any a week older than the newest (a
        container gone, with matches held): dropped, so the state does not grow forever.
        Old matches not yet at their threshold are judged by their container's own time
        alone: a catch-up reads a container's old lines among others' present ones, a page
        at a time (a review: dropped between its pages, they made no summary)."""
        longest = max((r.window_ns for r in self.rules), default=0)
        gone: list[str] = []
        for key, t in self._tracks.items():
            rule, cid = key.rsplit("\x00", 1)
            last = max([t.quiet_until, *t.hits[-1:], *t.old_hits[-1:]])
            now = latest.get(cid)
            if t.old:  # counted for a summary not made yet: kept until it is
                continue
            if now is None and t.old_hits:  # until its own lines pass them, or a week
                now = t.old_hits[-1]
            if now is None:
                now = newest_ns - self._behind.get(rule, BEHIND_NS)
            if last < newest_ns - FORGET_AFTER_NS or t.spent(now, longest):
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
            for key, (hits, *rest) in data["tracks"].items():  # 3 items before max_age
                n = [int(v) for v in rest[:6]] + [0] * (6 - len(rest[:6]))
                name = str(rest[6]) if len(rest) > 6 else ""
                old_hits = [int(t) for t in rest[7]] if len(rest) > 7 else []
                old_to = [str(d) for d in rest[8]] if len(rest) > 8 else []
                self._tracks[str(key)] = _Track(
                    [int(t) for t in hits], n[0], n[1], n[2], n[3], n[4], n[5], name,
                    old_hits, old_to,
                )  # fmt: skip
            self.events_after = int(data["events_after"])
        except (ValueError, TypeError, KeyError):
            self._tracks, self.events_after = {}, 0


def _may_want(rule: Rule, level: int | None, message: str | bytes) -> bool:
    """Whether a rule with no pattern may want this row, from its level and its text."""
    if rule.min_level is not None and (level or 0) < rule.min_level:
        return False
    if not rule.leaves:
        return True
    text = message if isinstance(message, str) else message.decode("utf-8", "replace")
    return where.may_hold(text, rule.leaves)


def _is(event: str | None, e: LifeView) -> bool:
    """Whether a rule's `event` names this one: `die` is a death with a non-zero exit code
    (an exit 0 is a normal end), `unhealthy` a health check gone bad."""
    if event == "die":
        return e.action == "die" and e.exit_code != 0
    if event == "unhealthy":
        return e.action == "health_status" and e.detail == "unhealthy"
    return e.action == event


def _alert_id(host: str, rule: str, kind: str, ref: int, container_id: str, time_ns: int) -> str:
    """The same for the same row (or event) however often it is read again; and its container
    and time with its id: a store that lost commits (a restored backup, a standby promoted
    behind) hands their row ids out again, to other lines, whose alerts a receiver dropping
    repeats by this key would drop (a review's finding)."""
    said = f"{host}\x00{rule}\x00{kind}\x00{ref}\x00{container_id}\x00{time_ns}"
    return hashlib.sha256(said.encode()).hexdigest()[:32]
