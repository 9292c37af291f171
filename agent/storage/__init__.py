"""Where lines are kept: the connection (db), the writer, agent state, cursors, gaps, reader."""

from agent.storage.db import DEFAULT_DB_URL, StorageError
from agent.storage.store import LogStorage

__all__ = ["DEFAULT_DB_URL", "LogStorage", "StorageError"]
