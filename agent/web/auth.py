"""Who may read the viewer: loopback needs nothing; any other address a token or a users
file of hashed passwords, or the viewer refuses to start.

Passwords are PBKDF2-SHA256 (stdlib), one `name:pbkdf2_sha256$iterations$salt$hash` a line,
made by `logagent web --hash-password`. A password is hashed on a worker thread, a few at a
time (never in the event loop, never every thread); a name that is not in the file costs the
same hashing as one that is (timing does not tell which names exist); and a client, or a user
name, that keeps failing is answered 429 with Retry-After, before any hashing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import math
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.to_thread

ITERATIONS = 200_000
SCHEME = "pbkdf2_sha256"
HASHING_THREADS = 2  # passwords hashed at once: the rest wait, and the thread pool stays free
FAILURES = 5  # failed logins a client (or a user name) may make at once ...
FAILURE_WINDOW = 60.0  # ... and then one more every FAILURE_WINDOW / FAILURES seconds
TRACKED = 10_000  # clients and names whose failures are remembered (the longest idle go first)
_NAME = 256  # of a user name given, what its failures are counted by


class AccessError(ValueError):
    """The viewer cannot be served as configured: said in one line."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    salt = salt or os.urandom(16)
    digest = _pbkdf2(password.encode(), salt, iterations)
    b64 = base64.b64encode
    return f"{SCHEME}${iterations}${b64(salt).decode()}${b64(digest).decode()}"


def _pbkdf2(password: bytes, salt: bytes, iterations: int) -> bytes:
    """The one place a password is hashed (tests count its calls and their threads)."""
    return hashlib.pbkdf2_hmac("sha256", password, salt, iterations)


def _verify(password: str, stored: str) -> bool:
    try:
        scheme, iterations, salt, digest = stored.split("$")
        if scheme != SCHEME:
            return False
        got = _pbkdf2(password.encode(), base64.b64decode(salt), int(iterations))
        return hmac.compare_digest(got, base64.b64decode(digest))
    except (ValueError, TypeError):
        return False


def _iterations(stored: str) -> int:
    try:
        return int(stored.split("$")[1])
    except (IndexError, ValueError):
        return ITERATIONS


def decoy_hash(users: dict[str, str]) -> str:
    """What a name not in the users file is checked against: a hash of as many iterations as
    the file's (the most, where they differ) that no password matches (a random digest)."""
    iterations = max((_iterations(s) for s in users.values()), default=ITERATIONS)
    b64 = base64.b64encode
    salt, digest = b64(os.urandom(16)).decode(), b64(os.urandom(32)).decode()
    return f"{SCHEME}${iterations}${salt}${digest}"


def load_users(path: Path) -> dict[str, str]:
    """name → hash; AccessError for a file that cannot be used (named, with its line)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise AccessError(f"web.users_file: cannot read {path}: {exc.strerror}") from None
    users: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, stored = line.partition(":")
        if not sep or not name or not stored.startswith(SCHEME + "$"):
            raise AccessError(
                f"web.users_file: line {n} of {path} is not name:{SCHEME}$... "
                "(make one with `logagent web --hash-password`)"
            )
        users[name] = stored
    if not users:
        raise AccessError(f"web.users_file: {path} has no users")
    return users


class FailureLimit:
    """Failed logins per key (a client, a user name): a token bucket of `burst` attempts,
    refilled over `window` seconds. An attempt is charged when it starts (so that a hundred
    at once are not a hundred hashes) and given back when it succeeds."""

    def __init__(
        self,
        burst: int = FAILURES,
        window: float = FAILURE_WINDOW,
        *,
        tracked: int = TRACKED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = burst
        self.rate = burst / window  # attempts given back per second
        self.tracked = tracked
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # → (left, when)

    def _left(self, key: str, now: float) -> float:
        left, when = self._buckets.get(key, (self.burst, now))
        return min(self.burst, left + (now - when) * self.rate)

    def retry_after(self, key: str) -> float:
        """Seconds until `key` may try again; 0: now."""
        left = self._left(key, self.clock())
        return 0.0 if left >= 1 else (1 - left) / self.rate

    def charge(self, key: str) -> None:
        self._set(key, -1)

    def refund(self, key: str) -> None:
        self._set(key, +1)

    def _set(self, key: str, change: int) -> None:
        now = self.clock()
        left = min(self.burst, self._left(key, now) + change)
        if left >= self.burst:
            self._buckets.pop(key, None)  # full again: nothing to remember
            return
        self._buckets[key] = (left, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.tracked:
            self._buckets.popitem(last=False)


@dataclass(frozen=True)
class Verdict:
    """Whether a request may be served; `retry_after` (seconds, > 0): refused, because its
    client or user name failed too often (429)."""

    allowed: bool
    retry_after: int = 0


ALLOWED = Verdict(True)
DENIED = Verdict(False)


def _limited(seconds: float) -> Verdict:
    return Verdict(False, max(1, math.ceil(seconds)))


def client_key(address: str | None) -> str:
    """Whose failures an attempt counts as: its address; an IPv6 client by its /64, which
    is what one site holds."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return f"client {address or '?'}"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return f"client {ip.ipv4_mapped}"
        return f"client {ipaddress.IPv6Network((ip, 64), strict=False)}"
    return f"client {ip}"


