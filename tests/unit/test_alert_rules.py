"""agent/alerts/rules.py and engine.py: pure."""

from __future__ import annotations

import pytest

from agent.alerts.engine import Engine
from agent.alerts.rules import AlertConfigError, parse_alerts
from agent.alerts.selection import DESTINATIONS_LABEL
from agent.storage.described import StoredContainer
from agent.storage.follow import Scanned
from agent.storage.life import LifeView
from agent.storage.reader import StoredRow

S = 10**9
HOOK = {"name": "hook", "url": "https://hooks.example/x?token=s3cret"}


def rules(**rule: object) -> object:
    return parse_alerts(
        {"destinations": [HOOK], "rules": [{"name": "r", "match": "ERROR", **rule,
                                            "destinations": ["hook"]}]}
    )  # fmt: skip


def row(i: int, ts_s: float, msg: str, name: str = "web", cid: str = "c" * 64) -> StoredRow:
    return StoredRow(i, "h", cid, name, "stdout", int(ts_s * S), "", msg, 0)


def engine(**rule: object) -> Engine:
    settings = rules(**rule)
    return Engine(settings.rules, "h")  # type: ignore[attr-defined]


def test_a_match_fires_once_per_cooldown_and_counts_what_it_held() -> None:
    e = engine(cooldown="10s")
    first = e.feed([row(1, 0, "ERROR a"), row(2, 1, "fine"), row(3, 2, "ERROR b")])
    assert [(a.line, a.count, a.more) for a in first] == [("ERROR a", 1, 0)]
    assert e.feed([row(4, 5, "ERROR c")]) == []
    later = e.feed([row(5, 11, "ERROR d")])
    assert [(a.line, a.more) for a in later] == [("ERROR d", 2)]  # b and c, held


def test_a_threshold_counts_within_its_window_per_container() -> None:
    e = engine(threshold=3, window="10s")
    assert e.feed([row(1, 0, "ERROR"), row(2, 1, "ERROR"), row(3, 20, "ERROR")]) == []
    other = "d" * 64
    fired = e.feed([row(4, 21, "ERROR"), row(5, 22, "ERROR", cid=other), row(6, 25, "ERROR")])
    assert [(a.count, a.container_id) for a in fired] == [(3, "c" * 64)]


def test_the_same_rows_give_the_same_alert_ids_after_a_restore() -> None:
    """A step repeated after a crash before its commit: the same alerts, the same ids."""
    e = engine(threshold=2)
    e.feed([row(1, 0, "ERROR")])
    saved = e.state()
    a = e.feed([row(2, 1, "ERROR")])
    e.restore(saved)
    b = e.feed([row(2, 1, "ERROR")])
    assert a == b and len(a) == 1
    e.restore("not json")  # a state it cannot read starts afresh
    assert e.feed([row(3, 2, "ERROR")]) == []


def test_names_pick_the_containers_and_quiet_tracks_are_forgotten() -> None:
    e = engine(names=["api-*"], cooldown="1s", window="1s")
    assert e.feed([row(1, 0, "ERROR", name="web")]) == []
    assert len(e.feed([row(2, 0, "ERROR", name="api-1")])) == 1
    e.feed([row(3, 100, "fine", name="api-1")])
    assert e.state() == '{"tracks":{},"events_after":0}'


