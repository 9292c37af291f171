"""A real rsyslog server for the tests of a syslog forwarder: RFC 5424 messages over TCP with
octet-counted framing (RFC 6587), in the clear or over TLS (RFC 5425).

A reference implementation tells more than a receiver of our own would: what a real server
accepts and how it reads each field. Each receiver is a private `rsyslogd -n` of its own
(tests/receivers-up.sh installs Debian's rsyslog and rsyslog-gnutls): its config, pid file,
work directory, output and log in a temp dir, only imtcp loaded (no imuxsock, no imklog), so it
never touches /etc/rsyslog.conf, /var/log, /dev/log nor the system's rsyslog.

Every message received is written as one JSON line (rsyslog's own JSON escaping) holding the
RFC 5424 fields as rsyslog parsed them, each separately, and the raw message. rsyslog's
defaults that would change a message on the way are turned off (see _CONFIG), so a test can
compare what it sent, byte for byte. Quirks of rsyslog 8.2302 a test may meet:

- NUL bytes are always replaced by the 4 characters "#000", whatever the escaping settings.
- Bytes that are not UTF-8 are written as they are: messages() reads them back as lone
  surrogates (surrogateescape); `.encode("utf-8", "surrogateescape")` gives the bytes.
- More than 6 digits of fractional seconds (RFC 5424 allows 6) come out garbled.
- NILVALUE fields stay "-"; a missing MSG and an empty one both give msg == "".
- A message longer than max_message_size is cut there, and the rest of its frame arrives as
  one more, headerless message: one sent, two received.

Synchronous (call it from a thread, or anyio.to_thread, in async tests). rsyslogd runs as the
caller (root in the test runs; nothing here needs root). Every wait has a limit; long waits end
only when nothing has moved for a while (a busy machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.conftest import free_port

RSYSLOGD = Path("/usr/sbin/rsyslogd")
_GTLS = "lmnsd_gtls.so"  # rsyslog-gnutls: the TLS netstream driver

# The output's keys: rsyslog property names. Values are rsyslog's, as strings ("pri": "14").
FIELDS = (
    "pri",
    "timereported",
    "hostname",
    "app-name",
    "procid",
    "msgid",
    "structured-data",
    "msg",
    "rawmsg",
)

# Why each setting:
# - maxMessageSize: the default (8k) truncates longer messages; it must come before imtcp.
# - net.enableDNS off: no reverse lookup of 127.0.0.1 per connection (slow without DNS).
# - parser.escapeControlCharactersOnReceive / escapeControlCharacterTab off: by default a
#   tab arrives as "#011", any control character as "#ooo".
# - parser.dropTrailingLFOnReception off: by default a message's final LF is dropped.
# - maxFrameSize: an octet count above it (default 200000) is refused as a frame.
# - the input in a ruleset of its own: rsyslog's internal messages (default ruleset) never
#   reach the output; they go to rsyslogd.log with its stderr.
# - main queue: on SIGTERM, time to write out what was received (default 1.5 s) on a busy box.
# - timereported with dateFormat rfc3339: the timestamp as sent, to its precision (the digits
#   of fractional seconds sent, none if none) and its offset ("Z" stays "Z").
# - msg: the MSG part; rsyslog drops only the one SP separating it from STRUCTURED-DATA, so a
#   message's own leading spaces and a UTF-8 BOM stay in it.
_CONFIG = """\
# tests/rsyslog.py: a private receiver for a test
global(
  workDirectory="{work}"
  maxMessageSize="{max_message_size}"
  net.enableDNS="off"
  parser.escapeControlCharactersOnReceive="off"
  parser.escapeControlCharacterTab="off"
  parser.dropTrailingLFOnReception="off"
{tls_global})
main_queue(queue.timeoutShutdown="20000" queue.timeoutActionCompletion="20000")
module(load="imtcp" maxFrameSize="{max_frame_size}"{tls_module})
template(name="logagent_json" type="list" option.jsonf="on") {{
{properties}
}}
ruleset(name="received") {{
  action(type="omfile" file="{output}" template="logagent_json")
}}
input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="received"
      supportOctetCountedFraming="on")
*.* action(type="omfile" file="{internal}")
"""
_TLS_GLOBAL = """\
  defaultNetstreamDriverCAFile="{ca}"
  defaultNetstreamDriverCertFile="{cert}"
  defaultNetstreamDriverKeyFile="{key}"
"""
# anon: the server does not ask for a client certificate (clients still verify the server's).
_TLS_MODULE = ' streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon"'


def receiver_problem(tls: bool = False) -> str | None:
    """Why no receiver can run here (no rsyslogd, no TLS driver), or None: for pytest.skip."""
    if not RSYSLOGD.exists():
        return f"no {RSYSLOGD}: run tests/receivers-up.sh"
    if tls:
        if not list(Path("/usr/lib").glob(f"*/rsyslog/{_GTLS}")):
            return f"no rsyslog TLS driver ({_GTLS}): run tests/receivers-up.sh"
        if shutil.which("openssl") is None:
            return "no openssl CLI to make the test certificates"
    return None


def _quote(value: object) -> str:
    """A value for a double-quoted string in rsyslog's config."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"')


