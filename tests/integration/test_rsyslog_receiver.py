"""The rsyslog receiver (tests/rsyslog.py) that a syslog forwarder's tests will send to: proved
here with a client made by hand (RFC 5424 frames, RFC 6587 octet counting, over plain TCP and
TLS), so that a forwarder's test failing says the forwarder is wrong, not the receiver."""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.rsyslog import RsyslogReceiver, receiver_problem

HEADER = b"<14>1 2026-12-07T01:02:03.123456Z myhost app 123 MSGID"
# A param value with the three characters RFC 5424 escapes in it: '"', '\' and ']'.
ESCAPED_SD = rb'[logagent@32473 id="h:c:42" text="say \"hi\" [x\] C:\\dir"][origin ip="10.0.0.1"]'
# 100 KiB: past rsyslog's default maxMessageSize (8k) and many TCP segments; LFs and
# non-ASCII in it, which octet counting (not LF framing) must carry through.
BIG = ("0123456789 é 日本 abcdefghij\n" * 4000).encode()[: 100 * 1024]


def _skip_unless_receiver(tls: bool = False) -> None:
    if (problem := receiver_problem(tls)) is not None:
        pytest.skip(problem)


@pytest.fixture
def receiver() -> Iterator[RsyslogReceiver]:
    _skip_unless_receiver()
    with RsyslogReceiver() as r:
        yield r


def frame(message: bytes) -> bytes:
    """RFC 6587 octet counting: the message's length in bytes, a space, the message."""
    return str(len(message)).encode() + b" " + message


def connect(r: RsyslogReceiver, context: ssl.SSLContext | None = None) -> socket.socket:
    sock = socket.create_connection(r.address, timeout=30)
    if context is None:
        return sock
    return context.wrap_socket(sock, server_hostname="127.0.0.1")


def as_bytes(value: str) -> bytes:
    """A field as rsyslog wrote it, back to bytes (messages() keeps invalid UTF-8 as lone
    surrogates): what a byte-exact comparison needs."""
    return value.encode("utf-8", "surrogateescape")


def sent(
    header: bytes = HEADER, sd: bytes = b"-", msg: bytes | None = None
) -> tuple[bytes, dict[str, Any]]:
    """A message and the fields rsyslog must give back for it (msg as bytes)."""
    message = header + b" " + sd + (b"" if msg is None else b" " + msg)
    pri_version, timestamp, host, app, procid, msgid = header.decode().split(" ")
    expected = {
        "pri": pri_version[1 : pri_version.index(">")],
        "timereported": timestamp,
        "hostname": host,
        "app-name": app,
        "procid": procid,
        "msgid": msgid,
        "structured-data": sd.decode(),
        "msg": msg or b"",
        "rawmsg": message,
    }
    return message, expected


def check(got: dict[str, Any], expected: dict[str, Any]) -> None:
    """Every field exactly: strings as sent, msg and rawmsg byte for byte."""
    for key, want in expected.items():
        value = as_bytes(got[key]) if isinstance(want, bytes) else got[key]
        assert value == want, f"{key}: {value[:200]!r} != {want[:200]!r}"


def three_messages() -> list[tuple[bytes, dict[str, Any]]]:
    return [
        sent(sd=b'[logagent@32473 id="h:c:42"]', msg=b"hello world"),
        sent(
            b"<165>1 2026-12-07T23:59:59.000001+01:00 host-2.example.org my.app 4242 ID47",
            ESCAPED_SD,
            "tab\there, é, 日本".encode(),
        ),
        sent(b"<14>1 2026-12-07T01:02:04.999999Z myhost app - -", msg=BIG),
    ]


