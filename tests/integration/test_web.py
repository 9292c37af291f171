"""The viewer's HTTP side on a real store (both backends): pages, search, live tail,
downloads, headers, access. The browser tests are in test_web_browser.py."""

from __future__ import annotations

import gzip
import json
import logging
import subprocess
import sys
import time
from base64 import b64encode
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestClient, TestServer
from multidict import MultiDict

from agent.alerts.engine import Alert
from agent.alerts.rules import AlertSettings, parse_alerts
from agent.batch import Line, LineBatch, Source
from agent.storage import LogStorage, outbox
from agent.storage.db import transaction
from agent.storage.follow import committed
from agent.storage.reader import LogFilter, older, open_store, service_containers
from agent.timestamps import format_timestamp
from agent.web.auth import Access, AccessError, FailureLimit, access_for, hash_password
from agent.web.query import parse_query
from agent.web.server import Viewer
from tests.conftest import ROOT
from tests.conftest import query as sql_rows
from tests.integration.test_logs_cli import logagent

pytestmark = [pytest.mark.anyio]

T0 = 1_764_000_000_000_000_000
PORT = 8080


async def fill(
    url: str,
    per_container: dict[str, list[str]],
    *,
    step: int = 1000,
    services: dict[str, str] | None = None,
    start: int = T0,
) -> None:
    """Rows written as collectors would, containers interleaved in time; `services` gives a
    container its compose PROJECT/SERVICE."""
    async with LogStorage(url, host="web-host") as storage:
        for k, (name, lines) in enumerate(per_container.items()):
            project, _, service = (services or {}).get(name, "").partition("/")
            source = Source(name * 8, name, project=project or None, service=service or None)
            for at in range(0, len(lines), 5000):
                batch = LineBatch(source)
                for i, line in enumerate(lines[at : at + 5000], start=at):
                    ns = start + i * step + k
                    stream = "stderr" if i % 7 == 3 else "stdout"
                    level = 5 if "ERROR" in line else None
                    batch.append(stream, ns, format_timestamp(ns), line, 0, len(line))
                    batch.levels.append(level)
                await storage.write(batch)
        await storage.flush()


@asynccontextmanager
async def viewer(
    url: str,
    access: Access | None = None,
    host: str = "127.0.0.1",
    alerts: AlertSettings | None = None,
) -> AsyncIterator[TestClient]:
    async with open_store(url) as db:
        app = Viewer(db, url, access or Access(), host, PORT, alerts).app()
        async with TestClient(TestServer(app)) as client:
            yield client


HOST = {"Host": f"127.0.0.1:{PORT}"}


async def ndjson(client: TestClient, path: str) -> list[dict]:  # type: ignore[type-arg]
    response = await client.get(path, headers=HOST)
    assert response.status == 200, await response.text()
    return [json.loads(line) for line in (await response.text()).splitlines()]


async def test_scroll_back_pages_cover_every_row_once_merged_in_time_order(
    store_url: str,
) -> None:
    await fill(store_url, {"a": [f"a{i}" for i in range(1500)], "b": [f"b{i}" for i in range(700)]})
    async with viewer(store_url) as client:
        seen: list[dict] = []  # type: ignore[type-arg]
        before = ""
        pages = 0
        while True:
            chunks = await ndjson(client, f"/api/lines?c=a&c=b&limit=300{before}")
            assert len(chunks) == 1
            seen += chunks[0]["rows"]
            pages += 1
            if chunks[0]["done"]:
                break
            before = "&before=" + chunks[0]["next"]
        assert pages == 8
        assert len(seen) == 2200 and len({r["id"] for r in seen}) == 2200
        keys = [(int(r["ns"]), r["id"]) for r in seen]
        assert keys == sorted(keys, reverse=True)  # newest first, one timeline
        one = await ndjson(client, "/api/lines?c=b&limit=5")
        assert [r["msg"] for r in one[0]["rows"]] == ["b699", "b698", "b697", "b696", "b695"]


async def test_search_streams_matches_among_100000_rows(store_url: str) -> None:
    lines = [f"line {i}" for i in range(100_000)]
    lines[31_337] = "needle ERROR here"
    await fill(store_url, {"big": lines}, step=10)
    async with viewer(store_url) as client:
        chunks = await ndjson(client, "/api/lines?q=needle%20ERROR&limit=50")
        found = [r for c in chunks for r in c["rows"]]
        assert [r["msg"] for r in found] == ["needle ERROR here"]
        assert found[0]["level"] == 5
        assert chunks[-1]["done"]
        if "sqlite" in store_url:  # matched here, a step at a time: the page sees progress
            assert len(chunks) > 10 and chunks[-1]["scanned"] == 100_000
        regex = await ndjson(client, "/api/lines?q=%5Eline%209999%5Cd%24&re=1&limit=50")
        assert sorted(r["msg"] for c in regex for r in c["rows"]) == [
            f"line {i}" for i in range(99_990, 100_000)
        ]
        by_level = await ndjson(client, "/api/lines?level=error")
        assert [r["msg"] for c in by_level for r in c["rows"]] == ["needle ERROR here"]


async def test_download_is_what_logagent_logs_prints(store_url: str) -> None:
    await fill(store_url, {"a": [f"a {i}" for i in range(300)], "b": [f"b {i}" for i in range(50)]})
    async with viewer(store_url) as client:
        for query, args in (
            ("c=a&format=json", ["--json", "a"]),
            ("c=a&c=b&format=text", ["a", "b"]),
            ("stream=stderr&format=json", ["--json", "--stream", "stderr"]),
            ("c=a&q=2&format=text", ["--grep", "2", "a"]),
        ):
            response = await client.get(f"/api/download?{query}", headers=HOST)
            assert response.status == 200
            assert response.headers["Content-Disposition"].startswith("attachment")
            body = await response.text()
            cli = await anyio.to_thread.run_sync(lambda a=args: logagent(store_url, "logs", *a))
            assert body == cli.stdout, query
            assert body