@pytest.mark.parametrize(
    ("section", "said"),
    [
        ({"rules": [{"name": "r", "match": "(a", "destinations": ["hook"]}]}, "rules[r].match"),
        ({"rules": [{"name": "r", "match": "x", "destinations": ["nope"]}]}, "no destination"),
        ({"rules": [{"name": "r", "match": "x", "destinations": ["hook"], "treshold": 2}]},
         "rules[r].treshold: unknown key"),
        ({"rules": [{"name": "r", "match": "x", "destinations": ["hook"], "window": "soon"}]},
         "rules[r].window"),
        ({"rules": [{"name": "r", "match": "x", "destinations": ["hook"], "threshold": 0}]},
         "rules[r].threshold"),
        ({"destinations": [{"name": "d", "url": "file:///etc/passwd"}]}, "not an http"),
        ({"destinations": [{"name": "d", "url_env": "NOT_SET_HERE"}]}, "has no NOT_SET_HERE"),
        ({"destinations": [{"name": "bad name!", "url": "https://x"}]}, "destinations[1].name"),
    ],
)  # fmt: skip
def test_a_bad_rule_or_destination_is_one_line_naming_it(section: dict, said: str) -> None:  # type: ignore[type-arg]
    section = {"destinations": [HOOK, *section.get("destinations", [])], **{
        k: v for k, v in section.items() if k != "destinations"}}  # fmt: skip
    with pytest.raises(AlertConfigError, match=said.replace("[", r"\[").replace("]", r"\]")):
        parse_alerts(section, environ={})


def test_a_secret_url_comes_from_the_environment_or_a_file_and_is_never_shown(
    tmp_path: object,
) -> None:
    got = parse_alerts(
        {"destinations": [{"name": "d", "url_env": "HOOK_URL"}]},
        environ={"HOOK_URL": "https://hooks.example/T0/secret"},
    )
    assert got.destinations[0].url == "https://hooks.example/T0/secret"
    assert "secret" not in repr(got)
    with pytest.raises(AlertConfigError) as raised:
        parse_alerts({"destinations": [{"name": "d", "url": "ftp://user:secret@x"}]})
    assert "secret" not in str(raised.value)


def life(i: int, ts_s: float, action: str, code: int | None = None, detail: str | None = None,
         name: str = "web") -> LifeView:  # fmt: skip
    return LifeView(i, "h", "c" * 64, name, "", int(ts_s * S), action, code, detail)


def event_engine(event: str, **rule: object) -> Engine:
    settings = parse_alerts(
        {"destinations": [HOOK], "rules": [{"name": "ev", "event": event, **rule,
                                            "destinations": ["hook"]}]}
    )  # fmt: skip
    return Engine(settings.rules, "h")


def test_a_die_rule_fires_on_a_non_zero_exit_and_is_deaf_to_lines() -> None:
    e = event_engine("die")
    assert e.feed([row(1, 0, "die")]) == []
    fired = e.feed_events([life(1, 0, "die", 0), life(2, 1, "start"), life(3, 2, "die", 3)])
    assert [(a.line, a.kind, a.ref) for a in fired] == [("die (exit code 3)", "event", 3)]
    assert e.events_after == 3


def test_a_restart_loop_is_starts_over_a_threshold_and_unhealthy_is_a_health_status() -> None:
    loop = event_engine("start", threshold=3, window="1m")
    starts = [life(i, i, "start") for i in range(1, 5)]
    assert [a.count for a in loop.feed_events(starts)] == [3]
    sick = event_engine("unhealthy")
    fired = sick.feed_events([life(1, 0, "health_status", detail="healthy"),
                              life(2, 1, "health_status", detail="unhealthy")])  # fmt: skip
    assert [a.line for a in fired] == ["health_status (unhealthy)"]


def test_an_event_rules_position_is_in_its_state() -> None:
    e = event_engine("oom")
    e.feed_events([life(7, 0, "oom")])
    again = event_engine("oom")
    again.restore(e.state())
    assert again.events_after == 7


@pytest.mark.parametrize(
    ("rule", "said"),
    [
        ({"event": "explode"}, "rules[r].event: one of"),
        ({"event": "die", "match": "x"}, "exactly one of match"),
        ({}, "exactly one of match"),
    ],
)
def test_an_event_rule_says_what_is_wrong(rule: dict, said: str) -> None:  # type: ignore[type-arg]
    section = {"destinations": [HOOK], "rules": [{"name": "r", "destinations": ["hook"], **rule}]}
    with pytest.raises(AlertConfigError, match=said.replace("[", r"\[").replace("]", r"\]")):
        parse_alerts(section)


