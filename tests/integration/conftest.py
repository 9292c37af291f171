"""Every test opens its own database connection and must close it: tortoise keeps state."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

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
