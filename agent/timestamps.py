"""Docker's RFC 3339 timestamps ↔ integer nanoseconds since the epoch (pure, cached)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_RFC3339 = re.compile(
    rb"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|z|[+-]\d{2}:\d{2})"
)

# Docker writes "2006-01-02T15:04:05.000000000Z": the first 19 bytes repeat for a whole second,
# so their value is cached and only the fraction is parsed per line.
seconds_cache: dict[bytes, int] = {}  # also read by the frame decoder's fast path
_CACHE_MAX = 4096


# What a signed 64-bit count of nanoseconds holds (the store's BIGINT): 1677-09-21 to
# 2262-04-11; the whole seconds inside it.
NS_RANGE = range(-(2**63), 2**63)
_MIN_SECONDS = NS_RANGE.start // 1_000_000_000 + 1
_MAX_SECONDS = (NS_RANGE.stop - 1) // 1_000_000_000


class TimestampError(ValueError):
    """Text that is not an RFC 3339 timestamp."""


def parse_timestamp(text: bytes) -> int:
    """Nanoseconds since the epoch of an RFC 3339 timestamp with up to 9 fraction digits."""
    if len(text) == 30 and text[29] == 0x5A and text[19] == 0x2E:  # "...SS.nnnnnnnnnZ"
        head = text[:19]
        secs = seconds_cache.get(head)
        frac = text[20:29]
        if secs is not None and frac.isdigit():
            return secs * 1_000_000_000 + int(frac)
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise TimestampError(f"not an RFC 3339 timestamp: {text[:40]!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    try:
        base = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError as exc:
        raise TimestampError(f"not an RFC 3339 timestamp: {text[:40]!r} ({exc})") from None
    secs = int(base.timestamp())
    zone = m.group(8)
    if zone not in (b"Z", b"z"):
        sign = 1 if zone[0:1] == b"+" else -1
        secs -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    if not _MIN_SECONDS <= secs < _MAX_SECONDS:  # a stamp printed by anyone (a TTY's text)
        raise TimestampError(f"timestamp out of range (1678 to 2262): {text[:40]!r}")
    if zone in (b"Z", b"z") and m.group(7) is not None and text[10] == 0x54:  # Docker's own
        if len(seconds_cache) >= _CACHE_MAX:
            seconds_cache.clear()
        seconds_cache[text[:19]] = secs
    frac_text = m.group(7) or b""
    nanos = int(frac_text.ljust(9, b"0")) if frac_text else 0
    return secs * 1_000_000_000 + nanos


_seconds_text: dict[int, str] = {}


def format_timestamp(ns: int) -> str:
    """Docker's own fixed format (UTC, 9 fraction digits): what `docker logs -t` prints for a
    json-file log, and what a stored line with no timestamp text of its own shows (the read
    side derives it per row, so the text of each second is cached)."""
    secs = ns // 1_000_000_000
    head = _seconds_text.get(secs)
    if head is None:
        if len(_seconds_text) >= _CACHE_MAX:
            _seconds_text.clear()
        head = _seconds_text[secs] = datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{head}.{ns % 1_000_000_000:09d}Z"


def stored_text(text: bytes, ns: int) -> str:
    """The timestamp text a row keeps: none ("") when it is Docker's own UTC spelling of `ns`,
    which the read side derives (a row ~30 bytes smaller, a string fewer per line read);
    otherwise the text as sent (the `local` driver writes the daemon's zone, for one)."""
    sent = text.decode("ascii")
    return "" if sent == format_timestamp(ns) else sent


def since_param(ns: int) -> str:
    """The `since` query value Docker's logs endpoint takes: seconds.nanoseconds."""
    secs, nanos = divmod(ns, 1_000_000_000)
    return f"{secs}.{nanos:09d}"
