"""The `logagent` command: run the agent, read what it stored, steer it."""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from functools import partial
from pathlib import Path

import anyio

from agent.config import ConfigError, load_settings
from agent.docker.errors import DockerError
from agent.redact import redact
from agent.storage import StorageError
from agent.storage.db import StoreLocked


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="logagent", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.add_argument("--config", type=Path, help="config file (default: config/agent.toml)")
        return p

    command("run", "collect every admitted container's logs until stopped")

    logs = command("logs", "print stored lines, like `docker logs` (reads the store only)")
    logs.add_argument("containers", nargs="*", metavar="CONTAINER", help="name, id or id prefix")
    logs.add_argument("--since", help="RFC 3339 time, duration (10m, 2h, 3d) or Unix seconds")
    logs.add_argument("--until", help="RFC 3339 time, duration (10m, 2h, 3d) or Unix seconds")
    logs.add_argument("--stream", action="append", choices=["stdout", "stderr", "tty"])
    logs.add_argument("--grep", metavar="REGEX", help="only lines matching this expression")
    logs.add_argument("--tail", type=int, metavar="N", help="only the last N lines")
    logs.add_argument("--host", help="only lines collected on this host")
    logs.add_argument(
        "--level",
        choices=["trace", "debug", "info", "warn", "error", "fatal"],
        help="only lines of this level and above (lines with no level are left out)",
    )
    logs.add_argument("-t", "--timestamps", action="store_true", help="show Docker's timestamps")
    logs.add_argument("-f", "--follow", action="store_true", help="print new lines as stored")
    logs.add_argument("--json", action="store_true", help="one JSON object per line")
    logs.add_argument("--raw", action="store_true", help="pass control characters through")
    logs.add_argument(
        "--events", action="store_true", help="the containers' lives (die, oom, ...) among them"
    )
    logs.add_argument(
        "--where",
        metavar="CONDITIONS",
        help="only JSON or logfmt lines whose fields hold, e.g. 'status>=500 user.id=\"42\"'",
    )
    logs.add_argument(
        "--service",
        metavar="PROJECT/SERVICE",
        help="every container that served a compose service (or had a name), as one history",
    )

    stats = command("stats", "lines per time bucket, by stream or level (from stored counts)")
    stats.add_argument("containers", nargs="*", metavar="CONTAINER", help="name, id or id prefix")
    stats.add_argument("--service", metavar="PROJECT/SERVICE", help="every container of it")
    stats.add_argument("--since", help="RFC 3339 time, duration (10m, 2h, 3d) or Unix seconds")
    stats.add_argument("--until", help="RFC 3339 time, duration (10m, 2h, 3d) or Unix seconds")
    stats.add_argument("--bucket", help="whole minutes: 1m, 5m, 1h, 1d (default: ~60 buckets)")
    stats.add_argument("--by", choices=["stream", "level"], default="stream")
    stats.add_argument("--stream", action="append", choices=["stdout", "stderr", "tty"])
    stats.add_argument(
        "--level", choices=["trace", "debug", "info", "warn", "error", "fatal"],
        help="only lines of this level and above",
    )  # fmt: skip
    stats.add_argument("--host", help="only lines collected on this host")
    stats.add_argument("--json", action="store_true", help="one JSON object per bucket")

    status = command("status", "one line per known container: state, lines, last line, gaps")
    status.add_argument("--json", action="store_true", help="one JSON document")
    status.add_argument("--host", help="only this host of a shared store")

    coll = command("collectors", "list, start or stop collectors of the running agent")
    coll.add_argument("action", choices=["ls", "start", "stop"])
    coll.add_argument("container", nargs="?", help="a container name or id")

    web = command("web", "serve the log viewer (reads the store only; default 127.0.0.1:8080)")
    web.add_argument("--host", help="listen address (beyond loopback: web.token or users_file)")
    web.add_argument("--port", type=int, help="listen port")
    web.add_argument(
        "--hash-password",
        action="store_true",
        help="read a password on stdin, print its line for web.users_file (name:hash)",
    )

    gaps = command("gaps", "lines known to be lost for good, and why")
    gaps.add_argument("container", nargs="?", help="a container name or id prefix")
    gaps.add_argument("--json", action="store_true", help="one JSON object per line")
    gaps.add_argument("--forward", metavar="NAME", help="lines a forward destination never got")

    events = command("events", "containers' lives as stored: start, die (exit code), oom, ...")
    events.add_argument("container", nargs="?", help="a container name or id prefix")
    events.add_argument("--since", help="RFC 3339 time, duration (10m, 2h, 3d) or Unix seconds")
    events.add_argument("--until", help="RFC 3339 time, duration (10m, 2h, 3d) or Unix seconds")
    events.add_argument("--host", help="only this host of a shared store")
    events.add_argument("--json", action="store_true", help="one JSON object per event")

    alerts = command("alerts", "the alert rules, what they sent, or a test post (RULE)")
    alerts.add_argument("action", choices=["ls", "history", "test"])
    alerts.add_argument("rule", nargs="?", help="a rule's name (history: only it; test: it)")
    alerts.add_argument("--json", action="store_true", help="one JSON object per line")
    return parser


