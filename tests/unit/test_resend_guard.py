"""The live stream's re-send guard: values in, values out (agent/cursor.py)."""

from __future__ import annotations

from agent.batch import FLAG_CONTINUED, FLAG_TRUNCATED, Line, LineBatch, Source
from agent.cursor import Cursor, ResendGuard

SOURCE = Source("c", "n")


def lines(stream: str, *stamps: int) -> list[Line]:
    return [Line(stream, ts, str(ts), f"{stream} {ts}") for ts in stamps]


def through(guard: ResendGuard, cursor: Cursor, given: list[Line]) -> list[int]:
    """Deliver as the collector does: filter, then advance; the timestamps that passed."""
    batch = guard.filter(LineBatch.of(SOURCE, given))
    cursor.advance(batch)
    return batch.timestamps_ns


def guarded(*first: Line) -> tuple[Cursor, ResendGuard]:
    cursor = Cursor()
    guard = ResendGuard(cursor)
    through(guard, cursor, list(first))
    return cursor, guard


def test_lines_in_order_pass_untouched() -> None:
    cursor, guard = guarded(*lines("stdout", 1, 2, 3))
    again = [Line("stdout", 3, "3", "another at 3"), *lines("stdout", 4, 5)]
    assert through(guard, cursor, again) == [3, 4, 5]  # another line at 3: a new line
    assert (guard.resent, guard.stepped_back) == (0, 0)


def test_the_last_line_sent_again_at_its_own_timestamp_is_dropped() -> None:
    """Seen from dockerd after a rotation: the last stored line again, then a jump ahead."""
    cursor, guard = guarded(*lines("stdout", 1, 2, 3))
    assert through(guard, cursor, lines("stdout", 3, 9)) == [9]
    assert (guard.resent, guard.stepped_back) == (1, 0)
    # In the same read as the line itself, too.
    assert through(guard, cursor, lines("stdout", 10, 10, 11)) == [10, 11]
    assert guard.resent == 2


def test_pieces_of_one_long_line_share_stamp_and_text_and_all_pass() -> None:
    piece = "c" * 16
    first = Line("stdout", 5, "5", piece, FLAG_TRUNCATED)
    rest = Line("stdout", 5, "5", piece, FLAG_TRUNCATED | FLAG_CONTINUED)
    last = Line("stdout", 5, "5", piece, FLAG_CONTINUED)
    cursor, guard = guarded(*lines("stdout", 1), first)
    assert through(guard, cursor, [rest]) == [5]  # a read ended between pieces
    assert through(guard, cursor, [last, *lines("stdout", 6)]) == [5, 6]
    assert guard.resent == 0


def test_resent_lines_after_rotation_are_dropped_and_counted() -> None:
    cursor, guard = guarded(*lines("stdout", *range(1, 11)))
    assert through(guard, cursor, lines("stdout", *range(6, 13))) == [11, 12]
    assert guard.resent == 5 and guard.stepped_back == 0


def test_a_resend_across_batches_is_held_until_it_meets_the_position() -> None:
    cursor, guard = guarded(*lines("stdout", *range(1, 11)))
    assert through(guard, cursor, lines("stdout", 4, 5, 6)) == []
    assert through(guard, cursor, lines("stdout", 7, 8, 9, 10, 11)) == [11]
    assert guard.resent == 7


def test_resent_lines_sharing_the_position_timestamp_are_matched_by_count() -> None:
    fives = [Line("stdout", 5, "5", f"five {k}") for k in range(4)]
    cursor, guard = guarded(*lines("stdout", 1), *fives[:3])
    resent = [*lines("stdout", 1), *fives, *lines("stdout", 6)]  # and a 4th at 5
    assert through(guard, cursor, resent) == [5, 6]
    assert guard.resent == 4


def test_clock_stepped_back_lines_are_stored_late_not_dropped() -> None:
    cursor, guard = guarded(*lines("stdout", 100, 200))
    # New lines stamped before 200 (the clock went back), then past it: never met 200 again.
    assert through(guard, cursor, lines("stdout", 150, 160)) == []
    assert through(guard, cursor, lines("stdout", 210)) == [150, 160, 210]
    assert guard.stepped_back == 2 and guard.resent == 0


def test_each_stream_is_guarded_on_its_own() -> None:
    cursor, guard = guarded(*lines("stdout", 1, 2, 3), *lines("stderr", 1, 2))
    mixed = [*lines("stdout", 2, 3), *lines("stderr", 3), *lines("stdout", 4)]
    assert through(guard, cursor, mixed) == [3, 4]  # stderr 3 passes at once
    assert guard.resent == 2


def test_end_of_stream_counts_what_is_still_held() -> None:
    cursor, guard = guarded(*lines("stdout", 1, 2, 3))
    assert through(guard, cursor, lines("stdout", 2)) == []
    assert guard.finish() == 1 and guard.resent == 1


def test_a_replay_that_sends_the_last_line_twice_stores_it_once() -> None:
    """Seen from dockerd: a re-send through the position, then the last line once more."""
    cursor, guard = guarded(*lines("stdout", 1, 2, 3))
    assert through(guard, cursor, lines("stdout", 2, 3, 3, 4)) == [4]
    assert guard.resent == 3


def test_lines_held_behind_a_future_stamp_are_bounded_in_bytes_and_go_on_late() -> None:
    from agent.cursor import MAX_HELD_BYTES

    # A TTY line that prints a stamp far ahead moved the position there: every later line
    # looked re-sent and was held, by count only (+50-100 MiB).
    cursor, guard = guarded(Line("tty", 10**18, "x", "future"))
    big = "y" * 65536
    later = [
        Line("tty", 1000 + i, str(i), big, 0, len(big))
        for i in range(2 * MAX_HELD_BYTES // len(big))
    ]
    passed: list[int] = []
    for at in range(0, len(later), 16):
        batch = guard.filter(LineBatch.of(SOURCE, later[at : at + 16]))
        cursor.advance(batch)
        passed += batch.timestamps_ns
        assert guard._held_bytes <= MAX_HELD_BYTES + len(big)
    assert passed == [line.timestamp_ns for line in later]  # none lost, in order
    assert guard.resent == 0 and guard.stepped_back > 0


def test_a_resend_longer_than_the_bound_goes_on_late_to_be_checked_not_as_new() -> None:
    from agent.cursor import MAX_HELD_BYTES

    # A genuine re-send of more than the bound (a rotated 10 MB file sent again): every line
    # of it must reach the collector's store check (late), none pass as new.
    big = "z" * 65536
    first = [Line("stdout", 1000 + i, str(i), big, 0, len(big)) for i in range(200)]
    _cursor, guard = guarded(*first)
    again = first[: 2 * MAX_HELD_BYTES // len(big)]
    batch = guard.filter(LineBatch.of(SOURCE, again))
    assert len(batch) == len(again) and guard.late == list(range(len(again)))
    guard.were_stored(len(guard.late))  # the store had them all
    assert guard.stepped_back == 0 and guard.resent == len(again)
    assert guard._held_bytes == 0
