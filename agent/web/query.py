"""What a viewer URL asks for, as a `ViewQuery`: every parameter bounded and checked before
a response begins, so that anything else is a `BadQuery` (a 400 with the reason), never a
500 or a cut body."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
from tortoise.backends.base.client import BaseDBAsyncClient

from agent import where as fields
from agent.grep import MAX_SEARCH_PROGRAM
from agent.level_names import level_of_word
from agent.storage import search_index
from agent.storage.reader import (
    LogFilter,
    StoredRow,
    resolve_containers,
    rows_by_id,
    select_rows,
    service_containers,
    where_matched,
)
from agent.storage.sql import Marks
from agent.when import parse_when

# Bounds of what a URL may ask (aiohttp caps the request line at 8 KiB besides).
MAX_REFS = 100  # containers named in one view
MAX_SERVICE = 500  # containers of one service in a view: a page reads each one's index range
MAX_TEXT = 255  # characters of a container reference or a host: the columns' width
MAX_SEARCH = 1000  # characters of a search
MAX_WHEN = 64  # characters of a since or until
MAX_RULE = 64  # characters of a rule's name (agent/alerts/rules.py)
MAX_ALERTS = 1000  # outbox rows on the alerts page
MAX_BUCKETS = 500  # a histogram's bars: a screen's width of them
_INT64 = range(-(2**63), 2**63)


class BadQuery(ValueError):
    """A query parameter the viewer cannot use: a 400 with the reason."""


@dataclass(frozen=True)
class ViewQuery:
    """What the page asks for, from its URL: the filter, and a search on top of it."""

    flt: LogFilter
    # A line test on the rows read: the search (SQLite: RE2 here; PostgreSQL: in SQL, so
    # None) and the `where` conditions on a JSON or logfmt line's fields (agent/where.py).
    search: Callable[[str], bool] | None
    prefix: bool  # several containers: the text download names each line's container
    at: StoredRow | None = None  # `at`: the line the view opens at, marked
    texts: bool = False  # a search or `where`: lines narrowed further than counts know


async def parse_query(db: BaseDBAsyncClient, params: Any) -> ViewQuery:
    """The view a URL asks for. Every parameter is bounded here, before a response begins:
    anything else is a BadQuery (a 400 with the reason), never a 500 or a cut body."""
    refs = params.getall("c", [])
    if len(refs) > MAX_REFS:
        raise BadQuery(f"c: {len(refs)} containers, more than the {MAX_REFS} a view shows")
    for ref in refs:
        text_param("c", ref, MAX_TEXT)
    service = text_param("service", params.get("service") or "", MAX_TEXT) or None
    try:
        ids = await resolve_containers(db, refs) if refs else []
        if service is not None:  # as `logagent logs --service`: after the named ones
            ids += [c for c in await service_containers(db, service) if c not in ids]
    except LookupError as exc:
        raise BadQuery(str(exc)) from None
    if len(ids) > MAX_SERVICE:
        raise BadQuery(f"service: {len(ids)} containers, more than the {MAX_SERVICE} a view shows")
    at = await _at(db, params, ids)
    if at is not None and not ids:  # a line's link alone: its container
        ids = [at.container_id]
    since, until = _when(params, "since"), _when(params, "until")
    stream = params.get("stream") or ""
    if stream and stream not in ("stdout", "stderr", "tty"):
        raise BadQuery(f"stream: {stream[:40]!r} is not stdout, stderr or tty")
    level = None
    if word := params.get("level"):
        # ASCII only: level_of_word reads "²" as a number (str.isdigit), which int() refuses
        level = level_of_word(word) if word.isascii() and len(word) <= 16 else None
        if level is None:
            raise BadQuery(f"level: {word[:40]!r} is not a level")
    text = text_param("q", params.get("q") or "", MAX_SEARCH) or None
    expression = text if text is None or params.get("re") == "1" else _literal(text)
    try:
        # a bound for a regex (a literal's program is a plain chain, linear whatever it is:
        # a pasted line of 1,000 characters is a search, not an attack)
        bound = MAX_SEARCH_PROGRAM if params.get("re") == "1" else None
        pattern, search = await where_matched(db, expression, "search", bound)
    except ValueError as exc:
        raise BadQuery(str(exc)) from None
    conditions = _conditions(params)
    flt = LogFilter(
        tuple(ids),
        since,
        until,
        (stream,) if stream else (),
        text_param("host", params.get("host") or "", MAX_TEXT) or None,
        pattern,
        level,
        fields.leaves(conditions),  # the fields' names: a first cut in SQL, as the CLI's
    )
    if search is not None and expression is not None:  # SQLite: its search index narrows
        flt = await search_index.narrowed(db, flt, expression)  # as `logagent logs --grep`
    if conditions:  # judged on the rows read, as `logagent logs --where`: both backends alike
        search = fields.both(search, fields.checker(conditions))
    if at is not None and not await _shown(db, flt, search, at):
        raise BadQuery(f"at: line {at.id} is not among this view's lines (its host, stream, "
                       "level, time or search leaves it out)")  # fmt: skip
    return ViewQuery(flt, search, len(ids) != 1, at, bool(expression or conditions))


async def _shown(
    db: BaseDBAsyncClient, flt: LogFilter, search: Callable[[str], bool] | None, row: StoredRow
) -> bool:
    """Whether the view's filter and search give this row (read again through them): a link
    to a line the view leaves out opened the page elsewhere, with nothing marked."""

    def this(m: Marks) -> tuple[str, list[Any]]:
        return f"l.id = {m()}", [row.id]

    return bool(await matching(search, await select_rows(db, flt, this, "l.id", 1)))


def _conditions(params: Any) -> tuple[fields.Condition, ...]:
    """`where`: conditions on a JSON or logfmt line's fields, as `logagent logs --where`."""
    text = text_param("where", params.get("where") or "", fields.MAX_TEXT).strip()
    if not text:
        return ()
    try:
        return fields.parse(text, "where")
    except ValueError as exc:
        raise BadQuery(str(exc)) from None


