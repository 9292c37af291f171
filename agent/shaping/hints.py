"""Pure: how a container's lines are read, from its labels and the config's hint rules.

A container's owner says it in labels (`logagent.multiline=java`, `logagent.rate=100/s`, …);
for containers that cannot be relabelled, `[[hints.rules]]` in the config match by name,
image or label glob and say the same keys. Rules apply in file order, labels last: the label
wins. A label that cannot be used never stops collection: that hint keeps its default and
the problem is reported (logged once per container, shown by `status`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.durations import format_duration, parse_duration
from agent.grep import MAX_LABEL_PROGRAM, matcher
from agent.policy import Matchers
from agent.shaping.levels import FORMATS
from agent.shaping.multiline import DEFAULT_MAX_LINES, DEFAULT_TIMEOUT, PRESETS
from agent.shaping.rate import Rate, parse_rate

PREFIX = "logagent."
KEYS = (
    "multiline",
    "multiline.start",
    "multiline.max_lines",
    "multiline.timeout",
    "format",
    "include_lines",
    "exclude_lines",
    "rate",
    "retention",
)
MAX_EVENT_LINES = 10_000
# Labels of ours that are not hints: read by the policy (enable) and the alert rules
# (alerts/selection.py: where a container asks its alerts to go).
NOT_HINTS = (PREFIX + "enable", PREFIX + "alert.destinations")


@dataclass(frozen=True)
class Hints:
    """What was asked of a container's lines, checked; defaults where nothing was."""

    multiline: str | None = None  # a preset of PRESETS
    multiline_start: str | None = None  # a pattern (RE2) that starts an event
    max_lines: int = DEFAULT_MAX_LINES
    timeout_s: float = DEFAULT_TIMEOUT
    format: str = "auto"
    include_lines: str | None = None
    exclude_lines: str | None = None
    rate: Rate | None = None
    retention_s: float | None = None  # None: the config's retention.max_age; 0: forever
    given: tuple[str, ...] = ()  # "key=value (label)" of every hint in effect, for status
    problems: tuple[str, ...] = ()  # hints that could not be used, and why

    @property
    def joins(self) -> bool:
        return self.multiline is not None or self.multiline_start is not None


def _count(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not text.strip().isdigit() or not low <= int(text) <= high:
            raise ValueError(f"{text!r} is not a whole number from {low} to {high}")
        return int(text)

    return parse


def _pattern(text: str) -> str:
    matcher(text, "pattern", MAX_LABEL_PROGRAM)  # ValueError, with RE2's reason or its cost
    return text


def _timeout(text: str) -> float:
    seconds = parse_duration(text.strip())
    if not 0.01 <= seconds <= 60:
        raise ValueError(f"{text!r}: between 10ms and 60s")
    return seconds


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in options:
            raise ValueError(f"{text!r} is not one of {', '.join(options)}")
        return value

    return parse


def capped(asked_s: float, cap_s: float) -> float:
    """A retention asked (0: for ever) within `cap_s` (0: no cap)."""
    if cap_s <= 0:
        return asked_s
    return cap_s if asked_s == 0 or asked_s > cap_s else asked_s


def longest(cap_s: float, other_s: float | None) -> float:
    """The longer of a cap (0: none) and a retention another gave (0: for ever; None: none):
    a label may always ask what the operator's own rule already gives its container."""
    if other_s is None:
        return cap_s
    if cap_s <= 0 or other_s == 0:
        return 0.0
    return max(cap_s, other_s)


def parse_retention(text: str) -> float:
    """A retention hint's text: seconds, 0 for ever (ValueError if it cannot be one)."""
    if text.strip() == "0":
        return 0.0
    seconds = parse_duration(text.strip())
    if seconds < 1:  # stored in whole seconds: 0.5s would become 0, "keep forever"
        raise ValueError(f"{text!r}: at least 1s (0 keeps forever)")
    return seconds


_PARSE: dict[str, tuple[str, Callable[[str], Any]]] = {
    "multiline": ("multiline", _choice(tuple(PRESETS))),
    "multiline.start": ("multiline_start", _pattern),
    "multiline.max_lines": ("max_lines", _count(1, MAX_EVENT_LINES)),
    "multiline.timeout": ("timeout_s", _timeout),
    "format": ("format", _choice(FORMATS)),
    "include_lines": ("include_lines", _pattern),
    "exclude_lines": ("exclude_lines", _pattern),
    "rate": ("rate", parse_rate),
    "retention": ("retention_s", parse_retention),
}


def check_hint(key: str, value: str) -> Any:
    """A hint's value, parsed; ValueError saying why it cannot be used."""
    if key not in _PARSE:
        raise ValueError(f"unknown hint {key!r} (known: {', '.join(KEYS)})")
    if len(value) > 4096:
        raise ValueError("longer than 4096 characters")
    return _PARSE[key][1](value)


@dataclass(frozen=True)
class HintRule:
    """`[[hints.rules]]`: containers matching it get its hints (checked when loaded)."""

    match: Matchers
    values: Mapping[str, str] = field(default_factory=dict)
    where: str = "hints.rules"


def hints_for(
    labels: Mapping[str, str] | None,
    *,
    name: str = "",
    image: str = "",
    rules: tuple[HintRule, ...] = (),
    default_rate: Rate | None = None,
    label_retention_max_s: float = 0.0,
) -> Hints:
    """The hints of a container: `[[hints.rules]]` that match it, then its own labels.
    `label_retention_max_s` (0: none): the longest retention a label may ask (a label is
    set by whoever runs the container; the config's rules are the operator's)."""
    labels = labels or {}
    fields: dict[str, Any] = {"rate": default_rate}
    given: dict[str, str] = {}
    problems: list[str] = []
    for rule in rules:
        if rule.match.match(name, image, labels) is None:
            continue
        for key, value in rule.values.items():
            fields[_PARSE[key][0]] = check_hint(key, value)  # checked at load: cannot fail
            given[key] = f"{key}={value} ({rule.where})"
    for label, value in labels.items():
        if not label.startswith(PREFIX) or label in NOT_HINTS:
            continue
        key = label[len(PREFIX) :]
        try:
            parsed = check_hint(key, value)  # an unknown key raises here
            if key == "retention":  # within the cap, or a matching rule's longer retention
                ruled = fields.get("retention_s")
                cap = longest(label_retention_max_s, ruled)
                if (kept := capped(parsed, cap)) != parsed:
                    by = f" or {given['retention']}" if ruled is not None and cap == ruled else ""
                    problems.append(
                        f"label {label}={value}: longer than retention.label_max_age{by} lets "
                        f"a label keep rows; {format_duration(kept)} is kept"
                    )
                    parsed = kept
            fields[_PARSE[key][0]] = parsed
        except ValueError as exc:
            problems.append(f"label {label}: {exc}; its default is used")
            continue
        given[key] = f"{key}={value} (label)"
    if fields.get("multiline") and fields.get("multiline_start"):
        labelled = {k for k, v in given.items() if v.endswith("(label)")}
        if {"multiline", "multiline.start"} <= labelled:
            problems.append(
                f"labels {PREFIX}multiline and {PREFIX}multiline.start both given: "
                "multiline.start is used"
            )
        drop = (
            "multiline"
            if "multiline.start" in labelled or "multiline" not in labelled
            else ("multiline.start")
        )
        fields[_PARSE[drop][0]] = None
        given.pop(drop, None)
    return Hints(**fields, given=tuple(given.values()), problems=tuple(problems))
