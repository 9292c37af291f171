"""PostgreSQL URLs with several hosts, as libpq writes them (pure).

`postgres://user@db1:5432,db2:5432/logs?target_session_attrs=read-write` names a primary and
its standby: a client tries them in turn and keeps the first that suits (the writer: the one
that takes writes, so after a failover it finds the promoted standby). tortoise's URL parser
takes one host; asyncpg takes a list. So the hosts are split off here, tortoise parses the
rest, and our engine (storage/pg_client.py) hands asyncpg the list.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

DEFAULT_PORT = 5432


def split_hosts(db_url: str) -> tuple[str, list[tuple[str, int]]]:
    """The URL with its first host only, and every host with its port (one host: one).
    ValueError for a port that is not a number."""
    parts = urlsplit(db_url)
    user, at, hostlist = parts.netloc.rpartition("@")
    if "," not in hostlist:  # one host (or a SQLite file): the URL as it is
        return db_url, [(parts.hostname or "", parts.port or DEFAULT_PORT)] if hostlist else []
    hosts: list[tuple[str, int]] = []
    for spec in hostlist.split(","):
        if not spec:
            raise ValueError(f"an empty host in {hostlist!r}")
        if spec.startswith("["):  # [IPv6]:port
            addr, _, rest = spec[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else ""
        else:
            addr, _, port = spec.partition(":")
        if port and not port.isdigit():
            raise ValueError(f"port {port!r} of host {addr!r} is not a number")
        hosts.append((addr, int(port) if port else DEFAULT_PORT))
    first = hostlist.split(",")[0]
    single = urlunsplit(parts._replace(netloc=f"{user}{at}{first}"))
    return single, hosts


def with_hosts(credentials: dict[str, Any], hosts: list[tuple[str, int]]) -> dict[str, Any]:
    """tortoise's credentials of the first host, given every host (our engine's `hosts`)."""
    if len(hosts) < 2:
        return credentials
    return {**credentials, "hosts": [h for h, _ in hosts], "ports": [p for _, p in hosts]}


def server_name(hosts: list[tuple[str, int]]) -> str:
    return ",".join(f"{h}:{p}" for h, p in hosts)
