"""Pure: stored lines as an OTLP/HTTP logs request (protobuf, gzip), with the official
OpenTelemetry messages (`opentelemetry-proto`: the schema's own classes, kept in step with it
by the project; imported only where a destination is OTLP).

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
from agent.storage.described import StoredContainer
from agent.storage.reader import StoredRow

CONTENT_TYPE = "application/x-protobuf"
# SeverityNumber's first value of each range (TRACE 1-4, DEBUG 5-8, … FATAL 21-24)
SEVERITY = {TRACE: 1, DEBUG: 5, INFO: 9, WARN: 13, ERROR: 17, FATAL: 21}
SCOPE = "logagent"


def otlp_request(
    rows: list[StoredRow],
    described: dict[str, StoredContainer],
    observed_ns: int,
    ids: Ids = stable_id,
) -> bytes:
    """An ExportLogsServiceRequest of these rows, serialized and gzip'ed."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
        ExportLogsServiceRequest,
    )

    request: Any = ExportLogsServiceRequest()
    scopes: dict[str, Any] = {}
    for row in rows:
        scope = scopes.get(row.container_id)
        if scope is None:
            resource = request.resource_logs.add()
            _attributes(
                resource.resource.attributes, _resource(row, described.get(row.container_id))
            )
            scope = scopes[row.container_id] = resource.scope_logs.add()
            scope.scope.name = SCOPE
        record = scope.log_records.add()
        record.time_unix_nano = row.timestamp_ns
        record.observed_time_unix_nano = observed_ns
        if row.level is not None and row.level in SEVERITY:
            record.severity_number = SEVERITY[row.level]
            record.severity_text = NAMES[row.level].upper()
        record.body.string_value = row.message
        _attributes(record.attributes, {"log.iostream": row.stream, "log.record.uid": ids(row)})
    return gzip.compress(request.SerializeToString(), compresslevel=5)


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


def _attributes(into: Any, values: dict[str, str]) -> None:
    for key, value in values.items():
        kv = into.add()
        kv.key = key
        kv.value.string_value = value


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
    message = " ".join(str(response.partial_success.error_message).split())[:200]
    return count, f"{count} records rejected ({message or 'no reason given'})"