def send_and_check(r: RsyslogReceiver, context: ssl.SSLContext | None = None) -> None:
    messages = three_messages()
    with connect(r, context) as sock:
        sock.sendall(b"".join(frame(m) for m, _ in messages))
        # Closed only once all arrived: a close with unread data in it (a TLS record from the
        # server) resets the connection, and a reset can drop what the server has not read.
        got = r.wait_for(len(messages))
    assert len(got) == len(messages)
    for received, (_, expected) in zip(got, messages, strict=True):
        check(received, expected)
    assert got[1]["timereported"] == "2026-12-07T23:59:59.000001+01:00"  # microseconds, offset
    assert len(as_bytes(got[2]["msg"])) == 100 * 1024


def test_fields_come_back_exactly(receiver: RsyslogReceiver) -> None:
    send_and_check(receiver)


def test_tls_verified_against_the_test_ca() -> None:
    _skip_unless_receiver(tls=True)
    with RsyslogReceiver(tls=True) as r:
        context = ssl.create_default_context(cafile=str(r.ca_file))
        send_and_check(r, context)
        # The verification is real: a client that trusts only the system's CAs refuses it.
        with pytest.raises(ssl.SSLCertVerificationError):
            connect(r, ssl.create_default_context()).close()


def test_what_rsyslog_keeps_and_changes(receiver: RsyslogReceiver) -> None:
    """What a forwarder's tests can rely on, and rsyslog's quirks (tests/rsyslog.py)."""
    keep = [
        sent(msg=b" leading space"),  # only the one SP after STRUCTURED-DATA is dropped
        sent(msg=b"\xef\xbb\xbfBOM first"),  # RFC 5424's MSG-UTF8: the BOM stays in msg
        sent(msg=b"ctl \x01\x1b\x7f cr\r lf\nlast lf\n"),  # not escaped, the final LF kept
        sent(msg=b"not utf-8 \xff\xfe"),
        sent(b"<14>1 2026-12-07T01:02:03Z - - - -", msg=b"no fraction, nil fields"),
        sent(b"<14>1 2026-12-07T01:02:03.1-07:30 h a p m", msg=b"1 digit, offset"),
        sent(b"<14>1 2026-12-07T01:02:03.000000Z h a p m"),  # no MSG at all
    ]
    nul = HEADER + b" - before\x00after"
    with connect(receiver) as sock:
        sock.sendall(b"".join(frame(m) for m, _ in keep) + frame(nul))
        got = receiver.wait_for(len(keep) + 1)
    for received, (_, expected) in zip(got, keep, strict=False):
        check(received, expected)
    assert [m["timereported"] for m in got[4:7]] == [
        "2026-12-07T01:02:03Z",
        "2026-12-07T01:02:03.1-07:30",
        "2026-12-07T01:02:03.000000Z",
    ]
    assert got[4]["hostname"] == got[4]["procid"] == "-"
    assert got[6]["msg"] == ""
    assert got[7]["msg"] == "before#000after"  # NUL: always replaced, whatever the settings


@pytest.mark.parametrize("hard", [False, True], ids=["sigterm", "sigkill"])
def test_down_then_back_on_the_same_port(receiver: RsyslogReceiver, hard: bool) -> None:
    first, expected_first = sent(msg=b"before the outage")
    second, expected_second = sent(msg=b"after the outage")
    port = receiver.port
    sock = connect(receiver)
    sock.sendall(frame(first))
    receiver.wait_for(1)

    receiver.stop(hard=hard)
    assert not receiver.running
    # Its connections closed (an EOF; a reset had it left data unread) ...
    with contextlib.suppress(ConnectionResetError):
        assert sock.recv(1) == b""
    sock.close()
    # ... and nothing listens: a connect is refused, at once.
    started = time.monotonic()
    with pytest.raises(ConnectionRefusedError):
        connect(receiver).close()
    assert time.monotonic() - started < 5

    receiver.start()
    assert receiver.port == port
    with connect(receiver) as again:
        again.sendall(frame(second))
        got = receiver.wait_for(2)
    assert len(got) == 2
    check(got[0], expected_first)
    check(got[1], expected_second)
