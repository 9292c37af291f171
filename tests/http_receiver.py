"""A real HTTP server for the tests of a log forwarder: OTLP/HTTP logs and Grafana Loki's push API.

    async with HttpReceiver() as rx:
        ...  # point the forwarder at rx.otlp_url or rx.loki_url
        await rx.wait_for(lambda: len(rx.otlp_records()) >= 10)
        assert rx.otlp_records()[0]["body"] == "hello"

It runs in the test's own event loop (aiohttp's AppRunner and TCPSite on 127.0.0.1), so a test
awaits it like anything else; nothing here blocks.

- POST /v1/logs (OTLP/HTTP): an ExportLogsServiceRequest in protobuf, read with the official
  classes (opentelemetry-proto). Content-Type must be application/x-protobuf (OTLP's JSON
  encoding is not taken here: 415). Success: 200, an ExportLogsServiceResponse, as the spec says.
- POST /loki/api/v1/push: Loki's JSON push body, checked the way Loki reads it (timestamps
  strings of nanoseconds, lines strings, structured metadata a string → string object).
  Content-Type must be application/json (Loki would read anything else as protobuf). Success: 204.

Bodies may be gzip'ed (Content-Encoding: gzip); aiohttp's own decompression is off, so a body
claimed as gzip that is not is caught (400). A body that cannot be read is answered 400 and kept
with its error. Any other path is answered 404, any other method 405, and kept too: a test sees
every request that came, what it said and what it was answered.

Answers can be scripted (answer()), a header required (required_headers), the server stopped and
started again on the same port (stop(), start()): a receiver down, then back.
"""

from __future__ import annotations

import asyncio
import errno
import gzip
import json
import time
import zlib
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

OTLP_PATH = "/v1/logs"
LOKI_PATH = "/loki/api/v1/push"
HOST = "127.0.0.1"
# aiohttp's default (1 MiB) would refuse a big batch: the forwarder's limits are under test.
MAX_BODY = 64 * 1024 * 1024


