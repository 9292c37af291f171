"""agent/alerts/destinations.py and delivery.as_text: checked at start-up, filled as data."""

from __future__ import annotations

import re

import pytest

from agent.alerts.delivery import as_text
from agent.alerts.destinations import APPRISE, WEBHOOK, AlertConfigError, fill, parse_destination


def dest(**table: object) -> object:
    return parse_destination({"name": "d", **table}, "alerts.destinations[0]", {"TOK": "s3cret"})


def test_a_url_is_a_webhook_or_one_apprise_knows() -> None:
    assert dest(url="https://hooks.example/x").kind == WEBHOOK  # type: ignore[attr-defined]
    assert dest(url="ntfy://ntfy.example/ops").kind == APPRISE  # type: ignore[attr-defined]
    assert dest(url="mailto://user:pw@mail.example").kind == APPRISE  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("table", "said"),
    [
        ({"url": "gopher://s3cret@x"}, "nor one Apprise knows"),
        ({"url": "slack://"}, "nor one Apprise knows"),  # its parts are wrong
        ({"url": "ntfy://x/t", "template": {"a": "{line}"}}, "for http(s) webhooks"),
        ({"url": "https://x", "template": {"a": "{password}"}}, "template.a: no field {password}"),
        ({"url": "https://x", "template": {"a": None}}, "template.a: a JSON value"),
        ({"url": "https://x", "headers": {"Host": "evil"}}, "'Host' is not a header to set"),
        ({"url": "https://x", "headers": {"X-A": "a\r\nX-B: b"}}, "a value of one line"),
        ({"url": "https://x", "headers_env": {"Authorization": "NOPE"}}, "environment has no NOPE"),
        ({"url": "https://x", "header": {}}, "header: unknown key"),
    ],
)  # fmt: skip
def test_a_bad_destination_is_one_line_naming_its_key(table: dict, said: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(AlertConfigError) as raised:
        dest(**table)
    assert said in str(raised.value) and "s3cret" not in str(raised.value)


def test_a_secret_header_comes_from_the_environment_and_is_never_shown() -> None:
    d = dest(url="https://x", headers_env={"Authorization": "TOK"})
    assert d.headers == (("Authorization", "s3cret"),)  # type: ignore[attr-defined]
    assert "s3cret" not in repr(d)


def test_a_template_is_filled_in_its_structure_not_its_text() -> None:
    alert = {"rule": "r", "line": '"}, "injected": {"x": 1', "count": 2}
    filled = fill({"text": "{rule}: {line}", "n": ["{count}", 3]}, alert)
    assert filled == {"text": 'r: "}, "injected": {"x": 1', "n": ["2", 3]}


def test_a_notification_shows_a_hostile_line_as_text() -> None:
    alert = {"rule": "r", "container_name": "web\x1b]0;pwned\x07", "line": "a\x1b[2Jb",
             "count": 1, "more": 0, "time_ns": 0, "id": "i", "host": "h", "kind": "line",
             "container_id": "c" * 64,
             "after": [{"time": "t", "line": "\x1b[31mnext"}]}  # fmt: skip
    title, body = as_text(alert)
    assert "\x1b" not in title + body and "\x07" not in title
    assert body.splitlines()[0] == "a\\x1b[2Jb"
    assert "-- after:" in body and "t \\x1b[31mnext" in body


def test_a_notification_carries_no_mention_or_masked_link_a_chat_service_acts_on() -> None:
    """Apprise hands Discord the text as it is: `@everyone` there pinged a whole server and
    `[click](url)` showed a masked link (a review's finding). A zero-width space after `@`
    and `<` and in `](` breaks each; one the line holds itself is shown as an escape."""
    line = "ERROR @everyone @here <@123> <@&456> <#789> <!channel> [click](http://evil.example)"
    alert = {"rule": "r", "container_name": "@here", "line": line + "\u200b", "count": 1,
             "more": 0, "time_ns": 0, "id": "i", "host": "h", "kind": "line",
             "container_id": "c" * 64, "before": [{"time": "t", "line": "<@1>"}]}  # fmt: skip
    title, body = as_text(alert)
    for text in (title, body):
        assert not re.search(r"@(everyone|here|\d|&)|<[@#!]|\]\(", text), text
    assert (
        body.splitlines()[0]
        == line.replace("@", "@\u200b").replace("<", "<\u200b").replace("](", "]\u200b(")
        + "\\u200b"
    )
    assert title == "logagent: r on @\u200bhere"
    assert "t <\u200b@\u200b1>" in body
    # Mail, ntfy and the generic posts read no such syntax: the line as it was (escapes aside)
    assert as_text(alert, chat=False)[1].splitlines()[0] == line + "\\u200b"


def test_an_apprise_url_it_refuses_is_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    """Apprise logs the URL it cannot load, token and all: its log is kept quiet."""
    with pytest.raises(AlertConfigError) as raised:
        dest(url="slack://SECRETTOKEN")
    assert "SECRETTOKEN" not in caplog.text and "SECRETTOKEN" not in str(raised.value)
