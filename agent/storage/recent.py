"""The rows this host's writer has just committed, held a moment in memory for the alert
rules and the forwarders, which follow this host's rows: caught up, they take them from here
instead of reading them back (a row read back, narrowly, cost ~1.65 µs, about half of what
its whole commit did; a forwarder's row, whole and joined to its container, ~3.3 µs:
bench/README.md).

A follower gets only what its read (`follow.scan`) would give: the rows after its position
up to the committed bound it read (`follow.committed`), and only if every one of them is
held here under the writer session that bound names. On SQLite one writer's rows of a
transaction take consecutive ids, so a commit's rows are known by its first id and their
order. Anything else is read from the store, as before: a follower behind (what it wants
was let go), a host new to it, a session not this one, a commit whose answer was lost (its
rows are stored, never held). PostgreSQL holds nothing: its COPY does not say which ids it
took.

Nothing is held until a follower says it follows (`followed`), then the newest commits up to
`max_rows` rows, `max_chars` characters of messages and MAX_COMMITS commits.

A commit holds its rows' source ids, not their containers' names: a forwarder reads the name
each container has now (`HeldLines.rows`), as `follow.newer`'s join does (a selection judges
it, and a renamed container's rows are sent under its new name either way).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent.storage.follow import MAX_ID, Position, Scanned, moved
from agent.storage.models import LOG_LINE_COLUMNS
from agent.storage.reader import StoredRow

_SOURCE, _STREAM, _STAMP, _TEXT, _MESSAGE, _FLAGS, _LEVEL = (
    LOG_LINE_COLUMNS.index(c)
    for c in ("source_id", "stream", "timestamp_ns", "timestamp", "message", "flags", "level")
)

MAX_ROWS = 50_000  # a few commits of a firehose (the writer's are 20,000 rows at most)
# ... and their messages' characters (long lines hold fewer rows): a commit of the writer's
# most, 20,000 rows, of lines up to 800 characters.
MAX_CHARS = 16 << 20
MAX_COMMITS = 500  # and commits (a trickle commits a row at a time: each is a few lists)


@dataclass(frozen=True)
class Held:
    """One commit's rows, column by column as the writer inserted them (LOG_LINE_COLUMNS'
    order: the writer's own lists, not copies)."""

    epoch: int  # the writer session that committed them
    first: int  # the first row's id; the others follow, in this order
    columns: Sequence[list[Any]]

    @property
    def levels(self) -> list[int | None]:
        return self.columns[_LEVEL]

    @property
    def messages(self) -> list[str]:
        return self.columns[_MESSAGE]

    @property
    def last(self) -> int:
        return self.first + len(self.messages) - 1


class RecentRows:
    def __init__(self, max_rows: int = MAX_ROWS, max_chars: int = MAX_CHARS) -> None:
        self.max_rows, self.max_chars = max_rows, max_chars
        self.followed = False  # set by a follower: nothing is held before
        # Set by a follower that takes whole rows (a forwarder): every column is held, ~160
        # bytes a row more; else the first look's alone (levels and messages).
        self.whole = False
        self._held: deque[tuple[Held, int]] = deque()  # with its messages' characters
        self._rows = self._chars = 0
        self.taken = 0  # rows followers took from here (figures, tests)

    def add(self, held: Held) -> None:
        """A commit's rows, after it committed (in commit order)."""
        if not self.followed or not held.messages:
            return
        if not self.whole:  # the first look's columns alone
            columns: list[list[Any]] = [[] for _ in held.columns]
            columns[_LEVEL], columns[_MESSAGE] = held.levels, held.messages
            held = Held(held.epoch, held.first, columns)
        last = self._held[-1][0] if self._held else None
        if last is not None and (last.epoch != held.epoch or last.last >= held.first):
            self.clear()  # another session, or ids that went back: start again
        chars = sum(map(len, held.messages))
        self._held.append((held, chars))
        self._rows += len(held.messages)
        self._chars += chars
        while self._held and (
            self._rows > self.max_rows
            or self._chars > self.max_chars
            or len(self._held) > MAX_COMMITS
        ):
            gone, gone_chars = self._held.popleft()  # the oldest go (a follower reads them)
            self._rows -= len(gone.messages)
            self._chars -= gone_chars

    def clear(self) -> None:
        self._held.clear()
        self._rows = self._chars = 0

    def spans(self, epoch: int, after: int, upto: int) -> tuple[list[tuple[Held, int, int]], bool]:
        """Ids from `after`+1 on, up to `upto`, as slices (commit, start, stop) of what is held
        under `epoch` with no id between commits missing, and whether they reach `upto`."""
        out: list[tuple[Held, int, int]] = []
        want = after + 1
        for held, _ in self._held:
            if want > upto:
                break
            if held.last < want:
                continue
            if held.first > want or held.epoch != epoch:
                break
            stop = min(held.last, upto)
            out.append((held, want - held.first, stop - held.first + 1))
            want = stop + 1
        return out, want > upto


