"""An alert by email: Apprise's `mailto://` client against a real SMTP server in the test
(aiosmtpd, as a user's mail relay would be), with a hostile line shown as text."""

from __future__ import annotations

import email
import socket
from dataclasses import replace
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from agent.alerts.rules import parse_alerts
from tests.conftest import Containers, agent_settings, eventually, running_agent

pytestmark = [pytest.mark.anyio, pytest.mark.docker]


class Inbox:
    """What the SMTP server was handed: (envelope from, recipients, the message)."""

    def __init__(self) -> None:
        self.got: list[tuple[str, list[str], Message]] = []

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        self.got.append(
            (
                envelope.mail_from,
                list(envelope.rcpt_tos),
                email.message_from_bytes(envelope.content),
            )
        )
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_alert_by_email_arrives_with_the_line_as_text(
    tmp_path: Path, containers: Containers
) -> None:
    inbox, port = Inbox(), free_port()
    server = Controller(inbox, hostname="127.0.0.1", port=port)
    server.start()
    try:
        url = f"mailto://127.0.0.1:{port}?from=alerts@example.com&to=ops@example.com&mode=insecure"
        section = {
            "destinations": [{"name": "mail", "url": url}],
            "rules": [{"name": "errors", "match": "ERROR", "names": [f"{containers.prefix}-*"],
                       "destinations": ["mail"]}],
        }  # fmt: skip
        settings = replace(agent_settings(tmp_path), alerts=parse_alerts(section))
        async with running_agent(settings):
            containers.run("mailed", "printf 'ERROR <script>x</script> \\033[2J gone\\n'")
            await eventually(lambda: len(inbox.got) == 1, limit=60)
    finally:
        server.stop()
    sender, to, message = inbox.got[0]
    assert (sender, to) == ("alerts@example.com", ["ops@example.com"])
    assert message["Subject"] == f"logagent: errors on {containers.prefix}-mailed"
    parts = [p for p in message.walk() if p.get_content_type() == "text/plain"]
    text = parts[0].get_payload(decode=True).decode()  # type: ignore[union-attr]
    assert "ERROR <script>x</script> \\x1b[2J gone" in text  # the ESC shown, never sent
    assert "\x1b" not in text and "alert id " in text


async def test_a_destination_down_for_30_s_gets_every_alert_once_it_is_back(
    tmp_path: Path, containers: Containers
) -> None:
    """Nothing listens at the webhook's address for 30 s (each post is refused, and tried
    again after a pause that doubles); then a receiver comes up there: every alert arrives,
    each once, none dropped."""
    import anyio
    from aiohttp import web

    port = free_port()
    got: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.Response:
        got.append(await request.json())
        return web.Response(text="ok")

    section = {
        "destinations": [{"name": "hook", "url": f"http://127.0.0.1:{port}/hook"}],
        "rules": [{"name": "errors", "match": "ERROR", "names": [f"{containers.prefix}-*"],
                   "cooldown": "0s", "destinations": ["hook"]}],
    }  # fmt: skip
    settings = replace(agent_settings(tmp_path), alerts=parse_alerts(section))
    async with running_agent(settings) as agent:
        containers.run("outage", "for i in 1 2 3; do echo ERROR $i; done")
        await eventually(lambda: agent.alerts is not None and bool(agent.alerts.failed), limit=60)
        await anyio.sleep(30)  # the outage itself: its length is the point, not a wait
        app = web.Application()
        app.router.add_post("/hook", handle)
        runner = web.AppRunner(app, shutdown_timeout=0.5)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            await eventually(lambda: len(got) == 3, limit=120)
        finally:
            await runner.cleanup()
        assert agent.alerts is not None and agent.alerts.failed["hook"] >= 3
    assert sorted(b["line"] for b in got) == ["ERROR 1", "ERROR 2", "ERROR 3"]
    assert len({b["id"] for b in got}) == 3
