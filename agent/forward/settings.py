"""Pure: the `[[forward]]` destinations of the config, checked before the agent starts.

Each destination hands this host's committed lines on, from a position of its own kept in the
store (agent/forward/runner.py): `ndjson` appends JSON lines to a file; `syslog` sends RFC 5424
messages over TCP with octet counting (RFC 6587), optionally TLS; `otlp` POSTs OTLP/HTTP
logs (protobuf), `loki` Loki's push API, each gzip'ed, with headers that may be secrets
(from the environment or a file, as an alert destination's). Which containers go there
is chosen as an alert rule's are (names, images, compose projects and services, labels:
globs), and a level at or above.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.alerts.destinations import AlertConfigError, headers_of
from agent.alerts.selection import Selection, parse_selection
from agent.durations import parse_duration
from agent.level_names import level_of_word
from agent.storage.sends import Sends

KINDS = ("ndjson", "syslog", "otlp", "loki")
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,37}")  # its position's name stays within 64
# No user:password@ and no ?query: a URL is shown (status, the API, gaps, the log), so a
# secret goes in a header (headers_env, headers_file), never in it.
_URL = re.compile(r"https?://[^\s/?#@]+(/[^\s#?]*)?")
_ADDRESS = re.compile(r"(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]{1,253}):(?P<port>[0-9]{1,5})")
_COMMON = {
    "name", "kind", "min_level", "batch_lines", "batch_bytes", "linger", "start", "names",
    "images", "projects", "services", "labels",
}  # fmt: skip
_HTTP = {"url", "headers", "headers_env", "headers_file", "ca_file"}
_KIND_KEYS = {"ndjson": {"path"}, "syslog": {"address", "tls", "ca_file", "max_message_bytes"},
              "otlp": _HTTP, "loki": _HTTP}  # fmt: skip
MAX_DESTINATIONS = 32


class ForwardConfigError(ValueError):
    """A `[[forward]]` value the agent cannot use; the message names the key."""


@dataclass(frozen=True)
class Destination:
    name: str
    kind: str
    path: str = ""  # ndjson: the file appended to
    host: str = ""  # syslog: where the receiver listens
    port: int = 0
    tls: bool = False  # syslog over TLS, verified (against ca_file if given, else the system's)
    ca_file: str = ""
    url: str = ""  # otlp, loki: where to POST (https verified, against ca_file if given)
    # otlp, loki: values may be secrets: never shown, nor in a repr (a log line, a traceback)
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    header_files: tuple[tuple[str, str], ...] = ()  # headers_file: header, path (read again)
    min_level: int | None = None  # lines at this level or above; None: every line
    selection: Selection = field(default_factory=Selection)
    batch_lines: int = 500  # lines sent at once, at most
    batch_bytes: int = 1 << 20  # bytes sent at once, at most (a line alone may pass it)
    linger_s: float = 1.0  # a batch not full waits this long for more lines
    from_start: bool = False  # a destination new to the store: every stored line, or from now
    # syslog: a message past it is cut, and says so. Never above the receiver's own limit:
    # a receiver cuts a longer one and reads its rest as a message of its own, which a
    # container's line can then forge (host, program, id). rsyslog's default is 8 KiB.
    max_message_bytes: int = 8192

    def sends(self) -> Sends:
        """What of this host's rows it sends: its min_level, and its selection's judge
        (None: every container) — the forwarder's filter, and retention's for its gaps."""
        return Sends(self.min_level, self.selection.picks if self.selection.shown() else None)

    def shown(self) -> dict[str, Any]:
        """For `status` and the API (a path or an address, never a secret)."""
        where = self.path or self.url or f"{self.host}:{self.port}"
        return {"name": self.name, "kind": self.kind, "to": where, **self.selection.shown()}


def parse_forward(tables: object, env: Mapping[str, str]) -> tuple[Destination, ...]:
    """The config's `[[forward]]` list (None: no forwarding); secrets from `env`."""
    if tables is None:
        return ()
    if not isinstance(tables, list) or len(tables) > MAX_DESTINATIONS:
        raise ForwardConfigError(f"forward: expected at most {MAX_DESTINATIONS} [[forward]] tables")
    found = [_destination(t, f"forward[{i}]", env) for i, t in enumerate(tables)]
    names = [d.name for d in found]
    if len(set(names)) != len(names):
        raise ForwardConfigError("forward: two destinations have the same name")
    return tuple(found)


