"""What every answer of the viewer carries, and a stored row as the page reads it."""

from __future__ import annotations

from typing import Any

from agent.storage.reader import StoredRow

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def row_json(row: StoredRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "host": row.host,
        "cid": row.container_id,
        "name": row.container_name,
        "stream": row.stream,
        "ns": str(row.timestamp_ns),  # text: a JavaScript number holds 53 bits, not 63
        "ts": row.rfc3339,
        "msg": row.message,
        "flags": row.flags,
        "level": row.level,
    }
