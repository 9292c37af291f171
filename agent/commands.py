"""What the read-side commands do: the store in, text out. `cli.py` only parses arguments."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from typing import TextIO

import anyio

from agent import render
from agent.storage.reader import (
    LogFilter,
    history,
    last_id,
    list_gaps,
    newer,
    open_store,
    resolve_containers,
)


@dataclasses.dataclass(frozen=True)
class LogsOptions:
    containers: tuple[str, ...] = ()
    since: str | None = None
    until: str | None = None
    streams: tuple[str, ...] = ()
    grep: str | None = None
    tail: int | None = None
    host: str | None = None
    timestamps: bool = False
    follow: bool = False
    json: bool = False
    raw: bool = False
    poll_seconds: float = 0.2


class UsageError(ValueError):
    """A wrong argument: printed as one line, exit code 2."""


async def logs(db_url: str, opts: LogsOptions, out: TextIO = sys.stdout) -> int:
    """Print stored lines like `docker logs`: history first, then (-f) new rows as stored."""
    try:
        since = render.parse_when(opts.since) if opts.since else None
        until = render.parse_when(opts.until) if opts.until else None
        pattern = re.compile(opts.grep) if opts.grep else None
    except (ValueError, re.error) as exc:
        raise UsageError(str(exc)) from None
    async with open_store(db_url) as db:
        try:
            ids = await resolve_containers(db, list(opts.containers))
        except LookupError as exc:
            raise UsageError(str(exc)) from None
        flt = LogFilter(tuple(ids), since, until, opts.streams, opts.host)
        prefix = len(ids) != 1
        seen = await last_id(db)  # history is what is stored now; -f takes over after it

        def emit(rows: list[object]) -> None:
            text = []
            for row in rows:
                if pattern is not None and not pattern.search(row[render.MESSAGE]):  # type: ignore[index]
                    continue
                if opts.json:
                    text.append(render.json_line(row))  # type: ignore[arg-type]
                else:
                    text.append(
                        render.plain_line(
                            row,  # type: ignore[arg-type]
                            timestamps=opts.timestamps,
                            prefix=prefix,
                            raw=opts.raw,
                        )
                    )
            out.write("".join(text))
            out.flush()

        async for page in history(db, flt, upto_id=seen, tail=opts.tail):
            emit(page)
        while opts.follow:
            rows = await newer(db, flt, after_id=seen)
            if rows:
                emit(rows)
                seen = int(rows[-1][render.ID])
            else:
                await anyio.sleep(opts.poll_seconds)
    return 0


async def gaps(db_url: str, container: str | None, as_json: bool, out: TextIO = sys.stdout) -> int:
    async with open_store(db_url):
        found = await list_gaps(container)
    for gap in found:
        if as_json:
            out.write(json.dumps(dataclasses.asdict(gap)) + "\n")
        else:
            span = f"{gap.start or '?'} .. {gap.end or '?'}"
            out.write(f"{gap.container_name}\t{gap.container_id[:12]}\t{span}\t{gap.reason}\n")
    return 0
