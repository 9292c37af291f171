"""Pure formatting of stored rows for a terminal or for JSON lines, and time arguments."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from json.encoder import encode_basestring
from typing import Any

from agent.docker.timestamps import TimestampError, format_timestamp, parse_timestamp
from agent.durations import parse_duration
from agent.entry import FLAG_CONTINUED, FLAG_TRUNCATED

# A stored row as the reader returns it.
ID, HOST, CONTAINER_ID, CONTAINER_NAME, STREAM, TIMESTAMP_NS, TIMESTAMP, MESSAGE, FLAGS = range(9)
Row = Sequence[Any]

# C0 controls but tab, DEL, and C1 controls: a container can write "\x1b]..." to attack the
# terminal of whoever reads its logs. Shown escaped unless --raw.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def _escape_char(m: re.Match[str]) -> str:
    ch = m.group()
    return {"\n": "\\n", "\r": "\\r"}.get(ch) or f"\\x{ord(ch):02x}"


def terminal_safe(text: str) -> str:
    return _CONTROL.sub(_escape_char, text) if _CONTROL.search(text) else text


def plain_line(row: Row, *, timestamps: bool, prefix: bool, raw: bool) -> str:
    message = str(row[MESSAGE])
    if not raw:
        message = terminal_safe(message)
    head = f"{row[CONTAINER_NAME]} | " if prefix else ""
    stamp = f"{row[TIMESTAMP]} " if timestamps else ""
    return f"{head}{stamp}{message}\n"


def json_line(row: Row) -> str:
    """One JSON object: host, container_id, container_name, stream, timestamp, message."""
    out = (
        f'{{"host": {encode_basestring(row[HOST])}, '
        f'"container_id": "{row[CONTAINER_ID]}", '
        f'"container_name": {encode_basestring(row[CONTAINER_NAME])}, '
        f'"stream": "{row[STREAM]}", "timestamp": "{row[TIMESTAMP]}", '
        f'"message": {encode_basestring(row[MESSAGE])}'
    )
    if int(row[FLAGS]) & (FLAG_TRUNCATED | FLAG_CONTINUED):
        out += ', "truncated": true'
    return out + "}\n"


def format_ns(ns: int | None) -> str | None:
    return format_timestamp(ns) if ns else None


def parse_when(text: str, *, now_ns: int | None = None) -> int:
    """--since/--until: an RFC 3339 time, a duration back from now (10m, 2h, 3d, 1h30m),
    or Unix seconds; as nanoseconds since the epoch."""
    text = text.strip()
    now = time.time_ns() if now_ns is None else now_ns
    try:
        return now - int(parse_duration(text) * 1_000_000_000)
    except ValueError:
        pass
    try:
        return parse_timestamp(text.encode())
    except TimestampError:
        pass
    try:
        return int(float(text) * 1_000_000_000)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an RFC 3339 time, a duration (10m, 2h, 3d) nor Unix seconds"
        ) from None
