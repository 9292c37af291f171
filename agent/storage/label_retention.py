"""Containers' own retention as the store keeps it, cut to what the config now lets a label
ask (`retention.label_max_age`).

A container's row keeps its retention (`max_age_s`) from its last commit. A row written
before the cap, or under a longer one, kept what its label asked — for ever, say — until the
container ran again, and a container that is gone never does. At the agent's start such a
row is cut to the cap, but only where the value is surely its label's: the label the row
keeps asked exactly that (a label overrides a rule), and no `[[hints.rules]]` of the config
sets a retention (a rule may let a label ask for longer, and what the rule matched on — a
label past the kept ones, a former name — may not be in the row). It is never raised, and
never left to the host's retention.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from tortoise.backends.base.client import BaseDBAsyncClient

from agent.storage.db import transaction
from agent.storage.models import ContainerCursor
from agent.storage.sql import Marks

TABLE = ContainerCursor._meta.db_table
LABEL = "logagent.retention"


Parse = Callable[[str], float]  # a retention label's text read as the hint reads it


def asked_by_label(labels: object, parse: Parse) -> int | None:
    """The retention (whole seconds, 0: for ever) a row's kept labels asked; None if none or
    unreadable."""
    if not isinstance(labels, dict) or not isinstance(text := labels.get(LABEL), str):
        return None
    try:
        return int(parse(text))
    except (ValueError, TypeError, OverflowError):
        return None


async def recap(db: BaseDBAsyncClient, host: str, cap_s: float, parse: Parse) -> int:
    """This host's rows kept longer than `cap_s` (0: no cap) by their labels, cut to it;
    how many. `parse`: the hint's own reading of a retention label's text."""
    if cap_s <= 0:
        return 0
    cap = int(cap_s)
    m = Marks(db.capabilities.dialect)
    _, rows = await db.execute_query(
        f"SELECT id, labels, max_age_s FROM {TABLE} WHERE host = {m()} "
        f"AND max_age_s IS NOT NULL AND (max_age_s = 0 OR max_age_s > {m()})",
        [host, cap],
    )
    changed: list[list[object]] = []
    for row_id, text, stored in rows:
        try:
            labels = json.loads(text) if text else None
        except ValueError:
            continue
        if asked_by_label(labels, parse) == int(stored):
            changed.append([cap, row_id])
    if changed:
        m = Marks(db.capabilities.dialect)
        async with transaction() as conn:
            await conn.execute_many(
                f"UPDATE {TABLE} SET max_age_s = {m()} WHERE id = {m()}", changed
            )
    return len(changed)
