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

import contextlib
import re
import struct
import time
from collections.abc import Callable

from agent.batch import FLAG_REPLACED, STDERR, STDOUT, TTY, LineBatch, Source
from agent.docker.lines import DEFAULT_MAX_LINE_BYTES, DOCKER_PARTIAL_BYTES, LineAssembler
from agent.timestamps import TimestampError, parse_timestamp, seconds_cache

# One frame holds one record (a piece of at most 16 KiB plus its timestamp); anything near this
# bound means the stream is not what we think it is.
MAX_FRAME_BYTES = 16 * 1024 * 1024
_HEADER = 8
# How far past the reading's clock a stamp may be and still be Docker's own (the host's clock
# stepped back since it was written): beyond, it is text a container printed.
FUTURE_MARGIN_NS = 60 * 1_000_000_000
_MAX_TIMESTAMP = 40  # "2006-01-02T15:04:05.000000000+07:00" is 35 bytes
_STREAMS = {0: STDOUT, 1: STDOUT, 2: STDERR}
_SYSTEM_ERR = 3
# A header read as two big-endian words: the first is the stream in its top byte and zeros,
# so one dict lookup both checks it and names the stream.
_HEADER_WORDS = struct.Struct(">II").unpack_from
_KINDS = {kind << 24: stream for kind, stream in _STREAMS.items()}
_SYSTEM_ERR_WORD = _SYSTEM_ERR << 24


class FrameError(Exception):
    """The byte stream cannot be Docker's log stream: the collector must stop.

    `lines` holds what was decoded from the same chunk before the fault, so that nothing the
    container wrote before it is lost.
    """

    def __init__(self, message: str, lines: LineBatch | None = None) -> None:
        super().__init__(message)
        self.lines = lines


def _without_nul(out: LineBatch) -> LineBatch:
    """Its lines with each NUL as U+FFFD, flagged replaced (as invalid UTF-8 is): PostgreSQL's
    text cannot hold a NUL, and SQLite's search index and LENGTH stop at one. So a line is
    the same text on either store, and the same as the collector holds when it compares a
    line Docker sends again with the stored one. One C-speed look a chunk."""
    messages = out.messages
    if messages and "\x00" in "".join(messages):
        for i, message in enumerate(messages):
            if "\x00" in message:
                messages[i] = message.replace("\x00", "\ufffd")
                out.flags[i] |= FLAG_REPLACED
    return out


# Docker's own timestamp format (RFC3339NanoFixed, UTC), as it starts every record.
_DOCKER_STAMP = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z ")


