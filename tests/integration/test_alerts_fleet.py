"""Alerts in a fleet, across a kill -9 mid-burst, and on containers' lives (issue 25's
remaining tests), against a real dockerd and a real HTTP receiver in the test (a user's
webhook endpoint is one).

Two agents on one PostgreSQL each evaluate their own host's rows: one notification per
match, never one per agent. A kill -9 while alerts are being sent loses none and repeats at
most the one in flight, with its id. An `oom` and an `unhealthy` rule each fire once.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp import web

from agent.alerts.rules import parse_alerts
from agent.alerts.runner import consumer_name
from agent.storage.follow import Position
from tests.conftest import (
    RUN_ID,
    Containers,
    agent_settings,
    db_url,
    eventually,
    query,
    running_agent,
    start_agent_process,
    stop_process,
    until_reached,
)
from tests.integration.test_alerts import Receiver, receiving

pytestmark = [pytest.mark.anyio, pytest.mark.docker]

FLEET_LABEL = "logagent-test.fleet"  # which host's agent sees a container


def rule_section(url: str, prefix: str, **rule: object) -> dict[str, Any]:
    """One destination, one rule on this test's containers' lines with "ERROR"."""
    return {
        "destinations": [{"name": "hook", "url": url}],
        "rules": [{"name": "errors", "match": "ERROR", "names": [f"{prefix}-*"],
                   "destinations": ["hook"], **rule}],
    }  # fmt: skip


# No cooldown: every matching line fires. Docker stamps a line when its log copier reads it,
# and lines it reads in one go (a backlog at a container's start, a busy machine) are stamped
# microseconds apart however the script paces them: with a 1 ms cooldown, some were held
# (seen: 26 us apart), and even 1 us held one in about 95 runs.
EVERY_LINE = "0s"


def paced_errors(tag: str, count: int) -> str:
    """A container's script: `ERROR <tag><n>` for n in 1..count, 5 ms apart, then a line
    that matches nothing."""
    return (
        f'sleep 0.2; i=0; while [ $i -lt {count} ]; do i=$((i+1)); echo "ERROR {tag}$i"; '
        "sleep 0.005; done; echo fine"
    )


def bodies(receiver: Receiver) -> list[dict[str, Any]]:
    return [body for _, body in receiver.got]


def rules_state(url: str, host: str) -> dict[str, Any]:
    """The host's rules' committed state (tracks, the last container event they saw)."""
    rows = query(url, "SELECT state FROM alert_state WHERE name = ?", consumer_name(host))
    return json.loads(rows[0][0]) if rows else {}


def rules_position(url: str, host: str) -> dict[str, int]:
    """The host's rules' committed position in consumer_positions: per host, the last row read."""
    rows = query(url, "SELECT position FROM consumer_positions WHERE name = ?", consumer_name(host))
    return Position.parse(str(rows[0][0])).as_dict() if rows else {}


def outbox_rows(url: str) -> list[tuple[str, str, int, str]]:
    """(host, status, attempts, payload) of every alert in the outbox, in id order."""
    return [
        (str(h), str(s), int(a), str(p))
        for h, s, a, p in query(
            url, "SELECT host, status, attempts, payload FROM alert_outbox ORDER BY id"
        )
    ]


def stored_lines(url: str) -> int:
    rows = query(url, "SELECT COUNT(*) FROM log_lines")
    return int(rows[0][0]) if rows else 0


async def until_settled(url: str, hosts: tuple[str, ...], lines: int) -> dict[str, int]:
    """Until `lines` rows are stored, each host's rules have read past the last row of their
    host, and the outbox holds nothing pending: from then on nothing more is sent, so what
    the receiver has is final (an absence is judged after this, never after a sleep). Per
    host, its last row's id."""
    await until_reached(lambda: stored_lines(url), lines)
    last = {str(h): int(i) for h, i in query(
        url, "SELECT host, MAX(id) FROM log_lines GROUP BY host")}  # fmt: skip
    assert set(last) == set(hosts), last

    def caught_up() -> bool:
        return all(rules_position(url, h).get(h, 0) >= last[h] for h in hosts)

    await eventually(caught_up, limit=60)
    made = len(outbox_rows(url))  # the rules have caught up: no more alerts will be made
    await until_reached(lambda: sum(s == "sent" for _, s, _, _ in outbox_rows(url)), made)
    return last


