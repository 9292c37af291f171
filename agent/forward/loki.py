"""Pure: stored lines as a Grafana Loki push (`/loki/api/v1/push`, JSON, gzip).

Loki indexes labels, so they are few and bounded: `host`, `container` (its name), `stream`,
and the compose `project` and `service` where there are. The stable id and the level go in
each entry's structured metadata (Loki 3), not in labels: one stream per container and
stream, not one per line. JSON rather than Loki's snappy-framed protobuf: Loki takes both,
and JSON needs no library of its own.
"""

from __future__ import annotations

import gzip
import json

from agent.forward.records import Ids, stable_id
from agent.level_names import NAMES
from agent.storage.described import StoredContainer
from agent.storage.reader import StoredRow

CONTENT_TYPE = "application/json"


def loki_push(
    rows: list[StoredRow], described: dict[str, StoredContainer], ids: Ids = stable_id
) -> bytes:
    streams: dict[tuple[tuple[str, str], ...], list[list[object]]] = {}
    for row in rows:
        labels = {"host": row.host, "container": row.container_name, "stream": row.stream}
        if (c := described.get(row.container_id)) is not None:
            if c.project:
                labels["project"] = c.project
            if c.service:
                labels["service"] = c.service
        metadata = {"id": ids(row)}
        if row.level is not None and row.level in NAMES:
            metadata["level"] = NAMES[row.level]
        streams.setdefault(tuple(sorted(labels.items())), []).append(
            [str(row.timestamp_ns), row.message, metadata]
        )
    body = {"streams": [{"stream": dict(k), "values": v} for k, v in streams.items()]}
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    data = text.encode("utf-8", "surrogatepass")
    return gzip.compress(data, compresslevel=1)  # as OTLP's: half the CPU of level 5
