"""agent/where.py: conditions on a JSON or logfmt line's fields (pure)."""

from __future__ import annotations

import pytest

from agent.where import checker, fields_of, parse


def holds(where: str, line: str) -> bool:
    return checker(parse(where))(line, None)


@pytest.mark.parametrize(
    ("where", "line", "expected"),
    [
        ("status>=500", '{"status": 503}', True),
        ("status >= 500", '{"status": 404}', False),
        ("status>=500", "status=502 method=GET", True),  # logfmt values are text: as numbers
        ('user.id="42"', '{"user": {"id": "42"}}', True),
        ('user.id == "42"', '{"user": {"id": 42}}', True),  # a JSON number's text
        ("user.id=42", '{"user.id": 42}', True),  # a key holding a dot, found first
        ("method=POST status<300", "method=POST status=201", True),
        ("method=POST status<300", "method=GET status=201", False),
        ("status!=200", '{"status": 500}', True),
        ("status!=200", '{"other": 1}', False),  # a field the line lacks fails every test
        ("ok=true", '{"ok": true}', True),
        ('msg="upstream gone"', 'level=error msg="upstream gone"', True),
        ('msg="say \\"hi\\""', '{"msg": "say \\"hi\\""}', True),
        ("status>=500", "plain text status 503", False),
        ("status>=500", '["status", 503]', False),  # not an object
        ("level=error", '{"level": "error"', False),  # cut JSON: not read
        ("n=1.5", '{"n": 1.50}', True),
        ("n=1", '{"n": 1.0}', True),
    ],
)
def test_conditions_on_fields(where: str, line: str, expected: bool) -> None:
    assert holds(where, line) is expected


@pytest.mark.parametrize(
    ("where", "said"),
    [
        ("status", "cannot read 'status'"),
        ("status >= high", ">= compares numbers"),
        ("", "no condition"),
        ("a=1 " * 17, "at most 16"),
        ("x" * 2000, "at most 1024"),
        ("a=1 &&& b=2", "cannot read '&&& b=2'"),
    ],
)
def test_a_bad_where_says_what_it_cannot_read(where: str, said: str) -> None:
    with pytest.raises(ValueError, match=said):
        parse(where, "rule.where")


def test_a_hostile_line_is_only_data() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    assert fields_of('{"a": ' + deep + "}") is None  # too long to be read: no fields
    assert fields_of('{"a": ' + "[" * 5000 + "]" * 5000 + "}") is None  # too deep for json
    assert not holds("a=1", '{"a": ' + "[" * 5000 + "1" + "]" * 5000 + "}")
    assert fields_of("=== ===") is None
    assert fields_of('a=1 b="x\x1b[31m"') == {"a": "1", "b": "x\x1b[31m"}


def test_a_long_run_of_digits_is_read_once_not_every_way() -> None:
    """`status>=500` against a field of 20,000 digits and a letter: not a number, in one
    pass (the number pattern split the run every way: seconds of CPU on the event loop,
    79 s at 64 KB, from a line any container can write)."""
    value = "1" * 20_000 + "x"
    assert not holds("status>=500", '{"status": "' + value + '"}')
    assert not holds("status>=500", "status=" + value[-8000:])
    assert holds("status>=500", '{"status": "503.0"}') and holds("n<1", '{"n": "-.5e-3"}')


def test_keys_spelled_in_escapes_and_integers_past_2_53_are_read_as_written() -> None:
    """json.dumps writes "température" as "temp\\u00e9rature": the first cut by the names'
    text passed such lines over (and a line could spell "st\\u0061tus" to slip past a
    rule); ids past 2**53 were compared as floats, 9007199254740993 equal to ...992."""
    assert holds("température>20", '{"temp\\u00e9rature": 25}')
    assert holds("status>=500", '{"st\\u0061tus": 503}')
    big = "user_id==9007199254740993"
    assert holds(big, '{"user_id": 9007199254740993}')
    assert holds(big, '{"user_id": "9007199254740993"}')
    assert not holds(big, '{"user_id": 9007199254740992}')
    assert holds("user_id!=9007199254740993", '{"user_id": 9007199254740992}')
    assert holds("n==3", '{"n": 3.0}') and not holds("n==3", '{"n": true}')
    assert holds("n>" + "9" * 30, '{"n": 1' + "0" * 30 + "}")  # exact, also past floats