async def test_two_agents_on_one_postgresql_send_one_notification_per_match(
    tmp_path: Path, containers: Containers, pg_url: str
) -> None:
    """Both agents run the same rule to the same webhook on one store and one dockerd; each
    sees only the containers labelled for its host (its own scope), so each host owns its
    rows. Every matching line is notified once, by the agent of the host that owns it; each
    host's rules keep a position of their own, and the count is judged once each has read
    past every row of its host and sent all it fired."""
    hosts = ("alpha", "beta")
    per_container = 5
    async with receiving(Receiver()) as hook:
        alerts = parse_alerts(rule_section(hook.url, containers.prefix, cooldown=EVERY_LINE))
        fleet = [
            replace(agent_settings(tmp_path), db_url=pg_url, host=host,
                    scope_labels=(f"{FLEET_LABEL}={RUN_ID}-{host}",), alerts=alerts)
            for host in hosts
        ]  # fmt: skip
        owner: dict[str, str] = {}  # container id -> the host whose agent sees it
        tag: dict[str, str] = {}  # container id -> what its lines say after ERROR
        async with running_agent(fleet[0]), running_agent(fleet[1]):
            for host in hosts:
                for k in (1, 2):
                    cid = containers.run(
                        f"{host}-{k}", paced_errors(f"{host}-{k} ", per_container),
                        "--label", f"{FLEET_LABEL}={RUN_ID}-{host}",
                    )  # fmt: skip
                    owner[cid], tag[cid] = host, f"{host}-{k}"
            for name in tag.values():
                containers.wait(name)
            last = await until_settled(pg_url, hosts, len(owner) * (per_container + 1))
        got = bodies(hook)
    expected = len(owner) * per_container
    assert all(key == body["id"] for key, body in hook.got)
    assert len(got) == expected and len({b["id"] for b in got}) == expected
    notified = Counter((b["container_id"], b["line"]) for b in got)
    wanted = Counter(
        (cid, f"ERROR {tag[cid]} {n}") for cid in owner for n in range(1, per_container + 1)
    )
    assert notified == wanted  # each match once, none for the line that matches nothing
    for b in got:
        assert b["host"] == owner[b["container_id"]], b
        assert b["kind"] == "line" and (b["count"], b["more"]) == (1, 0)
    # The outbox: one row per alert, kept by the host that fired it.
    rows = outbox_rows(pg_url)
    assert len(rows) == expected
    assert all(h == owner[json.loads(p)["container_id"]] for h, _, _, p in rows)
    # consumer_positions: one `alerts:` position per host, each its own, each past its rows.
    positions = dict(
        query(pg_url, "SELECT name, position FROM consumer_positions WHERE name LIKE 'alerts:%'")
    )
    assert set(positions) == {consumer_name(h) for h in hosts}
    for host in hosts:
        assert consumer_name(host).startswith(f"alerts:{host}:")
        assert Position.parse(positions[consumer_name(host)]).as_dict()[host] >= last[host]
        assert rules_state(pg_url, host) != {}


@dataclass
class SlowReceiver(Receiver):
    """A webhook that takes `pause` seconds to answer: a kill is likely to find a post in
    flight (received here, not yet marked sent by the agent)."""

    pause: float = 0.01

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.got.append((request.headers.get("Idempotency-Key", ""), body))
        await anyio.sleep(self.pause)
        return web.Response(status=200, text="ok")


def every_line_fires(tmp_path: Path, hook_url: str, prefix: str) -> subprocess.Popen[bytes]:
    """`logagent run` with a rule that every matching line fires."""
    return start_agent_process(
        tmp_path,
        extra_config=(
            f'[[alerts.destinations]]\nname = "hook"\nurl = "{hook_url}"\n'
            f'[[alerts.rules]]\nname = "errors"\nmatch = "ERROR"\nnames = ["{prefix}-*"]\n'
            f'cooldown = "{EVERY_LINE}"\ndestinations = ["hook"]\n'
        ),
    )


