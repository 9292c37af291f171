"""The store's defaults, light: reading the config (every command does) loads no ORM."""

from __future__ import annotations

DEFAULT_DB_URL = "sqlite://data/logagent.db"
# Memory held by lines read from Docker but not yet committed, at most (a slow or full disk, a
# locked store): then collectors wait, and Docker's own log files hold the rest.
DEFAULT_QUEUE_BYTES = 16 * 1024 * 1024