@dataclass
class Access:
    """What a request must show: nothing (loopback), a token, or a user's password."""

    token: str = ""
    users: dict[str, str] = field(default_factory=dict)
    failures: FailureLimit = field(default_factory=FailureLimit)
    hashing_threads: int = HASHING_THREADS
    _known: set[str] = field(default_factory=set, init=False)  # Basic credentials verified
    _decoy: str = field(init=False, default="")
    hashing: anyio.CapacityLimiter = field(init=False)  # the worker threads PBKDF2 may hold

    def __post_init__(self) -> None:
        self._decoy = decoy_hash(self.users)
        self.hashing = anyio.CapacityLimiter(self.hashing_threads)

    @property
    def open(self) -> bool:
        return not self.token and not self.users

    def check_token(self, token: str, client: str | None) -> Verdict:
        """/login?token=…: a wrong token counts as a failure of its client."""
        who = client_key(client)
        if wait := self.failures.retry_after(who):
            return _limited(wait)
        if self.token and _same(token, self.token):
            return ALLOWED
        self.failures.charge(who)
        return DENIED

    async def check(
        self, authorization: str | None, cookie_token: str | None, client: str | None
    ) -> Verdict:
        """A request's credentials: the token (cookie or Bearer) or a user's password.

        A client that failed too often waits, whatever it shows (else a right guess among its
        refused ones would still answer 200); a request that shows nothing is not a failure.
        """
        if self.open:
            return ALLOWED
        who = client_key(client)
        if wait := self.failures.retry_after(who):
            return _limited(wait)
        if self.token and cookie_token and _same(cookie_token, self.token):
            return ALLOWED
        if self.token and authorization and authorization.startswith("Bearer "):
            if _same(authorization[7:].strip(), self.token):
                return ALLOWED
        elif self.users and authorization and authorization.startswith("Basic "):
            return await self._basic(authorization[6:].strip(), who)
        if authorization or (self.token and cookie_token):  # shown, and wrong
            self.failures.charge(who)
        return DENIED

    async def _basic(self, credentials: str, who: str) -> Verdict:
        key = hashlib.sha256(credentials.encode("utf-8", "replace")).hexdigest()
        if key in self._known:  # PBKDF2 once per credential, not per request
            return ALLOWED
        self.failures.charge(who)
        try:
            decoded = base64.b64decode(credentials, validate=True).decode()
        except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
            return DENIED
        name, _, password = decoded.partition(":")
        user = f"user {name[:_NAME]}"
        if wait := self.failures.retry_after(user):
            return _limited(wait)
        self.failures.charge(user)
        stored = self.users.get(name, self._decoy)  # the same work for a name not there
        right = await anyio.to_thread.run_sync(_verify, password, stored, limiter=self.hashing)
        if not right or name not in self.users:
            return DENIED
        self.failures.refund(who)
        self.failures.refund(user)
        if len(self._known) < 1000:
            self._known.add(key)
        return ALLOWED


def _same(given: str, secret: str) -> bool:
    """Constant-time, and for any text a client sends (compare_digest takes ASCII str only)."""
    return hmac.compare_digest(given.encode("utf-8", "replace"), secret.encode())


def access_for(host: str, token: str, users_file: str) -> Access:
    """The access rule for a listen address; AccessError where it would be open to others."""
    if token and len(token) < 16:
        raise AccessError("web.token: at least 16 characters")
    users = load_users(Path(users_file)) if users_file else {}
    access = Access(token=token, users=users)
    if access.open and not is_loopback(host):
        raise AccessError(
            f"web: refusing to serve logs on {host}, beyond loopback, without web.token or "
            "web.users_file"
        )
    return access
