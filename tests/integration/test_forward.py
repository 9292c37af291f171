"""Forwarding the committed store (issue 28): to an NDJSON file and to a real rsyslog (imtcp,
RFC 5424 octet-counted, tests/rsyslog.py), each destination from a position of its own.
Every line Docker has arrives, compared line for line with `docker logs -t`; after a
`kill -9` only the batch not yet acknowledged is sent again, with the same ids; a receiver
down for 30 s gets everything once it is back; a fleet's hosts each forward their own.
"""

from __future__ import annotations

import json
import os
import re
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.conftest import (
    RUN_ID,
    SOURCE,
    Containers,
    eventually,
    numbered_bursts,
    query,
    start_agent_process,
    stop_process,
    until_reached,
)
from tests.integration.test_collector import docker_reference
from tests.rsyslog import RsyslogReceiver, receiver_problem

pytestmark = [pytest.mark.anyio, pytest.mark.docker]

BATCH = 500
_SD = re.compile(r'id="(?P<id>[^"]+)" container="(?:[^"\\]|\\.)*" time="(?P<time>[^"]+)"')


@pytest.fixture
def receiver() -> Any:
    if (problem := receiver_problem()) is not None:
        if os.environ.get("CI"):
            raise AssertionError(problem)
        pytest.skip(problem)
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
    try:
        cid = containers.run("forwarded", numbered_bursts(30, 0.2))
        await eventually(lambda: len(ndjson_records(out)) > 8_000, limit=120)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc = start_agent_process(tmp_path, extra_config=config)
        await anyio.to_thread.run_sync(containers.wait, "forwarded")
        await until_reached(lambda: len({r["id"] for r in ndjson_records(out)}), n)
        await anyio.sleep(1)
        stop_process(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    records = ndjson_records(out)
    counts = assert_each_line_once_in_order(records, cid)
    repeated = [i for i, c in counts.items() if c > 1]
    assert all(counts[i] == 2 for i in repeated) and len(repeated) <= BATCH
    assert oct(out.stat().st_mode & 0o777) == "0o600"  # lines may hold secrets


async def test_syslog_to_rsyslog_line_for_line_and_a_receiver_down_30s_loses_nothing(
    tmp_path: Path, containers: Containers, receiver: RsyslogReceiver
) -> None:
    host, port = receiver.address
    config = forward_config(name="siem", kind="syslog", address=f"{host}:{port}",
                            start="stored", linger="50ms", batch_lines=BATCH)  # fmt: skip
    proc = start_agent_process(tmp_path, extra_config=config)
    n = 30_000
    try:
        cid = containers.run("syslogged", numbered_bursts(30, 1.0))  # ~30 s of lines
        await eventually(lambda: len(receiver.messages()) > 3_000, limit=120)
        await anyio.to_thread.run_sync(receiver.stop)
        await anyio.sleep(30)
        await anyio.to_thread.run_sync(receiver.start)
        await anyio.to_thread.run_sync(containers.wait, "syslogged")
        await until_reached(lambda: len({r["id"] for r in syslog_records(receiver)}), n)
        await anyio.sleep(1)
        stop_process(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
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
    try:
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
    finally:
        for proc in fleet:
            if proc.poll() is None:
                proc.kill()
    messages = receiver.messages()
    assert len(messages) == 10_000  # once: no host forwards another's lines
    for h, cid in cids.items():
        mine = [m for m in messages if m["hostname"] == h]
        assert all(m["procid"] == cid[:12] for m in mine)
        records = [r for r in syslog_records(receiver) if r["id"].startswith(f"{h}:")]
        assert_each_line_once_in_order(records, cid)