def _glued(buf: bytes, start: int, end: int, ts_ns: int, latest_ns: int) -> int:
    """In a TTY stream, a record that ends without a newline (a run that ended mid-line) is
    followed at once by the next record (the container's next run), with nothing between:
    where that next record starts inside buf[start:end], or -1.

    A later timestamp in Docker's exact format, right after text without a newline, is taken
    as the next record; a line that prints such a stamp itself is split there (nothing lost).
    Not one after `latest_ns` (the reading's clock and a margin): Docker stamps a record when
    it writes it, so a stamp from the future is text (`echo "next run at 2031-...Z ok"`
    moved the container's position to 2031, and every later line was held back as re-sent).
    """
    z = buf.find(b"Z ", start + 30, end)
    while z >= 0:
        at = z - 29
        if _DOCKER_STAMP.fullmatch(buf, at, z + 2):
            try:
                if ts_ns <= parse_timestamp(buf[at : z + 1]) <= latest_ns:
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
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        if max_line_bytes < 16:
            raise ValueError(f"max_line_bytes must be at least 16, got {max_line_bytes}")
        self.source = source
        self.tty = tty
        self.clock = clock  # the wall clock (TTY records are told apart by their stamps)
        self.max_line_bytes = max_line_bytes
        self.partial_bytes = partial_bytes
        # The bytes of an unfinished frame or record, and how many the frame needs in all: a
        # frame of megabytes is gathered here without parsing each chunk again.
        self._rest = bytearray()
        self._need = 0
        self._lines = LineAssembler(
            tty=tty, max_line_bytes=max_line_bytes, partial_bytes=partial_bytes
        )
        # Messages the daemon itself put in the stream ("Error grabbing logs: ..."): not the
        # container's lines, so they are not stored; the collector logs and counts them.
        self.notices: list[str] = []
        # Per stream, a read position's stamp: a re-read from `since` (a second before the
        # position) sends again what was read; its lines before the stamp are dropped here,
        # undecoded, until the stream's first line at or after it (or one not on the fast
        # path), as the cursor's Skipper would drop them (a firehose's end re-read ~100,000
        # lines: 11 % of the agent's time on the GIL in bench/run.py's alerts part).
        self.skip_before: dict[str, int] = {}

    def _where(self) -> str:
        return f"container {self.source.container_name} ({self.source.container_id[:12]})"

    def _batch(self) -> LineBatch:
        return LineBatch(self.source)

    def feed(self, data: bytes) -> LineBatch:
        """Decode a chunk; return the lines it completes."""
        out = self._batch()
        if type(data) is not bytes:  # slices must be bytes: the seconds cache hashes them
            data = bytes(data)
        rest = self._rest
        if rest:
            rest += data
            if len(rest) < self._need:
                return out
            data = bytes(rest)
            rest.clear()
        try:
            if self.tty:
                self._feed_raw(data, out)
            else:
                self._feed_frames(data, out)
        except FrameError as exc:
            exc.lines = _without_nul(out)
            raise
        return _without_nul(out)

    @property
    def holding(self) -> bool:
        """Whether part of a container's line or frame is held for the next chunk (not of a
        frame of the daemon's own, stream 3)."""
        return bool(self._lines.pending) or self._rest_is_a_containers()

    def _rest_is_a_containers(self) -> bool:
        """Unfinished bytes are held, and not of a frame of the daemon's own (stream 3)."""
        rest = self._rest
        return bool(rest) and (self.tty or rest[0] != _SYSTEM_ERR)

    def held_from(self) -> int | None:
        """The stamp of the oldest line held in part, if its stamp has come."""
        stamps = [p.timestamp_ns for p in self._lines.pending.values()]
        rest = self._rest
        head = 0 if self.tty else _HEADER
        if self._rest_is_a_containers() and len(rest) >= head + 30:
            with contextlib.suppress(TimestampError):  # not one: not known
                stamps.append(parse_timestamp(bytes(rest[head : head + 30])))
        return min(stamps) if stamps else None

    def _keep(self, data: bytes, pos: int, need: int = 0) -> None:
        """Hold data[pos:] (an unfinished frame or record) for the next chunk."""
        if pos < len(data):
            self._rest += memoryview(data)[pos:]
        self._need = need

    def finish(self) -> LineBatch:
        """End of stream: emit what is held back (a last line without a newline)."""
        out = self._batch()
        if self.tty and self._rest:
            data = bytes(self._rest)
            self._rest.clear()
            self._feed_raw(data, out, at_end=True)
        if self._rest:
            self.notices.append(
                f"{self._where()}: stream ended inside a frame; {len(self._rest)} bytes dropped"
            )
            self._rest.clear()
        self._lines.finish(out)
        return _without_nul(out)

    # -- multiplexed stream ------------------------------------------------------------

    def _feed_frames(self, buf: bytes, out: LineBatch) -> None:
        n = len(buf)
        pos = 0
        need = 0
        cap, pending, skip = self.max_line_bytes, self._lines.pending, self.skip_before
        words, kinds, cache = _HEADER_WORDS, _KINDS, seconds_cache
        add_stream, add_ns, add_ts = (
            out.streams.append,
            out.timestamps_ns.append,
            out.timestamps.append,
        )
        add_msg, add_flags, add_size = out.messages.append, out.flags.append, out.sizes.append
        try:
            while n - pos >= _HEADER:
                word, size = words(buf, pos)
                stream = kinds.get(word)
                if stream is None and word != _SYSTEM_ERR_WORD:
                    raise FrameError(
                        f"{self._where()}: malformed frame header "
                        f"{buf[pos : pos + _HEADER].hex(' ')}: not a Docker log stream"
                    )
                if size > MAX_FRAME_BYTES:
                    raise FrameError(
                        f"{self._where()}: frame of {size} bytes exceeds {MAX_FRAME_BYTES}: "
                        "not a Docker log stream"
                    )
                start = pos + _HEADER
                end = start + size
                if end > n:
                    need = end - pos
                    break
                # Fast path, nearly every line: "<Docker's 30-byte timestamp> <text>\n", whole,
                # under the cap, nothing pending on its stream, its second already cached (so
                # the stamp is Docker's own UTC spelling, and its text is not kept).
                if (
                    buf[end - 1] == 0x0A
                    and size > 31
                    and buf[start + 29] == 0x5A
                    and buf[start + 30] == 0x20
                    and buf[start + 19] == 0x2E
                    and size - 32 <= cap
                    and stream is not None
                    and stream not in pending
                ):
                    secs = cache.get(buf[start : start + 19])
                    frac = buf[start + 20 : start + 29]
                    if secs is not None and frac.isdigit():
                        ns = secs * 1_000_000_000 + int(frac)
                        if skip and stream in skip:
                            if ns < skip[stream]:
                                pos = end
                                continue
                            del skip[stream]  # past it: the Skipper decides from here
                        raw = buf[start + 31 : end - 1]
                        try:
                            add_msg(raw.decode("utf-8"))
                            add_flags(0)
                        except UnicodeDecodeError:
                            add_msg(raw.decode("utf-8", "replace"))
                            add_flags(FLAG_REPLACED)
                        add_stream(stream)
                        add_ns(ns)
                        add_ts("")  # Docker's own spelling: derived on read (stored_text)
                        add_size(size - 32)
                        pos = end
                        continue
                payload = buf[start:end]
                pos = end
                if stream is None:
                    self.notices.append(
                        f"{self._where()}: daemon: {payload.decode(errors='replace')}"
                    )
                    continue
                if skip:
                    skip.pop(stream, None)  # off the fast path: the Skipper's alone
                self._record(stream, payload, out)
        finally:
            self._keep(buf, pos, need)

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

    def _feed_raw(self, buf: bytes, out: LineBatch, at_end: bool = False) -> None:
        n = len(buf)
        pos = 0
        latest_ns = self.clock() + FUTURE_MARGIN_NS  # no record of this read is stamped later
        part = self.partial_bytes
        try:
            while pos < n:
                sp = buf.find(b" ", pos, pos + _MAX_TIMESTAMP)
                if sp < 0:
                    if n - pos < _MAX_TIMESTAMP and not at_end:
                        break
                    raise FrameError(
                        f"{self._where()}: TTY stream without a timestamp at "
                        f"{buf[pos : pos + 40]!r}"
                    )
                try:
                    ts_ns = parse_timestamp(buf[pos:sp])
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
                glued = _glued(buf, start, end, ts_ns, latest_ns)
                if glued >= 0:
                    end = glued  # this record had no newline: the next one starts here
                self._lines.message(TTY, ts_ns, buf[pos:sp], buf[start:end], out)
                pos = end
        finally:
            self._keep(buf, pos)