async def test_live_tail_sends_rows_committed_after_it_opened(store_url: str) -> None:
    await fill(store_url, {"a": ["old"]})
    async with viewer(store_url) as client:
        response = await client.get("/api/tail?c=a", headers=HOST)
        assert response.headers["Content-Type"] == "text/event-stream"
        await fill(store_url, {"a": ["x", "new one"]})  # the second row is new (later stamp)
        event = b""
        with anyio.fail_after(30):
            while b"\n\n" not in event:
                event += await response.content.readany()
        name, data = event.split(b"\n")[:2]
        assert name == b"event: rows"
        rows = json.loads(data.removeprefix(b"data: "))
        assert [r["msg"] for r in rows] == ["x", "new one"]
        response.close()


async def test_every_response_is_locked_down_and_crafted_paths_go_nowhere(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'logs.db'}"
    await fill(url, {"a": ["x"]})
    async with viewer(url) as client:
        for path in ("/", "/static/app.js", "/api/containers", "/api/lines", "/alerts",
                     "/api/alerts", "/nope"):  # fmt: skip
            response = await client.get(path, headers=HOST)
            assert "script-src 'self'" in response.headers["Content-Security-Policy"], path
            assert response.headers["X-Content-Type-Options"] == "nosniff"
        for path in (
            "/static/../../../etc/passwd",
            "/static/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
            "/static/index.html",
            "/static/app.js%00",
        ):
            response = await client.get(path, headers=HOST)
            assert response.status == 404, path
        # DNS rebinding: a page of another site resolving its name to 127.0.0.1
        response = await client.get("/api/containers", headers={"Host": "evil.example:8080"})
        assert response.status == 421
        for query, said in (
            ("q=(a&re=1", "missing )"),
            ("level=loud", "is not a level"),
            ("before=x", "is not ns:id"),
            ("since=yesterday-ish", "since"),
            ("c=no-such-container", "no stored logs"),
            ("stream=stdin", "not stdout"),
        ):
            response = await client.get(f"/api/lines?{query}", headers=HOST)
            assert response.status == 400, query
            assert said in (await response.json())["error"], query
        for method in ("POST", "PUT", "DELETE"):
            response = await client.request(method, "/api/containers", headers=HOST)
            assert response.status == 405


async def test_token_or_users_file_guard_a_viewer_beyond_loopback(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'logs.db'}"
    await fill(url, {"a": ["x"]})
    users = tmp_path / "users"
    users.write_text(f"ann:{hash_password('correct horse', iterations=1000)}\n")
    with pytest.raises(AccessError, match=r"without web\.token or web\.users_file"):
        access_for("0.0.0.0", "", "")
    with pytest.raises(AccessError, match="at least 16"):
        access_for("0.0.0.0", "short", "")
    access = access_for("0.0.0.0", "t" * 20, str(users))
    async with viewer(url, access, "0.0.0.0") as client:
        assert (await client.get("/api/containers")).status == 401
        assert (await client.get("/api/alerts")).status == 401
        ok = await client.get("/api/containers", headers={"Authorization": "Bearer " + "t" * 20})
        assert ok.status == 200
        bad = await client.get("/api/containers", headers={"Authorization": "Bearer ünï"})
        assert bad.status == 401  # not a 500: any text compares
        login = await client.get("/login?token=" + "t" * 20, allow_redirects=False)
        assert login.status == 302 and "HttpOnly" in login.headers["Set-Cookie"]
        assert (await client.get("/api/containers")).status == 200  # the cookie
        client.session.cookie_jar.clear()
        basic = "Basic " + b64encode(b"ann:correct horse").decode()
        assert (await client.get("/", headers={"Authorization": basic})).status == 200
        wrong = "Basic " + b64encode(b"ann:wrong").decode()
        response = await client.get("/", headers={"Authorization": wrong})
        assert response.status == 401 and "Basic" in response.headers["WWW-Authenticate"]


def test_web_refuses_to_start_open_beyond_loopback(tmp_path: Path) -> None:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "agent", "web", "--host", "0.0.0.0", "--port", "18099"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "logagent: web: refusing to serve logs on 0.0.0.0, beyond loopback, without web.token "
        "or web.users_file"
    )
    assert time.monotonic() - started < 60


async def test_gaps_come_with_the_page_they_fall_in(store_url: str) -> None:
    await fill(store_url, {"a": [f"a{i}" for i in range(1000)]})
    async with LogStorage(store_url, host="web-host") as storage:
        source = Source("a" * 8, "a")
        await storage.record_gap(source, "rotated: lines lost", from_ns=T0 + 250 * 1000 + 1)
        await storage.record_gap(source, "rotated again", from_ns=T0 + 900 * 1000 + 1)
    async with viewer(store_url) as client:
        pages, before = [], ""
        while True:
            chunk = (await ndjson(client, f"/api/lines?c=a&limit=300{before}"))[0]
            pages.append(chunk)
            if chunk["done"]:
                break
            before = "&before=" + chunk["next"]
    found = [(n, g["reason"]) for n, page in enumerate(pages) for g in page["gaps"]]
    # rows 999..700 (page 0), 699..400 (1), 399..100 (2), 99..0 (3)
    assert found == [(0, "rotated again"), (2, "rotated: lines lost")]


async def test_a_substring_search_takes_any_text_literally(store_url: str) -> None:
    lines = ["price: $5 (a+b) ✓ [x] {y} a|b \\d", "price: 5 ab", "tab\there", "plain"]
    await fill(store_url, {"a": lines})
    async with viewer(store_url) as client:
        for needle, expected in (
            ("$5 (a+b) ✓ [x] {y} a|b \\d", [lines[0]]),
            ("price", [lines[0], lines[1]]),
            ("\t", [lines[2]]),
            (".", []),
        ):
            from urllib.parse import quote

            chunks = await ndjson(client, f"/api/lines?c=a&q={quote(needle)}")
            found = sorted(r["msg"] for c in chunks for r in c["rows"])
            assert found == sorted(expected), needle


