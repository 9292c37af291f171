"""A NUL in a line: the decoder stores U+FFFD (docker/frames.py); a row an older agent
stored with a NUL on SQLite still matches the same line Docker sends again."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.batch import LineBatch, Source
from agent.storage import LogStorage
from tests.conftest import db_url

pytestmark = [pytest.mark.anyio]


async def test_a_row_stored_with_a_nul_is_the_line_sent_again(tmp_path: Path) -> None:
    source = Source("d" * 64, "old")
    async with LogStorage(db_url(tmp_path), host="h") as storage:
        batch = LineBatch(source)  # as an agent before 2026-12-08 stored it on SQLite
        batch.append("stdout", 10**18, "", "boot\x00ERROR", 0, 10)
        await storage.write(batch)
        await storage.flush()
        again = [("stdout", 10**18, "boot\ufffdERROR"), ("stdout", 10**18, "other")]
        assert await storage.already_stored(source, again) == {0}
