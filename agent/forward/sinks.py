"""Where a batch of records goes, and when it counts as received (the forwarder commits its
position only then): a file, once written and fsync'ed; a syslog receiver over TCP, once its
TCP has acknowledged every byte and the connection is still open.

Plain TCP syslog (RFC 6587) has no answer of the receiver's own: a receiver killed with bytes
it had not read yet loses them. What is checked here — the send queue drained (Linux's
SIOCOUTQ), no end of stream — catches a receiver that is down, restarted or unreachable,
which a successful `send` alone does not (the first send on a dead connection succeeds).
"""

from __future__ import annotations

import fcntl
import os
import socket
import ssl
import stat
import struct
import termios
from typing import Protocol

import anyio
from anyio.abc import ByteStream, SocketAttribute

SEND_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 10.0


class SinkError(Exception):
    """A batch not received; the message says why (retried with a pause, at least
    `retry_after` seconds when the receiver said so)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Refused(Exception):
    """The receiver refused this batch for what it holds (HTTP 400, 413, 422): sent again it
    would be refused again. Split until the line it refuses is alone; that line is recorded
    as a gap of the destination, then passed. Any other answer (a redirect, 401 after a
    token's rotation, 404 or 405 behind a proxy being set up, 415 or 431 of a receiver
    configured for another client) is about the receiver, not the lines: tried again, never
    a gap (a gap of every batch until the config is mended would drop the backlog)."""


class PartlyRejected(Exception):
    """A 2xx that says `rejected` of the batch's records were not taken (OTLP's partial
    success; which ones it does not say): the batch is passed, the count a gap."""

    def __init__(self, message: str, rejected: int) -> None:
        super().__init__(message)
        self.rejected = rejected


class Sink(Protocol):
    async def send(self, payload: bytes) -> None: ...

    async def aclose(self) -> None: ...


class FileSink:
    """NDJSON appended to a file (the owner's alone: lines may hold secrets)."""

    def __init__(self, path: str) -> None:
        self.path = path

    async def send(self, payload: bytes) -> None:
        try:
            await anyio.to_thread.run_sync(self._append, payload)
        except OSError as exc:
            raise SinkError(f"{self.path}: {exc.strerror or exc}") from exc

    def _append(self, data: bytes) -> None:
        """Appended whole or not at all (a write cut short, a full disk: the file is cut
        back, so a retry never follows half a line). Never through a symlink, and never to
        a file others may read or that is not ours: the lines may hold secrets."""
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        fd = os.open(self.path, flags, 0o600)
        try:
            info = os.fstat(fd)
            if (
                info.st_uid != os.geteuid()
                or info.st_mode & 0o077
                or not stat.S_ISREG(info.st_mode)
            ):
                raise OSError(0, "not a file of the agent's own, mode 0600: not written to")
            start = info.st_size
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except OSError:
                os.ftruncate(fd, start)
                raise
        finally:
            os.close(fd)

    async def aclose(self) -> None:
        return None


class SyslogSink:
    """One connection to a syslog receiver, made again after any failure."""

    def __init__(self, host: str, port: int, *, tls: bool = False, ca_file: str = "") -> None:
        self.host, self.port = host, port
        self._ssl: ssl.SSLContext | None = None
        if tls:  # verified: against the CA file given, else the system's
            self._ssl = ssl.create_default_context(cafile=ca_file or None)
        self._stream: ByteStream | None = None

    async def send(self, payload: bytes) -> None:
        try:
            with anyio.fail_after(CONNECT_TIMEOUT_S + SEND_TIMEOUT_S):
                stream = await self._connected()
                await stream.send(payload)
                await self._received(stream)
        except (OSError, anyio.BrokenResourceError, anyio.EndOfStream, TimeoutError,
                ssl.SSLError, SinkError) as exc:  # fmt: skip
            await self.aclose()
            raise SinkError(f"syslog {self.host}:{self.port}: {exc or type(exc).__name__}") from exc

    async def _connected(self) -> ByteStream:
        if self._stream is None:
            if self._ssl is None:
                self._stream = await anyio.connect_tcp(self.host, self.port)
            else:
                self._stream = await anyio.connect_tcp(
                    self.host, self.port, ssl_context=self._ssl, tls_standard_compatible=False
                )
        return self._stream

    async def _received(self, stream: ByteStream) -> None:
        """Wait until the receiver's TCP acknowledged every byte; an end of stream (the
        receiver gone) is a failure, whatever `send` said."""
        # asyncio's socket wrapper has no recv: the same socket through a duplicate of its fd
        fd = stream.extra(SocketAttribute.raw_socket).fileno()
        with socket.socket(fileno=os.dup(fd)) as sock:
            while True:
                try:
                    peeked = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
                except BlockingIOError:
                    peeked = None
                if peeked == b"":
                    raise SinkError("the receiver closed the connection")
                if _unacknowledged(sock) == 0:
                    return
                await anyio.sleep(0.005)

    async def aclose(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await stream.aclose()


def _unacknowledged(sock: socket.socket) -> int:
    """Bytes sent that the peer's TCP has not acknowledged yet (Linux's SIOCOUTQ)."""
    answer = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, bytes(4))
    return int(struct.unpack("i", answer)[0])