BAD_QUERIES = [
    ("limit=²", "limit: '²' is not a number"),  # "²".isdigit() is True; int("²") fails
    ("limit=٣", "limit: '٣' is not a number"),  # int("٣") is 3
    ("limit=0", "limit: 0 is not between 1 and 1000"),
    ("limit=5000", "limit: 5000 is not between 1 and 1000"),
    ("limit=-1", "limit: -1 is not between 1 and 1000"),
    ("limit=" + "9" * 5000, "is not a number"),  # past int()'s 4300 digits
    ("before=1:²", "before: '²' is not a number"),
    ("before=²:1", "before: '²' is not a number"),
    ("before=-" + "9" * 30 + ":1", "is not a number"),  # was: a body cut mid-stream
    ("before=9223372036854775808:1", "is out of range"),
    ("before=-9223372036854775809:1", "is out of range"),
    ("before=1:9223372036854775808", "is out of range"),
    ("before=1:-1", "is not ns:id"),
    ("since=١٢", "since: '١٢' is not an RFC 3339 time"),  # float("١٢") is 12.0
    ("until=٣m", "until: '٣m' is not an RFC 3339 time"),
    ("since=" + "1" * 65, "since:"),
    ("level=²", "level: '²' is not a level"),
    ("level=" + "9" * 5000, "is not a level"),
    ("host=a%00b", "host: a NUL character"),  # PostgreSQL: cut the body
    ("q=%00", "q: a NUL character"),  # PostgreSQL: a 500
    ("q=a%00&re=1", "q: a NUL character"),
    ("c=%00", "c: a NUL character"),
    ("host=" + "h" * 256, "host: 256 characters, more than 255"),
    ("q=" + "a" * 1001, "q: 1001 characters, more than 1000"),
    ("&".join(["c=a"] * 101), "c: 101 containers, more than the 100"),
]


@pytest.mark.parametrize("path", ["/api/lines", "/api/download", "/api/tail"])
async def test_bad_parameters_answer_400_with_the_reason(store_url: str, path: str) -> None:
    await fill(store_url, {"a": ["x", "y"]})
    async with viewer(store_url) as client:
        asked = BAD_QUERIES if path == "/api/lines" else [
            (q, said) for q, said in BAD_QUERIES if not q.startswith(("limit", "before"))
        ]  # fmt: skip
        if path == "/api/tail":
            asked += [("after=³", "position"), ("after=" + "9" * 30, "position")]
        for query, said in asked:
            response = await client.get(f"{path}?{query}", headers=HOST)
            assert response.status == 400, (query, await response.text())
            assert said in (await response.json())["error"], query
        # the bounds themselves are good numbers, and the body comes whole
        for query in (
            "limit=1000",
            "before=-9223372036854775808:0",
            "before=1:9223372036854775807",
        ):
            chunks = await ndjson(client, f"/api/lines?{query}")
            assert chunks[-1]["done"], query


@asynccontextmanager
async def served(url: str) -> AsyncIterator[str]:
    """The viewer on a port as `serve` runs it: unlike aiohttp's TestServer, its runner does
    not cancel a handler whose client went away, so the handler finds out when it writes."""
    async with open_store(url) as db:
        app = Viewer(db, url, Access(), "127.0.0.1", PORT).app()
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            yield f"http://127.0.0.1:{runner.addresses[0][1]}"
        finally:
            await runner.cleanup()


async def test_a_client_gone_mid_tail_is_not_an_error(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="logagent.web")
    await fill(store_url, {"a": ["old"]})

    def seen() -> list[logging.LogRecord]:
        return [
            r for r in caplog.records
            if "went away" in r.getMessage() or r.levelno >= logging.WARNING
        ]  # fmt: skip

    async with served(store_url) as base, ClientSession() as session:
        response = await session.get(f"{base}/api/tail?c=a", headers=HOST)
        assert response.status == 200
        response.close()  # the tab closed: the tail finds out at its next write
        n = 0
        with anyio.fail_after(60):
            while not seen():  # each new row is one more write to the closed client
                n += 1
                async with LogStorage(store_url, host="web-host") as storage:
                    batch = LineBatch(Source("a" * 8, "a"))
                    ns = T0 + 10_000 * n
                    batch.append("stdout", ns, format_timestamp(ns), f"new {n}", 0, 5)
                    batch.levels.append(None)
                    await storage.write(batch)
                await anyio.sleep(0.05)
    assert [(r.levelname, r.name) for r in seen()] == [("DEBUG", "logagent.web")]
    assert not any(r.exc_info for r in caplog.records), "a traceback was logged"


async def test_failed_logins_are_answered_429_and_a_right_password_still_logs_in(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'logs.db'}"
    await fill(url, {"a": ["x"]})
    users = {"ann": hash_password("correct horse", iterations=1000)}

    def basic(credentials: str) -> dict[str, str]:
        return {"Authorization": "Basic " + b64encode(credentials.encode()).decode()}

    access = Access(token="t" * 20, users=users, failures=FailureLimit(burst=3, window=60))
    async with viewer(url, access, "0.0.0.0") as client:
        for _ in range(3):
            assert (await client.get("/", headers=basic("ann:wrong"))).status == 401
        limited = await client.get("/", headers=basic("ann:wrong"))
        assert limited.status == 429
        assert 1 <= int(limited.headers["Retry-After"]) <= 20  # one attempt back: 60 s / 3
        # this client waits, whatever it shows (a right guess would stand out otherwise)
        assert (await client.get("/", headers=basic("ann:correct horse"))).status == 429
        assert (await client.get("/login?token=" + "t" * 20)).status == 429
    fresh = Access(token="t" * 20, users=users, failures=FailureLimit(burst=3, window=60))
    async with viewer(url, fresh, "0.0.0.0") as client:
        assert (await client.get("/", headers=basic("nobody:wrong"))).status == 401
        assert (await client.get("/", headers=basic("ann:wrong"))).status == 401
        for _ in range(5):  # right: it gives its attempt back, and is hashed once
            assert (await client.get("/", headers=basic("ann:correct horse"))).status == 200
        assert (await client.get("/")).status == 401  # showing nothing is not a failure
        assert (await client.get("/login?token=wrong")).status == 401
        assert (await client.get("/login?token=wrong")).status == 429  # the third failure


# Destinations' URLs are secrets: the alerts page names destinations, never shows one.
SECRETS = ("hooks.example", "secret-token-123", "pager.example", "other-secret")


