"""Every test opens its own database connection and must close it: tortoise keeps state."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _no_database_thread_left() -> Iterator[None]:
    before = {t.ident for t in threading.enumerate()}
    yield
    deadline = time.monotonic() + 3
    while True:
        left = [
            t.name
            for t in threading.enumerate()
            if "connection_worker" in t.name and t.ident not in before
        ]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not left, f"database connection left open: {left}"


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real, nearly full file system: a 400 KiB tmpfs (needs root, like the Docker tests)."""
    yield from _tmpfs(tmp_path / "tiny", "400k")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1.2 MiB tmpfs: room for a new store (layout 11: ~140 KiB, and its WAL while the
    schema is made), then full within a second of a busy container."""
    yield from _tmpfs(tmp_path / "small", "1200k")


def _tmpfs(mount: Path, size: str) -> Iterator[Path]:
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
