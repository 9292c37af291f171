"""Containers' own retention as the store keeps it, cut to the longest the config now lets
any container keep its rows.

A container's row keeps its retention (`max_age_s`) from its last commit that said one. A
row written before `retention.label_max_age`, or under a longer one or a rule since removed,
kept what was asked then — for ever, say — until the container ran again, and a container
that is gone never does. At the agent's start every row of this host kept for longer than
the bound is cut to it: the longer of the label cap and every `[[hints.rules]]` retention
(hints.longest). No container's hints can give more (a label is capped at the longer of
the cap and its matching rule's; without a label, a rule's or the host's, never above the
cap), so nothing the config keeps is cut, whichever rules match. A rule that keeps for
ever leaves no bound: nothing is cut.
"""

from __future__ import annotations

from tortoise.backends.base.client import BaseDBAsyncClient

from agent.storage.db import transaction
from agent.storage.models import ContainerCursor
from agent.storage.sql import Marks

TABLE = ContainerCursor._meta.db_table


async def recap(db: BaseDBAsyncClient, host: str, bound_s: float) -> int:
    """This host's rows kept longer than `bound_s` (0: no bound), cut to it; how many."""
    if bound_s <= 0:
        return 0
    m = Marks(db.capabilities.dialect)
    async with transaction() as conn:
        changed, _ = await conn.execute_query(
            f"UPDATE {TABLE} SET max_age_s = {m()} WHERE host = {m()} "
            f"AND max_age_s IS NOT NULL AND (max_age_s = 0 OR max_age_s > {m()})",
            [int(bound_s), host, int(bound_s)],
        )
    return int(changed)
