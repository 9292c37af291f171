"""The viewer's live tails cannot starve the store: they are capped, and on PostgreSQL they
share one LISTEN connection (a connection each let 110 tails use up the server's slots)."""

from __future__ import annotations

import base64
import json
from contextlib import AsyncExitStack

import anyio
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from agent.storage.follow import Committed, Position, rewound
from agent.storage.reader import open_store
from agent.web.auth import Access
from agent.web.server import Viewer
from tests.conftest import query
from tests.integration.test_web import HOST, PORT, fill

pytestmark = [pytest.mark.anyio]


async def next_event(response: ClientResponse) -> dict[bytes, bytes]:
    """The next Server-Sent Event of a tail, field by field."""
    event = b""
    with anyio.fail_after(30):
        while b"\n\n" not in event:
            event += await response.content.readany()
    return dict(f.split(b": ", 1) for f in event.split(b"\n\n")[0].split(b"\n"))


async def test_tails_past_the_cap_are_refused_and_share_one_listener(store_url: str) -> None:
    await fill(store_url, {"a": ["old"]})
    async with open_store(store_url) as db, AsyncExitStack() as stack:
        viewer = Viewer(db, store_url, Access(), "127.0.0.1", PORT)
        viewer.live.max_tails = 5
        await viewer.listen(stack)
        async with TestClient(TestServer(viewer.app())) as client:
            tails = [await client.get("/api/tail", headers=HOST) for _ in range(5)]
            assert [t.status for t in tails] == [200] * 5
            refused = await client.get("/api/tail", headers=HOST)
            assert refused.status == 503
            assert refused.headers["Retry-After"]
            if store_url.startswith("postgres"):
                listening = query(
                    store_url,
                    "SELECT COUNT(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN%' "
                    "AND datname = current_database()",
                )
                assert listening == [(1,)]
            await fill(store_url, {"a": ["x", "new"]})
            for tail in tails:  # every tail is woken by the one listener
                fields = await next_event(tail)
                assert [r["msg"] for r in json.loads(fields[b"data"])] == ["x", "new"]
                tail.close()
            await anyio.sleep(0.3)  # the closed tails' handlers end
            again = await client.get("/api/tail", headers=HOST)
            assert again.status == 200
            again.close()


async def test_a_tail_resumes_from_the_position_its_last_event_gave(store_url: str) -> None:
    await fill(store_url, {"a": ["one"]})
    async with open_store(store_url) as db:
        app = Viewer(db, store_url, Access(), "127.0.0.1", PORT).app()
        async with TestClient(TestServer(app)) as client:
            page = await client.get("/api/lines?c=a", headers=HOST)
            first = json.loads((await page.text()).splitlines()[0])
            assert [r["msg"] for r in first["rows"]] == ["one"]
            tail = await client.get(f"/api/tail?c=a&after={first['position']}", headers=HOST)
            await fill(store_url, {"a": ["x", "two"]})
            fields = await next_event(tail)
            assert [r["msg"] for r in json.loads(fields[b"data"])] == ["x", "two"]
            tail.close()
            # A reconnecting EventSource sends the last event's id: nothing is sent twice.
            resumed = await client.get(
                "/api/tail?c=a", headers={**HOST, "Last-Event-ID": fields[b"id"].decode()}
            )
            await fill(store_url, {"a": ["y", "three"]})
            fields = await next_event(resumed)
            assert [r["msg"] for r in json.loads(fields[b"data"])] == ["y", "three"]
            resumed.close()
            for bad in ("nope", "W1siaCIsLTFdXQ"):
                refused = await client.get(f"/api/tail?after={bad}", headers=HOST)
                assert refused.status == 400, bad
                assert "position" in (await refused.json())["error"]


def test_a_position_token_round_trips_and_refuses_what_it_never_made() -> None:
    position = Position.of({"alpha": 12, "béta\n": 2**63 - 1})
    assert Position.parse(position.token()) == position
    assert Position.parse(Position().token()) == Position()
    deep = base64.urlsafe_b64encode(b"[" * 100_000 + b"]" * 100_000).decode()
    hostile = ("", "!!", "W10x", "eyJhIjoxfQ", "W1siaCIsLTFdXQ", "W1siaCIsMS41XV0", "x" * 2**21)
    for bad in (*hostile, "W1siaCIsdHJ1ZV1d", deep):  # [["h", true]]; nested 100,000 deep
        with pytest.raises(ValueError, match="position"):
            Position.parse(bad)


def test_a_follower_ahead_of_a_rewound_store_follows_what_the_store_holds() -> None:
    """A standby promoted without the newest commits, or a store restored from a backup:
    the host's next rows are new, not ones already seen."""
    after = Position.of({"alpha": 500, "beta": 70})
    store = Position.of({"alpha": 300, "beta": 90, "gamma": 5})
    assert rewound(after, store) == Position.of({"alpha": 300, "beta": 70})


def test_a_follower_that_read_under_an_older_writer_session_rewinds_to_what_it_found() -> None:
    """A failover lost rows 301..500 of `alpha`, which the follower read; their ids may be
    taken again by new rows. The sessions that began since it read say what is sure."""
    after = Position.of({"alpha": 500, "beta": 70}, {"alpha": 11, "beta": 21})
    now = Position.of({"alpha": 900, "beta": 95}, {"alpha": 13, "beta": 22})
    store = Committed(
        now.ids,
        now.epochs,
        sessions=(("alpha", ((11, 100), (12, 300), (13, 650))), ("beta", ((21, 0), (22, 90)))),
    )
    moved = rewound(after, store)
    # alpha: min over the sessions after 11 (300, 650); beta: its session 22 found 90 >= 70.
    assert moved == Position.of({"alpha": 300, "beta": 70}, {"alpha": 13, "beta": 22})
    # A session the follower's is not among (lost with the old primary): every one counts.
    lost = Position.of({"alpha": 500}, {"alpha": 99})
    assert rewound(lost, store).as_dict() == {"alpha": 100}
    # Read under the current session: ahead of this server, it waits (a lagging standby;
    # rows written after a loss come under a new session).
    same = Position.of({"alpha": 950}, {"alpha": 13})
    assert rewound(same, store).as_dict() == {"alpha": 950}
    # A position of no session (an older viewer's link): what the store holds bounds it.
    assert rewound(Position.of({"alpha": 950}), store).as_dict() == {"alpha": 900}
    # The epochs travel in the token (a consumer's stored row, the viewer's `after`).
    assert Position.parse(moved.token()) == moved
