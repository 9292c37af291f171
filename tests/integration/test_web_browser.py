"""The viewer in a real browser (Debian's chromium, headless, driven by Selenium through
Debian's chromium-driver), against a real agent, real containers and `logagent web`.

Each test saves a screenshot of its view in test-artefacts/web/ (looked at by a person).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    ROOT,
    Containers,
    db_url,
    docker,
    query,
    require_or_skip,
    start_agent_process,
    stop_process,
)
from tests.integration.test_logs_cli import logagent

ARTEFACTS = ROOT / "test-artefacts" / "web"
CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() and Path(DRIVER).exists()):
        require_or_skip("no chromium and chromium-driver: tests/browser-up.sh installs them")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,900", "--no-first-run", "--disable-extensions"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


class Stack:
    """An agent and a viewer on this test's store; `extra_config` is in both's config."""

    def __init__(self, tmp_path: Path, extra_config: str = "", *, agent: bool = True) -> None:
        self.url = db_url(tmp_path)
        self.agent = start_agent_process(tmp_path, extra_config=extra_config) if agent else None
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.config = tmp_path / "web.toml"
        self.config.write_text(
            f'[storage]\ndb_url = "{self.url}"\n[web]\nport = {self.port}\n{extra_config}'
        )
        self.log = tmp_path / "web.log"
        self.web: subprocess.Popen[bytes] | None = None

    def serve(self) -> None:
        """The viewer, once the agent has made the store (it never creates one)."""
        if self.web is None:
            with open(self.log, "ab") as out:
                self.web = subprocess.Popen(
                    [sys.executable, "-m", "agent", "web", "--config", str(self.config)],
                    cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                )  # fmt: skip
        until(lambda: _up(self.base), "the viewer listens")

    def stop(self) -> None:
        for proc in (self.web, self.agent):
            if proc is not None and proc.poll() is None:
                stop_process(proc)

    def rows(self, cid: str) -> int:
        found = query(self.url, "SELECT lines FROM container_cursors WHERE container_id = ?", cid)
        return int(found[0][0]) if found else 0


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path)
    try:
        yield s
    finally:
        s.stop()


def until(check: Callable[[], Any], what: str, limit: float = 60) -> Any:
    """Poll the page or the store; a busy machine is slower, the limit is generous."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            got = check()
        except Exception:  # the page is still loading: a stale element, a missing one
            got = None
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


def open_view(driver: Any, stack: Stack, path: str) -> None:
    stack.serve()
    driver.get(stack.base + path)


def _up(base: str) -> bool:
    try:
        urllib.request.urlopen(base + "/api/containers", timeout=2).read()
        return True
    except OSError:
        return False


def shown(driver: Any) -> list[str]:
    lines = driver.execute_script(
        "return Array.from(document.querySelectorAll('#lines .line .msg'), e => e.textContent)"
    )
    return list(lines)


def folded(driver: Any) -> list[str]:
    """The lines as they read folded: a JSON or logfmt line's own text, not its pretty form."""
    lines = driver.execute_script(
        "return Array.from(document.querySelectorAll('#lines .line .msg'),"
        " e => (e.querySelector('summary') || e).textContent)"
    )
    return list(lines)


def shot(driver: Any, name: str) -> None:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTEFACTS / f"{name}.png"))


@pytest.mark.docker
def test_page_lists_containers_and_a_new_line_comes_live(
    browser: Any, stack: Stack, containers: Containers
) -> None:
    live = containers.run("live", "echo first; sleep 3600")
    other = containers.run("other", "echo from-the-other")
    until(lambda: stack.rows(live) and stack.rows(other), "both stored")
    open_view(browser, stack, f"/?c={live}")
    until(lambda: "first" in shown(browser), "the stored line shown")
    names = browser.execute_script(
        "return Array.from(document.querySelectorAll('#containers .name'), e => e.textContent)"
    )
    assert f"{containers.prefix}-live" in names and f"{containers.prefix}-other" in names
    started = time.monotonic()
    docker("exec", live, "sh", "-c", "echo live-marker > /proc/1/fd/1")
    until(lambda: "live-marker" in shown(browser), "the new line in the live tail")
    print(f"live tail: the line was on the page {time.monotonic() - started:.2f} s after exec")
    assert shown(browser) == ["first", "live-marker"]  # no reload, nothing twice
    shot(browser, "live-tail")
    docker("rm", "-f", other)  # a removed container stays, marked
    until(
        lambda: query(stack.url, "SELECT state FROM container_cursors WHERE container_id = ?",
                      other) == [("removed",)],
        "the removal in the store",
    )  # fmt: skip
    browser.refresh()
    until(
        lambda: (
            browser.execute_script(
                "return Array.from(document.querySelectorAll('#containers .ctr.removed'),"
                " e => e.dataset.id)"
            )
            == [other]
        ),
        "the removed container marked",
    )
    shot(browser, "containers-removed")


@pytest.mark.docker
def test_search_finds_a_line_among_100000(
    browser: Any, stack: Stack, containers: Containers
) -> None:
    cid = containers.run("big", "seq 1 50000; echo needle-xyz; seq 50001 100000")
    containers.wait("big")
    until(lambda: stack.rows(cid) >= 100_001, "100,001 lines stored", 120)
    open_view(browser, stack, f"/?c={cid}")
    until(lambda: "100000" in shown(browser), "the newest page")
    from selenium.webdriver.common.by import By

    browser.find_element(By.ID, "q").send_keys("needle-xyz")
    browser.find_element(By.CSS_SELECTOR, "#query button[type=submit]").click()
    until(lambda: shown(browser) == ["needle-xyz"], "the needle, alone")
    until(lambda: "beginning" in browser.find_element(By.ID, "status").text, "the search done")
    assert "q=needle-xyz" in browser.current_url  # the URL holds the query: shareable
    shot(browser, "search")


