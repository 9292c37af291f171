"""The frame decoder: bytes in, lines out, whatever the chunking."""

from __future__ import annotations

import random
import struct

import pytest

from agent.batch import FLAG_CONTINUED, FLAG_REPLACED, FLAG_TRUNCATED, Line, Source
from agent.cursor import Cursor
from agent.docker.frames import FUTURE_MARGIN_NS, FrameDecoder, FrameError
from agent.docker.lines import DOCKER_PARTIAL_BYTES
from agent.timestamps import TimestampError, format_timestamp, parse_timestamp, since_param

T1 = b"2026-11-26T11:59:02.760761749Z"
T2 = b"2026-11-26T11:59:02.761534987Z"
T3 = b"2026-11-26T11:59:03.000000001Z"


def frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxI", stream, len(payload)) + payload


def rec(ts: bytes, msg: bytes) -> bytes:
    return ts + b" " + msg


def shown(lines: list[Line]) -> list[Line]:
    """Lines with their timestamp text as the read side shows it (Docker's own spelling is
    not kept per line: it is derived from the nanoseconds)."""
    return [e._replace(timestamp=e.timestamp or format_timestamp(e.timestamp_ns)) for e in lines]


class Dec:
    """The decoder, its batches given as lists of lines (to compare them whole)."""

    def __init__(self, container_id: str, name: str, **kw: object) -> None:
        self.decoder = FrameDecoder(Source(container_id, name), **kw)  # type: ignore[arg-type]
        self.notices = self.decoder.notices

    def feed(self, data: bytes) -> list[Line]:
        return shown(self.decoder.feed(data).lines())

    def finish(self) -> list[Line]:
        return shown(self.decoder.finish().lines())


def decode(data: bytes, cuts: list[int], **kw: object) -> list[Line]:
    dec = Dec("c" * 64, "name", **kw)
    out: list[Line] = []
    prev = 0
    for cut in [*cuts, len(data)]:
        out += dec.feed(data[prev:cut])
        prev = cut
    out += dec.finish()
    return out


def decode_every_split(data: bytes, **kw: object) -> list[Line]:
    """Decode whole, then split at every byte (and a few random multi-splits): all agree."""
    whole = decode(data, [], **kw)
    for i in range(1, len(data)):
        assert decode(data, [i], **kw) == whole, f"split at {i}"
    rng = random.Random(7)
    for _ in range(50):
        cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, 6)))
        assert decode(data, cuts, **kw) == whole
    return whole


def view(lines: list[Line]) -> list[tuple[str, str, str, int]]:
    return [(e.stream, e.timestamp, e.message, e.flags) for e in lines]


def test_stdout_and_stderr_lines_keep_stream_timestamp_and_text() -> None:
    data = frame(1, rec(T1, b"hello\n")) + frame(2, rec(T2, b"oops\n")) + frame(1, rec(T3, b"\n"))
    lines = decode_every_split(data, tty=False)
    assert view(lines) == [
        ("stdout", T1.decode(), "hello", 0),
        ("stderr", T2.decode(), "oops", 0),
        ("stdout", T3.decode(), "", 0),
    ]
    assert lines[0].timestamp_ns == 1795694342760761749
    assert FrameDecoder(Source("c" * 64, "n"), tty=False).feed(data).container_id == "c" * 64


def test_stdin_stream_byte_is_taken_as_stdout() -> None:
    lines = decode(frame(0, rec(T1, b"x\n")), [], tty=False)
    assert view(lines) == [("stdout", T1.decode(), "x", 0)]


def test_line_over_16k_is_merged_per_stream_with_first_timestamp() -> None:
    big = "é" * 12000  # 24,000 bytes: Docker's cut falls inside a two-byte character
    raw = big.encode()
    piece1, piece2 = raw[:DOCKER_PARTIAL_BYTES], raw[DOCKER_PARTIAL_BYTES:]
    data = (
        frame(1, rec(T1, piece1))
        + frame(2, rec(T2, b"interleaved\n"))
        + frame(1, rec(T1, piece2 + b"\n"))
    )
    lines = decode_every_split(data, tty=False)
    assert view(lines) == [
        ("stderr", T2.decode(), "interleaved", 0),
        ("stdout", T1.decode(), big, 0),
    ]
    assert lines[1].size == len(raw)