def _make_certs(folder: Path) -> tuple[Path, Path, Path]:
    """A self-signed CA and a server certificate it signed, for 127.0.0.1 and localhost (ECDSA
    P-256: quick to make). Returns (CA file, server cert, server key). Made per receiver: the
    test is then independent of any cert on the machine."""
    ca, ca_key = folder / "ca.pem", folder / "ca.key"
    cert, key, csr = folder / "server.pem", folder / "server.key", folder / "server.csr"
    ext = folder / "server.ext"
    ext.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
    )
    newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    steps = [
        ["openssl", "req", "-x509", "-new", *newkey, "-keyout", ca_key, "-out", ca,
         "-days", "7", "-subj", "/CN=logagent test CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["openssl", "req", "-new", *newkey, "-keyout", key, "-out", csr, "-subj", "/CN=localhost"],
        ["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key,
         "-set_serial", f"0x{os.urandom(8).hex()}", "-days", "7", "-extfile", ext, "-out", cert],
    ]  # fmt: skip
    for step in steps:
        done = subprocess.run(
            [str(a) for a in step], capture_output=True, text=True, timeout=60, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, step[:3]))}: {done.stderr.strip()}")
    return ca, cert, key


def _listening_inodes(port: int) -> set[int]:
    """Inodes of the TCP sockets listening on `port` (any address), from /proc/net/tcp."""
    found: set[int] = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                found.add(int(cols[9]))
    return found


def _socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process `pid` holds open."""
    found: set[int] = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    found.add(int(target[8:-1]))
    return found


def _end(proc: subprocess.Popen[bytes], hard: bool, timeout: float) -> None:
    """Stop rsyslogd: SIGTERM (it writes out what it received, then exits) or SIGKILL; SIGKILL
    anyway if SIGTERM did not end it within `timeout` s."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL if hard else signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def _cleanup(proc_box: list[subprocess.Popen[bytes]], folder: Path) -> None:
    """Last resort (garbage collected, interpreter exit): no rsyslogd nor temp dir left."""
    for proc in proc_box:
        _end(proc, hard=True, timeout=10)
    shutil.rmtree(folder, ignore_errors=True)


