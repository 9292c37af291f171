"""A database URL's password never reaches a message: logs, store errors, config errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import cli
from agent.commands import shown_state
from agent.config import ConfigError, load_settings
from agent.redact import redact
from agent.storage.db import StorageError, sqlite_path
from agent.storage.errors import describe, unreachable

SECRET = "s3cret-Pw"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgres://u:s3cret-Pw@db:5432/logs", "postgres://u:***@db:5432/logs"),
        ("postgres://u:s3cret-Pw@h1:5432,h2:5432/logs", "postgres://u:***@h1:5432,h2:5432/logs"),
        ("asyncpg://u:p@ss:w/rd@db/logs?ssl=1", "asyncpg://u:***@db/logs?ssl=1"),
        ("postgres://me@corp:s3cret-Pw@db/logs", "postgres://me@corp:***@db/logs"),  # Azure
        (
            "postgres://u@db/logs?password=s3cret-Pw&ssl=1",
            "postgres://u@db/logs?password=***&ssl=1",
        ),
    ],
)
def test_a_urls_password_is_masked(url: str, shown: str) -> None:
    assert redact(url) == shown


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://data/logagent.db",
        "sqlite:///var/lib/logagent/logs.db",
        "postgres://u@db:5432/logs",
        "postgres://me@corp@db:5432/logs",
        "postgres://h1:5432,h2:5432/logs",
        "postgres://u:@db/logs",
        "tcp://127.0.0.1:2375",
    ],
)
def test_a_url_without_password_is_unchanged(url: str) -> None:
    assert redact(url) == url


def test_passwords_inside_a_longer_message_are_masked() -> None:
    text = (
        "cannot connect: 'postgres://u:s3cret-Pw@db/logs' (dsn host=db password=s3cret-Pw "
        "user=u), kwargs {'user': 'u', 'password': 's3cret-Pw'}, then asyncpg://v:other1@h2/x"
    )
    said = redact(text)
    assert SECRET not in said and "other1" not in said
    assert "'postgres://u:***@db/logs'" in said and "asyncpg://v:***@h2/x" in said
    assert "password=*** user=u" in said and "'password': '***'" in said


def test_the_urls_password_is_masked_wherever_a_message_quotes_it() -> None:
    url = "postgres://u:p%40ss-word@db/logs"  # percent-encoded, as a URL must write "@"
    said = redact("auth failed with p@ss-word (as given: p%40ss-word)", url)
    assert said == "auth failed with *** (as given: ***)"


def test_config_errors_about_the_db_url_hide_its_password() -> None:
    for url in (
        f"mysql://u:{SECRET}@db/logs",  # not a URL tortoise can use
        f"postgres://u:{SECRET}@h1:5432,h2:x/logs",  # a port that is not a number
        f"postgres://u:{SECRET}@db:port/logs",
    ):
        with pytest.raises(ConfigError) as caught:
            load_settings(None, {"LOGAGENT_DB_URL": url})
        assert SECRET not in str(caught.value)
        assert "u:***@" in str(caught.value)


def test_the_cli_prints_a_config_error_without_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(f'[storage]\ndb_url = "postgres://u:{SECRET}@h1:5432,h2:x/logs"\n')
    assert cli.main(["status", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("logagent: config error: storage.db_url: 'postgres://u:***@h1:5432")
    assert SECRET not in err


def test_an_unusable_store_url_is_said_without_its_password() -> None:
    with pytest.raises(StorageError) as caught:
        sqlite_path(f"postgres://u:{SECRET}@h1:5432,h2:x/logs")
    assert SECRET not in str(caught.value)
    assert "postgres://u:***@h1:5432,h2:x/logs" in str(caught.value)


class _Refused(Exception):
    """Stands for asyncpg's error: what matters is its SQLSTATE."""

    sqlstate = "28P01"


class _Wrapper(Exception):
    """Stands for tortoise's wrapper, which puts the driver's error in args[0]."""


def test_a_store_that_cannot_be_reached_is_described_with_what_to_check() -> None:
    url = f"postgres://u:{SECRET}@127.0.0.1:1/logs"
    refused = ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 1)")
    said = describe(url, refused)
    assert said.startswith("'postgres://u:***@127.0.0.1:1/logs': [Errno 111] Connect call")
    assert "check that the database server runs there" in said
    assert "storage.db_url (LOGAGENT_DB_URL)" in said
    auth = describe(url, _Wrapper(_Refused(f"password {SECRET} authentication failed")))
    assert SECRET not in auth and "check the user and password" in auth


def test_only_a_store_away_or_refusing_counts_as_unreachable() -> None:
    assert unreachable(BrokenPipeError()) is None  # `logs | head`: stdout, not the store
    assert unreachable(ValueError("a bug")) is None
    inner = _Refused("no")
    found = unreachable(ExceptionGroup("g", [ValueError("x"), _Wrapper(inner)]))
    assert found is not None and found[0] is inner


@pytest.mark.parametrize(
    ("live", "stored", "agent", "shown"),
    [
        (None, "exited", "running", "exited"),
        (None, "removed", "not running", "removed"),
        (None, "running", "running", "not collecting"),
        (None, None, "not running", "-"),
        ("collecting", "exited", "running", "collecting"),  # restarted: the agent knows
    ],
)
def test_status_says_an_ended_container_ended(
    live: str | None, stored: str | None, agent: str, shown: str
) -> None:
    assert shown_state(live, stored, agent) == shown
