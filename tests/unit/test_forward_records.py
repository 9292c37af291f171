"""Pure: the `[[forward]]` config and a stored line as each destination's record."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from agent.batch import FLAG_CONTINUED, FLAG_TRUNCATED
from agent.forward.loki import loki_push
from agent.forward.otlp import otlp_request
from agent.forward.records import ids_for, ndjson_lines, stable_id, syslog_frame
from agent.forward.settings import Destination, ForwardConfigError, parse_forward
from agent.level_names import ERROR, NAMES
from agent.storage.described import StoredContainer
from agent.storage.reader import StoredRow

SYSLOG = Destination.max_message_bytes  # the default
ROW = StoredRow(
    id=42,
    host="web-1",
    container_id="a" * 64,
    container_name="shop api",
    stream="stderr",
    timestamp_ns=1_764_000_000_123_456_789,
    timestamp="",
    message=' said "hi" ] \\ é\tend',
    flags=0,
)


def test_a_syslog_frame_is_rfc5424_octet_counted_with_the_line_s_id() -> None:
    frame = syslog_frame(ROW, stable_id, SYSLOG)
    length, _, message = frame.partition(b" ")
    assert int(length) == len(message)
    text = message.decode()
    assert text.startswith(
        "<27>1 2025-11-24T16:00:00.123456Z web-1 shop_api aaaaaaaaaaaa stderr "
    )  # daemon.err: stderr without a level, as Docker's syslog driver
    sd = (
        '[logagent@32473 id="web-1:aaaaaaaaaaaa:42" container="shop api" '
        'time="2025-11-24T16:00:00.123456789Z"]'
    )
    assert text.endswith(f"{sd} {ROW.message}")  # the message as stored, its spaces too
    leveled = syslog_frame(ROW._replace(level=ERROR, container_name='x"]\\'), stable_id, SYSLOG)
    assert b"<27>1 " in leveled and b'level="error"' in leveled
    assert b'container="x\\"\\]\\\\"' in leveled  # RFC 5424's escapes in a param value


def test_an_ndjson_record_has_the_id_docker_s_time_and_the_flags() -> None:
    record = json.loads(ndjson_lines([ROW._replace(flags=FLAG_TRUNCATED)]))
    assert record["id"] == stable_id(ROW) == "web-1:aaaaaaaaaaaa:42"
    assert record["timestamp"] == "2025-11-24T16:00:00.123456789Z"
    assert record["time_ns"] == ROW.timestamp_ns and record["message"] == ROW.message
    assert record["truncated"] is True and "level" not in record


def test_forward_destinations_are_checked_with_the_key_named() -> None:
    (ndjson, syslog) = parse_forward(
        [
            {"name": "file", "kind": "ndjson", "path": "/var/log/all.ndjson", "start": "stored"},
            {"name": "siem", "kind": "syslog", "address": "[::1]:6514", "tls": True,
             "min_level": "warn", "names": ["web-*"], "linger": "250ms"},
        ],
        {},
    )  # fmt: skip
    assert ndjson.from_start and ndjson.path == "/var/log/all.ndjson"
    assert (syslog.host, syslog.port, syslog.tls, syslog.min_level) == ("::1", 6514, True, 4)
    assert syslog.linger_s == 0.25 and syslog.selection.names == ("web-*",)
    bad = [
        ({"name": "Up", "kind": "ndjson", "path": "/x"}, "name"),
        ({"name": "a", "kind": "kafka"}, "kind"),
        ({"name": "a", "kind": "ndjson", "path": "rel/x"}, "path"),
        ({"name": "a", "kind": "syslog", "address": "h:99999"}, "address"),
        ({"name": "a", "kind": "syslog", "address": "h:514", "ca_file": "/ca"}, "ca_file"),
        ({"name": "a", "kind": "ndjson", "path": "/x", "min_level": "loud"}, "min_level"),
        ({"name": "a", "kind": "ndjson", "path": "/x", "batch_lines": 0}, "batch_lines"),
        ({"name": "a", "kind": "ndjson", "path": "/x", "url": "http://x"}, "unknown key url"),
    ]
    for table, said in bad:
        with pytest.raises(ForwardConfigError, match=said):
            parse_forward([table], {})
    with pytest.raises(ForwardConfigError, match="same name"):
        parse_forward([{"name": "a", "kind": "ndjson", "path": "/x"}] * 2, {})


def test_an_otlp_request_follows_the_log_data_model() -> None:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    web = StoredContainer("a" * 64, "shop api", "shop:1.2", "shop", "api", {})
    rows = [ROW._replace(level=ERROR), ROW._replace(id=43, container_id="b" * 64, stream="stdout")]
    request = ExportLogsServiceRequest.FromString(
        gzip.decompress(otlp_request(rows, {web.container_id: web}, 7))
    )
    first, second = request.resource_logs
    assert {a.key: a.value.string_value for a in first.resource.attributes} == {
        "host.name": "web-1", "container.id": "a" * 64, "container.name": "shop api",
        "service.name": "api", "container.image.name": "shop:1.2",
        "docker.compose.project": "shop", "docker.compose.service": "api",
    }  # fmt: skip
    (record,) = first.scope_logs[0].log_records
    assert (record.time_unix_nano, record.observed_time_unix_nano) == (ROW.timestamp_ns, 7)
    assert (record.severity_number, record.severity_text) == (17, "ERROR")
    assert record.body.string_value == ROW.message
    assert {a.key: a.value.string_value for a in record.attributes} == {
        "log.iostream": "stderr", "log.record.uid": "web-1:aaaaaaaaaaaa:42"
    }  # fmt: skip
    other = {a.key: a.value.string_value for a in second.resource.attributes}
    assert other["service.name"] == "shop api" and "container.image.name" not in other
    assert second.scope_logs[0].log_records[0].severity_number == 0  # no level: unspecified


def test_a_loki_push_keeps_labels_few_and_the_id_in_metadata() -> None:
    body = json.loads(gzip.decompress(loki_push([ROW, ROW._replace(id=43, level=ERROR)], {})))
    (stream,) = body["streams"]
    assert stream["stream"] == {"host": "web-1", "container": "shop api", "stream": "stderr"}
    assert stream["values"] == [
        [str(ROW.timestamp_ns), ROW.message, {"id": "web-1:aaaaaaaaaaaa:42"}],
        [str(ROW.timestamp_ns), ROW.message, {"id": "web-1:aaaaaaaaaaaa:43", "level": "error"}],
    ]


def test_a_long_line_is_cut_for_syslog_and_says_so() -> None:
    long = ROW._replace(message="é" * 40_000)  # 80,000 bytes
    frame = syslog_frame(long, stable_id, 1000)
    length, _, message = frame.partition(b" ")
    assert int(length) == len(message) <= 1000
    assert b'[logagent@32473 truncated="true" id=' in message
    message.decode()  # cut on a character's boundary


def test_ids_name_the_writer_session_a_row_was_written_in() -> None:
    """After a failover a lost row's id may be taken by a new line: its session differs."""
    ids = ids_for([(0xA, 0), (0xB, 40), (0xC, 30)])  # the last began after a rewind to 30
    assert ids(ROW) == "web-1:aaaaaaaaaaaa:c:42"  # newest session that began below it
    assert ids(ROW._replace(id=35)) == "web-1:aaaaaaaaaaaa:c:35"
    assert ids(ROW._replace(id=20)) == "web-1:aaaaaaaaaaaa:a:20"
    assert ids_for([])(ROW) == stable_id(ROW) == "web-1:aaaaaaaaaaaa:42"


