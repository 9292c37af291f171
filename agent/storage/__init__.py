"""Where lines are kept: the connection (db), the writer, agent state, cursors, gaps, reader.

Its names are loaded on first use, so that `agent.storage.options` (the defaults the config
reads) comes without the ORM.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.storage.db import StorageError
    from agent.storage.options import DEFAULT_DB_URL
    from agent.storage.store import LogStorage

__all__ = ["DEFAULT_DB_URL", "LogStorage", "StorageError"]


def __getattr__(name: str) -> Any:
    if name == "LogStorage":
        from agent.storage.store import LogStorage

        return LogStorage
    if name == "StorageError":
        from agent.storage.db import StorageError

        return StorageError
    if name == "DEFAULT_DB_URL":
        from agent.storage.options import DEFAULT_DB_URL

        return DEFAULT_DB_URL
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
