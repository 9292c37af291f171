"""A secret read from a file: a regular file, bounded, UTF-8, never quoted in a message."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.secret_files import (
    MAX_BYTES,
    SecretFileError,
    header_value_problem,
    identity,
    read_secret,
)


def test_a_secret_file_is_read_stripped_and_a_bad_one_says_why_not_what(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("  s3cret\r\n")
    value, seen = read_secret(str(token))
    assert value == "s3cret" and seen == identity(str(token))
    link = tmp_path / "link"
    link.symlink_to(token)  # a mounted secret is often a symlink: followed
    assert read_secret(str(link))[0] == "s3cret"
    for data, why in ((b"", "empty"), (b" \n", "empty"), (b"\xffs3cret", "not UTF-8"),
                      (b"s" * (MAX_BYTES + 1), "larger than")):  # fmt: skip
        token.write_bytes(data)
        with pytest.raises(SecretFileError, match=why) as caught:
            read_secret(str(token))
        assert "s3cret" not in str(caught.value) and "sss" not in str(caught.value)
    os.mkfifo(tmp_path / "fifo")  # opened without blocking, refused
    refused = [(tmp_path / "fifo", "not a regular file"), (tmp_path, "not a regular"),
               (tmp_path / "none", "cannot read"), (f"{token}\0x", "cannot read")]  # fmt: skip
    for path, why in refused:
        with pytest.raises(SecretFileError, match=why):
            read_secret(str(path))


def test_a_chmod_is_another_file_to_read_again(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    before = identity(str(token))
    os.chmod(token, 0o600)  # an unreadable file made readable: read again
    assert identity(str(token)) != before


def test_a_header_value_holds_no_control_character_but_a_tab() -> None:
    assert header_value_problem("Bearer a\tb") is None
    for bad in ("a\nb", "a\rb", "a\x00b", "a\x7fb", "a\x1bb"):
        assert header_value_problem(bad) is not None