def test_a_destination_s_url_and_name_keep_secrets_out_and_fit_its_position() -> None:
    for table, said in [
        ({"name": "a", "kind": "otlp", "url": "https://u:p@otel/v1/logs"}, "user:password"),
        ({"name": "a", "kind": "loki", "url": "https://loki/push?token=x"}, "query"),
        ({"name": "a" * 39, "kind": "ndjson", "path": "/x"}, "1-38"),
        ({"name": "a", "kind": "ndjson", "path": "/x", "linger": "0s"}, "linger"),
        ({"name": "a", "kind": "otlp", "url": "https://o/v1/logs", "ca_file": "/no/such"},
         "no file"),
    ]:  # fmt: skip
        with pytest.raises(ForwardConfigError, match=said):
            parse_forward([table], {})


def test_a_syslog_destination_s_own_limit_is_the_one_used() -> None:
    from agent.forward.runner import encode
    from agent.forward.settings import Destination

    d = Destination("siem", "syslog", host="h", port=514, max_message_bytes=480)
    frame = encode(d, [ROW._replace(message="x" * 5000)], {}, stable_id)
    assert int(frame.partition(b" ")[0]) <= 480 and b'truncated="true"' in frame
    # A head longer than the limit on its own (a long name): the message is still cut to it.
    named = ROW._replace(container_name="n" * 255, message="x" * 5000)
    frame = encode(d, [named], {}, stable_id)
    length, _, message = frame.partition(b" ")
    assert int(length) == len(message) <= 480
    assert Destination("siem", "syslog").max_message_bytes == 8192  # rsyslog's own default


def test_ndjson_records_are_what_json_dumps_writes() -> None:
    """ndjson_lines escapes a string at a time with json's own function: the same bytes."""
    messages = ["plain", 'quote " back \\ nl \n tab \t', "é 日本 🎉", "\x00\x1b[31m\x7f", "\udcff"]
    rows = [
        ROW._replace(
            id=i,
            container_id=f"{i % 2:064x}",
            container_name=f'n"{i % 2}',
            message=messages[i % 5],
            level=(None, 1, 3, 6, 99)[i % 5],
            flags=(0, FLAG_TRUNCATED, FLAG_CONTINUED, 3)[i % 4],
            timestamp=("", "2026-01-01T00:00:00.5+01:00")[i % 2],
        )
        for i in range(20)
    ]

    def dumped(row: StoredRow) -> bytes:
        record: dict[str, object] = {
            "id": stable_id(row), "host": row.host, "container_id": row.container_id,
            "container_name": row.container_name, "stream": row.stream,
            "timestamp": row.rfc3339, "time_ns": row.timestamp_ns, "message": row.message,
        }  # fmt: skip
        if row.level in NAMES:
            record["level"] = NAMES[row.level]
        if row.flags & FLAG_TRUNCATED:
            record["truncated"] = True
        if row.flags & FLAG_CONTINUED:
            record["continued"] = True
        return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8", "surrogatepass")

    assert ndjson_lines(rows) == b"".join(dumped(r) for r in rows)


def test_a_destination_s_repr_holds_no_header_value(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("Bearer s3cret\n")
    table = {"name": "o", "kind": "otlp", "url": "https://o/v1/logs",
             "headers_file": {"Authorization": str(token)},
             "headers_env": {"X-Key": "KEY"}}  # fmt: skip
    (d,) = parse_forward([table], {"KEY": "k3y-s3cret"})
    assert dict(d.headers) == {"Authorization": "Bearer s3cret", "X-Key": "k3y-s3cret"}
    assert "s3cret" not in repr(d) and "s3cret" not in str(d.shown())
