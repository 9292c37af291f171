"""Alerts on stored lines, delivered once (issue 25), against a real dockerd and a real HTTP
receiver in the test (a user's webhook endpoint is one).

A rule fires once per cooldown with its count; a threshold counts within its window; a
destination that fails gets every alert once it answers; lines written while the agent was
down fire when it catches up, once across restarts; a kill -9 between the send and its mark
sends it again once, with the same id.
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web

from agent import commands
from agent.alerts.cli import alerts as alerts_command
from agent.alerts.rules import parse_alerts
from tests.conftest import (
    Containers,
    agent_settings,
    db_url,
    eventually,
    query,
    running_agent,
    start_agent_process,
)

pytestmark = [pytest.mark.anyio, pytest.mark.docker]


@dataclass
class Receiver:
    """A webhook endpoint: records what it is sent; answers `statuses` in turn, then 200;
    `hold` keeps the first request unanswered until set."""

    url: str = ""
    got: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    hold: anyio.Event | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.got.append((request.headers.get("Idempotency-Key", ""), body))
        if self.hold is not None and len(self.got) == 1:
            await self.hold.wait()
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status, text="ok")


@asynccontextmanager
async def receiving(receiver: Receiver) -> AsyncIterator[Receiver]:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    receiver.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield receiver
    finally:
        await runner.cleanup()


def alerts_section(url: str, prefix: str, **rule: object) -> dict[str, Any]:
    return {
        "destinations": [{"name": "hook", "url": url}],
        "rules": [
            {"name": "errors", "match": "ERROR", "names": [f"{prefix}-*"],
             "destinations": ["hook"], **rule}
        ],
    }  # fmt: skip


def outbox(tmp_path: Path) -> list[tuple[Any, ...]]:
    return query(db_url(tmp_path), "SELECT status, attempts, payload FROM alert_outbox ORDER BY id")


async def test_a_rule_fires_once_per_cooldown_with_its_count(
    tmp_path: Path, containers: Containers
) -> None:
    async with receiving(Receiver()) as hook:
        section = alerts_section(hook.url, containers.prefix, cooldown="1h")
        settings = replace(agent_settings(tmp_path), alerts=parse_alerts(section))
        async with running_agent(settings) as agent:
            cid = containers.run(
                "noisy", "echo 'ERROR one'; echo fine; echo 'ERROR two'; echo 'ERROR <b>3</b>'"
            )
            containers.wait("noisy")
            await eventually(lambda: len(hook.got) == 1, limit=60)
            await eventually(
                lambda: bool(
                    query(
                        db_url(tmp_path),
                        "SELECT state FROM alert_state WHERE state LIKE '%,2,0,0,0,0,%'",
                    )
                ),
                limit=60,
            )
            # Caught up, the rules took the lines from what the writer had just committed.
            assert agent.storage is not None and agent.storage.recent.taken > 0
        key, body = hook.got[0]
        assert key == body["id"] and len(key) == 32
        assert (body["rule"], body["line"], body["count"], body["more"]) == (
            "errors",
            "ERROR one",
            1,
            0,
        )
        assert body["container_id"] == cid and body["host"] == "test-host"
        assert [(s, a) for s, a, _ in outbox(tmp_path)] == [("sent", 1)]
        assert len(hook.got) == 1  # the two held by the cooldown are counted, not sent
        # `logagent alerts`: what was sent, the rules, a test post
        out = io.StringIO()
        assert (
            await alerts_command(settings.db_url, settings.alerts, "history", None, True, out) == 0
        )
        shown = [json.loads(line) for line in out.getvalue().splitlines()]
        assert [(a["rule"], a["status"], a["line"]) for a in shown] == [
            ("errors", "sent", "ERROR one")
        ]
        out = io.StringIO()
        await alerts_command(settings.db_url, settings.alerts, "ls", None, False, out)
        assert out.getvalue().startswith("errors\tmatch 'ERROR'\tsent 1\tpending 0\tlast ")
        out = io.StringIO()
        assert (
            await alerts_command(settings.db_url, settings.alerts, "test", "errors", False, out)
            == 0
        )
        assert out.getvalue() == "hook: delivered (HTTP 200)\n"
        assert hook.got[-1][1]["test"] is True and len(hook.got) == 2


async def test_a_threshold_fires_on_the_nth_match_in_its_window(
    tmp_path: Path, containers: Containers
) -> None:
    async with receiving(Receiver()) as hook:
        section = alerts_section(hook.url, containers.prefix, threshold=3, window="10m")
        settings = replace(agent_settings(tmp_path), alerts=parse_alerts(section))
        async with running_agent(settings):
            containers.run("twice", "echo ERROR; echo ERROR")
            containers.run("thrice", "echo ERROR 1; echo ERROR 2; echo ERROR 3")
            await eventually(lambda: len(hook.got) == 1, limit=60)
            containers.wait("twice")
            await anyio.sleep(1.0)  # the rules are past both containers' lines by now
        body = hook.got[0][1]
        assert body["container_name"].endswith("-thrice") and body["count"] == 3
        assert body["line"] == "ERROR 3"
        assert len(hook.got) == 1


async def test_a_destination_that_fails_gets_the_alert_when_it_answers(
    tmp_path: Path, containers: Containers
) -> None:
    async with receiving(Receiver(statuses=[503, 500])) as hook:
        section = alerts_section(hook.url, containers.prefix)
        settings = replace(agent_settings(tmp_path), alerts=parse_alerts(section))
        async with running_agent(settings) as agent:
            containers.run("flaky", "echo 'ERROR once'")
            await eventually(lambda: [(s, a > 0) for s, a, _ in outbox(tmp_path)] == [
                ("pending", True)], limit=90)  # fmt: skip
            said = io.StringIO()  # `logagent status` while the destination fails
            await commands.status(settings.db_url, settings.api_socket, False, said)
            assert "alerts pending for hook (test-host): 1, the oldest " in said.getvalue()
            assert "last error HTTP 50" in said.getvalue()
            assert hook.url not in said.getvalue() and "127.0.0.1" not in said.getvalue()
            await eventually(lambda: [s for s, _, _ in outbox(tmp_path)] == ["sent"], limit=90)
            assert agent.alerts is not None and agent.alerts.failed == {"hook": 2}
            async with (
                aiohttp.ClientSession(
                    connector=aiohttp.UnixConnector(path=settings.api_socket)
                ) as session,
                session.get("http://agent/metrics") as response,
            ):
                scraped = await response.text()
                async with session.get("http://agent/alerts") as answer:
                    listed = await answer.text()
        summary = json.loads(listed)
        assert summary["failed"] == {"hook": 2} and summary["sent"] == 1
        assert [(r["name"], r["fired"]) for r in summary["rules"]] == [("errors", 1)]
        assert hook.url not in listed and "127.0.0.1" not in listed
        assert 'logagent_alerts_fired_total{rule="errors"} 1.0' in scraped
        assert 'logagent_alert_deliveries_failed_total{destination="hook"} 2.0' in scraped
        assert hook.url not in scraped and "127.0.0.1" not in scraped  # no URL, ever
        assert len(hook.got) == 3 and len({k for k, _ in hook.got}) == 1  # the same id each time
        assert [(s, a) for s, a, _ in outbox(tmp_path)] == [("sent", 3)]


async def test_lines_written_while_the_agent_was_down_fire_once_on_catch_up(
    tmp_path: Path, containers: Containers
) -> None:
    async with receiving(Receiver()) as hook:
        section = alerts_section(hook.url, containers.prefix)
        settings = replace(agent_settings(tmp_path), alerts=parse_alerts(section))
        async with running_agent(settings):
            pass  # the rules' position is made: from here on, every line is theirs
        containers.run("meanwhile", "echo 'ERROR while nobody looked'")
        containers.wait("meanwhile")
        async with running_agent(settings):
            await eventually(lambda: len(hook.got) == 1, limit=60)
        async with running_agent(settings):  # a third start: nothing again
            await anyio.sleep(1.5)
        assert [b["line"] for _, b in hook.got] == ["ERROR while nobody looked"]


async def test_a_field_rule_with_a_level_sends_the_lines_around_its_match(
    tmp_path: Path, containers: Containers
) -> None:
    """`where` on a JSON line's nested field and on a logfmt line, at or above a level; the
    rule's `context` lines before and after come from the store with the alert."""
    async with receiving(Receiver()) as hook:
        section = alerts_section(hook.url, containers.prefix)
        del section["rules"][0]["match"]
        section["rules"][0].update(
            where='status>=500 user.id="42"', level="error", context=2, cooldown="1h"
        )
        settings = replace(agent_settings(tmp_path), alerts=parse_alerts(section))
        wanted = '{"level":"error","status":503,"user":{"id":"42"}}'
        other = wanted.replace("42", "41")
        async with running_agent(settings):
            containers.run(
                "json",
                f"echo starting; echo '{other}'; echo '{wanted}'; echo 'after one';"
                " echo 'after two'; echo 'after three'",
            )
            containers.run(
                "logfmt",
                "echo 'level=warn status=500 user.id=42'; echo 'level=error status=404 user.id=42';"
                " echo 'level=error status=502 user.id=42 msg=\"upstream gone\"'",
            )
            for name in ("json", "logfmt"):
                containers.wait(name)
            await eventually(lambda: len(hook.got) == 2, limit=60)
        got = {b["container_name"].rsplit("-", 1)[1]: b for _, b in hook.got}
        js, lf = got["json"], got["logfmt"]
        assert js["line"] == wanted and js["count"] == 1
        assert [c["line"] for c in js["before"]] == ["starting", other]
        assert [c["line"] for c in js["after"]] == ["after one", "after two"]
        assert all(c["stream"] == "stdout" and c["time"].endswith("Z") for c in js["after"])
        assert lf["line"] == 'level=error status=502 user.id=42 msg="upstream gone"'
        assert [c["line"] for c in lf["before"]] == [
            "level=warn status=500 user.id=42",
            "level=error status=404 user.id=42",
        ]
        assert lf["after"] == []  # its last line: the wait for more ends, it is sent


