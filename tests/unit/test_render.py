"""Rows to text: terminal-safe by default, JSON with exactly the documented keys."""

from __future__ import annotations

import json

import pytest

from agent.batch import FLAG_CONTINUED, FLAG_TRUNCATED
from agent.render import json_line, plain_line, terminal_safe
from agent.storage.reader import StoredRow
from agent.when import parse_when

ROW = StoredRow(
    7, "h1", "c" * 64, "web", "stderr", 5, "2026-11-26T11:59:02.760761749Z", 'héllo "x"', 0
)


def test_escape_sequences_are_shown_not_executed() -> None:
    attack = "\x1b]0;pwned\x07 \x1b[2J tab\tok \x9b"
    assert terminal_safe(attack) == "\\x1b]0;pwned\\x07 \\x1b[2J tab\tok \\x9b"
    assert plain_line(ROW._replace(message=attack), timestamps=False, prefix=False, raw=True) == (
        attack + "\n"
    )


def test_plain_line_with_timestamp_and_prefix() -> None:
    line = plain_line(ROW, timestamps=True, prefix=True, raw=False)
    assert line == 'web | 2026-11-26T11:59:02.760761749Z héllo "x"\n'


def test_json_line_has_exactly_the_documented_keys() -> None:
    obj = json.loads(json_line(ROW))
    assert obj == {
        "host": "h1",
        "container_id": "c" * 64,
        "container_name": "web",
        "stream": "stderr",
        "timestamp": "2026-11-26T11:59:02.760761749Z",
        "message": 'héllo "x"',
    }
    assert json.loads(json_line(ROW._replace(flags=FLAG_TRUNCATED)))["truncated"] is True


def test_json_piece_flags_say_which_way_a_piece_joins() -> None:
    first, middle, last = (
        json.loads(json_line(ROW._replace(flags=f)))
        for f in (FLAG_TRUNCATED, FLAG_TRUNCATED | FLAG_CONTINUED, FLAG_CONTINUED)
    )
    assert (first.get("truncated"), first.get("continued")) == (True, None)
    assert (middle.get("truncated"), middle.get("continued")) == (True, True)
    # The last piece does not go on: a reader joining "truncated" rows stops here.
    assert (last.get("truncated"), last.get("continued")) == (None, True)


def test_when_takes_durations_rfc3339_and_unix_seconds() -> None:
    now = 10_000 * 1_000_000_000
    assert parse_when("10m", now_ns=now) == now - 600 * 1_000_000_000
    assert parse_when("1h30m", now_ns=now) == now - 5400 * 1_000_000_000
    assert parse_when("3d", now_ns=now) == now - 3 * 86400 * 1_000_000_000
    assert parse_when("1970-01-01T00:00:01.5Z") == 1_500_000_000
    assert parse_when("12.25") == 12_250_000_000
    with pytest.raises(ValueError, match="neither"):
        parse_when("yesterday")


def test_invisible_and_bidi_characters_are_shown_escaped() -> None:
    hostile = "ok\u202egnp.exe\u2066x\u2069\u200b\ufeff\u2028end\U000e0041"
    assert terminal_safe(hostile) == (
        "ok\\u202egnp.exe\\u2066x\\u2069\\u200b\\ufeff\\u2028end\\U000e0041"
    )


def test_a_literal_backslash_cannot_pass_for_an_escape() -> None:
    assert terminal_safe("\\x1b[2J and \x1b") == "\\\\x1b[2J and \\x1b"


def test_every_format_and_separator_character_is_escaped_everywhere() -> None:
    import sys
    import unicodedata

    hidden = [
        chr(c)
        for c in range(sys.maxunicode + 1)
        if unicodedata.category(chr(c)) in ("Cf", "Zl", "Zp", "Cc") and chr(c) != "\t"
    ]
    for ch in hidden:
        assert ch not in terminal_safe(ch), hex(ord(ch))
        line = json_line(ROW._replace(message=ch))
        assert ch not in line[:-1], hex(ord(ch))  # but its own newline
        assert json.loads(line)["message"] == ch


def test_json_escapes_del_and_c1_but_keeps_the_text() -> None:
    line = json_line(ROW._replace(message="a\x7fb\x9bc"))
    assert "\x7f" not in line and "\x9b" not in line
    assert json.loads(line)["message"] == "a\x7fb\x9bc"


@pytest.mark.parametrize("text", ["inf", "1e300", "-1e300", "99999999999999d", "", "  ", "nan"])
def test_times_out_of_range_or_empty_are_clear_errors(text: str) -> None:
    with pytest.raises(ValueError):
        parse_when(text)