def _collect_garbage_seldom() -> None:
    """The agent allocates a few objects per line and `logs` a few per row, nearly none of them
    in cycles, beside ~50k long-lived ones (modules, tortoise, aiohttp): at Python's default
    (a collection every 700 allocations, a full one every 100) the collector walked them over
    and over, ~1 µs a line with 100 busy containers (py-spy), a tenth of `logs --json`. What
    start-up made is frozen out of its sight; collections run ~30 times less often."""
    gc.freeze()
    gc.set_threshold(20_000, 10, 10)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.getLogger("asyncpg.pool").addFilter(_one_line_record)  # `logs -f` too
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"logagent: config error: {redact(str(exc))}", file=sys.stderr)
        return 2
    from agent import commands

    _collect_garbage_seldom()
    reader = settings.read_url or settings.db_url  # a standby may serve what only reads

    try:
        if args.command == "run":
            from agent.app import run_agent

            configure_logging(settings.log_level)
            _collect_garbage_seldom()  # again: the agent's own modules are in now
            return anyio.run(run_agent, settings)
        if args.command == "logs":
            opts = commands.LogsOptions(
                containers=tuple(args.containers),
                since=args.since,
                until=args.until,
                streams=tuple(args.stream or ()),
                grep=args.grep,
                tail=args.tail,
                host=args.host,
                level=args.level,
                timestamps=args.timestamps,
                follow=args.follow,
                json=args.json,
                raw=args.raw,
                events=args.events,
                where=args.where,
                service=args.service,
            )
            return anyio.run(commands.logs, reader, opts)
        if args.command == "stats":
            from agent.stats import StatsOptions
            from agent.stats import stats as run_stats

            chosen = StatsOptions(
                containers=tuple(args.containers), service=args.service, since=args.since,
                until=args.until, bucket=args.bucket, by=args.by,
                streams=tuple(args.stream or ()), level=args.level, host=args.host,
                json=args.json,
            )  # fmt: skip
            return anyio.run(run_stats, reader, chosen)
        if args.command == "web":
            from agent.web.auth import AccessError, access_for, hash_password
            from agent.web.server import serve

            if args.hash_password:
                print(hash_password(sys.stdin.readline().rstrip("\n")))
                return 0
            host = args.host or settings.web_host
            port = settings.web_port if args.port is None else args.port
            try:
                access = access_for(host, settings.web_token, settings.web_users_file)
            except AccessError as exc:
                print(f"logagent: {exc}", file=sys.stderr)
                return 2
            configure_logging(settings.log_level)
            return anyio.run(serve, reader, host, port, access, settings.alerts)
        if args.command == "gaps":
            shown = partial(commands.gaps, forward=args.forward)
            return anyio.run(shown, reader, args.container, args.json)
        if args.command == "events":
            run_events = partial(
                commands.events,
                since=args.since,
                until=args.until,
                host=args.host,
                as_json=args.json,
            )
            return anyio.run(run_events, reader, args.container)
        if args.command == "alerts":
            from agent.alerts.cli import alerts as run_alerts

            return anyio.run(
                run_alerts, settings.db_url, settings.alerts, args.action, args.rule, args.json
            )
        if args.command == "status":
            return anyio.run(
                commands.status,
                settings.db_url,
                settings.api_socket,
                args.json,
                sys.stdout,
                args.host,
            )
        if args.command == "collectors":
            return anyio.run(
                commands.collectors, settings.api_socket, args.action, args.container, sys.stdout
            )
    except commands.UsageError as exc:
        print(f"logagent: {exc}", file=sys.stderr)
        return 2
    except (StorageError, DockerError, BaseExceptionGroup) as exc:
        said = _one_line(exc)
        if said is None:
            raise
        print(f"logagent: {redact(redact(said[0], settings.db_url), reader)}", file=sys.stderr)
        return said[1]
    except commands.AgentUnreachable as exc:
        print(f"logagent: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `logagent logs | head`
        sys.stderr.close()
        return 0
    return 2


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _one_line_record(record: logging.LogRecord) -> bool:
    """asyncpg's pool logs a traceback at each failed reconnect (a server restarting or
    failed over), where the writer already says the store is away: the error, on one line."""
    if record.exc_info and record.exc_info[1] is not None:
        record.msg, record.args = f"{record.getMessage()}: {record.exc_info[1]}", ()
        record.exc_info = None
    return True


def _one_line(exc: BaseException) -> tuple[str, int] | None:
    """A failure a person can act on, as one line and an exit code (2: configuration or a
    second agent, 1: the environment); None for anything else (a bug: its traceback)."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            said = _one_line(inner)
            if said is not None:
                return said
        return None
    if isinstance(exc, StoreLocked):
        return f"storage error: {exc}", 2
    if isinstance(exc, StorageError):
        return f"storage error: {exc}", 1
    if isinstance(exc, DockerError):
        return f"docker error: {exc}", 1
    return None


if __name__ == "__main__":
    sys.exit(main())
