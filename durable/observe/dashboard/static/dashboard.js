// The dashboard page: polls this listener's read-only views and reads live tails over WebSockets.
// No framework and no build step; every value from the server is set as text, never as markup.
"use strict";

const POLL_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";
const $ = (selector) => document.querySelector(selector);

function el(tag, attrs = {}, ...children) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = String(value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

// replaceChildren, leaving out the parts a view does not have (null)
const fill = (node, ...children) => node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));

async function getJSON(path, options) {
  const response = await fetch(path, options);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function postJSON(path, body) {
  return getJSON(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
}

function say(text, bad = false) {
  const status = $("#status");
  status.textContent = text;
  status.classList.toggle("bad", bad);
}

const fmt = (value, unit = "") => (value === null || value === undefined ? "–" : `${value}${unit}`);

function socketURL(path) {  // ws:// or wss://, as this page itself was served (behind a TLS proxy too)
  const url = new URL(path, location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

// -- tabs ----------------------------------------------------------------------------------------
const tabs = () => [...document.querySelectorAll('[role="tab"]')];
let current = "workers";

function show(name) {
  current = name;
  for (const tab of tabs()) {
    const on = tab.id === `tab-${name}`;
    tab.setAttribute("aria-selected", String(on));
    tab.tabIndex = on ? 0 : -1;
    document.getElementById(tab.getAttribute("aria-controls")).hidden = !on;
  }
  if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
  refresh();
}

function setUpTabs() {
  for (const tab of tabs()) {
    tab.addEventListener("click", () => { unwatch(); show(tab.id.slice(4)); });
    tab.addEventListener("keydown", (event) => {  // arrow keys move between tabs (WAI-ARIA tabs pattern)
      const all = tabs();
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (!step) return;
      const next = all[(all.indexOf(tab) + step + all.length) % all.length];
      next.focus();
      show(next.id.slice(4));
    });
  }
  const wanted = location.hash.slice(1);
  if (tabs().some((tab) => tab.id === `tab-${wanted}`)) show(wanted);
}

// -- workers ---------------------------------------------------------------------------------------
function sparkline(points, key, second) {
  const values = points.map((p) => p[key]).concat(second ? points.map((p) => p[second]) : []);
  const top = Math.max(1e-9, ...values.filter((v) => v !== null && v !== undefined));
  const line = (field, cls) => {
    const coords = points.map((p, i) => p[field] === null || p[field] === undefined ? null
      : `${(i / Math.max(1, points.length - 1)) * 100},${30 - (p[field] / top) * 28}`).filter(Boolean);
    return el("svg:polyline", { points: coords.join(" "), class: cls });
  };
  return el("svg:svg", { viewBox: "0 0 100 32", preserveAspectRatio: "none", role: "img",
    "aria-label": `${key} over the last ${points.length} samples, peak ${top.toFixed(2)}` },
  line(key), second ? line(second, "second") : null);
}

function workerCard(worker, points) {
  const last = points[points.length - 1] || {};
  const chart = (label, key, second) => el("div", { class: "chart" }, el("span", { text: label }), sparkline(points, key, second));
  return el("article", { class: "card", "data-worker": worker.name },
    el("h3", { text: worker.name }),
    el("a", { href: worker.url, text: worker.url || "", rel: "noreferrer" }),
    el("div", { class: "figures" },
      el("div", { class: "figure" }, el("b", { class: "requests", text: worker.requests }), "requests"),
      el("div", { class: "figure" }, el("b", { text: fmt(last.rps) }), "req/s"),
      el("div", { class: "figure" }, el("b", { text: fmt(worker.inFlight) }), "in flight"),
      el("div", { class: "figure" }, el("b", { text: fmt(last.errorRatio === undefined ? null : (last.errorRatio * 100).toFixed(1), " %") }), "errors"),
      el("div", { class: "figure" }, el("b", { text: `${fmt(last.p50Ms)} / ${fmt(last.p99Ms)}` }), "p50 / p99 ms"),
      el("div", { class: "figure" }, el("b", { text: fmt(last.cpuMsPerRequest) }), "CPU ms/req")),
    chart("req/s", "rps"), chart("error ratio", "errorRatio"), chart("p50 · p99 ms", "p50Ms", "p99Ms"),
    chart("CPU ms/req", "cpuMsPerRequest"));
}

// the box a binding points at: a service by its name (a worker's own box when it runs here), else kind: target
const boxOf = (edge) => (edge.kind === "service" ? edge.target : `${edge.kind}: ${edge.target}`);

function bindingsGraph(workers) {
  const names = workers.map((w) => w.name);
  const targets = [];
  for (const worker of workers) {
    for (const edge of worker.bindings) {
      const box = boxOf(edge);
      if (!names.includes(box) && !targets.includes(box)) targets.push(box);
    }
  }
  const rowH = 34, width = 900;
  const height = Math.max(names.length, targets.length) * rowH + 20;
  const at = new Map();
  names.forEach((name, i) => at.set(name, [20, 10 + i * rowH]));
  targets.forEach((label, i) => at.set(label, [560, 10 + i * rowH]));
  const svg = el("svg:svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "bindings between workers, objects and storage" });
  for (const worker of workers) {
    for (const edge of worker.bindings) {
      const to = boxOf(edge);
      const [x1, y1] = at.get(worker.name), [x2, y2] = at.get(to);
      const x2a = names.includes(to) ? x2 + 300 : x2;  // a worker bound by another: the edge loops back to its box
      svg.append(el("svg:line", { x1: x1 + 300, y1: y1 + 12, x2: x2a, y2: y2 + 12 }),
        el("svg:title", { text: `${worker.name} ${edge.binding} → ${to}` }));
    }
  }
  for (const [label, [x, y]] of at) {
    svg.append(el("svg:rect", { x, y, width: 300, height: 24, rx: 4 }),
      el("svg:text", { x: x + 8, y: y + 16, text: label }));
  }
  const list = el("ul", {}, workers.flatMap((w) => w.bindings.map((b) =>
    el("li", { text: `${w.name} · ${b.binding} → ${b.kind === "service" ? b.target : `${b.kind} ${b.target}`}` }))));
  return [svg, el("details", {}, el("summary", { text: "as a list" }), list)];
}

async function refreshWorkers() {
  const [overview, series] = await Promise.all([getJSON("api/overview"), getJSON("api/series")]);
  $("#node").textContent = `· node ${overview.node} · code ${overview.version}`;
  $("#step").textContent = series.stepS;
  fill($("#workers"), ...overview.workers.map((w) => workerCard(w, series.workers[w.name] || [])));
  if (!$("#graph").hasChildNodes()) fill($("#graph"), ...bindingsGraph(overview.workers));
  return overview;
}

// -- objects ---------------------------------------------------------------------------------------
let classesShown = "";

async function refreshObjects() {
  const overview = await getJSON("api/overview");
  // redrawn only when something in it changed: an opened list must not snap shut under a click
  const shown = JSON.stringify(overview.workers.map((w) => w.classes.map((c) =>
    [c.class, c.live, c.webSockets, c.liveObjects.map((o) => o.id)])));
  if (shown === classesShown) return;
  classesShown = shown;
  const rows = overview.workers.flatMap((w) => w.classes.map((c) => el("tr", { "data-class": `${w.name}.${c.class}` },
    el("td", { text: w.name }), el("td", { text: c.class }),
    el("td", {}, String(c.live), c.liveObjects.length ? el("details", {}, el("summary", { text: "instances" }),
      el("ul", {}, c.liveObjects.map((o) => el("li", {}, el("button", { type: "button", text: o.name || o.id.slice(0, 16),
        onclick: () => inspect(w.name, c.class, o.id) }))))) : null),
    el("td", { text: c.webSockets }), el("td", { text: c.storage + (c.sql ? " + SQL" : "") }))));
  fill($("#classes tbody"), ...rows);
  const select = $("#find-class");
  const options = overview.workers.flatMap((w) => w.classes.map((c) => `${w.name}.${c.class}`));
  if (select.options.length !== options.length) {
    const chosen = select.value;
    select.replaceChildren(...options.map((o) => el("option", { value: o, text: o })));
    if (options.includes(chosen)) select.value = chosen;
  }
}

function keyTable(keys) {
  if (!keys.length) return el("p", { class: "muted", text: "no stored keys" });
  return el("table", { class: "keys" }, el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "key" }),
    el("th", { scope: "col", text: "value" }))),
  el("tbody", {}, keys.map((k) => el("tr", {}, el("td", { text: k.key }), el("td", {}, el("pre", { text: k.value }))))));
}

function sqlPanel(found) {
  if (!found.sqlTables.length) return null;
  const output = el("div", { "aria-live": "polite" });
  const query = el("textarea", { rows: 3, cols: 70, "aria-label": "read-only SQL query", spellcheck: "false" });
  query.value = `SELECT * FROM "${found.sqlTables[0].name}" LIMIT 20`;
  const run = async (event) => {
    event.preventDefault();
    try {
      const result = await postJSON("api/sql", { worker: found.worker, class: found.class, key: found.id, query: query.value });
      output.replaceChildren(el("table", {}, el("thead", {}, el("tr", {}, result.columns.map((c) => el("th", { text: c })))),
        el("tbody", {}, result.rows.map((r) => el("tr", {}, r.map((v) => el("td", { text: JSON.stringify(v) })))))));
    } catch (error) { output.replaceChildren(el("p", { class: "bad", text: error.message })); }
  };
  return el("div", {}, el("h3", { text: "SQL tables" }),
    el("ul", {}, found.sqlTables.map((t) => el("li", { text: `${t.name} (${t.rows} rows)` }))),
    el("form", { onsubmit: run }, query, el("button", { type: "submit", text: "Run (read-only)" })), output);
}

async function inspect(worker, className, key) {
  $("#find-class").value = `${worker}.${className}`;
  $("#find-key").value = key;
  try {
    const found = await getJSON(`api/object?${new URLSearchParams({ worker, class: className, key })}`);
    fill($("#object"), el("article", { class: "card object", "data-id": found.id },
      el("h3", { text: `${found.class} ${found.name ? `“${found.name}”` : ""}` }),
      el("p", { class: "muted", text: `id ${found.id} · ${found.live ? `live here, ${found.inflight} in flight` : "not live on this node (its invocations show on the node that runs it)"}` }),
      el("p", { text: `alarm: ${found.alarm || "none"}` }),
      el("p", { text: `open WebSockets: ${found.webSockets.length}${found.webSockets.length ? ` (tags: ${found.webSockets.map((w) => w.tags.join(",") || "–").join("; ")})` : ""}` }),
      keyTable(found.keys), found.moreKeys ? el("p", { class: "muted", text: "more keys not shown" }) : null,
      sqlPanel(found), watchPanel(found)));
  } catch (error) {
    fill($("#object"), el("p", { class: "bad", text: error.message }));
  }
}

let watching = [];  // the tails following one object's invocations
let watchButton = null;

function unwatch() {
  for (const ws of watching) ws.close(1000);
  watching = [];
  if (watchButton) {
    watchButton.textContent = "Watch invocations";
    watchButton.disabled = false;
  }
}

function watchPanel(found) {
  unwatch();
  const list = el("ol", { class: "invocations", "aria-label": "this object's invocations" });
  const button = el("button", { type: "button", text: "Watch invocations" });
  watchButton = button;
  button.addEventListener("click", async () => {
    unwatch();
    try {
      const { tails } = await postJSON("api/tails", { workers: [found.worker] });
      watching = tails.map((tail) => {
        const ws = new WebSocket(socketURL(tail.path), "trace-v1");
        ws.onopen = () => ws.send(JSON.stringify({ debug: false }));
        ws.onmessage = (message) => {
          const event = JSON.parse(message.data);
          if (event.durableObjectId !== found.id) return;
          list.prepend(el("li", { class: event.outcome === "ok" ? null : "bad",
            text: `${new Date(event.eventTimestamp).toLocaleTimeString()} ${describe(event)} ${event.outcome}` +
              (event.logs.length ? ` · ${event.logs.length} log line(s)` : "") }));
          while (list.children.length > 100) list.lastElementChild.remove();
        };
        return ws;
      });
      button.textContent = "Watching (from now)";
      button.disabled = true;
    } catch (error) { list.replaceChildren(el("li", { class: "bad", text: error.message })); }
  });
  return el("div", {}, el("h3", { text: "Invocations" }), button, list);
}

// -- cluster ---------------------------------------------------------------------------------------
async function refreshCluster() {
  const state = await getJSON("api/cluster");
  if (!state.clustered) {
    fill($("#cluster"), el("p", { class: "muted", text: "One node: no cluster (wrangler dev --nodes N or wrangler serve --cluster)." }));
    return;
  }
  const nodes = state.members.map((m) => m.nodeId);
  const namespaces = Object.keys(state.topEpochs).concat(Object.values(state.placed).flatMap(Object.keys))
    .filter((n, i, all) => all.indexOf(n) === i).sort();
  const members = el("table", { id: "members" }, el("thead", {}, el("tr", {}, ["node", "host", "pid", "version",
    "last beat", "shards placed", "leases held"].map((h) => el("th", { scope: "col", text: h })))),
  el("tbody", {}, state.members.map((m) => {
    const sum = (counts) => Object.values(counts || {}).reduce((a, b) => a + b, 0);
    return el("tr", { "data-node": m.nodeId },
      el("td", { text: m.nodeId + (m.nodeId === state.nodeId ? " (this page)" : "") }), el("td", { text: m.host }),
      el("td", { text: m.pid }), el("td", { text: m.version }), el("td", { text: `${m.lastBeatAgeS} s ago` }),
      el("td", { class: "placed", text: sum(state.placed[m.nodeId]) }), el("td", { class: "held", text: sum(state.owners[m.nodeId]) }));
  })));
  const cell = (node, namespace) => {
    const placed = (state.placed[node] || {})[namespace] || 0;
    const held = (state.owners[node] || {})[namespace] || 0;
    const bar = el("span", { class: "shards", "aria-hidden": "true" });
    bar.style.width = `${Math.round((placed / state.shardsPerNamespace) * 100)}px`;
    return el("td", { "data-node": node, "data-namespace": namespace, title: `${placed} placed, ${held} leases held` },
      bar, `${placed} · ${held}`);
  };
  const shards = el("table", { id: "shards" }, el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "class" }),
    nodes.map((n) => el("th", { scope: "col", text: `${n}: placed · leased` })), el("th", { scope: "col", text: "top epoch" }))),
  el("tbody", {}, namespaces.map((n) => el("tr", {}, el("th", { scope: "row", text: n }), nodes.map((node) => cell(node, n)),
    el("td", { text: state.topEpochs[n] || 0 })))));
  const others = Object.keys(state.owners).filter((o) => !nodes.includes(o));
  const recent = el("table", {}, el("thead", {}, el("tr", {}, ["when", "event", "class", "shard", "epoch", "why"]
    .map((h) => el("th", { scope: "col", text: h })))),
  el("tbody", {}, state.recent.slice(0, 30).map((e) => el("tr", {}, [e.at, e.event, e.namespace, e.shard, e.epoch, e.reason]
    .map((v) => el("td", { text: v }))))));
  fill($("#cluster"), 
    el("p", { text: `This page: ${state.nodeId} · lease ${state.leaseS} s · ${state.shardsPerNamespace} shards per class · ` +
      `hand-offs ${state.handoffs} · fenced commits ${state.fencedCommits} · suspicions ${state.suspicions}` }),
    state.leasesError ? el("p", { class: "bad", text: state.leasesError }) : null,
    members,
    Object.keys(state.departed).length ? el("p", { text: `Left: ${Object.entries(state.departed).map(([n, age]) => `${n} ${age} s ago`).join(", ")}` }) : null,
    el("h2", { text: "Shards by class" }),
    el("p", { class: "muted", text: "placed: where rendezvous puts a shard among the live members; leased: shards whose lease the node holds (taken on first call)." }),
    shards,
    others.length ? el("p", { class: "muted", text: `Leases also recorded for: ${others.map((o) => `${o} (${Object.values(state.owners[o]).reduce((a, b) => a + b, 0)})`).join(", ")}` }) : null,
    el("h2", { text: "Recent shard events on this node" }), recent);
}