def _destination(table: object, where: str, env: Mapping[str, str]) -> Destination:
    if not isinstance(table, dict):
        raise ForwardConfigError(f"{where}: expected a table")
    name = table.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ForwardConfigError(f"{where}.name: 1-38 of a-z, 0-9, '_', '-'")
    where = f"forward {name}"
    kind = table.get("kind")
    if kind not in KINDS:
        raise ForwardConfigError(f"{where}.kind: one of {', '.join(KINDS)}, got {kind!r}")
    known = _COMMON | _KIND_KEYS[str(kind)]
    if unknown := sorted(set(table) - known):
        raise ForwardConfigError(
            f"{where}: unknown key {unknown[0]} for a {kind} destination (known: {sorted(known)})"
        )
    values: dict[str, Any] = {"name": name, "kind": kind}
    if kind == "ndjson":
        path = table.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            raise ForwardConfigError(f"{where}.path: an absolute file path")
        values["path"] = path
    elif kind in ("otlp", "loki"):
        url = table.get("url")
        if not isinstance(url, str) or not _URL.fullmatch(url):
            raise ForwardConfigError(
                f"{where}.url: an http:// or https:// URL, without user:password@ or ?query "
                "(a secret goes in headers_env or headers_file)"
            )
        if kind == "otlp" and not _has_otlp():
            raise ForwardConfigError(f"{where}: OTLP needs the opentelemetry-proto package")
        values["url"] = url
        try:
            values["headers"] = headers_of(table, where, env)
        except AlertConfigError as exc:
            raise ForwardConfigError(str(exc)) from None
        values["header_files"] = tuple(table.get("headers_file", {}).items())  # checked above
        values["ca_file"] = _ca_file(table, where, url.startswith("https://"))
    else:
        address = table.get("address")
        match = _ADDRESS.fullmatch(address) if isinstance(address, str) else None
        if match is None or not 0 < int(match["port"]) < 65536:
            raise ForwardConfigError(f"{where}.address: host:port, got {address!r}")
        values["host"], values["port"] = match["host"].strip("[]"), int(match["port"])
        values["tls"] = _bool(table, "tls", where)
        values["ca_file"] = _ca_file(table, where, values["tls"])
        values["max_message_bytes"] = _int(
            table, "max_message_bytes", where, 480, 8 << 20, Destination.max_message_bytes
        )
    if (level := table.get("min_level")) is not None:
        values["min_level"] = level_of_word(str(level).lower())
        if values["min_level"] is None:
            raise ForwardConfigError(f"{where}.min_level: a level (debug, info, warn, …)")
    values["batch_lines"] = _int(table, "batch_lines", where, 1, 10_000, 500)
    values["batch_bytes"] = _int(table, "batch_bytes", where, 1024, 64 << 20, 1 << 20)
    linger = table.get("linger", "1s")
    try:
        values["linger_s"] = parse_duration(str(linger))
    except ValueError as exc:
        raise ForwardConfigError(f"{where}.linger: {exc}") from None
    if not 0.01 <= values["linger_s"] <= 60:  # 0 would read the store in a loop
        raise ForwardConfigError(f"{where}.linger: from 10ms to 60s")
    start = table.get("start", "now")
    if start not in ("now", "stored"):
        raise ForwardConfigError(f"{where}.start: 'now' or 'stored' (every stored line)")
    values["from_start"] = start == "stored"
    try:
        values["selection"] = parse_selection(table, where)
    except AlertConfigError as exc:
        raise ForwardConfigError(str(exc)) from None
    return Destination(**values)


def _bool(table: dict[str, Any], key: str, where: str) -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise ForwardConfigError(f"{where}.{key}: true or false")
    return value


def _int(table: dict[str, Any], key: str, where: str, low: int, high: int, default: int) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ForwardConfigError(f"{where}.{key}: a whole number from {low} to {high}")
    return value


def _ca_file(table: dict[str, Any], where: str, tls: bool) -> str:
    ca_file = table.get("ca_file", "")
    if not isinstance(ca_file, str) or (ca_file and not tls):
        raise ForwardConfigError(f"{where}.ca_file: a file path, for TLS (tls, https://)")
    if ca_file and not Path(ca_file).is_file():
        raise ForwardConfigError(f"{where}.ca_file: no file {ca_file}")
    return ca_file


def _has_otlp() -> bool:
    from importlib.util import find_spec

    return find_spec("opentelemetry.proto") is not None
