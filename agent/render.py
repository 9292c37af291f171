"""Pure formatting of stored rows for a terminal or for JSON lines: the CLI's escaping edge."""

from __future__ import annotations

import re
from json.encoder import encode_basestring

from agent.batch import FLAG_CONTINUED, FLAG_TRUNCATED
from agent.storage.reader import StoredRow
from agent.timestamps import format_timestamp

# C0 controls but tab, DEL, and C1 controls: a container can write "\x1b]..." to attack the
# terminal of whoever reads its logs. Shown escaped unless --raw.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def _escape_char(m: re.Match[str]) -> str:
    ch = m.group()
    return {"\n": "\\n", "\r": "\\r"}.get(ch) or f"\\x{ord(ch):02x}"


def terminal_safe(text: str) -> str:
    return _CONTROL.sub(_escape_char, text) if _CONTROL.search(text) else text


def plain_line(row: StoredRow, *, timestamps: bool, prefix: bool, raw: bool) -> str:
    message = row.message if raw else terminal_safe(row.message)
    head = f"{row.container_name} | " if prefix else ""
    stamp = f"{row.timestamp} " if timestamps else ""
    return f"{head}{stamp}{message}\n"


def json_line(row: StoredRow) -> str:
    """One JSON object: host, container_id, container_name, stream, timestamp, message, and
    the piece flags `truncated` / `continued` when set."""
    out = (
        f'{{"host": {encode_basestring(row.host)}, '
        f'"container_id": "{row.container_id}", '
        f'"container_name": {encode_basestring(row.container_name)}, '
        f'"stream": "{row.stream}", "timestamp": "{row.timestamp}", '
        f'"message": {encode_basestring(row.message)}'
    )
    # A line over max_line_bytes is stored in pieces: "truncated" means exactly "this line
    # goes on in the next row of this stream", "continued" that this row goes on the last.
    if row.flags & FLAG_TRUNCATED:
        out += ', "truncated": true'
    if row.flags & FLAG_CONTINUED:
        out += ', "continued": true'
    return out + "}\n"


def format_ns(ns: int | None) -> str | None:
    return format_timestamp(ns) if ns else None
