"""Pure: the OTLP request agent/forward/otlp.py writes by hand is, parsed with the official
classes, the message those classes build from the same rows (pins the schema's field
numbers and wire types as written)."""

from __future__ import annotations

import gzip
from typing import Any

from agent.forward.otlp import SCOPE, SEVERITY, _resource, otlp_request
from agent.forward.records import stable_id
from agent.level_names import NAMES
from agent.storage.described import StoredContainer
from agent.storage.reader import StoredRow


def built_by_the_classes(
    rows: list[StoredRow], described: dict[str, StoredContainer], observed_ns: int
) -> Any:
    """The request as opentelemetry-proto's classes make it, field by field."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    request: Any = ExportLogsServiceRequest()
    scopes: dict[str, Any] = {}
    for row in rows:
        scope = scopes.get(row.container_id)
        if scope is None:
            resource = request.resource_logs.add()
            for key, value in _resource(row, described.get(row.container_id)).items():
                kv = resource.resource.attributes.add()
                kv.key, kv.value.string_value = key, value
            scope = scopes[row.container_id] = resource.scope_logs.add()
            scope.scope.name = SCOPE
        record = scope.log_records.add()
        record.time_unix_nano = row.timestamp_ns
        record.observed_time_unix_nano = observed_ns
        if row.level in SEVERITY:
            record.severity_number = SEVERITY[row.level]
            record.severity_text = NAMES[row.level].upper()
        record.body.string_value = row.message
        for key, value in (("log.iostream", row.stream), ("log.record.uid", stable_id(row))):
            kv = record.attributes.add()
            kv.key, kv.value.string_value = key, value
    return request


def test_the_request_written_by_hand_is_the_one_the_classes_build() -> None:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    messages = ["", "x", "é ü 日本 🎉", "a" * 127, "b" * 128, "c" * 16383, "d" * 16384,
                "e" * 300_000, "tab\tnul\x00esc\x1b[31m", '{"json": "line"}']  # fmt: skip
    rows = [
        StoredRow(
            id=i * 977 + 1,
            host="host-é",
            container_id=f"{i % 3:064x}",
            container_name=f"svc-{i % 3}",
            stream=("stdout", "stderr")[i % 2],
            timestamp_ns=(1 << 63) - i if i == 4 else 1_764_000_000_000_000_000 + i,
            timestamp="",
            message=messages[i % len(messages)],
            flags=0,
            level=(None, 1, 2, 3, 4, 5, 6, 99)[i % 8],
        )
        for i in range(40)
    ]
    described = {f"{1:064x}": StoredContainer(f"{1:064x}", "svc-1", "img:1", "proj", "web", {})}
    observed = 1_765_000_000_123_456_789
    written = ExportLogsServiceRequest.FromString(
        gzip.decompress(otlp_request(rows, described, observed))
    )
    assert written == built_by_the_classes(rows, described, observed)
    assert len(written.resource_logs) == 3 and sum(
        len(r.scope_logs[0].log_records) for r in written.resource_logs
    ) == len(rows)


def test_a_lone_surrogate_becomes_a_replacement_not_a_failed_batch() -> None:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    row = StoredRow(1, "h", "a" * 64, "n", "stdout", 1, "", "bad \udcff end", 0)
    written = ExportLogsServiceRequest.FromString(gzip.decompress(otlp_request([row], {}, 2)))
    assert written.resource_logs[0].scope_logs[0].log_records[0].body.string_value == "bad ? end"


def test_a_time_before_1970_is_sent_as_unknown_not_a_failed_batch() -> None:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    row = StoredRow(1, "h", "a" * 64, "n", "stdout", -5_000_000_000, "", "old", 0)
    written = ExportLogsServiceRequest.FromString(gzip.decompress(otlp_request([row], {}, 2)))
    record = written.resource_logs[0].scope_logs[0].log_records[0]
    assert (record.time_unix_nano, record.observed_time_unix_nano) == (0, 2)