@dataclass
class Answer:
    """A scripted answer: see HttpReceiver.answer()."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: str | bytes = ""
    delay: float = 0.0


@dataclass
class Received:
    """One request received and what it was answered.

    headers: the request's, names lower-cased (a repeated header: its last value).
    body: the body, gunzip'ed when it was sent gzip'ed (as sent if refused before it was read:
    401, 404, 405); wire_size: its size as sent.
    status: the answer's status; 0 if none was sent (the server stopped while it was delayed).
    otlp / loki: the decoded body (by path), None if it could not be read (see error).
    """

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    wire_size: int
    status: int = 0
    otlp: ExportLogsServiceRequest | None = None
    loki: dict[str, Any] | None = None
    error: str | None = None
    at: float = field(default_factory=time.monotonic)

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300

    @property
    def gzipped(self) -> bool:
        return self.headers.get("content-encoding", "").strip().lower() == "gzip"


class BadRequest(Exception):
    """A body the receiver cannot read: answered with `status` (400, 415), the message as body."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def any_value(value: AnyValue) -> Any:
    """An OTLP AnyValue as a Python value (str, bool, int, float, bytes, list, dict; None if
    unset)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    return getattr(value, kind)


def attributes(kvs: Any) -> dict[str, Any]:
    """OTLP attributes (repeated KeyValue) as a dict; a key repeated (invalid OTLP) raises."""
    out: dict[str, Any] = {}
    kv: KeyValue
    for kv in kvs:
        if kv.key in out:
            raise ValueError(f"attribute {kv.key!r} repeated")
        out[kv.key] = any_value(kv.value)
    return out


def _media_type(headers: Mapping[str, str]) -> str:
    return headers.get("content-type", "").split(";")[0].strip().lower()


def _decoded_body(raw: bytes, headers: Mapping[str, str]) -> bytes:
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding != "gzip":
        raise BadRequest(f"unsupported Content-Encoding {encoding!r}", 415)
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise BadRequest(f"body is not gzip: {e}") from e


def _read_otlp(body: bytes, headers: Mapping[str, str]) -> ExportLogsServiceRequest:
    if (media := _media_type(headers)) != "application/x-protobuf":
        raise BadRequest(f"unsupported Content-Type {media!r}", 415)
    try:
        request = ExportLogsServiceRequest.FromString(body)
        for resource_logs in request.resource_logs:  # repeated keys: invalid, caught here
            attributes(resource_logs.resource.attributes)
            for scope_logs in resource_logs.scope_logs:
                for record in scope_logs.log_records:
                    attributes(record.attributes)
    except Exception as e:  # DecodeError, ValueError
        raise BadRequest(f"not an ExportLogsServiceRequest: {e}") from e
    return request


def _read_loki(body: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
    """Loki's JSON push body, checked: what Loki itself would refuse raises BadRequest."""
    if (media := _media_type(headers)) != "application/json":
        raise BadRequest(f"unsupported Content-Type {media!r}", 415)
    try:
        push = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadRequest(f"not JSON: {e}") from e
    if not isinstance(push, dict) or not isinstance(push.get("streams"), list):
        raise BadRequest('no "streams" list')
    for i, stream in enumerate(push["streams"]):
        where = f"streams[{i}]"
        if not isinstance(stream, dict):
            raise BadRequest(f"{where} is not an object")
        labels = stream.get("stream")
        if not isinstance(labels, dict) or not labels:
            raise BadRequest(f'{where}: "stream" is not a non-empty object of labels')
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
            raise BadRequest(f"{where}: a label that is not string → string")
        values = stream.get("values")
        if not isinstance(values, list):
            raise BadRequest(f'{where}: "values" is not a list')
        for j, entry in enumerate(values):
            at = f"{where}.values[{j}]"
            if not isinstance(entry, list) or len(entry) not in (2, 3):
                raise BadRequest(f"{at}: not [ts, line] nor [ts, line, metadata]")
            ts, line = entry[0], entry[1]
            if not isinstance(ts, str) or not ts.isdigit() or not ts.isascii():
                raise BadRequest(f"{at}: timestamp {ts!r} is not a string of nanoseconds")
            if not isinstance(line, str):
                raise BadRequest(f"{at}: line is not a string")
            if len(entry) == 3:
                meta = entry[2]
                if not isinstance(meta, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
                ):
                    raise BadRequest(f"{at}: structured metadata is not string → string")
    return push