def test_line_over_cap_is_stored_in_flagged_pieces_that_join_back() -> None:
    text = ("abcdé" * 40).encode()  # 240 bytes, multi-byte characters at every cap
    data = frame(1, rec(T1, text[:100])) + frame(1, rec(T1, text[100:] + b"\n"))
    lines = decode_every_split(data, tty=False, max_line_bytes=64, partial_bytes=100)
    assert len(lines) == 4
    assert [e.flags for e in lines] == [
        FLAG_TRUNCATED,
        FLAG_TRUNCATED | FLAG_CONTINUED,
        FLAG_TRUNCATED | FLAG_CONTINUED,
        FLAG_CONTINUED,
    ]
    assert all(len(e.message.encode()) <= 64 for e in lines)
    assert "".join(e.message for e in lines) == text.decode()
    assert {e.timestamp for e in lines} == {T1.decode()}
    assert all(e.flags & (FLAG_TRUNCATED | FLAG_CONTINUED) for e in lines)


def test_a_frame_of_megabytes_in_small_chunks_decodes_as_when_whole() -> None:
    """The decoder gathers an unfinished frame without parsing every chunk again, and takes
    chunks as bytes, bytearray or memoryview alike."""
    big = b"z" * (3 * 1024 * 1024)
    data = (
        frame(1, rec(T1, b"before\n"))
        + frame(2, rec(T2, big + b"\n"))
        + frame(1, rec(T3, b"after\n"))
    )
    whole = decode(data, [], tty=False)
    for kind in (bytes, bytearray, memoryview):
        dec = Dec("c" * 64, "name", tty=False)
        got: list[Line] = []
        for at in range(0, len(data), 4096):
            got += dec.feed(kind(data[at : at + 4096]))  # type: ignore[arg-type]
        assert got + dec.finish() == whole
    assert whole[0].message == "before" and whole[-1].message == "after"
    assert "".join(e.message for e in whole if e.stream == "stderr") == big.decode()


def test_line_of_exactly_the_cap_is_one_row() -> None:
    lines = decode(frame(1, rec(T1, b"x" * 64 + b"\n")), [], tty=False, max_line_bytes=64)
    assert view(lines) == [("stdout", T1.decode(), "x" * 64, 0)]


def test_last_line_without_newline_is_a_whole_line() -> None:
    data = frame(1, rec(T1, b"one\n")) + frame(1, rec(T2, b"last-no-nl"))
    assert view(decode_every_split(data, tty=False)) == [
        ("stdout", T1.decode(), "one", 0),
        ("stdout", T2.decode(), "last-no-nl", 0),
    ]


def test_last_16k_piece_without_newline_is_emitted_at_end_of_stream() -> None:
    data = frame(1, rec(T1, b"q" * DOCKER_PARTIAL_BYTES))
    dec = Dec("c", "n", tty=False)
    assert dec.feed(data) == []
    assert view(dec.finish()) == [("stdout", T1.decode(), "q" * DOCKER_PARTIAL_BYTES, 0)]


def test_local_driver_last_piece_without_newline_ends_the_line() -> None:
    # dockerd 20.10's `local` driver: the 3,616-byte last piece of a 20,000-byte line has no \n.
    data = (
        frame(1, rec(T1, b"a" * DOCKER_PARTIAL_BYTES))
        + frame(1, rec(T1, b"a" * 3616))
        + frame(1, rec(T2, b"next\n"))
    )
    assert view(decode(data, [], tty=False)) == [
        ("stdout", T1.decode(), "a" * 20000, 0),
        ("stdout", T2.decode(), "next", 0),
    ]


def test_invalid_utf8_is_replaced_and_flagged_not_dropped() -> None:
    data = frame(1, rec(T1, b"bad \xff\xfe bytes\n")) + frame(1, rec(T2, "ünï\n".encode()))
    lines = decode_every_split(data, tty=False)
    assert view(lines) == [
        ("stdout", T1.decode(), "bad \ufffd\ufffd bytes", FLAG_REPLACED),
        ("stdout", T2.decode(), "ünï", 0),
    ]


