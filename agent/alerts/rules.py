"""Pure: alert rules and destinations as the config gives them, checked once at start-up.

A rule says which containers (name globs), which lines (an RE2 pattern, a level at or above,
a stream, conditions on a JSON or logfmt line's fields) or which events, how many within a
window make it fire, how long it then keeps quiet (its cooldown: one notification per rule
and container, saying how many more matched), and where it goes (destinations.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent import where as where_
from agent.alerts.destinations import NAME, AlertConfigError, Destination, parse_destination
from agent.alerts.selection import KEYS as SELECTION_KEYS
from agent.alerts.selection import Selection, parse_selection, picked_destinations
from agent.batch import STREAMS
from agent.durations import parse_duration
from agent.grep import MAX_LABEL_PROGRAM, matcher, which_match
from agent.level_names import NAMES, level_of_word
from agent.storage.described import StoredContainer

__all__ = ["AlertConfigError", "AlertSettings", "Destination", "Rule", "parse_alerts"]
_RULE_KEYS = (
    "name", "match", "level", "stream", "where", "event", *SELECTION_KEYS, "threshold",
    "window", "cooldown", "max_age", "context", "destinations", "label_destinations",
)  # fmt: skip
_LINE_KEYS = ("match", "level", "stream", "where")  # what a line rule tests; none on an event rule
MAX_CONTEXT = 20  # lines before and after a matching line, read from the store
# What an event rule may watch (docker/life_events.py): `die` is a death with a non-zero exit
# code; `start` with a threshold is a restart loop (N starts within the window).
EVENTS = ("die", "oom", "unhealthy", "kill", "start", "restart")


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: str
    selection: Selection = field(default_factory=Selection)  # which containers; none: all
    threshold: int = 1  # matches within `window_ns` that fire it
    window_ns: int = 60 * 10**9
    cooldown_ns: int = 300 * 10**9
    destinations: tuple[str, ...] = ()
    event: str | None = None  # an event rule's (EVENTS); a line rule has a pattern instead
    min_level: int | None = None  # a line's level at or above (level_names)
    streams: tuple[str, ...] = ()  # stdout, stderr, tty; none: any
    where: str = ""  # conditions on a JSON or logfmt line's fields (agent/where.py)
    fields_hold: Callable[[str, where_.Fields | None], bool] | None = field(
        default=None, compare=False, repr=False
    )
    # A match older than this, by the newest line's time when it is read (a long outage
    # caught up), is counted into one summary per rule and container, not sent one by one.
    max_age_ns: int = 3600 * 10**9
    context: int = 0  # lines before and after a matching line, sent with it
    leaves: tuple[str, ...] = ()  # the names of `where`'s fields: text a line must hold
    # A container's label may pick among these (selection.py); empty: it may not.
    label_destinations: frozenset[str] = frozenset()

    @property
    def names(self) -> tuple[str, ...]:
        return self.selection.names

    def watches(self, container: StoredContainer) -> bool:
        return self.selection.picks(container)

    def destinations_for(self, container: StoredContainer) -> tuple[str, ...]:
        if not self.label_destinations:
            return self.destinations
        return picked_destinations(container, self.label_destinations, self.destinations)

    def shown(self) -> dict[str, Any]:
        """The rule as the API and the viewer show it: destinations by name (never a URL)."""
        return {
            "name": self.name,
            "watches": self.describe(),
            "names": list(self.names),
            **{k: v for k, v in self.selection.shown().items() if k != "names"},
            "threshold": self.threshold,
            "window_s": self.window_ns / 1e9,
            "cooldown_s": self.cooldown_ns / 1e9,
            "destinations": list(self.destinations),
        }

    def describe(self, *, quoted: bool = False) -> str:
        """What it watches, in one line (the API, the viewer; `alerts ls` quotes the
        pattern and the conditions as Python would)."""
        if self.event:
            return f"event {self.event}"
        show = repr if quoted else str
        said = [f"match {show(self.pattern)}"] if self.pattern else []
        if self.min_level is not None:
            said.append(f"level >= {NAMES[self.min_level]}")
        if self.streams:
            said.append(f"stream {'|'.join(self.streams)}")
        if self.where:
            said.append(f"where {show(self.where)}")
        return ", ".join(said)


@dataclass(frozen=True)
class AlertSettings:
    rules: tuple[Rule, ...] = ()
    destinations: tuple[Destination, ...] = ()

    @property
    def on(self) -> bool:
        return bool(self.rules)


def parse_alerts(section: Any, environ: Mapping[str, str] | None = None) -> AlertSettings:
    """`[alerts]` with `[[alerts.rules]]` and `[[alerts.destinations]]`; AlertConfigError."""
    if section in (None, {}):
        return AlertSettings()
    if not isinstance(section, dict):
        raise AlertConfigError("alerts: expected a table")
    unknown = set(section) - {"rules", "destinations"}
    if unknown:
        raise AlertConfigError(f"alerts.{sorted(unknown)[0]}: unknown key (rules, destinations)")
    env = os.environ if environ is None else environ
    dests = tuple(
        parse_destination(d, f"alerts.destinations[{n}]", env)
        for n, d in enumerate(_tables(section.get("destinations", []), "alerts.destinations"))
    )
    known = {d.name for d in dests}
    if len(known) != len(dests):
        raise AlertConfigError("alerts.destinations: two destinations have the same name")
    rules = tuple(
        _rule(r, f"alerts.rules[{n}]", known)
        for n, r in enumerate(_tables(section.get("rules", []), "alerts.rules"))
    )
    if len({r.name for r in rules}) != len(rules):
        raise AlertConfigError("alerts.rules: two rules have the same name")
    try:  # the engine matches every line rule's pattern in one pass (agent/grep.py)
        which_match([r.pattern for r in rules if r.event is None and r.pattern])
    except ValueError as exc:
        raise AlertConfigError(f"alerts.rules: {exc}") from None
    return AlertSettings(rules, dests)


def _tables(value: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise AlertConfigError(f"{where}: expected tables ([[{where}]])")
    return value


def _name(table: dict[str, Any], where: str) -> str:
    name = table.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise AlertConfigError(f"{where}.name: 1-64 of A-Z, a-z, 0-9, '.', '_', '-', got {name!r}")
    return name


def _rule(table: dict[str, Any], where: str, destinations: set[str]) -> Rule:
    name = _name(table, where)
    where = f"alerts.rules[{name}]"
    for key in table:
        if key not in _RULE_KEYS:
            raise AlertConfigError(f"{where}.{key}: unknown key (known: {', '.join(_RULE_KEYS)})")
    event = table.get("event")
    tests = [k for k in _LINE_KEYS if k in table]
    if (not tests) == (event is None):
        raise AlertConfigError(
            f"{where}: give exactly one of match (or level, stream, where: what a line must "
            "be) and event"
        )
    if event is not None and event not in EVENTS:
        raise AlertConfigError(f"{where}.event: one of {', '.join(EVENTS)}, got {event!r}")
    pattern = table.get("match", "")
    if "match" in table:  # checked alone here; the engine matches all patterns as one set
        if not isinstance(pattern, str) or not pattern:
            raise AlertConfigError(f"{where}.match: expected a pattern (RE2)")
        try:
            matcher(pattern, f"{where}.match", MAX_LABEL_PROGRAM * 10)
        except ValueError as exc:
            raise AlertConfigError(str(exc)) from None
    min_level = None
    if "level" in table:
        word = table["level"]
        min_level = level_of_word(word) if isinstance(word, str) else None
        if min_level is None:
            raise AlertConfigError(
                f"{where}.level: one of {', '.join(NAMES.values())}, got {word!r}"
            )
    streams = table.get("stream", [])
    streams = [streams] if isinstance(streams, str) else streams
    if not isinstance(streams, list) or not all(s in STREAMS for s in streams):
        raise AlertConfigError(f"{where}.stream: {' or '.join(STREAMS)} (or a list of them)")
    if "stream" in table and not streams:  # [] would be "any": every line of every container
        raise AlertConfigError(f"{where}.stream: an empty list; leave it out for both streams")
    conditions, holds, leaves = "", None, tuple[str, ...]()
    if "where" in table:
        conditions = table["where"]
        if not isinstance(conditions, str):
            raise AlertConfigError(f"{where}.where: expected conditions like 'status>=500'")
        try:
            parsed = where_.parse(conditions, f"{where}.where")
            holds, leaves = where_.checker(parsed), where_.leaves(parsed)
        except ValueError as exc:
            raise AlertConfigError(str(exc)) from None
    context = table.get("context", 0)
    if isinstance(context, bool) or not isinstance(context, int) or not 0 <= context <= MAX_CONTEXT:
        raise AlertConfigError(f"{where}.context: a count of lines from 0 to {MAX_CONTEXT}")
    if event is not None and context:
        raise AlertConfigError(f"{where}.context: only a line rule sends lines around a match")
    selection = parse_selection(table, where)
    threshold = table.get("threshold", 1)
    if isinstance(threshold, bool) or not isinstance(threshold, int) or not 1 <= threshold <= 1000:
        # each match within the window is kept in the committed state: a bound on it
        raise AlertConfigError(f"{where}.threshold: a count from 1 to 1000, got {threshold!r}")
    window = _duration(table, "window", "1m", where)
    cooldown = _duration(table, "cooldown", "5m", where, zero_ok=True)  # 0: every match
    max_age = _duration(table, "max_age", "1h", where)
    dests = table.get("destinations", [])
    if not isinstance(dests, list) or not dests or not all(isinstance(d, str) for d in dests):
        raise AlertConfigError(f"{where}.destinations: a list of destination names")
    for d in dests:
        if d not in destinations:
            raise AlertConfigError(f"{where}.destinations: no destination named {d!r}")
    by_label = table.get("label_destinations", [])
    if not isinstance(by_label, list) or not all(isinstance(d, str) for d in by_label):
        raise AlertConfigError(f"{where}.label_destinations: a list of destination names")
    for d in by_label:
        if d not in destinations:
            raise AlertConfigError(f"{where}.label_destinations: no destination named {d!r}")
    allowed = frozenset(by_label)
    return Rule(
        name, pattern, selection, threshold, window, cooldown, tuple(dests), event,
        min_level, tuple(streams), conditions, holds, max_age, context, leaves, allowed,
    )  # fmt: skip


def _duration(
    table: dict[str, Any], key: str, default: str, where: str, *, zero_ok: bool = False
) -> int:
    text = table.get(key, default)
    if not isinstance(text, str):
        raise AlertConfigError(f"{where}.{key}: a duration like 30s, 10m, 2h")
    try:
        seconds = 0.0 if zero_ok and text.strip() == "0" else parse_duration(text)
    except ValueError as exc:
        raise AlertConfigError(f"{where}.{key}: {exc}") from None
    if seconds < 0 or (seconds == 0 and not zero_ok):
        raise AlertConfigError(f"{where}.{key}: must be more than 0")
    return int(seconds * 10**9)
