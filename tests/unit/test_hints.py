"""Hints from labels and config rules (pure): precedence, and what cannot be used."""

from __future__ import annotations

import random

import pytest

from agent.durations import format_duration, parse_duration
from agent.level_names import ERROR, FATAL, INFO, WARN, WORDS, level_of_word
from agent.policy import Matchers
from agent.shaping import levels as levels_module
from agent.shaping.hints import HintRule, hints_for
from agent.shaping.levels import levels
from agent.shaping.rate import Rate, RateLimit, parse_rate


def test_labels_are_read() -> None:
    h = hints_for(
        {
            "logagent.multiline": "java",
            "logagent.multiline.max_lines": "50",
            "logagent.multiline.timeout": "200ms",
            "logagent.format": "json",
            "logagent.exclude_lines": "healthz",
            "logagent.rate": "100/s",
            "logagent.retention": "3d",
        }
    )
    assert (h.multiline, h.max_lines, h.timeout_s, h.format) == ("java", 50, 0.2, "json")
    assert (h.exclude_lines, h.rate, h.retention_s) == ("healthz", Rate(100, 1), 3 * 86400)
    assert not h.problems and len(h.given) == 7


def test_bad_hints_keep_their_defaults_and_say_why_with_the_label() -> None:
    h = hints_for(
        {
            "logagent.multiline": "cobol",
            "logagent.multiline.start": "(unclosed",
            "logagent.rate": "fast",
            "logagent.multiline.max_lines": "-3",
            "logagent.retention": "3 days",
            "logagent.colour": "blue",
            "logagent.enable": "true",
        }
    )
    assert (h.multiline, h.multiline_start, h.rate, h.max_lines, h.retention_s) == (
        None, None, None, 500, None,
    )  # fmt: skip
    said = "\n".join(h.problems)
    for label in (
        "multiline",
        "multiline.start",
        "rate",
        "multiline.max_lines",
        "retention",
        "colour",
    ):
        assert f"label logagent.{label}" in said
    assert "enable" not in said and len(h.problems) == 6


def test_a_hostile_pattern_is_re2_and_cannot_hang() -> None:
    h = hints_for({"logagent.include_lines": "(a+)+$", "logagent.exclude_lines": r"(\w)\1"})
    assert h.include_lines == "(a+)+$"  # RE2: linear, whatever the line
    assert h.exclude_lines is None and "backreferences" in h.problems[0]


def test_rules_match_by_glob_in_order_and_the_label_wins() -> None:
    rules = (
        HintRule(Matchers(images=("legacy/*",)), {"multiline": "java", "rate": "10/s"}),
        HintRule(Matchers(names=("legacy-web",)), {"rate": "20/s"}),
    )
    h = hints_for({}, name="legacy-web", image="legacy/web:1", rules=rules)
    assert (h.multiline, h.rate) == ("java", Rate(20, 1))
    h = hints_for(
        {"logagent.multiline.start": "^S", "logagent.rate": "5/s"},
        name="legacy-web",
        image="legacy/web:1",
        rules=rules,
    )
    assert (h.multiline, h.multiline_start, h.rate) == (None, "^S", Rate(5, 1))
    assert not h.problems
    assert hints_for({}, name="other", image="x", rules=rules).rate is None


def test_config_default_rate_applies_unless_the_label_says() -> None:
    assert hints_for({}, default_rate=Rate(1000, 1)).rate == Rate(1000, 1)
    assert hints_for({"logagent.rate": "5/m"}, default_rate=Rate(1000, 1)).rate == Rate(5, 60)


def test_levels_from_json_logfmt_and_text() -> None:
    lines = [
        '{"ts": 1, "level": "warn", "msg": "x"}',
        '{"level": 50, "msg": "pino"}',
        "ts=1 level=error msg=x",
        "2024-05-01 12:00:00,123 ERROR x",
        "[WARN] x",
        "INFO: ok",
        "E0501 12:00:00.123456 glog",
        "CRITICAL disk",
        "plain text with error inside",
        "Informative",
    ]
    assert levels("auto", lines) == [
        WARN,
        ERROR,
        ERROR,
        ERROR,
        WARN,
        INFO,
        ERROR,
        FATAL,
        None,
        None,
    ]
    assert levels("json", lines[:3]) == [WARN, ERROR, None]
    assert levels("logfmt", lines[:3]) == [None, None, ERROR]
    assert levels("text", lines[2:4]) == [None, ERROR]


