"""Pure: alert rules and destinations as the config gives them, checked once at start-up.

A rule says which containers (name globs), which lines (an RE2 pattern), how many within a
window make it fire, how long it then keeps quiet (its cooldown: one notification per rule
and container, saying how many more matched), and where it goes. A destination is a URL
(http or https), from the config or, as a secret, from the environment or a file: it is
never logged, shown or sent anywhere but to itself.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agent.durations import parse_duration
from agent.grep import MAX_LABEL_PROGRAM, matcher

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_RULE_KEYS = (
    "name", "match", "event", "names", "threshold", "window", "cooldown", "destinations",
)  # fmt: skip
# What an event rule may watch (docker/life_events.py): `die` is a death with a non-zero exit
# code; `start` with a threshold is a restart loop (N starts within the window).
EVENTS = ("die", "oom", "unhealthy", "kill", "start", "restart")
_DEST_KEYS = ("name", "url", "url_env", "url_file")


class AlertConfigError(ValueError):
    """A rule or destination that cannot be used: the message names it and the key."""


@dataclass(frozen=True)
class Destination:
    name: str
    url: str = field(repr=False)  # a secret: never in a repr, a log line or an answer


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: str
    matches: Callable[[str], bool] = field(compare=False, repr=False)
    names: tuple[str, ...] = ()  # container name globs; none: every container
    threshold: int = 1  # matches within `window_ns` that fire it
    window_ns: int = 60 * 10**9
    cooldown_ns: int = 300 * 10**9
    destinations: tuple[str, ...] = ()
    event: str | None = None  # an event rule's (EVENTS); a line rule has a pattern instead

    def watches(self, container_name: str) -> bool:
        return not self.names or any(fnmatchcase(container_name, g) for g in self.names)


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
        _destination(d, f"alerts.destinations[{n}]", env)
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
    return AlertSettings(rules, dests)


def _tables(value: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise AlertConfigError(f"{where}: expected tables ([[{where}]])")
    return value


def _name(table: dict[str, Any], where: str) -> str:
    name = table.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise AlertConfigError(f"{where}.name: 1-64 of A-Z, a-z, 0-9, '.', '_', '-', got {name!r}")
    return name


def _destination(table: dict[str, Any], where: str, env: Mapping[str, str]) -> Destination:
    name = _name(table, where)
    where = f"alerts.destinations[{name}]"
    for key in table:
        if key not in _DEST_KEYS:
            raise AlertConfigError(f"{where}.{key}: unknown key (known: {', '.join(_DEST_KEYS)})")
    given = [k for k in ("url", "url_env", "url_file") if k in table]
    if len(given) != 1:
        raise AlertConfigError(f"{where}: give exactly one of url, url_env, url_file")
    key = given[0]
    value = table[key]
    if not isinstance(value, str) or not value:
        raise AlertConfigError(f"{where}.{key}: expected a string")
    if key == "url_env":
        if value not in env:
            raise AlertConfigError(f"{where}.url_env: the environment has no {value}")
        url = env[value].strip()
    elif key == "url_file":
        try:
            url = Path(value).read_text().strip()
        except OSError as exc:
            raise AlertConfigError(f"{where}.url_file: cannot read it ({exc.strerror})") from None
    else:
        url = value.strip()
    try:
        urlsplit(url).port  # noqa: B018 (it raises for a port out of range)
        port_ok = True
    except ValueError:
        port_ok = False
    if not re.fullmatch(r"https?://[^\s/?#]+[^\s]*", url) or not port_ok:
        # the URL is a secret: the message says what is wrong, never what it is
        raise AlertConfigError(f"{where}.{key}: not an http:// or https:// URL")
    return Destination(name, url)


def _rule(table: dict[str, Any], where: str, destinations: set[str]) -> Rule:
    name = _name(table, where)
    where = f"alerts.rules[{name}]"
    for key in table:
        if key not in _RULE_KEYS:
            raise AlertConfigError(f"{where}.{key}: unknown key (known: {', '.join(_RULE_KEYS)})")
    pattern, event = table.get("match"), table.get("event")
    if (pattern is None) == (event is None):
        raise AlertConfigError(f"{where}: give exactly one of match (lines) and event")
    if event is not None and event not in EVENTS:
        raise AlertConfigError(f"{where}.event: one of {', '.join(EVENTS)}, got {event!r}")
    matches: Callable[[str], bool] = _never
    if event is not None:
        pattern = ""
    elif not isinstance(pattern, str) or not pattern:
        raise AlertConfigError(f"{where}.match: expected a pattern (RE2)")
    else:
        try:
            matches = matcher(pattern, f"{where}.match", MAX_LABEL_PROGRAM * 10)
        except ValueError as exc:
            raise AlertConfigError(str(exc)) from None
    names = table.get("names", [])
    if not isinstance(names, list) or not all(isinstance(g, str) and g for g in names):
        raise AlertConfigError(f"{where}.names: expected a list of name globs")
    threshold = table.get("threshold", 1)
    if isinstance(threshold, bool) or not isinstance(threshold, int) or not 1 <= threshold <= 1000:
        # each match within the window is kept in the committed state: a bound on it
        raise AlertConfigError(f"{where}.threshold: a count from 1 to 1000, got {threshold!r}")
    window = _duration(table, "window", "1m", where)
    cooldown = _duration(table, "cooldown", "5m", where)
    dests = table.get("destinations", [])
    if not isinstance(dests, list) or not dests or not all(isinstance(d, str) for d in dests):
        raise AlertConfigError(f"{where}.destinations: a list of destination names")
    for d in dests:
        if d not in destinations:
            raise AlertConfigError(f"{where}.destinations: no destination named {d!r}")
    return Rule(
        name, pattern, matches, tuple(names), threshold, window, cooldown, tuple(dests), event
    )


def _never(_line: str) -> bool:
    return False


def _duration(table: dict[str, Any], key: str, default: str, where: str) -> int:
    text = table.get(key, default)
    if not isinstance(text, str):
        raise AlertConfigError(f"{where}.{key}: a duration like 30s, 10m, 2h")
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise AlertConfigError(f"{where}.{key}: {exc}") from None
    if seconds <= 0:
        raise AlertConfigError(f"{where}.{key}: must be more than 0")
    return int(seconds * 10**9)
