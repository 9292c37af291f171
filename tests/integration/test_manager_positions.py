"""The position moves into a collector and back (collectors/manager.py): a start that fails
before its collector runs leaves the record's position where it was."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.collectors import manager as manager_module
from agent.collectors.manager import LogCollectorManager
from agent.cursor import Cursor
from agent.docker.inspect import ContainerInfo
from agent.storage import LogStorage
from tests.conftest import db_url

pytestmark = [pytest.mark.anyio]


async def test_a_collector_that_cannot_be_built_leaves_the_position_on_the_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise ValueError("cannot build this collector")

    info = ContainerInfo("a" * 64, "app")
    storage = LogStorage(db_url(tmp_path), host="h")
    async with storage, LogCollectorManager(storage) as manager:
        rec = manager.registry.record(info.id, info.name)
        rec.cursor = Cursor({"stdout": [5, 1]})  # queued, not yet committed
        monkeypatch.setattr(manager_module, "DockerLogCollector", refuse)
        with pytest.raises(ValueError, match="cannot build"):
            await manager.start_docker_collector(info.id, info=info)
        assert rec.collector is None
        assert rec.cursor is not None and rec.cursor.positions == {"stdout": [5, 1]}
