"""The viewer's pure JavaScript (agent/web/static/app.js), run by node: its one escaping
function against Unicode's categories and the CLI's escaping, and its logfmt reader and colour
codes against lines made to backtrack. The page itself is tested in test_web_browser.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import unicodedata
from typing import Any

import pytest

from agent.render import terminal_safe
from tests.conftest import ROOT

APP = ROOT / "agent" / "web" / "static" / "app.js"
NODE = shutil.which("node")


def run_js(body: str, given: Any = None) -> Any:
    """`body` run by node with app.js's pure functions as `app` and `given` as `input`;
    it prints its answer as JSON. A pattern that backtracks exponentially never answers:
    the timeout is a failure, far beyond what a linear reading of these lines takes."""
    if NODE is None:
        if os.environ.get("CI"):
            raise AssertionError("no node: apt-get install nodejs")
        pytest.skip("no node (apt-get install nodejs)")
    script = (
        f"const app = require({json.dumps(str(APP))});\n"
        "const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));\n"
        f"{body}\n"
    )
    done = subprocess.run(
        [NODE, "-e", script],
        input=json.dumps(given),
        capture_output=True,
        encoding="utf-8",
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _hidden(code: int) -> bool:
    """What the CLI's edge escapes too (agent/render.py): controls, format, separators."""
    return unicodedata.category(chr(code)) in ("Cc", "Cf", "Zl", "Zp") and code not in (9, 10)


def test_every_control_format_and_separator_character_is_escaped() -> None:
    escaped = set(
        run_js(
            "const out = [];\n"
            "for (let c = 0; c <= 0x10ffff; c++) {\n"
            "  if (c >= 0xd800 && c <= 0xdfff) continue;\n"
            "  if (app.pieces(String.fromCodePoint(c)).some((p) => p[0])) out.push(c);\n"
            "}\n"
            "console.log(JSON.stringify(out));"
        )
    )
    expected = {c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF and _hidden(c)}
    assert sorted(expected - escaped) == []
    # node's Unicode may be newer than Python's: a character more is one Python's does not know
    newer = [hex(c) for c in escaped - expected if unicodedata.category(chr(c)) != "Cn"]
    assert newer == []
    for c in escaped & expected:  # and the CLI shows each of them escaped as well
        assert terminal_safe(chr(c)) != chr(c), hex(c)


def test_invisible_characters_become_visible_escapes_and_the_text_stays() -> None:
    given = [
        "zw\u200bsp\u200cnj\u200djn\u2060wj\ufeffbom\u00adshy\u2028ls\u2029ps\u061calm",
        "tab\tand\nnewline stay",
        "tag\U000e0041 \u202eevil\u202c \x1b[2J",
    ]
    got = run_js(
        "console.log(JSON.stringify(input.map((t) => [app.visibleText(t), app.pieces(t)])));",
        given,
    )
    assert got[0][0] == (
        "zw<U+200B>sp<U+200C>nj<U+200D>jn<U+2060>wj<U+FEFF>bom\\xadshy<U+2028>ls<U+2029>"
        "ps<U+061C>alm"
    )
    assert [text for escape, text in got[0][1] if not escape] == [
        "zw", "sp", "nj", "jn", "wj", "bom", "shy", "ls", "ps", "alm"
    ]  # fmt: skip
    assert got[1][1] == [[False, "tab\tand\nnewline stay"]]
    assert got[2][0] == "tag<U+E0041> <U+202E>evil<U+202C> \\x1b[2J"


# Lines made for a backtracking logfmt pattern: the first, 59 characters, held the tab for
# over 6 s (each 3 characters more: 8 times longer); the others up to the 20,000 characters
# a line is shown with.
BAIT = [
    "a=b" * 19 + " !",
    "a=b" * 6666 + " !",
    "x=" * 10_000 + " !",
    "a= " * 6666 + "!",
    'a="' + '\\"' * 9_998,
    'a="b" ' * 3_333 + 'c="',
    "k=v " * 4_999 + "=",
    "a" * 19_999 + "=",
    "a=" + "b" * 19_990 + '"c',
]


def test_logfmt_is_read_in_one_pass_from_lines_made_to_backtrack() -> None:
    got = run_js("console.log(JSON.stringify(input.map((t) => app.structured(t))));", BAIT)
    assert got == [None] * len(BAIT)  # none is logfmt; each is answered at once