def alert_settings() -> AlertSettings:
    return parse_alerts(
        {
            "destinations": [
                {"name": "ops", "url": "https://hooks.example/T000/secret-token-123"},
                {"name": "pager", "url_env": "PAGER_URL"},
            ],
            "rules": [
                {"name": "errors", "match": "ERROR|panic", "names": ["a*"], "threshold": 2,
                 "window": "30s", "cooldown": "10m", "destinations": ["ops", "pager"]},
                {"name": "crashed", "event": "die", "destinations": ["ops"]},
            ],
        },
        environ={"PAGER_URL": "http://pager.example/hook?key=other-secret"},
    )  # fmt: skip


async def test_a_ci_service_of_thousands_of_containers_gone_opens_as_one_history(
    store_url: str,
) -> None:
    """shop/ci ran 600 jobs that are removed and whose lines retention has taken (their rows
    wait to be forgotten), and two whose lines are kept: its view reads those two, not a
    400 for more containers than a view shows; one whose lines were lost (a gap) stays one
    of its containers, where the gap is shown (a forward destination's gap is not one)."""
    await fill(store_url, {"job1": ["one"], "job2": ["two"]},
               services={"job1": "shop/ci", "job2": "shop/ci"})  # fmt: skip
    async with open_store(store_url) as db:
        m = "?" if store_url.startswith("sqlite") else "$"
        marks = ", ".join(m if m == "?" else f"${i}" for i in range(1, 11))
        for n in range(600):
            await db.execute_query(
                "INSERT INTO container_cursors (host, container_id, container_name, stdout_n, "
                f"stderr_n, tty_n, lines, updated_ns, state, project, service, bytes) VALUES "
                f"({marks}, 'ci', 0)",
                ["web-host", f"{n:064d}", f"job-gone-{n}", 0, 0, 0, 0, T0, "removed", "shop"],
            )
        for n, kind in ((1, None), (2, "forward")):  # job-gone-1's lines lost: it stays
            await db.execute_query(
                "INSERT INTO gaps (host, container_id, container_name, reason, created_ns, kind) "
                f"VALUES ({', '.join(marks.split(', ')[:6])})",
                ["web-host", f"{n:064d}", f"job-gone-{n}", "removed before read", T0, kind],
            )
        assert await service_containers(db, "shop/ci") == [f"{1:064d}", "job1" * 8, "job2" * 8]
    async with viewer(store_url) as client:
        chunk = (await ndjson(client, "/api/lines?service=shop/ci&limit=10"))[0]
    assert sorted(r["msg"] for r in chunk["rows"]) == ["one", "two"]


async def test_alerts_route_lists_rules_without_urls_and_each_alert_with_its_deliveries(
    store_url: str,
) -> None:
    await fill(store_url, {"a": ["fine", "ERROR one", "ERROR <b>two</b>"]})
    async with LogStorage(store_url, host="web-host") as storage:
        row = (await older(storage.db, LogFilter(), before=None, limit=1))[0]
        line = Alert(
            id="a" * 32, rule="errors", host="web-host", container_id=row.container_id,
            container_name=row.container_name, time_ns=row.timestamp_ns, line=row.message,
            count=2, more=3, kind="line", ref=row.id, destinations=("ops", "pager"),
        )  # fmt: skip
        event = Alert(
            id="b" * 32, rule="crashed", host="web-host", container_id=row.container_id,
            container_name=row.container_name, time_ns=row.timestamp_ns + 5, count=1, more=0,
            line="die (exit code 3)", kind="event", ref=7, destinations=("ops",),
        )  # fmt: skip
        made = [
            outbox.Outgoing(a.id, d, a.host, a.rule, json.dumps(a.payload()))
            for a in (line, event)
            for d in a.destinations
        ]
        summary = {**line.payload(), "kind": "summary", "first_ns": T0, "count": 40}
        made.append(outbox.Outgoing("d" * 32, "ops", "web-host", "errors", json.dumps(summary)))
        made.append(outbox.Outgoing("c" * 32, "ops", "web-host", "gone", "[not, json"))
        position = await committed(storage.db)
        async with transaction() as conn:
            await outbox.record_step(conn, "alerts:test", position, "{}", made)
        for pending in await outbox.due(storage.db, "web-host"):
            if (pending.alert_id, pending.destination) == (line.id, "ops"):
                await outbox.mark_sent(storage.db, pending)
            elif (pending.alert_id, pending.destination) == (line.id, "pager"):
                await outbox.mark_failed(storage.db, pending, 60, "HTTP 503")
    async with viewer(store_url, alerts=alert_settings()) as client:
        response = await client.get("/api/alerts", headers=HOST)
        assert response.status == 200
        text = await response.text()
        assert not [s for s in SECRETS if s in text], text
        body = json.loads(text)
        errors, crashed = body["rules"]
        assert errors == {
            "name": "errors", "watches": "match ERROR|panic", "names": ["a*"],
            "threshold": 2, "window_s": 30, "cooldown_s": 600,
            "destinations": ["ops", "pager"], "sent": 1, "pending": 2,
            "last": errors["last"],
        }  # fmt: skip
        assert errors["last"].endswith("Z")
        assert (crashed["watches"], crashed["sent"], crashed["pending"]) == ("event die", 0, 1)
        assert [a["id"] for a in body["alerts"]] == ["c" * 32, "d" * 32, "b" * 32, "a" * 32]
        garbled, summed, died, fired = body["alerts"]
        assert (garbled["rule"], garbled["line"], garbled["lines"]) == ("gone", "", None)
        # (a payload from the store is data: one it cannot read is shown as far as it goes)
        assert summed["kind"] == "summary" and summed["count"] == 40
        assert summed["first"] == format_timestamp(T0)
        since = format_timestamp(T0 - 300 * 10**9).replace(":", "%3A")
        assert f"&since={since}&" in summed["lines"] and "at=" not in summed["lines"]
        assert (died["kind"], died["line"], died["ref"]) == ("event", "die (exit code 3)", 7)
        assert [d["status"] for d in died["deliveries"]] == ["pending"]
        assert (fired["line"], fired["count"], fired["more"]) == ("ERROR <b>two</b>", 2, 3)
        assert fired["ref"] == row.id
        assert (fired["cid"], fired["name"], fired["ns"]) == ("a" * 8, "a", str(row.timestamp_ns))
        assert sorted(fired["deliveries"], key=lambda d: d["destination"]) == [
            {"destination": "ops", "status": "sent", "attempts": 1, "error": None},
            {"destination": "pager", "status": "pending", "attempts": 1, "error": "HTTP 503"},
        ]
        # Its link opens the log view on its container at the line (`at`), the ones around it.
        assert fired["lines"] == f"/?c=aaaaaaaa&at={row.id}"
        assert died["lines"].startswith("/?c=aaaaaaaa&since=") and "at=" not in died["lines"]
        chunks = await ndjson(client, "/api/lines" + fired["lines"][1:])
        shown = [r for c in chunks for r in c["rows"]]
        assert row.id in [r["id"] for r in shown]
        assert {r["name"] for r in shown} == {"a"}
        assert chunks[0]["at"] == {"id": row.id, "cid": "a" * 8, "newer": False}
        one = await (await client.get("/api/alerts?rule=crashed", headers=HOST)).json()
        assert [a["id"] for a in one["alerts"]] == ["b" * 32] and one["rule"] == "crashed"
        assert not one["more"]
        newest = await (await client.get("/api/alerts?limit=1", headers=HOST)).json()
        assert len(newest["alerts"]) == 1 and newest["more"]
        for query, said in (
            ("limit=0", "limit: 0 is not between 1 and 1000"),
            ("limit=1001", "limit: 1001 is not between 1 and 1000"),
            ("limit=²", "is not a number"),
            ("rule=" + "r" * 65, "rule: 65 characters, more than 64"),
            ("rule=a%00b", "rule: a NUL character"),
        ):
            response = await client.get(f"/api/alerts?{query}", headers=HOST)
            assert response.status == 400, query
            assert said in (await response.json())["error"], query
        page = await client.get("/alerts", headers=HOST)
        assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
        assert 'id="alerts-page"' in await page.text()


