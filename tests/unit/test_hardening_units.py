"""Hostile values at the edges: container references, grep patterns, the reconnect line."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import anyio
import pytest
from tortoise.exceptions import OperationalError

from agent.docker.client import DockerClient, container_segment
from agent.docker.errors import BadReference, DockerUnavailable
from agent.grep import matcher
from agent.policy import label_says_no
from agent.storage.db import fatal


@pytest.mark.parametrize(
    "ref", ["../../version", "..%2F..%2Fversion", "x/export?", "", "-rf", "a b", "é", "x" * 300]
)
def test_anything_but_a_container_name_or_id_is_refused(ref: str) -> None:
    with pytest.raises(BadReference):
        container_segment(ref)


def test_names_and_ids_pass_unchanged() -> None:
    for ref in ("web", "my_app.1-blue", "0123456789ab", "f" * 64):
        assert container_segment(ref) == ref


def test_grep_is_linear_even_for_a_catastrophic_pattern() -> None:
    started = time.monotonic()
    assert not matcher("(a+)+$")("a" * 200_000 + "!")
    assert time.monotonic() - started < 5  # Python's re: minutes (never asserted tightly)


def test_grep_patterns_re2_cannot_take_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="RE2 syntax"):
        matcher(r"(\w)\1")
    with pytest.raises(ValueError, match="missing \\)"):
        matcher("(a")


def test_the_owner_label_says_no_in_any_spelling() -> None:
    assert label_says_no({"logagent.enable": " False "})
    assert not label_says_no({"logagent.enable": "true"}) and not label_says_no({})


@pytest.mark.anyio
async def test_reconnect_line_names_the_socket_the_attempt_and_the_wait(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="logagent.docker")
    async with DockerClient("unix:///nonexistent/docker.sock") as client:
        with pytest.raises(DockerUnavailable), anyio.fail_after(30):
            await client.connect(attempts=2)
    (line,) = [r.getMessage() for r in caplog.records if "Retrying" in r.getMessage()]
    assert line.startswith("Retrying the Docker daemon at unix:///nonexistent/docker.sock in ")
    assert "(attempt 1 failed: No such file or directory)" in line
    assert "localhost" not in line and "<unknown>" not in line


def _sqlite_error(tmp_path: Path, prepare: Callable[[Path], None], sql: str) -> BaseException:
    tmp_path.mkdir(exist_ok=True)
    path = tmp_path / "s.db"
    prepare(path)
    try:
        with closing(sqlite3.connect(path, timeout=0)) as conn:
            conn.execute(sql)
            conn.commit()
    except sqlite3.Error as exc:
        return exc
    raise AssertionError("no error")


def test_store_errors_that_retrying_cannot_mend_are_told_apart(tmp_path: Path) -> None:
    """The writer retries a locked or full store, and stops the agent on these (real sqlite3
    errors, as tortoise wraps them or not)."""

    def corrupted(path: Path) -> None:
        with closing(sqlite3.connect(path)) as conn:
            conn.execute("CREATE TABLE t (x TEXT)")
            conn.executemany("INSERT INTO t VALUES (?)", [("y" * 500,)] * 200)
            conn.commit()
        with open(path, "r+b") as f:
            f.seek(4096)
            f.write(b"\xff" * 8192)

    def not_a_database(path: Path) -> None:
        path.write_bytes(b"this is no sqlite file" * 300)

    def locked(path: Path) -> None:
        holder = sqlite3.connect(path)
        holder.execute("CREATE TABLE t (x)")
        holder.commit()
        holder.execute("BEGIN EXCLUSIVE")
        _held.append(holder)

    corrupt = _sqlite_error(tmp_path, corrupted, "SELECT COUNT(*), MAX(x) FROM t")
    assert fatal(corrupt) == "SQLITE_CORRUPT"
    assert fatal(OperationalError(corrupt)) == "SQLITE_CORRUPT"  # as tortoise wraps it
    assert fatal(_sqlite_error(tmp_path / "n", not_a_database, "SELECT 1 FROM t")) in (
        "SQLITE_NOTADB",
        "SQLITE_CORRUPT",
    )
    busy = _sqlite_error(tmp_path / "l", locked, "INSERT INTO t VALUES (1)")
    assert fatal(busy) is None and fatal(OperationalError(busy)) is None
    for holder in _held:
        holder.close()


_held: list[sqlite3.Connection] = []


def test_literal_greps_match_as_re2_would() -> None:
    lines = ["error here", "no", "error", "an error", "^x", "price $5"]
    for pattern in ("error", "^error", "error$", "^error$", "^no$", r"\$5", "^an "):
        import re

        expected = [bool(re.search(pattern, line)) for line in lines]
        assert [matcher(pattern)(line) for line in lines] == expected, pattern