def test_a_container_read_hours_behind_keeps_its_cooldown_across_pages() -> None:
    """Catch-up: B's old lines come between A's live ones; B's cooldown is judged by B's
    own time, not by the newest line of the page (the review found B firing every page)."""
    e = engine(cooldown="10m")
    b, hour = "b" * 64, 3600
    first = e.feed([row(1, 0, "ERROR", name="b", cid=b), row(2, 5 * hour, "fine")])
    again = e.feed([row(3, 60, "ERROR", name="b", cid=b), row(4, 5 * hour + 1, "fine")])
    assert len(first) == 1 and again == []  # 60 s after the first: within its cooldown


def test_hosts_that_spell_alike_have_their_own_rules_position() -> None:
    from agent.alerts.runner import consumer_name

    assert consumer_name("Web_1") != consumer_name("web-1")
    assert consumer_name("h" * 200) != consumer_name("h" * 199 + "x")
    assert all(len(consumer_name(h)) <= 64 for h in ("a", "h" * 300))


def test_a_line_rule_tests_level_stream_and_fields_together() -> None:
    settings = parse_alerts(
        {"destinations": [HOOK], "rules": [{"name": "r", "level": "error", "stream": "stderr",
                                            "where": "status>=500", "destinations": ["hook"]}]}
    )  # fmt: skip
    e = Engine(settings.rules, "h")
    rows = [
        StoredRow(1, "h", "c" * 64, "web", "stderr", S, "", '{"status":503}', 0, 5),
        StoredRow(2, "h", "d" * 64, "web", "stdout", S, "", '{"status":503}', 0, 5),
        StoredRow(3, "h", "e" * 64, "web", "stderr", S, "", '{"status":503}', 0, 4),
        StoredRow(4, "h", "f" * 64, "web", "stderr", S, "", '{"status":200}', 0, 6),
    ]
    assert [a.ref for a in e.feed(rows)] == [1]
    assert settings.rules[0].describe() == "level >= error, stream stderr, where status>=500"


@pytest.mark.parametrize(
    ("rule", "said"),
    [
        ({"level": "loud"}, "rules[r].level: one of trace"),
        ({"stream": "stdin"}, "rules[r].stream"),
        ({"stream": []}, "rules[r].stream: an empty list"),  # read as "any" before: a storm
        ({"where": "status >= high"}, "rules[r].where"),
        ({"match": "x", "context": 99}, "rules[r].context"),
        ({"event": "die", "context": 2}, "only a line rule"),
        ({"match": "x", "max_age": "0s"}, "rules[r].max_age"),
    ],
)
def test_a_line_rules_conditions_say_what_is_wrong(rule: dict, said: str) -> None:  # type: ignore[type-arg]
    section = {"destinations": [HOOK], "rules": [{"name": "r", "destinations": ["hook"], **rule}]}
    with pytest.raises(AlertConfigError, match=said.replace("[", r"\[").replace("]", r"\]")):
        parse_alerts(section)


def test_matches_older_than_max_age_are_one_summary_when_caught_up() -> None:
    e = engine(max_age="1h", cooldown="1s")
    now = 10 * 3600 * S
    old = [row(i, 3600 + i, f"ERROR {i}") for i in range(1, 6)]
    assert e.feed(old[:3], now) == [] and e.feed(old[3:], now) == []  # two pages, no storm
    saved = e.state()
    again = engine(max_age="1h", cooldown="1s")
    again.restore(saved)  # a restart in the middle of the catch-up keeps the count
    (summary,) = again.summaries()
    assert (summary.kind, summary.count, summary.ref) == ("summary", 5, 1)
    assert (summary.first_ns, summary.time_ns) == (3601 * S, 3605 * S)
    assert summary.line.startswith("5 matches from ")
    assert again.summaries() == []  # made once
    fresh = again.feed([row(9, 10 * 3600 - 1, "ERROR now")], now)
    assert [a.kind for a in fresh] == ["line"]


