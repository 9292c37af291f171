"""Pure: what a forward destination sends of its host's rows, told to the store's side
(retention counts only that as a destination's gap) without the store importing the
forwarder, nor the config (which builds it) importing the store's ORM.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agent.storage.described import StoredContainer


@dataclass(frozen=True)
class Sends:
    """What a destination of this host's config sends of its rows (agent/forward/settings.py's
    min_level and selection), as the forwarder judges them (agent/forward/runner.py)."""

    min_level: int | None = None  # rows at this level or above; a row without a level: never
    picks: Callable[[StoredContainer], bool] | None = None  # None: every container
