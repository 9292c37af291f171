"""The one record that flows from the frame decoder to storage.

It lives outside both so that neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass

STDOUT = "stdout"
STDERR = "stderr"
TTY = "tty"

# A line longer than the cap is stored as several rows; the flags let a reader join them back.
FLAG_TRUNCATED = 1  # more pieces of this line follow in the next row of the same stream
FLAG_CONTINUED = 2  # this row continues the previous row of the same stream
FLAG_REPLACED = 4  # the bytes were not valid UTF-8: undecodable bytes became U+FFFD


@dataclass(slots=True)
class LogEntry:
    """One line as Docker sent it: its own timestamp (ns and exact text), stream and text.

    Not frozen: a frozen dataclass's __init__ costs several times more, on every line.
    """

    container_id: str
    container_name: str
    stream: str
    timestamp_ns: int
    timestamp: str
    message: str
    flags: int = 0
    size: int = 0  # bytes of the raw message, before decoding

    @property
    def truncated(self) -> bool:
        return bool(self.flags & (FLAG_TRUNCATED | FLAG_CONTINUED))