@pytest.mark.parametrize("tty", [False, True])
def test_a_nul_is_stored_as_u_fffd_and_flagged_whole_or_in_pieces(tty: bool) -> None:
    """A NUL in a line is U+FFFD from the decoder on: PostgreSQL's text cannot hold one and
    SQLite's search index stopped at it (a review: the line was missed by --grep through it),
    so the line is the same text on either store, and as the collector compares it."""
    long = b"x" * (DOCKER_PARTIAL_BYTES - 3) + b"\x00yz" + b"\x00tail"  # a NUL in each piece

    def record(ts: bytes, msg: bytes) -> bytes:
        return rec(ts, msg) if tty else frame(1, rec(ts, msg))

    data = record(T1, b"boot\x00ERROR disk\n") + record(T2, b"fine\n")
    if not tty:  # and a line in two 16 KiB pieces
        data += record(T3, long[:DOCKER_PARTIAL_BYTES])
        data += record(T3, long[DOCKER_PARTIAL_BYTES:] + b"\n")
    data += record(T3, b"end\x00")
    lines = decode_every_split(data, tty=tty)
    texts = [(e.message, e.flags) for e in lines]
    stream_long = [] if tty else [(long.decode().replace("\x00", "\ufffd"), FLAG_REPLACED)]
    assert texts == [("boot\ufffdERROR disk", FLAG_REPLACED), ("fine", 0), *stream_long,
                     ("end\ufffd", FLAG_REPLACED)]  # fmt: skip


def test_malformed_header_raises_and_keeps_lines_before_it() -> None:
    data = frame(1, rec(T1, b"kept\n")) + b"\x07\x00\x00\x00\x00\x00\x00\x05hello"
    dec = Dec("abc", "web", tty=False)
    with pytest.raises(FrameError, match="web") as info:
        dec.feed(data)
    assert info.value.lines is not None
    assert [e.message for e in info.value.lines.lines()] == ["kept"]


def test_nonzero_padding_bytes_raise() -> None:
    with pytest.raises(FrameError, match="malformed frame header"):
        Dec("abc", "web", tty=False).feed(b"\x01\x00\x01\x00\x00\x00\x00\x01x")


def test_impossible_frame_length_raises() -> None:
    with pytest.raises(FrameError, match="exceeds"):
        Dec("abc", "web", tty=False).feed(b"\x01\x00\x00\x00\x7f\xff\xff\xff")


def test_daemon_error_frames_and_untimed_records_become_notices() -> None:
    data = (
        frame(3, b"something broke")
        + frame(2, b"Error grabbing logs: boom\n")
        + frame(1, rec(T1, b"ok\n"))
    )
    dec = Dec("abc", "web", tty=False)
    assert [e.message for e in dec.feed(data)] == ["ok"]
    assert len(dec.notices) == 2
    assert "something broke" in dec.notices[0]
    assert "Error grabbing logs" in dec.notices[1]


def test_stream_cut_inside_a_frame_is_reported() -> None:
    dec = Dec("abc", "web", tty=False)
    dec.feed(frame(1, rec(T1, b"whole\n"))[:-3])
    assert dec.finish() == []
    assert "inside a frame" in dec.notices[0]


def test_tty_lines_end_in_crlf_or_lf_and_are_recorded_as_tty() -> None:
    data = rec(T1, b"one\r\n") + rec(T2, b"two\n") + rec(T3, b"\r\n") + rec(T3, b"end")
    lines = decode_every_split(data, tty=True)
    assert view(lines) == [
        ("tty", T1.decode(), "one", 0),
        ("tty", T2.decode(), "two", 0),
        ("tty", T3.decode(), "", 0),
        ("tty", T3.decode(), "end", 0),
    ]


def test_tty_16k_piece_is_followed_directly_by_next_timestamp() -> None:
    # As dockerd 20.10 sends it: a 16,384-byte piece, then at once the next record.
    body = b"b" * 20000
    data = (
        rec(T1, b"tty1\r\n")
        + rec(T2, body[:DOCKER_PARTIAL_BYTES])
        + rec(T2, body[DOCKER_PARTIAL_BYTES:] + b"\r\n")
        + rec(T3, b"ttylast")
    )
    whole = decode(data, [], tty=True)
    for cut in [1, 30, 31, 37, 100, 16000, 16420, 16452, 16483, len(data) - 3]:
        assert decode(data, [cut], tty=True) == whole
    assert view(whole) == [
        ("tty", T1.decode(), "tty1", 0),
        ("tty", T2.decode(), body.decode(), 0),
        ("tty", T3.decode(), "ttylast", 0),
    ]