// -- crons and alarms ------------------------------------------------------------------------------
async function refreshSchedules() {
  const state = await getJSON("api/schedules");
  fill($("#crons tbody"), ...(state.crons.length ? state.crons.map((c) => el("tr", {},
    [c.worker, c.cron, c.next, c.lastRun || "–", c.lastOutcome || "–"].map((v) => el("td", { text: v }))))
    : [el("tr", {}, el("td", { colspan: 5, class: "muted", text: "no cron triggers" }))]));
  fill($("#alarms tbody"), ...(state.alarms.length ? state.alarms.map((a) => el("tr", {},
    el("td", { text: a.worker }), el("td", { text: a.class }),
    el("td", {}, el("button", { type: "button", text: a.id.slice(0, 16), onclick: () => { show("objects"); inspect(a.worker, a.class, a.id); } })),
    el("td", { text: a.at })))
    : [el("tr", {}, el("td", { colspan: 4, class: "muted", text: "no alarms armed here" }))]));
}

// -- tail ------------------------------------------------------------------------------------------
let sockets = [];
const traces = new Map();  // requestId → its events, from every worker and object (oldest first)
const TAIL_KEPT = 500;
let selected = null;  // the request whose trace is shown

function describe(event) {
  const info = event.event || {};
  if (info.request) {
    const status = info.response ? ` ${info.response.status}` : "";
    return `${info.request.method} ${new URL(info.request.url).pathname}${status}`;
  }
  if (info.rpc) return `${info.rpc.class}.${info.rpc.method}()`;
  if (info.cron) return `cron ${info.cron}`;
  if (info.scheduledTime) return "alarm";
  return "event";
}

