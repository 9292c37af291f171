"""A secret read from a file (a token Kubernetes, Docker or Vault mounts): a regular file of
at most 64 KiB, UTF-8, not empty once stripped (a header's value is then checked apart:
`header_value_problem`). What it holds never goes into a message.

Read here, at start-up for the config and again when the file changes (agent/forward's
`HeaderFiles`): a FIFO or a device at the path would block or never end, so only a regular
file is read, and only so much of it.
"""

from __future__ import annotations

import os
import re
import stat

MAX_BYTES = 64 * 1024
# What an HTTP header value may not hold (RFC 9110's field-value; aiohttp 3.14 refuses them
# too, with an error that names no header): a value read with one is no value.
_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

# inode, modification and change times (ns), size: "is it another file, or the same file
# changed" (a chmod that makes an unreadable file readable changes the change time alone)
Identity = tuple[int, int, int, int]


class SecretFileError(ValueError):
    """Why a secret file gives no value (never what it holds)."""


def header_value_problem(value: str) -> str | None:
    """Why `value` cannot be an HTTP header's value, or None."""
    if _FORBIDDEN.search(value):
        return "a value of one line without control characters"
    return None


def identity(path: str) -> Identity:
    """The file at `path` as it is now (OSError if there is none)."""
    try:
        info = os.stat(path)
    except ValueError as exc:  # a NUL in the path
        raise OSError(0, str(exc)) from None
    return (info.st_ino, info.st_mtime_ns, info.st_ctime_ns, info.st_size)


def read_secret(path: str) -> tuple[str, Identity]:
    """The value the file holds (stripped), and the file it was read from."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise SecretFileError(f"cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SecretFileError("not a regular file")
        if info.st_size > MAX_BYTES:
            raise SecretFileError(f"larger than {MAX_BYTES // 1024} KiB")
        data = os.read(fd, MAX_BYTES + 1)
        if len(data) > MAX_BYTES:  # it grew since
            raise SecretFileError(f"larger than {MAX_BYTES // 1024} KiB")
    except OSError as exc:
        raise SecretFileError(f"cannot read it ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    try:
        value = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise SecretFileError("not UTF-8 text") from None
    if not value:
        raise SecretFileError("empty")
    return value, (info.st_ino, info.st_mtime_ns, info.st_ctime_ns, info.st_size)