def test_tty_line_of_exactly_16k_then_newline_piece() -> None:
    data = rec(T1, b"z" * DOCKER_PARTIAL_BYTES) + rec(T1, b"\r\n") + rec(T2, b"next\r\n")
    assert view(decode(data, [], tty=True)) == [
        ("tty", T1.decode(), "z" * DOCKER_PARTIAL_BYTES, 0),
        ("tty", T2.decode(), "next", 0),
    ]


def test_tty_garbage_raises_frame_error() -> None:
    with pytest.raises(FrameError, match="timestamp"):
        Dec("abc", "web", tty=True).feed(b"x" * 100)


def test_dockers_own_stamp_text_is_not_kept_and_any_other_spelling_is() -> None:
    zoned = b"2026-11-26T12:59:02.760761749+01:00"  # the local driver: the daemon's zone
    short, lower = b"2026-11-26T11:59:02.76Z", b"2026-11-26t11:59:02.760761749Z"
    data = b"".join(
        frame(1, rec(ts, b"%d\n" % i)) for i, ts in enumerate([T1, zoned, short, lower, T1, T2])
    )
    lines = FrameDecoder(Source("c", "n"), tty=False).feed(data).lines()
    assert [e.timestamp for e in lines] == [
        "",
        zoned.decode(),
        short.decode(),
        lower.decode(),
        "",
        "",
    ]
    assert [format_timestamp(e.timestamp_ns) for e in lines[4:]] == [T1.decode(), T2.decode()]


def test_timestamps_parse_to_nanoseconds_with_any_fraction_and_offset() -> None:
    assert parse_timestamp(b"1970-01-01T00:00:01Z") == 1_000_000_000
    assert parse_timestamp(b"1970-01-01T00:00:01.5Z") == 1_500_000_000
    assert parse_timestamp(b"1970-01-01T01:00:01.000000007+01:00") == 1_000_000_007
    ns = parse_timestamp(T1)
    assert parse_timestamp(T1) == ns  # cached path agrees
    assert format_timestamp(ns) == T1.decode()
    assert since_param(ns) == "1795694342.760761749"


def test_tty_run_ending_mid_line_is_split_from_the_next_runs_first_record() -> None:
    # `echo first; printf partial` under -t, started again: Docker sends the second run's
    # first record right after "partial", with no newline between them.
    data = rec(T1, b"first\r\n") + rec(T2, b"partial") + rec(T3, b"first\r\n")
    assert view(decode_every_split(data, tty=True)) == [
        ("tty", T1.decode(), "first", 0),
        ("tty", T2.decode(), "partial", 0),
        ("tty", T3.decode(), "first", 0),
    ]


def test_tty_line_quoting_an_older_docker_stamp_stays_one_line() -> None:
    data = rec(T2, b"saw " + T1 + b" before\r\n")
    assert view(decode_every_split(data, tty=True)) == [
        ("tty", T2.decode(), f"saw {T1.decode()} before", 0)
    ]


def test_a_stamp_no_int64_count_holds_is_refused_not_overflowed() -> None:
    # A TTY's text can print anything: past 2262 no signed 64-bit nanosecond count holds it.
    assert parse_timestamp(b"2262-04-11T23:47:15.999999999Z") < 2**63
    for text in (b"9999-12-31T23:59:59.999999999Z", b"1600-01-01T00:00:00Z"):
        with pytest.raises(TimestampError, match="out of range"):
            parse_timestamp(text)


def test_tty_line_printing_a_stamp_past_2262_stays_one_line() -> None:
    far = b"9999-12-31T23:59:59.999999999Z"
    data = rec(T2, b"x" + far + b" y\r\n")
    assert view(decode_every_split(data, tty=True)) == [
        ("tty", T2.decode(), f"x{far.decode()} y", 0)
    ]


