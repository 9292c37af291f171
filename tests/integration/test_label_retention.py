"""Containers' own retention kept from before a cap (storage/label_retention.py): at the
agent's start what their labels asked for longer than `retention.label_max_age` is cut, from
the labels their rows keep; what the operator's rules give is not."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import pytest

from agent.batch import Line, LineBatch, Source
from agent.policy import Matchers
from agent.shaping.hints import HintRule, hints_for
from agent.storage import LogStorage, label_retention
from tests.conftest import agent_settings, query, running_agent

pytestmark = [pytest.mark.anyio]
WEEK = 7 * 86400
RULES = (HintRule(Matchers(names=("db-*",)), {"retention": "90d"}),)


def retention_of(labels: Mapping[str, str], name: str, image: str) -> float | None:
    return hints_for(
        labels, name=name, image=image, rules=RULES, label_retention_max_s=WEEK
    ).retention_s


async def test_a_row_kept_for_ever_by_its_label_is_cut_at_the_start(store_url: str) -> None:
    asked = {  # name: (the label, what the row kept before the cap, what it keeps after)
        "forever": ("0", 0, WEEK),
        "century": ("36500d", 36500 * 86400, WEEK),
        "short": ("3d", 3 * 86400, 3 * 86400),
        "db-main": ("0", 0, 90 * 86400),  # the operator's rule lets it have 90 days
        "plain": (None, None, None),
    }
    async with LogStorage(store_url, host="h") as storage:
        for i, (name, (label, kept, _)) in enumerate(asked.items()):
            labels = (("logagent.retention", label),) if label is not None else ()
            source = Source(f"{i:064x}", name, max_age_s=kept, image="app:1", labels=labels)
            await storage.write(LineBatch.of(source, [Line("stdout", 1_700_000_000 + i, "", "x")]))
        await storage.flush()
        assert await label_retention.recap(storage.db, "h", WEEK, retention_of) == 3
        assert await label_retention.recap(storage.db, "h", WEEK, retention_of) == 0
        assert await label_retention.recap(storage.db, "other", WEEK, retention_of) == 0
        assert await label_retention.recap(storage.db, "h", 0, retention_of) == 0  # no cap
    rows = query(store_url, "SELECT container_name, max_age_s FROM container_cursors")
    got = {str(n): (None if a is None else int(a)) for n, a in rows}
    assert got == {name: after for name, (_, _, after) in asked.items()}


@pytest.mark.docker
async def test_the_agent_cuts_them_at_its_start(tmp_path: Path, store_url: str) -> None:
    async with LogStorage(store_url, host="test-host") as storage:
        labels = (("logagent.retention", "0"),)
        source = Source("f" * 64, "forever", max_age_s=0, image="app:1", labels=labels)
        await storage.write(LineBatch.of(source, [Line("stdout", 1_700_000_000, "", "x")]))
        await storage.flush()
    s = replace(agent_settings(tmp_path), db_url=store_url, retention_label_max_age_s=WEEK)
    async with running_agent(s):
        pass
    rows = query(
        store_url, "SELECT max_age_s FROM container_cursors WHERE container_name = ?", "forever"
    )
    assert [int(r[0]) for r in rows] == [WEEK]