function showTrace(requestId, button) {
  for (const other of document.querySelectorAll("#tail-events button")) other.setAttribute("aria-pressed", "false");
  button.setAttribute("aria-pressed", "true");
  selected = requestId;
  drawTrace(requestId);
}

function drawTrace(requestId) {
  const events = (traces.get(requestId) || []).slice().sort((a, b) => a.eventTimestamp - b.eventTimestamp);
  fill($("#tail-trace"), el("h3", { text: `request ${requestId || "(none)"} · ${events.length} event(s)` }),
    ...events.map((e) => el("details", { open: true }, el("summary", { text: `${e.scriptName} · ${describe(e)} · ${e.outcome}` }),
      el("pre", { text: JSON.stringify(e, null, 2) }))));
}

function received(event) {
  const id = event.requestId || "";
  if (!traces.has(id)) traces.set(id, []);
  traces.get(id).push(event);
  while (traces.size > TAIL_KEPT) traces.delete(traces.keys().next().value);
  if (id === selected) drawTrace(id);  // a later event of the request shown (another worker's)
  const outcomeBad = event.outcome !== "ok";
  const button = el("button", { type: "button", "aria-pressed": "false", class: outcomeBad ? "bad" : null,
    text: `${new Date(event.eventTimestamp).toLocaleTimeString()} ${event.scriptName} ${describe(event)} ${event.outcome}`,
    onclick: () => showTrace(id, button) });
  const list = $("#tail-events");
  list.prepend(el("li", { "data-request-id": id }, button));
  while (list.children.length > TAIL_KEPT) list.lastElementChild.remove();
}

