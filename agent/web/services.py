"""The sidebar's services: a compose service (`PROJECT/SERVICE`, from the labels its
containers had), or a name several containers had in turn, is one history across every
container that served it, current and removed. The page opens one as `?service=KEY`, which
`web/query.py` resolves as `logagent logs --service KEY` does (storage/reader.py)."""

from __future__ import annotations

from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

from agent.storage.models import ContainerCursor


async def service_of(db: BaseDBAsyncClient) -> dict[tuple[str, str], str]:
    """(host, container id) → its compose service as `PROJECT/SERVICE`, for the containers
    whose labels named one (`storage/reader.container_summary` does not read the column)."""
    _, rows = await db.execute_query(
        f"SELECT host, container_id, project, service FROM {ContainerCursor._meta.db_table} "
        "WHERE project IS NOT NULL AND service IS NOT NULL AND project <> '' AND service <> ''"
    )
    return {(str(r[0]), str(r[1])): f"{r[2]}/{r[3]}" for r in rows}


def services(containers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pure: the services among the listed containers (each with its `service` key, "" for
    none): every compose service, and a plain name that several containers had. Each with
    its containers oldest first (by their last line), their lines, its last line and
    whether one of them runs."""
    groups: dict[str, list[dict[str, Any]]] = {}
    named: dict[str, list[dict[str, Any]]] = {}
    for c in containers:
        if c["service"]:
            groups.setdefault(c["service"], []).append(c)
        elif c["name"]:
            named.setdefault(c["name"], []).append(c)
    for name, members in named.items():
        if len({c["id"] for c in members}) > 1 and name not in groups:
            groups[name] = members
    out = []
    for key, members in sorted(groups.items()):
        members = sorted(members, key=lambda c: (c["last_ns"] or 0, c["name"], c["id"]))
        out.append(
            {
                "key": key,
                "containers": list(dict.fromkeys(c["id"] for c in members)),
                "lines": sum(c["lines"] for c in members),
                "last": max((c["last"] for c in members if c["last"]), default=""),
                "running": any(c["state"] == "running" for c in members),
            }
        )
    return out
