"""The `logagent` command."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import anyio

from agent.config import ConfigError, load_settings
from agent.storage import StorageError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="logagent", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="collect every admitted container's logs until stopped")
    run.add_argument("--config", type=Path, help="config file (default: config/agent.toml)")
    gaps = sub.add_parser("gaps", help="lines known to be lost for good, and why")
    gaps.add_argument("container", nargs="?", help="a container name or id prefix")
    gaps.add_argument("--json", action="store_true", help="one JSON object per line")
    gaps.add_argument("--config", type=Path, help="config file (default: config/agent.toml)")
    return parser


async def _print_gaps(db_url: str, container: str | None, as_json: bool) -> int:
    from agent.storage.reader import list_gaps, open_store

    async with open_store(db_url):
        found = await list_gaps(container)
    for gap in found:
        if as_json:
            print(json.dumps(dataclasses.asdict(gap)))
        else:
            span = f"{gap.start or '?'} .. {gap.end or '?'}"
            print(f"{gap.container_name}\t{gap.container_id[:12]}\t{span}\t{gap.reason}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"logagent: config error: {exc}", file=sys.stderr)
        return 2
    if args.command == "gaps":
        try:
            return anyio.run(_print_gaps, settings.db_url, args.container, args.json)
        except StorageError as exc:
            print(f"logagent: storage error: {exc}", file=sys.stderr)
            return 1
    if args.command == "run":
        from agent.app import configure_logging, run_agent

        configure_logging(settings.log_level)
        try:
            return anyio.run(run_agent, settings)
        except StorageError as exc:
            print(f"logagent: storage error: {exc}", file=sys.stderr)
            return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
