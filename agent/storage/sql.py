"""Portable SQL text: SQLite takes `?`, PostgreSQL `$1, $2, ...`."""

from __future__ import annotations


class Marks:
    """Hands out placeholders in order for one statement."""

    def __init__(self, dialect: str) -> None:
        self.sqlite = dialect == "sqlite"
        self.n = 0

    def __call__(self) -> str:
        self.n += 1
        return "?" if self.sqlite else f"${self.n}"

    def many(self, count: int) -> str:
        return ", ".join(self() for _ in range(count))
