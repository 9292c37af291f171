"""Containers' own retention kept from before a cap (storage/label_retention.py): at the
agent's start this host's rows kept for longer than any container may now keep them (the
label cap, or a rule's longer retention) are cut to that; never raised, never to the host's."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from agent.batch import Line, LineBatch, Source
from agent.policy import Matchers
from agent.shaping.hints import HintRule
from agent.storage import LogStorage, label_retention
from tests.conftest import agent_settings, query, running_agent

pytestmark = [pytest.mark.anyio]
DAY = 86400
WEEK = 7 * DAY


async def stored(store_url: str, rows: dict[str, tuple[str | None, int | None]]) -> None:
    """One line of each container, its row keeping this label (None: none) and retention."""
    async with LogStorage(store_url, host="test-host") as storage:
        for i, (name, (label, kept)) in enumerate(rows.items()):
            labels = (("logagent.retention", label),) if label is not None else ()
            source = Source(f"{i:064x}", name, max_age_s=kept, image="app:1", labels=labels)
            await storage.write(LineBatch.of(source, [Line("stdout", 1_700_000_000 + i, "", "x")]))
        await storage.flush()


def kept(store_url: str) -> dict[str, int | None]:
    rows = query(store_url, "SELECT container_name, max_age_s FROM container_cursors")
    return {str(n): (None if a is None else int(a)) for n, a in rows}


async def test_rows_kept_longer_than_the_bound_are_cut_to_it(store_url: str) -> None:
    await stored(store_url, {  # the label its row keeps, the retention it was kept
        "forever": ("0", 0),
        "century": ("36500d", 36500 * DAY),
        "short": ("3d", 3 * DAY),  # within the bound: as it is
        "ruled": (None, 90 * DAY),  # a rule since removed (or a label not kept)
        "plain": (None, None),  # the host's: as it is
    })  # fmt: skip
    async with LogStorage(store_url, host="test-host") as storage:
        db = storage.db
        assert await label_retention.recap(db, "test-host", WEEK) == 3
        assert await label_retention.recap(db, "test-host", WEEK) == 0
        assert await label_retention.recap(db, "beta", DAY) == 0  # another host's rows
        assert await label_retention.recap(db, "test-host", 0) == 0  # no bound
    assert kept(store_url) == {
        "forever": WEEK, "century": WEEK, "short": 3 * DAY, "ruled": WEEK, "plain": None,
    }  # fmt: skip


@pytest.mark.docker
async def test_the_agent_cuts_them_at_its_start_to_what_its_rules_allow(
    tmp_path: Path, store_url: str
) -> None:
    await stored(store_url, {"forever": ("0", 0), "long": (None, 200 * DAY)})
    s = replace(agent_settings(tmp_path), db_url=store_url, retention_label_max_age_s=WEEK)
    keep = HintRule(Matchers(names=("nothing-*",)), {"retention": "0"})
    async with running_agent(replace(s, hint_rules=(keep,))):
        pass
    assert kept(store_url) == {"forever": 0, "long": 200 * DAY}  # a rule may keep for ever
    rule = HintRule(Matchers(labels=("team=a",)), {"retention": "90d"})
    async with running_agent(replace(s, hint_rules=(rule,))):
        pass
    assert kept(store_url) == {"forever": 90 * DAY, "long": 90 * DAY}  # what a rule may give
    async with running_agent(s):
        pass
    assert kept(store_url) == {"forever": WEEK, "long": WEEK}


async def test_a_mark_without_the_container_s_identity_keeps_its_own_retention(
    store_url: str,
) -> None:
    """A state said of a container the agent knows only by id and name (a replayed `destroy`
    after a restart, before any start said its hints) leaves the row's own retention as it
    is; an identity that says none (its hints, at a start) clears it."""
    await stored(store_url, {"kept": ("90d", 90 * DAY), "ruled": (None, 30 * DAY)})
    async with LogStorage(store_url, host="test-host") as storage:
        await storage.mark(Source(f"{0:064x}", "kept"), "removed")
        await storage.mark(Source(f"{1:064x}", "ruled", max_age_s=None), "exited")
        await storage.flush()
    assert kept(store_url) == {"kept": 90 * DAY, "ruled": None}
