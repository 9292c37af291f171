"""Secrets out of messages: a database URL's password, wherever a log line or an error
quotes it (ours, tortoise's or asyncpg's, which may repeat the URL or its DSN).

Pure: text in, text out. Over-masking is the safe side: a false positive costs a few
characters of a message, a miss costs the password.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

MASK = "***"

# scheme://user:password@host… The password runs to the last "@" before the URL ends (at
# whitespace, a quote or the end): a password that wrongly holds a raw "@" or "/" is masked
# whole, and a multi-host URL (u:p@h1:5432,h2:5432/db) has one userinfo.
_URL_USERINFO = re.compile(
    r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/\s]*:)"
    r"(?P<password>[^\s]+?)"
    r"(?P<tail>@(?=[^@\s'\"]*(?:[\s'\"]|$)))"
)
# password=… in a URL's query or a libpq DSN; 'password': '…' in a repr of connect arguments.
_KEY_VALUE = re.compile(
    r"(?P<head>\bpassword['\"]?\s*[=:]\s*['\"]?)(?P<password>[^\s'\"&,;)}]+)", re.IGNORECASE
)
# A password shorter than this is masked where a URL or key quotes it, not everywhere it
# occurs as text: masking every "ab" would make the message unreadable, not safer.
_MIN_LITERAL = 4


def _passwords(url: str) -> set[str]:
    """The URL's password as written and percent-decoded (what a driver would quote)."""
    found = {m["password"] for m in _URL_USERINFO.finditer(url)}
    found |= {m["password"] for m in _KEY_VALUE.finditer(url)}
    found |= {unquote(p) for p in found}
    return {p for p in found if len(p) >= _MIN_LITERAL}


def redact(text: str, url: str | None = None) -> str:
    """`text` with every URL's password (and every password=… value) replaced by ***.

    Given the URL the text is about, that URL's password is also masked wherever it occurs
    verbatim, for messages that quote it outside a URL. A URL with no password is unchanged:
    `redact("postgres://u:s3cret@h:5432,h2:5432/db")` is `postgres://u:***@h:5432,h2:5432/db`.
    """
    if url:
        for secret in sorted(_passwords(url), key=len, reverse=True):
            text = text.replace(secret, MASK)
    text = _URL_USERINFO.sub(lambda m: f"{m['head']}{MASK}{m['tail']}", text)
    return _KEY_VALUE.sub(lambda m: f"{m['head']}{MASK}", text)
