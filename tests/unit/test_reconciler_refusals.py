"""A start Docker refuses for a container on its way out leaves a gap, and a container removed
while the agent was away one gap, however soon listings follow (discovery/reconciler)."""

from __future__ import annotations

from typing import Any

import pytest

from agent.batch import Source
from agent.collectors.records import ContainerRecord, Failure, Registry
from agent.cursor import Cursor
from agent.discovery.reconciler import Reconciler
from agent.discovery.restart_rules import Start
from agent.docker.errors import ContainerNotFound, DockerError, DockerUnavailable
from agent.gaps import REMOVED_BEFORE_READ, REMOVED_WHILE_AWAY
from agent.policy import Policy


class _Refusing:
    """What the reconciler meets in a burst of short-lived --rm containers: dockerd answers
    the log request 500 ("open ...-json.log: no such file or directory") and the container
    is gone by the time it is asked again. Stubs: the fault is a race of dockerd's."""

    def __init__(self) -> None:
        self.gaps: list[tuple[str, str, int | None]] = []

    async def start_docker_collector(self, *args: Any, **kw: Any) -> None:
        raise DockerError("GET logs: Docker answered 500: open x-json.log: no such file")

    async def inspect(self, container_id: str) -> None:
        raise ContainerNotFound(f"no such container: {container_id}")

    async def load_cursor(self, container_id: str) -> Cursor:
        return Cursor({})

    async def record_gap(self, source: Source, reason: str, *, from_ns: int | None) -> None:
        self.gaps.append((source.container_id, reason, from_ns))


async def started(fake: _Refusing, letter: str) -> ContainerRecord:
    """A container's start, as the reconciler makes it, with `fake` for Docker and store."""
    reconciler = Reconciler(
        fake, fake, Registry(), fake, Policy(collect_all=True),  # type: ignore[arg-type]
        initial_tail="all", self_ids=[], scope=None, started_ns=0, last_seen_ns=None,  # type: ignore[arg-type]
    )  # fmt: skip
    rec = ContainerRecord(Source(letter * 64, "short"))
    await reconciler._start(rec, Start(tail="all", follow=True), 123)
    return rec


@pytest.mark.anyio
async def test_a_start_refused_for_a_container_already_gone_records_a_gap() -> None:
    fake = _Refusing()
    rec = await started(fake, "r")
    assert fake.gaps == [("r" * 64, REMOVED_BEFORE_READ, 123)]
    assert rec.failure is not None  # reported, as before


@pytest.mark.anyio
async def test_a_refused_start_whose_check_fails_too_is_reported_not_raised() -> None:
    """The check for a container gone is an inspect: another refusal (a 500) there left the
    reconciler's task, and with it the agent (a review's finding). Not known to be gone: no
    gap, the failure reported."""
    fake = _Refusing()

    async def refused_too(container_id: str) -> None:
        raise DockerError("GET inspect: Docker answered 500: oops")

    fake.inspect = refused_too  # type: ignore[method-assign]
    rec = await started(fake, "s")
    assert fake.gaps == [] and rec.failure is not None


class _Away:
    """A store that shows a container present until its mark commits (here: never, as a
    writer slower than two listings a moment apart), and a daemon that no longer has it."""

    def __init__(self) -> None:
        self.gaps: list[str] = []
        self.marks: list[str] = []

    async def present(self, before_ns: int) -> list[tuple[str, str, str, int | None]]:
        return [("a" * 64, "away", "running", 5)]

    async def inspect(self, container_id: str) -> None:
        raise ContainerNotFound(f"no such container: {container_id}")

    async def record_gap(self, source: Source, reason: str, *, from_ns: int | None) -> None:
        self.gaps.append(reason)

    async def mark(self, source: Source, state: str) -> None:
        self.marks.append(state)


@pytest.mark.anyio
async def test_two_listings_close_together_record_one_gap_of_a_container_removed_away() -> None:
    fake = _Away()
    reconciler = Reconciler(
        fake, fake, Registry(), fake, Policy(collect_all=True),  # type: ignore[arg-type]
        initial_tail="all", self_ids=[], scope=None, started_ns=0, last_seen_ns=None,  # type: ignore[arg-type]
    )  # fmt: skip
    await reconciler._removed_while_away(set(), 10)
    await reconciler._removed_while_away(set(), 20)  # a reconnect: its mark not yet stored
    assert (fake.gaps, fake.marks) == ([REMOVED_WHILE_AWAY], ["removed"])


@pytest.mark.anyio
async def test_a_known_container_without_a_stream_that_is_gone_is_marked_removed() -> None:
    """A --rm container whose stream the daemon's restart cut (a transient failure: its
    record stays) is removed by the daemon as it starts, and no `destroy` survives that
    restart: the next listing marks it removed, with its gap, and forgets its record. One
    whose stream ended on its own is left to that end (its gap and mark may be queued: a
    second gap, a review's finding)."""
    fake = _Away()
    registry = Registry()
    ended = Registry()
    ended.record("a" * 64, "away")  # its stream ended on its own: its end says the rest
    quiet = Reconciler(
        fake, fake, ended, fake, Policy(collect_all=True),  # type: ignore[arg-type]
        initial_tail="all", self_ids=[], scope=None, started_ns=0, last_seen_ns=None,  # type: ignore[arg-type]
    )  # fmt: skip
    await quiet._removed_while_away(set(), 10)
    assert (fake.gaps, fake.marks) == ([], [])
    cut = registry.record("a" * 64, "away")  # its stream cut by the daemon going away
    cut.failure = Failure.of(DockerUnavailable("the daemon went away"))
    reconciler = Reconciler(
        fake, fake, registry, fake, Policy(collect_all=True),  # type: ignore[arg-type]
        initial_tail="all", self_ids=[], scope=None, started_ns=0, last_seen_ns=None,  # type: ignore[arg-type]
    )  # fmt: skip
    await reconciler._removed_while_away(set(), 10)
    assert (fake.gaps, fake.marks) == ([REMOVED_WHILE_AWAY], ["removed"])
    assert registry.get("a" * 64) is None
