"""Two real PostgreSQL 15 clusters with streaming replication, made by the test that uses them:
a primary and a hot standby on loopback, for failover tests (the primary killed, the standby
promoted, what the agent wrote after the standby stopped hearing lost for real).

Synchronous (a thread, or anyio.to_thread from async tests). Needs root (the clusters run as
the postgres user, via su, as tests/pg-up.sh's does) and Debian's PostgreSQL 15 binaries.
Every wait has a limit; long waits end only when nothing moves for a while (a busy machine).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from tests.conftest import free_port

BIN = Path("/usr/lib/postgresql/15/bin")
STANDBY_NAME = "standby"  # the standby's application_name: what the primary waits for if sync

_PRIMARY_CONF = """
# tests/pg_pair.py: a replicated pair for failover tests
listen_addresses = '127.0.0.1'
max_connections = 200
shared_buffers = 32MB
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
wal_keep_size = '256MB'
hot_standby = on
fsync = off
synchronous_commit = on
"""
_HBA = """
host all         postgres 127.0.0.1/32 trust
host replication postgres 127.0.0.1/32 trust
"""


def pair_problem() -> str | None:
    """Why no pair can be made here (no PostgreSQL 15, not root), or None."""
    missing = [b for b in ("initdb", "pg_ctl", "pg_basebackup", "psql") if not (BIN / b).exists()]
    if missing:
        return f"no PostgreSQL 15 binaries ({', '.join(missing)}) in {BIN}: run tests/pg-up.sh"
    if os.geteuid() != 0:
        return "a replicated pair needs root (its clusters run as the postgres user)"
    return None


class PsqlError(RuntimeError):
    """psql failed: the statement's error, or no server."""