def test_rate_limit_counts_by_docker_time_and_spans_drops() -> None:
    limit = RateLimit(parse_rate("3/s"))
    second = 1_000_000_000
    stamps = [10 * second + i for i in range(10)] + [11 * second + i for i in range(10)]
    admitted = [limit.admit(t) for t in stamps]
    assert admitted == ([True] * 3 + [False] * 7) * 2
    span = limit.span()
    assert span is not None and (span.from_ns, span.to_ns, span.lines) == (
        10 * second + 3, 11 * second + 9, 14,
    )  # fmt: skip
    assert "14 lines" in span.reason and "3/s" in span.reason
    limit.admit(20 * second)
    assert not limit.admit(20 * second + 1) or True  # a quiet window in between:
    for _ in range(3):
        limit.admit(20 * second + 2)
    later = limit.span()
    assert later is not None and later.from_ns == 20 * second + 2  # a new span, a new gap


def test_rate_is_parsed_strictly() -> None:
    assert parse_rate("6000/m") == Rate(6000, 60)
    for bad in ("0/s", "10", "1.5/s", "10/d", "x/s"):
        try:
            parse_rate(bad)
        except ValueError:
            continue
        raise AssertionError(bad)


def test_level_words_are_not_taken_from_ordinary_text() -> None:
    lines = [
        "err 1",  # a word, not a level
        "warning: lower case is prose",
        "2024-05-01T12:00:00Z TRACE after an ISO stamp",
        "2024/05/01 12:00:00 [error] 1#1: nginx",
        "ts=1 loglevel=warn",
        "a mylevel=error",  # not the key `level`
        "x" * 99,
    ]
    assert levels("auto", lines) == [None, None, 1, ERROR, WARN, None, None]
    assert levels("auto", ["x" * 99, "plain"]) == []  # none: no list at all


def test_a_retention_label_out_of_range_is_refused_not_a_crash() -> None:
    # 400 nines parsed to infinity (int() of it crashed the agent at every start); 200000d
    # overflowed the cut-off's nanoseconds; 0.5s became 0, "keep forever".
    for text in ("9" * 400 + "d", "200000d", "1000000000000000d", "0.5s"):
        h = hints_for({"logagent.retention": text})
        assert h.retention_s is None, text  # the config's retention applies
        assert "label logagent.retention" in h.problems[0]
    assert hints_for({"logagent.retention": "36500d"}).retention_s == 36500 * 86400
    assert hints_for({"logagent.retention": "0"}).retention_s == 0.0


def test_a_retention_label_keeps_no_longer_than_the_config_lets_it() -> None:
    """A label is set by whoever runs the container: `for ever` or 36500d would keep its rows
    past what the host's disk was sized for. It may shorten; it lengthens only up to
    retention.label_max_age. The operator's own [[hints.rules]] are not capped."""
    week = 7 * 86400.0
    for text, kept in (("0", week), ("36500d", week), ("8d", week), ("7d", week), ("1h", 3600)):
        h = hints_for({"logagent.retention": text}, label_retention_max_s=week)
        assert h.retention_s == kept, text
        assert bool(h.problems) == (kept != parse_duration(text) if text != "0" else True), text
    h = hints_for({"logagent.retention": "0"}, label_retention_max_s=week)
    assert h.problems == (
        "label logagent.retention=0: longer than retention.label_max_age lets a label keep "
        "rows; 7d is kept",
    )
    assert hints_for({"logagent.retention": "0"}).retention_s == 0.0  # no cap: for ever
    rule = HintRule(Matchers(names=("db",)), {"retention": "0"})
    assert hints_for({}, name="db", rules=(rule,), label_retention_max_s=week).retention_s == 0.0
    # A label may always ask what the operator's rule already gives its container.
    for given, text, kept in (
        ("0", "0", 0.0),
        ("90d", "30d", 30 * 86400),
        ("90d", "0", 90 * 86400),
    ):
        rule = HintRule(Matchers(names=("db",)), {"retention": given})
        h = hints_for(
            {"logagent.retention": text}, name="db", rules=(rule,), label_retention_max_s=week
        )
        assert h.retention_s == kept, (given, text)
        if given == "90d" and text == "0":
            assert "label_max_age or retention=90d (hints.rules) lets" in h.problems[0]
            assert "90d is kept" in h.problems[0]
    assert format_duration(week) == "7d" and format_duration(90) == "90s"
    assert format_duration(36 * 3600) == "36h" and format_duration(0.25) == "250ms"


