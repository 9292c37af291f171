"""The HTTP receiver (tests/http_receiver.py) that the OTLP and Loki forwarders' tests will send
to: proved here with a plain aiohttp client and requests built by hand (the official OTLP
protobuf classes, Loki's JSON), so that a forwarder's test failing says the forwarder is wrong,
not the receiver."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from tests.http_receiver import HttpReceiver

pytestmark = [pytest.mark.anyio]

PROTOBUF = {"Content-Type": "application/x-protobuf"}
GZIP_PROTOBUF = {**PROTOBUF, "Content-Encoding": "gzip"}
GZIP_JSON = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
T0 = 1_765_000_000_123_456_789  # ns: more digits than a float keeps


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
        yield s


def kv(key: str, value: str | int | bool) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def otlp_request(body: str = "first line") -> ExportLogsServiceRequest:
    """One ResourceLogs (host.name, container.id), one ScopeLogs, two records."""
    return ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(
                resource=Resource(
                    attributes=[kv("host.name", "myhost"), kv("container.id", "abc123" * 10)]
                ),
                scope_logs=[
                    ScopeLogs(
                        scope=InstrumentationScope(name="logagent", version="1.0"),
                        log_records=[
                            LogRecord(
                                time_unix_nano=T0,
                                observed_time_unix_nano=T0 + 5,
                                severity_number=9,  # INFO
                                severity_text="INFO",
                                body=AnyValue(string_value=body),
                                attributes=[kv("log.iostream", "stdout"), kv("seq", 1)],
                            ),
                            LogRecord(
                                time_unix_nano=T0 + 1,
                                observed_time_unix_nano=T0 + 6,
                                severity_number=17,  # ERROR
                                severity_text="ERROR",
                                body=AnyValue(string_value="second: é 日本\nwith LF"),
                                attributes=[kv("log.iostream", "stderr"), kv("partial", True)],
                            ),
                        ],
                    )
                ],
            )
        ]
    )


def gz_otlp(request: ExportLogsServiceRequest) -> bytes:
    return gzip.compress(request.SerializeToString())


LOKI_PUSH: dict[str, Any] = {
    "streams": [
        {
            "stream": {"host": "myhost", "container": "web"},
            "values": [
                [str(T0), "first line", {"stream": "stdout", "container_id": "abc"}],
                [str(T0 + 1), "second: é 日本"],  # no structured metadata
            ],
        },
        {"stream": {"host": "myhost", "container": "db"}, "values": [[str(T0 + 2), "db line"]]},
    ]
}


async def test_otlp_gzip_round_trip(session: aiohttp.ClientSession) -> None:
    sent = otlp_request()
    async with HttpReceiver() as rx:
        assert rx.otlp_url == f"http://127.0.0.1:{rx.port}/v1/logs"
        async with session.post(rx.otlp_url, data=gz_otlp(sent), headers=GZIP_PROTOBUF) as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == "application/x-protobuf"
            response = ExportLogsServiceResponse.FromString(await r.read())
            assert not response.HasField("partial_success")

        (got,) = rx.requests
        assert got.path == "/v1/logs" and got.status == 200 and got.gzipped
        assert got.headers["content-encoding"] == "gzip"
        assert got.wire_size == len(gz_otlp(sent))
        assert got.otlp == sent
        assert got.loki is None and got.error is None

        first, second = rx.otlp_records()
        resource = {"host.name": "myhost", "container.id": "abc123" * 10}
        assert first == {
            "resource": resource,
            "scope": "logagent",
            "scope_version": "1.0",
            "time_unix_nano": T0,
            "observed_time_unix_nano": T0 + 5,
            "severity_number": 9,
            "severity_text": "INFO",
            "body": "first line",
            "attributes": {"log.iostream": "stdout", "seq": 1},
            "event_name": "",
            "trace_id": "",
            "span_id": "",
            "flags": 0,
        }
        assert second["resource"] == resource
        assert second["time_unix_nano"] == T0 + 1
        assert (second["severity_number"], second["severity_text"]) == (17, "ERROR")
        assert second["body"] == "second: é 日本\nwith LF"
        assert second["attributes"] == {"log.iostream": "stderr", "partial": True}
        assert rx.loki_entries() == []

        # Not compressed: taken as well.
        async with session.post(rx.otlp_url, data=sent.SerializeToString(), headers=PROTOBUF) as r:
            assert r.status == 200
        assert not rx.requests[1].gzipped
        assert len(rx.otlp_records()) == 4


async def test_loki_gzip_push(session: aiohttp.ClientSession) -> None:
    async with HttpReceiver() as rx:
        assert rx.loki_url == f"{rx.url}/loki/api/v1/push"
        body = gzip.compress(json.dumps(LOKI_PUSH).encode())
        async with session.post(rx.loki_url, data=body, headers=GZIP_JSON) as r:
            assert r.status == 204
        (got,) = rx.requests
        assert got.loki == LOKI_PUSH and got.otlp is None and got.gzipped
        web, db = {"host": "myhost", "container": "web"}, {"host": "myhost", "container": "db"}
        assert rx.loki_entries() == [
            {
                "labels": web,
                "ts": T0,
                "line": "first line",
                "metadata": {"stream": "stdout", "container_id": "abc"},
            },
            {"labels": web, "ts": T0 + 1, "line": "second: é 日本", "metadata": {}},
            {"labels": db, "ts": T0 + 2, "line": "db line", "metadata": {}},
        ]
        assert rx.otlp_records() == []


async def test_scripted_answers_then_default(session: aiohttp.ClientSession) -> None:
    async with HttpReceiver() as rx:
        rx.answer(400, body="bad")
        rx.answer(429, headers={"Retry-After": "2"}, times=2)
        rx.answer(503, delay=0.2)
        assert rx.answers_left == 4
        data = gz_otlp(otlp_request())
        async with session.post(rx.otlp_url, data=data, headers=GZIP_PROTOBUF) as r:
            assert (r.status, await r.text()) == (400, "bad")
        for _ in range(2):
            async with session.post(rx.otlp_url, data=data, headers=GZIP_PROTOBUF) as r:
                assert r.status == 429 and r.headers["Retry-After"] == "2"
        async with session.post(rx.otlp_url, data=data, headers=GZIP_PROTOBUF) as r:
            assert r.status == 503
        async with session.post(rx.otlp_url, data=data, headers=GZIP_PROTOBUF) as r:
            assert r.status == 200  # the queue is empty: the default
        rx.answer(500)  # the queue serves both paths, in order
        loki = gzip.compress(json.dumps(LOKI_PUSH).encode())
        for status in (500, 204):
            async with session.post(rx.loki_url, data=loki, headers=GZIP_JSON) as r:
                assert r.status == status

        assert [r.status for r in rx.requests] == [400, 429, 429, 503, 200, 500, 204]
        # Refused requests are kept, decoded, but their records are not counted.
        assert all(r.otlp == otlp_request() for r in rx.requests[:5])
        assert len(rx.otlp_records()) == 2
        assert len(rx.loki_entries()) == 3
        assert rx.answers_left == 0


async def test_stop_and_start_on_the_same_port(session: aiohttp.ClientSession) -> None:
    data = gz_otlp(otlp_request())
    async with HttpReceiver() as rx:
        port = rx.port
        async with session.post(rx.otlp_url, data=data, headers=GZIP_PROTOBUF) as r:
            assert r.status == 200
        await rx.stop()
        assert not rx.running
        with pytest.raises(aiohttp.ClientConnectionError):
            async with session.post(rx.otlp_url, data=data, headers=GZIP_PROTOBUF):
                pass
        await rx.start()
        assert rx.port == port and rx.running
        async with session.post(rx.otlp_url, data=data, headers=GZIP_PROTOBUF) as r:
            assert r.status == 200
        assert [r.status for r in rx.requests] == [200, 200]
        assert len(rx.otlp_records()) == 4
    assert not rx.running


async def test_stop_with_a_request_in_flight(session: aiohttp.ClientSession) -> None:
    async with HttpReceiver() as rx:
        rx.answer(200, delay=30)
        post = asyncio.create_task(
            session.post(rx.otlp_url, data=gz_otlp(otlp_request()), headers=GZIP_PROTOBUF)
        )
        await rx.wait_for(lambda: rx.in_flight == 1, progress=lambda: rx.in_flight)
        assert rx.requests == []  # kept once answered
        await rx.stop()
        with pytest.raises(aiohttp.ClientConnectionError):
            await post
        (got,) = rx.requests
        assert got.status == 0 and not got.accepted  # no answer was sent
        assert rx.otlp_records() == []


async def test_required_header(session: aiohttp.ClientSession) -> None:
    data = gzip.compress(json.dumps(LOKI_PUSH).encode())
    async with HttpReceiver(required_headers={"Authorization": "Bearer x"}) as rx:
        rx.answer(500)  # not used by the refused requests
        async with session.post(rx.loki_url, data=data, headers=GZIP_JSON) as r:
            assert r.status == 401
        wrong = {**GZIP_JSON, "Authorization": "Bearer y"}
        async with session.post(rx.loki_url, data=data, headers=wrong) as r:
            assert r.status == 401
        right = {**GZIP_JSON, "authorization": "Bearer x"}  # names are case-insensitive
        async with session.post(rx.loki_url, data=data, headers=right) as r:
            assert r.status == 500
        async with session.post(rx.loki_url, data=data, headers=right) as r:
            assert r.status == 204
        assert [r.status for r in rx.requests] == [401, 401, 500, 204]
        assert rx.requests[1].headers["authorization"] == "Bearer y"
        assert len(rx.loki_entries()) == 3


@pytest.mark.parametrize(
    ("path", "headers", "body", "status"),
    [
        ("/v1/logs", GZIP_PROTOBUF, b"not gzip", 400),
        ("/v1/logs", PROTOBUF, b"\xff\xff\xff", 400),
        ("/v1/logs", {"Content-Type": "application/json"}, b"{}", 415),
        ("/v1/logs", {**PROTOBUF, "Content-Encoding": "br"}, b"x", 415),
        ("/loki/api/v1/push", {"Content-Type": "application/json"}, b"{", 400),
        ("/loki/api/v1/push", {"Content-Type": "application/x-protobuf"}, b"x", 415),
        ("/loki/api/v1/push", {"Content-Type": "application/json"}, b'{"streams": {}}', 400),
        ("/v1/traces", PROTOBUF, b"", 404),
    ],
)
async def test_bad_requests_are_refused_and_kept(
    session: aiohttp.ClientSession, path: str, headers: dict[str, str], body: bytes, status: int
) -> None:
    async with HttpReceiver() as rx:
        rx.answer(200)  # a scripted answer is for requests that can be read
        async with session.post(rx.url + path, data=body, headers=headers) as r:
            assert r.status == status
        (got,) = rx.requests
        assert got.status == status and got.path == path
        assert got.otlp is None and got.loki is None
        assert rx.answers_left == 1


@pytest.mark.parametrize(
    "entry",
    [
        [T0, "ts as a number"],
        ["12x", "ts not digits"],
        [str(T0), 42],
        [str(T0), "meta not strings", {"n": 1}],
        [str(T0)],
    ],
)
async def test_loki_entries_loki_would_refuse(
    session: aiohttp.ClientSession, entry: list[Any]
) -> None:
    push = {"streams": [{"stream": {"a": "b"}, "values": [entry]}]}
    async with HttpReceiver() as rx:
        async with session.post(rx.loki_url, json=push) as r:
            assert r.status == 400
        assert rx.requests[0].error and rx.loki_entries() == []


async def test_get_is_not_allowed(session: aiohttp.ClientSession) -> None:
    async with HttpReceiver() as rx, session.get(rx.otlp_url) as r:
        assert r.status == 405
        assert rx.requests[0].method == "GET"


async def test_wait_for(session: aiohttp.ClientSession) -> None:
    async with HttpReceiver() as rx:

        async def send_slowly() -> None:
            for _ in range(3):
                await asyncio.sleep(0.3)
                async with session.post(
                    rx.otlp_url, data=gz_otlp(otlp_request()), headers=GZIP_PROTOBUF
                ) as r:
                    assert r.status == 200

        sender = asyncio.create_task(send_slowly())
        # The whole takes longer than stall, but a request comes every 0.3 s: progress.
        await rx.wait_for(lambda: len(rx.otlp_records()) >= 6, stall=0.5)
        await sender
        with pytest.raises(TimeoutError, match=r"no progress for 0 s; 3 requests"):
            await rx.wait_for(lambda: len(rx.otlp_records()) >= 8, stall=0.2)