async def test_a_service_recreated_three_times_is_listed_and_read_as_one_timeline(
    store_url: str,
) -> None:
    """compose recreated shop/web twice: three containers, one after the other in time; the
    sidebar lists the service with all three, and `service=` reads them as one history."""
    web = {"shop/web"}
    for n in (1, 2, 3):  # each container's lines after the last one's
        await fill(store_url, {f"web{n}": [f"web{n} line {i}" for i in range(120)]},
                   services=dict.fromkeys([f"web{n}"], *web), start=T0 + n * 10**12)  # fmt: skip
    await fill(store_url, {"db": ["other"]}, services={"db": "shop/db"})
    await fill(store_url, {"plain": ["not compose"]})
    async with viewer(store_url) as client:
        listed = await (await client.get("/api/containers", headers=HOST)).json()
        by_key = {s["key"]: s for s in listed["services"]}
        assert set(by_key) == {"shop/web", "shop/db"}  # a lone plain name is no service
        assert by_key["shop/web"]["containers"] == ["web1" * 8, "web2" * 8, "web3" * 8]
        assert by_key["shop/web"]["lines"] == 360
        served = {c["name"]: c["service"] for c in listed["containers"]}
        assert served == {"web1": "shop/web", "web2": "shop/web", "web3": "shop/web",
                          "db": "shop/db", "plain": ""}  # fmt: skip
        rows, before = [], ""
        while True:
            chunk = (await ndjson(client, f"/api/lines?service=shop/web&limit=100{before}"))[0]
            rows += chunk["rows"]
            if chunk["done"]:
                break
            before = "&before=" + chunk["next"]
        expected = [f"web{n} line {i}" for n in (1, 2, 3) for i in range(120)]
        assert [r["msg"] for r in reversed(rows)] == expected
        async with open_store(store_url) as db:  # as `logagent logs --service` reads it
            assert await service_containers(db, "shop/web") == by_key["shop/web"]["containers"]
        response = await client.get("/api/lines?service=shop/nope", headers=HOST)
        assert response.status == 400
        assert "no stored logs for service 'shop/nope'" in (await response.json())["error"]
        response = await client.get("/api/lines?service=" + "s" * 256, headers=HOST)
        assert "service: 256 characters" in (await response.json())["error"]


STRUCTURED = [
    '{"status": 200, "method": "GET", "user": {"id": "42"}}',
    '{"status": 503, "method": "POST", "user": {"id": "42"}}',
    '{"status": "500", "method": "POST", "user": {"id": 7}}',
    'status=502 method=POST user.id=42 msg="upstream down"',
    "status=404 method=POST",
    "a plain line that says status>=500 and method=POST",
    '{"status": 500.0, "method": "POST"',  # not JSON: cut
    '["status", 500, "method", "POST"]',
    '{"method": "POST"}',
]
WHERE = {  # the same rows on both backends, as `logagent logs --where` selects them
    "status>=500": [1, 2, 3],
    "status>=500 method=POST": [1, 2, 3],
    'user.id="42"': [0, 1, 3],  # a logfmt key with a dot is found first
    "user.id=7": [2],
    "status!=200": [1, 2, 3, 4],
    "method==GET": [0],
}


async def test_where_selects_the_same_lines_on_both_backends_as_the_cli(store_url: str) -> None:
    await fill(store_url, {"api": STRUCTURED * 40})  # past one page of 200
    async with viewer(store_url) as client:
        for where, picked in WHERE.items():
            from urllib.parse import quote

            chunks = await ndjson(client, f"/api/lines?c=api&limit=1000&where={quote(where)}")
            found = [r["msg"] for c in chunks for r in c["rows"]]
            assert found == [STRUCTURED[i] for i in picked][::-1] * 40, where
            response = await client.get(f"/api/download?c=api&where={quote(where)}", headers=HOST)
            cli = await anyio.to_thread.run_sync(
                lambda w=where: logagent(store_url, "logs", "api", "--where", w)
            )
            assert await response.text() == cli.stdout and cli.stdout, where
        both = await ndjson(client, "/api/lines?c=api&limit=1000&q=POST&where=status%3E%3D503")
        assert [r["msg"] for c in both for r in c["rows"]] == [STRUCTURED[1]] * 40
        for where, said in (
            ("status 500", "where: cannot read 'status 500'"),
            ("level>warn", "> compares numbers"),
            ("x=" + "y" * 1030, "where: 1032 characters, more than 1024"),
            ("a=\x00", "where: a NUL character"),
            (" ".join(["a=1"] * 17), "at most 16 conditions"),
        ):
            for path in ("/api/lines", "/api/download", "/api/tail"):
                response = await client.get(f"{path}?where={quote(where)}", headers=HOST)
                assert response.status == 400, (path, where)
                assert said in (await response.json())["error"], (path, where)