def test_a_state_written_before_max_age_is_read() -> None:
    e = engine()
    e.restore('{"tracks":{"r\\u0000' + "c" * 64 + '":[[5],7,2]},"events_after":3}')
    assert e.events_after == 3
    assert '"tracks":{"r\\u0000' in e.state() and "[[5],7,2,0,0,0,0," in e.state()


def test_rules_with_patterns_and_without_each_fire_on_a_line_they_all_match() -> None:
    """The patterns are matched as one RE2 set; a rule without one is tested apart."""
    settings = parse_alerts(
        {"destinations": [HOOK], "rules": [
            {"name": "a", "match": "ERR", "destinations": ["hook"]},
            {"name": "b", "match": "(?i)timeout", "destinations": ["hook"]},
            {"name": "c", "match": "never", "destinations": ["hook"]},
            {"name": "d", "level": "error", "destinations": ["hook"]},
        ]}
    )  # fmt: skip
    e = Engine(settings.rules, "h")
    both = StoredRow(1, "h", "c" * 64, "web", "stdout", S, "", "ERR: TimeOut", 0, 5)
    assert sorted(a.rule for a in e.feed([both])) == ["a", "b", "d"]
    assert e.feed([row(2, 2, "all is well")]) == []


def test_a_first_look_picks_the_rows_a_rule_may_want_from_bytes_or_text() -> None:
    """What the rules read whole: a pattern's hits, a level at or above a rule's, a line
    that names a rule's fields; never one no rule can want."""
    settings = parse_alerts(
        {"destinations": [HOOK], "rules": [
            {"name": "p", "match": "(?i)panic", "destinations": ["hook"]},
            {"name": "l", "level": "error", "stream": "stderr", "destinations": ["hook"]},
            {"name": "w", "where": "status>=500", "destinations": ["hook"]},
        ]}
    )  # fmt: skip
    e = Engine(settings.rules, "h")
    rows = [
        (1, None, b"kernel PANIC"),
        (2, 5, b"boom"),
        (3, 4, b"just a warning"),
        (4, None, b'{"status": 503}'),
        (5, None, "plain \u00e9t\u00e9".encode()),
        (6, None, '{"status": 200}'),  # PostgreSQL's: text
    ]
    ids, levels, messages = zip(*rows, strict=True)
    scanned = Scanned(ids, levels, messages)
    assert e.candidates(scanned) == [1, 2, 4, 6]
    only_patterns = Engine(parse_alerts({"destinations": [HOOK], "rules": [
        {"name": "p", "match": "ERROR", "destinations": ["hook"]}]}).rules, "h")  # fmt: skip
    assert only_patterns.candidates(scanned) == []


def test_no_cooldown_sends_every_match_even_at_the_same_nanosecond() -> None:
    e = engine(cooldown="0s")
    fired = e.feed([row(1, 0, "ERROR a"), row(2, 0, "ERROR b"), row(3, 1, "ERROR c")])
    assert [(a.line, a.more) for a in fired] == [("ERROR a", 0), ("ERROR b", 0), ("ERROR c", 0)]


def test_a_cooldown_of_0_is_every_match_as_its_comment_says() -> None:
    rule = {"name": "r", "match": "x", "cooldown": "0", "destinations": ["hook"]}
    assert parse_alerts({"destinations": [HOOK], "rules": [rule]}).rules[0].cooldown_ns == 0