def test_tty_line_printing_a_future_docker_stamp_stays_one_line() -> None:
    """`echo "next run at 2031-...Z ok"` under -t was split at the stamp: a row dated 2031,
    the container's position moved there, and every later line was held back as re-sent
    and dropped (a review's finding: a user could hide what they logged next)."""
    future = b"2031-01-01T00:00:00.000000000Z"
    data = rec(T2, b"next run at " + future + b" ok\r\n") + rec(T3, b"after\r\n")
    assert view(decode_every_split(data, tty=True)) == [
        ("tty", T2.decode(), f"next run at {future.decode()} ok", 0),
        ("tty", T3.decode(), "after", 0),
    ]
    # The bound is the reading's clock and a minute: a next run's record before it splits.
    glued = rec(T2, b"partial") + rec(T3, b"first\r\n")
    t3 = parse_timestamp(T3)
    for now, pieces in ((t3, 2), (t3 - FUTURE_MARGIN_NS + 1, 2), (t3 - FUTURE_MARGIN_NS - 1, 1)):
        decoder = FrameDecoder(Source("abc", "web"), tty=True, clock=lambda now=now: now)
        got = decoder.feed(glued).messages + decoder.finish().messages
        assert len(got) == pieces, (now, got)


def test_lines_before_a_read_position_are_dropped_as_the_skipper_would() -> None:
    """A re-read from `since` sends again a second of lines before the position; the decoder
    drops them undecoded (skip_before), each stream until its first line at or after its
    position or off the fast path. What then passes the cursor's Skipper is the same as
    without it: the lines, and the spans it says are lost, on drawn re-reads (lines at the
    position, lines older again after it, long lines, daemon notices, any chunking)."""
    rnd = random.Random(5)
    base = 1_795_000_000_000_000_000
    for _ in range(400):
        positions = {
            s: [base + rnd.randint(0, 20), rnd.randint(0, 2)]
            for s in rnd.sample(["stdout", "stderr"], rnd.randint(0, 2))
        }
        data = b""
        for _ in range(rnd.randint(0, 40)):
            kind = rnd.random()
            if kind < 0.05:
                data += frame(3, b"Error grabbing logs: x\n")
                continue
            stream = rnd.choice([1, 2])
            ts = format_timestamp(base + rnd.randint(0, 30)).encode()
            text = b"y" * 20_000 if kind < 0.1 else b"line %d" % rnd.randint(0, 9)
            data += frame(stream, ts + b" " + text + (b"" if kind < 0.12 else b"\n"))
        cuts = sorted(rnd.sample(range(1, len(data)), min(3, len(data) - 1))) if data else []
        results = []
        for skip in (False, True):
            decoder = FrameDecoder(Source("c" * 64, "n"), tty=False)
            if skip:
                decoder.skip_before = {s: p[0] for s, p in positions.items()}
            skipper = Cursor({s: list(p) for s, p in positions.items()}).skipper()
            kept: list[Line] = []
            prev = 0
            for cut in [*cuts, len(data)]:
                kept += skipper.new(decoder.feed(data[prev:cut])).lines()
                prev = cut
            kept += skipper.new(decoder.finish()).lines()
            results.append((kept, skipper.lost, decoder.notices))
        assert results[0] == results[1], positions


def test_what_a_decoder_holds_of_the_containers_and_the_stamp_it_began() -> None:
    """A reader opening a stream again with no position asks from the oldest line that
    came, stored or not: a line held in part counts if its stamp came; the daemon's own
    frame (stream 3) cut in two is nothing of the container's."""
    for tty, data, holding, stamp in [
        (False, frame(1, rec(T1, b"partial\n"))[:20], True, None),  # the stamp not whole
        (False, frame(1, rec(T1, b"partial\n"))[:40], True, parse_timestamp(T1)),
        (False, frame(3, b"Error grabbing logs: no such file\n")[:20], False, None),
        (False, frame(1, rec(T1, b"x" * 20_000)), True, parse_timestamp(T1)),  # pieces
        (True, rec(T2, b"no newline yet"), True, parse_timestamp(T2)),
        (False, frame(1, rec(T1, b"whole\n")), False, None),
    ]:
        decoder = FrameDecoder(Source("c" * 64, "n"), tty=tty)
        decoder.feed(data)
        assert (decoder.holding, decoder.held_from()) == (holding, stamp), data[:12]
