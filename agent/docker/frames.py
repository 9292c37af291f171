"""Pure decoding of the body of Docker's `/containers/{id}/logs?timestamps=1` into lines.

Fed arbitrary chunks (a header, a timestamp or a character may be cut anywhere), it returns
whole lines (joined and capped by agent/docker/lines.py). Two wire formats:

* multiplexed (no TTY): frames of an 8-byte header — byte 0 the stream (0 stdin, 1 stdout,
  2 stderr, 3 a daemon error), bytes 1-3 zero, bytes 4-7 the big-endian payload size — and
  one log record per frame;
* raw (TTY): records back to back with no framing at all.

A record is "<RFC 3339 timestamp> <message>". A message that does not end in a newline is a
piece of a longer line: Docker's log copier cuts lines at 16 KiB and gives every piece the
first piece's timestamp. Pieces are joined per stream, as bytes, before decoding. Every
piece but the last is exactly 16 KiB (the copier's buffer); a shorter record without a newline
is a whole line (a last piece from the `local` driver, or a last line written at exit).
"""

from __future__ import annotations

import re

from agent.batch import FLAG_REPLACED, STDERR, STDOUT, TTY, LineBatch, Source
from agent.docker.lines import DEFAULT_MAX_LINE_BYTES, DOCKER_PARTIAL_BYTES, LineAssembler
from agent.timestamps import TimestampError, parse_timestamp, seconds_cache

# One frame holds one record (a piece of at most 16 KiB plus its timestamp); anything near this
# bound means the stream is not what we think it is.
MAX_FRAME_BYTES = 16 * 1024 * 1024
_HEADER = 8
_MAX_TIMESTAMP = 40  # "2006-01-02T15:04:05.000000000+07:00" is 35 bytes
_STREAMS = {0: STDOUT, 1: STDOUT, 2: STDERR}
_SYSTEM_ERR = 3


class FrameError(Exception):
    """The byte stream cannot be Docker's log stream: the collector must stop.

    `lines` holds what was decoded from the same chunk before the fault, so that nothing the
    container wrote before it is lost.
    """

    def __init__(self, message: str, lines: LineBatch | None = None) -> None:
        super().__init__(message)
        self.lines = lines


# Docker's own timestamp format (RFC3339NanoFixed, UTC), as it starts every record.
_DOCKER_STAMP = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z ")


def _glued(buf: bytearray, start: int, end: int, ts_ns: int) -> int:
    """In a TTY stream, a record that ends without a newline (a run that ended mid-line) is
    followed at once by the next record (the container's next run), with nothing between:
    where that next record starts inside buf[start:end], or -1.

    A later timestamp in Docker's exact format, right after text without a newline, is taken
    as the next record; a line that prints such a stamp itself is split there (nothing lost).
    """
    z = buf.find(b"Z ", start + 30, end)
    while z >= 0:
        at = z - 29
        if _DOCKER_STAMP.fullmatch(buf, at, z + 2):
            try:
                if parse_timestamp(bytes(buf[at : z + 1])) >= ts_ns:
                    return at
            except TimestampError:
                pass
        z = buf.find(b"Z ", z + 1, end)
    return -1


