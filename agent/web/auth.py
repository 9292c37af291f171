"""Who may read the viewer (pure): loopback needs nothing; any other address a token or a
users file of hashed passwords, or the viewer refuses to start.

Passwords are PBKDF2-SHA256 (stdlib), one `name:pbkdf2_sha256$iterations$salt$hash` a line,
made by `logagent web --hash-password`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

ITERATIONS = 200_000
SCHEME = "pbkdf2_sha256"


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
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    b64 = base64.b64encode
    return f"{SCHEME}${iterations}${b64(salt).decode()}${b64(digest).decode()}"


def _verify(password: str, stored: str) -> bool:
    try:
        scheme, iterations, salt, digest = stored.split("$")
        if scheme != SCHEME:
            return False
        got = hashlib.pbkdf2_hmac(
            "sha256", password.encode(), base64.b64decode(salt), int(iterations)
        )
        return hmac.compare_digest(got, base64.b64decode(digest))
    except (ValueError, TypeError):
        return False


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


@dataclass
class Access:
    """What a request must show: nothing (loopback), a token, or a user's password."""

    token: str = ""
    users: dict[str, str] = field(default_factory=dict)
    _known: set[str] = field(default_factory=set)  # Basic credentials already verified

    @property
    def open(self) -> bool:
        return not self.token and not self.users

    def allows(self, authorization: str | None, cookie_token: str | None) -> bool:
        if self.open:
            return True
        if self.token:
            if cookie_token and _same(cookie_token, self.token):
                return True
            if authorization and authorization.startswith("Bearer "):
                return _same(authorization[7:].strip(), self.token)
        return self._basic(authorization)

    def _basic(self, authorization: str | None) -> bool:
        if self.users and authorization and authorization.startswith("Basic "):
            key = hashlib.sha256(authorization.encode()).hexdigest()
            if key in self._known:
                return True
            try:
                name, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
            stored = self.users.get(name)
            if stored is not None and _verify(password, stored):
                if len(self._known) < 1000:
                    self._known.add(key)  # PBKDF2 once per credential, not per request
                return True
        return False


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
