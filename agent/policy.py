"""Who is collected (pure): a container's labels, then the config's lists, then the mode.

Precedence: the agent's own container is never collected; a `logagent.enable` label decides
next; then exclude lists; then include lists (when any is set, a container must match one);
then the mode (`collect_all`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

ENABLE_LABEL = "logagent.enable"


@dataclass(frozen=True)
class Scope:
    """The containers that exist for this agent at all: those with every one of these labels
    (`key` or `key=value`). Docker applies it to listings and events; a hand start checks it."""

    labels: tuple[str, ...] = ()

    def filters(self) -> dict[str, list[str]]:
        """Docker's `filters` for it (empty: every container)."""
        return {"label": list(self.labels)} if self.labels else {}

    def missing(self, labels: Mapping[str, str]) -> str | None:
        """The first wanted label a container lacks (None: it is in scope)."""
        for wanted in self.labels:
            key, sep, value = wanted.partition("=")
            if key not in labels or (sep and labels[key] != value):
                return wanted
        return None


def is_own(container_id: str, self_ids: Sequence[str]) -> bool:
    """Whether this is the agent's own container (it never reads itself)."""
    return any(sid and container_id.startswith(sid) for sid in self_ids)


class PatternError(ValueError):
    """A glob the config cannot use."""


def check_glob(pattern: str) -> None:
    """Reject what fnmatch would silently take literally: empty text, an unclosed `[`."""
    if not pattern:
        raise PatternError("empty pattern")
    depth = 0
    for ch in pattern:
        if ch == "[":
            depth += 1
        elif ch == "]" and depth:
            depth -= 1
    if depth:
        raise PatternError(f"unclosed '[' in pattern {pattern!r}")


@dataclass(frozen=True)
class Matchers:
    """Glob lists: names, images, and labels as `key` or `key=value` (both sides globs)."""

    names: tuple[str, ...] = ()
    images: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.names or self.images or self.labels)

    def match(self, name: str, image: str, labels: Mapping[str, str]) -> str | None:
        """What matched, as a reason ("name web-*"), or None."""
        for pattern in self.names:
            if fnmatchcase(name, pattern):
                return f"name {pattern}"
        for pattern in self.images:
            if fnmatchcase(image, pattern):
                return f"image {pattern}"
        for pattern in self.labels:
            key, sep, value = pattern.partition("=")
            for k, v in labels.items():
                if fnmatchcase(k, key) and (not sep or fnmatchcase(v, value)):
                    return f"label {pattern}"
        return None


@dataclass(frozen=True)
class Policy:
    collect_all: bool = True
    include: Matchers = field(default_factory=Matchers)
    exclude: Matchers = field(default_factory=Matchers)


@dataclass(frozen=True)
class Decision:
    collect: bool
    reason: str


_NO = ("false", "0", "no", "off")


def label_says_no(labels: Mapping[str, str]) -> bool:
    """The container's owner opted it out: nothing overrides that, not even a person."""
    value = labels.get(ENABLE_LABEL)
    return value is not None and value.strip().lower() in _NO


def decide(
    policy: Policy,
    *,
    container_id: str,
    name: str,
    image: str,
    labels: Mapping[str, str] | None,
    self_ids: Sequence[str] = (),
) -> Decision:
    labels = labels or {}
    if is_own(container_id, self_ids):
        return Decision(False, "excluded: this is the agent's own container")
    label = labels.get(ENABLE_LABEL)
    if label is not None:
        value = label.strip().lower()
        if value in _NO:
            return Decision(False, f"excluded by label {ENABLE_LABEL}={label}")
        if value in ("true", "1", "yes", "on"):
            return Decision(True, f"included by label {ENABLE_LABEL}={label}")
    hit = policy.exclude.match(name, image, labels)
    if hit is not None:
        return Decision(False, f"excluded by config exclude {hit}")
    if not policy.include.empty:
        hit = policy.include.match(name, image, labels)
        if hit is not None:
            return Decision(True, f"included by config include {hit}")
        return Decision(False, "excluded: matches no include pattern")
    if policy.collect_all:
        return Decision(True, "included: collect_all")
    return Decision(False, f"excluded: opt-in mode and no {ENABLE_LABEL}=true label")
