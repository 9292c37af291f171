"""Pure: Docker's /events body → event objects, whatever a line holds.

aiohttp's line reader raises past 512 KiB (`LineTooLong`), and an event carries the
container's labels: one container with large labels killed the events stream, and the agent
died on the same replayed event at every restart. Here a line may be up to `max_bytes`
(16 MiB); a longer one, or one that is not a JSON object, is skipped and counted, never fatal.
"""

from __future__ import annotations

import json
from typing import Any

MAX_EVENT_BYTES = 16 * 1024 * 1024


class EventLines:
    def __init__(self, max_bytes: int = MAX_EVENT_BYTES) -> None:
        self.max_bytes = max_bytes
        self._buf = bytearray()
        self._skipping = False  # inside a line too long to keep: dropped up to its newline
        self.skipped: list[str] = []  # why each skipped line was skipped (the caller logs)

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        buf = self._buf
        buf += chunk
        events: list[dict[str, Any]] = []
        start = 0
        while (nl := buf.find(b"\n", start)) >= 0:
            line, start = bytes(buf[start:nl]), nl + 1
            if self._skipping:
                self._skipping = False
                continue
            if line.strip():
                self._parse(line, events)
        del buf[:start]
        if len(buf) > self.max_bytes:
            self.skipped.append(f"an event line over {self.max_bytes} bytes")
            buf.clear()
            self._skipping = True
        return events

    def _parse(self, line: bytes, events: list[dict[str, Any]]) -> None:
        try:
            event = json.loads(line)
        except ValueError as exc:
            self.skipped.append(f"an event line that is not JSON ({exc}): {line[:120]!r}")
            return
        if isinstance(event, dict):
            events.append(event)
        else:
            self.skipped.append(f"an event that is not a JSON object: {line[:120]!r}")
