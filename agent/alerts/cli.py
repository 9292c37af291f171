"""`logagent alerts ls | history | test RULE`: the rules, what they sent, and a test post.

`ls` and `history` read the store only; `test` posts a notification marked as a test to the
rule's destinations, now, outside the outbox (it proves the URL and the receiver, and is
not an alert: nothing about it is stored).
"""

from __future__ import annotations

import json
import sys
import time
from typing import TextIO

import aiohttp

from agent import render
from agent.alerts.delivery import SEND_TIMEOUT, deliver
from agent.alerts.rules import AlertSettings
from agent.commands import UsageError, reading
from agent.storage import outbox
from agent.timestamps import format_timestamp


async def alerts(
    db_url: str,
    settings: AlertSettings,
    action: str,
    rule: str | None,
    as_json: bool,
    out: TextIO = sys.stdout,
) -> int:
    if action == "test":
        return await _test(settings, rule, out)
    async with reading(db_url) as db:
        if action == "ls":
            counts = await outbox.per_rule(db)
            for r in settings.rules:
                sent, pending, last = counts.get(r.name, (0, 0, None))
                what = r.describe(quoted=True)
                if as_json:
                    shown = {
                        "rule": r.name,
                        "watches": what,
                        "sent": sent,
                        "pending": pending,
                        "last": _when(last),
                        "destinations": list(r.destinations),
                    }
                    out.write(json.dumps(shown) + "\n")
                else:
                    out.write(
                        f"{r.name}\t{render.terminal_safe(what)}\tsent {sent}\t"
                        f"pending {pending}\tlast {_when(last) or '-'}\n"
                    )
            return 0
        for a in await outbox.history(db, rule=rule):
            body = json.loads(a.payload)
            if as_json:
                body.update(
                    destination=a.destination,
                    status=a.status,
                    attempts=a.attempts,
                    error=a.last_error,
                )
                out.write(json.dumps(body) + "\n")
                continue
            line = render.terminal_safe(str(body.get("line", "")))
            name = render.terminal_safe(str(body.get("container_name", "")))
            out.write(f"{_when(a.created_ns)}\t{a.rule}\t{name}\t{a.destination}\t{a.status}"
                      f"\t{line}\n")  # fmt: skip
    return 0


async def _test(settings: AlertSettings, rule: str | None, out: TextIO) -> int:
    found = next((r for r in settings.rules if r.name == rule), None)
    if found is None:
        raise UsageError(f"alerts test: no rule named {rule!r} in the config")
    dests = {d.name: d for d in settings.destinations}
    failed = 0
    body = json.dumps({"id": f"test-{time.time_ns()}", "rule": found.name, "test": True,
                       "line": f"a test of rule {found.name} from logagent"})  # fmt: skip
    async with aiohttp.ClientSession(timeout=SEND_TIMEOUT) as session:
        for name in found.destinations:
            ok, said = await deliver(session, dests[name], body, None)
            failed += not ok
            out.write(f"{name}: {'delivered' if ok else 'failed'} ({said})\n")
    return 1 if failed else 0


def _when(ns: object) -> str | None:
    return format_timestamp(int(ns)) if isinstance(ns, int) and ns else None
