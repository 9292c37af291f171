"""Pure: stored lines as an OTLP/HTTP logs request (protobuf, gzip).

The bytes are written here from the schema (opentelemetry-proto's `logs.proto`,
`common.proto`, `resource.proto`: field numbers fixed by protobuf's compatibility rules),
not through the official classes: setting ~20 fields a record from Python through upb, and
gzip at level 5, cost ~5 µs a line; writing them and gzip at level 1, ~2.5 (bench/README.md),
and forwarding must cost less than ingest. The official classes (`opentelemetry-proto`)
still read the receiver's answer (`rejected`), and tests/unit/test_forward_otlp.py parses
requests written here with them — bodies at the one- and two-byte varint boundaries and far
past them, every level, several containers — and compares them with what the classes build
from the same rows.

The log data model: Timestamp is Docker's nanoseconds, ObservedTimestamp when the agent sent
it, SeverityNumber/Text from the line's level, Body the line. Per container one resource, by
the semantic conventions: `host.name`, `container.id`, `container.name`,
`container.image.name`, `service.name` (the compose service, else the container's name), and
`docker.compose.project` / `docker.compose.service`; per line `log.iostream` and
`log.record.uid`, the stable id a receiver drops repeats by.
"""

from __future__ import annotations

import gzip
from typing import Any

from agent.forward.records import Ids, stable_id
from agent.level_names import DEBUG, ERROR, FATAL, INFO, NAMES, TRACE, WARN
from agent.render import terminal_safe
from agent.storage.described import StoredContainer
from agent.storage.reader import StoredRow

CONTENT_TYPE = "application/x-protobuf"
# SeverityNumber's first value of each range (TRACE 1-4, DEBUG 5-8, … FATAL 21-24)
SEVERITY = {TRACE: 1, DEBUG: 5, INFO: 9, WARN: 13, ERROR: 17, FATAL: 21}
SCOPE = "logagent"
GZIP_LEVEL = 1  # level 5 took twice the CPU for ~20 % fewer bytes (bench/README.md)

# Tags (field number << 3 | wire type) of the fields written: 0x?A/0x?2 length-delimited
# (2), 0x09/0x59 fixed64 (1), 0x10 varint (0).
_REQUEST_RESOURCE_LOGS = 0x0A  # ExportLogsServiceRequest.resource_logs = 1
_RESOURCE_LOGS_RESOURCE = 0x0A  # ResourceLogs.resource = 1
_RESOURCE_LOGS_SCOPE_LOGS = 0x12  # ResourceLogs.scope_logs = 2
_RESOURCE_ATTRIBUTES = 0x0A  # Resource.attributes = 1
_SCOPE_LOGS_SCOPE = 0x0A  # ScopeLogs.scope = 1
_SCOPE_LOGS_LOG_RECORDS = 0x12  # ScopeLogs.log_records = 2
_SCOPE_NAME = 0x0A  # InstrumentationScope.name = 1
_RECORD_TIME = 0x09  # LogRecord.time_unix_nano = 1 (fixed64)
_RECORD_SEVERITY_NUMBER = 0x10  # LogRecord.severity_number = 2 (enum)
_RECORD_SEVERITY_TEXT = 0x1A  # LogRecord.severity_text = 3
_RECORD_BODY = 0x2A  # LogRecord.body = 5
_RECORD_ATTRIBUTES = 0x32  # LogRecord.attributes = 6
_RECORD_OBSERVED_TIME = 0x59  # LogRecord.observed_time_unix_nano = 11 (fixed64)
_KEY_VALUE_KEY = 0x0A  # KeyValue.key = 1
_KEY_VALUE_VALUE = 0x12  # KeyValue.value = 2
_ANY_VALUE_STRING = 0x0A  # AnyValue.string_value = 1


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = tuple(_varint(n) for n in range(1 << 14))  # the lengths of nearly every field


def _length(n: int) -> bytes:
    return _SMALL[n] if n < 16384 else _varint(n)


def _field(tag: int, payload: bytes) -> bytes:
    return bytes((tag,)) + _length(len(payload)) + payload


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "replace")  # protobuf strings are UTF-8: never a lone surrogate


def _attribute(tag: int, key: str, value: str) -> bytes:
    """A KeyValue with a string value, as the field `tag` of its message."""
    any_value = _field(_ANY_VALUE_STRING, _utf8(value))
    return _field(tag, _field(_KEY_VALUE_KEY, key.encode()) + _field(_KEY_VALUE_VALUE, any_value))


