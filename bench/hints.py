"""What label hints cost: `python bench/hints.py [--rounds 3] [--lines 1000000]`.

The same stream of Java stack traces (50 lines each: the exception, then 49 `at` frames) is
ingested live by an agent twice per round: once plain (every line a row, levels detected as
always) and once with `logagent.multiline=java` (every trace one row). Printed: the agent's
CPU µs per line read, and lines/s, of each, with the ratio. Target (#17): multiline at most
1.3 times the plain path's CPU per line. Needs what bench/run.py needs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as base

TRACE_LINES = 50


def script(n: int) -> str:
    traces = n // TRACE_LINES
    return (
        "sleep 2; awk 'BEGIN { for (i = 0; i < "
        f'{traces}; i++) {{ print "java.lang.IllegalStateException: boom " i; '
        f"for (j = 1; j < {TRACE_LINES}; j++) "
        'print "\\tat com.example.F" j ".run(F.java:" j ")" } }\''
    )


def create(name: str, text: str, *labels: str) -> str:
    full = f"{base.PREFIX}-{name}"
    base.made.append(full)
    extra = [arg for label in labels for arg in ("--label", label)]
    return base.docker(
        "create", "--network", "none", "--name", full, "--label", base.LABEL, *extra,
        base.IMAGE, "sh", "-c", text,
    ).strip()  # fmt: skip


def one(tmp: Path, name: str, n: int, labels: tuple[str, ...], rows: int) -> tuple[float, float]:
    """(agent CPU µs per line read, lines/s) of one live ingest."""
    agent = base.AgentProcess(tmp, name)
    cid = create(name, script(n), *labels)
    a0 = base.cpu_seconds(agent.proc.pid)
    base.start(cid)
    base.wait_for(lambda: agent.lines(cid) >= rows, 600, step=0.01)
    finished = time.time()
    cpu = 1e6 * (base.cpu_seconds(agent.proc.pid) - a0) / n
    rate = n / (finished - base.first_line_time(cid))
    agent.stop()
    base.remove(f"{base.PREFIX}-{name}")
    return cpu, rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lines", type=int, default=1_000_000)
    args = parser.parse_args()
    n = args.lines // TRACE_LINES * TRACE_LINES
    print(f"hints: {n:,} lines of Java traces ({TRACE_LINES} lines each), live", flush=True)
    cpu: dict[str, list[float]] = {"plain": [], "java": []}
    rate: dict[str, list[float]] = {"plain": [], "java": []}
    try:
        with tempfile.TemporaryDirectory(prefix="logagent-bench-") as folder:
            tmp = Path(folder)
            for r in range(args.rounds):
                for kind, labels, rows in (
                    ("plain", (), n),
                    ("java", ("logagent.multiline=java",), n // TRACE_LINES),
                ):
                    c, s = one(tmp, f"{kind}{r}", n, labels, rows)
                    cpu[kind].append(c)
                    rate[kind].append(s)
                print(
                    f"   round {r + 1}: "
                    + ", ".join(f"{k} {cpu[k][-1]:.2f} µs/line {rate[k][-1]:,.0f}/s" for k in cpu),
                    flush=True,
                )
    finally:
        base.remove(*base.made)
    plain, java = statistics.median(cpu["plain"]), statistics.median(cpu["java"])
    base.report(
        "agent CPU µs per line, multiline=java vs plain",
        f"{java:.2f} ({min(cpu['java']):.2f}–{max(cpu['java']):.2f})",
        f"plain {plain:.2f} ({min(cpu['plain']):.2f}–{max(cpu['plain']):.2f})",
        java / plain,
        "≤ 1.3×",
        java / plain <= 1.3,
    )
    base.report(
        "lines/s, multiline=java vs plain",
        base.spread(rate["java"]),
        base.spread(rate["plain"]),
        statistics.median(rate["java"]) / statistics.median(rate["plain"]),
        "",
        None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
