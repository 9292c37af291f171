"""The HTTP receivers' sink (OTLP/HTTP, Loki): a batch POSTed gzip'ed counts as received on a
2xx. The headers may hold secrets (a token), never put in a message; those read from a file
(`headers_file`) are read again when the file changes — a token rotated where it is mounted
(Kubernetes rewrites a secret's volume, Vault's agent its sink file) is used from the next
batch on, without a restart.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable, Sequence
from email.utils import parsedate_to_datetime

import aiohttp
import anyio

from agent.forward.sinks import (
    CONNECT_TIMEOUT_S,
    SEND_TIMEOUT_S,
    PartlyRejected,
    Refused,
    SinkError,
)
from agent.render import terminal_safe
from agent.secret_files import (
    Identity,
    SecretFileError,
    header_value_problem,
    identity,
    read_secret,
)

log = logging.getLogger("logagent.forward")

REFUSED = {400, 413, 422}  # what `Refused` means: a line in the batch
MAX_ANSWER = 1 << 16  # of an answer, read at most (a reason, OTLP's partial success)


class HeaderFiles:
    """`headers_file`'s values, read again when a file is another (its inode, times or size
    changed: replace the file, as Kubernetes and `mv` do; a rewrite in place of the same size
    within one clock tick is not seen). A file that gives no value (gone, not a regular file,
    too large, not one line of UTF-8 a header may hold) keeps the value read before: said
    once, and the receiver's 401 then keeps the batches waiting, never lost."""

    def __init__(self, files: Sequence[tuple[str, str]]) -> None:
        self._headers: dict[str, list[str]] = {}  # per path, the headers it gives
        for header, path in files:
            self._headers.setdefault(path, []).append(header)
        self._seen: dict[str, Identity] = {}  # per path, the file last read (or refused)
        self._said: set[str] = set()

    def changed(self) -> dict[str, str]:
        """The headers whose file is not the one read last, with their new values."""
        found: dict[str, str] = {}
        for path, headers in self._headers.items():
            try:
                now = identity(path)
            except OSError as exc:
                self._once(path, f"cannot read it ({exc.strerror or exc})")
                continue
            if self._seen.get(path) == now:
                continue
            self._seen[path] = now  # read once, whatever it gives, until it changes
            try:
                value, self._seen[path] = read_secret(path)  # the file it was read from
            except SecretFileError as exc:
                self._once(path, str(exc))
                continue
            if (problem := header_value_problem(value)) is not None:
                self._once(path, f"not {problem}")
                continue
            self._said.discard(path)
            found.update(dict.fromkeys(headers, value))
        return found

    def _once(self, path: str, why: str) -> None:
        if path not in self._said:
            self._said.add(path)
            log.warning("forward: headers_file %s: %s; the value read before is kept", path, why)


class HttpSink:
    """POSTs to an HTTP receiver (OTLP/HTTP, Loki), gzip'ed. 2xx: received; 429, 408 and
    5xx: tried again (Retry-After honoured); any other 4xx: refused for good. The headers
    may hold secrets (a token): they are never put in a message."""

    def __init__(
        self,
        url: str,
        content_type: str,
        headers: dict[str, str],
        *,
        ca_file: str = "",
        header_files: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.url = url
        self.headers = {**headers, "Content-Type": content_type, "Content-Encoding": "gzip"}
        self._files = HeaderFiles(header_files)
        self._ssl = ssl.create_default_context(cafile=ca_file or None)
        self._session: aiohttp.ClientSession | None = None
        # OTLP: a 2xx may say some records were rejected (partial success): its media type,
        # and what reads (how many, why) from the answer.
        self.partial: tuple[str, Callable[[bytes], tuple[int, str] | None]] | None = None

    async def send(self, payload: bytes) -> None:
        self.headers.update(self._files.changed())
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=SEND_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
            self._session = aiohttp.ClientSession(timeout=timeout)
        try:
            async with self._session.post(
                self.url, data=payload, headers=self.headers, ssl=self._ssl, allow_redirects=False
            ) as answer:
                body = await _read_up_to(answer.content, MAX_ANSWER)
                status = answer.status
                retry_after = _seconds(answer.headers.get("Retry-After"))
                kind = answer.headers.get("Content-Type", "")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise SinkError(f"{self.url}: {exc or type(exc).__name__}") from exc
        said = terminal_safe(body[:500].decode("utf-8", "replace"))  # a NUL: no gap could hold it
        if 200 <= status < 300:
            partial = self.partial
            if partial is not None and kind.startswith(partial[0]) and (got := partial[1](body)):
                raise PartlyRejected(f"{self.url}: {got[1]}", got[0])
            return
        why = f"{self.url}: HTTP {status} {' '.join(said.split())[:200]}".rstrip()
        if status in REFUSED:
            raise Refused(why)
        raise SinkError(why, retry_after=retry_after)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            with anyio.CancelScope(shield=True):
                await session.close()


def _seconds(value: str | None, now: float | None = None) -> float | None:
    """Retry-After in seconds: a number of them, or an HTTP date (RFC 9110 allows both; a
    proxy in front of a receiver may send the date), at most an hour; None if neither."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), 3600.0)
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return min(max(when - (time.time() if now is None else now), 0.0), 3600.0)


async def _read_up_to(content: aiohttp.StreamReader, limit: int) -> bytes:
    """The answer's body, up to `limit` bytes: `read(n)` gives what has come so far, and an
    OTLP partial success split over two chunks would not parse (taken as a full success:
    its rejected lines lost without a gap)."""
    parts: list[bytes] = []
    size = 0
    while size < limit and (part := await content.read(limit - size)):
        parts.append(part)
        size += len(part)
    return b"".join(parts)