@pytest.mark.docker
def test_scrolling_back_loads_older_pages(
    browser: Any, stack: Stack, containers: Containers
) -> None:
    cid = containers.run("history", "seq 1 1000")
    containers.wait("history")
    until(lambda: stack.rows(cid) >= 1000, "1000 lines stored")
    open_view(browser, stack, f"/?c={cid}")
    until(lambda: len(shown(browser)) == 200, "the first page")
    assert shown(browser)[-1] == "1000"
    for _ in range(200):
        browser.execute_script("document.getElementById('lines').scrollTop = 0")
        if len(shown(browser)) == 1000:
            break
        time.sleep(0.1)
    assert shown(browser) == [str(i) for i in range(1, 1001)]
    shot(browser, "scroll-back")


@pytest.mark.docker
def test_merged_view_is_one_timeline_and_downloads_what_logs_prints(
    browser: Any, stack: Stack, containers: Containers
) -> None:
    script = 'for i in $(seq 1 60); do echo "{name} $i"; sleep 0.02; done'
    a = containers.run("a", script.format(name="A"))
    b = containers.run("b", script.format(name="B"))
    containers.wait("a")
    containers.wait("b")
    until(lambda: stack.rows(a) >= 60 and stack.rows(b) >= 60, "both stored")
    open_view(browser, stack, f"/?c={a}&c={b}")
    until(lambda: len(shown(browser)) == 120, "both containers' lines")
    stamps = browser.execute_script(
        "return Array.from(document.querySelectorAll('#lines .line'), e => e.dataset.ns)"
    )
    assert [int(s) for s in stamps] == sorted(int(s) for s in stamps)
    assert {m.split()[0] for m in shown(browser)} == {"A", "B"}
    colours = browser.execute_script(
        "return Array.from(document.querySelectorAll('#lines .line .src'), e => e.className)"
    )
    assert len(set(colours)) == 2  # each source its own colour
    shot(browser, "merged")
    from selenium.webdriver.common.by import By

    for link, args in (("dl-json", ["--json", a, b]), ("dl-text", [a, b])):
        href = browser.find_element(By.ID, link).get_attribute("href")
        body = urllib.request.urlopen(href, timeout=30).read().decode()
        assert body == logagent(stack.url, "logs", *args).stdout, link
        assert body.count("\n") == 120


HOSTILE = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(2)>",
    '<a href="http://evil.example/x">click me</a>',
    '{"msg": "<script>alert(3)</script>", "level": "error"}',
    "\x1b[31mred text\x1b[0m after",
    "\x1b]8;;http://evil.example/\x07osc link\x1b]8;;\x07",
    "\u202eevil reversed\u202c",
    "<style>body{display:none}</style>",
]


@pytest.mark.docker
def test_hostile_lines_are_text_and_run_nothing(
    browser: Any, stack: Stack, containers: Containers, tmp_path: Path
) -> None:
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    (tmp_path / "hostile").write_bytes("".join(line + "\n" for line in HOSTILE).encode())
    cid = containers.run(
        "hostile",
        "cat /hostile; head -c 1048576 /dev/zero | tr '\\0' 'a'; echo; echo end",
        "-v", f"{tmp_path / 'hostile'}:/hostile:ro",
    )  # fmt: skip
    containers.wait("hostile")
    until(lambda: stack.rows(cid) >= len(HOSTILE) + 2, "the hostile lines stored")
    open_view(browser, stack, f"/?c={cid}")
    until(lambda: "end" in shown(browser), "the page drawn")
    texts = shown(browser)
    assert texts[0] == "<script>alert(1)</script>"
    assert texts[1] == "<img src=x onerror=alert(2)>"
    assert texts[2] == '<a href="http://evil.example/x">click me</a>'
    assert texts[4] == "red text after"  # the colour is a class, the escape is gone
    assert "\\x1b]8;;http://evil.example/\\x07osc link" in texts[5]  # OSC: shown, inert
    assert texts[6].startswith("<U+202E>evil reversed")  # bidi: shown, not obeyed
    assert "1,028,576 more characters" in texts[8]
    lines = browser.find_element(By.ID, "lines")
    for tag in ("script", "img", "a", "style", "iframe"):
        assert lines.find_elements(By.TAG_NAME, tag) == [], tag
    assert lines.find_elements(By.CSS_SELECTOR, ".a31")  # red rendered as red
    browser.find_element(By.CSS_SELECTOR, "#lines details summary").click()  # the JSON one
    pretty = browser.find_element(By.CSS_SELECTOR, "#lines details pre").text
    assert json.loads(pretty) == json.loads(HOSTILE[3])
    try:
        text = browser.switch_to.alert.text
    except NoAlertPresentException:
        text = None
    assert text is None, f"a script ran: an alert says {text!r}"
    requests = [
        json.loads(e["message"])["message"]
        for e in browser.get_log("performance")
        if '"Network.requestWillBeSent"' in e["message"]
    ]
    urls = {r["params"]["request"]["url"] for r in requests}
    assert urls and all(u.startswith(stack.base + "/") for u in urls), urls
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors  # no CSP violation, no failed load
    shot(browser, "hostile")


def test_artefacts_folder_is_ignored_by_git() -> None:
    if shutil.which("git") is None:
        pytest.skip("no git here: the screenshots' folder cannot be checked")
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "test-artefacts/web/x.png"], cwd=ROOT, check=False
    )
    if ignored.returncode == 128:
        pytest.skip("not a git checkout: the screenshots' folder cannot be checked")
    assert ignored.returncode == 0, "test-artefacts/ must be in .gitignore"


