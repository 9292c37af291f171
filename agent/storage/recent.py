"""The rows this host's writer has just committed, held a moment in memory for the alert
rules, which follow this host's rows: caught up, they take them from here instead of
reading them back (a row read back, narrowly, cost ~1.65 µs, about half of what its whole
commit did: bench/README.md).

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

The forwarders read the store: a row's container name there is the one its container has
now (selections judge it), where a commit held its name then.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from agent.storage.follow import MAX_ID, Position, Scanned, moved

MAX_ROWS = 50_000  # a few commits of a firehose (the writer's are 20,000 rows at most)
# ... and their messages' characters (long lines hold fewer rows): a commit of the writer's
# most, 20,000 rows, of lines up to 800 characters.
MAX_CHARS = 16 << 20
MAX_COMMITS = 500  # and commits (a trickle commits a row at a time: each is a few lists)


@dataclass(frozen=True)
class Held:
    """One commit's rows as a first look reads them (`follow.Scanned`): levels and messages,
    as they were stored."""

    epoch: int  # the writer session that committed them
    first: int  # the first row's id; the others follow, in this order
    levels: list[int | None]
    messages: list[str]

    @property
    def last(self) -> int:
        return self.first + len(self.messages) - 1


class RecentRows:
    def __init__(self, max_rows: int = MAX_ROWS, max_chars: int = MAX_CHARS) -> None:
        self.max_rows, self.max_chars = max_rows, max_chars
        self.followed = False  # set by a follower: nothing is held before
        self._held: deque[tuple[Held, int]] = deque()  # with its messages' characters
        self._rows = self._chars = 0
        self.taken = 0  # rows followers took from here (figures, tests)

    def add(self, held: Held) -> None:
        """A commit's rows, after it committed (in commit order)."""
        if not self.followed or not held.messages:
            return
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
    if len(spans) == 1:
        commit, start, stop = spans[0]
        levels, messages = commit.levels[start:stop], commit.messages[start:stop]
    else:
        levels, messages = [], []
        for commit, start, stop in spans:
            levels += commit.levels[start:stop]
            messages += commit.messages[start:stop]
    first = spans[0][0].first + spans[0][1]
    ids = range(first, first + len(messages))
    recent.taken += len(ids)
    cut = ids[-1] if len(ids) >= limit else MAX_ID
    return Scanned(ids, levels, messages), moved(after, upto, cut)