def scan_held(
    recent: RecentRows | None, host: str, after: Position, upto: Position, *, limit: int
) -> tuple[Scanned, Position] | None:
    """What `follow.scan` would read, from memory: this host's ids after the follower's
    position, at most `limit`, up to the bound; None if they are not all held (or it is not
    caught up enough to take any from here)."""
    taken = _taken(recent, host, after, upto, limit)
    if taken is None:
        return None
    spans, ids, position = taken
    return Scanned(ids, _joined(spans, _LEVEL), _joined(spans, _MESSAGE)), position


@dataclass(frozen=True, slots=True)
class HeldLines:
    """Committed rows taken from memory, column by column: all of them, in id order."""

    ids: range
    columns: tuple[list[Any], ...]  # source ids, streams, stamps, texts, messages, flags, levels

    def __len__(self) -> int:
        return len(self.ids)

    def source_ids(self) -> set[int]:
        return set(self.columns[0])

    def rows(
        self, host: str, names: Mapping[int, tuple[str, str]], min_level: int | None = None
    ) -> list[StoredRow]:
        """As `follow.newer` reads them: with their container's id and name as the store
        has them now (`names`, by source id: a row whose container has none is left out, as
        the join leaves it), those of `min_level` and above if given."""
        sids, streams, stamps, texts, messages, flags, levels = self.columns
        new = tuple.__new__
        out: list[StoredRow] = []
        for row_id, sid, stream, stamp, text, message, flag, level in zip(
            self.ids, sids, streams, stamps, texts, messages, flags, levels, strict=True
        ):
            if min_level is not None and (level is None or level < min_level):
                continue
            if (named := names.get(sid)) is None:
                continue
            out.append(new(StoredRow, (row_id, host, *named, stream, stamp, text, message,
                                       flag, level)))  # fmt: skip
        return out


def lines_held(
    recent: RecentRows | None, host: str, after: Position, upto: Position, *, limit: int
) -> tuple[HeldLines, Position] | None:
    """This host's rows after `after` up to the bound, at most `limit` ids of them, whole,
    from memory, and the position they reach; None as for `scan_held`. A filter is the
    taker's (`HeldLines.rows`): the position passes every id taken, as `newer`'s passes the
    rows its filter left out."""
    if recent is None or not recent.whole:
        return None
    taken = _taken(recent, host, after, upto, limit)
    if taken is None:
        return None
    spans, ids, position = taken
    wanted = (_SOURCE, _STREAM, _STAMP, _TEXT, _MESSAGE, _FLAGS, _LEVEL)
    return HeldLines(ids, tuple(_joined(spans, c) for c in wanted)), position


def _taken(
    recent: RecentRows | None, host: str, after: Position, upto: Position, limit: int
) -> tuple[list[tuple[Held, int, int]], range, Position] | None:
    """The held slices of the ids after the follower's position (at most `limit`, up to the
    bound), those ids, and the position they reach; None if they are not all held."""
    if recent is None or not recent.followed:
        return None
    seen, bound = after.as_dict().get(host), upto.as_dict().get(host)
    epoch = dict(upto.epochs).get(host)
    if seen is None or bound is None or epoch is None or seen >= bound:
        return None
    if dict(after.epochs).get(host) != epoch:
        return None  # read under another session: rewound() has had its say, read it
    spans, whole = recent.spans(epoch, seen, min(bound, seen + limit))
    if not spans or not whole:
        return None
    first = spans[0][0].first + spans[0][1]
    n = sum(stop - start for _, start, stop in spans)
    ids = range(first, first + n)
    recent.taken += n
    cut = ids[-1] if n >= limit else MAX_ID
    return spans, ids, moved(after, upto, cut)


def _joined(spans: list[tuple[Held, int, int]], column: int) -> list[Any]:
    if len(spans) == 1:
        commit, start, stop = spans[0]
        return commit.columns[column][start:stop]
    out: list[Any] = []
    for commit, start, stop in spans:
        out += commit.columns[column][start:stop]
    return out
