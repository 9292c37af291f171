"""Pure: a stored line as each destination's record, carrying a stable id.

The id (`host:container id (12):row id`) is the same every time a row is sent, so a
receiver can drop the repeats that at-least-once delivery makes after a crash (the last batch
not yet acknowledged is sent again).

syslog is RFC 5424 in RFC 6587's octet-counted framing, as Docker's own syslog driver
sends it (facility daemon; stderr at severity err, stdout at info, unless the line has a
level): HOSTNAME the host, APP-NAME the container's name, PROCID its short id, MSGID the
stream, and one structured-data element `logagent@32473` (RFC 5612's example enterprise
number) with the id, the container's full name and Docker's own timestamp — the header's
has microseconds at most (RFC 5424), Docker's has nanoseconds. MSG is the line as stored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from json.encoder import encode_basestring as _quote  # dumps' own escaping (C)

from agent.batch import FLAG_CONTINUED, FLAG_TRUNCATED
from agent.level_names import DEBUG, ERROR, FATAL, INFO, NAMES, TRACE, WARN
from agent.storage.reader import StoredRow

SD_ID = "logagent@32473"
FACILITY_DAEMON = 3
# syslog severities (RFC 5424 6.2.1) of our levels
SEVERITY = {TRACE: 7, DEBUG: 7, INFO: 6, WARN: 4, ERROR: 3, FATAL: 2}
_STREAM_SEVERITY = {"stderr": 3}  # a line without a level: Docker's syslog driver's choice


Ids = Callable[[StoredRow], str]  # a row's stable id (the forwarder's: `ids_for`)


def stable_id(row: StoredRow, session: int = 0) -> str:
    """`host:container (12):row`, and the writer session the row was written in when known
    (`host:container:session:row`): after a failover a lost row's id may be taken again by
    a new line, which must not look like a repeat to a receiver dropping them."""
    if session:
        return f"{row.host}:{row.container_id[:12]}:{session:x}:{row.id}"
    return f"{row.host}:{row.container_id[:12]}:{row.id}"


def ids_for(sessions: Sequence[tuple[int, int]]) -> Ids:
    """Stable ids by the host's writer sessions (epoch, last id when it began; newest last):
    a row belongs to the newest session that began below it."""
    known = list(reversed(sessions))
    prefixes: dict[tuple[str, str, int], str] = {}  # a container's ids but the row's

    def uid(row: StoredRow) -> str:
        epoch = 0
        for session, began in known:
            if began < row.id:
                epoch = session
                break
        prefix = prefixes.get((row.host, row.container_id, epoch))
        if prefix is None:
            whole = stable_id(row, epoch)
            prefix = prefixes[(row.host, row.container_id, epoch)] = whole[: -len(str(row.id))]
        return prefix + str(row.id)

    return uid


def ndjson_lines(rows: Sequence[StoredRow], ids: Ids = stable_id) -> bytes:
    """Each row as one JSON object and a newline: the id, where the line came from,
    Docker's time (text and nanoseconds), the level, the piece flags, the message — what
    `json.dumps(record, ensure_ascii=False)` writes, a string escaped at a time (the
    strings of a container once a batch): a fifth of dumps' CPU a line."""
    quoted: dict[tuple[str, str, str], str] = {}  # `"host": …, …, "container_name": …`
    out: list[str] = []
    for row in rows:
        key = (row.host, row.container_id, row.container_name)
        where = quoted.get(key)
        if where is None:
            where = quoted[key] = (
                f'"host": {_quote(row.host)}, "container_id": {_quote(row.container_id)}, '
                f'"container_name": {_quote(row.container_name)}'
            )
        tail = "}\n"
        if row.flags & (FLAG_TRUNCATED | FLAG_CONTINUED) or row.level is not None:
            tail = _tail(row)
        out.append(
            f'{{"id": {_quote(ids(row))}, {where}, "stream": {_quote(row.stream)}, '
            f'"timestamp": {_quote(row.rfc3339)}, "time_ns": {row.timestamp_ns}, '
            f'"message": {_quote(row.message)}{tail}'
        )
    return "".join(out).encode("utf-8", "surrogatepass")


def _tail(row: StoredRow) -> str:
    tail = ""
    if row.level is not None and row.level in NAMES:
        tail += f', "level": {_quote(NAMES[row.level])}'
    if row.flags & FLAG_TRUNCATED:
        tail += ', "truncated": true'
    if row.flags & FLAG_CONTINUED:
        tail += ', "continued": true'
    return tail + "}\n"


def syslog_frame(row: StoredRow, ids: Ids, limit: int) -> bytes:
    """One RFC 5424 message, octet-counted (`LEN SP MSG`), of `limit` bytes at most (the
    destination's `max_message_bytes`): a receiver closes the connection on a frame past
    its own (syslog-ng), or splits it (rsyslog), so a longer line is cut and says so
    (`truncated="true"`)."""
    severity = SEVERITY.get(row.level or 0, _STREAM_SEVERITY.get(row.stream, 6))
    pri = FACILITY_DAEMON * 8 + severity
    params = [("id", ids(row)), ("container", row.container_name), ("time", row.rfc3339)]
    if row.level is not None and row.level in NAMES:
        params.append(("level", NAMES[row.level]))
    sd = f"[{SD_ID} " + " ".join(f'{k}="{_sd_value(v)}"' for k, v in params) + "]"
    head = (
        f"<{pri}>1 {_micro(row.timestamp_ns)} {_ascii(row.host, 255)} "
        f"{_ascii(row.container_name, 48)} {row.container_id[:12] or '-'} "
        f"{_ascii(row.stream, 32)} {sd} "
    )
    message = (head + row.message).encode("utf-8", "surrogatepass")
    if len(message) > limit:
        head = head.replace(f"{SD_ID} ", f'{SD_ID} truncated="true" ', 1)
        body = row.message.encode("utf-8", "surrogatepass")
        room = max(limit - len(head.encode()), 0)
        message = head.encode() + body[:room].decode("utf-8", "ignore").encode()
        # A head alone past a small limit (a long name, 480 bytes): cut too, never sent
        # longer than the receiver takes (its rest would be read as a message of its own).
        message = message[:limit].decode("utf-8", "ignore").encode()
    return f"{len(message)} ".encode() + message


def _micro(ns: int) -> str:
    """RFC 5424's TIMESTAMP: RFC 3339 in UTC, six fractional digits at most."""
    seconds, rest = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{rest // 1000:06d}Z"


def _ascii(text: str, limit: int) -> str:
    """A header field: printable US-ASCII without spaces (others become '_'), bounded; an
    empty one is the NILVALUE."""
    kept = "".join(c if "!" <= c <= "~" else "_" for c in text[:limit])
    return kept or "-"


def _sd_value(text: str) -> str:
    """An SD-PARAM's value: '"', '\\' and ']' escaped (RFC 5424 6.3.3)."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")
