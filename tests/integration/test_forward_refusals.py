"""A receiver's refusals (tests/http_receiver.py, a real HTTP server; no Docker): a split that a
rate limit interrupts goes on from the parts it sent, a refusal of the request's form is
tried again, and whatever a receiver says in a refusal can be stored in a gap."""

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


@pytest.mark.parametrize("per_second", [8, 1])
async def test_a_split_cut_by_a_rate_limit_goes_on_from_the_parts_sent(
    store_url: str, per_second: int
) -> None:
    """One line the receiver refuses (400) splits a batch of 500 into ~17 requests; a rate
    limit answers 429 part way. Each part sent is kept, and the next batch is no larger
    than the part that was cut: the forwarder goes on, not from the whole batch again
    (which looped for ever, each time sending the good lines again: a review's finding;
    at one request a second, even the first part of each try was cut). Every good line is
    taken exactly once."""
    messages = ["BAD" if i == 250 else f"line {i}" for i in range(500)]
    async with (
        HttpReceiver(refuse=lambda body: b"BAD" in body, per_second=per_second) as rx,
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


async def test_what_a_receiver_says_in_a_refusal_is_kept_in_the_gap_it_makes(
    store_url: str,
) -> None:
    """A NUL in a refusal's text (a binary body): PostgreSQL's text cannot hold it, and the
    destination stalled for good on the gap it could not store (a review's finding)."""
    async with HttpReceiver() as rx, LogStorage(store_url, host="h") as storage:
        await stored(storage, ["the one line"])
        rx.answer(400, body=b"bad \x00 record \x1b[2J")
        d = Destination(name="otlp", kind="otlp", url=rx.otlp_url, from_start=True,
                        linger_s=0.01)  # fmt: skip
        await forwarded(storage, d, 1)
    (gap,) = forward_gaps(store_url)
    assert "1 lines refused" in gap and "HTTP 400 bad \\x00 record \\x1b[2J" in gap


async def test_a_refusal_of_the_request_s_form_is_tried_again_never_a_gap(
    store_url: str,
) -> None:
    """415 (or 404, 405, 431) says the receiver or its proxy is set up for another request,
    not that a line is wrong: a gap of every batch until the config is mended would drop
    the backlog. Tried again; every line arrives once it is mended."""
    async with HttpReceiver() as rx, LogStorage(store_url, host="h") as storage:
        await stored(storage, [f"line {i}" for i in range(300)])
        rx.answer(415, times=2, body="unsupported media type")
        d = Destination(name="otlp", kind="otlp", url=rx.otlp_url, from_start=True,
                        linger_s=0.01, batch_lines=100)  # fmt: skip
        await forwarded(storage, d, 300)
        statuses = [r.status for r in rx.requests]
        sent = [r["body"] for r in rx.otlp_records()]
    assert statuses == [415, 415, 200, 200, 200]
    assert sent == [f"line {i}" for i in range(300)]
    assert forward_gaps(store_url) == []
