"""The viewer's figures: `python bench/web.py [--rows 1000000] [--rounds 5]`.

A SQLite store is filled with `--rows` lines of one container (plus 1,000 of another, with a
needle among the big one's), then `logagent web` serves it and Debian's chromium (headless,
Selenium) loads it. Printed, medians of the rounds: time to the first rows (server: the
whole first page; browser: to the load event and to the first line drawn), one scroll-back
page deep in the history, a search over every row, the live tail's delay from a commit to
the line drawn in the browser (p50/p99 of 200 lines), and the page's weight. Targets
(#18): first rows < 200 ms server-side, live p99 < 500 ms, page weight < 200 KB.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from agent.batch import LineBatch, Source  # noqa: E402
from agent.storage import LogStorage  # noqa: E402
from agent.timestamps import format_timestamp  # noqa: E402

T0 = time.time_ns() - 3600 * 1_000_000_000


async def fill(url: str, rows: int) -> None:
    async with LogStorage(url, host="bench") as storage:
        big, small = Source("b" * 64, "big"), Source("s" * 64, "small")
        for at in range(0, rows, 10_000):
            batch = LineBatch(big)
            for i in range(at, min(at + 10_000, rows)):
                ns = T0 + i * 1000
                text = "needle in the history" if i == rows // 3 else f"line {i} " + "x" * 80
                batch.append("stdout", ns, format_timestamp(ns), text, 0, len(text))
            await storage.write(batch)
        batch = LineBatch(small)
        for i in range(1000):
            ns = T0 + i * 1_000_000
            batch.append("stdout", ns, format_timestamp(ns), f"small {i}", 0, 8)
        await storage.write(batch)
        await storage.flush()


async def live(url: str, count: int, stamps: list[float]) -> None:
    """Rows committed one at a time, the wall-clock time of each commit kept."""
    async with LogStorage(url, host="bench") as storage:
        source = Source("s" * 64, "small")
        for i in range(count):
            ns = time.time_ns()
            text = f"live {i}"
            batch = LineBatch(source)
            batch.append("stdout", ns, format_timestamp(ns), text, 0, len(text))
            await storage.write(batch)
            await storage.flush()
            stamps.append(time.time())
            await asyncio.sleep(0.05)


def fetch_ms(url: str) -> tuple[float, int]:
    started = time.perf_counter()
    body = urllib.request.urlopen(url, timeout=120).read()
    return (time.perf_counter() - started) * 1000, len(body)


def driver():  # type: ignore[no-untyped-def]
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,900"):  # fmt: skip
        options.add_argument(arg)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def report(what: str, values: list[float], target: str = "", ok: bool | None = None) -> None:
    mark = "" if ok is None else (" PASS" if ok else " MISS")
    print(f"  {what}: {statistics.median(values):,.1f} ({min(values):,.1f}–{max(values):,.1f})"
          f" {target}{mark}", flush=True)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="logagent-bench-web-") as folder:
        url = f"sqlite:///{folder}/logs.db"
        started = time.perf_counter()
        asyncio.run(fill(url, args.rows))
        print(
            f"web: {args.rows:,} rows stored in {time.perf_counter() - started:.0f} s", flush=True
        )
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        config = Path(folder) / "web.toml"
        config.write_text(f'[storage]\ndb_url = "{url}"\n[web]\nport = {port}\n')
        web = subprocess.Popen([sys.executable, "-m", "agent", "web", "--config", str(config)],
                               cwd=ROOT, stderr=subprocess.DEVNULL)  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(100):
                try:
                    urllib.request.urlopen(base + "/api/containers", timeout=2)
                    break
                except OSError:
                    time.sleep(0.1)
            big = "b" * 64
            first = [fetch_ms(f"{base}/api/lines?c={big}&limit=200")[0] for _ in range(args.rounds)]
            report("first page (200 rows) of 1M, server ms", first, "< 200 ms",
                   statistics.median(first) < 200)  # fmt: skip
            deep = f"{T0 + (args.rows // 2) * 1000}:{args.rows // 2}"
            scroll = [fetch_ms(f"{base}/api/lines?c={big}&limit=200&before={deep}")[0]
                      for _ in range(args.rounds)]  # fmt: skip
            report("scroll-back page from the middle, server ms", scroll)
            search = [fetch_ms(f"{base}/api/lines?c={big}&q=needle&limit=200")[0]
                      for _ in range(args.rounds)]  # fmt: skip
            report(f"search over {args.rows:,} rows (SQLite: read and matched here), ms", search)
            merged = [fetch_ms(f"{base}/api/lines?c={big}&c={'s' * 64}&limit=200")[0]
                      for _ in range(args.rounds)]  # fmt: skip
            report("first page of two containers merged, server ms", merged)
            weight = sum(fetch_ms(base + p)[1] for p in ("/", "/static/app.js", "/static/app.css"))
            mark = "PASS" if weight < 200 * 1024 else "MISS"
            print(f"  page weight: {weight / 1024:.1f} KB < 200 KB {mark}")
            d = driver()
            try:
                loads, drawn = [], []
                for _ in range(args.rounds):
                    t = time.perf_counter()
                    d.get(f"{base}/?c={big}")
                    while not d.execute_script("return document.querySelector('#lines .line')"):
                        time.sleep(0.005)
                    drawn.append((time.perf_counter() - t) * 1000)
                    loads.append(d.execute_script(
                        "const n = performance.getEntriesByType('navigation')[0];"
                        "return n.loadEventEnd - n.startTime"))  # fmt: skip
                report("browser load event, ms", loads)
                report("browser: first line drawn, ms (from the request)", drawn)
                d.get(f"{base}/?c={'s' * 64}")
                time.sleep(1.5)
                d.execute_script(
                    "window.seen = {}; new MutationObserver(ms => { for (const m of ms) "
                    "for (const n of m.addedNodes) { const t = n.textContent || '';"
                    " const k = t.match(/live \\d+/); if (k) window.seen[k[0]] = Date.now(); } })"
                    ".observe(document.getElementById('lines'), {childList: true});"
                )
                commits: list[float] = []
                asyncio.run(live(url, 200, commits))
                time.sleep(2)
                seen = d.execute_script("return window.seen")
                delays = sorted(seen[f"live {i}"] / 1000 - commits[i] for i in range(200)
                                if f"live {i}" in seen)  # fmt: skip
                p50 = delays[len(delays) // 2] * 1000
                p99 = delays[int(len(delays) * 0.99) - 1] * 1000
                mark = "PASS" if p99 < 500 else "MISS"
                print(f"  live tail commit → drawn: p50 {p50:.0f} ms, p99 {p99:.0f} ms "
                      f"({len(delays)}/200 seen) < 500 ms {mark}")  # fmt: skip
            finally:
                d.quit()
        finally:
            web.terminate()
            web.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
