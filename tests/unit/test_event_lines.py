"""Docker's /events body to events: bytes in, objects out, nothing fatal."""

from __future__ import annotations

from agent.docker.event_lines import EventLines


def test_events_split_anywhere_come_out_whole() -> None:
    body = b'{"Action": "start"}\n\n{"Action": "die"}\n'
    for cut in range(1, len(body)):
        lines = EventLines()
        got = lines.feed(body[:cut]) + lines.feed(body[cut:])
        assert got == [{"Action": "start"}, {"Action": "die"}]


def test_a_line_that_is_not_json_is_skipped_and_said() -> None:
    lines = EventLines()
    assert lines.feed(b'{"a": 1}\nnot json\n[1, 2]\n{"b": 2}\n') == [{"a": 1}, {"b": 2}]
    assert len(lines.skipped) == 2 and "not JSON" in lines.skipped[0]


def test_a_huge_line_is_skipped_up_to_its_newline_and_the_next_is_read() -> None:
    lines = EventLines(max_bytes=1000)
    got = lines.feed(b'{"labels": "' + b"x" * 600)
    got += lines.feed(b"x" * 600)  # past the bound: dropped from here to its newline
    got += lines.feed(b"x" * 5000 + b'"}\n{"Action": "start"}\n')
    assert got == [{"Action": "start"}]
    assert lines.skipped == ["an event line over 1000 bytes"]


def test_a_large_event_under_the_bound_is_kept() -> None:
    big = b'{"Actor": {"Attributes": {"big": "' + b"y" * 700_000 + b'"}}}\n'
    lines = EventLines()
    events = [e for i in range(0, len(big), 65536) for e in lines.feed(big[i : i + 65536])]
    assert len(events) == 1 and len(events[0]["Actor"]["Attributes"]["big"]) == 700_000