def psql(port: int, sql: str, db: str = "postgres", timeout: float = 60) -> str:
    """Output of `sql` (unaligned, tuples only) on 127.0.0.1:`port`; PsqlError if it failed,
    subprocess.TimeoutExpired if it took longer than `timeout` (psql is then killed)."""
    done = subprocess.run(
        [str(BIN / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
         "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", db, "-c", sql],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "PGCONNECT_TIMEOUT": "10"}, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise PsqlError(f"psql on port {port}: {done.stderr.strip()}")
    return done.stdout.strip()


def wait_for(
    what: str,
    probe: Callable[[], tuple[bool, object]],
    *,
    stall: float = 60,
    limit: float = 600,
    interval: float = 0.1,
) -> None:
    """Poll `probe` (done?, progress marker) until done. TimeoutError once the marker has not
    changed for `stall` s (a slow machine still moves), or after `limit` s in all."""
    start = since = time.monotonic()
    seen: object = None
    while True:
        done, progress = probe()
        if done:
            return
        now = time.monotonic()
        if progress != seen:
            seen, since = progress, now
        if now - since > stall or now - start > limit:
            raise TimeoutError(f"{what}: not after {now - start:.0f} s (last seen: {seen!r})")
        time.sleep(interval)


def _try(sql: Callable[[], str]) -> str | None:
    """A query's output, or None while the server cannot answer (starting, stopping, down)."""
    try:
        return sql()
    except (PsqlError, subprocess.TimeoutExpired):
        return None


# Processes, from /proc: a cluster's are its postmaster and the postmaster's children.


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time) of a live process; None once it is gone or a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    if fields[0] in "ZX":
        return None
    return fields[0], int(fields[1]), int(fields[19])


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid in _all_pids():
        if (st := _stat(pid)) is not None:
            children.setdefault(st[1], []).append(pid)
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _signal(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _wait_gone(pids: set[int], what: str, stall: float = 30) -> None:
    wait_for(what, lambda: (not {p for p in pids if _stat(p)}, None), stall=stall)


def _kill_tree(root: int) -> None:
    """SIGKILL a postmaster and all its children. Frozen first, so that it cannot start new
    ones (a crash restart) between the look at its children and the kill."""
    _signal([root], signal.SIGSTOP)
    wait_for("postmaster stopped", lambda: ((_stat(root) or ("T",))[0] in "Tt", None), stall=10)
    pids = _descendants(root) | {root}
    _signal(pids, signal.SIGKILL)
    _wait_gone(pids, f"processes of postmaster {root} gone")


@dataclass
class _Cluster:
    name: str  # primary, standby
    data: Path
    log: Path
    port: int = 0

    def postmaster(self) -> int | None:
        """The running postmaster's pid (from postmaster.pid), or None."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split("\n")[0])
        except (OSError, ValueError):
            return None
        return pid if _stat(pid) else None

    def shm_id(self) -> int | None:
        """The SysV shared memory id in postmaster.pid (a postmaster killed leaves it behind)."""
        try:
            lines = (self.data / "postmaster.pid").read_text().split("\n")
            return int(lines[6].split()[1])
        except (OSError, ValueError, IndexError):
            return None

    def children(self, title: str) -> set[int]:
        """The postmaster's children whose process title starts with `title` (walreceiver)."""
        pm = self.postmaster()
        found: set[int] = set()
        for pid in _descendants(pm) if pm else ():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.startswith(f"postgres: {title}".encode()):
                found.add(pid)
        return found


class ReplicatedPair:
    """A primary and a streaming hot standby, each a fresh cluster in a temp dir, on a free
    loopback port, removed with all its processes on exit. `sync`: commits on the primary
    wait until the standby has flushed their WAL (synchronous_standby_names)."""

    def __init__(self, *, sync: bool = False) -> None:
        self.sync = sync
        self.root = Path()
        self._primary = _Cluster("primary", Path(), Path())
        self._standby = _Cluster("standby", Path(), Path())
        self._paused: set[int] = set()

    # -- life cycle

    def __enter__(self) -> ReplicatedPair:
        # Short, under /tmp: the unix socket (in the data dir) has a 107-byte path limit.
        self.root = Path(tempfile.mkdtemp(prefix="logagent-pgpair-", dir="/tmp"))
        shutil.chown(self.root, "postgres", "postgres")
        self.root.chmod(0o700)
        self._primary = _Cluster("primary", self.root / "primary", self.root / "primary.log")
        self._standby = _Cluster("standby", self.root / "standby", self.root / "standby.log")
        try:
            self._make_primary()
            self._make_standby()
        except BaseException:
            self._clean_up()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._clean_up()

    def _as_postgres(self, what: str, args: list[str], timeout: float = 180) -> None:
        """Run a PostgreSQL program as the postgres user. Its output goes to a file, never to
        a pipe: a postmaster it starts inherits it, and a pipe would stay open until it ends."""
        out = self.root / f"{what}.out"
        with out.open("ab") as sink:
            done = subprocess.run(
                ["su", "postgres", "-c", shlex.join(args)],
                stdin=subprocess.DEVNULL, stdout=sink, stderr=sink,
                cwd=self.root, timeout=timeout, check=False,
            )  # fmt: skip
        if done.returncode != 0:
            tail = out.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{what} failed ({done.returncode}): {tail}")

    def _make_primary(self) -> None:
        p = self._primary
        self._as_postgres(
            "initdb",
            [str(BIN / "initdb"), "-D", str(p.data), "-A", "trust", "-U", "postgres",
             "-E", "UTF8", "--no-sync"],
        )  # fmt: skip
        with (p.data / "postgresql.conf").open("a") as conf:
            conf.write(_PRIMARY_CONF)
        with (p.data / "pg_hba.conf").open("a") as hba:
            hba.write(_HBA)
        self._start(p)

    def _make_standby(self) -> None:
        p, s = self._primary, self._standby
        self._as_postgres(
            "basebackup",
            [str(BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(p.port), "-U", "postgres",
             "-D", str(s.data), "-R", "-X", "stream", "-c", "fast", "--no-sync"],
            timeout=300,
        )  # fmt: skip
        # -R wrote a primary_conninfo; the later line wins. Named, so the primary can wait
        # for this standby by name; never a sync standby itself (once promoted, alone).
        conninfo = f"host=127.0.0.1 port={p.port} user=postgres application_name={STANDBY_NAME}"
        with (s.data / "postgresql.auto.conf").open("a") as conf:
            conf.write(f"primary_conninfo = '{conninfo}'\nsynchronous_standby_names = ''\n")
        self._start(s)
        state = "sync" if self.sync else "async"
        if self.sync:
            # Only now: pg_basebackup's own WAL stream would have been a sync standby too.
            psql(p.port, f"ALTER SYSTEM SET synchronous_standby_names = '{STANDBY_NAME}'")
            psql(p.port, "SELECT pg_reload_conf()")

        def streaming() -> tuple[bool, object]:
            row = _try(
                lambda: psql(
                    p.port,
                    "SELECT state || ' ' || sync_state FROM pg_stat_replication "
                    f"WHERE application_name = '{STANDBY_NAME}'",
                )
            )
            return row == f"streaming {state}", row

        wait_for(f"standby streaming ({state})", streaming, stall=120)

    def _start(self, cluster: _Cluster) -> None:
        """pg_ctl start on a free port; another port if that one was taken meanwhile."""
        for attempt in range(3):
            cluster.port = free_port()
            opts = f"-p {cluster.port} -k {cluster.data}"
            try:
                self._as_postgres(
                    f"start-{cluster.name}",
                    [str(BIN / "pg_ctl"), "-D", str(cluster.data), "-l", str(cluster.log),
                     "-w", "-t", "120", "-o", opts, "start"],
                )  # fmt: skip
                return
            except RuntimeError:
                log = cluster.log.read_text(errors="replace") if cluster.log.exists() else ""
                if attempt == 2 or "could not bind" not in log:
                    raise RuntimeError(f"{cluster.name} did not start: {log[-2000:]}") from None

    def _clean_up(self) -> None:
        """Stop both clusters, kill whatever of them is left, free their shared memory,
        remove the dirs. Errors are ignored: this runs after failures too."""
        if self.root == Path():
            return
        _signal(self._paused, signal.SIGCONT)  # a stopped process cannot even die of SIGQUIT
        self._paused.clear()
        shm = [c.shm_id() for c in (self._primary, self._standby)]
        for cluster in (self._primary, self._standby):
            if cluster.postmaster() is not None:
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    self._as_postgres(
                        f"stop-{cluster.name}",
                        [str(BIN / "pg_ctl"), "-D", str(cluster.data), "-w", "-t", "60",
                         "stop", "-m", "immediate"],
                        timeout=90,
                    )  # fmt: skip
        # Left over: a postmaster that did not stop, its children, a program that timed out
        # (its command line names our dir).
        marker = str(self.root).encode()
        for pid in _all_pids():
            try:
                mine = marker in Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if mine and _stat(pid) and pid != os.getpid():
                with contextlib.suppress(TimeoutError):
                    _kill_tree(pid)
        for shm_id in shm:
            if shm_id is not None and _orphan_segment(shm_id):
                subprocess.run(["ipcrm", "-m", str(shm_id)], capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    # -- addresses

    @property
    def primary_port(self) -> int:
        return self._primary.port

    @property
    def standby_port(self) -> int:
        return self._standby.port

    @staticmethod
    def url(database: str, port: int) -> str:
        return f"postgres://postgres@127.0.0.1:{port}/{database}"

    def primary_url(self, database: str) -> str:
        return self.url(database, self.primary_port)

    def standby_url(self, database: str) -> str:
        return self.url(database, self.standby_port)

    def multi_url(self, database: str) -> str:
        """Both hosts: a client picks whichever accepts writes (libpq, asyncpg)."""
        hosts = f"127.0.0.1:{self.primary_port},127.0.0.1:{self.standby_port}"
        return f"postgres://postgres@{hosts}/{database}?target_session_attrs=read-write"

    # -- data

    def create_database(self, name: str) -> None:
        """CREATE DATABASE on the primary; returns once the standby has it too."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"not a plain database name: {name!r}")
        psql(self.primary_port, f"CREATE DATABASE {name}")
        self.wait_caught_up()
        found = psql(self.standby_port, f"SELECT 1 FROM pg_database WHERE datname = '{name}'")
        assert found == "1", f"standby lacks database {name} after catching up"

    def wait_caught_up(self, stall: float = 60) -> None:
        """Until the standby has replayed all WAL the primary has written so far (a paused
        standby: TimeoutError after `stall` s without progress)."""
        target = psql(self.primary_port, "SELECT pg_current_wal_lsn()")

        def replayed() -> tuple[bool, object]:
            row = _try(
                lambda: psql(
                    self.standby_port,
                    f"SELECT pg_last_wal_replay_lsn() >= '{target}', pg_last_wal_replay_lsn()",
                )
            )
            return (row or "").startswith("t|"), row

        wait_for(f"standby replayed up to {target}", replayed, stall=stall)

    # -- failures

    def pause_replication(self) -> None:
        """SIGSTOP the standby's walreceiver: WAL the primary writes from now on does not
        reach the standby (a sync primary's commits wait) until resume_replication()."""
        s = self._standby
        wait_for("a walreceiver on the standby", lambda: (bool(s.children("walreceiver")), None))
        pids = s.children("walreceiver")
        _signal(pids, signal.SIGSTOP)
        self._paused |= pids
        wait_for(
            "walreceiver stopped",
            lambda: (all((_stat(p) or ("T",))[0] in "Tt" for p in pids), None),
            stall=10,
        )

    def resume_replication(self) -> None:
        """SIGCONT the walreceiver paused: it reads what the primary sent meanwhile, even
        after kill_primary() (that WAL waits in its socket): to lose it, promote() instead."""
        _signal(self._paused, signal.SIGCONT)
        self._paused.clear()

    def kill_primary(self) -> None:
        """kill -9 the primary's postmaster and every child (killed alone, it would leave
        backends and walsenders running); returns once its port refuses connections."""
        pm = self._primary.postmaster()
        if pm is not None:
            _kill_tree(pm)

        def refused() -> tuple[bool, object]:
            try:
                socket.create_connection(("127.0.0.1", self.primary_port), timeout=1).close()
            except OSError:
                return True, None
            return False, None

        wait_for("primary port refusing", refused, stall=30)

    def promote(self) -> None:
        """Promote the standby; returns once it accepts writes.

        A paused walreceiver would read, once resumed, the WAL waiting in its socket, and
        the loss would not be real: it is SIGKILLed instead (the standby restarts its
        processes, replays only the WAL it had, then is promoted). Kill the primary first:
        a live primary would be asked again for the missing WAL."""
        s = self._standby
        if self._paused:
            before = s.children("") - self._paused
            _signal(self._paused, signal.SIGKILL)
            self._paused.clear()
            # Its siblings end (a child killed: the postmaster restarts them all), then a new
            # set recovers the standby up to the WAL on its disk and accepts connections.
            _wait_gone(before, "standby's processes restarted", stall=60)
            wait_for(
                "standby back in recovery",
                lambda: (_try(lambda: psql(s.port, "SELECT pg_is_in_recovery()")) == "t", None),
                stall=120,
            )
        self._as_postgres(
            "promote", [str(BIN / "pg_ctl"), "-D", str(s.data), "-w", "-t", "120", "promote"]
        )
        wait_for(
            "standby promoted",
            lambda: (_try(lambda: psql(s.port, "SELECT pg_is_in_recovery()")) == "f", None),
            stall=60,
        )


def _orphan_segment(shm_id: int) -> bool:
    """Whether SysV segment `shm_id` exists with nobody attached (a killed postmaster's)."""
    try:
        lines = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    except OSError:
        return False
    for line in lines:
        fields = line.split()
        if int(fields[1]) == shm_id:
            return fields[6] == "0"
    return False