@pytest.mark.docker
def test_live_tail_holds_new_lines_while_the_reader_is_scrolled_up(
    browser: Any, stack: Stack, containers: Containers
) -> None:
    from selenium.webdriver.common.by import By

    cid = containers.run("reader", "seq 1 150; sleep 3600")
    containers.run("unrelated", "echo x")
    until(lambda: stack.rows(cid) >= 150, "150 lines stored")
    open_view(browser, stack, f"/?c={cid}")
    until(lambda: len(shown(browser)) == 150, "the lines")
    box = "document.getElementById('lines')"
    browser.execute_script(f"{box}.scrollTop = 0")  # reading further up
    docker("exec", cid, "sh", "-c", "echo held-back > /proc/1/fd/1")
    button = browser.find_element(By.ID, "live")
    until(lambda: button.is_displayed(), "the 'new lines below' button")
    assert "1 new lines below" in button.text
    assert "held-back" not in shown(browser)  # the view did not move under the reader
    assert browser.execute_script(f"return {box}.scrollTop") == 0
    shot(browser, "live-held")
    button.click()
    until(lambda: shown(browser)[-1] == "held-back", "the held line shown")
    assert not button.is_displayed()
    # The container filter is fuzzy: letters in order, not a substring.
    browser.find_element(By.ID, "filter").send_keys("rdr")
    names = browser.execute_script(
        "return Array.from(document.querySelectorAll('#containers .name'), e => e.textContent)"
    )
    assert names == [f"{containers.prefix}-reader"]


# What the CLI escapes and a browser would draw as nothing (or as a line break), each shown
# as an escape; then lines made for a backtracking logfmt pattern (the first, 59 characters,
# held the tab for 6 s; the next for days), and a logfmt line that unfolds.
INVISIBLE = "zw\u200bnj\u200cj\u200dwj\u2060bom\ufeffshy\u00adls\u2028ps\u2029alm\u061cend"
SHOWN_AS = (
    "zw<U+200B>nj<U+200C>j<U+200D>wj<U+2060>bom<U+FEFF>shy\\xadls<U+2028>ps<U+2029>alm<U+061C>end"
)
BAIT = ["a=b" * 19 + " !", "a=b" * 40 + " !", "x=" * 5000 + " !"]
LOGFMT_LINE = 'level=info msg="hello there" n=1'


@pytest.mark.docker
def test_invisible_characters_are_shown_everywhere_and_bait_lines_do_not_hang_the_page(
    browser: Any, stack: Stack, containers: Containers, tmp_path: Path
) -> None:
    import anyio
    from selenium.webdriver.common.by import By

    from agent.batch import Line, LineBatch, Source
    from agent.storage import LogStorage

    (tmp_path / "sneaky").write_bytes(
        "".join(line + "\n" for line in [INVISIBLE, *BAIT, LOGFMT_LINE]).encode()
    )
    cid = containers.run(
        "sneaky", "cat /sneaky; echo last-line",
        "-v", f"{tmp_path / 'sneaky'}:/sneaky:ro",
        "--label", "com.docker.compose.project=proj\u200bect",
    )  # fmt: skip
    containers.wait("sneaky")
    until(lambda: stack.rows(cid) >= 6, "the lines stored")

    async def another_host() -> None:  # a host and a container name no Docker would allow
        async with LogStorage(stack.url, host="evil\u2060host") as storage:
            source = Source("f" * 64, "na\u200dme", project="pro\u2029ject")
            ns = time.time_ns()
            await storage.write(LineBatch.of(source, [Line("stdout", ns, "", "elsewhere")]))

    stop_process(stack.agent)  # a store has one writer: this test's, now
    anyio.run(another_host)
    open_view(browser, stack, "/")
    until(lambda: {"last-line", "elsewhere"} <= set(shown(browser)), "the page drawn")
    texts = shown(browser)
    assert SHOWN_AS in texts
    line = browser.find_elements(By.CSS_SELECTOR, "#lines .line .msg")[texts.index(SHOWN_AS)]
    assert len(line.find_elements(By.CSS_SELECTOR, ".esc")) == 9  # each an escape, styled
    for bait in BAIT:
        assert bait in texts  # as it is: not logfmt, and answered at once
    found = browser.execute_script(
        "const q = (s) => Array.from(document.querySelectorAll(s), (e) => e.textContent);"
        "return {host: q('#containers .host'), project: q('#containers .project'),"
        " name: q('#containers .name'), src: q('#lines .line .src'),"
        " options: Array.from(document.querySelectorAll('#host option'),"
        "   (o) => [o.textContent, o.value]),"
        " text: document.body.textContent};"
    )
    assert "evil<U+2060>host" in found["host"]
    assert "proj<U+200B>ect" in found["project"] and "pro<U+2029>ject" in found["project"]
    assert "na<U+200D>me" in found["name"]
    assert "evil<U+2060>host/na<U+200D>me" in found["src"]  # two hosts: each line says its own
    assert ["evil<U+2060>host", "evil\u2060host"] in found["options"]  # shown; the filter raw
    hidden = [ch for ch in "\u200b\u200c\u200d\u2060\ufeff\u00ad\u2028\u2029\u061c"
              if ch in found["text"]]  # fmt: skip
    assert hidden == [], [hex(ord(ch)) for ch in hidden]
    lines = browser.find_elements(By.CSS_SELECTOR, "#lines .line")
    unfold = lines[[t.startswith(LOGFMT_LINE) for t in texts].index(True)]  # and its pairs
    unfold.find_element(By.CSS_SELECTOR, "details summary").click()
    pretty = unfold.find_element(By.CSS_SELECTOR, "details pre").text
    assert pretty == 'level: info\nmsg: "hello there"\nn: 1'
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors
    browser.execute_script("arguments[0].scrollIntoView()", line)
    shot(browser, "invisible")


