"""The rows this host's writer has just committed, held a moment in memory for the followers
of this host's rows (the alert rules, the forwarders), so that one caught up takes them from
here instead of reading them back: a row read back cost about what its whole commit did
(bench/README.md: 1.65 µs a row narrowly, ~3.3 with its container, beside ~3.5 for the
writer).

A follower gets only what its read would give: the rows after its position up to the
committed bound it read (`follow.committed`), and only if every one of them is held here
under the writer session that bound names. On SQLite one writer's rows of a transaction
take consecutive ids, so a commit's rows are known by its first id and their order.
Anything else is read from the store, as before: a follower behind (what it wants was let
go), a host new to it, a session not this one, a commit whose answer was lost (its rows are
stored, never held), and PostgreSQL, whose COPY does not say which ids it took.

Nothing is held until a follower says it follows (`followed`), then at most `max_rows`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from itertools import islice

import anyio

from agent.storage.follow import MAX_ID, Position, Scanned, moved
from agent.storage.reader import StoredRow

MAX_ROWS = 20_000  # ~5 MB of 100-byte lines: a commit or two of a firehose


@dataclass(frozen=True)
class Held:
    """One commit's rows, column by column as they were stored (LOG_LINE_COLUMNS), with each
    source's container id and name as that commit wrote them in its row."""

    epoch: int  # the writer session that committed them
    first: int  # the first row's id; the others follow, in this order
    sids: list[int]
    streams: list[str]
    stamps: list[int]
    texts: list[str]
    messages: list[str]
    flags: list[int]
    levels: list[int | None]
    containers: dict[int, tuple[str, str]]

    @property
    def last(self) -> int:
        return self.first + len(self.messages) - 1


class RecentRows:
    def __init__(self, max_rows: int = MAX_ROWS) -> None:
        self.max_rows = max_rows
        self.followed = False  # set by a follower: nothing is held before
        self._held: deque[Held] = deque()
        self._rows = 0
        self.taken = 0  # rows followers took from here (figures, tests)
        self.commits = 0  # commits of rows added: what a follower waits to see grow
        self._added: anyio.Event | None = None

    def add(self, held: Held) -> None:
        """A commit's rows, after it committed (in commit order)."""
        if not self.followed or not held.messages:
            return
        self.commits += 1
        if self._added is not None:
            self._added.set()
            self._added = None
        if self._held and (self._held[-1].epoch != held.epoch or self._held[-1].last >= held.first):
            self.clear()  # another session, or ids that went back: start again
        self._held.append(held)
        self._rows += len(held.messages)
        while self._rows > self.max_rows and len(self._held) > 1:
            self._rows -= len(self._held.popleft().messages)

    async def wait_past(self, commits: int) -> None:
        """Return once a commit after the `commits`-th was added (use under a timeout)."""
        while self.commits <= commits:
            if self._added is None:
                self._added = anyio.Event()
            await self._added.wait()

    def clear(self) -> None:
        self._held.clear()
        self._rows = 0

    def spans(self, epoch: int, after: int, upto: int) -> tuple[list[tuple[Held, int, int]], bool]:
        """Ids from `after`+1 on, up to `upto`, as slices (commit, start, stop) of what is held
        under `epoch` with no id between commits missing, and whether they reach `upto`."""
        out: list[tuple[Held, int, int]] = []
        want = after + 1
        for held in self._held:
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


def _held(
    recent: RecentRows | None, host: str, after: Position, upto: Position, limit: int
) -> tuple[list[tuple[Held, int, int]], bool] | None:
    """What `recent` holds of the ids a follower of `host` reads next (after its position, at
    most `limit`, up to the bound) and whether that is all of them; None if it is not caught
    up enough to take any from there."""
    if recent is None or not recent.followed:
        return None
    seen, bound = after.as_dict().get(host), upto.as_dict().get(host)
    epoch = dict(upto.epochs).get(host)
    if seen is None or bound is None or epoch is None or seen >= bound:
        return None
    if dict(after.epochs).get(host) != epoch:
        return None  # read under another session: rewound() has had its say, read it
    spans, whole = recent.spans(epoch, seen, min(bound, seen + limit))
    return (spans, whole) if spans else None


def scan_held(
    recent: RecentRows | None, host: str, after: Position, upto: Position, *, limit: int
) -> tuple[list[Scanned], Position] | None:
    """What `follow.scan` would read, from memory; None if it is not all held."""
    held = _held(recent, host, after, upto, limit)
    if held is None or not held[1] or recent is None:
        return None
    found: list[Scanned] = []
    for commit, start, stop in held[0]:
        ids = range(commit.first + start, commit.first + stop)
        found += zip(
            ids, islice(commit.levels, start, stop), commit.messages[start:stop], strict=True
        )
    recent.taken += len(found)
    cut = found[-1][0] if len(found) >= limit else MAX_ID
    return found, moved(after, upto, cut)


def newer_held(
    recent: RecentRows | None,
    host: str,
    min_level: int | None,
    after: Position,
    upto: Position,
    *,
    limit: int,
) -> tuple[list[StoredRow], Position] | None:
    """What `follow.newer` would read of `host`'s rows (at `min_level` or above) up to a
    bound of that host alone, from memory; None if it is not all held. A row's container
    name is the one its commit wrote (a store read gives the name its container has now)."""
    if len(upto.ids) != 1 or upto.ids[0][0] != host:
        return None
    held = _held(recent, host, after, upto, MAX_ID)
    if held is None or recent is None:
        return None
    spans, whole = held
    rows: list[StoredRow] = []
    for c, start, stop in spans:
        who = c.containers
        for i in range(start, stop):
            level = c.levels[i]
            if min_level is not None and (level is None or level < min_level):
                continue
            cid, name = who[c.sids[i]]
            rows.append(StoredRow(c.first + i, host, cid, name, c.streams[i], c.stamps[i],
                                  c.texts[i], c.messages[i], c.flags[i], level))  # fmt: skip
            if len(rows) >= limit:
                break
        if len(rows) >= limit:
            break
    if len(rows) < limit and not whole:
        return None  # the rest to the bound is not all held: a read finds more
    recent.taken += len(rows)
    cut = rows[-1].id if len(rows) >= limit else MAX_ID
    return rows, moved(after, upto, cut)
