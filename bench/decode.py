"""The frame decoder alone: CPU per line over Docker's multiplexed stream (#19, bench/README.md).

`python bench/decode.py [lines]` — no Docker: frames of 100-byte lines with Docker's own
timestamps, fed in 64 KiB chunks (a firehose read) and in chunks of 8 frames (a chatty
stream's read after a rest). Prints the best of 5 (this measures code, not the machine).
"""

from __future__ import annotations

import struct
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from agent.batch import Source
from agent.cursor import Cursor
from agent.docker.frames import FrameDecoder


def stream(n: int) -> bytes:
    frames = []
    for i in range(n):
        second = datetime.fromtimestamp(1_800_000_000 + i // 50_000, UTC)
        stamp = f"{second:%Y-%m-%dT%H:%M:%S}.{(i * 997) % 10**9:09d}Z".encode()
        payload = stamp + b" " + b"x" * 99 + b"\n"
        frames.append(struct.pack(">BxxxI", 1, len(payload)) + payload)
    return b"".join(frames)


def best(n: int, chunks: list[bytes], *, reread: bool | None = None) -> float:
    """µs of CPU per line, best of 5. `reread`: the lines are a re-read before a position
    (as at a stream's end: a second of lines sent again), dropped by the decoder (True) or
    decoded and dropped by the cursor's Skipper (False)."""
    runs = []
    position = {"stdout": [2**62, 0]}
    for _ in range(5):
        decoder = FrameDecoder(Source("c" * 64, "bench"), tty=False)
        skipper = Cursor({s: list(p) for s, p in position.items()}).skipper()
        if reread:
            decoder.skip_before = {s: p[0] for s, p in position.items()}
        started = time.process_time()
        if reread is None:
            lines = sum(len(decoder.feed(chunk)) for chunk in chunks)
        else:
            lines = sum(len(skipper.new(decoder.feed(chunk))) for chunk in chunks)
        runs.append(time.process_time() - started)
        assert lines == (n if reread is None else 0), lines
    return 1e6 * min(runs) / n


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    data = stream(n)
    frame = len(data) // n
    for label, size in (("64 KiB chunks", 65536 - 65536 % frame), ("8 frames a chunk", 8 * frame)):
        chunks = [data[i : i + size] for i in range(0, len(data), size)]
        print(f"decode {n:,} lines, {label}: {best(n, chunks):.3f} µs per line")
    chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)]
    for label, skip in (("decoded, then the Skipper", False), ("dropped by the decoder", True)):
        print(f"a re-read before the position, 64 KiB chunks, {label}: "
              f"{best(n, chunks, reread=skip):.3f} µs per line")  # fmt: skip


if __name__ == "__main__":
    main()
