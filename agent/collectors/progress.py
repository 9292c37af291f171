"""A stream's progress clock: a slow stream is told from a silent one by what it did.

A line read or a store call returning is progress; time spent waiting on the store (room in
its queue, a lookup) is not silence. A fixed wall-clock budget cut a dead container's rest
of 200k lines on a busy machine, and a store slower than Docker made a busy stream look
stalled (issue 24, item 14).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import anyio

log = logging.getLogger("logagent.collector")

# anyio's clock on asyncio (the loop's time is time.monotonic), read without looking the
# running loop up on every read of every stream.
now = time.monotonic


class Progress:
    """One per stream; `ended` is set by its owner when the stream is over."""

    def __init__(self) -> None:
        self.at = now()  # when a line was last read or a store call last returned
        self._in_store = 0  # store calls waiting now
        self.ended = anyio.Event()

    def moved(self) -> None:
        self.at = now()

    @contextmanager
    def storing(self) -> Iterator[None]:
        """Around every wait on the store: counted as progress, never as silence."""
        self._in_store += 1
        try:
            yield
        finally:
            self._in_store -= 1
            self.at = now()

    async def stays_idle(self, idle: float, settle: float, reads: Callable[[], int]) -> bool:
        """Whether a stream with no line for `idle` s reads nothing for `settle` s more
        (False at once if it had a line since): a shutdown need not re-read what it holds."""
        if self._in_store or now() - self.at < idle:
            return False
        at, count, until = self.at, reads(), now() + settle
        while still := (not self._in_store and self.at == at and reads() == count):
            if (left := until - now()) <= 0:
                break
            await anyio.sleep(min(left, 0.1))  # a read ends the watch: polled, not signalled
        return still

    async def ends_unless_silent(self, stall: float) -> bool:
        """Wait for the stream's end (True), or until it has made no progress for `stall` s
        (False)."""
        began = now()
        while True:
            quiet = 0.0 if self._in_store else now() - max(self.at, began)
            if quiet >= stall:
                return False
            with anyio.move_on_after(stall - quiet):
                await self.ended.wait()
                return True

    async def rest_read(self, stall: float, patience: float, cut: anyio.Event, where: str) -> bool:
        """Until a dead container's stream ends (True), or is given up (False): its rest is
        all there will ever be of it, unless the container runs again (`cut` is set, True).

        Silence is reported, not acted on, for `patience` s: with `since`, Docker parses its
        log file up to the position before it sends a line (a 45 MB file sent nothing for
        over a second beside two busy processes).
        """
        async with anyio.create_task_group() as tg:

            async def on_cut() -> None:
                await cut.wait()
                log.info("%s runs again: its new stream reads the rest", where)
                tg.cancel_scope.cancel()

            tg.start_soon(on_cut)
            if not await self.ends_unless_silent(stall):
                log.warning(
                    "%s: the plain read of its rest has sent nothing for %.0f s; waiting for "
                    "it (Docker reads its log file up to the position first)",
                    where,
                    stall,
                )
                if not await self.ends_unless_silent(patience):
                    log.error(
                        "%s: the plain read of its rest sent nothing for %.0f s more: closed; "
                        "the agent's next start reads the rest from the stored position",
                        where,
                        patience,
                    )
                    tg.cancel_scope.cancel()
                    return False
            tg.cancel_scope.cancel()
        return True