async def test_a_long_outage_is_one_summary_per_rule_and_container(
    tmp_path: Path, containers: Containers
) -> None:
    """Matches older than the rule's max_age when read are counted into one notification;
    a match read in time afterwards is sent as itself."""
    async with receiving(Receiver()) as hook:
        section = alerts_section(hook.url, containers.prefix, max_age="2s", cooldown="1ms")
        settings = replace(agent_settings(tmp_path), alerts=parse_alerts(section))
        async with running_agent(settings):
            pass  # the rules' position is made
        containers.run("storm", "for i in 1 2 3 4 5 6 7; do echo ERROR $i; done")
        containers.wait("storm")
        await anyio.sleep(3)  # the lines become older than max_age: the outage, not a wait
        async with running_agent(settings):
            await eventually(lambda: len(hook.got) == 1, limit=60)
            containers.run("fresh", "echo 'ERROR now'")
            await eventually(lambda: len(hook.got) == 2, limit=60)
        summary, fresh = (b for _, b in hook.got)
        assert (summary["kind"], summary["count"]) == ("summary", 7)
        assert summary["container_name"] == f"{containers.prefix}-storm"
        assert summary["line"].startswith("7 matches from ")
        assert summary["first_ns"] < summary["time_ns"]
        assert (fresh["kind"], fresh["line"]) == ("line", "ERROR now")


