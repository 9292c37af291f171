"""Pure formatting of stored rows for a terminal or for JSON lines: the CLI's escaping edge."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from json.encoder import encode_basestring

from agent.batch import FLAG_CONTINUED, FLAG_TRUNCATED
from agent.level_names import NAMES
from agent.storage.life import LifeView
from agent.storage.reader import StoredRow
from agent.timestamps import format_timestamp

# What a log line must not do to whoever reads it: C0 controls but tab, DEL and C1 (a container
# can write "\x1b]..." to attack a terminal), and the invisible format characters (Unicode
# category Cf: bidi overrides and isolates, zero-width characters, the BOM, tags) and line or
# paragraph separators (Zl, Zp), which make text read other than it is. Cf as of Unicode 15:
# tests/unit/test_render.py checks this list against unicodedata.
_INVISIBLE = (
    "\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f"
    "\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd"
    "\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001"
    "\U000e0020-\U000e007f"
)
_TERMINAL = re.compile(f"[\x00-\x08\x0a-\x1f\x7f-\x9f\\\\{_INVISIBLE}]")
_TERMINAL_ASCII = re.compile("[\x00-\x08\x0a-\x1f\x7f\\\\]")  # all an ASCII line can hold
# In JSON, what encode_basestring leaves raw (it escapes only C0, quote and backslash).
_JSON = re.compile(f"[\x7f-\x9f{_INVISIBLE}]")


def _escape_char(m: re.Match[str]) -> str:
    ch = m.group()
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


_NAMED = {"\n": "\\n", "\r": "\\r", "\\": "\\\\"}


def terminal_safe(text: str) -> str:
    """Shown as text: every dangerous or invisible character as an escape; a backslash
    doubled, so that a literal "\\x1b" cannot pass for an escaped ESC."""
    found = _TERMINAL_ASCII if text.isascii() else _TERMINAL  # the short class is 10x faster
    return found.sub(_escape_char, text) if found.search(text) else text


def _json_char(m: re.Match[str]) -> str:
    code = ord(m.group())
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000  # JSON escapes astral characters as a surrogate pair
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def json_string(text: str) -> str:
    """A JSON string literal with nothing a terminal or a viewer would act on left raw."""
    quoted = encode_basestring(text)
    if quoted.isascii():  # then only DEL is left to escape
        return quoted.replace("\x7f", "\\u007f") if "\x7f" in quoted else quoted
    return _JSON.sub(_json_char, quoted) if _JSON.search(quoted) else quoted


def plain_line(
    row: StoredRow, *, timestamps: bool, prefix: bool, raw: bool, hosts: bool = False
) -> str:
    """A line as text: with `prefix` its container's name before it, with `hosts` (a
    selection of several hosts' containers: reader.several_hosts) `host/name`."""
    message = row.message if raw else terminal_safe(row.message)
    name = f"{terminal_safe(row.host)}/{row.container_name}" if hosts else row.container_name
    head = f"{name} | " if prefix or hosts else ""
    stamp = f"{row.rfc3339} " if timestamps else ""
    return f"{head}{stamp}{message}\n"


def rows_text(
    rows: list[StoredRow],
    *,
    matches: Callable[[str], bool] | None,
    as_json: bool,
    timestamps: bool = False,
    prefix: bool = False,
    raw: bool = False,
    hosts: bool = False,
) -> str:
    """Rows as `logagent logs` prints them (and the viewer's download, the same): those the
    matcher takes, as JSON lines or as text."""
    text = []
    for row in rows:
        if matches is not None and not matches(row.message):
            continue
        if as_json:
            text.append(json_line(row))
        else:
            text.append(plain_line(row, timestamps=timestamps, prefix=prefix, raw=raw,
                                   hosts=hosts))  # fmt: skip
    return "".join(text)


def json_line(row: StoredRow) -> str:
    """One JSON object: host, container_id, container_name, stream, timestamp, message, and
    the piece flags `truncated` / `continued` and the `level` when set."""
    out = (
        f'{{"host": {json_string(row.host)}, '
        f'"container_id": "{row.container_id}", '
        f'"container_name": {json_string(row.container_name)}, '
        f'"stream": "{row.stream}", "timestamp": "{row.rfc3339}", '
        f'"message": {json_string(row.message)}'
    )
    # A line over max_line_bytes is stored in pieces: "truncated" means exactly "this line
    # goes on in the next row of this stream", "continued" that this row goes on the last.
    if row.flags & FLAG_TRUNCATED:
        out += ', "truncated": true'
    if row.flags & FLAG_CONTINUED:
        out += ', "continued": true'
    if row.level is not None and row.level in NAMES:
        out += f', "level": "{NAMES[row.level]}"'
    return out + "}\n"


def life_text(event: LifeView) -> str:
    """`die (exit code 3)`, `kill (15)`, `health_status (unhealthy)`, `start`."""
    if event.exit_code is not None:
        return f"{event.action} (exit code {event.exit_code})"
    if event.detail is not None:
        return f"{event.action} ({terminal_safe(event.detail)})"
    return event.action


def event_line(
    event: LifeView, *, as_json: bool, timestamps: bool, prefix: bool, hosts: bool = False
) -> str:
    """A container's event among its lines (`logs --events`). In text, marked `--- `; a line
    can print that too, so `--json` is the form to parse: there an event has "event" and
    no "stream"."""
    if as_json:
        fields = {
            "event": event.action,
            "host": event.host,
            "container_id": event.container_id,
            "container_name": event.container_name,
            "timestamp": event.time,
            "exit_code": event.exit_code,
            "detail": event.detail,
        }
        body = ", ".join(
            f"{json_string(k)}: {json_string(v) if isinstance(v, str) else json.dumps(v)}"
            for k, v in fields.items()
        )
        return "{" + body + "}\n"
    name = f"{event.host}/{event.container_name}" if hosts else event.container_name
    head = f"{terminal_safe(name)} | " if prefix or hosts else ""
    stamp = f"{event.time} " if timestamps else ""
    return f"{head}{stamp}--- {life_text(event)}\n"


def format_ns(ns: int | None) -> str | None:
    return format_timestamp(ns) if ns else None