async def test_at_opens_a_line_among_the_lines_around_it(store_url: str) -> None:
    await fill(store_url, {"a": [f"a{i}" for i in range(1000)], "b": ["b0", "b1"]})
    async with open_store(store_url) as db:
        by_msg = {r.message: r.id for r in await older(db, LogFilter(), before=None, limit=2000)}
    async with viewer(store_url) as client:
        chunks = await ndjson(client, f"/api/lines?at={by_msg['a500']}&limit=200")
        first = chunks[0]
        assert first["at"] == {"id": by_msg["a500"], "cid": "a" * 8, "newer": True}
        assert first["position"] is None  # newer lines are left out: no live tail from here
        assert [r["msg"] for r in first["rows"]] == [f"a{i}" for i in range(600, 400, -1)]
        more = await ndjson(client, f"/api/lines?at={by_msg['a500']}&before={first['next']}")
        assert more[0]["rows"][0]["msg"] == "a400" and "at" not in more[0]  # scrolling back
        near = (await ndjson(client, f"/api/lines?c=a&at={by_msg['a990']}&limit=50"))[0]
        assert [r["msg"] for r in near["rows"]][:11] == [f"a{i}" for i in range(999, 988, -1)]
        assert near["at"]["newer"] is False and near["position"]  # the newest: live from here
        searched = (await ndjson(client, f"/api/lines?at={by_msg['a500']}&q=5&limit=10"))[0]
        matching = [f"a{i}" for i in range(1000) if "5" in str(i)][::-1]  # newest first
        at = matching.index("a500")
        assert [r["msg"] for r in searched["rows"]] == matching[at - 5 : at + 5]
        for query, said in (
            (f"at={by_msg['b0']}&c=a", f"at: line {by_msg['b0']} is not one of this view's"),
            ("at=999999999", "at: no line 999999999 is stored"),
            ("at=0", "at: no line 0 is stored"),
            ("at=x", "at: 'x' is not a number"),
            (f"at={by_msg['a500']}&q=7", "is not among this view's lines"),  # a review's
            (f"at={by_msg['a500']}&stream=stdout", "is not among this view's lines"),  # stderr
            (f"at={by_msg['a500']}&host=elsewhere", "is not among this view's lines"),
            (f"at={by_msg['a500']}&level=error", "is not among this view's lines"),
        ):
            response = await client.get(f"/api/lines?{query}", headers=HOST)
            assert response.status == 400, query
            assert said in (await response.json())["error"], query


async def test_gz_downloads_decompress_to_what_logagent_logs_prints(store_url: str) -> None:
    lines = [f"a {i} ünï ✓ " if i % 3 else f'{{"status": 503, "n": {i}}}' for i in range(12_000)]
    await fill(store_url, {"a": lines, "b": [f"b {i}" for i in range(50)]},
               services={"a": "shop/web"})  # fmt: skip
    async with viewer(store_url) as client:
        for query, args in (
            ("c=a&format=json", ["--json", "a"]),
            ("c=a&c=b&format=text", ["a", "b"]),
            ("service=shop/web&format=text", ["--service", "shop/web"]),
            ("where=status%3E%3D500&format=json", ["--json", "--where", "status>=500"]),
            ("c=a&q=%C3%BCn%C3%AF&level=&format=text", ["--grep", "ünï", "a"]),
        ):
            response = await client.get(f"/api/download?{query}&gzip=1", headers=HOST)
            assert response.status == 200, await response.text()
            name = "logs.jsonl.gz" if "json" in query else "logs.log.gz"
            assert response.headers["Content-Disposition"] == f'attachment; filename="{name}"'
            assert response.headers["Content-Type"] == "application/gzip"
            body = gzip.decompress(await response.read()).decode()
            cli = await anyio.to_thread.run_sync(lambda a=args: logagent(store_url, "logs", *a))
            assert cli.returncode == 0, cli.stderr
            assert body == cli.stdout and body, query
        for query, said in (("format=xml", "format: 'xml'"), ("gzip=yes", "gzip: 'yes'")):
            response = await client.get(f"/api/download?{query}", headers=HOST)
            assert response.status == 400 and said in (await response.json())["error"]


async def test_lines_of_several_hosts_say_their_host_in_logs_and_downloads(
    store_url: str,
) -> None:
    """A service (or a name) two hosts share: `logs` and the text download print each line
    as host/name (a review: one host's lines passed for the other's); of one host, or one
    host chosen, as before."""
    for n, host in enumerate(("host-a", "host-b")):
        async with LogStorage(store_url, host=host) as storage:
            source = Source(f"{n + 1:064x}", "shop-web-1", project="shop", service="web")
            lines = [Line("stdout", T0 + 2 * i + n, "", f"{host} says {i}") for i in range(3)]
            await storage.write(LineBatch.of(source, lines))
    hosts = ("host-a", "host-b")
    both = "".join(f"{h}/shop-web-1 | {h} says {i}\n" for i in range(3) for h in hosts)
    async with viewer(store_url) as client:
        for query, args, want in (
            ("service=shop/web&format=text", ["--service", "shop/web"], both),
            ("format=text", [], both),
            ("service=shop/web&host=host-a&format=text",
             ["--service", "shop/web", "--host", "host-a"],
             "".join(f"shop-web-1 | host-a says {i}\n" for i in range(3))),
        ):  # fmt: skip
            response = await client.get(f"/api/download?{query}", headers=HOST)
            cli = await anyio.to_thread.run_sync(lambda a=args: logagent(store_url, "logs", *a))
            assert cli.returncode == 0, cli.stderr
            assert await response.text() == cli.stdout == want, query