async def test_apprise_and_a_templated_webhook_get_the_alert_as_data(
    tmp_path: Path, containers: Containers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An `ntfy://` destination goes through Apprise (its real ntfy client, to a receiver in
    the test as a self-hosted ntfy is); a webhook with a template and a secret header gets
    the template filled in. A hostile line stays data in both: JSON-escaped, its escapes shown."""
    got: list[tuple[str, dict[str, str], Any]] = []

    async def handle(request: web.Request) -> web.Response:
        got.append((request.path, dict(request.headers), await request.json()))
        return web.json_response({"id": "n1"})

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    monkeypatch.setenv("HOOK_TOKEN", "Bearer s3cret-token")
    section = {
        "destinations": [
            {"name": "phone", "url": f"ntfy://127.0.0.1:{port}/ops-alerts"},
            {"name": "chat", "url": f"http://127.0.0.1:{port}/chat",
             "headers": {"X-Team": "ops"}, "headers_env": {"Authorization": "HOOK_TOKEN"},
             "template": {"text": "{rule} on {container_name}: {line}", "n": "{count}"}},
        ],
        "rules": [{"name": "errors", "match": "ERROR", "names": [f"{containers.prefix}-*"],
                   "destinations": ["phone", "chat"]}],
    }  # fmt: skip
    hostile = 'ERROR "quoted" <img src=x onerror=alert(1)> \x1b[31mred'
    try:
        settings = replace(agent_settings(tmp_path), alerts=parse_alerts(section))
        assert "s3cret" not in repr(settings)
        async with running_agent(settings):
            containers.run("hostile", f"printf '%b\\n' '{hostile}'")
            await eventually(lambda: len(got) == 2, limit=60)
    finally:
        await runner.cleanup()
    by_path = {path: (headers, body) for path, headers, body in got}
    headers, ntfy = by_path["/"]
    assert ntfy["topic"] == "ops-alerts"
    assert ntfy["title"] == f"logagent: errors on {containers.prefix}-hostile"
    first = ntfy["message"].splitlines()[0]
    assert first == 'ERROR "quoted" <img src=x onerror=alert(1)> \\x1b[31mred'  # ESC shown
    assert "alert id " in ntfy["message"]
    headers, chat = by_path["/chat"]
    assert headers["Authorization"] == "Bearer s3cret-token" and headers["X-Team"] == "ops"
    assert chat == {  # a template is a message for people: mentions broken, ESC shown
        "text": f"errors on {containers.prefix}-hostile: "
        'ERROR "quoted" <\u200bimg src=x onerror=alert(1)> \\x1b[31mred',
        "n": "1",
    }
    assert len(headers["Idempotency-Key"]) == 32


async def test_rules_select_containers_by_image_labels_and_compose_and_labels_pick_destinations(
    tmp_path: Path, containers: Containers
) -> None:
    """Selectors are judged on what the store keeps of each container (image, compose
    project and service, labels); a container's label adds destinations its rule allows, and
    nothing else (not a URL, not a name the rule does not list), and never removes one."""
    async with receiving(Receiver()) as a, receiving(Receiver()) as b:
        section = {
            "destinations": [{"name": "a", "url": a.url}, {"name": "b", "url": b.url}],
            "rules": [
                {"name": "payments", "match": "ERROR", "images": ["logagent-test/busybox*"],
                 "labels": ["team=pay*"], "names": [f"{containers.prefix}-*"],
                 "label_destinations": ["b"], "destinations": ["a"]},
                {"name": "shop-web", "match": "ERROR", "projects": ["shop"],
                 "services": ["web"], "names": [f"{containers.prefix}-*"],
                 "destinations": ["a"]},
                {"name": "other-image", "match": "ERROR", "images": ["nginx:*"],
                 "destinations": ["a"]},
            ],
        }  # fmt: skip
        settings = replace(agent_settings(tmp_path), alerts=parse_alerts(section))
        compose = ["-l", "com.docker.compose.project=shop", "-l", "com.docker.compose.service=web"]
        async with running_agent(settings) as agent:
            containers.run("picks-b", "echo ERROR b", "-l", "team=payments",
                           "-l", "logagent.alert.destinations=b, nope", *compose)  # fmt: skip
            containers.run("url", "echo ERROR url", "-l", "team=payroll",
                           "-l", "logagent.alert.destinations=http://127.0.0.1:9/x")  # fmt: skip
            containers.run("search", "echo ERROR search", "-l", "team=search")
            for name in ("picks-b", "url", "search"):
                containers.wait(name)
            await eventually(lambda: len(a.got) == 3 and len(b.got) == 1, limit=60)
            hints = [r.hints for r in agent.registry if r.hints is not None]
        got = sorted((body["rule"], body["line"]) for _, body in a.got)
        # b is added to a (the rule's own, which no label takes away); "nope" and a URL: not
        assert got == [("payments", "ERROR b"), ("payments", "ERROR url"), ("shop-web", "ERROR b")]
        assert [(body["rule"], body["line"]) for _, body in b.got] == [("payments", "ERROR b")]
        assert not any(p for h in hints for p in h.problems)  # the label is not a bad hint
        stored = query(
            db_url(tmp_path),
            "SELECT container_name, image, service, labels FROM container_cursors "
            "ORDER BY container_name",
        )
        picks = next(r for r in stored if r[0].endswith("-picks-b"))
        assert picks[1] == "logagent-test/busybox:latest" and picks[2] == "web"
        assert json.loads(picks[3])["team"] == "payments"


def agent_process(tmp_path: Path, hook_url: str, prefix: str) -> subprocess.Popen[bytes]:
    """`logagent run` with one alert rule, as a process that can be killed with -9."""
    return start_agent_process(
        tmp_path,
        extra_config=(
            f'[[alerts.destinations]]\nname = "hook"\nurl = "{hook_url}"\n'
            f'[[alerts.rules]]\nname = "errors"\nmatch = "ERROR"\nnames = ["{prefix}-*"]\n'
            'destinations = ["hook"]\n'
        ),
    )


async def test_a_kill_9_between_send_and_mark_sends_it_again_once_with_the_same_id(
    tmp_path: Path, containers: Containers
) -> None:
    hold = anyio.Event()
    async with receiving(Receiver(hold=hold)) as hook:
        agent = agent_process(tmp_path, hook.url, containers.prefix)
        try:
            containers.run("crash", "echo 'ERROR before the crash'")
            await eventually(lambda: len(hook.got) == 1, limit=60)  # sent, not yet answered
            agent.send_signal(signal.SIGKILL)
            agent.wait(timeout=30)
            hold.set()
            assert [s for s, _, _ in outbox(tmp_path)] == ["pending"]
            agent = agent_process(tmp_path, hook.url, containers.prefix)
            await eventually(lambda: [s for s, _, _ in outbox(tmp_path)] == ["sent"], limit=60)
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.wait(timeout=30)
    keys = [k for k, _ in hook.got]
    assert len(keys) == 2 and keys[0] == keys[1]  # once again, and only once, the same id
    assert json.loads(outbox(tmp_path)[0][2])["id"] == keys[0]


async def test_event_rules_fire_on_a_failed_death_and_on_a_restart_loop(
    tmp_path: Path, containers: Containers
) -> None:
    async with receiving(Receiver()) as hook:
        names = [f"{containers.prefix}-*"]
        section = {
            "destinations": [{"name": "hook", "url": hook.url}],
            "rules": [
                {"name": "died", "event": "die", "names": names, "destinations": ["hook"]},
                {"name": "looping", "event": "start", "threshold": 3, "window": "1m",
                 "names": names, "destinations": ["hook"]},
            ],
        }  # fmt: skip
        settings = replace(agent_settings(tmp_path), alerts=parse_alerts(section))
        async with running_agent(settings):
            containers.run("clean", "exit 0")
            containers.run("failed", "sleep 1; exit 3")
            containers.run("loop", "exit 1", "--restart", "always")

            def fired() -> set[tuple[str, str]]:
                return {(b["rule"], b["container_name"].rsplit("-", 1)[1]) for _, b in hook.got}

            await eventually(lambda: {("died", "failed"), ("looping", "loop")} <= fired(), 90)
            containers.wait("clean")
            await anyio.sleep(1.0)  # the clean exit's die is seen by now, and fires nothing
        got = fired()
        assert ("died", "clean") not in got
        assert got <= {("died", "failed"), ("died", "loop"), ("looping", "loop")}
        failed = next(
            b
            for _, b in hook.got
            if b["rule"] == "died" and b["container_name"].endswith("-failed")
        )
        assert failed["line"] == "die (exit code 3)" and failed["kind"] == "event"
        loop = next(b for _, b in hook.got if b["rule"] == "looping")
        assert loop["count"] == 3 and loop["line"] == "start"
        assert len(hook.got) == len(got)  # each once: the cooldown holds the loop's next ones