async function startTail(event) {
  event.preventDefault();
  stopTail();
  const status = $("#tail-status").value;
  const method = $("#tail-method").value.trim();
  try {
    const { tails } = await postJSON("api/tails", { status: status ? [status] : [], method: method ? [method.toUpperCase()] : [],
      search: $("#tail-search").value, samplingRate: $("#tail-sampling").value });
    sockets = tails.map((tail) => {
      const ws = new WebSocket(socketURL(tail.path), "trace-v1");
      ws.onopen = () => ws.send(JSON.stringify({ debug: false }));
      ws.onmessage = (message) => received(JSON.parse(message.data));
      return ws;
    });
    $("#tail-stop").disabled = false;
    say(`tailing ${tails.map((t) => t.worker).join(", ")}`);
  } catch (error) { say(error.message, true); }
}

function stopTail() {
  for (const ws of sockets) ws.close(1000);
  sockets = [];
  $("#tail-stop").disabled = true;
}

// -- polling ---------------------------------------------------------------------------------------
const refreshers = { workers: refreshWorkers, objects: refreshObjects, cluster: refreshCluster, schedules: refreshSchedules };
let busy = false;

async function refresh() {
  const refresher = refreshers[current];
  if (!refresher || busy || document.hidden) return;
  busy = true;
  try {
    await refresher();
    if (!sockets.length) say(`updated ${new Date().toLocaleTimeString()}`);
  } catch (error) {
    say(`could not update: ${error.message}`, true);
  } finally { busy = false; }
}

document.addEventListener("DOMContentLoaded", () => {
  setUpTabs();
  $("#find").addEventListener("submit", (event) => {
    event.preventDefault();
    const [worker, ...rest] = $("#find-class").value.split(".");
    inspect(worker, rest.join("."), $("#find-key").value);
  });
  $("#tail-form").addEventListener("submit", startTail);
  $("#tail-stop").addEventListener("click", stopTail);
  window.addEventListener("pagehide", stopTail);
  refresh();
  setInterval(refresh, POLL_MS);
});
