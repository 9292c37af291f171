"""Pure: records of one stream → lines. Docker's 16 KiB pieces joined, the cap applied.

A message that does not end in a newline is a piece of a longer line: Docker's log copier
cuts lines at 16 KiB and gives every piece the first piece's timestamp. Pieces are joined per
stream, as bytes, before decoding. Every piece but the last is exactly 16 KiB (the copier's
buffer); a shorter record without a newline is a whole line (a last piece from the `local`
driver, or a last line written at exit). A line longer than `max_line_bytes` is emitted as
flagged pieces of at most that size, cut on UTF-8 character boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.batch import FLAG_CONTINUED, FLAG_REPLACED, FLAG_TRUNCATED, LineBatch
from agent.timestamps import stored_text

DEFAULT_MAX_LINE_BYTES = 1024 * 1024
# Docker's log copier buffer (daemon/logger/copier.go): a longer line arrives in pieces of this.
DOCKER_PARTIAL_BYTES = 16 * 1024


@dataclass(slots=True)
class _Pending:
    """A line still arriving in pieces: the first piece's timestamp, the bytes so far."""

    timestamp_ns: int
    timestamp: str
    data: bytearray = field(default_factory=bytearray)
    pieces_out: int = 0  # rows already emitted for this line (when it exceeds the cap)


def _char_boundary(data: bytearray, cut: int) -> int:
    """Move a cut back to the start of a UTF-8 character so no piece splits one."""
    back = cut
    while back > 0 and cut - back < 3 and (data[back] & 0xC0) == 0x80:
        back -= 1
    return back if back > 0 else cut


class LineAssembler:
    """Per stream, the line still arriving in pieces; emits whole lines (or capped pieces)."""

    def __init__(self, *, tty: bool, max_line_bytes: int, partial_bytes: int) -> None:
        self.tty = tty
        self.max_line_bytes = max_line_bytes
        self.partial_bytes = partial_bytes
        self.pending: dict[str, _Pending] = {}  # the frame decoder's fast path reads it

    def finish(self, out: LineBatch) -> None:
        """End of stream: what is held back is a last line without a newline."""
        for stream, pending in list(self.pending.items()):
            self._close_line(stream, pending, out)
        self.pending.clear()

    def message(self, stream: str, ts_ns: int, ts_text: bytes, body: bytes, out: LineBatch) -> None:
        # Only a full 16 KiB piece continues: Docker cuts nowhere else, and the `local` driver
        # sends a long line's last piece without its newline.
        complete = True
        if body.endswith(b"\n"):
            body = body[:-1]
        elif len(body) >= self.partial_bytes:
            complete = False
        pending = self.pending.get(stream)
        if pending is None:
            if complete:
                if self.tty and body.endswith(b"\r"):
                    body = body[:-1]
                if len(body) <= self.max_line_bytes:
                    self._emit(out, stream, ts_ns, stored_text(ts_text, ts_ns), body, 0)
                    return
            pending = _Pending(ts_ns, stored_text(ts_text, ts_ns))
            self.pending[stream] = pending
            pending.data += body
        else:
            pending.data += body
            if complete and self.tty and pending.data.endswith(b"\r"):
                del pending.data[-1:]
        data = pending.data
        cap = self.max_line_bytes
        while len(data) > cap:
            cut = _char_boundary(data, cap)
            flags = FLAG_TRUNCATED | (FLAG_CONTINUED if pending.pieces_out else 0)
            self._emit(out, stream, pending.timestamp_ns, pending.timestamp, data[:cut], flags)
            del data[:cut]
            pending.pieces_out += 1
        if complete:
            self._close_line(stream, pending, out)
            del self.pending[stream]

    def _close_line(self, stream: str, pending: _Pending, out: LineBatch) -> None:
        flags = FLAG_CONTINUED if pending.pieces_out else 0
        self._emit(out, stream, pending.timestamp_ns, pending.timestamp, pending.data, flags)

    @staticmethod
    def _emit(
        out: LineBatch, stream: str, ts_ns: int, ts_text: str, raw: bytes | bytearray, flags: int
    ) -> None:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("utf-8", "replace")
            flags |= FLAG_REPLACED
        out.append(stream, ts_ns, ts_text, text, flags, len(raw))
