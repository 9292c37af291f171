"""Multi-host PostgreSQL URLs (libpq's form), split for tortoise and asyncpg."""

from __future__ import annotations

import pytest

from agent.storage.db import expanded, tortoise_config
from agent.storage.pg_url import split_hosts


def test_one_host_or_a_sqlite_file_is_left_as_it_is() -> None:
    for url in ("sqlite:////var/lib/logagent/logs.db", "sqlite:///./logs.db"):
        assert split_hosts(url) == (url, [])
    url = "postgres://u:p@db:6543/logs"
    assert split_hosts(url) == (url, [("db", 6543)])


def test_several_hosts_are_split_with_their_ports() -> None:
    single, hosts = split_hosts("postgres://u:p@db1:5432,db2,[::1]:5433/logs?sslmode=disable")
    assert single == "postgres://u:p@db1:5432/logs?sslmode=disable"
    assert hosts == [("db1", 5432), ("db2", 5432), ("::1", 5433)]
    with pytest.raises(ValueError, match="'x' of host 'db2' is not a number"):
        split_hosts("postgres://u:p@db1,db2:x/logs")
    for bad in ("postgres://u:p@db1,/logs", "postgres://u:p@db1,,db2/logs"):
        with pytest.raises(ValueError, match="an empty host"):
            split_hosts(bad)


def test_the_writer_connects_only_where_writes_are_taken() -> None:
    url = "postgres://u:p@db1:5432,db2:5433/logs"
    conn = expanded(url, writer=True)
    assert conn["engine"] == "agent.storage.pg_client"
    creds = conn["credentials"]
    assert (creds["hosts"], creds["ports"]) == (["db1", "db2"], [5432, 5433])
    assert creds["target_session_attrs"] == "read-write"
    # The read side goes where the URL says (a standby may serve it).
    read = tortoise_config(url, create=False)["connections"]["default"]["credentials"]
    assert "target_session_attrs" not in read
    one = expanded("postgres://u:p@db1/logs", writer=True)
    assert one["engine"] == "tortoise.backends.asyncpg"
    assert one["credentials"]["target_session_attrs"] == "read-write"