async def test_a_kill_9_mid_burst_notifies_every_match_and_repeats_at_most_the_one_in_flight(
    tmp_path: Path, containers: Containers
) -> None:
    """300 matching lines; the agent is killed -9 while it sends their alerts, then started
    again. Every line is notified, each with its own id. The sender posts one alert at a time
    (AlertRunner._send: post, then mark sent, then the next; one sender per agent, whatever
    the destinations), so at the kill at most one alert is posted and not yet marked: it is
    sent again, once, with the same id. A rules step cut before its commit is repeated on
    restart and gives the same ids, which the outbox takes once. So: 300 distinct ids, at
    most one id received twice, never thrice."""
    total = 300
    url = db_url(tmp_path)
    async with receiving(SlowReceiver()) as hook:
        agent = every_line_fires(tmp_path, hook.url, containers.prefix)
        try:
            containers.run("burst", paced_errors("", total))
            await eventually(lambda: len(hook.got) >= 20, limit=120)
            agent.send_signal(signal.SIGKILL)
            agent.wait(timeout=30)
            at_kill = len(hook.got)
            assert at_kill < total  # mid-burst: some sent, not all
            agent = every_line_fires(tmp_path, hook.url, containers.prefix)
            containers.wait("burst")
            await until_settled(url, ("test-host",), total + 1)
        finally:
            stop_process(agent)
    keys = Counter(key for key, _ in hook.got)
    assert all(key == body["id"] for key, body in hook.got)
    assert len(keys) == total
    assert sorted(b["line"] for b in {b["id"]: b for b in bodies(hook)}.values()) == sorted(
        f"ERROR {n}" for n in range(1, total + 1)
    )
    assert all(b["more"] == 0 and b["kind"] == "line" for b in bodies(hook))
    twice = [key for key, n in keys.items() if n > 1]
    assert len(twice) <= 1 and max(keys.values()) <= 2, keys.most_common(3)
    for key in twice:  # the re-sent one is the same alert: same id, same line
        sent = [body for k, body in hook.got if k == key]
        assert sent[0] == sent[1]
    rows = outbox_rows(url)
    assert len(rows) == total and {json.loads(p)["id"] for _, _, _, p in rows} == set(keys)
    assert all(s == "sent" and a == 1 for _, s, a, _ in rows)


async def test_an_oom_and_an_unhealthy_container_each_fire_their_rule_once(
    tmp_path: Path, containers: Containers
) -> None:
    """A container over its `--memory` (oom) and one whose `--health-cmd` fails (unhealthy):
    each event rule's alert arrives once, as an event, and nothing else fires, judged once
    the rules have read past every container event stored."""
    async with receiving(Receiver()) as hook:
        names = [f"{containers.prefix}-*"]
        section = {
            "destinations": [{"name": "hook", "url": hook.url}],
            "rules": [
                {"name": "oom", "event": "oom", "names": names, "destinations": ["hook"]},
                {"name": "sick", "event": "unhealthy", "names": names, "destinations": ["hook"]},
            ],
        }  # fmt: skip
        settings = replace(agent_settings(tmp_path), alerts=parse_alerts(section))
        url = settings.db_url
        async with running_agent(settings):
            # /dev/zero has no newline: tail holds it all, over the limit (test_life_events)
            greedy = containers.run(
                "greedy", "tail /dev/zero", "--memory", "16m", "--memory-swap", "16m"
            )
            sick = containers.run(
                "sick", "sleep 120",
                "--health-cmd", "false", "--health-interval", "1s", "--health-retries", "1",
            )  # fmt: skip

            def fired() -> set[tuple[str, str]]:
                return {(b["rule"], b["container_id"]) for b in bodies(hook)}

            await eventually(lambda: {("oom", greedy), ("sick", sick)} <= fired(), limit=120)
            containers.wait("greedy")  # its die is the last event it makes

            def greedy_died() -> bool:
                return bool(query(url, "SELECT 1 FROM container_events WHERE container_id = ? "
                                  "AND action = 'die'", greedy))  # fmt: skip

            await eventually(greedy_died, limit=60)
            newest = int(query(url, "SELECT MAX(id) FROM container_events")[0][0])
            await eventually(
                lambda: int(rules_state(url, "test-host").get("events_after", 0)) >= newest,
                limit=60,
            )
            await eventually(lambda: {s for _, s, _, _ in outbox_rows(url)} == {"sent"}, limit=60)
        events = {
            (str(a), str(c)): int(i)
            for i, a, c in query(
                url,
                "SELECT MIN(id), action, container_id FROM container_events "
                "WHERE action = 'oom' OR detail = 'unhealthy' GROUP BY action, container_id",
            )
        }
    got = bodies(hook)
    assert sorted((b["rule"], b["container_id"]) for b in got) == sorted(
        [("oom", greedy), ("sick", sick)]
    )
    by_rule = {b["rule"]: b for b in got}
    oom, unhealthy = by_rule["oom"], by_rule["sick"]
    assert (oom["kind"], oom["line"], oom["host"]) == ("event", "oom", "test-host")
    assert oom["ref"] == events[("oom", greedy)]
    assert oom["container_name"] == f"{containers.prefix}-greedy"
    assert (unhealthy["kind"], unhealthy["line"]) == ("event", "health_status (unhealthy)")
    assert unhealthy["ref"] == events[("health_status", sick)]
    assert all(key == body["id"] for key, body in hook.got)
