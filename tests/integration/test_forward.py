"""Forwarding the committed store (issue 28): to an NDJSON file and to a real rsyslog (imtcp,
RFC 5424 octet-counted, tests/rsyslog.py), each destination from a position of its own.
Every line Docker has arrives, compared line for line with `docker logs -t`; after a
`kill -9` only the batch not yet acknowledged is sent again, with the same ids; a receiver
down for 30 s gets everything once it is back; a fleet's hosts each forward their own.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest

from agent.timestamps import format_timestamp
from tests.conftest import (
    ROOT,
    RUN_ID,
    SOURCE,
    Containers,
    eventually,
    numbered_bursts,
    query,
    require_or_skip,
    start_agent_process,
    stop_process,
    until_reached,
)
from tests.http_receiver import HttpReceiver
from tests.integration.test_collector import docker_reference
from tests.rsyslog import RsyslogReceiver, receiver_problem

pytestmark = [pytest.mark.anyio, pytest.mark.docker]

BATCH = 500
_SD = re.compile(r'id="(?P<id>[^"]+)" container="(?:[^"\\]|\\.)*" time="(?P<time>[^"]+)"')


@pytest.fixture
def receiver() -> Any:
    require_or_skip(receiver_problem())
    with RsyslogReceiver() as rsyslog:
        yield rsyslog


def forward_config(**table: object) -> str:
    lines = [f"{k} = {json.dumps(v)}" for k, v in table.items()]
    return "[[forward]]\n" + "\n".join(lines) + "\n"


def ndjson_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    text = path.read_text()
    return [json.loads(line) for line in text.splitlines()[: text.count("\n")]]


def syslog_records(rsyslog: RsyslogReceiver) -> list[dict[str, Any]]:
    """id, stream, Docker's time and the message of each message received."""
    found = []
    for m in rsyslog.messages():
        sd = _SD.search(m["structured-data"])
        assert sd is not None, m
        found.append({"id": sd["id"], "stream": m["msgid"], "timestamp": sd["time"],
                      "message": m["msg"]})  # fmt: skip
    return found


def assert_each_line_once_in_order(records: list[dict[str, Any]], cid: str) -> Counter[str]:
    """The records, each id's first time, are Docker's lines in Docker's order (one
    stream here); the count of each id (a repeat: > 1)."""
    seen: dict[str, dict[str, Any]] = {}
    for r in records:
        if r["id"] in seen:
            assert seen[r["id"]] == r  # a repeat is the same record, the same id
        seen.setdefault(r["id"], r)
    firsts = sorted(seen.values(), key=lambda r: int(r["id"].rsplit(":", 1)[1]))
    got = [(r["stream"], r["timestamp"], r["message"]) for r in firsts]
    assert got == docker_reference(cid)
    return Counter(r["id"] for r in records)


def assert_repeats_only_one_batch(records: list[dict[str, Any]], cid: str) -> None:
    """Every line once in Docker's order; a repeat (after a kill -9) is sent twice at most,
    and only the lines of the one batch that was not acknowledged."""
    counts = assert_each_line_once_in_order(records, cid)
    repeated = [i for i, c in counts.items() if c > 1]
    assert all(counts[i] == 2 for i in repeated) and len(repeated) <= BATCH


def killed_and_started_again(
    proc: subprocess.Popen[bytes], tmp_path: Path, config: str
) -> subprocess.Popen[bytes]:
    """`kill -9` of the agent mid-forward, and a new one on the same store and config."""
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    return start_agent_process(tmp_path, extra_config=config)