class HttpReceiver:
    """An OTLP/HTTP logs and Loki push receiver on 127.0.0.1: see the module's docstring.

    required_headers: each must be in every request with exactly this value (names are
    case-insensitive), else the request is answered 401 (and kept, status 401).
    port: 0 picks a free one at the first start(); it stays the same across stop()/start().
    """

    def __init__(
        self,
        *,
        required_headers: Mapping[str, str] | None = None,
        port: int = 0,
        refuse: Callable[[bytes], bool] | None = None,
        per_second: int | None = None,
    ) -> None:
        self.required_headers = {k.lower(): v for k, v in (required_headers or {}).items()}
        # A receiver that refuses a whole request for one record it cannot take (400): asked
        # of each decoded body before any scripted answer.
        self.refuse = refuse
        # A receiver's rate limit (Loki's per tenant): past this many requests in a second,
        # 429 with Retry-After: 1, whatever the request.
        self.per_second = per_second
        self._window = (0.0, 0)  # (its start, requests in it)
        self.port = port
        self.requests: list[Received] = []
        self._answers: deque[Answer] = deque()
        self._runner: web.AppRunner | None = None
        self._handling: set[asyncio.Task[Any]] = set()

    # -- addresses

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("the receiver was never started: no port yet")
        return f"http://{HOST}:{self.port}"

    @property
    def otlp_url(self) -> str:
        return self.url + OTLP_PATH

    @property
    def loki_url(self) -> str:
        return self.url + LOKI_PATH

    @property
    def running(self) -> bool:
        return self._runner is not None

    @property
    def in_flight(self) -> int:
        """Requests being handled now (read, or waiting for a scripted delay)."""
        return len(self._handling)

    # -- life

    async def __aenter__(self) -> HttpReceiver:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self, bind_timeout: float = 10) -> None:
        """Listen (again) on self.port, or on a free port the first time. After a stop() the
        port may still be held a moment (another test took it?): retried for bind_timeout s."""
        if self._runner is not None:
            return
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # auto_decompress off: the body as sent, so a false Content-Encoding shows.
        # shutdown_timeout: stop() is a receiver going down, not a graceful drain.
        runner = web.AppRunner(app, auto_decompress=False, shutdown_timeout=0.25, access_log=None)
        await runner.setup()
        deadline = time.monotonic() + bind_timeout
        while True:
            site = web.TCPSite(runner, HOST, self.port, reuse_address=True)
            try:
                await site.start()
                break
            except OSError as e:
                if e.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                    await runner.cleanup()
                    raise
                await asyncio.sleep(0.1)
        self.port = int(runner.addresses[0][1])
        self._runner = runner

    async def stop(self) -> None:
        """Stop listening and close every connection: a request in flight (a scripted delay)
        gets no answer, and is kept with status 0. Once this returns, every request that came
        is in self.requests."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()  # cancels the handlers still running after its timeout
            if self._handling:
                await asyncio.wait(set(self._handling), timeout=10)

    # -- answers

    def answer(
        self,
        status: int,
        *,
        times: int = 1,
        headers: Mapping[str, str] | None = None,
        body: str | bytes = "",
        delay: float = 0.0,
    ) -> None:
        """Answer the next `times` requests (that pass the header check and can be read) with
        this, after `delay` s; queued after the answers already scripted. Once none is left:
        200 with an empty ExportLogsServiceResponse on /v1/logs, 204 on the Loki path."""
        for _ in range(times):
            self._answers.append(Answer(status, dict(headers or {}), body, delay))

    @property
    def answers_left(self) -> int:
        return len(self._answers)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        self._handling.add(task)
        try:
            return await self._received(request)
        finally:
            self._handling.discard(task)

    async def _received(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        got = Received(request.method, request.path, headers, raw, len(raw))
        try:
            answer = self._answer_for(got)
            if answer.delay:
                await asyncio.sleep(answer.delay)
            got.status = answer.status
            response = web.Response(status=answer.status, headers=answer.headers)
            if answer.body:
                body = answer.body
                response.body = body.encode() if isinstance(body, str) else body
            return response
        finally:
            self.requests.append(got)

    def _answer_for(self, got: Received) -> Answer:
        if got.path not in (OTLP_PATH, LOKI_PATH):
            return Answer(404, body=f"no such path: {got.path}")
        if got.method != "POST":
            return Answer(405, headers={"Allow": "POST"})
        if self.per_second is not None:
            now = time.monotonic()
            start, n = self._window if now - self._window[0] < 1.0 else (now, 0)
            self._window = (start, n + 1)
            if n >= self.per_second:
                return Answer(429, {"Retry-After": "1"}, "rate limited")
        for name, value in self.required_headers.items():
            if got.headers.get(name) != value:
                got.error = f"header {name!r}: {got.headers.get(name)!r}"
                return Answer(401, body="unauthorized")
        try:
            got.body = _decoded_body(got.body, got.headers)
            if got.path == OTLP_PATH:
                got.otlp = _read_otlp(got.body, got.headers)
            else:
                got.loki = _read_loki(got.body, got.headers)
        except BadRequest as e:
            got.error = str(e)
            return Answer(e.status, body=str(e))
        if self.refuse is not None and self.refuse(got.body):
            got.error = "refused: a record it cannot take"
            return Answer(400, body="a record it cannot take")
        if self._answers:
            return self._answers.popleft()
        if got.path == OTLP_PATH:
            return Answer(
                200,
                headers={"Content-Type": "application/x-protobuf"},
                body=ExportLogsServiceResponse().SerializeToString(),
            )
        return Answer(204)

    # -- what was received

    def accepted(self) -> list[Received]:
        """The requests answered 2xx, in the order they came."""
        return [r for r in self.requests if r.accepted]

    def otlp_records(self) -> list[dict[str, Any]]:
        """Every log record of every accepted OTLP request, in order, flattened: resource
        (its attributes), scope, scope_version, time_unix_nano, observed_time_unix_nano,
        severity_number, severity_text, body (the AnyValue as Python: a str for a string
        body), attributes, event_name, trace_id and span_id (hex, "" if unset), flags."""
        out: list[dict[str, Any]] = []
        for got in self.accepted():
            if got.otlp is None:
                continue
            for resource_logs in got.otlp.resource_logs:
                resource = attributes(resource_logs.resource.attributes)
                for scope_logs in resource_logs.scope_logs:
                    for r in scope_logs.log_records:
                        out.append(
                            {
                                "resource": resource,
                                "scope": scope_logs.scope.name,
                                "scope_version": scope_logs.scope.version,
                                "time_unix_nano": r.time_unix_nano,
                                "observed_time_unix_nano": r.observed_time_unix_nano,
                                "severity_number": int(r.severity_number),
                                "severity_text": r.severity_text,
                                "body": any_value(r.body),
                                "attributes": attributes(r.attributes),
                                "event_name": r.event_name,
                                "trace_id": r.trace_id.hex(),
                                "span_id": r.span_id.hex(),
                                "flags": r.flags,
                            }
                        )
        return out

    def loki_entries(self) -> list[dict[str, Any]]:
        """Every entry of every accepted Loki push, in order: labels (the stream's), ts (int,
        ns), line, metadata (structured metadata; {} if none)."""
        out: list[dict[str, Any]] = []
        for got in self.accepted():
            if got.loki is None:
                continue
            for stream in got.loki["streams"]:
                for entry in stream["values"]:
                    out.append(
                        {
                            "labels": stream["stream"],
                            "ts": int(entry[0]),
                            "line": entry[1],
                            "metadata": entry[2] if len(entry) == 3 else {},
                        }
                    )
        return out

    def summary(self, last: int = 20) -> str:
        """The last requests, one a line: for failure messages."""
        lines = [
            f"{r.method} {r.path} → {r.status}"
            + (f" ({r.error})" if r.error else "")
            + (" gzip" if r.gzipped else "")
            + f" {r.wire_size} B"
            for r in self.requests[-last:]
        ]
        skipped = len(self.requests) - len(lines)
        head = [f"... {skipped} earlier"] if skipped > 0 else []
        return "\n".join(head + lines) or "(no request)"

    async def wait_for(
        self,
        predicate: Callable[[], object],
        stall: float = 60,
        interval: float = 0.02,
        progress: Callable[[], object] | None = None,
    ) -> None:
        """Return once predicate() is true. TimeoutError once progress() (by default: the
        number of requests received) has not changed for `stall` s: a slow forwarder still
        sends, a stuck one does not."""
        measure = progress or (lambda: len(self.requests))
        seen, since = measure(), time.monotonic()
        while not predicate():
            now = measure()
            if now != seen:
                seen, since = now, time.monotonic()
            elif time.monotonic() - since > stall:
                state = "running" if self.running else "NOT running"
                raise TimeoutError(
                    f"HTTP receiver on port {self.port} ({state}): condition not met, no "
                    f"progress for {stall:.0f} s; {len(self.requests)} requests, the last:\n"
                    + self.summary()
                )
            await asyncio.sleep(interval)