async def _at(db: BaseDBAsyncClient, params: Any, ids: list[str]) -> StoredRow | None:
    """`at`: a stored line's row id, which must be one of the view's containers' lines."""
    text = params.get("at")
    if not text:
        return None
    row_id = _number("at", text)
    found = await rows_by_id(db, [row_id]) if row_id > 0 else []
    if not found:
        raise BadQuery(f"at: no line {row_id} is stored (retention may have removed it)")
    if ids and found[0].container_id not in ids:
        raise BadQuery(f"at: line {row_id} is not one of this view's containers'")
    return found[0]


@dataclass(frozen=True)
class HistogramQuery:
    """What a histogram asks for beside the view: how many bars at most, stacked by what."""

    buckets: int
    by: str  # "stream" or "level"


def parse_histogram(params: Any) -> HistogramQuery:
    """`buckets` (60 by default, at most MAX_BUCKETS) and `by` (stream or level)."""
    by = params.get("by") or "stream"
    if by not in ("stream", "level"):
        raise BadQuery(f"by: {by[:40]!r} is not stream or level")
    return HistogramQuery(int_param(params, "buckets", 60, 1, MAX_BUCKETS), by)


@dataclass(frozen=True)
class AlertsQuery:
    """What the alerts page asks for: one rule's history or every rule's, and how much."""

    rule: str | None
    limit: int


def parse_alerts_query(params: Any) -> AlertsQuery:
    """`rule` (a name: one no rule has finds nothing) and `limit`, bounded."""
    rule = text_param("rule", params.get("rule") or "", MAX_RULE) or None
    return AlertsQuery(rule, int_param(params, "limit", 100, 1, MAX_ALERTS))


def text_param(key: str, text: str, most: int) -> str:
    """A text parameter, bounded: a NUL is never stored (the writer stores U+FFFD), and
    PostgreSQL refuses one in a query."""
    if len(text) > most:
        raise BadQuery(f"{key}: {len(text)} characters, more than {most}")
    if "\x00" in text:
        raise BadQuery(f"{key}: a NUL character, which no stored value holds")
    return text


def _when(params: Any, key: str) -> int | None:
    text = params.get(key)
    if not text:
        return None
    if not text.isascii() or len(text) > MAX_WHEN:  # float() and re's \d read "١٢" as 12
        raise BadQuery(f"{key}: {text[:40]!r} is not an RFC 3339 time, a duration or seconds")
    try:
        return parse_when(text)
    except ValueError as exc:
        raise BadQuery(f"{key}: {exc}") from None


_META = frozenset(".^$*+?()[]{}|\\")  # what means something to RE2 and to PostgreSQL alike


def _literal(text: str) -> str:
    """A substring as a pattern: its regex characters escaped, nothing else (RE2 refuses a
    backslash before a letter or a non-ASCII character)."""
    return "".join("\\" + ch if ch in _META else ch for ch in text)


def _number(key: str, text: str) -> int:
    """A signed 64-bit integer written in ASCII digits: `str.isdigit` also takes "²" and
    "٣", which int() refuses or reads, and a number past int64 fails in SQL mid-response."""
    digits = text[1:] if text.startswith("-") else text
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 19:
        raise BadQuery(f"{key}: {text[:40]!r} is not a number (ASCII digits, 64-bit)")
    value = int(text)
    if value not in _INT64:
        raise BadQuery(f"{key}: {text[:40]!r} is out of range (64-bit)")
    return value


def int_param(params: Any, key: str, default: int, low: int, high: int) -> int:
    text = params.get(key)
    if not text:
        return default
    value = _number(key, text)
    if not low <= value <= high:
        raise BadQuery(f"{key}: {value} is not between {low} and {high}")
    return value


def before_position(text: str | None) -> tuple[int, int] | None:
    """`before`: "ns:id", a row's nanoseconds (signed) and its id, as /api/lines gave them."""
    if not text:
        return None
    ns, sep, row = text.partition(":")
    if not sep or row.startswith("-"):
        raise BadQuery(f"before: {text[:60]!r} is not ns:id")
    return _number("before", ns), _number("before", row)


@dataclass(frozen=True)
class DownloadQuery:
    """What a download asks for: `format` (text or json lines) and `gzip=1`."""

    as_json: bool
    gzip: bool

    @property
    def filename(self) -> str:
        return ("logs.jsonl" if self.as_json else "logs.log") + (".gz" if self.gzip else "")


def parse_download(params: Any) -> DownloadQuery:
    shape = params.get("format") or "text"
    if shape not in ("text", "json"):
        raise BadQuery(f"format: {shape[:40]!r} is not text or json")
    packed = params.get("gzip") or "0"
    if packed not in ("0", "1"):
        raise BadQuery(f"gzip: {packed[:40]!r} is not 0 or 1")
    return DownloadQuery(shape == "json", packed == "1")


async def matching(search: Callable[[str], bool] | None, rows: list[StoredRow]) -> list[StoredRow]:
    """The rows a view's search takes, matched in a worker thread: RE2 lets go of the GIL,
    so a search that costs milliseconds a line (a long line, a large pattern) keeps one
    thread busy, not the event loop every other viewer and live tail waits on."""
    if search is None or not rows:
        return rows
    return await anyio.to_thread.run_sync(_matched, search, rows)


def _matched(search: Callable[[str], bool], rows: list[StoredRow]) -> list[StoredRow]:
    return [r for r in rows if search(r.message)]