def forward_status(tmp_path: Path) -> dict[str, Any]:
    """The agent's one forward destination, as `logagent status --json` shows it."""
    done = subprocess.run(
        [sys.executable, "-m", "agent", "status", "--json", "--config",
         str(tmp_path / "agent.toml")],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    (destination,) = json.loads(done.stdout)["forward"]
    return dict(destination)


def stored(url: str, cid: str) -> int:
    found = query(url, f"SELECT COUNT(*) FROM log_lines WHERE {SOURCE}", cid)
    return int(found[0][0]) if found else 0


async def test_ndjson_after_a_kill_9_repeats_only_the_batch_not_acknowledged(
    tmp_path: Path, containers: Containers
) -> None:
    out = tmp_path / "out.ndjson"
    config = forward_config(name="file", kind="ndjson", path=str(out), start="stored",
                            linger="50ms", batch_lines=BATCH)  # fmt: skip
    proc = start_agent_process(tmp_path, extra_config=config)
    n = 30_000
    cid = containers.run("forwarded", numbered_bursts(30, 0.2))
    await eventually(lambda: len(ndjson_records(out)) > 8_000, limit=120)
    proc = killed_and_started_again(proc, tmp_path, config)
    await anyio.to_thread.run_sync(containers.wait, "forwarded")
    await until_reached(lambda: len({r["id"] for r in ndjson_records(out)}), n)
    # status: the destination caught up, where it goes, what it sent (no secret to hide)
    await eventually(lambda: forward_status(tmp_path)["lag_rows"] == 0, limit=60)
    shown = forward_status(tmp_path)
    assert (shown["name"], shown["kind"], shown["to"]) == ("file", "ndjson", str(out))
    assert shown["sent"] > 0 and shown["last_error"] is None
    stop_process(proc)
    records = ndjson_records(out)
    assert_repeats_only_one_batch(records, cid)
    assert oct(out.stat().st_mode & 0o777) == "0o600"  # lines may hold secrets


def otlp_sent(rx: HttpReceiver) -> list[dict[str, Any]]:
    """id, stream, Docker's time (as text) and the message of each OTLP record received."""
    return [{"id": r["attributes"]["log.record.uid"], "stream": r["attributes"]["log.iostream"],
             "timestamp": format_timestamp(r["time_unix_nano"]), "message": r["body"]}
            for r in rx.otlp_records()]  # fmt: skip


async def test_otlp_after_a_kill_9_repeats_only_the_batch_not_acknowledged(
    tmp_path: Path, containers: Containers
) -> None:
    n = 30_000
    async with HttpReceiver() as rx:
        config = forward_config(name="otel", kind="otlp", url=rx.otlp_url, start="stored",
                                linger="50ms", batch_lines=BATCH)  # fmt: skip
        proc = start_agent_process(tmp_path, extra_config=config)
        cid = containers.run("otel-killed", numbered_bursts(30, 0.2))
        # 20 requests: 10,000 records at most (one a batch), well before the 30,000th
        await rx.wait_for(lambda: len(rx.accepted()) >= 20)
        proc = killed_and_started_again(proc, tmp_path, config)
        await anyio.to_thread.run_sync(containers.wait, "otel-killed")
        await until_reached(lambda: len({r["id"] for r in otlp_sent(rx)}), n)
        stop_process(proc)
        records = otlp_sent(rx)
    assert_repeats_only_one_batch(records, cid)


async def test_syslog_to_rsyslog_line_for_line_and_a_receiver_down_30s_loses_nothing(
    tmp_path: Path, containers: Containers, receiver: RsyslogReceiver
) -> None:
    host, port = receiver.address
    config = forward_config(name="siem", kind="syslog", address=f"{host}:{port}",
                            start="stored", linger="50ms", batch_lines=BATCH)  # fmt: skip
    proc = start_agent_process(tmp_path, extra_config=config)
    n = 30_000
    cid = containers.run("syslogged", numbered_bursts(30, 1.0))  # ~30 s of lines
    await eventually(lambda: len(receiver.messages()) > 3_000, limit=120)
    await anyio.to_thread.run_sync(receiver.stop)
    await anyio.sleep(30)
    await anyio.to_thread.run_sync(receiver.start)
    await anyio.to_thread.run_sync(containers.wait, "syslogged")
    await until_reached(lambda: len({r["id"] for r in syslog_records(receiver)}), n)
    await anyio.sleep(1)
    stop_process(proc)
    counts = assert_each_line_once_in_order(syslog_records(receiver), cid)
    assert sum(counts.values()) - len(counts) <= BATCH  # at most the batch the outage cut
    log = (tmp_path / "agent.log").read_text()
    assert log.count("forward siem: not sent") == 1, log[-3000:]
    assert "forward siem: sending works again" in log


async def test_a_fleet_forwards_each_host_s_lines_once_by_its_own_agent(
    tmp_path: Path, containers: Containers, receiver: RsyslogReceiver, pg_url: str
) -> None:
    host, port = receiver.address
    config = forward_config(name="siem", kind="syslog", address=f"{host}:{port}",
                            start="stored", linger="50ms")  # fmt: skip
    hosts = ("alpha", "beta")
    label = "logagent-test.forward"
    fleet = [
        start_agent_process(tmp_path, pg_url, host=h, scope=f"{label}={RUN_ID}-{h}",
                            extra_config=config)
        for h in hosts
    ]  # fmt: skip
    cids = {
        h: containers.run(h, numbered_bursts(5, 0.1), "--label", f"{label}={RUN_ID}-{h}")
        for h in hosts
    }
    for h in hosts:
        await anyio.to_thread.run_sync(containers.wait, h)
    await until_reached(lambda: sum(stored(pg_url, c) for c in cids.values()), 10_000)
    await until_reached(lambda: len(receiver.messages()), 10_000)
    await anyio.sleep(2)  # nothing more comes
    for proc in fleet:
        stop_process(proc)
    messages = receiver.messages()
    assert len(messages) == 10_000  # once: no host forwards another's lines
    for h, cid in cids.items():
        mine = [m for m in messages if m["hostname"] == h]
        assert all(m["procid"] == cid[:12] for m in mine)
        records = [r for r in syslog_records(receiver) if r["id"].startswith(f"{h}:")]
        assert_each_line_once_in_order(records, cid)


def store_rows(url: str, cid: str) -> dict[int, tuple[Any, ...]]:
    """A container's rows by id: stream, nanoseconds, message, level."""
    found = query(
        url,
        f"SELECT id, stream, timestamp_ns, message, level FROM log_lines WHERE {SOURCE}",
        cid,
    )
    return {int(r[0]): tuple(r[1:]) for r in found}


def gaps_cli(tmp_path: Path, *args: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "agent", "gaps", "--json", "--config",
         str(tmp_path / "agent.toml"), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return [json.loads(line) for line in done.stdout.splitlines()]


SEVERITY = {None: 0, 3: 9, 5: 17}  # info, error
LEVELED = (
    'i=0; while [ $i -lt 3000 ]; do i=$((i+1)); echo "INFO request $i ok"; '
    'echo "ERROR request $i failed é" >&2; done'
)


async def test_otlp_every_field_as_stored_a_400_is_a_gap_and_a_429_is_waited_out(
    tmp_path: Path, containers: Containers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_OTLP_TOKEN", "Bearer s3cret-token")
    async with HttpReceiver(
        required_headers={"Authorization": "Bearer s3cret-token"},
        refuse=lambda body: b"POISON" in body,  # one record it cannot take: the whole request
    ) as rx:
        rx.answer(429, headers={"Retry-After": "1"})  # the first batch: later, please
        rx.answer(301, headers={"Location": "http://elsewhere/"})  # about the receiver: again
        config = forward_config(name="otel", kind="otlp", url=rx.otlp_url, start="stored",
                                linger="50ms", batch_lines=BATCH)  # fmt: skip
        config += '[forward.headers_env]\nAuthorization = "TEST_OTLP_TOKEN"\n'
        proc = start_agent_process(tmp_path, extra_config=config)
        cid = containers.run("otel", f"echo POISON; {LEVELED}", "--label",
                             "logagent.format=auto")  # fmt: skip
        await anyio.to_thread.run_sync(containers.wait, "otel")
        url = f"sqlite:///{tmp_path}/logs.db"
        await until_reached(lambda: len(store_rows(url, cid)), 6001)
        rows = store_rows(url, cid)
        await rx.wait_for(lambda: len(rx.otlp_records()) >= len(rows) - 1)  # all but one
        await anyio.sleep(1)
        stop_process(proc)
    records = rx.otlp_records()
    got = {int(r["attributes"]["log.record.uid"].rsplit(":", 1)[1]): r for r in records}
    assert len(got) == len(records)  # nothing sent twice
    refused = sorted(set(rows) - set(got))
    assert [rows[i][2] for i in refused] == ["POISON"]  # it alone, not its batch
    for row_id, r in got.items():
        stream, ns, message, level = rows[row_id]
        assert r["resource"]["host.name"] == "test-host"
        assert r["resource"]["container.id"] == cid
        assert r["resource"]["container.name"] == f"{containers.prefix}-otel"
        assert r["resource"]["container.image.name"]
        assert (r["time_unix_nano"], r["body"], r["attributes"]["log.iostream"]) == (
            ns, message, stream,
        )  # fmt: skip
        assert r["severity_number"] == SEVERITY[level] and r["observed_time_unix_nano"] > ns
    said = [g["reason"] for g in gaps_cli(tmp_path, "--forward", "otel")]
    assert len(said) == 1 and "1 lines refused" in said[0]
    assert "HTTP 400 a record it cannot take" in said[0]
    assert gaps_cli(tmp_path) == []  # not a loss of the store's
    log = (tmp_path / "agent.log").read_text()
    assert "s3cret" not in log and "HTTP 429" in log  # the 301 after it: tried again too


async def test_loki_push_labels_and_metadata_as_stored(
    tmp_path: Path, containers: Containers
) -> None:
    async with HttpReceiver() as rx:
        config = forward_config(name="loki", kind="loki", url=rx.loki_url, start="stored",
                                linger="50ms", min_level="error")  # fmt: skip
        proc = start_agent_process(tmp_path, extra_config=config)
        cid = containers.run("loki", LEVELED, "--label", "logagent.format=auto")
        await anyio.to_thread.run_sync(containers.wait, "loki")
        url = f"sqlite:///{tmp_path}/logs.db"
        await until_reached(lambda: len(store_rows(url, cid)), 6000)
        await rx.wait_for(lambda: len(rx.loki_entries()) >= 3000)
        await anyio.sleep(1)
        stop_process(proc)
    rows = store_rows(url, cid)
    errors = {i: r for i, r in rows.items() if r[3] == 5}
    entries = rx.loki_entries()
    assert len(entries) == len(errors) == 3000  # min_level: only the errors
    for e in entries:
        row_id = int(e["metadata"]["id"].rsplit(":", 1)[1])
        stream, ns, message, _ = errors[row_id]
        assert e["labels"] == {"host": "test-host", "container": f"{containers.prefix}-loki",
                               "stream": stream}  # fmt: skip
        assert (e["ts"], e["line"], e["metadata"]["level"]) == (ns, message, "error")


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_lines_retention_deletes_before_they_are_sent_are_a_gap_of_the_destination(
    tmp_path: Path, containers: Containers, backend: str, request: pytest.FixtureRequest
) -> None:
    """The destination cannot be written (its folder is missing) while retention (1 s)
    deletes the lines: what it never got is recorded as its gap, per container; once it can
    be written, it gets what is still stored. Every line is one or the other."""
    sqlite = f"sqlite:///{tmp_path}/logs.db"
    url = sqlite if backend == "sqlite" else request.getfixturevalue("pg_url")
    out = tmp_path / "later" / "out.ndjson"
    config = forward_config(name="file", kind="ndjson", path=str(out), start="stored",
                            linger="50ms")  # fmt: skip
    config += '[retention]\nmax_age = "1s"\ninterval = "1s"\n'
    proc = start_agent_process(tmp_path, url, extra_config=config)
    cid = containers.run("aged", "seq 1 2000; sleep 4; seq 2001 2500; sleep 600")
    await eventually(lambda: len(gaps_cli(tmp_path, "--forward", "file")) > 0, limit=60)
    await eventually(lambda: stored(url, cid) >= 500, limit=60)  # the later lines
    out.parent.mkdir()
    await until_reached(lambda: len(ndjson_records(out)), 1)
    await anyio.sleep(2)
    stop_process(proc)
    sent = {int(r["message"]) for r in ndjson_records(out)}
    lost = sum(
        int(g["reason"].split(" lines removed by retention")[0].rsplit(": ", 1)[1])
        for g in gaps_cli(tmp_path, "--forward", "file")
    )
    # Every line is sent or in a gap (a batch in flight when its rows were deleted: both).
    assert lost > 0 and len(sent) + lost >= 2500 and sent <= set(range(1, 2501)), (len(sent), lost)
    assert gaps_cli(tmp_path) == []  # the store lost nothing it was not told to drop


async def test_a_line_longer_than_rsyslog_takes_cannot_forge_a_message_of_its_own(
    tmp_path: Path, containers: Containers
) -> None:
    """rsyslog (its default maxMessageSize, 8 KiB) cuts a longer message and reads its rest
    as a message of its own: a local user's line padded past it could forge one from any
    host and program (a review's finding, when frames were cut at 64 KiB). By default a
    message is cut at 8 KiB: each line arrives as one message, from its container."""
    require_or_skip(receiver_problem())
    forged = "<34>1 2024-01-01T00:00:00.000000Z bastion sshd 4242 - - Accepted password for root"
    script = (
        "; ".join(
            f'pad=$(head -c {n} /dev/zero | tr "\\0" x); echo "$pad{forged}"'
            for n in (8000, 9000, 20000)
        )
        + "; echo end"
    )
    with RsyslogReceiver(max_message_size="8k") as rsyslog:
        host, port = rsyslog.address
        config = forward_config(name="siem", kind="syslog", address=f"{host}:{port}")
        proc = start_agent_process(tmp_path, extra_config=config)
        cid = containers.run("forger", script)
        await until_reached(lambda: sum(m["msg"] == "end" for m in rsyslog.messages()), 1)
        stop_process(proc)
        got = rsyslog.messages()
    assert [m["procid"] for m in got] == [cid[:12]] * 4, [m["hostname"] for m in got]
    assert all(b'truncated="true"' in m["structured-data"].encode() for m in got[:3])
    assert all(len(m["msg"].encode()) < 8192 for m in got)


async def test_syslog_over_tls_verified_against_its_ca(
    tmp_path: Path, containers: Containers
) -> None:
    require_or_skip(receiver_problem(tls=True))
    with RsyslogReceiver(tls=True) as rsyslog:
        host, port = rsyslog.address
        config = forward_config(name="siem", kind="syslog", address=f"{host}:{port}", tls=True,
                                ca_file=str(rsyslog.ca_file), start="stored")  # fmt: skip
        proc = start_agent_process(tmp_path, extra_config=config)
        cid = containers.run("tls", "seq 1 2000")
        await anyio.to_thread.run_sync(containers.wait, "tls")
        await until_reached(lambda: len(rsyslog.messages()), 2000)
        stop_process(proc)
        counts = assert_each_line_once_in_order(syslog_records(rsyslog), cid)
    assert set(counts.values()) == {1}


async def test_an_otlp_partial_success_is_a_gap_of_the_destination_not_silence(
    tmp_path: Path, containers: Containers
) -> None:
    """A 200 whose body says some records were rejected (which ones, it does not say): the
    batch is passed, and its lines are recorded as what may be missing."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

    answer = ExportLogsServiceResponse()
    answer.partial_success.rejected_log_records = 3
    answer.partial_success.error_message = "3 bodies too long"
    async with HttpReceiver() as rx:
        rx.answer(200, headers={"Content-Type": "application/x-protobuf"},
                  body=answer.SerializeToString())  # fmt: skip
        config = forward_config(name="otel", kind="otlp", url=rx.otlp_url, start="stored",
                                linger="50ms")  # fmt: skip
        proc = start_agent_process(tmp_path, extra_config=config)
        cid = containers.run("partial", "seq 1 300")
        await anyio.to_thread.run_sync(containers.wait, "partial")
        await rx.wait_for(lambda: len(rx.otlp_records()) >= 300)
        await eventually(lambda: len(gaps_cli(tmp_path, "--forward", "otel")) > 0)
        stop_process(proc)
    (gap,) = gaps_cli(tmp_path, "--forward", "otel")
    assert gap["container_id"] == cid
    assert (
        "may be among" in gap["reason"]
        and "3 records rejected (3 bodies too long)" in gap["reason"]
    )
