"""Containers' own retention kept from before a cap (storage/label_retention.py): at the
agent's start rows that their labels kept for longer than `retention.label_max_age` are cut
to it; only where the value is surely the label's, never raised, never left to the host's."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from agent.batch import Line, LineBatch, Source
from agent.policy import Matchers
from agent.shaping.hints import HintRule, parse_retention
from agent.storage import LogStorage, label_retention
from tests.conftest import agent_settings, query, running_agent

pytestmark = [pytest.mark.anyio]
WEEK = 7 * 86400
DAY = 86400


async def stored(store_url: str, rows: dict[str, tuple[object, int | None]]) -> None:
    """One line of each container, its row keeping this label (None: none) and retention."""
    async with LogStorage(store_url, host="test-host") as storage:
        for i, (name, (label, kept)) in enumerate(rows.items()):
            labels: tuple[tuple[str, str], ...] = ()
            if label is not None:
                labels = (("logagent.retention", str(label)), ("team", "a"))
            source = Source(f"{i:064x}", name, max_age_s=kept, image="app:1", labels=labels)
            await storage.write(LineBatch.of(source, [Line("stdout", 1_700_000_000 + i, "", "x")]))
        await storage.flush()


def kept(store_url: str) -> dict[str, int | None]:
    rows = query(store_url, "SELECT container_name, max_age_s FROM container_cursors")
    return {str(n): (None if a is None else int(a)) for n, a in rows}


async def test_only_what_a_label_surely_kept_for_longer_is_cut(store_url: str) -> None:
    rows: dict[str, tuple[object, int | None]] = {  # the kept label, the stored retention
        "forever": ("0", 0),
        "century": ("36500d", 36500 * DAY),
        "short": ("3d", 3 * DAY),  # within the cap: as it is
        "ruled": (None, 90 * DAY),  # no label: a rule's (what it matched may be gone)
        "other": ("0", 90 * DAY),  # not what its label asked: a rule's, or another's
        "plain": (None, None),
    }
    await stored(store_url, rows)
    async with LogStorage(store_url, host="test-host") as storage:
        db = storage.db
        assert await label_retention.recap(db, "test-host", WEEK, parse_retention) == 2
        assert await label_retention.recap(db, "test-host", WEEK, parse_retention) == 0
        assert await label_retention.recap(db, "beta", WEEK, parse_retention) == 0  # not ours
        assert await label_retention.recap(db, "test-host", 0, parse_retention) == 0  # no cap
    assert kept(store_url) == {
        "forever": WEEK, "century": WEEK, "short": 3 * DAY, "ruled": 90 * DAY,
        "other": 90 * DAY, "plain": None,
    }  # fmt: skip


async def test_an_unreadable_label_is_passed_over() -> None:
    cases: list[object] = [{"logagent.retention": None}, {"logagent.retention": "soon"}, [], None]
    for labels in cases:
        assert label_retention.asked_by_label(labels, parse_retention) is None
    assert label_retention.asked_by_label({"logagent.retention": "0"}, parse_retention) == 0


@pytest.mark.docker
async def test_the_agent_cuts_them_at_its_start_unless_a_rule_sets_a_retention(
    tmp_path: Path, store_url: str
) -> None:
    await stored(store_url, {"forever": ("0", 0)})
    s = replace(agent_settings(tmp_path), db_url=store_url, retention_label_max_age_s=WEEK)
    rule = HintRule(Matchers(labels=("team=a",)), {"retention": "90d"})
    async with running_agent(replace(s, hint_rules=(rule,))):
        pass
    assert kept(store_url) == {"forever": 0}  # a rule could let it ask more: left
    async with running_agent(s):
        pass
    assert kept(store_url) == {"forever": WEEK}