def test_logfmt_lines_unfold_into_their_pairs() -> None:
    given = [
        'level=info msg="hello world" n=5',
        'a="x\\" y" b=2',
        "a= b=",
        "  spaced=1\tout=2  ",
        "only=one",
        "a=1 b",
        'a="x"b=1',
        'a="never closed b=2',
        "a=1 b=2\nc=3",
        '{"msg": "<b>", "n": [1, 2]}',
        "{not json}",
    ]
    got = run_js("console.log(JSON.stringify(input.map((t) => app.structured(t))));", given)
    assert got == [
        'level: info\nmsg: "hello world"\nn: 5',
        'a: "x\\" y"\nb: 2',
        "a: \nb: ",
        "spaced: 1\nout: 2",
        None,
        None,
        None,
        None,
        None,
        '{\n  "msg": "<b>",\n  "n": [\n    1,\n    2\n  ]\n}',
        None,
    ]


def test_a_colour_code_repeated_ten_thousand_times_keeps_one_class() -> None:
    got = run_js(
        "console.log(JSON.stringify([app.sgr(input, []), app.sgr('31;32;1;44', ['a-bold']),"
        " app.sgr('0', ['a31']), app.sgr('', ['a31']), app.sgr('39;49', ['a31', 'b41'])]));",
        ";".join(["1;31;4"] * 10_000),
    )
    assert got == [
        ["a-bold", "a-underline", "a31"],
        ["a-bold", "a32", "b44"],
        [],
        [],
        [],
    ]


def test_times_show_in_utc_or_the_browsers_zone_and_how_long_ago(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ns = "1764000000123456789"  # 2025-11-24T16:00:00.123456789Z
    rfc = "2025-11-24T16:00:00.123456789Z"
    body = (
        "console.log(JSON.stringify([app.clock(input.ns, input.rfc, true),"
        " app.clock(input.ns, '', true), app.clock(input.ns, input.rfc, false),"
        " app.clock('-1500000', '', true),"
        " [0, 4000, 42000, 180000, 5 * 3600000, 2 * 86400000, 86400000, -120000].map(app.ago)]))"
    )
    monkeypatch.setenv("TZ", "Asia/Kolkata")  # +05:30, no summer time
    utc, derived, local, before_1970, ago = run_js(body, {"ns": ns, "rfc": rfc})
    assert utc == derived == "2025-11-24 16:00:00.123"
    assert local == "2025-11-24 21:30:00.123"
    assert before_1970 == "1969-12-31 23:59:59.998"  # 1.5 ms before the epoch, floored
    assert ago == ["just now", "just now", "42 s ago", "3 min ago", "5 h ago", "2 days ago",
                   "1 day ago", "in 2 min"]  # fmt: skip


def test_a_histogram_drag_is_a_range_of_whole_minutes_and_zoom_out_doubles_it() -> None:
    """The histogram's pure arithmetic: a drag's since/until on whole minutes (the counts'
    grain, so the bars count the lines shown), either direction; zoom out twice as long
    around the middle, left open when it reaches now."""
    got = run_js(
        "const day = Date.UTC(2025, 0, 1), h = 3600000;\n"
        "console.log(JSON.stringify({\n"
        "  quarter: app.dragRange(day, day + 24 * h, 0.25, 0.5),\n"
        "  backwards: app.dragRange(day, day + 24 * h, 0.5, 0.25),\n"
        "  odd: app.dragRange(day, day + 10 * 60000, 0.31, 0.32),\n"
        "  point: app.dragRange(day, day + 24 * h, 0.5, 0.5),\n"
        "  wider: app.widened(day + 6 * h, day + 12 * h, day + 48 * h, false),\n"
        "  reaching: app.widened(day + 6 * h, day + 12 * h, day + 13 * h, false),\n"
        "  open: app.widened(day + 22 * h, day + 24 * h, day + 24 * h, true),\n"
        "  texts: [60000, 600000, 3600000, 3 * 3600000, 86400000, 7 * 86400000]"
        ".map(app.bucketText),\n"
        "}));"
    )
    assert got["quarter"] == ["2025-01-01T06:00:00Z", "2025-01-01T12:00:00Z"]
    assert got["backwards"] == got["quarter"]
    assert got["odd"] == ["2025-01-01T00:03:00Z", "2025-01-01T00:04:00Z"]  # out to minutes
    assert got["point"] == ["2025-01-01T12:00:00Z", "2025-01-01T12:01:00Z"]  # a minute at least
    assert got["wider"] == ["2025-01-01T03:00:00Z", "2025-01-01T15:00:00Z"]
    assert got["reaching"] == ["2025-01-01T00:00:00Z", ""]  # to now: open, twice as long
    assert got["open"] == ["2025-01-01T20:00:00Z", ""]
    assert got["texts"] == ["1 min", "10 min", "1 h", "3 h", "1 day", "7 days"]