class RsyslogReceiver:
    """A private rsyslogd listening on 127.0.0.1:`port` (TLS with `tls`: its CA is `ca_file`).

    Use as a context manager (started on enter; stopped, temp dir removed on exit). stop() and
    start() again keep the port and the output: a receiver down for a while, then back.
    """

    START_TIMEOUT = 30.0  # s for rsyslogd to listen (a busy 2-core machine)
    STOP_TIMEOUT = 30.0  # s for rsyslogd to exit on SIGTERM before SIGKILL

    def __init__(
        self, tls: bool = False, *, max_message_size: str = "1m", max_frame_size: int = 2_000_000
    ) -> None:
        """`max_message_size`: rsyslog's maxMessageSize (longer messages are truncated);
        `max_frame_size`: imtcp's limit on an octet count."""
        self.tls = tls
        self.max_message_size = max_message_size
        self.max_frame_size = max_frame_size
        self.dir = Path(tempfile.mkdtemp(prefix="logagent-rsyslog-"))
        self.output = self.dir / "received.jsonl"  # one JSON object per message
        self.log = self.dir / "rsyslogd.log"  # rsyslogd's stderr and internal messages
        self._port: int | None = None
        self._ca: Path | None = None
        self._cert = self._key = self.dir / "unset"  # the server's, with tls: made on start
        self._proc: subprocess.Popen[bytes] | None = None
        self._procs: list[subprocess.Popen[bytes]] = []  # for the finalizer
        self._parsed: list[dict[str, Any]] = []
        self._offset = 0  # bytes of self.output parsed so far (whole lines only)
        self._finalizer = weakref.finalize(self, _cleanup, self._procs, self.dir)

    # -- what a test uses

    @property
    def port(self) -> int:
        """The TCP port (on 127.0.0.1), the same for the receiver's whole life."""
        if self._port is None:
            raise RuntimeError("receiver never started: no port yet")
        return self._port

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def ca_file(self) -> Path:
        """The CA certificate (PEM) that signed the server's: for a client to verify it."""
        if self._ca is None:
            raise RuntimeError("not a TLS receiver (tls=False), or never started")
        return self._ca

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def messages(self) -> list[dict[str, Any]]:
        """Every message received so far (over all starts), in order: dicts keyed by FIELDS.
        Reads only whole lines: rsyslogd may be writing the next one."""
        with contextlib.suppress(FileNotFoundError), self.output.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
            end = data.rfind(b"\n") + 1  # JSON escapes LF: a raw one ends a message
            for line in data[:end].splitlines():
                text = line.decode("utf-8", "surrogateescape")  # rsyslog passes bad UTF-8 on
                self._parsed.append(json.loads(text))
            self._offset += end
        return list(self._parsed)

    def wait_for(
        self, count: int, stall: float = 60, interval: float = 0.05
    ) -> list[dict[str, Any]]:
        """messages() once there are at least `count`. TimeoutError once their number has not
        grown for `stall` s: a slow machine still makes progress, a lost message never comes."""
        seen, since = -1, time.monotonic()
        while True:
            got = self.messages()
            if len(got) >= count:
                return got
            if len(got) != seen:
                seen, since = len(got), time.monotonic()
            elif time.monotonic() - since > stall:
                state = "running" if self.running else "NOT running"
                raise TimeoutError(
                    f"rsyslog receiver on port {self._port} ({state}): {len(got)} of {count} "
                    f"messages, none new for {stall:.0f} s; its log:\n{self.log_text()}"
                )
            time.sleep(interval)

    def log_text(self, tail: int = 4000, since: int = 0) -> str:
        """The end of rsyslogd's log (stderr and internal messages), from byte `since` of
        its stderr on: for failure messages."""
        parts = []
        with contextlib.suppress(OSError), self.log.open("rb") as f:
            f.seek(since)
            parts.append(f.read().decode(errors="replace"))
        with contextlib.suppress(OSError):
            parts.append((self.dir / "internal.log").read_text(errors="replace"))
        return "".join(parts)[-tail:]

    # -- life

    def start(self) -> None:
        """Start rsyslogd (no-op if running) and return once it listens. The first start picks
        a free port (another if that one is taken meanwhile); later ones reuse it."""
        if self.running:
            return
        if self.tls and self._ca is None:
            self._ca, self._cert, self._key = _make_certs(self.dir)
        attempts = 5 if self._port is None else 1
        for attempt in range(attempts):
            port = self._port if self._port is not None else free_port()
            if self._launch(port):
                self._port = port
                return
            if attempt == attempts - 1:
                raise RuntimeError(f"rsyslogd could not listen on port {port}:\n{self.log_text()}")

    def stop(self, hard: bool = False) -> None:
        """Stop rsyslogd and return once it has exited (its port then refuses connections).
        SIGTERM by default: it stops reading, writes out what it received, closes its
        connections. `hard`: SIGKILL, a crash (what was received but not written is lost)."""
        if self._proc is not None:
            _end(self._proc, hard, self.STOP_TIMEOUT)
            self._procs.remove(self._proc)
            self._proc = None

    def close(self) -> None:
        """Stop rsyslogd and remove the temp dir (its output with it)."""
        try:
            self.stop()
        finally:
            self._finalizer()

    def __enter__(self) -> RsyslogReceiver:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- inside

    def _config(self, port: int) -> str:
        props = "\n".join(
            f'  property(outname="{name}" name="{name}" format="jsonf"'
            + (' dateFormat="rfc3339"' if name == "timereported" else "")
            + ")"
            for name in FIELDS
        )
        tls_global = tls_module = ""
        if self.tls:
            tls_global = _TLS_GLOBAL.format(
                ca=_quote(self._ca), cert=_quote(self._cert), key=_quote(self._key)
            )
            tls_module = _TLS_MODULE
        return _CONFIG.format(
            work=_quote(self.dir),
            max_message_size=_quote(self.max_message_size),
            max_frame_size=int(self.max_frame_size),
            tls_global=tls_global,
            tls_module=tls_module,
            properties=props,
            output=_quote(self.output),
            internal=_quote(self.dir / "internal.log"),
            port=int(port),
        )

    def _launch(self, port: int) -> bool:
        """Run rsyslogd on `port`; True once it listens there, False if it could not bind
        (it then keeps running without the listener: it is stopped)."""
        conf = self.dir / "rsyslog.conf"
        conf.write_text(self._config(port))
        pidfile = self.dir / "rsyslogd.pid"
        pidfile.unlink(missing_ok=True)
        with self.log.open("ab") as log:
            log.write(f"--- rsyslogd on port {port}\n".encode())
            log.flush()
            since = log.tell()  # this start's messages only
            proc = subprocess.Popen(
                [str(RSYSLOGD), "-n", "-f", str(conf), "-i", str(pidfile)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
            )
        self._proc = proc
        self._procs.append(proc)
        deadline = time.monotonic() + self.START_TIMEOUT
        while True:
            if proc.poll() is not None:
                self.stop()
                raise RuntimeError(
                    f"rsyslogd exited ({proc.returncode}) on start:\n{self.log_text(since=since)}"
                )
            if _listening_inodes(port) & _socket_inodes(proc.pid):
                return True
            if "Could not create tcp listener" in self.log_text(since=since):  # runs on anyway
                self.stop()
                return False
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(
                    f"rsyslogd not listening on port {port} after {self.START_TIMEOUT:.0f} s:\n"
                    f"{self.log_text(since=since)}"
                )
            time.sleep(0.02)