def _rows_in(url: str, lo: int, hi: int, where: str = "", *args: object) -> int:
    """COUNT(*) of the stored rows from `lo` to before `hi`: what a bucket must say."""
    found = sql_rows(
        url,
        "SELECT COUNT(*) FROM log_lines l JOIN container_cursors c ON c.id = l.source_id "
        f"WHERE l.timestamp_ns >= ? AND l.timestamp_ns < ? {where}",
        lo,
        hi,
        *args,
    )
    return int(found[0][0])


async def test_histogram_buckets_equal_count_of_the_rows_in_each(store_url: str) -> None:
    """Bars from the stored counts, checked against COUNT(*) of the rows, bucket by bucket:
    for every container, one, a stream, a level; buckets of minutes and of hours."""
    step = 7 * 10**9  # a line each 7 s: 2,000 lines over ~3.9 h
    a = [f"a {i}" + (" ERROR" if i % 5 == 0 else "") for i in range(2000)]
    b = [f"b {i}" for i in range(1500)]
    await fill(store_url, {"a": a, "b": b}, step=step)
    since, until = format_timestamp(T0 - 10 * 60 * 10**9), format_timestamp(T0 + 5 * 3600 * 10**9)
    ms = 10**6
    async with viewer(store_url) as client:
        for params, where, args in (
            ("", "", ()),
            ("&c=a", "AND c.container_id = ?", ("a" * 8,)),
            ("&c=b&stream=stderr", "AND c.container_id = ? AND l.stream = ?", ("b" * 8, "stderr")),
            ("&level=error", "AND l.level >= 5", ()),
            ("&stream=stdout&by=level&buckets=8", "AND l.stream = ?", ("stdout",)),
        ):
            response = await client.get(
                f"/api/histogram?since={since}&until={until}{params}", headers=HOST
            )
            assert response.status == 200, await response.text()
            got = await response.json()
            bucket, end = got["bucket_ms"] * ms, got["end_ms"] * ms
            starts = [b["ms"] * ms for b in got["buckets"]]
            assert starts == [got["start_ms"] * ms + i * bucket for i in range(len(starts))]
            assert len(starts) <= (8 if "buckets=8" in params else 60), params
            assert starts[0] <= T0 - 10 * 60 * 10**9 and starts[-1] + bucket >= end
            for start, cell in zip(starts, got["buckets"], strict=True):
                upto = min(start + bucket, end)
                assert cell["lines"] == _rows_in(store_url, start, upto, where, *args), params
                assert cell["lines"] == sum(cell["by"].values())
                if not params:  # stacked by stream: each stream's part exact too
                    for stream, n in cell["by"].items():
                        rows = _rows_in(store_url, start, upto, "AND l.stream = ?", stream)
                        assert n == rows
            assert got["total"] == sum(c["lines"] for c in got["buckets"]) > 0
            assert got["all_lines"] is False
        # Buckets of hours start on an hour (the hourly counts) and keys are named.
        assert got["bucket_ms"] % 3_600_000 == 0 and got["start_ms"] % 3_600_000 == 0
        assert set(got["keys"]) <= {"none", "error"} and "none" in got["keys"]
        # No since: from the selection's first counted hour to now; a search does not
        # narrow counts, and says so.
        got = await (await client.get("/api/histogram?c=a&q=ERROR", headers=HOST)).json()
        assert got["total"] == 2000 and got["all_lines"] is True
        assert got["start_ms"] <= T0 // ms < got["start_ms"] + got["bucket_ms"]
        assert abs(got["end_ms"] - time.time() * 1000) < 120_000
        # A span with no lines: empty buckets, not an error.
        got = await (await client.get("/api/histogram?since=1h", headers=HOST)).json()
        assert got["total"] == 0 and got["buckets"] and got["gaps"] == []


async def test_histogram_marks_the_spans_gaps_and_lives(store_url: str) -> None:
    from agent.docker.life_events import LifeEvent
    from agent.storage.life import record_life

    await fill(store_url, {"a": [f"a {i}" for i in range(100)]}, step=60 * 10**9)
    async with LogStorage(store_url, host="web-host") as storage:
        source = Source("a" * 8, "a")
        await storage.record_gap(source, "rotated", from_ns=T0 + 30 * 60 * 10**9)
        await storage.flush()
        await record_life(storage.db, "web-host", [
            LifeEvent("a" * 8, "a", T0 + 50 * 60 * 10**9, "die", exit_code=137),
            LifeEvent("a" * 8, "a", T0 + 500 * 60 * 10**9, "start"),  # after the span
        ])  # fmt: skip
    since, until = format_timestamp(T0), format_timestamp(T0 + 2 * 3600 * 10**9)
    async with viewer(store_url) as client:
        got = await (
            await client.get(f"/api/histogram?c=a&since={since}&until={until}", headers=HOST)
        ).json()
    assert [g["reason"] for g in got["gaps"]] == ["rotated"]
    assert [e["what"] for e in got["events"]] == ["die (exit code 137)"]
    assert got["total"] == 100


@pytest.mark.parametrize(
    ("query", "said"),
    [
        ("buckets=0", "buckets: 0 is not between 1 and 500"),
        ("buckets=501", "buckets: 501 is not between 1 and 500"),
        ("buckets=²", "buckets: '²' is not a number"),
        ("buckets=" + "9" * 40, "is not a number"),
        ("by=host", "by: 'host' is not stream or level"),
        ("since=yesterday-ish", "since"),
        ("level=loud", "is not a level"),
        ("c=no-such-container", "no stored logs"),
        ("q=(a&re=1", "'(a'"),
    ],
)
async def test_histogram_bad_parameters_answer_400(store_url: str, query: str, said: str) -> None:
    await fill(store_url, {"a": ["x"]})
    async with viewer(store_url) as client:
        response = await client.get(f"/api/histogram?{query}", headers=HOST)
        assert response.status == 400, await response.text()
        assert said in (await response.json())["error"]


