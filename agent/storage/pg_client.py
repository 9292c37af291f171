"""A tortoise engine for PostgreSQL through several hosts (storage/pg_url.py): tortoise's
asyncpg client, whose pool is given asyncpg's host and port lists instead of one host.

Each new connection of the pool tries the hosts in turn (with `target_session_attrs`, the
first that suits), so a connection made again after a failover finds the new primary.
Pinned (tests/unit/test_tortoise_private_api.py): `AsyncpgDBClient.create_pool` receives
asyncpg's keyword arguments, `host` and `port` among them.
"""

from __future__ import annotations

from typing import Any

from tortoise.backends.asyncpg.client import AsyncpgDBClient


class MultiHostClient(AsyncpgDBClient):
    def __init__(self, *, hosts: list[str], ports: list[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._hosts, self._ports = hosts, ports

    async def create_pool(self, **kwargs: Any) -> Any:
        kwargs["host"], kwargs["port"] = self._hosts, self._ports
        return await super().create_pool(**kwargs)


client_class = MultiHostClient