def test_a_host_of_short_lived_containers_keeps_the_state_small() -> None:
    """A thousand containers, each matching once and then gone (CI jobs): their tracks go
    once spent by a clock an hour behind the newest line or event, not a week later (the
    state is committed with every step). A line from a container read behind keeps its
    own cooldown meanwhile."""
    import json

    def tracks(e: Engine) -> int:
        return len(json.loads(e.state())["tracks"])

    lines = Engine(parse_alerts({  # and a rule reading a day back, which never matches
        "destinations": [HOOK],
        "rules": [{"name": "r", "match": "ERROR", "cooldown": "5m", "destinations": ["hook"]},
                  {"name": "slow", "match": "never", "max_age": "1d", "destinations": ["hook"]}],
    }).rules, "h")  # fmt: skip
    for i in range(1000):
        lines.feed([row(i, i, "ERROR job failed", name=f"job-{i}", cid=f"{i:064d}")])
    assert tracks(lines) > 900  # within the hour: each container's cooldown may still count
    lines.feed([row(2000, 1000 + 2 * 3600, "ERROR late", name="job-x", cid="x" * 64)])
    assert tracks(lines) == 1
    events = event_engine("die", cooldown="5m")
    died = [LifeView(i, "h", f"{i:064d}", f"job-{i}", "", i * S, "die", 1, None)
            for i in range(1, 1001)]  # fmt: skip
    events.feed_events(died)
    assert tracks(events) > 900
    events.feed_events([LifeView(2000, "h", "x" * 64, "job-x", "", 3 * 3600 * S, "die", 1, None)])
    assert tracks(events) == 1


def test_a_container_caught_up_hours_behind_keeps_its_count_within_max_age() -> None:
    """A rule that reads matches up to a day old (max_age 1d): container a's backlog, three
    hours behind b's live lines, reaches the threshold across steps; its track is not
    dropped in between for being behind the newest line (a review's case)."""
    (rule,) = parse_alerts({
        "destinations": [HOOK],
        "rules": [{"name": "r", "match": "boom", "threshold": 3, "window": "10m",
                   "max_age": "1d", "destinations": ["hook"]}],
    }).rules  # fmt: skip
    e = Engine((rule,), "h")
    a, b, t0 = "a" * 64, "b" * 64, 1_700_000_000
    now = (t0 + 3 * 3600) * S
    fired = e.feed([row(1, t0, "boom", cid=a), row(2, t0 + 60, "boom", cid=a)], now)
    fired += e.feed([row(3, t0 + 3 * 3600, "boom", cid=b)], now)
    fired += e.feed([row(4, t0 + 120, "boom", cid=a)], now)
    assert [(x.container_id, x.count) for x in fired] == [(a, 3)]


def test_a_clock_stepped_back_does_not_silence_a_rule() -> None:
    """The host's clock ran a day ahead (Docker stamps lines with it), a match fired, then
    NTP mended it: the cooldown ends a day ahead, and held every match back until then (a
    review's finding). A match a minute or more before the last firing is a clock stepped
    back: its cooldown and hits start again."""
    e = engine(cooldown="5m")
    day = 86400
    assert len(e.feed([row(1, day, "ERROR ahead")], day * S)) == 1
    fired = [e.feed([row(2 + m, 600 * m, "ERROR")], 600 * m * S) for m in range(1, 7)]
    assert [len(f) for f in fired] == [1] * 6  # one per 10 min, past each 5 min cooldown
    thresholded = engine(threshold=2, window="1h")
    assert thresholded.feed([row(1, day, "ERROR ahead")], day * S) == []
    assert thresholded.feed([row(2, 60, "ERROR")], 60 * S) == []  # not counted with the hit
    assert len(thresholded.feed([row(3, 70, "ERROR")], 70 * S)) == 1  # ... a day ahead


def test_a_line_stamped_ahead_does_not_end_another_container_s_cooldown() -> None:
    """One line stamped two hours ahead (a clock jumped there for a moment) made the newest
    time seen two hours ahead: every other container's track was judged spent by it, and
    fired again within its cooldown. The newest time is never past the clock by more than
    a step."""
    e = engine(cooldown="1h")
    assert len(e.feed([row(1, 0, "ERROR a")], 0)) == 1
    assert e.feed([row(2, 7200, "fine", "other", "d" * 64)], 60 * S) == []
    assert e.feed([row(3, 120, "ERROR a again")], 120 * S) == []  # held back: its cooldown


