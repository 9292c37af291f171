"""The one registry of containers: per container one record, and the one place that forgets.

Everything the agent knows of a container lives in its `ContainerRecord` — who it is, what
the policy decided, whether a person stopped it, its inspect made ready at `create`, where
its next stream resumes, its collector, and why it failed — so there is nothing to keep in
step between parts. (Vector's docker_logs source keeps one `ContainerState` per id the same
way.) The record is dropped at the container's `destroy`, by `forget`, and nowhere else.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import anyio

from agent.batch import Source
from agent.cursor import Cursor
from agent.docker.errors import DockerUnavailable
from agent.docker.inspect import ContainerInfo
from agent.policy import Decision
from agent.shaping.hints import Hints

if TYPE_CHECKING:
    from agent.collectors.docker import DockerLogCollector


class Persistence(enum.Enum):
    """Whether a failed stream may come back by itself (as Vector's `ErrorPersistence`)."""

    TRANSIENT = "transient"  # the daemon went away: the next listing starts it again
    PERMANENT = "permanent"  # anything else: only its next start event or a person does


@dataclass(frozen=True)
class Failure:
    persistence: Persistence
    why: str

    @classmethod
    def of(cls, exc: BaseException, why: str | None = None) -> Failure:
        transient = isinstance(exc, DockerUnavailable)
        persistence = Persistence.TRANSIENT if transient else Persistence.PERMANENT
        return cls(persistence, why or f"{type(exc).__name__}: {exc}")

    @property
    def transient(self) -> bool:
        return self.persistence is Persistence.TRANSIENT


def identity(source: Source, info: ContainerInfo | None, hints: Hints) -> Source:
    """The container as its rows show it: its compose project and service, image and labels,
    its own retention (a hint)."""
    if info is not None:
        source = source.described(info.project, info.service, info.image, info.kept_labels)
    max_age_s = int(hints.retention_s) if hints.retention_s is not None else None
    if max_age_s == source.max_age_s:
        return source
    return replace(source, max_age_s=max_age_s)


@dataclass(eq=False)
class ContainerRecord:
    source: Source  # its id and name, as the store keeps them
    decision: Decision | None = None
    stopped_by_hand: bool = False  # until its next start event or a start by hand
    prepared: ContainerInfo | None = None  # its inspect, made ready at `create`
    # Where its next stream resumes (None: ask the store), while no stream runs: a running
    # collector owns the position, and hands it back in its StreamEnd (collectors/manager.py).
    cursor: Cursor | None = None
    collector: DockerLogCollector | None = None  # the live one, if any
    failure: Failure | None = None  # why its last stream failed, until it starts again
    hints: Hints | None = None  # how its lines are read (shaping/hints.py), from its first start
    # Read by an earlier session of this process, which a rewound store ended: whatever the
    # store lacks of it is owed from its first line, not from the initial tail.
    read_before: bool = False
    lock: anyio.Lock = field(default_factory=anyio.Lock)  # one start/stop at a time

    @property
    def position(self) -> Cursor | None:
        """Where it stands now: its collector's position while one runs."""
        return self.collector.cursor if self.collector is not None else self.cursor

    def identify(self, source: Source) -> None:
        """Its new identity (a rename, its project and retention at start): the record's,
        and its live stream's, whose next batches carry it. It counts as newer than every
        identity the container had (`Source.version`)."""
        if source == self.source:
            return
        source = replace(source, version=self.source.version + 1)
        self.source = source
        if self.collector is not None:
            self.collector.identify(source)

    @property
    def id(self) -> str:
        return self.source.container_id

    @property
    def name(self) -> str:
        return self.source.container_name


class Registry:
    """Every container the agent has seen since it started, by full id."""

    def __init__(self) -> None:
        self._records: dict[str, ContainerRecord] = {}
        # Made-ready inspects of containers created and never started nor removed are
        # bounded: the oldest make way.
        self.max_prepared = 1024

    def __iter__(self) -> Iterator[ContainerRecord]:
        return iter(list(self._records.values()))

    def __len__(self) -> int:
        return len(self._records)

    def get(self, container_id: str) -> ContainerRecord | None:
        return self._records.get(container_id)

    def after_rewind(self) -> Registry:
        """The next session's registry, after the store was found rewound: positions go (the
        store's are the truth); a hand stop stays, and a container read before is owed
        whatever the store lacks of it (its first lines may have been lost with the store)."""
        fresh = Registry()
        for rec in self:
            read = rec.collector is not None or rec.cursor is not None
            if read or rec.stopped_by_hand:
                carried = fresh.record(rec.id, rec.name)
                carried.stopped_by_hand, carried.read_before = rec.stopped_by_hand, read
        return fresh

    def record(self, container_id: str, name: str | None = None) -> ContainerRecord:
        """The container's record, made on first sight."""
        rec = self._records.get(container_id)
        if rec is None:
            rec = ContainerRecord(Source(container_id, name or container_id[:12]))
            self._records[container_id] = rec
        elif name and name != rec.name:
            rec.identify(replace(rec.source, container_name=name))
        return rec

    def find(self, ref: str) -> ContainerRecord | None:
        """By full id, name, or unique id prefix: how people name containers."""
        rec = self._records.get(ref)
        if rec is not None:
            return rec
        named = [r for r in self._records.values() if r.name == ref]
        if len(named) == 1:
            return named[0]
        prefixed = [r for r in self._records.values() if r.id.startswith(ref)]
        return prefixed[0] if len(prefixed) == 1 and len(ref) >= 4 else None

    def prepare(self, rec: ContainerRecord, info: ContainerInfo, cursor: Cursor) -> None:
        prepared = [r for r in self._records.values() if r.prepared is not None]
        if len(prepared) >= self.max_prepared:
            prepared[0].prepared = None
        rec.prepared, rec.cursor = info, rec.cursor or cursor

    def active(self) -> list[ContainerRecord]:
        return [r for r in self._records.values() if r.collector is not None]

    def forget(self, container_id: str) -> None:
        """The container is gone for good (`destroy`): drop all that is kept about it (its
        metric series have their grace with the writer: storage/tallies.py)."""
        self._records.pop(container_id, None)
