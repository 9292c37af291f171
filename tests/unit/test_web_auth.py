"""The viewer's access check (agent/web/auth.py), without a server: the same hashing for a
name that is not in the users file, hashing on worker threads (a bounded number), and failed
logins limited per client and per user name. Timing is checked by what is computed, not by a
clock; the limits run on a clock of the test's own."""

from __future__ import annotations

import threading
from base64 import b64encode

import anyio
import pytest

from agent.web import auth
from agent.web.auth import ALLOWED, DENIED, Access, FailureLimit, Verdict, client_key

pytestmark = [pytest.mark.anyio]

ITERATIONS = 1000


def basic(name: str, password: str) -> str:
    return "Basic " + b64encode(f"{name}:{password}".encode()).decode()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Hashes:
    """Every PBKDF2 computed: its iterations, salt length and thread."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[int, int, int]] = []
        real = auth._pbkdf2

        def counted(password: bytes, salt: bytes, iterations: int) -> bytes:
            self.calls.append((iterations, len(salt), threading.get_ident()))
            return real(password, salt, iterations)

        monkeypatch.setattr(auth, "_pbkdf2", counted)


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> Hashes:
    return Hashes(monkeypatch)


USERS = {  # made before any test counts the hashes
    "ann": auth.hash_password("right", iterations=ITERATIONS),
    "bob": auth.hash_password("other", iterations=ITERATIONS),
}


def users() -> dict[str, str]:
    return dict(USERS)


def access(
    clock: Clock | None = None, burst: int = 5, hashing_threads: int = auth.HASHING_THREADS
) -> Access:
    limit = FailureLimit(burst, 60.0, clock=clock or Clock())
    return Access(users=users(), failures=limit, hashing_threads=hashing_threads)


async def test_an_unknown_name_costs_the_same_hash_as_a_known_one(hashes: Hashes) -> None:
    guard = access()
    assert await guard.check(basic("ann", "wrong"), None, "10.0.0.1") == DENIED
    known = [c[:2] for c in hashes.calls]
    hashes.calls.clear()
    assert await guard.check(basic("nobody", "wrong"), None, "10.0.0.2") == DENIED
    unknown = [c[:2] for c in hashes.calls]
    assert known == unknown == [(ITERATIONS, 16)]  # one PBKDF2, as many iterations


def test_the_decoy_has_the_most_iterations_of_the_file_and_matches_nothing() -> None:
    mixed = {
        "a": auth.hash_password("x", iterations=1000),
        "b": auth.hash_password("y", iterations=3000),
    }
    decoy = auth.decoy_hash(mixed)
    assert decoy.split("$")[:2] == [auth.SCHEME, "3000"]
    assert auth.decoy_hash({}).split("$")[1] == str(auth.ITERATIONS)
    assert not auth._verify("", decoy) and not auth._verify("x", decoy)


async def test_passwords_are_hashed_on_a_worker_thread_not_the_event_loop(
    hashes: Hashes,
) -> None:
    guard = access()
    assert await guard.check(basic("ann", "right"), None, "10.0.0.1") == ALLOWED
    assert await guard.check(basic("nobody", "x"), None, "10.0.0.2") == DENIED
    loop = threading.get_ident()
    assert [c[2] != loop for c in hashes.calls] == [True, True]


async def test_hashing_holds_at_most_its_threads_while_the_rest_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    release = threading.Event()
    lock = threading.Lock()
    inside = [0, 0]  # now, most at once

    def blocked(password: bytes, salt: bytes, iterations: int) -> bytes:
        with lock:
            inside[0] += 1
            inside[1] = max(inside[1], inside[0])
        release.wait(60)
        with lock:
            inside[0] -= 1
        return b""

    monkeypatch.setattr(auth, "_pbkdf2", blocked)
    guard = access(hashing_threads=2)
    verdicts: list[Verdict] = []

    async def attempt(n: int) -> None:
        verdicts.append(await guard.check(basic(f"user{n}", "x"), None, f"10.0.0.{n}"))

    try:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for n in range(6):
                    tg.start_soon(attempt, n)
                # until two hash and four wait for a thread (threads and the limiter's figures:
                # nothing to wait on but their progress)
                while inside[0] < 2 or guard.hashing.statistics().tasks_waiting < 4:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
                assert inside == [2, 2]
                release.set()
    finally:
        release.set()  # a failed assertion leaves no thread waiting
    assert verdicts == [DENIED] * 6 and inside[1] == 2


async def test_a_client_that_keeps_failing_waits_without_hashing(hashes: Hashes) -> None:
    clock = Clock()
    guard = access(clock, burst=3)  # one attempt back every 20 s
    for name in ("ann", "bob", "nobody"):
        assert await guard.check(basic(name, "wrong"), None, "10.0.0.1") == DENIED
    assert len(hashes.calls) == 3
    assert await guard.check(basic("ann", "wrong"), None, "10.0.0.1") == Verdict(False, 20)
    # the right password too: else a right guess would stand out among the refused ones
    assert await guard.check(basic("ann", "right"), None, "10.0.0.1") == Verdict(False, 20)
    assert len(hashes.calls) == 3  # refused before any hashing
    clock.now += 15
    assert (await guard.check(basic("ann", "right"), None, "10.0.0.1")).retry_after == 5
    clock.now += 5
    assert await guard.check(basic("ann", "right"), None, "10.0.0.1") == ALLOWED
    assert await guard.check(basic("bob", "other"), None, "10.0.0.9") == ALLOWED


async def test_a_name_tried_from_many_clients_waits_without_hashing(hashes: Hashes) -> None:
    guard = access(burst=3)
    for n in range(3):
        assert await guard.check(basic("ann", "wrong"), None, f"10.0.1.{n}") == DENIED
    assert (await guard.check(basic("ann", "right"), None, "10.0.1.9")).retry_after == 20
    assert len(hashes.calls) == 3
    assert await guard.check(basic("bob", "other"), None, "10.0.1.9") == ALLOWED  # others not


async def test_a_logged_in_user_stays_in_while_her_name_is_tried_elsewhere(
    hashes: Hashes,
) -> None:
    guard = access(burst=3)
    assert await guard.check(basic("ann", "right"), None, "10.0.0.1") == ALLOWED
    for n in range(5):
        await guard.check(basic("ann", "guess"), None, f"10.0.2.{n}")
    before = len(hashes.calls)
    for _ in range(10):  # verified once: no hashing per request, no limit on her name
        assert await guard.check(basic("ann", "right"), None, "10.0.0.1") == ALLOWED
    assert len(hashes.calls) == before


async def test_a_right_password_logs_in_and_gives_its_attempt_back(hashes: Hashes) -> None:
    guard = access(burst=3)
    for _ in range(2):
        assert await guard.check(basic("ann", "wrong"), None, "10.0.0.1") == DENIED
    assert await guard.check(basic("ann", "right"), None, "10.0.0.1") == ALLOWED
    assert await guard.check(basic("bob", "wrong"), None, "10.0.0.1") == DENIED  # the third
    assert (await guard.check(basic("bob", "other"), None, "10.0.0.1")).retry_after > 0


async def test_showing_nothing_or_garbage_costs_no_hashing(hashes: Hashes) -> None:
    guard = access(burst=3)
    for _ in range(10):
        assert await guard.check(None, None, "10.0.0.1") == DENIED  # not even a failure
    assert await guard.check("Basic !!!", None, "10.0.0.1") == DENIED
    assert await guard.check("Basic " + b64encode(b"\xff:x").decode(), None, "10.0.0.1") == DENIED
    assert hashes.calls == []


async def test_wrong_tokens_count_as_failures_but_a_stale_cookie_without_a_token_not() -> None:
    limit = FailureLimit(2, 60.0, clock=Clock())
    guard = Access(token="t" * 20, failures=limit)
    assert guard.check_token("wrong", "10.0.0.1") == DENIED
    assert await guard.check("Bearer wrong", None, "10.0.0.1") == DENIED
    assert guard.check_token("t" * 20, "10.0.0.1").retry_after == 30
    assert await guard.check(None, "t" * 20, "10.0.0.1") == Verdict(False, 30)
    assert await guard.check("Bearer " + "t" * 20, None, "10.0.0.2") == ALLOWED
    users_only = Access(users=users(), failures=FailureLimit(1, 60.0, clock=Clock()))
    for _ in range(3):  # a cookie another viewer on this host set is not a guess here
        assert await users_only.check(None, "some-cookie", "10.0.0.1") == DENIED
    assert await users_only.check(basic("ann", "right"), None, "10.0.0.1") == ALLOWED


def test_failures_are_remembered_for_a_bounded_number_of_keys() -> None:
    limit = FailureLimit(1, 60.0, tracked=2, clock=Clock())
    for key in ("a", "b", "c"):
        limit.charge(key)
    assert limit.retry_after("a") == 0  # the longest idle is forgotten
    assert limit.retry_after("b") > 0 and limit.retry_after("c") > 0
    limit.refund("c")
    assert limit.retry_after("c") == 0


def test_an_ipv6_client_counts_by_its_64() -> None:
    assert client_key("2001:db8:1:2::1") == client_key("2001:db8:1:2:ffff::9")
    assert client_key("2001:db8:1:2::1") != client_key("2001:db8:1:3::1")
    assert client_key("::ffff:10.0.0.1") == client_key("10.0.0.1") == "client 10.0.0.1"
    assert client_key(None) == "client ?"
