"""Pure: conditions on the fields of a JSON or logfmt line (`status>=500 user.id="42"`).

An alert rule's `where` (and, later, `logs --where`): each condition names a field (a dotted
path walks nested JSON objects; a key that itself holds dots is found first), an operator
and a value. A bare number compares as a number; a quoted or bare word compares as text
(a JSON number's text is how JSON writes it). A field the line does not have fails every
condition on it, `!=` included: a line that says nothing of `status` is not a 5xx, nor a 2xx.
The conditions of one `where` must all hold.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAX_CONDITIONS = 16
MAX_TEXT = 1024  # of a whole `where`
MAX_PARSED = 64 * 1024  # a longer line's fields are not read: it matches no condition
MAX_LOGFMT = 8 * 1024  # logfmt is parsed by a regex in Python (~0.5 µs a byte): less of it

_CONDITION = re.compile(
    r'\s*([A-Za-z_@][\w.@-]{0,127})\s*(==|!=|>=|<=|=|>|<)\s*("(?:[^"\\]|\\.)*"|[^\s"]+)\s*'
)
# One way to read each number (`\d+\.?\d*` split a run of digits every way: 79 s of CPU on
# the event loop for a 64 KB "111...1x" value, as a line's field can be).
_NUMBER = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?", re.ASCII)
_INTEGER = re.compile(r"-?\d+", re.ASCII)
_MAX_DIGITS = 1000  # int() of more is refused (and slow); such a value is compared as a float
# logfmt: key=value, key="quoted value", a bare key (true)
_LOGFMT = re.compile(r'([^\s="]+)(?:=("(?:[^"\\]|\\.)*"|[^\s"]*))?')

Fields = dict[str, Any]


@dataclass(frozen=True)
class Condition:
    path: str
    op: str
    text: str  # the value as text
    number: float | None  # the value as a number, when written as a bare number
    integer: int | None = None  # ... exactly, when a bare integer (ids past 2**53 stay apart)

    def holds(self, fields: Fields) -> bool:
        found = _lookup(fields, self.path)
        if found is _MISSING:
            return False
        if self.integer is not None and (exact := _as_integer(found)) is not None:
            return _compare(self.op, exact, self.integer)
        if self.number is not None:
            n = _as_number(found)
            if n is not None:
                return _compare(self.op, n, self.number)
        if self.op in ("==", "="):
            return _text(found) == self.text
        if self.op == "!=":
            return _text(found) != self.text
        return False  # an order between words is not asked for: `level > warn` fails


def parse(where: str, what: str = "--where") -> tuple[Condition, ...]:
    """The conditions of `where`; ValueError, naming `what`, for anything else."""
    if len(where) > MAX_TEXT:
        raise ValueError(f"{what}: at most {MAX_TEXT} characters")
    out: list[Condition] = []
    at = 0
    while at < len(where):
        m = _CONDITION.match(where, at)
        if m is None or m.end() == at:
            rest = where[at:].strip()
            if not rest:
                break
            raise ValueError(
                f"{what}: cannot read {rest[:40]!r} (expected FIELD OP VALUE, OP one of "
                '== != >= <= > <, e.g. status>=500 user.id="42")'
            )
        path, op, value = m.groups()
        quoted = value.startswith('"')
        text = _unquote(value) if quoted else value
        number = float(text) if not quoted and _NUMBER.fullmatch(text) else None
        if op in (">", "<", ">=", "<=") and number is None:
            raise ValueError(f"{what}: {path}{op}{value}: {op} compares numbers")
        integer = int(text) if number is not None and _INTEGER.fullmatch(text) else None
        out.append(Condition(path, op, text, number, integer))
        at = m.end()
    if not out:
        raise ValueError(f"{what}: no condition given")
    if len(out) > MAX_CONDITIONS:
        raise ValueError(f"{what}: at most {MAX_CONDITIONS} conditions")
    return tuple(out)


def fields_of(line: str) -> Fields | None:
    """The fields of a JSON object line, or of a logfmt line; None for other lines."""
    if len(line) > MAX_PARSED:
        return None
    s = line.lstrip()
    if s.startswith("{"):
        try:
            value = json.loads(s)
        except (ValueError, RecursionError):
            return None
        return value if isinstance(value, dict) else None
    if "=" not in s or len(s) > MAX_LOGFMT:
        return None
    out: Fields = {}
    for m in _LOGFMT.finditer(s):
        key, value = m.group(1), m.group(2)
        if value is None:
            out[key] = True
        else:
            out[key] = _unquote(value) if value.startswith('"') else value
    return out or None


def checker(conditions: tuple[Condition, ...]) -> Callable[[str, Fields | None], bool]:
    """A check of a line (with its fields, if already read) against all `conditions`.

    A line that holds none of the keys' names as text is passed over without being parsed:
    most lines of a firehose are."""
    names = leaves(conditions)

    def test(line: str, fields: Fields | None) -> bool:
        if fields is None:
            if not may_hold(line, names):
                return False
            fields = fields_of(line)
            if fields is None:
                return False
        return all(c.holds(fields) for c in conditions)

    return test


def both(
    first: Callable[[str], bool] | None, fields_hold: Callable[[str, Fields | None], bool]
) -> Callable[[str], bool]:
    """A line test that is `first` (a --grep, if any) and the fields' conditions."""
    if first is None:
        return lambda line: fields_hold(line, None)
    return lambda line: first(line) and fields_hold(line, None)


def leaves(conditions: tuple[Condition, ...]) -> tuple[str, ...]:
    """The last part of each field's name: text a line must hold for them all to (or ESCAPE,
    see may_hold)."""
    return tuple(sorted({c.path.rsplit(".", 1)[-1] for c in conditions}))


# JSON may spell a key in escapes (Python's json.dumps writes "température" as
# "temp\u00e9rature"; a line can write "st\u0061tus" to pass a rule's first cut unseen): a line
# holding one is parsed whatever text it holds. A name holds no `\` or `"` (_CONDITION), so
# `\u` is the one escape that can stand for part of it.
ESCAPE = "\\u"


def may_hold(line: str, names: tuple[str, ...]) -> bool:
    """Whether a line may hold fields of these names: their text, or an escape."""
    return all(name in line for name in names) or ESCAPE in line


class _Missing:
    pass


_MISSING = _Missing()


def _lookup(fields: Fields, path: str) -> Any:
    if path in fields:
        return fields[path]
    node: Any = fields
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _as_number(value: Any) -> float | None:
    """A field's value as a number, if it is one; never an exception, whatever a line holds
    (an integer of 400 digits is infinite; text with a control character is no number)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        return value
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        try:
            return float(value)
        except (ValueError, OverflowError):
            return None
    return None


def _as_integer(value: Any) -> int | None:
    """A field's value as an exact integer, if it is one (a JSON integer, or its digits as a
    string); None for anything else, which is compared as a float."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and len(value) <= _MAX_DIGITS and _INTEGER.fullmatch(value):
        return int(value)
    return None


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if abs(value) < 2**53 else json.dumps(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _compare(op: str, a: float | int, b: float | int) -> bool:
    if op in ("==", "="):
        return a == b
    if op == "!=":
        return a != b
    if op == ">":
        return a > b
    if op == "<":
        return a < b
    if op == ">=":
        return a >= b
    return a <= b


def _unquote(value: str) -> str:
    inner = value[1:-1] if len(value) >= 2 and value.endswith('"') else value[1:]
    return re.sub(r"\\(.)", r"\1", inner)
