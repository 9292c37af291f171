"""Where lines are kept: tortoise models, the batching writer, and (later) the read side."""

from agent.storage.writer import LogStorage, StorageError

__all__ = ["LogStorage", "StorageError"]
