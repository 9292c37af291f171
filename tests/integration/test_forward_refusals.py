"""A receiver's refusals (tests/http_receiver.py, a real HTTP server; no Docker): a split that a
rate limit interrupts goes on from the parts it sent, a refusal of the request's form is a
gap of the whole batch, and whatever a receiver says in a refusal can be stored in a gap."""

from __future__ import annotations

from collections import Counter

import anyio
import pytest

from agent.batch import Line, LineBatch, Source
from agent.forward.runner import Forwarder
from agent.forward.settings import Destination
from agent.storage import LogStorage, consumers
from tests.conftest import query, until_reached
from tests.http_receiver import HttpReceiver

pytestmark = [pytest.mark.anyio]
T0 = 1_765_000_000_000_000_000


async def stored(storage: LogStorage, messages: list[str]) -> None:
    lines = [Line("stdout", T0 + i, "", m, 0, len(m)) for i, m in enumerate(messages)]
    await storage.write(LineBatch.of(Source("c" * 64, "app", image="app:1"), lines))
    await storage.flush()


async def forwarded(storage: LogStorage, d: Destination, upto: int) -> Forwarder:
    """A forwarder run until its committed position reaches row `upto` (judged by progress:
    it fails if the position stops moving for a minute)."""
    forwarder = Forwarder(storage.db, "h", d)

    async def position() -> int:
        at = await consumers.load(storage.db, forwarder.name)
        return at.as_dict().get("h", 0) if at is not None else 0

    reached = 0
    async with anyio.create_task_group() as tg:
        await tg.start(forwarder.run)

        async def watch() -> None:
            nonlocal reached
            while reached < upto:
                reached = await position()
                await anyio.sleep(0.05)

        tg.start_soon(watch)
        await until_reached(lambda: reached, upto)
        tg.cancel_scope.cancel()
    return forwarder


def forward_gaps(url: str) -> list[str]:
    return [str(r[0]) for r in query(url, "SELECT reason FROM gaps WHERE kind = 'forward'")]


async def test_a_split_cut_by_a_rate_limit_goes_on_from_the_parts_sent(store_url: str) -> None:
    """One line the receiver refuses (400) splits a batch of 500 into ~17 requests; a limit
    of 8 a second answers 429 part way. Each part sent is kept: the forwarder goes on from
    there, not from the whole batch again (which looped for ever, each time sending the good
    lines again: a review's finding). Every good line is taken exactly once."""
    messages = ["BAD" if i == 250 else f"line {i}" for i in range(500)]
    async with (
        HttpReceiver(refuse=lambda body: b"BAD" in body, per_second=8) as rx,
        LogStorage(store_url, host="h") as storage,
    ):
        await stored(storage, messages)
        d = Destination(name="loki", kind="loki", url=rx.loki_url, from_start=True,
                        linger_s=0.01)  # fmt: skip
        forwarder = await forwarded(storage, d, 500)
        statuses = Counter(r.status for r in rx.requests)
        taken = Counter(e["line"] for e in rx.loki_entries())
    assert statuses[429] > 0, statuses  # the limit did cut the split
    assert taken == Counter(m for m in messages if m != "BAD")
    (gap,) = forward_gaps(store_url)
    assert "1 lines refused" in gap
    assert forwarder.stats.refused == 1


async def test_a_refusal_of_the_request_s_form_is_a_gap_of_the_batch_not_a_split(
    store_url: str,
) -> None:
    """415 (or 405, 411, 414, 431) says the request's form is wrong, not a line: any part of
    the batch would be refused too. The batch is a gap of the destination at once, with what
    the receiver said — a NUL in it too, which PostgreSQL's text cannot hold (it stalled the
    destination for good: a review's finding)."""
    async with HttpReceiver() as rx, LogStorage(store_url, host="h") as storage:
        await stored(storage, [f"line {i}" for i in range(300)])
        rx.answer(415, body=b"unsupported \x00 media type")
        d = Destination(name="otlp", kind="otlp", url=rx.otlp_url, from_start=True,
                        linger_s=0.01, batch_lines=100)  # fmt: skip
        await forwarded(storage, d, 300)
        statuses = [r.status for r in rx.requests]
        sent = [r["body"] for r in rx.otlp_records()]
    assert statuses == [415, 200, 200]
    assert sent == [f"line {i}" for i in range(100, 300)]
    (gap,) = forward_gaps(store_url)
    assert "100 lines refused" in gap and "HTTP 415 unsupported \\x00 media type" in gap