def test_a_label_pattern_too_costly_to_match_is_refused_with_why() -> None:
    # `.{999}` defeats RE2's fast paths: ~24 ms a 1 KB line, in the loop every container shares.
    h = hints_for({"logagent.exclude_lines": r"\PN.{999}x"})
    assert h.exclude_lines is None
    assert (
        "too costly to match" in h.problems[0] and "label logagent.exclude_lines" in h.problems[0]
    )
    ok = hints_for({"logagent.multiline.start": r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}"})
    assert ok.multiline_start is not None and not ok.problems


def test_levels_skip_the_text_pattern_only_where_it_cannot_match(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first-character check changes no result: batches drawn from starts that can and
    cannot begin a level (digits of other scripts, brackets, capitals, JSON, plain text)
    give what running the pattern on every line gives."""
    starts = ["x", "{", "E", "ERROR", "[warn]", "٣ ERROR", "2024-05-01 12:00:00 INFO", "W0501 "]
    rng = random.Random(7)
    batches = [
        [rng.choice(starts) + rng.choice([" a", " b=1", "", ' "level":"warn"']) for _ in range(5)]
        for _ in range(300)
    ]
    fast = [levels(fmt, b) for b in batches for fmt in ("auto", "text")]
    monkeypatch.setattr(levels_module, "_may_have_text_level", lambda messages: True)
    assert fast == [levels(fmt, b) for b in batches for fmt in ("auto", "text")]
    assert levels("auto", ["٣ ERROR x"]) == [ERROR]  # \d takes other scripts' digits


def test_a_level_of_thousands_of_digits_is_none_not_a_dead_collector() -> None:
    """`{"level": <5,000 digits>}` made int() raise in the shaper: the container's collector
    failed for good, at every restart again (a line any application can be made to log)."""
    assert levels("auto", ['{"level":' + "9" * 5000 + "}", '{"level":40}']) == [None, WARN]
    assert levels("logfmt", ["level=" + "4" * 5000]) == []


def _one_line(fmt: str, line: str) -> int | None:
    """A line's level as the rules say it, a line at a time: the text's first, then a JSON
    line's key, then the first logfmt key that stands as a key."""
    if fmt in ("auto", "text") and (m := levels_module._TEXT.match(line)):
        if m.group(3):  # glog's letter
            return {"I": INFO, "W": WARN, "E": ERROR, "F": FATAL}[m.group(3)]
        return WORDS.get((m.group(1) or m.group(2)).lower())
    if fmt in ("auto", "json") and line.startswith("{") and (m := levels_module._JSON.search(line)):
        return level_of_word(m[1])
    if fmt in ("auto", "logfmt") and (m := levels_module._LOGFMT.search(line)):
        at = m.start()
        if not at or line[at - 1].isspace() or line[:at].endswith(("log", "log_", "log.")):
            return level_of_word(m[1])
    return None


def test_levels_of_a_batch_are_each_line_s_own() -> None:
    """Found for a whole batch at once (the searches over every line in C): each line's
    level is what it alone gives, whatever the other lines of its batch hold."""
    parts = ["{", '"level"', '"lvl"', '"@l"', ":", " : ", '"', "info", "WARN", "30", "99",
             "9" * 12, "level=", "lvl=", "severity=", "log_level=", "log.level=", "xlevel=",
             " ", "\t", '"warn"', "=", "msg=hi", "[ERROR]", "ERROR ", "2024-01-01 ", "Ünï",
             "²", 'level="', "D", "e", "I0501 12:00:00 ", "W1231 23:59:59", "F0101 00:00:00",
             "E0101 00:00:00", "[notice]", "Warning", "(crit)", "<Debug>"]  # fmt: skip
    rng = random.Random(11)
    for _ in range(3000):
        batch = ["".join(rng.choice(parts) for _ in range(rng.randint(0, 8)))
                 for _ in range(rng.randint(1, 12))]  # fmt: skip
        for fmt in ("auto", "json", "logfmt", "text"):
            each = [_one_line(fmt, line) for line in batch]
            assert levels(fmt, batch) == (each if any(v is not None for v in each) else [])
