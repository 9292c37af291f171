// logagent viewer. A log line is text, always: every node is built with textContent or
// createTextNode, never innerHTML, and the page's CSP allows no inline script anyway.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const PAGE = 200;
  const SHOWN = 20000; // characters of one line shown; the download has all of it
  const KEPT = 10000; // lines a live tail keeps on the page (older ones: scroll back again)
  const NODES = 200; // nodes a line is drawn with at most (escapes, colours); the rest in one
  const MOST_ALERTS = 1000; // the alerts page's largest `limit` (web/query.py)
  const LEVELS = ["", "trace", "debug", "info", "warn", "error", "fatal"];
  const FIELDS = ["q", "where", "stream", "level", "host", "since", "until"]; // the toolbar's
  const view = {
    selected: [], // container ids; none: every container
    service: "", // a service's key (PROJECT/SERVICE, or a name): all its containers
    at: "", // a line's row id: the view opens at it, marked (a link to a line)
    containers: [],
    services: [],
    utc: true, // times in UTC, or in this browser's zone (remembered: localStorage)
    following: true, // new lines scroll into view (f); held below while not
    oldest: null, // "ns:id" of the oldest row shown: scroll back from there (ns as text:
    // a JavaScript number would round Docker's nanoseconds)
    position: null, // where the live tail takes over: given with the newest page (per host)
    firstIds: new Set(), // the newest page's rows: one committed meanwhile is not shown twice
    loading: false,
    done: false, // no older rows
    stream: null, // the live tail (EventSource)
    pending: [], // rows that came while the reader was scrolled up (at most KEPT)
    overflowed: false, // more came than that: back to live loads the newest page again
    manyHosts: false, // the view's containers are of several hosts: each line says its host
    generation: 0, // a new query abandons what the last one was still loading
  };

  // -- the query, in the URL so that a view can be shared ---------------------------------
  function query(extra) {
    const p = new URLSearchParams();
    for (const id of view.selected) p.append("c", id);
    if (view.service) p.set("service", view.service);
    for (const name of FIELDS) {
      const value = $(name).value.trim();
      if (value) p.set(name, value);
    }
    if ($("re").checked) p.set("re", "1");
    for (const [k, v] of Object.entries(extra || {})) p.set(k, v);
    return p;
  }

  function readUrl() {
    const p = new URLSearchParams(location.search);
    view.selected = p.getAll("c");
    view.service = p.get("service") || "";
    view.at = /^\d{1,19}$/.test(p.get("at") || "") ? p.get("at") : "";
    for (const name of FIELDS) $(name).value = p.get(name) || "";
    $("re").checked = p.get("re") === "1";
  }

  function writeUrl() {
    const q = query(view.at ? { at: view.at } : {}).toString();
    history.replaceState(null, "", (q ? "?" + q : location.pathname) + location.hash);
    for (const [id, format, gzip] of [["dl-text", "text", "0"], ["dl-json", "json", "0"],
      ["dl-text-gz", "text", "1"], ["dl-json-gz", "json", "1"]]) {
      const extra = { format };
      if (gzip === "1") extra.gzip = "1";
      $(id).href = "/api/download?" + query(extra).toString(); // the whole view: never `at`
    }
  }

  // -- containers ----------------------------------------------------------------------------
  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // An element holding text from the store (a name, a project, a host): escaped like a line.
  function stored(tag, cls, text) {
    const node = el(tag, cls);
    escaped(String(text ?? ""), node, []);
    return node;
  }

  const STATES = new Set(["created", "running", "paused", "restarting", "exited", "removed", "dead"]);

  function fuzzy(needle, hay) {
    needle = needle.toLowerCase();
    hay = hay.toLowerCase();
    let i = 0;
    for (const ch of hay) if (ch === needle[i]) i++;
    return i === needle.length;
  }

  function serviceOf(key) {
    return view.services.find((s) => s.key === key);
  }

  function colour(cid) {
    const service = view.service && serviceOf(view.service);
    const order = service ? [...view.selected, ...service.containers]
      : view.selected.length ? view.selected : view.containers.map((c) => c.id);
    const i = order.indexOf(cid);
    return "src s" + ((i < 0 ? 0 : i) % 8);
  }

  async function loadContainers() {
    const response = await fetch("/api/containers");
    const body = await response.json();
    view.containers = body.containers;
    view.services = body.services || [];
    const hosts = new Set(view.containers.map((c) => c.host));
    const select = $("host");
    const chosen = select.value;
    select.replaceChildren(el("option", "", "all hosts"));
    select.firstChild.value = "";
    for (const h of hosts) {
      const option = el("option", "", visibleText(h)); // an option holds text only
      option.value = h;
      select.append(option);
    }
    select.value = chosen;
    select.classList.toggle("one", hosts.size <= 1 && !chosen); // nothing to choose
    drawContainers();
  }

  // A service: every container that served it (current and removed), one timeline.
  function drawServices(needle) {
    const box = $("services");
    box.replaceChildren();
    const byId = new Map(view.containers.map((c) => [c.id, c]));
    const shown = view.services.filter((s) => !needle || fuzzy(needle, s.key));
    if (!shown.length) return;
    box.append(el("div", "group-head", "services"));
    for (const s of shown) {
      const row = el("a", "svc" + (view.service === s.key ? " on" : ""));
      row.dataset.service = s.key;
      row.href = "?service=" + encodeURIComponent(s.key);
      row.append(stored("span", "key", s.key));
      const meta = el("span", "meta");
      if (s.running) meta.append(el("span", "badge running", "running"));
      meta.append(document.createTextNode(`${s.containers.length} containers · ` +
        `${s.lines.toLocaleString()} lines` + (s.last ? ` · last ${shortClock(s.last)}` : "")));
      row.append(meta);
      const hosts = new Set(s.containers.map((id) => byId.get(id)?.host));
      if (hosts.size > 1) meta.append(document.createTextNode(` · ${hosts.size} hosts`));
      const members = el("span", "members");
      s.containers.forEach((id, i) => {
        const c = byId.get(id);
        if (i) members.append(", ");
        const name = c ? (hosts.size > 1 ? `${c.host}/${c.name}` : c.name) : id.slice(0, 12);
        members.append(stored("span", c && c.state === "removed" ? "gone" : "", name));
      });
      row.title = "every container of " + visibleText(s.key) + ", merged into one timeline";
      row.append(members);
      row.addEventListener("click", (event) => {
        event.preventDefault();
        view.service = view.service === s.key && !view.selected.length ? "" : s.key;
        view.selected = [];
        view.at = "";
        drawContainers();
        restart();
      });
      box.append(row);
    }
    box.append(el("div", "group-head", "containers"));
  }

  function drawContainers() {
    const box = $("containers");
    const needle = $("filter").value.trim();
    drawServices(needle);
    box.replaceChildren();
    let host = null;
    let project = null;
    for (const c of view.containers) {
      if (needle && !fuzzy(needle, c.name)) continue;
      if (c.host !== host) {
        host = c.host;
        project = null;
        box.append(host ? stored("div", "host", host) : el("div", "host", "(no host)"));
      }
      if (c.project !== project) {
        project = c.project;
        if (project) box.append(stored("div", "project", project));
      }
      const row = el("a", "ctr" + (view.selected.includes(c.id) ? " on" : ""));
      row.classList.toggle("removed", c.state === "removed");
      row.dataset.id = c.id;
      row.href = "?c=" + encodeURIComponent(c.id);
      row.title = visibleText(c.id);
      row.append(stored("span", "name " + colour(c.id), c.name));
      const meta = el("span", "meta");
      const state = STATES.has(c.state) ? c.state : "";
      meta.append(state ? el("span", "badge " + state, state) : stored("span", "badge", c.state || "unknown"));
      meta.append(document.createTextNode(` ${c.lines.toLocaleString()} lines` +
        (c.last ? ` · last ${shortClock(c.last)}` : "") +
        (c.gaps ? ` · ${c.gaps} gaps` : "")));
      row.append(meta);
      row.addEventListener("click", (event) => {
        event.preventDefault();
        const many = event.ctrlKey || event.metaKey || event.shiftKey;
        if (many) {
          const at = view.selected.indexOf(c.id);
          if (at >= 0) view.selected.splice(at, 1);
          else view.selected.push(c.id);
        } else {
          view.selected = [c.id];
          view.service = "";
        }
        view.at = "";
        drawContainers();
        restart();
      });
      box.append(row);
    }
  }

  // -- one line --------------------------------------------------------------------------------
  // What text from the store must not do to whoever reads it (as the CLI's agent/render.py):
  // C0 controls but tab and newline, DEL and C1, the invisible format characters (Unicode Cf:
  // bidi controls, zero-width characters, the BOM, the soft hyphen, tags) and the line and
  // paragraph separators (Zl, Zp), which make text read other than it is. Each is shown as a
  // visible escape; SGR colour sequences become colours. Nothing of a line is markup.
  // Every pattern here is one character or one fixed run: none backtracks (a line is hostile).
  const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\p{Cf}\p{Zl}\p{Zp}]/gu;
  const SGR = /\u001b\[([0-9;]*)m/g;

  function shownAs(code) {
    return code < 0x100
      ? "\\x" + code.toString(16).padStart(2, "0")
      : "<U+" + code.toString(16).toUpperCase().padStart(4, "0") + ">";
  }

  // The viewer's one escaping function (pure): text as [escape?, text] pieces, each run of
  // hidden characters one escape piece.
  function pieces(text) {
    const out = [];
    let at = 0;
    for (const m of text.matchAll(CONTROL)) {
      if (m.index > at) out.push([false, text.slice(at, m.index)]);
      const shown = shownAs(m[0].codePointAt(0));
      const last = out[out.length - 1];
      if (last && last[0] && m.index === at) last[1] += shown; // a run: one piece
      else out.push([true, shown]);
      at = m.index + m[0].length;
    }
    if (at < text.length) out.push([false, text.slice(at)]);
    return out;
  }

  // Pieces drawn, as many as `budget.left` allows (a line's: NODES); past it, the rest in one
  // node, its hidden characters written out and not marked, the node saying so. A line of
  // 20,000 hidden characters or colour changes, each its own node, froze the tab.
  function escaped(text, into, classes, budget = { left: Infinity }) {
    const parts = pieces(text);
    for (let k = 0; k < parts.length; k++) {
      if (budget.left <= 0) {
        const rest = el("span", "rest", parts.slice(k).map((piece) => piece[1]).join(""));
        rest.title = "the rest of this line, its hidden characters written out, not marked";
        into.append(rest);
        return;
      }
      budget.left--;
      const [escape, part] = parts[k];
      into.append(escape ? el("span", "esc", part) : span(classes, part));
    }
  }

  // The same escapes where only plain text can go (an option, a title).
  function visibleText(text) {
    return pieces(text).map((piece) => piece[1]).join("");
  }

  function span(classes, text) {
    if (!classes.length) return document.createTextNode(text);
    return el("span", classes.join(" "), text);
  }

  function ansi(text, into) {
    const budget = { left: NODES }; // for the whole line, whatever its colour changes
    let classes = [];
    let at = 0;
    for (const m of text.matchAll(SGR)) {
      if (m.index > at) escaped(text.slice(at, m.index), into, classes, budget);
      if (budget.left <= 0) { // the rest from here, colour codes written out: one node
        at = m.index;
        break;
      }
      classes = sgr(m[1], classes);
      at = m.index + m[0].length;
    }
    if (at < text.length) escaped(text.slice(at), into, classes, budget);
  }

  function sgr(params, classes) {
    let out = classes.slice();
    const add = (cls) => { if (!out.includes(cls)) out.push(cls); }; // "1;1;1;…" adds one
    for (const p of (params || "0").split(";")) {
      const n = Number(p || "0");
      if (n === 0) out = [];
      else if (n === 1) add("a-bold");
      else if (n === 2) add("a-dim");
      else if (n === 3) add("a-italic");
      else if (n === 4) add("a-underline");
      else if ((n >= 30 && n <= 37) || (n >= 90 && n <= 97)) {
        out = out.filter((c) => !/^a\d/.test(c));
        out.push("a" + n);
      } else if (n >= 40 && n <= 47) {
        out = out.filter((c) => !/^b\d/.test(c));
        out.push("b" + n);
      } else if (n === 39) out = out.filter((c) => !/^a\d/.test(c));
      else if (n === 49) out = out.filter((c) => !/^b\d/.test(c));
    }
    return out;
  }

  // logfmt (`key=value key="a quoted value" …`, two pairs or more, one line), read in one
  // pass that looks at each character once: the pattern it replaces backtracked
  // exponentially, and a 59-character line held the tab for seconds.
  const SPACE = /\s/; // tested on one character at a time

  function keyChar(c) { // [A-Za-z0-9_.@-]
    return (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || (c >= 48 && c <= 57) ||
      c === 95 || c === 46 || c === 45 || c === 64;
  }

  function logfmt(t) {
    const n = t.length;
    const space = (i) => i < n && SPACE.test(t[i]);
    const pairs = [];
    let i = 0;
    for (;;) {
      while (space(i)) i++;
      if (i >= n) break;
      const key = i;
      while (i < n && keyChar(t.charCodeAt(i))) i++;
      if (i === key || t[i] !== "=") return null;
      const name = t.slice(key, i);
      const value = ++i;
      if (t[i] === '"') {
        for (i++; i < n && t[i] !== '"'; i++) if (t[i] === "\\") i++;
        if (i >= n) return null; // never closed
        i++;
      } else {
        while (i < n && !space(i)) i++;
      }
      if (i < n && !space(i)) return null; // key="a"b: not a pair
      pairs.push([name, t.slice(value, i)]);
    }
    return pairs.length >= 2 ? pairs : null;
  }

  function structured(text) {
    const t = text.trim();
    if (t.startsWith("{") && t.endsWith("}")) {
      try {
        return JSON.stringify(JSON.parse(t), null, 2);
      } catch (e) {
        return null;
      }
    }
    const pairs = t.includes("\n") ? null : logfmt(t);
    return pairs && pairs.map(([k, v]) => `${k}: ${v}`).join("\n");
  }

  function message(text) {
    const box = el("span", "msg");
    let rest = 0;
    if (text.length > SHOWN) {
      rest = text.length - SHOWN;
      text = text.slice(0, SHOWN);
    }
    const pretty = rest ? null : structured(text);
    if (pretty !== null) {
      const details = el("details");
      const summary = el("summary");
      ansi(text, summary);
      const pre = el("pre");
      escaped(pretty, pre, []);
      details.append(summary, pre);
      box.append(details);
    } else {
      ansi(text, box);
    }
    if (rest) box.append(el("span", "more", ` … ${rest.toLocaleString()} more characters (download the view to see them)`));
    return box;
  }

  // -- time: UTC or this browser's zone, and how long ago -----------------------------------
  const pad = (n, w) => String(n).padStart(w || 2, "0");

  // A row's time as shown (pure): its RFC 3339 text cut to milliseconds in UTC, or the same
  // instant in this browser's zone, from its nanoseconds (text: a number holds 53 bits).
  function clock(ns, rfc, utc) {
    if (utc && rfc) return rfc.slice(0, 23).replace("T", " ");
    const n = BigInt(ns);
    const ms = n / 1000000n - (n < 0n && n % 1000000n !== 0n ? 1n : 0n); // floored
    const d = new Date(Number(ms));
    if (Number.isNaN(d.getTime())) return rfc ? rfc.slice(0, 23).replace("T", " ") : String(ns);
    const frac = pad(Number(((ms % 1000n) + 1000n) % 1000n), 3);
    if (utc) {
      return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ` +
        `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}.${frac}`;
    }
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${frac}`;
  }

  // An RFC 3339 text (the sidebar's last line) to the second, in the chosen zone.
  function shortClock(rfc) {
    const ms = Date.parse(rfc);
    if (Number.isNaN(ms)) return rfc.slice(0, 19).replace("T", " ");
    return clock(String(BigInt(ms) * 1000000n), rfc, view.utc).slice(0, 19);
  }

  // How long ago (pure): "just now", "42 s ago", "3 min ago", "5 h ago", "2 days ago".
  function ago(ms) {
    const s = Math.round(Math.abs(ms) / 1000);
    const [n, unit] = s < 5 ? [0, ""] : s < 60 ? [s, "s"] : s < 3600 ? [Math.floor(s / 60), "min"]
      : s < 86400 ? [Math.floor(s / 3600), "h"] : [Math.floor(s / 86400), "day"];
    if (!unit) return "just now";
    const said = `${n} ${unit}${unit === "day" && n !== 1 ? "s" : ""}`;
    return ms < 0 ? `in ${said}` : `${said} ago`;
  }

  function browserZone() {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || "this browser's zone";
  }

  function zoneName() {
    return view.utc ? "UTC" : browserZone();
  }

  function redrawTimes() {
    $("tz").textContent = view.utc ? "UTC" : "local";
    $("tz").title = `times in ${zoneName()}: click for ${view.utc ? "this browser's zone" : "UTC"}`;
    for (const node of document.querySelectorAll("#lines [data-ns] > .ts")) {
      node.textContent = clock(node.parentNode.dataset.ns, node.dataset.rfc, view.utc);
    }
    drawContainers();
    drawHistogram();
  }

  function timeNode(ns, rfc) {
    const node = el("span", "ts", clock(ns, rfc, view.utc));
    node.dataset.rfc = rfc;
    return node;
  }

  // -- a link to a line ---------------------------------------------------------------------
  function lineUrl(id) {
    const p = new URLSearchParams();
    if (view.service) p.set("service", view.service);
    for (const c of view.selected) p.append("c", c);
    p.set("at", String(id));
    return location.origin + "/?" + p.toString();
  }

  async function copyLink(button) {
    const url = lineUrl(button.parentNode.dataset.id);
    try {
      await navigator.clipboard.writeText(url); // only where allowed: a secure context
      button.classList.add("done");
      button.textContent = "✓";
      setTimeout(() => { button.classList.remove("done"); button.textContent = "#"; }, 1200);
      say(`copied a link to line ${button.parentNode.dataset.id}`);
    } catch (e) { // no clipboard here (plain http beyond loopback): the URL, selected
      let box = $("copied");
      if (!box) {
        box = el("input");
        box.id = "copied";
        box.readOnly = true;
        box.addEventListener("blur", () => box.remove());
        box.addEventListener("keydown", (k) => { if (k.key === "Escape") box.blur(); });
        document.querySelector("main").append(box);
      }
      box.value = url;
      box.focus();
      box.select();
      say("the link is selected: press Ctrl-C (⌘-C) to copy it");
    }
  }

  function say(text) {
    const status = $("status");
    status.classList.remove("error");
    status.replaceChildren(text);
  }

  function lineNode(row) {
    const node = el("div", "line " + row.stream);
    node.dataset.id = row.id;
    node.dataset.ns = row.ns;
    const copy = el("button", "copy", "#");
    copy.type = "button";
    copy.title = "copy a link to this line";
    copy.tabIndex = -1;
    node.append(copy);
    node.append(timeNode(row.ns, row.ts));
    // Of several hosts (a name or a service two hosts share, a label anyone may set): the
    // host with the name, or a line of one could pass for the other's.
    node.append(stored("span", colour(row.cid), view.manyHosts ? `${row.host}/${row.name}` : row.name));
    if (row.level) node.append(el("span", "lvl lvl-" + LEVELS[row.level], LEVELS[row.level]));
    node.append(message(row.msg));
    return node;
  }

  function gapNode(gap) {
    const node = el("div", "gap");
    node.dataset.ns = gap.ns;
    escaped(`${gap.name}: lines lost — ${gap.reason}`, node, []);
    return node;
  }

  function eventNode(event) { // a container's life (die, oom, ...): text, never markup
    const node = el("div", "event");
    node.dataset.ns = event.ns;
    node.append(timeNode(event.ns, event.ts));
    const said = el("span", "what");
    escaped(`${event.name}: ${event.what}`, said, []);
    node.append(said);
    return node;
  }

  // -- history (scroll back) and search ------------------------------------------------------
  async function loadOlder() {
    if (view.loading || view.done) return;
    view.loading = true;
    const generation = view.generation;
    const extra = { limit: String(PAGE) };
    if (view.oldest) extra.before = view.oldest;
    if (view.at) extra.at = view.at; // a line's link: the first page is around it
    const box = $("lines");
    try {
      const response = await fetch("/api/lines?" + query(extra).toString());
      if (!response.ok) { // a bad parameter: the reason, as the server gave it
        const status = $("status");
        status.replaceChildren();
        status.classList.add("error");
        escaped(await refusal(response), status, []);
        view.done = true;
        view.refused = true;
        return;
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffered = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (generation !== view.generation) {
          reader.cancel();
          return;
        }
        if (value) buffered += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffered.indexOf("\n")) >= 0) {
          const chunk = JSON.parse(buffered.slice(0, cut));
          buffered = buffered.slice(cut + 1);
          prepend(chunk, box);
        }
        if (done) break;
      }
    } finally {
      if (generation === view.generation) view.loading = false;
    }
  }

  function prepend(chunk, box) {
    const items = chunk.rows.map((r) => [BigInt(r.ns), r.id, lineNode(r)]);
    for (const g of chunk.gaps) items.push([BigInt(g.ns), -1, gapNode(g)]);
    for (const e of chunk.events || []) items.push([BigInt(e.ns), -1, eventNode(e)]);
    items.sort((a, b) => (a[0] === b[0] ? a[1] - b[1] : a[0] < b[0] ? -1 : 1));
    const before = box.scrollHeight - box.scrollTop;
    const first = box.firstChild;
    for (const [, , node] of items) box.insertBefore(node, first);
    box.scrollTop = box.scrollHeight - before; // the rows in view stay where they were
    if (chunk.position) {
      view.position = view.position || chunk.position;
      for (const r of chunk.rows) view.firstIds.add(r.id);
    }
    if (chunk.next) view.oldest = chunk.next;
    if (chunk.done) view.done = true;
    if (chunk.at) { // a line's link: its container, and whether newer lines are left out
      if (!view.selected.length && !view.service) {
        view.selected = [chunk.at.cid];
        drawContainers();
        writeUrl();
      }
      $("newer").hidden = !chunk.at.newer;
    }
    const shown = box.querySelectorAll(".line").length;
    const status = $("status");
    status.classList.remove("error");
    status.replaceChildren();
    const one = !view.service && view.selected.length === 1 &&
      view.containers.find((c) => c.id === view.selected[0]);
    box.classList.toggle("one", Boolean(one));
    if (one) status.append(stored("span", "title", one.name));
    if (view.service) {
      const service = serviceOf(view.service);
      const title = stored("span", "title", view.service);
      if (service) title.append(` · ${service.containers.length} containers`);
      status.append(title);
    }
    status.append(`${shown.toLocaleString()} lines shown` +
      (chunk.scanned ? `; searched ${chunk.scanned.toLocaleString()} rows` : "") +
      (view.done ? "; the beginning of the stored history" : ""));
  }

  // Why a request was refused: a 400 says why in JSON; a 401, 429 or 503 in a line of text.
  async function refusal(response) {
    const said = await response.text();
    let reason = said.trim() || response.statusText;
    try {
      reason = JSON.parse(said).error || reason;
    } catch (e) {
      // text, as it is
    }
    return String(reason);
  }

  // A link to a line (`?at=ID`; an older alert's link said `#line-ID`): marked, in view.
  function markLine() {
    const named = /^#line-(\d+)$/.exec(location.hash);
    const id = view.at || (named && named[1]);
    const node = id && $("lines").querySelector(`.line[data-id="${id}"]`);
    if (!node) return;
    node.classList.add("marked");
    node.scrollIntoView({ block: "center" });
  }

  // -- live tail ----------------------------------------------------------------------------
  function atBottom(box) {
    return box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  }

  function follow() {
    if (view.stream) view.stream.close();
    view.stream = null;
    if ($("until").value.trim()) return; // a view that ends in the past has no live tail
    if (!view.position) return; // refused, or a line's context short of the newest lines
    const stream = new EventSource("/api/tail?" + query(view.position ? { after: view.position } : {}).toString());
    view.stream = stream;
    stream.addEventListener("rows", (event) => {
      const rows = JSON.parse(event.data);
      const box = $("lines");
      if (!view.following || !atBottom(box)) { // held until the reader comes back (or f)
        view.pending.push(...rows);
        if (view.pending.length > KEPT) { // too many to keep: the newest page, when back
          view.overflowed = true;
          view.pending = view.pending.slice(-KEPT);
        }
        $("live").hidden = false;
        $("live").textContent = view.overflowed
          ? `more than ${KEPT} new lines below: back to live`
          : `${view.pending.length} new lines below: back to live`;
        return;
      }
      append(rows, box);
    });
  }

  function append(rows, box) {
    for (const r of rows) {
      if (!view.firstIds.has(r.id)) box.append(lineNode(r));
    }
    trim(box);
    box.scrollTop = box.scrollHeight;
  }

  // A live tail keeps the newest KEPT lines on the page (a busy container's tail grew until
  // the tab died); the ones let go are read again by scrolling back, from the oldest kept.
  function trim(box) {
    // Not while a page scrolled back to streams in: it goes above the lines trimmed.
    if (box.childElementCount <= KEPT || view.loading) return;
    while (box.childElementCount > KEPT || (box.firstChild && !box.firstChild.dataset.id)) {
      box.firstChild.remove();
    }
    const first = box.firstChild;
    if (first) {
      view.oldest = `${first.dataset.ns}:${first.dataset.id}`;
      view.done = false;
    }
  }

  function release() { // the held rows, shown, and the view back at the newest
    if (view.overflowed) { // more than the page keeps came meanwhile: the newest page
      view.at = ""; // not a linked line's context again
      restart();
      return;
    }
    const box = $("lines");
    const rows = view.pending;
    view.pending = [];
    $("live").hidden = true;
    append(rows, box);
  }

  function setFollowing(on) {
    view.following = on;
    $("follow").setAttribute("aria-pressed", String(on));
    $("follow").textContent = on ? "live" : "held";
    if (on) release();
  }


  // -- the volume histogram: lines per time bucket, from the stored counts (never the rows) --
  // Drawn as SVG nodes (classes give the colours: dark mode follows); text only through
  // textContent. A drag on it picks a range (since/until, in the URL); "zoom out" goes back.
  const SVG = "http://www.w3.org/2000/svg";
  const MINUTE_MS = 60000;
  const hist = { data: null, generation: 0, by: "stream", drag: null, zooms: [] };

  function svgEl(tag, cls, attrs) {
    const node = document.createElementNS(SVG, tag);
    if (cls) node.setAttribute("class", cls);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    return node;
  }

  function titled(node, text) { // a hover text: plain text, never markup
    const title = svgEl("title");
    title.textContent = visibleText(text);
    node.append(title);
    return node;
  }

  // A time as a since/until value (pure): RFC 3339 in UTC, to the second.
  function isoMs(ms) {
    return new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
  }

  // A drag from fraction `a` to `b` of the drawn span (pure): since and until on whole
  // minutes (the counts' grain, so the bars count exactly the lines shown), a minute at least.
  function dragRange(startMs, endMs, a, b) {
    const span = endMs - startMs;
    const lo = Math.floor((startMs + Math.min(a, b) * span) / MINUTE_MS) * MINUTE_MS;
    const hi = Math.max(lo + MINUTE_MS,
      Math.ceil((startMs + Math.max(a, b) * span) / MINUTE_MS) * MINUTE_MS);
    return [isoMs(lo), isoMs(hi)];
  }

  // Zoom out (pure): twice the span, around its middle; a range reaching now (or open) is
  // left open (until: "", the live end).
  function widened(loMs, hiMs, nowMs, open) {
    const span = Math.max(MINUTE_MS, hiMs - loMs);
    if (open || hiMs + span / 2 >= nowMs) {
      return [isoMs(Math.floor((Math.min(hiMs, nowMs) - 2 * span) / MINUTE_MS) * MINUTE_MS), ""];
    }
    return [isoMs(Math.floor((loMs - span / 2) / MINUTE_MS) * MINUTE_MS),
      isoMs(Math.ceil((hiMs + span / 2) / MINUTE_MS) * MINUTE_MS)];
  }

  // A bucket's length as people say it (pure): "1 min", "10 min", "1 h", "1 day", "7 days".
  function bucketText(ms) {
    const m = Math.round(ms / MINUTE_MS);
    if (m < 60) return `${m} min`;
    if (m < 1440) return `${m / 60} h`;
    return `${m / 1440} day${m === 1440 ? "" : "s"}`;
  }

  async function loadHistogram() {
    const generation = ++hist.generation;
    let data = null;
    try {
      const response = await fetch("/api/histogram?" + query({ by: hist.by }).toString());
      if (response.ok) data = await response.json(); // refused: the lines say why
    } catch (e) {
      data = null;
    }
    if (generation !== hist.generation) return;
    hist.data = data;
    drawHistogram();
  }

  function stamp(ms, text) { // a bucket's time as the page shows times (UTC or local)
    const full = clock(String(BigInt(Math.round(ms)) * 1000000n), null, view.utc);
    return text === "day" ? full.slice(5, 10) : text === "minute" ? full.slice(11, 16)
      : text === "both" ? full.slice(5, 16) : full.slice(0, 16);
  }

  function drawHistogram() {
    const svg = $("hist-chart");
    const data = hist.data;
    svg.replaceChildren();
    $("hist-legend").replaceChildren();
    $("hist-note").textContent = "";
    $("zoom-out").disabled = !hist.zooms.length && !$("since").value.trim();
    for (const by of ["stream", "level"]) $("by-" + by).setAttribute("aria-pressed", String(hist.by === by));
    if (!data) return;
    const W = svg.clientWidth || 800;
    const H = svg.clientHeight || 64;
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    const top = 9;
    const bottom = H - 13; // the time labels under the bars
    const span = Math.max(1, data.end_ms - data.start_ms);
    const x = (ms) => ((ms - data.start_ms) / span) * W;
    const most = Math.max(1, ...data.buckets.map((b) => b.lines));
    const keys = data.keys.filter((k) => /^[a-z]+$/.test(k)); // class names: letters only
    svg.append(svgEl("line", "axis", { x1: 0, x2: W, y1: bottom + 0.5, y2: bottom + 0.5 }));
    for (const b of data.buckets) {
      const x0 = x(b.ms);
      const x1 = x(Math.min(b.ms + data.bucket_ms, data.end_ms));
      const w = Math.max(1, x1 - x0 - (x1 - x0 > 4 ? 1 : 0));
      let y = bottom;
      const parts = [];
      for (const key of keys) {
        const n = b.by[key] || 0;
        if (!n) continue;
        const h = Math.max(1, (n / most) * (bottom - top));
        svg.append(svgEl("rect", "bar k-" + key, { x: x0, y: y - h, width: w, height: h }));
        y -= h;
        parts.push(`${key} ${n.toLocaleString()}`);
      }
      const hit = svgEl("rect", "hit", { x: x0, y: 0, width: Math.max(1, x1 - x0), height: bottom });
      hit.dataset.ms = String(b.ms);
      svg.append(titled(hit, `${stamp(b.ms)} + ${bucketText(data.bucket_ms)}: ` +
        `${b.lines.toLocaleString()} lines` + (parts.length > 1 ? ` (${parts.join(", ")})` : "")));
    }
    // Time labels: about one per 110 px, on bucket starts.
    const every = Math.max(1, Math.ceil(data.buckets.length / Math.max(1, Math.floor(W / 110))));
    const grain = data.bucket_ms >= 86400000 ? "day" : span > 86400000 ? "both" : "minute";
    const wide = grain === "both" ? 66 : 36; // a label's width: none is cut at the edge
    data.buckets.forEach((b, i) => {
      const at = x(b.ms);
      if (i % every || at + wide > W) return;
      svg.append(svgEl("line", "tick-mark", { x1: at, x2: at, y1: bottom, y2: bottom + 3 }));
      const label = svgEl("text", "tick", { x: at + 2, y: H - 2 });
      label.textContent = stamp(b.ms, grain);
      svg.append(label);
    });
    // The span's gaps (lines lost) and lives (die, oom, restart...), marked over the bars.
    for (const g of data.gaps) {
      const at = x(Number(BigInt(g.ns) / 1000000n));
      const mark = svgEl("g", "hmark gap");
      mark.append(svgEl("line", "", { x1: at, x2: at, y1: top, y2: bottom }));
      mark.append(svgEl("path", "", { d: `M${at - 4} 0 L${at + 4} 0 L${at} 7 Z` }));
      svg.append(titled(mark, `${g.name}: lines lost — ${g.reason}`));
    }
    const bad = (e) => /^(die|oom|kill|health_status \(unhealthy)/.test(e.what);
    for (const e of [...data.events].sort((a, b) => bad(a) - bad(b))) { // a death on top
      const at = x(Number(BigInt(e.ns) / 1000000n));
      const mark = svgEl("g", "hmark ev" + (bad(e) ? " bad" : ""));
      mark.append(svgEl("line", "", { x1: at, x2: at, y1: top, y2: bottom }));
      mark.append(svgEl("circle", "", { cx: at, cy: 4, r: 3.5 }));
      svg.append(titled(mark, `${stamp(Number(BigInt(e.ns) / 1000000n))} ${e.name}: ${e.what}`));
    }
    svg.append(svgEl("rect", "sel", { x: 0, y: 0, width: 0, height: bottom }));
    // The legend: each key's lines, the bars' length, and what the counts cover.
    const legend = $("hist-legend");
    legend.append(el("span", "total", `${data.total.toLocaleString()} lines`));
    for (const key of keys) {
      const n = data.buckets.reduce((sum, b) => sum + (b.by[key] || 0), 0);
      legend.append(el("span", "sw k-" + key), `${key} ${n.toLocaleString()}`);
    }
    legend.append(` · ${bucketText(data.bucket_ms)} bars · ${stamp(data.lo_ms)} – ${stamp(data.hi_ms)}` +
      ` ${view.utc ? "UTC" : ""}`);
    legend.title = "drag on the bars to see that range; click one to see its time";
    if (data.all_lines) {
      $("hist-note").textContent = "counts: all lines of the selection";
      $("hist-note").title = "the search and where narrow the lines below, not these counts";
    }
  }

  function fractionAt(event) {
    const box = $("hist-chart").getBoundingClientRect();
    return Math.min(1, Math.max(0, (event.clientX - box.left) / Math.max(1, box.width)));
  }

  function drawSelection() {
    const sel = $("hist-chart").querySelector(".sel");
    if (!sel || !hist.drag) return;
    const W = $("hist-chart").clientWidth;
    sel.setAttribute("x", String(Math.min(hist.drag.from, hist.drag.to) * W));
    sel.setAttribute("width", String(Math.abs(hist.drag.to - hist.drag.from) * W));
  }

  function showRange(since, until) { // a new range: the one before is kept for zoom out
    hist.zooms.push([$("since").value, $("until").value]);
    $("since").value = since;
    $("until").value = until;
    view.at = "";
    restart();
  }

  function endDrag(event) {
    const drag = hist.drag;
    hist.drag = null;
    const data = hist.data;
    if (!drag || !data) return;
    drag.to = fractionAt(event);
    const W = $("hist-chart").clientWidth || 1;
    if (Math.abs(drag.to - drag.from) * W < 4) { // a click: the bucket under it
      const ms = data.start_ms + drag.to * (data.end_ms - data.start_ms);
      const start = data.start_ms + Math.floor((ms - data.start_ms) / data.bucket_ms) * data.bucket_ms;
      showRange(isoMs(start), isoMs(Math.min(start + data.bucket_ms, data.end_ms)));
      return;
    }
    showRange(...dragRange(data.start_ms, data.end_ms, drag.from, drag.to));
  }

  function zoomOut() {
    if (hist.zooms.length) {
      const [since, until] = hist.zooms.pop();
      $("since").value = since;
      $("until").value = until;
    } else if (hist.data && $("since").value.trim()) {
      const [since, until] = widened(hist.data.lo_ms, hist.data.hi_ms, Date.now(),
        !$("until").value.trim());
      $("since").value = since;
      $("until").value = until;
    } else {
      return;
    }
    view.at = "";
    restart();
  }

  function wireHistogram() {
    hist.by = localStorage.getItem("logagent.by") === "level" ? "level" : "stream";
    const svg = $("hist-chart");
    svg.addEventListener("mousedown", (event) => {
      if (!hist.data || event.button !== 0) return;
      event.preventDefault();
      const at = fractionAt(event);
      hist.drag = { from: at, to: at };
      drawSelection();
    });
    window.addEventListener("mousemove", (event) => {
      if (!hist.drag) return;
      hist.drag.to = fractionAt(event);
      drawSelection();
    });
    window.addEventListener("mouseup", endDrag);
    for (const by of ["stream", "level"]) {
      $("by-" + by).addEventListener("click", () => {
        hist.by = by;
        localStorage.setItem("logagent.by", by);
        loadHistogram();
      });
    }
    $("zoom-out").addEventListener("click", zoomOut);
    let pending = 0;
    window.addEventListener("resize", () => {
      clearTimeout(pending);
      pending = setTimeout(drawHistogram, 100);
    });
  }

  // -- wiring -------------------------------------------------------------------------------
  // The hosts of the view's containers (every container's, with none chosen).
  function viewHosts() {
    const service = view.service && serviceOf(view.service);
    const ids = service ? [...view.selected, ...service.containers] : view.selected;
    const chosen = ids.length ? view.containers.filter((c) => ids.includes(c.id)) : view.containers;
    return new Set(chosen.map((c) => c.host));
  }

  async function restart() {
    view.generation++;
    view.manyHosts = viewHosts().size > 1 && !$("host").value;
    view.oldest = null;
    view.position = null;
    view.firstIds = new Set();
    view.done = false;
    view.loading = false;
    view.pending = [];
    view.overflowed = false;
    view.refused = false;
    $("live").hidden = true;
    $("newer").hidden = true;
    $("lines").replaceChildren();
    writeUrl();
    loadHistogram(); // beside the lines, not before them
    await loadOlder();
    const box = $("lines");
    box.scrollTop = box.scrollHeight;
    markLine();
    follow();
  }

  // -- the alerts page (/alerts): the rules and what they fired, text from the store escaped
  // like a line (an alert's line is one); each alert links to its lines in the log view.
  function duration(seconds) { // 90 → "1m30s": as the config writes it
    let left = Math.round(seconds);
    let out = "";
    for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60], ["s", 1]]) {
      if (left >= size) {
        out += Math.floor(left / size) + unit;
        left %= size;
      }
    }
    return out || "0s";
  }

  function shortTime(ts) {
    return ts ? ts.slice(0, 23).replace("T", " ") : "–";
  }

  function cells(row, ...nodes) {
    for (const node of nodes) {
      const td = el("td");
      td.append(node);
      row.append(td);
    }
  }

  function emptyRow(body, columns, text) {
    const td = el("td", "none", text);
    td.colSpan = columns;
    const row = el("tr");
    row.append(td);
    body.append(row);
  }

  function drawRules(rules, chosen) {
    const body = $("rules").tBodies[0];
    body.replaceChildren();
    for (const r of rules) {
      const row = el("tr", r.name === chosen ? "on" : "");
      const name = stored("a", "rule", r.name);
      name.href = "?rule=" + encodeURIComponent(r.name);
      name.title = "this rule's alerts only";
      cells(row, name, stored("code", "", r.watches),
        stored("span", "", r.names.length ? r.names.join(", ") : "every container"),
        document.createTextNode(String(r.threshold)),
        document.createTextNode(duration(r.window_s)),
        document.createTextNode(duration(r.cooldown_s)),
        stored("span", "", r.destinations.join(", ")),
        document.createTextNode(String(r.sent)),
        document.createTextNode(String(r.pending)),
        document.createTextNode(shortTime(r.last)));
      body.append(row);
    }
    if (!rules.length) emptyRow(body, 10, "no rules in this viewer's config ([[alerts.rules]])");
  }

  function deliveryNode(d) {
    const node = el("div", "delivery");
    const known = d.status === "sent" || d.status === "pending";
    node.append(known ? el("span", "badge " + d.status, d.status) : stored("span", "badge", d.status));
    node.append(" ", stored("span", "dest", d.destination));
    node.append(` · ${d.attempts} ${d.attempts === 1 ? "attempt" : "attempts"}`);
    if (d.error) node.append(" · ", stored("span", "error", d.error));
    return node;
  }

  function alertRow(a) {
    const row = el("tr", "alert");
    row.dataset.id = a.id;
    const when = el("span", "ts", (a.first ? shortTime(a.first) + " to\n" : "") + shortTime(a.ts));
    when.title = "fired " + shortTime(a.created);
    if (a.kind === "summary") when.append(el("div", "meta", "summary: matches past max_age"));
    const who = el("span");
    who.append(stored("span", "name", a.name || a.cid || "?"), stored("div", "meta", a.host));
    const what = el("span", "msg" + (a.kind === "event" ? " event-text" : ""));
    let text = a.line;
    if (text.length > SHOWN) text = text.slice(0, SHOWN) + " …";
    ansi(text, what);
    const count = el("span", "", a.count === null ? "" : String(a.count));
    if (a.more) count.append(el("span", "meta", ` +${a.more} held back`));
    const deliveries = el("div");
    for (const d of a.deliveries) deliveries.append(deliveryNode(d));
    const link = a.lines?.startsWith("/?") ? el("a", "context", "lines") : el("span");
    if (link.tagName === "A") {
      link.href = a.lines; // the viewer's own URL: the container, from before to after it
      link.title = "its container's lines around it";
    }
    cells(row, when, stored("span", "", a.rule), who, what, count, deliveries, link);
    return row;
  }

  async function alertsPage() {
    const asked = new URLSearchParams();
    const given = new URLSearchParams(location.search);
    for (const key of ["rule", "limit"]) if (given.get(key)) asked.set(key, given.get(key));
    const response = await fetch("/api/alerts?" + asked.toString());
    const status = $("alerts-status");
    if (!response.ok) {
      escaped(await refusal(response), status, []);
      return;
    }
    const body = await response.json();
    drawRules(body.rules, body.rule);
    if (body.rule) {
      const all = el("a", "", "all rules");
      all.href = "/alerts";
      $("history-of").append("of ", stored("span", "", body.rule), " · ", all);
    }
    const list = $("alerts").tBodies[0];
    for (const a of body.alerts) list.append(alertRow(a));
    if (!body.alerts.length) emptyRow(list, 7, "no alerts in the store");
    status.textContent = `${body.alerts.length.toLocaleString()} alerts, newest first`;
    if (body.more && asked.get("limit") !== String(MOST_ALERTS)) {
      const more = el("a", "", "more");
      asked.set("limit", String(MOST_ALERTS));
      more.href = "?" + asked.toString();
      status.append(" (older ones are stored: ", more, ")");
    }
  }

  if (typeof module === "object" && module.exports) { // node: tests/unit/test_viewer_js.py
    module.exports = { pieces, visibleText, logfmt, structured, sgr, duration, clock, ago,
      dragRange, widened, bucketText };
    return;
  }

  document.addEventListener("DOMContentLoaded", async () => {
    if ($("alerts-page")) {
      await alertsPage();
      return;
    }
    readUrl();
    view.utc = localStorage.getItem("logagent.time") !== "local";
    redrawTimes();
    wireHistogram();
    $("filter").addEventListener("input", drawContainers);
    $("tz").addEventListener("click", () => {
      view.utc = !view.utc;
      localStorage.setItem("logagent.time", view.utc ? "utc" : "local");
      redrawTimes();
    });
    $("follow").addEventListener("click", () => setFollowing(!view.following));
    $("help-button").addEventListener("click", () => { $("help").hidden = !$("help").hidden; });
    $("newer").addEventListener("click", () => {
      view.at = "";
      restart();
    });
    $("lines").addEventListener("click", (event) => {
      const button = event.target.closest(".copy");
      if (button) copyLink(button);
    });
    // A time's title says how long ago it was, when it is pointed at (never stale).
    $("lines").addEventListener("mouseover", (event) => {
      const ts = event.target.closest(".ts");
      if (!ts || !ts.parentNode.dataset.ns) return;
      const ms = Number(BigInt(ts.parentNode.dataset.ns) / 1000000n);
      const other = clock(ts.parentNode.dataset.ns, ts.dataset.rfc, !view.utc);
      ts.title = `${ago(Date.now() - ms)} · ${other} ${view.utc ? browserZone() : "UTC"}`;
    });
    document.addEventListener("keydown", (event) => {
      if (event.ctrlKey || event.metaKey || event.altKey) return;
      const typing = event.target.closest && event.target.closest("input, select, textarea");
      if (event.key === "Escape") {
        $("help").hidden = true;
        $("dl").open = false;
        if (typing) event.target.blur();
        return;
      }
      if (typing) return;
      if (event.key === "/") {
        event.preventDefault();
        $("q").focus();
        $("q").select();
      } else if (event.key === "f") {
        setFollowing(!view.following);
      } else if (event.key === "?") {
        $("help").hidden = !$("help").hidden;
      }
    });
    $("query").addEventListener("submit", (event) => {
      event.preventDefault();
      hist.zooms = []; // a range typed: zoom out widens it from here
      view.at = ""; // a new filter: the newest lines, not a line's context
      restart();
    });
    for (const button of document.querySelectorAll("[data-last]")) {
      button.addEventListener("click", () => {
        $("since").value = button.dataset.last;
        $("until").value = "";
        view.at = ""; // a new range: a linked line may be outside it
        hist.zooms = [];
        restart();
      });
    }
    $("lines").addEventListener("scroll", () => {
      const box = $("lines");
      if (box.scrollTop < 200) loadOlder();
      if (view.following && atBottom(box) && view.pending.length) release();
    });
    $("live").addEventListener("click", () => setFollowing(true));
    await loadContainers();
    await restart();
    setInterval(loadContainers, 10000);
  });
})();
