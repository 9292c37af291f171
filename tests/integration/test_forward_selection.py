"""A destination's selection judges a container under its current name (no Docker: a store
written through the writer, a Forwarder with a sink that keeps what it is sent)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from agent.alerts.selection import Selection
from agent.batch import Line, LineBatch, Source
from agent.forward.runner import Forwarder
from agent.forward.settings import Destination
from agent.storage import LogStorage
from tests.conftest import eventually

pytestmark = [pytest.mark.anyio]


class Kept:
    """A sink that keeps each payload."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []

    async def send(self, payload: bytes) -> None:
        self.payloads.append(payload)

    async def aclose(self) -> None:
        return None

    def messages(self) -> list[str]:
        return [json.loads(line)["message"] for p in self.payloads for line in p.splitlines()]


async def test_a_container_renamed_out_of_a_selection_is_no_longer_sent(tmp_path: Path) -> None:
    cid = "w" * 64
    d = Destination(name="web", kind="ndjson", path=str(tmp_path / "out.ndjson"),
                    selection=Selection(names=("web-*",)), linger_s=0.01,
                    from_start=True)  # fmt: skip
    sink = Kept()
    async with LogStorage(f"sqlite:///{tmp_path}/s.db", host="h") as storage:

        async def write(src: Source, first: int) -> None:
            lines = [Line("stdout", first + i, "", f"line {first + i}", 0, 7) for i in range(3)]
            await storage.write(LineBatch.of(src, lines))
            await storage.flush()

        web = Source(cid, "web-1", image="nginx:1")
        await write(web, 1)
        forwarder = Forwarder(storage.db, "h", d, sink=sink)
        async with anyio.create_task_group() as tg:
            await tg.start(forwarder.run)
            await eventually(lambda: forwarder.stats.sent >= 3)
            await storage.renamed(Source(cid, "db-1", image="nginx:1", version=1), "web-1")
            await write(Source(cid, "db-1", image="nginx:1", version=1), 4)
            # the forwarder has passed the lines after the rename
            await eventually(lambda: not forwarder.stats.lag_rows and forwarder.stats.batches > 1)
            tg.cancel_scope.cancel()
    assert sink.messages() == ["line 1", "line 2", "line 3"]


async def test_a_destination_renamed_in_the_config_says_what_the_old_name_left(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A destination renamed in the config is a new one and starts anew: the lines its old
    name had not sent were dropped in silence (a review's finding). It says so, with how
    to get them."""
    sink = Kept()
    async with LogStorage(f"sqlite:///{tmp_path}/s.db", host="h") as storage:

        async def write(first: int) -> None:
            lines = [Line("stdout", first + i, "", f"line {first + i}", 0, 7) for i in range(5)]
            await storage.write(LineBatch.of(Source("w" * 64, "web-1"), lines))
            await storage.flush()

        old = Destination(name="siem", kind="ndjson", path="-", linger_s=0.01, from_start=True)
        await write(1)
        forwarder = Forwarder(storage.db, "h", old, sink=sink)
        async with anyio.create_task_group() as tg:
            await tg.start(forwarder.run)
            await eventually(lambda: forwarder.stats.sent >= 5)
            tg.cancel_scope.cancel()
        await write(6)  # the old name's destination is down, then renamed
        renamed = Forwarder(storage.db, "h", replace(old, name="siem-prod", from_start=False),
                            sink=sink, configured=["siem-prod"])  # fmt: skip
        async with anyio.create_task_group() as tg:
            await tg.start(renamed.run)
            tg.cancel_scope.cancel()
    said = [r.getMessage() for r in caplog.records if "is new here" in r.getMessage()]
    assert len(said) == 1 and "siem (5 rows not sent)" in said[0], said