# The tags of the fields written a record at a time, as bytes.
_LOG_RECORD = bytes((_SCOPE_LOGS_LOG_RECORDS,))
_TIME = bytes((_RECORD_TIME,))
_BODY = bytes((_RECORD_BODY,))
_ATTRIBUTE = bytes((_RECORD_ATTRIBUTES,))
_VALUE = bytes((_KEY_VALUE_VALUE,))
_STRING = bytes((_ANY_VALUE_STRING,))
_UID_KEY = _field(_KEY_VALUE_KEY, b"log.record.uid")
_SCOPE = _field(_SCOPE_LOGS_SCOPE, _field(_SCOPE_NAME, SCOPE.encode()))


def otlp_request(
    rows: list[StoredRow],
    described: dict[str, StoredContainer],
    observed_ns: int,
    ids: Ids = stable_id,
) -> bytes:
    """An ExportLogsServiceRequest of these rows, serialized and gzip'ed: one ResourceLogs
    per container, in the order of its first row, its records in the rows' order."""
    observed = bytes((_RECORD_OBSERVED_TIME,)) + observed_ns.to_bytes(8, "little")
    same: dict[tuple[int | None, str], bytes] = {}  # per level and stream: the fields alike
    records: dict[str, tuple[StoredRow, list[bytes]]] = {}
    for row in rows:
        alike = same.get((row.level, row.stream))
        if alike is None:
            alike = same[(row.level, row.stream)] = _alike(observed, row.level, row.stream)
        mine = records.get(row.container_id)
        if mine is None:
            mine = records[row.container_id] = (row, [])
        body = _utf8(row.message)
        n_body = len(body)
        any_value = _length(n_body)
        n_any = 1 + len(any_value) + n_body
        n_any_length = _length(n_any)
        uid = ids(row).encode("utf-8", "replace")
        n_uid = _length(len(uid))
        n_uid_value = 1 + len(n_uid) + len(uid)
        n_uid_value_length = _length(n_uid_value)
        n_kv = len(_UID_KEY) + 1 + len(n_uid_value_length) + n_uid_value
        n_kv_length = _length(n_kv)
        size = (9 + len(alike) + 1 + len(n_any_length) + n_any
                + 1 + len(n_kv_length) + n_kv)  # fmt: skip
        stamp = row.timestamp_ns if row.timestamp_ns > 0 else 0  # before 1970: unknown (0)
        mine[1].extend((
            _LOG_RECORD, _length(size),
            _TIME, stamp.to_bytes(8, "little"), alike,
            _BODY, n_any_length, _STRING, any_value, body,
            _ATTRIBUTE, n_kv_length, _UID_KEY, _VALUE, n_uid_value_length, _STRING, n_uid, uid,
        ))  # fmt: skip
    out = [
        _field(_REQUEST_RESOURCE_LOGS, _resource_logs(first, described.get(cid), b"".join(parts)))
        for cid, (first, parts) in records.items()
    ]
    return gzip.compress(b"".join(out), compresslevel=GZIP_LEVEL)


def _alike(observed: bytes, level: int | None, stream: str) -> bytes:
    """A record's fields that are the same for every line of a level and stream in a
    request: ObservedTimestamp, the severity, `log.iostream`."""
    alike = observed
    if level is not None and level in SEVERITY:
        alike += bytes((_RECORD_SEVERITY_NUMBER,)) + _varint(SEVERITY[level])
        alike += _field(_RECORD_SEVERITY_TEXT, NAMES[level].upper().encode())
    return alike + _attribute(_RECORD_ATTRIBUTES, "log.iostream", stream)


def _resource_logs(row: StoredRow, c: StoredContainer | None, records: bytes) -> bytes:
    attributes = b"".join(
        _attribute(_RESOURCE_ATTRIBUTES, k, v) for k, v in _resource(row, c).items()
    )
    return _field(_RESOURCE_LOGS_RESOURCE, attributes) + _field(
        _RESOURCE_LOGS_SCOPE_LOGS, _SCOPE + records
    )


def _resource(row: StoredRow, c: StoredContainer | None) -> dict[str, str]:
    found = {
        "host.name": row.host,
        "container.id": row.container_id,
        "container.name": row.container_name,
        "service.name": (c.service if c and c.service else row.container_name),
    }
    if c is not None:
        for key, value in (
            ("container.image.name", c.image),
            ("docker.compose.project", c.project),
            ("docker.compose.service", c.service),
        ):
            if value:
                found[key] = value
    return found


def rejected(answer: bytes) -> tuple[int, str] | None:
    """OTLP's partial success in a 2xx answer: how many records the receiver rejected, and
    its message; None when it took them all (or the answer is not one it can read)."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
        ExportLogsServiceResponse,
    )

    try:
        response: Any = ExportLogsServiceResponse.FromString(answer)
    except Exception:  # protobuf's DecodeError: not an answer it can read
        return None
    count = int(response.partial_success.rejected_log_records)
    if count <= 0:
        return None
    message = terminal_safe(" ".join(str(response.partial_success.error_message).split())[:200])
    return count, f"{count} records rejected ({message or 'no reason given'})"
