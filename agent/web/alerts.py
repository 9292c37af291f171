"""Pure: the alerts page's answer. The configured rules, as what they watch and where they
send (by name: a destination's URL is a secret, and is never in an answer), and the outbox's
history, one entry per alert with each destination's delivery and a link to its lines.

A payload is read as data from the store: a field of the wrong type is left out, never
trusted, and every text in it is escaped by the page that shows it (static/app.js).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from agent.alerts.rules import AlertSettings
from agent.storage.outbox import Sent
from agent.timestamps import NS_RANGE, format_timestamp

# The lines an alert links to: from a while before it (what led to it) to a little after.
CONTEXT_BEFORE_NS = 5 * 60 * 10**9
CONTEXT_AFTER_NS = 30 * 10**9

PerRule = dict[str, tuple[int, int, int | None]]  # outbox.per_rule: sent, pending, last


def rules_json(settings: AlertSettings, counts: PerRule) -> list[dict[str, Any]]:
    """Each configured rule, and what the outbox holds of it (every host of the store)."""
    out = []
    for r in settings.rules:
        sent, pending, last = counts.get(r.name, (0, 0, None))
        out.append(
            {
                **r.shown(),
                "sent": sent,
                "pending": pending,
                "last": _when(last),
            }
        )
    return out


def history_json(rows: list[Sent]) -> list[dict[str, Any]]:
    """The outbox's rows (one per alert and destination), newest first, as one entry per
    alert holding its deliveries."""
    alerts: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = alerts.get(row.alert_id)
        if entry is None:
            entry = alerts[row.alert_id] = _alert(row)
        entry["deliveries"].append(
            {
                "destination": row.destination,
                "status": row.status,
                "attempts": row.attempts,
                "error": row.last_error,
            }
        )
    return list(alerts.values())


def _alert(row: Sent) -> dict[str, Any]:
    body = _payload(row.payload)
    cid, ns, ref = _text(body, "container_id"), _int(body, "time_ns"), _int(body, "ref")
    kind, first = _text(body, "kind"), _int(body, "first_ns")  # a summary: from its first
    return {
        "id": row.alert_id,
        "rule": row.rule,
        "host": row.host,
        "cid": cid,
        "name": _text(body, "container_name"),
        "ns": None if ns is None else str(ns),  # text: a JavaScript number holds 53 bits
        "ts": _when(ns),
        "first": _when(first),
        "created": _when(row.created_ns),
        "kind": kind,
        "ref": ref,
        "line": _text(body, "line"),
        "count": _int(body, "count"),
        "more": _int(body, "more"),
        "lines": context_link(cid, first or ns, ns, ref if kind == "line" else None),
        "deliveries": [],
    }


def context_link(
    container_id: str, first_ns: int | None, last_ns: int | None, row_id: int | None = None
) -> str | None:
    """The viewer's own URL for an alert's lines: a line's alert opens its container at the
    line (`?c=ID&at=ROW`: marked, with the lines around it); an event or a summary opens the
    container from a while before `first_ns` to a little after `last_ns` (`c`, `since`,
    `until`)."""
    if not container_id or first_ns is None or last_ns is None:
        return None
    if row_id is not None:
        return "/?" + urlencode([("c", container_id), ("at", str(row_id))])
    since = max(min(first_ns, last_ns) - CONTEXT_BEFORE_NS, NS_RANGE.start)
    until = min(last_ns + CONTEXT_AFTER_NS, NS_RANGE.stop - 1)
    query = [("c", container_id), ("since", format_timestamp(since)),
             ("until", format_timestamp(until))]  # fmt: skip
    return "/?" + urlencode(query)


def _payload(text: str) -> dict[str, Any]:
    try:
        body = json.loads(text)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _text(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    return value if isinstance(value, str) else ""


def _int(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    ok = isinstance(value, int) and not isinstance(value, bool) and value in NS_RANGE
    return value if ok else None


def _when(ns: int | None) -> str | None:
    return format_timestamp(ns) if ns else None