@pytest.mark.docker
def test_lines_of_hidden_characters_and_a_long_live_tail_keep_the_tab_answering(
    browser: Any, stack: Stack, containers: Containers, tmp_path: Path
) -> None:
    """A line of 20,000 hidden characters was 20,000 escape nodes (a page of 200 such lines
    held the tab for minutes: a review's finding): a run is one, a line ESCAPES at most.
    A live tail keeps the newest 10,000 lines on the page; scrolling back reads the rest."""

    lines = ["\x01" * 20_000] * 150 + ["a\x02" * 500, "\x1b[1mb\x1b[0m" * 3000]
    (tmp_path / "hidden").write_bytes("".join(line + "\n" for line in lines).encode())
    cid = containers.run(
        "hidden", "cat /hidden; echo drawn; sleep 3600", "-v", f"{tmp_path / 'hidden'}:/hidden:ro"
    )
    until(lambda: stack.rows(cid) >= 153, "the lines stored")
    open_view(browser, stack, f"/?c={cid}")
    until(lambda: "drawn" in shown(browser), "the page drawn", limit=120)
    nodes = browser.execute_script(
        "return Array.from(document.querySelectorAll('#lines .line .msg'),"
        " e => e.querySelectorAll('*').length + e.childNodes.length)"
    )
    assert max(nodes) <= 2 * 201 + 2, max(nodes)  # NODES a line, and the rest in one
    texts = shown(browser)
    assert ("\\x01" * 20_000)[:1000] in texts[0] and ("a\\x02" * 500) in texts[-3]
    assert "b\\x1b[0m\\x1b[1mb" in texts[-2]  # colour codes past the bound: written out
    shot(browser, "hidden-runs")
    docker("exec", cid, "sh", "-c", "seq 1 12000 > /proc/1/fd/1")  # a live tail of 12,000
    until(lambda: shown(browser)[-1] == "12000", "the live tail's last line", limit=120)
    kept = browser.execute_script("return document.querySelectorAll('#lines .line').length")
    assert kept <= 10_000
    assert shown(browser)[-10_000:][0] == "2001"  # the newest 10,000
    browser.execute_script("document.getElementById('lines').scrollTop = 0")  # back up
    until(lambda: "2000" in shown(browser), "the lines let go, read again")
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors


@pytest.mark.docker
def test_a_containers_life_is_marked_in_its_timeline(
    browser: Any, stack: Stack, containers: Containers
) -> None:
    """Its start and its death (with the exit code) between its lines, at their times."""
    cid = containers.run("lived", "sleep 1; echo one; echo two; exit 3")
    containers.wait("lived")

    def died() -> bool:
        found = query(stack.url, "SELECT exit_code FROM container_events WHERE action = 'die' "
                      "AND container_id = ?", cid)  # fmt: skip
        return stack.rows(cid) >= 2 and found == [(3,)]

    until(died, "the lines and the death stored")
    open_view(browser, stack, f"/?c={cid}")
    name = f"{containers.prefix}-lived"

    def timeline() -> list[str]:
        return list(
            browser.execute_script(
                "return Array.from(document.querySelectorAll("
                "'#lines .line .msg, #lines .event .what'), e => e.textContent)"
            )
        )

    until(lambda: len(timeline()) == 4, "the timeline drawn")
    assert timeline() == [f"{name}: start", "one", "two", f"{name}: die (exit code 3)"]
    shot(browser, "life")


class _Hook(BaseHTTPRequestHandler):
    """A webhook that takes every alert (200)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def webhook() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


ALERTING = "<img src=x onerror=alert(1)><script>alert(2)</script> \x1b[31mred\x1b[0m end"


@pytest.mark.docker
def test_alerts_page_shows_rules_and_a_hostile_alert_as_text_linked_to_its_lines(
    browser: Any, containers: Containers, tmp_path: Path
) -> None:
    """A real agent fires a line rule (sent to one destination, pending at one that is down)
    and an event rule; the page lists them, runs nothing, shows no URL, and links the line's
    alert to its lines."""
    with webhook() as hook:
        secrets = [hook + "?token=SECRET-IN-URL", f"http://127.0.0.1:{_free_port()}/p?key=SECRET2"]
        config = (
            f'[[alerts.destinations]]\nname = "ops"\nurl = "{secrets[0]}"\n'
            f'[[alerts.destinations]]\nname = "pager"\nurl = "{secrets[1]}"\n'
            f'[[alerts.rules]]\nname = "hostile"\nmatch = "onerror"\n'
            f'names = ["{containers.prefix}-*"]\ndestinations = ["ops", "pager"]\n'
            f'[[alerts.rules]]\nname = "crashed"\nevent = "die"\n'
            f'names = ["{containers.prefix}-*"]\ndestinations = ["ops"]\n'
        )
        stack = Stack(tmp_path, config)
        try:
            _check_alerts_page(browser, stack, containers, tmp_path, hook)
        finally:
            stack.stop()


def _check_alerts_page(
    browser: Any, stack: Stack, containers: Containers, tmp_path: Path, hook: str
) -> None:
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    (tmp_path / "hostile").write_bytes((ALERTING + "\nafter\n").encode())
    cid = containers.run(
        "alerting", "sleep 1; echo before; cat /hostile; exit 3",
        "-v", f"{tmp_path / 'hostile'}:/hostile:ro",
    )  # fmt: skip
    containers.wait("alerting")

    def delivered() -> bool:
        found = query(stack.url, "SELECT rule, destination, status, attempts FROM alert_outbox")
        states = {(r, d): (s, int(n)) for r, d, s, n in found}
        tried = states.get(("hostile", "pager"), ("", 0))
        return (
            states.get(("hostile", "ops")) == ("sent", 1)
            and states.get(("crashed", "ops")) == ("sent", 1)
            and tried[0] == "pending"
            and tried[1] >= 1
        )

    until(delivered, "both alerts sent, and tried at the destination that is down")
    open_view(browser, stack, "/alerts")
    until(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#alerts tr.alert")) == 2,
          "the alerts drawn")  # fmt: skip
    page = browser.find_element(By.ID, "alerts-page")
    rules = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "#rules tbody tr")]
    assert [r.split()[0] for r in rules] == ["hostile", "crashed"]
    assert "match onerror" in rules[0] and "ops, pager" in rules[0] and "event die" in rules[1]
    rows = {r.find_element(By.CSS_SELECTOR, "td:nth-child(2)").text: r
            for r in browser.find_elements(By.CSS_SELECTOR, "#alerts tr.alert")}  # fmt: skip
    line = rows["hostile"].find_element(By.CSS_SELECTOR, ".msg")
    hostile_text = "<img src=x onerror=alert(1)><script>alert(2)</script> red end"
    assert line.text == hostile_text  # as text; the escape became a colour
    assert line.find_elements(By.CSS_SELECTOR, ".a31")
    assert "\x1b" not in page.text
    assert rows["crashed"].find_element(By.CSS_SELECTOR, ".msg").text == "die (exit code 3)"
    deliveries = rows["hostile"].find_element(By.CSS_SELECTOR, "td:nth-child(6)").text
    assert "sent ops · 1 attempt" in deliveries and "pending pager" in deliveries
    for tag in ("img", "script", "iframe", "style"):
        assert page.find_elements(By.TAG_NAME, tag) == [], tag
    try:
        said = browser.switch_to.alert.text
    except NoAlertPresentException:
        said = None
    assert said is None, f"a script ran: an alert says {said!r}"
    source = browser.page_source
    assert "SECRET" not in source and hook not in source  # a destination's URL: never shown
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors  # no CSP violation, no failed load
    picture = tmp_path / "alerts-page.png"
    browser.save_screenshot(str(picture))
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(picture, ARTEFACTS / "alerts.png")
    # The line's alert links to the log view of its container, around the line.
    link = rows["hostile"].find_element(By.CSS_SELECTOR, "a.context")
    assert link.get_attribute("href").startswith(f"{stack.base}/?c={cid}&at=")
    link.click()
    until(lambda: "after" in shown(browser), "the lines around it")
    assert shown(browser) == ["before", hostile_text, "after"]
    marked = browser.find_element(By.CSS_SELECTOR, "#lines .line.marked .msg")
    assert marked.text == hostile_text  # the alert's own line, marked
    assert "at=" in browser.current_url
    assert browser.find_elements(By.CSS_SELECTOR, "#lines .event")  # and the container's death
    shot(browser, "alert-context")


def snapshot(driver: Any, tmp_path: Path, name: str) -> Path:
    """A screenshot in the test's own folder, copied to test-artefacts/web/ to be looked at."""
    picture = tmp_path / f"{name}.png"
    driver.save_screenshot(str(picture))
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(picture, ARTEFACTS / picture.name)
    return picture


