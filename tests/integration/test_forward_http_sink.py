"""The HTTP sink against a real HTTP server (tests/http_receiver.py): a token in a
`headers_file` rotated where it is mounted is used from the next batch on, and a file that
cannot be read keeps the value read before (the batches keep going, never lost)."""

from __future__ import annotations

import os
import time
from email.utils import formatdate
from pathlib import Path

import anyio
import pytest
from aiohttp import web
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

from agent.forward.http_sink import HeaderFiles, HttpSink
from agent.forward.otlp import CONTENT_TYPE, otlp_request, rejected
from agent.forward.sinks import PartlyRejected, SinkError
from agent.storage.reader import StoredRow
from tests.http_receiver import HttpReceiver

pytestmark = [pytest.mark.anyio]

ROW = StoredRow(1, "h", "a" * 64, "n", "stdout", 1_765_000_000_000_000_000, "", "hello", 0)


async def test_a_token_rotated_in_its_file_is_sent_from_the_next_batch(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("Bearer first\n")
    async with HttpReceiver() as rx:
        sink = HttpSink(rx.otlp_url, CONTENT_TYPE, {"Authorization": "Bearer first"},
                        header_files=[("Authorization", str(token))])  # fmt: skip
        try:
            await sink.send(otlp_request([ROW], {}, 1))
            rotated = tmp_path / "token.new"  # as Kubernetes swaps a secret's files
            rotated.write_text("Bearer second\n")
            os.replace(rotated, token)
            await sink.send(otlp_request([ROW], {}, 2))
            token.unlink()  # gone (an unmount): the value read before is kept
            await sink.send(otlp_request([ROW], {}, 3))
            token.write_text("\n")  # empty: kept too
            await sink.send(otlp_request([ROW], {}, 4))
        finally:
            await sink.aclose()
        seen = [r.headers.get("authorization") for r in rx.accepted()]
    assert seen == ["Bearer first", "Bearer second", "Bearer second", "Bearer second"]


def test_a_file_two_headers_read_gives_both_and_a_bad_one_keeps_the_value(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token = tmp_path / "token"
    token.write_text("one\n")
    files = HeaderFiles([("Authorization", str(token)), ("X-Api-Key", str(token))])
    assert files.changed() == {"Authorization": "one", "X-Api-Key": "one"}
    assert files.changed() == {}  # the same file: not read again

    def rotate(data: bytes) -> None:
        new = tmp_path / "token.new"
        new.write_bytes(data)
        os.replace(new, token)

    rotate(b"two\n")
    assert files.changed() == {"Authorization": "two", "X-Api-Key": "two"}
    for bad in (b"s3cret\x01x\n", b"s3cret\nx\n", b"\xffs3cret\n", b"s3cret" * 20_000, b""):
        rotate(bad)
        assert files.changed() == {}, bad  # the value read before is kept
    token.unlink()
    os.mkfifo(token)  # would block a read: not a regular file, not opened for reading
    assert files.changed() == {}
    said = caplog.text
    assert "s3cret" not in said and "headers_file" in said


async def test_a_partial_success_answered_in_two_chunks_is_read_whole() -> None:
    """`read(n)` gives what has come so far: an OTLP partial success whose body came in two
    chunks did not parse, and was taken as a full success (its rejected lines lost without
    a gap). A real server here sends it so, a pause between the chunks."""
    answer = ExportLogsServiceResponse()
    answer.partial_success.rejected_log_records = 2
    answer.partial_success.error_message = "two bodies too long " * 20
    body = answer.SerializeToString()

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": CONTENT_TYPE})
        await response.prepare(request)
        await response.write(body[:10])
        await anyio.sleep(0.2)
        await response.write(body[10:])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/logs", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    sink = HttpSink(f"http://127.0.0.1:{port}/v1/logs", CONTENT_TYPE, {})
    sink.partial = (CONTENT_TYPE, rejected)
    try:
        with pytest.raises(PartlyRejected) as raised:
            await sink.send(otlp_request([ROW], {}, 1))
        assert raised.value.rejected == 2
    finally:
        await sink.aclose()
        await runner.cleanup()


async def test_retry_after_as_an_http_date_is_honoured() -> None:
    """RFC 9110 lets Retry-After be a date (a proxy in front of a receiver may send one):
    it was ignored, and the forwarder asked again after its own second."""
    async with HttpReceiver() as rx:
        rx.answer(429, headers={"Retry-After": formatdate(time.time() + 30, usegmt=True)})
        rx.answer(503, headers={"Retry-After": "not a date"})
        sink = HttpSink(rx.otlp_url, CONTENT_TYPE, {})
        try:
            with pytest.raises(SinkError) as dated:
                await sink.send(otlp_request([ROW], {}, 1))
            with pytest.raises(SinkError) as unreadable:
                await sink.send(otlp_request([ROW], {}, 2))
        finally:
            await sink.aclose()
    assert dated.value.retry_after is not None and 20 < dated.value.retry_after <= 30
    assert unreadable.value.retry_after is None
