"""What wakes a follower of the store when something is committed (no I/O of its own)."""

from __future__ import annotations

import anyio

# Only this agent writes its host's rows and lives, and it tells each commit; a follower
# told nothing reads the store this often all the same, in case (a store restored, a bug).
IDLE_S = 5.0


class CommitSignal:
    """Set at each commit notified; shared by any number of followers, each arming before it
    reads so that no commit slips between its read and its wait.

    `LogStorage.commits` is told by this agent's own commits of rows (storage/commit.py,
    storage/writer.py) and of containers' lives (storage/state.py); the one `logs -f` and
    the viewer share on PostgreSQL by every agent's commits (LISTEN/NOTIFY:
    storage/postgres.py)."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def notified(self, *_args: object) -> None:
        self._event.set()
        self._event = anyio.Event()

    def armed(self) -> anyio.Event:
        """Set at the next commit notified after this call."""
        return self._event