def viewport(driver: Any, width: int, height: int, *, dark: bool = False) -> None:
    """The page's size and colour scheme, as a screen of that size in that mode shows it."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )
    driver.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": "dark" if dark else "light"}]},
    )


def no_errors(driver: Any) -> None:
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors  # no CSP violation, no failed load


@pytest.mark.docker
def test_a_service_recreated_three_times_shows_all_its_containers_lines_in_order(
    browser: Any, stack: Stack, containers: Containers, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    project = containers.prefix.replace("-", "")[-40:]
    compose = ["-l", f"com.docker.compose.project={project}", "-l",
               "com.docker.compose.service=web"]  # fmt: skip
    script = 'for i in 1 2 3 4 5; do echo \'{"n": \'$i\', "run": "%s", "status": %d}\'; done'
    cids = []
    for n in (1, 2, 3):  # as compose recreates it: the old one gone, a new one in its place
        if cids:
            docker("rm", cids[-1])
        cids.append(
            containers.run(f"web-{n}", script % (f"run{n}", 200 + 300 * (n == 2)), *compose)
        )
        containers.wait(f"web-{n}")
        until(lambda cid=cids[-1]: stack.rows(cid) >= 5, f"container {n}'s lines stored")
    containers.run("bystander", "echo not-of-the-service")
    viewport(browser, 1920, 1080)
    open_view(browser, stack, "/")
    key = f"{project}/web"
    service = until(
        lambda: browser.find_element(By.CSS_SELECTOR, f'#services .svc[data-service="{key}"]'),
        "the service listed",
    )
    assert "3 containers" in service.text
    service.click()
    expected = [
        f'{{"n": {i}, "run": "run{n}", "status": {200 + 300 * (n == 2)}}}'
        for n in (1, 2, 3) for i in range(1, 6)
    ]  # fmt: skip
    until(lambda: folded(browser) == expected, "the three containers' lines, in order")
    assert f"service={project}%2Fweb" in browser.current_url
    names = browser.execute_script(
        "return Array.from(document.querySelectorAll('#lines .line .src'), e => e.textContent)"
    )
    assert names == [f"{containers.prefix}-web-{n}" for n in (1, 2, 3) for _ in range(5)]
    # A structured filter narrows the service's lines to the ones whose fields say so.
    browser.find_element(By.ID, "where").send_keys("status>=500 n<=2")
    browser.find_element(By.CSS_SELECTOR, "#query button[type=submit]").click()
    until(lambda: folded(browser) == expected[5:7], "the lines of the failing run, n <= 2")
    assert "where=status" in browser.current_url
    snapshot(browser, tmp_path, "light-1920x1080-service-where")
    where = browser.find_element(By.ID, "where")
    where.clear()
    where.send_keys("status 500")
    browser.find_element(By.CSS_SELECTOR, "#query button[type=submit]").click()
    status = browser.find_element(By.ID, "status")
    until(lambda: "cannot read 'status 500'" in status.text, "the reason in the page")
    assert "error" in status.get_attribute("class") and folded(browser) == []
    browser.get_log("browser")  # the refused request's 400 is logged by the browser: expected


def test_a_service_of_two_hosts_says_each_line_s_host(browser: Any, tmp_path: Path) -> None:
    """A name two hosts share, or compose labels anyone may set on another host, make one
    service of both hosts' lines: each line says its host, and so does each member in the
    sidebar (a review: a forged line looked like the real replica's)."""
    import anyio
    from selenium.webdriver.common.by import By

    from agent.batch import Line, LineBatch, Source
    from agent.storage import LogStorage

    async def two_hosts() -> None:
        ns = time.time_ns() - 60 * 10**9
        for n, host in enumerate(("host-a", "host-b")):
            async with LogStorage(db_url(tmp_path), host=host) as storage:
                source = Source(f"{n + 1:064x}", "shop-web-1", project="shop", service="web")
                lines = [Line("stdout", ns + 2 * i + n, "", f"{host} says {i}") for i in range(3)]
                await storage.write(LineBatch.of(source, lines))

    anyio.run(two_hosts)
    stack = Stack(tmp_path, agent=False)
    try:
        open_view(browser, stack, "/?service=shop%2Fweb")
        until(lambda: len(shown(browser)) == 6, "both hosts' lines")
        names = browser.execute_script(
            "return Array.from(document.querySelectorAll('#lines .line .src'), e => e.textContent)"
        )
        assert names == ["host-a/shop-web-1", "host-b/shop-web-1"] * 3
        member = browser.find_element(By.CSS_SELECTOR, '#services .svc[data-service="shop/web"]')
        assert "2 hosts" in member.text
        assert "host-a/shop-web-1" in member.text and "host-b/shop-web-1" in member.text
        shot(browser, "service-two-hosts")
    finally:
        stack.stop()


@pytest.mark.docker
def test_a_link_to_a_line_opens_it_highlighted_and_each_line_can_give_its_link(
    browser: Any, stack: Stack, containers: Containers, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    cid = containers.run("linked", "seq 1 3000")
    containers.wait("linked")
    until(lambda: stack.rows(cid) >= 3000, "3000 lines stored")
    row = query(stack.url, "SELECT id FROM log_lines WHERE message = '1500'")[0][0]
    viewport(browser, 1366, 768)
    open_view(browser, stack, f"/?at={row}")
    marked = until(
        lambda: browser.find_element(By.CSS_SELECTOR, "#lines .line.marked"), "the line marked"
    )
    assert marked.find_element(By.CSS_SELECTOR, ".msg").text == "1500"
    texts = shown(browser)
    assert "1450" in texts and "1600" in texts and "1601" not in texts  # its context only
    inside = browser.execute_script(
        "const l = arguments[0].getBoundingClientRect(),"
        " b = document.getElementById('lines').getBoundingClientRect();"
        "return l.top >= b.top && l.bottom <= b.bottom;",
        marked,
    )
    assert inside, "the marked line is scrolled into view"
    assert browser.find_element(By.ID, "newer").is_displayed()  # newer lines: one click away
    assert f"c={cid}" in browser.current_url and f"at={row}" in browser.current_url
    snapshot(browser, tmp_path, "light-1366x768-link-to-a-line")
    # Every line gives a link to itself: the clipboard where allowed, else the URL selected.
    browser.execute_cdp_cmd(
        "Browser.grantPermissions",
        {"origin": stack.base, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]},
    )
    from selenium.webdriver.common.action_chains import ActionChains

    lines = browser.find_elements(By.CSS_SELECTOR, "#lines .line")
    other, third = lines[len(lines) // 2 + 5], lines[len(lines) // 2 - 5]
    ActionChains(browser).move_to_element(other).perform()
    other.find_element(By.CSS_SELECTOR, ".copy").click()
    status = browser.find_element(By.ID, "status")
    until(lambda: "copied a link" in status.text, "the link copied")
    link = browser.execute_script("return navigator.clipboard.readText()")
    other_id = other.get_attribute("data-id")
    other_text = other.find_element(By.CSS_SELECTOR, ".msg").text
    assert link == f"{stack.base}/?c={cid}&at={other_id}"
    # No clipboard (plain http beyond loopback): the link is shown, selected, to copy by hand.
    browser.execute_script(
        "navigator.clipboard.writeText = () => Promise.reject(new Error('not allowed'))"
    )
    ActionChains(browser).move_to_element(third).perform()
    third.find_element(By.CSS_SELECTOR, ".copy").click()
    box = until(lambda: browser.find_element(By.ID, "copied"), "the link shown")
    assert (
        box.get_attribute("value") == f"{stack.base}/?c={cid}&at={third.get_attribute('data-id')}"
    )
    assert browser.execute_script("return document.activeElement.id") == "copied"  # selected
    assert "Ctrl-C" in status.text
    browser.get(link)
    marked = until(
        lambda: browser.find_element(By.CSS_SELECTOR, "#lines .line.marked"), "marked again"
    )
    assert marked.get_attribute("data-id") == other_id
    assert marked.find_element(By.CSS_SELECTOR, ".msg").text == other_text
    no_errors(browser)


@pytest.mark.docker
def test_toolbar_is_one_row_from_1280_px_dark_mode_times_and_keys(
    browser: Any, stack: Stack, containers: Containers, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    script = (
        'echo \'{"level":"info","msg":"started","port":8080}\'; echo "plain line"; '
        'echo "level=warn msg=\\"slow request\\" ms=1200"; echo "ERROR: it broke" >&2; '
        "printf '\\033[32mgreen\\033[0m ok\\n'; sleep 3600"
    )
    cid = containers.run("looks", script)
    containers.run("looks-other", "echo other")
    until(lambda: stack.rows(cid) >= 5, "the lines stored")
    viewport(browser, 1280, 800)
    open_view(browser, stack, f"/?c={cid}")
    until(lambda: "plain line" in shown(browser), "the lines")
    for bar in ("query", "viewbar"):  # the toolbar, and the view's bar under it
        tops = browser.execute_script(
            f"return Array.from(document.getElementById('{bar}').children)"
            ".filter(e => e.offsetParent !== null)"
            ".map(e => [e.id || e.tagName, Math.round(e.getBoundingClientRect().top),"
            " Math.round(e.getBoundingClientRect().right)])"
        )
        assert len(tops) >= 3, tops
        assert max(t for _, t, _ in tops) - min(t for _, t, _ in tops) <= 2, tops  # one row
        assert max(right for _, _, right in tops) <= 1280, tops  # and all of it on the screen
    light = browser.execute_script("return getComputedStyle(document.body).backgroundColor")
    snapshot(browser, tmp_path, "light-1280x800-toolbar")
    # Times: UTC, or this browser's zone (remembered); how long ago on hover.
    utc = browser.find_element(By.CSS_SELECTOR, "#lines .line .ts").text
    browser.find_element(By.ID, "tz").click()
    assert browser.find_element(By.ID, "tz").text == "local"
    assert browser.execute_script("return localStorage.getItem('logagent.time')") == "local"
    from selenium.webdriver.common.action_chains import ActionChains

    stamp = browser.find_element(By.CSS_SELECTOR, "#lines .line .ts")
    ActionChains(browser).move_to_element(stamp).perform()
    assert stamp.get_attribute("title").split(" · ")[0].endswith(("ago", "just now"))
    browser.refresh()
    until(lambda: "plain line" in shown(browser), "the lines again")
    assert browser.find_element(By.ID, "tz").text == "local"  # remembered
    offset = browser.execute_script("return new Date().getTimezoneOffset()")
    if offset == 0:
        assert browser.find_element(By.CSS_SELECTOR, "#lines .line .ts").text == utc
    browser.find_element(By.ID, "tz").click()
    assert browser.find_element(By.CSS_SELECTOR, "#lines .line .ts").text == utc
    # Keys: / searches, Esc leaves the box, f holds and follows, ? shows them.
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys("/")
    assert browser.switch_to.active_element.get_attribute("id") == "q"
    browser.switch_to.active_element.send_keys(Keys.ESCAPE)
    assert browser.switch_to.active_element.get_attribute("id") != "q"
    body.send_keys("f")
    follow = browser.find_element(By.ID, "follow")
    assert follow.get_attribute("aria-pressed") == "false"
    docker("exec", cid, "sh", "-c", "echo held-by-f > /proc/1/fd/1")
    until(lambda: browser.find_element(By.ID, "live").is_displayed(), "the new line held")
    assert "held-by-f" not in shown(browser)
    body.send_keys("f")
    until(lambda: shown(browser)[-1] == "held-by-f", "shown when following again")
    body.send_keys("?")
    assert browser.find_element(By.ID, "help").is_displayed()
    # The system's dark mode: the page follows it.
    viewport(browser, 1366, 768, dark=True)
    dark = browser.execute_script("return getComputedStyle(document.body).backgroundColor")
    assert dark != light
    channels = [int(c) for c in dark[dark.index("(") + 1 : -1].split(",")[:3]]
    assert max(channels) < 60, dark  # dark indeed
    snapshot(browser, tmp_path, "dark-1366x768-help")
    body.send_keys(Keys.ESCAPE)
    assert not browser.find_element(By.ID, "help").is_displayed()
    browser.find_element(By.CSS_SELECTOR, "#dl summary").click()
    viewport(browser, 1920, 1080, dark=True)
    snapshot(browser, tmp_path, "dark-1920x1080-download-menu")
    no_errors(browser)


MILLION_ID = "f" * 64


async def _a_million_lines(url: str) -> tuple[int, int]:
    """1,000,000 rows over 3 days, ending 5 minutes ago, written as the writer writes them
    (batches of 10,000): a daily rise and fall, stderr and levels mixed in, a gap and a
    container's death in the middle. The span's (start, end) in ns."""
    import math

    from agent.batch import LineBatch, Source
    from agent.docker.life_events import LifeEvent
    from agent.storage import LogStorage
    from agent.storage.life import record_life
    from agent.timestamps import format_timestamp

    n, days = 1_000_000, 3
    end = time.time_ns() - 5 * 60 * 10**9
    span = days * 86400 * 10**9
    start = end - span
    wave = 2 * math.pi * days
    source = Source(MILLION_ID, "million")
    async with LogStorage(url, host="h") as storage:
        for at in range(0, n, 10_000):
            batch = LineBatch(source)
            for i in range(at, at + 10_000):
                x = i / n  # denser by day, sparser by night: 0.4x to 1.6x the mean
                ns = start + int(span * (x - 0.6 * math.sin(wave * x) / wave))
                text = f"request {i} took {i % 997} ms"
                stream = "stderr" if i % 10 == 3 else "stdout"
                batch.append(stream, ns, format_timestamp(ns), text, 0, len(text))
            batch.levels = [
                5 if i % 50 == 0 else 4 if i % 20 == 0 else 3 for i in range(at, at + 10_000)
            ]
            await storage.write(batch)
        await storage.record_gap(source, "rotated: lines lost", from_ns=start + span * 2 // 3)
        await storage.flush()
        await record_life(storage.db, "h", [
            LifeEvent(MILLION_ID, "million", start + span // 3, "die", exit_code=137),
            LifeEvent(MILLION_ID, "million", start + span // 3 + 10**9, "start"),
        ])  # fmt: skip
    return start, end


def _bars(driver: Any) -> Any:
    return driver.execute_script(
        "const c = document.getElementById('hist-chart');"
        "return {hits: c.querySelectorAll('rect.hit').length,"
        " bars: Array.from(c.querySelectorAll('rect.bar'), r => +r.getAttribute('height')),"
        " gaps: c.querySelectorAll('.hmark.gap').length,"
        " events: c.querySelectorAll('.hmark.ev').length,"
        " width: c.getBoundingClientRect().width}"
    )


def _range(driver: Any) -> tuple[str | None, str | None]:
    from urllib.parse import parse_qs, urlparse

    asked = parse_qs(urlparse(driver.current_url).query)
    return (asked.get("since") or [None])[0], (asked.get("until") or [None])[0]


def _line_times(driver: Any) -> list[int]:
    times = driver.execute_script(
        "return Array.from(document.querySelectorAll('#lines .line'), e => e.dataset.ns)"
    )
    return [int(t) for t in times]


def _drag(driver: Any, start: float, stop: float) -> None:
    """A drag on the histogram from `start` to `stop` (fractions of its width)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    chart = driver.find_element(By.ID, "hist-chart")
    width = chart.rect["width"]
    ActionChains(driver).move_to_element_with_offset(
        chart, int(width * (start - 0.5)), 0
    ).click_and_hold().move_by_offset(int(width * (stop - start)), 0).release().perform()


def test_histogram_of_a_million_lines_draws_and_a_drag_narrows_the_lines(
    browser: Any, tmp_path: Path
) -> None:
    import anyio
    from selenium.webdriver.common.by import By

    from agent.when import parse_when

    stack = Stack(tmp_path, agent=False)  # the store written here; the viewer reads it
    try:
        began = time.monotonic()
        start, end = anyio.run(_a_million_lines, stack.url)
        print(f"1,000,000 rows written in {time.monotonic() - began:.1f} s")
        stack.serve()
        began = time.monotonic()
        asked = f"{stack.base}/api/histogram?c={MILLION_ID}"
        got = json.loads(urllib.request.urlopen(asked, timeout=30).read())
        print(f"/api/histogram of 3 days, 1,000,000 rows: {time.monotonic() - began:.3f} s")
        assert got["total"] == 1_000_000 and len(got["buckets"]) >= 30
        viewport(browser, 1400, 900)
        began = time.monotonic()
        browser.get(f"{stack.base}/?c={MILLION_ID}")
        drawn = until(lambda: (b := _bars(browser))["hits"] and b, "the histogram drawn")
        until(lambda: len(_line_times(browser)) >= 200, "the newest lines")
        print(f"page with its histogram drawn in {time.monotonic() - began:.2f} s")
        assert drawn["hits"] == len(got["buckets"])  # a bar's place for every bucket
        assert len(drawn["bars"]) >= len(got["buckets"]) and min(drawn["bars"]) > 0
        assert drawn["gaps"] == 1 and drawn["events"] == 2  # marked on it
        legend = browser.find_element(By.ID, "hist-legend").text
        assert "1,000,000 lines" in legend and "stderr 100,000" in legend, legend
        assert _range(browser) == (None, None)
        snapshot(browser, tmp_path, "light-1400x900-histogram")
        # A drag picks a range: the URL holds it, the lines are those of the range only.
        _drag(browser, 0.30, 0.55)
        until(lambda: all(_range(browser)), "since and until in the URL")
        since, until_ = _range(browser)
        assert since is not None and until_ is not None
        lo, hi = parse_when(since), parse_when(until_)
        assert start < lo < hi < end and (hi - lo) < (end - start) // 3
        until(lambda: len(_line_times(browser)) >= 200, "the range's lines")
        until(lambda: _bars(browser)["hits"] and browser.execute_script(
            "return document.getElementById('hist-legend').textContent"
        ) != legend, "the range's histogram")  # fmt: skip
        times = _line_times(browser)
        assert all(lo <= t < hi for t in times), (lo, hi, min(times), max(times))
        assert max(times) > hi - (hi - lo) // 20  # the range's newest lines, not older ones
        marks = browser.execute_script(
            "return Array.from(document.querySelectorAll('#lines .gap, #lines .event'),"
            " e => e.dataset.ns)"
        )
        assert all(lo <= int(t) < hi for t in marks), marks  # the gap after it: not shown
        narrowed = json.loads(urllib.request.urlopen(
            f"{asked}&since={since}&until={until_}", timeout=30).read())  # fmt: skip
        assert 0 < narrowed["total"] < 1_000_000
        assert browser.find_element(By.ID, "follow").is_displayed()
        snapshot(browser, tmp_path, "light-1400x900-histogram-range")
        # A second drag, within the first; zoom out goes back to the first, then to all.
        _drag(browser, 0.40, 0.60)
        until(lambda: _range(browser)[0] not in (None, since), "a narrower range")
        inner = [parse_when(t) for t in _range(browser) if t]
        assert lo <= inner[0] < inner[1] <= hi
        viewport(browser, 1400, 900, dark=True)
        browser.find_element(By.ID, "by-level").click()
        by_level = "return document.querySelectorAll('#hist-chart rect.k-error').length"
        until(lambda: browser.execute_script(by_level), "stacked by level")
        assert "error" in browser.find_element(By.ID, "hist-legend").text
        snapshot(browser, tmp_path, "dark-1400x900-histogram-by-level")
        browser.find_element(By.ID, "zoom-out").click()
        until(lambda: _range(browser) == (since, until_), "zoomed out to the first range")
        browser.find_element(By.ID, "zoom-out").click()
        until(lambda: _range(browser) == (None, None), "zoomed out to all of it")
        until(lambda: max(_line_times(browser) or [0]) > hi, "the newest lines again")
        # Past the zooms, zoom out doubles a range that was typed.
        browser.find_element(By.CSS_SELECTOR, '[data-last="1h"]').click()
        until(lambda: _range(browser)[0] == "1h", "the last hour")
        until(lambda: _bars(browser)["hits"], "its histogram")
        browser.find_element(By.ID, "zoom-out").click()
        until(lambda: _range(browser)[0] not in (None, "1h"), "two hours")
        wide = parse_when(str(_range(browser)[0]))
        assert abs((time.time_ns() - wide) - 2 * 3600 * 10**9) < 5 * 60 * 10**9
        assert _range(browser)[1] is None  # open: the live end
        snapshot(browser, tmp_path, "dark-1400x900-histogram-zoomed-out")
        no_errors(browser)
    finally:
        stack.stop()
