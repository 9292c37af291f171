"""What crosses from the frame decoder to the store: a container's lines, column by column.

One object per read, not one per line: the decoder appends to six lists, the writer zips them
into rows, and nothing in between touches a line on its own. It lives outside both `docker/`
and `storage/` so that neither imports the other.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import NamedTuple

STDOUT = "stdout"
STDERR = "stderr"
TTY = "tty"
STREAMS = (STDOUT, STDERR, TTY)

# A line longer than the cap is stored as several rows; the flags let a reader join them back.
FLAG_TRUNCATED = 1  # more pieces of this line follow in the next row of the same stream
FLAG_CONTINUED = 2  # this row continues the previous row of the same stream
FLAG_REPLACED = 4  # the bytes were not valid UTF-8: undecodable bytes became U+FFFD


Labels = tuple[tuple[str, str], ...]  # a container's, as the store keeps them

# A container's own retention not said: it is known only by id and name (a replayed
# `destroy` after a restart, a mark before its first start), so its row keeps what it has.
# None says "none of its own" (its hints at a start give it), which a commit does store.
RETENTION_UNSAID = -1


@dataclass(frozen=True, slots=True)
class Source:
    """A container as its batches name it: who it is, and what its row in the store shows
    of it (its name, compose project for the viewer's grouping, its own retention: a hint).

    An identity, never changed: a `docker rename` makes a new one, which the registry hands
    to the container's stream (collectors/records.py). What changes with every batch has one owner
    each: the row's id and the tallies are the writer's (storage/tallies.py), the state
    travels on the batch that reports it.
    """

    container_id: str
    container_name: str
    project: str | None = None
    max_age_s: int | None = RETENTION_UNSAID  # seconds, 0 for ever, None: the host's
    # Each new identity of a container counts one more (ContainerRecord.identify): a batch
    # read under an older one but committed after it cannot bring the old name back.
    version: int = 0
    # What it was run as and with, for whoever selects containers among the stored ones
    # (alert rules): its image, compose service and labels (bounded: docker/inspect.py).
    image: str | None = None
    service: str | None = None
    labels: Labels = ()

    def described(
        self,
        project: str | None,
        service: str | None,
        image: str,
        labels: tuple[tuple[str, str], ...],
    ) -> Source:
        """This identity with what its inspect says (itself if nothing differs)."""
        said = (project, service, image or None, labels)
        if said == (self.project, self.service, self.image, self.labels):
            return self
        return replace(self, project=project, service=service, image=image or None, labels=labels)


class Line(NamedTuple):
    """One line, for tests and cold paths; the hot path keeps lines in a `LineBatch`."""

    stream: str
    timestamp_ns: int
    timestamp: str  # Docker's RFC 3339 text as sent; "" if its own UTC spelling (stored_text)
    message: str
    flags: int = 0
    size: int = 0  # bytes of the raw message, before decoding


class Dropped(NamedTuple):
    """A span of rows a rate limit dropped, as it stands after a batch: the writer keeps one
    gap row per span (keyed by its first stamp), replaced with each batch that adds to it."""

    from_ns: int
    to_ns: int
    lines: int
    reason: str


class Lost(NamedTuple):
    """Lines of a container lost for good, and why (a gap): committed by the writer like
    its lines, so a store that fails for a while (a full disk) loses no gap either."""

    reason: str
    from_ns: int | None
    to_ns: int | None


@dataclass(slots=True)
class LineBatch:
    """Lines of one container in the order Docker sent them.

    `position` is where the container's read position stands after these lines (per stream:
    last timestamp and how many lines carried it, see agent/cursor.py): the writer commits it
    with the rows, so the cursor is advanced once, by the collector that read them.
    """

    source: Source
    streams: list[str] = field(default_factory=list)
    timestamps_ns: list[int] = field(default_factory=list)
    timestamps: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    flags: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    position: dict[str, tuple[int, int]] = field(default_factory=dict)
    # Filled by the hints stage (agent/shaping): a level per row (or none at all), and the
    # rate limit's span of drops to record with this batch.
    levels: list[int | None] = field(default_factory=list)
    dropped: Dropped | None = None
    lost: Lost | None = None  # a gap to record with this batch
    state: str | None = None  # running, exited, removed: the container's, as of this batch
    # Rows its hints kept out of the store, by why ("filter", "rate limit"): tallied by the
    # writer with the batch that consumed them (metrics, status).
    kept_out: dict[str, int] | None = None

    def __len__(self) -> int:
        return len(self.timestamps_ns)

    @property
    def container_id(self) -> str:
        return self.source.container_id

    @property
    def container_name(self) -> str:
        return self.source.container_name

    def append(self, stream: str, ts_ns: int, ts: str, message: str, flags: int, size: int) -> None:
        self.streams.append(stream)
        self.timestamps_ns.append(ts_ns)
        self.timestamps.append(ts)
        self.messages.append(message)
        self.flags.append(flags)
        self.sizes.append(size)

    def take(self, keep: list[int]) -> LineBatch:
        """The lines at these indexes, in order (what a skipper keeps of a re-read)."""
        out = LineBatch(self.source)
        for i in keep:
            out.append(
                self.streams[i],
                self.timestamps_ns[i],
                self.timestamps[i],
                self.messages[i],
                self.flags[i],
                self.sizes[i],
            )
        if self.levels:
            out.levels = [self.levels[i] for i in keep]
        return out

    def rows(self) -> Iterator[tuple[str, int, str, str, int, int]]:
        """Each line as (stream, timestamp ns, timestamp, message, flags, size): for the cold
        paths that must look at lines one by one (a re-send, a multiline event)."""
        return zip(
            self.streams,
            self.timestamps_ns,
            self.timestamps,
            self.messages,
            self.flags,
            self.sizes,
            strict=True,
        )

    def lines(self) -> list[Line]:
        return [Line(*row) for row in self.rows()]

    @classmethod
    def of(cls, source: Source, lines: list[Line]) -> LineBatch:
        batch = cls(source)
        for line in lines:
            batch.append(*line)
        return batch

    @property
    def nbytes(self) -> int:
        return sum(self.sizes)
