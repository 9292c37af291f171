"""The `logagent` command."""

from __future__ import annotations

import argparse
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"logagent: config error: {exc}", file=sys.stderr)
        return 2
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