async def test_a_search_reads_the_same_lines_with_the_search_index_as_without(
    tmp_path: Path,
) -> None:
    """SQLite's search index (storage/search_index.py) narrows the viewer's search to the rows
    it names; the answers are the same as the full scan's."""
    from agent.storage import search_index

    url = f"sqlite:///{tmp_path / 'logs.db'}"
    words = ["alpha", "beta", "gamma", "delta", "Alpha", "ünïcode"]
    lines = [f"{words[i % 6]} line {i} code={i % 97}" for i in range(20_000)]
    lines[12_345] = "the rare needle-42 is here"
    await fill(url, {"a": lines, "b": lines[:3000]})
    patterns = [
        ("q=needle-42", None),
        ("q=alpha", None),
        ("q=code%3D42", None),
        ("q=%C3%BCn%C3%AFcode", None),
        ("q=%28%3Fi%29alpha%20line%201%5Cd%7B3%7D%24&re=1", None),
        ("q=%5Ebeta%20line%2099&re=1", None),
        ("q=gam%7Cdel&re=1&c=b", None),
        ("q=nothing-like-this", None),
    ]

    async def answers() -> list[list[int]]:
        out = []
        async with viewer(url) as client:
            for asked, _ in patterns:
                chunks = await ndjson(client, f"/api/lines?{asked}&limit=1000")
                out.append([r["id"] for c in chunks for r in c["rows"]])
        return out

    scanned = await answers()
    async with LogStorage(url, host="web-host") as storage:  # built as the agent builds it
        await search_index.prepare(storage.db, on=True)
        indexer = search_index.SearchIndexer(storage.db)
        while await indexer.step():
            pass
        assert indexer.indexed == 23_000
        view = await parse_query(storage.db, MultiDict(q="needle-42"))
        assert view.flt.indexed is not None  # narrowed indeed: the filter names the index
    indexed = await answers()
    assert indexed == scanned
    assert [len(a) for a in scanned][:4] == [1, 1000, 237, 1000]  # code=42: 206 + 31
    assert scanned[-1] == []


async def test_what_a_viewer_user_types_costs_bounded_work_and_a_4xx_not_a_500(
    store_url: str,
) -> None:
    """A review as whoever reaches the viewer: a 10-character search (`\\PN.{999}x`, ~30 ms a
    1 KB line in RE2, 2,000 rows a step in the event loop) froze every viewer for a minute;
    nested counted repeats took PostgreSQL seconds to compile; `until` near 2262 overflowed
    the histogram's BIGINT; a link with limit=1 raised IndexError; a key spelled in JSON
    escapes was never found."""
    from urllib.parse import quote

    await fill(store_url, {"a": ["x" * 1000] * 5 + ['{"temp\\u00e9rature": 25}'] * 3})
    first = sql_rows(store_url, "SELECT MIN(id) FROM log_lines")[0][0]
    nested = "(((" + "|".join("abcdefghijklmnopqrst") + "){0,9}){0,9}){0,9}"
    async with viewer(store_url) as client:
        for pattern in (r"\PN.{999}x", nested, "a{2000}"):
            for path in ("/api/lines", "/api/histogram", "/api/download"):
                response = await client.get(f"{path}?c=a&re=1&q={quote(pattern)}", headers=HOST)
                assert response.status == 400, (path, pattern)
                said = (await response.json())["error"]  # RE2's own word for a{2000} on SQLite
                assert "too costly" in said or "repetition size" in said, (path, pattern)
        found = await ndjson(client, "/api/lines?c=a&re=1&q=" + quote(r"x{200}"))
        assert sum(len(c["rows"]) for c in found) == 5  # a search worth running still runs
        for query in ("until=9223372036", "since=-9223372036", "since=9223372036",
                      "until=-9223372036", "until=2262-04-11T23:47:00Z"):  # fmt: skip
            response = await client.get(f"/api/histogram?c=a&{query}", headers=HOST)
            assert response.status == 200, (query, await response.text())
        linked = (await ndjson(client, f"/api/lines?at={first}&limit=1"))[0]
        assert [r["id"] for r in linked["rows"]] == [first] and linked["position"] is None
        escaped = await ndjson(client, "/api/lines?c=a&where=" + quote("température>20"))
        assert sum(len(c["rows"]) for c in escaped) == 3


async def test_a_viewer_statement_past_its_timeout_is_a_503_not_a_500(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The viewer's PostgreSQL connections carry a statement_timeout (a search's regex is
    whoever reaches the viewer's); a statement it cancels is answered 503 with the reason."""
    import asyncpg

    from agent.web import server

    async with open_store(pg_url, statement_timeout_s=0.5) as db:
        _, shown = await db.execute_query("SHOW statement_timeout")
        assert shown[0]["statement_timeout"] == "500ms"
        with pytest.raises(Exception) as cancelled:
            await db.execute_query("SELECT pg_sleep(5)")
        assert server.sqlstate(cancelled.value) == server.QUERY_CANCELED

    async def cancelled_summary(db: object) -> None:
        raise asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout")

    monkeypatch.setattr(server, "container_summary", cancelled_summary)
    async with viewer(pg_url) as client:
        response = await client.get("/api/containers", headers=HOST)
        assert response.status == 503
        assert "took over 30 s" in (await response.json())["error"]


async def test_a_views_search_is_matched_off_the_event_loop() -> None:
    """RE2 lets go of the GIL: a search matched in a worker thread costs that thread its
    time, not every viewer and live tail waiting on the loop (web/query.py `matching`)."""
    import threading

    from agent.storage.reader import StoredRow
    from agent.web.query import matching

    threads: set[int] = set()

    def search(line: str) -> bool:
        threads.add(threading.get_ident())
        return "b" in line

    rows = [StoredRow(i, "h", "c" * 64, "n", "stdout", i, "", m, 0, None) for i, m in
            enumerate(["a", "b", "ab"])]  # fmt: skip
    assert [r.message for r in await matching(search, rows)] == ["b", "ab"]
    assert threads and threading.get_ident() not in threads
    assert await matching(None, rows) == rows


async def test_a_long_literal_search_is_a_search_not_a_costly_pattern(store_url: str) -> None:
    """The bound on a search's program is for regexes: a literal's is a plain chain (a
    pasted line of CJK text is ~3 instructions a character, and it was refused)."""
    from urllib.parse import quote

    text = "日志" * 200
    await fill(store_url, {"a": ["before " + text + " after", "other"]})
    async with viewer(store_url) as client:
        found = await ndjson(client, "/api/lines?c=a&q=" + quote(text))
        assert [r["msg"] for c in found for r in c["rows"]] == ["before " + text + " after"]
