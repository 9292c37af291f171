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