def test_a_summary_counts_only_what_would_have_fired_and_goes_where_the_label_picks() -> None:
    """Matches older than max_age go through the rule's window and threshold (no cooldown):
    two of a threshold of three are no summary; three within the window are one. It goes
    to the destinations the alert would have (the container's label may add some)."""
    settings = parse_alerts({
        "destinations": [HOOK, {"name": "team", "url": "https://team.example/x"}],
        "rules": [{"name": "r", "match": "ERROR", "threshold": 3, "window": "10s",
                   "max_age": "1h", "destinations": ["hook"], "label_destinations": ["team"]}],
    })  # fmt: skip
    e = Engine(settings.rules, "h")
    t0 = 1_765_000_000  # today's times: a week's forgetting must not drop what is counted
    now = (t0 + 10 * 3600) * S
    labelled = {"c" * 64: StoredContainer("c" * 64, "web", labels={DESTINATIONS_LABEL: "team"})}
    e.feed([row(1, t0 + 100, "ERROR"), row(2, t0 + 200, "ERROR")], now, labelled)  # 100 s apart
    assert e.summaries() == []
    for i in range(3, 6):  # a page a line, as a catch-up may read them
        e.feed([row(i, t0 + 300 + i, "ERROR")], now, labelled)
    (summary,) = e.summaries()
    assert (summary.count, summary.ref, summary.destinations) == (3, 5, ("hook", "team"))
    assert summary.first_ns == (t0 + 303) * S


def test_a_row_id_handed_out_again_is_another_alert() -> None:
    """A store that lost commits (a restored backup, a standby promoted behind) hands their
    row ids out again, to other lines: an alert's id must differ for them, or a receiver that
    drops repeats by it drops a real alert (a review's finding). The same row read again
    keeps its id."""
    before = engine().feed([row(7, 100, "ERROR lost with the commit")])
    after = engine().feed([row(7, 200, "ERROR a new line, the same row id")])
    again = engine().feed([row(7, 100, "ERROR lost with the commit")])
    assert before[0].id != after[0].id and before[0].id == again[0].id


def test_old_matches_of_one_container_among_others_present_ones_make_their_summary() -> None:
    """A catch-up reads a container's old lines a page at a time, among other containers'
    present ones: its old matches below the threshold were dropped between its pages, by a
    clock the others' lines had moved to the present (a review's finding)."""
    e = engine(threshold=3, window="10m", max_age="1h")
    t0 = 1_765_000_000
    now = (t0 + 20 * 3600) * S
    other = "d" * 64
    for i in range(3):  # b's three errors in separate steps, a's present lines between
        e.feed([row(10 + i, t0 + 60 * i, "ERROR b", "b")], now)
        e.feed([row(20 + i, t0 + 20 * 3600 - 5 + i, "ERROR a", "a", other)], now)
    (summary,) = [s for s in e.summaries() if s.container_name == "b"]
    assert (summary.kind, summary.count) == ("summary", 3)


def test_old_matches_below_their_threshold_go_once_the_rules_have_caught_up() -> None:
    """Kept between the pages of a catch-up, old matches that never reached their threshold
    stayed a week on a host of short-lived jobs: thousands of tracks committed with every
    step (a review). Once the rules have caught up (summaries asked for), they go."""
    e = engine(threshold=3, window="10m", max_age="1h")
    t0 = 1_765_000_000
    now = (t0 + 48 * 3600) * S
    for i in range(200):  # jobs that each logged one error during a two-day outage
        e.feed([row(i, t0 + 60 * i, "ERROR", f"job-{i}", f"{i:064x}")], now)
    assert e.summaries() == []
    for i in range(3):  # then another container's present lines
        e.feed([row(1000 + i, t0 + 48 * 3600 - 10 + i, "fine", "web")], now)
    assert len(e.state()) < 200, e.state()[:200]
