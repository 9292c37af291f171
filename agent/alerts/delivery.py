"""One alert to one destination: a webhook's POST, or a message through Apprise.

Each says whether the destination took it and, if not, why in words that hold no secret
(never the URL, a header's value or what Apprise logs: its log names the service's URL,
so it is kept quiet and we say which service failed).
"""

from __future__ import annotations

import json
import re
from typing import Any

import aiohttp
import anyio

from agent.alerts.destinations import APPRISE, Destination, fill, quiet_apprise
from agent.render import terminal_safe
from agent.timestamps import format_timestamp

REPLY_LIMIT = 64 * 1024  # of a destination's answer, read at most
SEND_TIMEOUT = aiohttp.ClientTimeout(total=10)
APPRISE_TIMEOUT_S = 30.0  # Apprise's own per-service timeouts are shorter (4 s, 4 s)
# Where a chat service reads a mention or a masked link in the text of a message: `@everyone`,
# `@here`, `@room`, `<@id>`, `<@&role>`, `<#channel>`, `<!channel>`, `[text](url)`. Apprise
# passes Discord's text through as it is (2.3.0: a review's line pinged a whole server).
_SYNTAX = re.compile(r"[@<]|\](?=\()")
_ZWSP = "\u200b"  # a zero-width space after each: shown the same, read as plain text
# Apprise's services that read no mention or link syntax in a message's text (mail, ntfy's
# plain text, the generic JSON/XML/form posts): their text is left as the line was, an
# address in it copied whole. Every other (chat: Discord, Slack, Teams, Matrix, …) gets it.
PLAIN_SCHEMES = frozenset(
    {"mailto", "mailtos", "ntfy", "ntfys", "json", "jsons", "xml", "xmls", "form", "forms"}
)


async def deliver(
    session: aiohttp.ClientSession, dest: Destination, body: str, key: str | None
) -> tuple[bool, str]:
    """Send the alert (its JSON payload) to `dest`; whether it was taken, and what came."""
    if dest.kind == APPRISE:
        return await notify(dest, json.loads(body))
    if dest.template is not None:  # a message for people (Slack's, Mattermost's): as for chat
        alert = with_time(json.loads(body))
        for field in ("line", "container_name"):
            alert[field] = _for_chat(str(alert.get(field, "")))
        body = json.dumps(fill(dest.template, alert))
    return await post(session, dest.url, body, key, dest.headers)


async def post(
    session: aiohttp.ClientSession,
    url: str,
    body: str,
    key: str | None = None,
    headers: tuple[tuple[str, str], ...] = (),
) -> tuple[bool, str]:
    """POST a JSON body (with its `Idempotency-Key`); whether a 2xx came, and what did
    (never the URL: it is a secret). The answer is read up to REPLY_LIMIT."""
    sent = {**dict(headers), "Content-Type": "application/json"}
    if key is not None:
        sent["Idempotency-Key"] = key
    try:
        async with session.post(url, data=body, headers=sent, allow_redirects=False) as reply:
            await reply.content.read(REPLY_LIMIT)
            return 200 <= reply.status < 300, f"HTTP {reply.status}"
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return False, type(exc).__name__


async def notify(dest: Destination, alert: dict[str, Any]) -> tuple[bool, str]:
    """The alert as a title and a text through Apprise, in a worker thread (its senders
    block); Apprise escapes the text for the service (Markdown, HTML) as plain text."""
    import apprise  # only where a destination is one of its

    quiet_apprise()
    sender = apprise.Apprise()
    sender.add(dest.url)
    title, text = as_text(alert, chat=dest.url.partition(":")[0].lower() not in PLAIN_SCHEMES)
    service = str(getattr(sender[0], "service_name", "Apprise")) if len(sender) else "Apprise"

    def send() -> bool:
        return bool(sender.notify(body=text, title=title, body_format=apprise.NotifyFormat.TEXT))

    with anyio.move_on_after(APPRISE_TIMEOUT_S):
        ok = await anyio.to_thread.run_sync(send, abandon_on_cancel=True)
        return ok, f"{service}: {'sent' if ok else 'not sent'}"
    return False, f"{service}: no answer in {APPRISE_TIMEOUT_S:.0f} s"


def with_time(alert: dict[str, Any]) -> dict[str, Any]:
    return {**alert, "time": format_timestamp(int(alert.get("time_ns") or 0))}


def as_text(alert: dict[str, Any], *, chat: bool = True) -> tuple[str, str]:
    """A title and a body for a person: every field from the container is text, with
    control characters shown as escapes (a hostile line cannot drive a terminal or a
    notification's layout), and for a chat service no mention or masked link it would act
    on (`shown`)."""
    a = with_time(alert)
    shown = _for_chat if chat else terminal_safe
    name = shown(str(a.get("container_name", "")))
    if a.get("test"):
        return f"logagent: a test of rule {a.get('rule')}", shown(str(a.get("line", "")))
    title = f"logagent: {a.get('rule')} on {name}"
    if a.get("kind") == "summary":
        title += " (summary)"
    lines = [shown(str(a.get("line", "")))]
    lines.append(f"{a.get('count')} match(es) in the window, {a.get('more')} more held back")
    lines.append(f"container {name} ({str(a.get('container_id', ''))[:12]}) on "
                 f"{shown(str(a.get('host', '')))} at {a['time']}")  # fmt: skip
    for part in ("before", "after"):
        context = a.get(part) or []
        if context:
            lines.append(f"-- {part}:")
            lines += [f"{c['time']} {shown(str(c['line']))}" for c in context]
    lines.append(f"alert id {a.get('id')}")
    return title, "\n".join(lines)


def _for_chat(text: str) -> str:
    """Text from a container as a chat service's message shows it: control and invisible
    characters as escapes (terminal_safe: a zero-width space of its own among them), then a
    zero-width space after each `@` and `<` and between `](`, so that no chat service reads
    a mention or a masked link in it."""
    return _SYNTAX.sub(lambda m: m.group() + _ZWSP, terminal_safe(text))
