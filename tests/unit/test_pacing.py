"""ReadPacer: quiet streams rest after small reads; a busy one is found out and never rests."""

from __future__ import annotations

from agent.docker.pacing import ReadPacer

LINE = 45  # bytes of one short line on the wire: header, timestamp, text


def test_small_reads_rest_big_reads_do_not() -> None:
    p = ReadPacer(rest=0.04)
    assert p.after_read(LINE, now=0.0) == 0.04
    assert p.after_read(4 * LINE, now=0.05) == 0.04  # what gathered while resting: still quiet
    assert p.after_read(p.small_bytes, now=0.1) == 0.0  # a read this big is not worth resting
    assert p.rests == 2


def test_off_never_rests() -> None:
    p = ReadPacer(rest=0.0)
    assert [p.after_read(LINE, now=t / 10) for t in range(5)] == [0.0] * 5


def test_busy_stream_stops_resting_and_backs_off_doubling() -> None:
    p = ReadPacer(rest=0.04, backoff=1.0, max_backoff=4.0)
    assert p.after_read(LINE, now=0.0) == 0.04
    # The rest filled the socket: busy. No rest for 1 s, even after small reads.
    assert p.after_read(64 * 1024, now=0.05) == 0.0
    assert p.after_read(LINE, now=0.5) == 0.0
    assert p.after_read(LINE, now=1.1) == 0.04  # the spell is over: try again
    assert p.after_read(64 * 1024, now=1.15) == 0.0  # still busy: 2 s now
    assert p.after_read(LINE, now=3.0) == 0.0
    assert p.after_read(LINE, now=3.2) == 0.04
    assert p.after_read(64 * 1024, now=3.25) == 0.0  # 4 s
    assert p.after_read(LINE, now=7.2) == 0.0
    assert p.after_read(LINE, now=7.3) == 0.04
    assert p.after_read(64 * 1024, now=7.35) == 0.0  # capped at 4 s
    assert p.after_read(LINE, now=11.3) == 0.0
    assert p.after_read(LINE, now=11.4) == 0.04
    assert p.busy_spells == 4


def test_a_quiet_spell_resets_the_backoff() -> None:
    p = ReadPacer(rest=0.04, backoff=1.0)
    p.after_read(LINE, now=0.0)
    p.after_read(64 * 1024, now=0.05)  # busy for 1 s, next spell 2 s
    assert p.after_read(LINE, now=1.1) == 0.04
    assert p.after_read(LINE, now=1.15) == 0.04  # quiet after the rest: backoff back to 1 s
    assert p.after_read(64 * 1024, now=1.2) == 0.0
    assert p.after_read(LINE, now=2.1) == 0.0
    assert p.after_read(LINE, now=2.3) == 0.04


def feed(p: ReadPacer, rate: float, seconds: float, start: float = 0.0) -> list[float]:
    """Reads of one line each at `rate` lines/s; the rests the pacer asks for."""
    n = int(rate * seconds)
    return [p.after_read(LINE, now=start + i / rate) for i in range(n)]


def test_a_slow_stream_never_rests_long() -> None:
    p = ReadPacer(rest=0.03, chatty_rest=0.08)
    assert set(feed(p, rate=10, seconds=5)) == {0.03}  # 10 lines/s < 25 lines/s
    assert p.chatty_rests == 0


def test_a_longer_chatty_rest_does_not_make_a_slower_stream_chatty() -> None:
    """Chatty is a rate (25 lines/s): 20 lines/s would bring 3 lines per 150 ms rest, and
    its lines (whose delay has a budget) keep the short rest."""
    p = ReadPacer(rest=0.03, chatty_rest=0.15)
    assert set(feed(p, rate=20, seconds=5)) == {0.03}
    assert set(feed(p, rate=30, seconds=3, start=5.0)[-10:]) == {0.15}


def test_a_chatty_stream_rests_longer_after_a_window() -> None:
    p = ReadPacer(rest=0.03, chatty_rest=0.08)
    rests = feed(p, rate=50, seconds=3)
    assert rests[:49] == [0.03] * 49  # its first second: the rate is not known yet
    assert set(rests[51:]) == {0.08}  # 50 lines/s x 80 ms = 4 lines per rest
    assert p.chatty_rests == len(rests) - 50


def test_a_read_of_many_lines_counts_them_all() -> None:
    p = ReadPacer(rest=0.03, chatty_rest=0.08)
    # 8 lines gathered per read, a read every 80 ms: 100 lines/s.
    rests = [p.after_read(8 * LINE, now=i * 0.08, lines=8) for i in range(30)]
    assert rests[-1] == 0.08


def test_a_chatty_stream_that_calms_down_rests_short_again() -> None:
    p = ReadPacer(rest=0.03, chatty_rest=0.08)
    feed(p, rate=100, seconds=2)
    assert p.after_read(LINE, now=2.0) == 0.08
    # Then one line every 200 ms: after the next full window it is slow again.
    rests = feed(p, rate=5, seconds=3, start=2.2)
    assert rests[-1] == 0.03


def test_one_rest_for_every_rate_when_chatty_rest_is_not_longer() -> None:
    p = ReadPacer(rest=0.03, chatty_rest=0.03)
    assert set(feed(p, rate=100, seconds=3)) == {0.03}
    assert p.chatty_rests == 0


def test_a_chatty_stream_that_turns_busy_stops_resting() -> None:
    p = ReadPacer(rest=0.03, chatty_rest=0.08)
    feed(p, rate=100, seconds=2)
    assert p.after_read(LINE, now=2.0) == 0.08
    assert p.after_read(p.busy_bytes, now=2.08, lines=100) == 0.0  # the long rest filled up
    assert p.after_read(LINE, now=2.1) == 0.0
    assert p.busy_spells == 1