class FrameDecoder:
    """Incremental decoder for one container's log stream."""

    def __init__(
        self,
        source: Source,
        *,
        tty: bool,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        partial_bytes: int = DOCKER_PARTIAL_BYTES,
    ) -> None:
        if max_line_bytes < 16:
            raise ValueError(f"max_line_bytes must be at least 16, got {max_line_bytes}")
        self.source = source
        self.tty = tty
        self.max_line_bytes = max_line_bytes
        self.partial_bytes = partial_bytes
        self._buf = bytearray()
        self._lines = LineAssembler(
            tty=tty, max_line_bytes=max_line_bytes, partial_bytes=partial_bytes
        )
        # Messages the daemon itself put in the stream ("Error grabbing logs: ..."): not the
        # container's lines, so they are not stored; the collector logs and counts them.
        self.notices: list[str] = []

    def _where(self) -> str:
        return f"container {self.source.container_name} ({self.source.container_id[:12]})"

    def _batch(self) -> LineBatch:
        return LineBatch(self.source)

    def feed(self, data: bytes) -> LineBatch:
        """Decode a chunk; return the lines it completes."""
        out = self._batch()
        self._buf += data
        try:
            if self.tty:
                self._feed_raw(out)
            else:
                self._feed_frames(out)
        except FrameError as exc:
            exc.lines = out
            raise
        return out

    def finish(self) -> LineBatch:
        """End of stream: emit what is held back (a last line without a newline)."""
        out = self._batch()
        if self.tty and self._buf:
            self._feed_raw(out, at_end=True)
        if self._buf:
            self.notices.append(
                f"{self._where()}: stream ended inside a frame; {len(self._buf)} bytes dropped"
            )
            self._buf.clear()
        self._lines.finish(out)
        return out

    # -- multiplexed stream ------------------------------------------------------------

    def _feed_frames(self, out: LineBatch) -> None:
        buf = self._buf
        n = len(buf)
        pos = 0
        cap, pending = self.max_line_bytes, self._lines.pending
        add_stream, add_ns, add_ts = (
            out.streams.append,
            out.timestamps_ns.append,
            out.timestamps.append,
        )
        add_msg, add_flags, add_size = out.messages.append, out.flags.append, out.sizes.append
        try:
            while n - pos >= _HEADER:
                kind = buf[pos]
                if kind > _SYSTEM_ERR or buf[pos + 1] or buf[pos + 2] or buf[pos + 3]:
                    raise FrameError(
                        f"{self._where()}: malformed frame header "
                        f"{bytes(buf[pos : pos + _HEADER]).hex(' ')}: not a Docker log stream"
                    )
                size = int.from_bytes(buf[pos + 4 : pos + 8], "big")
                if size > MAX_FRAME_BYTES:
                    raise FrameError(
                        f"{self._where()}: frame of {size} bytes exceeds {MAX_FRAME_BYTES}: "
                        "not a Docker log stream"
                    )
                end = pos + _HEADER + size
                if end > n:
                    break
                start = pos + _HEADER
                # Fast path, nearly every line: "<Docker's 30-byte timestamp> <text>\n", whole,
                # under the cap, nothing pending on its stream, its second already cached.
                if (
                    kind != _SYSTEM_ERR
                    and size > 31
                    and buf[end - 1] == 0x0A
                    and buf[start + 30] == 0x20
                    and buf[start + 29] == 0x5A
                    and size - 32 <= cap
                    and _STREAMS[kind] not in pending
                ):
                    stamp = bytes(buf[start : start + 30])
                    secs = seconds_cache.get(stamp[:19])
                    frac = stamp[20:29]
                    if secs is not None and frac.isdigit():
                        raw = bytes(buf[start + 31 : end - 1])
                        flags = 0
                        try:
                            text = raw.decode("utf-8")
                        except UnicodeDecodeError:
                            text = raw.decode("utf-8", "replace")
                            flags = FLAG_REPLACED
                        add_stream(_STREAMS[kind])
                        add_ns(secs * 1_000_000_000 + int(frac))
                        add_ts(stamp.decode("ascii"))
                        add_msg(text)
                        add_flags(flags)
                        add_size(len(raw))
                        pos = end
                        continue
                payload = bytes(buf[start:end])
                pos = end
                if kind == _SYSTEM_ERR:
                    self.notices.append(
                        f"{self._where()}: daemon: {payload.decode(errors='replace')}"
                    )
                    continue
                self._record(_STREAMS[kind], payload, out)
        finally:
            del buf[:pos]

    def _record(self, stream: str, payload: bytes, out: LineBatch) -> None:
        sp = payload.find(b" ", 0, _MAX_TIMESTAMP)
        try:
            if sp < 0:
                raise TimestampError("no timestamp")
            ts_ns = parse_timestamp(payload[:sp])
        except TimestampError:
            # The daemon writes its own errors into the stream without a timestamp.
            self.notices.append(
                f"{self._where()}: {stream} record without timestamp: "
                f"{payload[:200].decode(errors='replace')!r}"
            )
            return
        self._lines.message(stream, ts_ns, payload[:sp], payload[sp + 1 :], out)

    # -- raw (TTY) stream --------------------------------------------------------------

    def _feed_raw(self, out: LineBatch, at_end: bool = False) -> None:
        buf = self._buf
        n = len(buf)
        pos = 0
        part = self.partial_bytes
        try:
            while pos < n:
                sp = buf.find(b" ", pos, pos + _MAX_TIMESTAMP)
                if sp < 0:
                    if n - pos < _MAX_TIMESTAMP and not at_end:
                        break
                    raise FrameError(
                        f"{self._where()}: TTY stream without a timestamp at "
                        f"{bytes(buf[pos : pos + 40])!r}"
                    )
                try:
                    ts_ns = parse_timestamp(bytes(buf[pos:sp]))
                except TimestampError as exc:
                    raise FrameError(f"{self._where()}: TTY stream: {exc}") from None
                start = sp + 1
                nl = buf.find(b"\n", start, start + part)
                if nl >= 0:
                    end = nl + 1
                elif n - start >= part:
                    end = start + part  # a 16 KiB piece: the next record follows at once
                elif at_end:
                    end = n
                else:
                    break
                glued = _glued(buf, start, end, ts_ns)
                if glued >= 0:
                    end = glued  # this record had no newline: the next one starts here
                self._lines.message(TTY, ts_ns, bytes(buf[pos:sp]), bytes(buf[start:end]), out)
                pos = end
        finally:
            del buf[:pos]
