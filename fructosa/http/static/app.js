// FrUCToSA's page: the nodes table (#/nodes) and one node with charts (#/node/HOST).
// Plain JavaScript, no build step; data from the JSON API of the same server.
"use strict";

const REFRESH_MS = 5000;
const PAGE_SIZE = 100;
const TOKEN_KEY = "fructosa-token";
const GROUPABLE = ["state", "agent", "system", "platform", "cpu", "cpus", "memory_bytes", "gpus", "ip_address", "hostname"];
const STATE_ORDER = { down: 0, late: 1, up: 2 };

const $ = (selector) => document.querySelector(selector);
const view = { nodes: null, grouped: null, sortKey: "hostname", sortDir: 1, page: 0, selected: 0, rows: [] };
let timer = null;
let charts = new Map();

// --- API and token -------------------------------------------------------------------------------

class Unauthorized extends Error {}

async function api(path) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = "Bearer " + token;
  const response = await fetch(path, { headers, cache: "no-store" });
  if (response.status === 401) throw new Unauthorized((await response.json()).error);
  if (!response.ok) {
    let message = response.statusText;
    try { message = (await response.json()).error; } catch (_) { /* not JSON */ }
    throw new Error(`${response.status}: ${message}`);
  }
  return response.json();
}

let tokenWaiters = null;
function askToken(message) {
  const dialog = $("#token-dialog");
  $("#token-error").textContent = sessionStorage.getItem(TOKEN_KEY) ? `That token was refused${message ? ` (${message})` : ""}.` : "";
  if (!tokenWaiters) {
    tokenWaiters = [];
    dialog.showModal();
    $("#token-input").focus();
  }
  return new Promise((resolve) => tokenWaiters.push(resolve));
}

$("#token-dialog").addEventListener("cancel", (event) => event.preventDefault()); // Escape must not strand requests
$("#token-form").addEventListener("submit", () => {
  sessionStorage.setItem(TOKEN_KEY, $("#token-input").value.trim());
  $("#token-input").value = "";
  const waiters = tokenWaiters || [];
  tokenWaiters = null;
  waiters.forEach((resolve) => resolve());
});

let lastLoaded = null;
async function load(path) {
  for (;;) {
    try {
      const data = await api(path);
      $("#status").textContent = "";
      document.body.classList.remove("stale");
      lastLoaded = Date.now();
      return data;
    } catch (error) {
      if (!(error instanceof Unauthorized)) throw error;
      await askToken(error.message);
    }
  }
}

// --- formatting ----------------------------------------------------------------------------------

function ago(seconds) {
  if (seconds == null) return "never";
  const age = Math.max(0, Date.now() / 1000 - seconds);
  if (age < 90) return `${Math.round(age)} s`;
  if (age < 5400) return `${Math.round(age / 60)} min`;
  if (age < 172800) return `${Math.round(age / 3600)} h`;
  return `${Math.round(age / 86400)} d`;
}

function bytes(value) {
  if (value == null) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit++; }
  return `${value.toFixed(value < 10 && unit ? 1 : 0)} ${units[unit]}`;
}

// Chart times in ISO order and a 24-hour clock (uPlot's defaults are US month/day and am/pm).
const two = (n) => String(n).padStart(2, "0");
const isoDay = (t) => { const d = new Date(t * 1000); return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())}`; };
const clock = (t, seconds) => { const d = new Date(t * 1000); return `${two(d.getHours())}:${two(d.getMinutes())}${seconds ? ":" + two(d.getSeconds()) : ""}`; };
// Axis ticks: seconds only when ticks are under a minute apart; the month and day where a new day starts.
function timeTicks(u, ticks, axis, space, increment) {
  if (increment >= 86400) return ticks.map(isoDay);
  let previous = null;
  return ticks.map((t) => {
    const day = isoDay(t), label = clock(t, increment < 60);
    const shown = previous !== null && day !== previous ? `${day.slice(5)} ${label}` : label;
    previous = day;
    return shown;
  });
}
const TIME_AXIS = { space: 90, values: timeTicks };
const TIME_SERIES = { value: (u, t) => (t == null ? "–" : `${isoDay(t)} ${clock(t, true)}`) };

const percent = (value) => (value == null ? "" : value.toFixed(1));

// "4 × NVIDIA A100-SXM4-80GB" rather than the same name four times.
function gpuList(gpus) {
  const counts = new Map();
  for (const gpu of gpus) counts.set(gpu, (counts.get(gpu) || 0) + 1);
  return [...counts].map(([name, count]) => (count > 1 ? `${count} × ${name}` : name)).join(", ");
}
// Local time as 2026-03-01 14:05:09: unambiguous whatever the browser's locale, and it sorts.
function when(seconds) {
  if (seconds == null) return "";
  const date = new Date(seconds * 1000), two = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${two(date.getMonth() + 1)}-${two(date.getDate())} ${two(date.getHours())}:${two(date.getMinutes())}:${two(date.getSeconds())}`;
}

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "class") node.className = value; else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}

function bar(value) {
  const cell = element("td", { class: "num usage" });
  if (value == null) return cell;
  const fill = element("i");
  fill.style.width = `${Math.min(100, Math.max(0, value))}%`;
  cell.append(element("span", { class: "bar" }, fill), element("span", { class: "pct" }, percent(value)));
  return cell;
}

// --- nodes table ---------------------------------------------------------------------------------

function compare(a, b) {
  const key = view.sortKey;
  let x = a[key], y = b[key];
  if (key === "state") { x = STATE_ORDER[x]; y = STATE_ORDER[y]; }
  if (x == null && y == null) return a.hostname.localeCompare(b.hostname);
  if (x == null) return 1;
  if (y == null) return -1;
  const order = typeof x === "number" ? x - y : String(x).localeCompare(String(y), undefined, { numeric: true });
  return order * view.sortDir || a.hostname.localeCompare(b.hostname, undefined, { numeric: true });
}

function matches(node, text) {
  if (!text) return true;
  return [node.hostname, node.agent, node.platform, node.system, node.cpu, node.ip_address, node.state, ...node.gpus]
    .some((value) => value && String(value).toLowerCase().includes(text));
}

function buildRows() {
  const text = $("#filter").value.trim().toLowerCase();
  const groups = view.grouped || { "": view.nodes || {} };
  const rows = [];
  const counts = { up: 0, late: 0, down: 0 };
  for (const name of Object.keys(groups).sort((a, b) => a.localeCompare(b, undefined, { numeric: true }))) {
    const members = Object.values(groups[name]).filter((node) => matches(node, text)).sort(compare);
    members.forEach((node) => counts[node.state]++);
    if (view.grouped && members.length) rows.push({ group: name, size: members.length });
    rows.push(...members);
  }
  view.rows = rows;
  // Zero counts are muted, so a late or down node stands out in the header from across the room.
  const parts = ["up", "late", "down"].map((state) => element("span", { class: counts[state] ? `count ${state}` : "count" }, `${counts[state]} ${state}`));
  $("#summary").replaceChildren(parts[0], " · ", parts[1], " · ", parts[2]);
}

// Says why the table is empty: nothing loaded yet, no agent ever connected, or the filters hide every node.
function emptyMessage() {
  if (view.nodes === null && view.grouped === null) return "Loading…";
  if ($("#filter").value.trim() || $("#state-filter").value) return "No node matches these filters.";
  return "No agent has connected to lmaster yet.";
}

function renderTable() {
  const pages = Math.max(1, Math.ceil(view.rows.length / PAGE_SIZE));
  view.page = Math.min(view.page, pages - 1);
  const start = view.page * PAGE_SIZE;
  const slice = view.rows.slice(start, start + PAGE_SIZE);
  view.selected = Math.min(view.selected, Math.max(0, slice.length - 1));
  const body = document.createDocumentFragment();
  slice.forEach((row, index) => {
    if (row.group !== undefined) {
      body.append(element("tr", { class: "group" }, element("td", { colspan: 10 }, `${$("#group-by").value}: ${row.group} (${row.size})`)));
      return;
    }
    const tr = element("tr", { "data-host": row.hostname, class: `state-${row.state}${index === view.selected ? " selected" : ""}` },
      element("td", {}, element("span", { class: `state ${row.state}` }, row.state)),
      element("td", {}, row.hostname, typeof alarmBadge === "function" ? alarmBadge(row.hostname) : ""),
      bar(row.cpu_usage),
      bar(row.mem_usage),
      element("td", { class: "num", title: when(row.last_seen) }, ago(row.last_seen)),
      element("td", {}, row.agent),
      element("td", { class: "num" }, row.cpus),
      element("td", { class: "num" }, bytes(row.memory_bytes)),
      element("td", { title: row.cpu || "" }, row.platform),
      element("td", {}, row.ip_address));
    body.append(tr);
  });
  if (!slice.length) body.append(element("tr", { class: "empty" }, element("td", { colspan: 10 }, emptyMessage())));
  $("#nodes tbody").replaceChildren(body);
  const nodeCount = view.rows.filter((row) => row.group === undefined).length;
  $("#page-info").textContent = nodeCount
    ? `rows ${start + 1}–${start + slice.length} of ${view.rows.length} · ${nodeCount} nodes` : "no nodes";
  document.querySelectorAll("#nodes th").forEach((th) => {
    th.classList.toggle("sorted-asc", th.dataset.key === view.sortKey && view.sortDir > 0);
    th.classList.toggle("sorted-desc", th.dataset.key === view.sortKey && view.sortDir < 0);
  });
}

async function refreshNodes() {
  const params = new URLSearchParams();
  const state = $("#state-filter").value, groupBy = $("#group-by").value;
  if (state) params.set("state", state);
  if (groupBy) params.set("group_by", groupBy);
  const data = await load("api/nodes" + (params.toString() ? "?" + params : ""));
  view.grouped = groupBy ? data : null;
  view.nodes = groupBy ? null : data;
  buildRows();
  renderTable();
}

function sortBy(key) {
  view.sortDir = view.sortKey === key ? -view.sortDir : 1;
  view.sortKey = key;
  buildRows();
  renderTable();
}

document.querySelectorAll("#nodes th").forEach((th) => {
  th.addEventListener("click", () => sortBy(th.dataset.key));
  th.addEventListener("keydown", (event) => { if (event.key === "Enter" || event.key === " ") { event.preventDefault(); sortBy(th.dataset.key); } });
});
$("#nodes tbody").addEventListener("click", (event) => {
  const row = event.target.closest("tr[data-host]");
  if (row) location.hash = `#/node/${encodeURIComponent(row.dataset.host)}`;
});
// The table's controls live in the hash too (#/nodes?group_by=platform&state=late&q=gpu), so a view can be bookmarked.
function saveControls() {
  const params = new URLSearchParams();
  if ($("#group-by").value) params.set("group_by", $("#group-by").value);
  if ($("#state-filter").value) params.set("state", $("#state-filter").value);
  if ($("#filter").value.trim()) params.set("q", $("#filter").value.trim());
  history.replaceState(null, "", "#/nodes" + (params.toString() ? "?" + params : ""));
}

function loadControls(query) {
  const params = new URLSearchParams(query || "");
  const groupBy = params.get("group_by") || "", state = params.get("state") || "";
  $("#group-by").value = GROUPABLE.includes(groupBy) ? groupBy : "";
  $("#state-filter").value = STATE_ORDER[state] !== undefined ? state : "";
  $("#filter").value = params.get("q") || "";
}

$("#filter").addEventListener("input", () => { view.page = 0; saveControls(); buildRows(); renderTable(); });
$("#state-filter").addEventListener("change", () => { view.page = 0; saveControls(); refreshNodes().catch(showError); });
$("#group-by").addEventListener("change", () => { view.page = 0; saveControls(); refreshNodes().catch(showError); });
$("#prev-page").addEventListener("click", () => turnPage(-1));
$("#next-page").addEventListener("click", () => turnPage(1));
for (const attribute of GROUPABLE) $("#group-by").append(element("option", { value: attribute }, attribute.replace("_", " ")));

function turnPage(step) {
  const pages = Math.max(1, Math.ceil(view.rows.length / PAGE_SIZE));
  view.page = Math.min(pages - 1, Math.max(0, view.page + step));
  view.selected = 0;
  renderTable();
}

function moveSelection(step) {
  const rows = [...document.querySelectorAll("#nodes tbody tr")];
  let index = view.selected;
  do { index += step; } while (rows[index] && !rows[index].dataset.host);
  if (!rows[index]) return;
  view.selected = index;
  rows.forEach((row, position) => row.classList.toggle("selected", position === index));
  rows[index].scrollIntoView({ block: "nearest" });
}

document.addEventListener("keydown", (event) => {
  if ($("#token-dialog").open) return;
  const typing = ["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement.tagName);
  if (event.key === "Escape") {
    if (typing) document.activeElement.blur(); else if (!$("#node-view").hidden) location.hash = "#/nodes";
    return;
  }
  if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
  if ($("#nodes-view").hidden) return;
  const actions = {
    "/": () => $("#filter").focus(),
    j: () => moveSelection(1), ArrowDown: () => moveSelection(1),
    k: () => moveSelection(-1), ArrowUp: () => moveSelection(-1),
    "]": () => turnPage(1), PageDown: () => turnPage(1),
    "[": () => turnPage(-1), PageUp: () => turnPage(-1),
    Enter: () => {
      const row = document.querySelectorAll("#nodes tbody tr")[view.selected];
      if (row && row.dataset.host) location.hash = `#/node/${encodeURIComponent(row.dataset.host)}`;
    },
  };
  if (actions[event.key]) { event.preventDefault(); actions[event.key](); }
});

// --- node page -----------------------------------------------------------------------------------

// Charts of the main series: which paths (below the host) go into which chart, and counters shown per second.
const CHARTS = [
  { title: "CPU %", match: /^CPUPercent\./, range: [0, 100], label: (name) => name.replace(/^CPUPercent\.(\d+)$/, "cpu $1").replace(/^CPUPercent\./, "") },
  { title: "Memory %", match: /^(VirtualMemory|SwapMemory)\.percent$/, range: [0, 100], label: (name) => (name.startsWith("Swap") ? "swap" : "memory") },
  { title: "Network bytes/s", match: /^NetIOCounters\.bytes_/, rate: true, label: (name) => ({ bytes_recv: "received", bytes_sent: "sent" })[name.split(".").pop()] || name },
  { title: "Disk bytes/s", match: /^DiskIOCounters\.(read|write)_bytes$/, rate: true, label: (name) => (name.endsWith("read_bytes") ? "read" : "written") },
  { title: "Load", match: /^LoadAverage\./ },
  { title: "Slurm jobs: CPU %", match: /^SlurmJobs\..+\.cpu_percent$/ },
  { title: "Slurm jobs: RSS", match: /^SlurmJobs\..+\.rss$/ },
  { title: "GPU utilisation %", match: /^GPU\./, range: [0, 100] },
];
const MIN_SPAN_S = 300;
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

function perSecond(times, values) {
  const outTimes = [], outValues = [];
  for (let i = 1; i < times.length; i++) {
    const dt = times[i] - times[i - 1], dv = values[i] - values[i - 1];
    if (dt > 0 && dv >= 0) { outTimes.push(times[i]); outValues.push(dv / dt); }
  }
  return [outTimes, outValues];
}

// uPlot wants one x axis: the union of every series' times, with nulls where a series has no point.
function align(seriesList) {
  const xs = [...new Set(seriesList.flatMap(([times]) => times))].sort((a, b) => a - b);
  const index = new Map(xs.map((x, i) => [x, i]));
  const columns = seriesList.map(([times, values]) => {
    const column = new Array(xs.length).fill(null);
    times.forEach((t, i) => { column[index.get(t)] = values[i]; });
    return column;
  });
  return [xs, ...columns];
}

// At least the last five minutes, from the data itself: uPlot would stretch a single point over years,
// and points a few ms apart over ms. A little room on the right keeps the newest point off the border.
function timeRange(u) {
  const xs = u.data[0], last = xs.length ? xs[xs.length - 1] : Date.now() / 1000;
  const first = Math.min(xs.length ? xs[0] : last, last - MIN_SPAN_S);
  return [first, last + (last - first) * 0.01];
}

function drawCharts(host, history) {
  const container = $("#charts");
  const seen = new Set();
  for (const chart of CHARTS) {
    const names = Object.keys(history).map((path) => path.slice(host.length + 1)).filter((name) => chart.match.test(name)).sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
    if (!names.length) continue;
    seen.add(chart.title);
    const raw = names.map((name) => { const s = history[`${host}.${name}`]; return [s.times, s.values]; });
    const data = align(chart.rate ? raw.map(([t, v]) => perSecond(t, v)) : raw);
    const key = chart.title + "|" + names.join(",");
    let entry = charts.get(chart.title);
    if (entry && entry.key === key) { entry.plot.setData(data); continue; }
    if (entry) { entry.plot.destroy(); entry.box.remove(); }
    const box = element("section", { class: "chart", "data-order": CHARTS.indexOf(chart) }, element("h2", {}, chart.title));
    const after = [...container.querySelectorAll(":scope > .chart")].find((other) => Number(other.dataset.order) > CHARTS.indexOf(chart));
    container.insertBefore(box, after || null); // CPU first, then memory…, whichever series arrived first
    const width = Math.max(300, box.clientWidth - 12);
    const options = {
      width, height: 200,
      scales: { x: { time: true, range: timeRange }, y: chart.range ? { range: chart.range } : { auto: true } },
      axes: [TIME_AXIS, { size: 72, values: (u, ticks) => ticks.map((tick) => (chart.rate || /RSS/.test(chart.title) ? bytes(tick) : tick)) }],
      series: [TIME_SERIES, ...names.map((name, i) => ({ label: chart.label ? chart.label(name) : name.replace(/^(SlurmJobs|LoadAverage|GPU)\./, "").replace(/\.(cpu_percent|rss|utilization\.gpu)$/, ""), stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: true }))],
      legend: { live: true },
    };
    entry = { key, box, plot: new uPlot(options, data, box) };
    charts.set(chart.title, entry);
  }
  for (const [title, entry] of charts) if (!seen.has(title)) { entry.plot.destroy(); entry.box.remove(); charts.delete(title); }
  if (!container.children.length) container.replaceChildren(element("p", { class: "muted" }, "No history yet for this node's main series."));
  else container.querySelectorAll(":scope > p").forEach((p) => p.remove());
}

function drawFacts(node) {
  const facts = [
    ["State", element("span", { class: `state ${node.state}` }, node.state)], ["Last seen", `${ago(node.last_seen)} ago`],
    ["Agent", node.agent], ["Connected since", when(node.connected_since)], ["Address", node.ip_address],
    ["Heartbeat", `${node.heartbeat_interval} s`], ["CPU", node.cpu], ["CPUs", node.cpus],
    ["Memory", bytes(node.memory_bytes)], ["Booted", when(node.boot_time)], ["System", node.system],
    ["Platform", node.platform], ["GPUs", gpuList(node.gpus) || "none"], ["CPU use", `${percent(node.cpu_usage)} %`],
    ["Memory use", `${percent(node.mem_usage)} %`],
    ["Sensors", Object.entries(node.sensors).map(([name, every]) => `${name} ${every}s`).join(", ")],
  ];
  $("#node-facts").replaceChildren(...facts.flatMap(([label, value]) => [element("dt", {}, label), element("dd", label === "Sensors" ? { class: "wide" } : typeof value === "string" ? { title: value } : {}, value ?? "")]));
}

function drawLatest(latest, host) {
  const text = $("#latest-filter").value.trim().toLowerCase();
  const rows = Object.entries(latest).filter(([path]) => path.toLowerCase().includes(text)).sort(([a], [b]) => a.localeCompare(b, undefined, { numeric: true }));
  $("#latest tbody").replaceChildren(...rows.slice(0, 2000).map(([path, [time, value]]) =>
    element("tr", {}, element("td", {}, path.slice(host.length + 1)), element("td", { class: "num" }, Number.isInteger(value) ? value : value.toPrecision(6)), element("td", { class: "num" }, ago(time)))));
}

let currentHost = null;
async function refreshNode(host) {
  const encoded = encodeURIComponent(host);
  const [node, history] = await Promise.all([load(`api/nodes/${encoded}`), load(`api/nodes/${encoded}/history`)]);
  if (currentHost !== host) return;
  $("#node-title").textContent = node.hostname;
  document.title = `${node.hostname} · FrUCToSA`;
  drawFacts(node);
  drawCharts(host, history);
  liveHistory(host, history); // live.js: the stream appends to it
  if ($("#latest-box").open) drawLatest(await load(`api/nodes/${encoded}/latest`), host);
}
$("#latest-box").addEventListener("toggle", () => currentHost && refreshNode(currentHost).catch(showError));
$("#latest-filter").addEventListener("input", () => currentHost && refreshNode(currentHost).catch(showError));

// --- routing -------------------------------------------------------------------------------------

// Kept on screen until a request succeeds again; the data shown meanwhile is dimmed and its age said.
function showError(error) {
  const reason = error instanceof TypeError ? "lmaster unreachable" : error.message;
  const age = lastLoaded ? ` · data from ${when(lastLoaded / 1000).slice(11)}` : "";
  $("#status").textContent = `⚠ ${reason}${age} · retrying every ${REFRESH_MS / 1000} s`;
  document.body.classList.toggle("stale", lastLoaded !== null);
  if (!$("#nodes-view").hidden && view.rows.length) renderTable(); // "Last seen" keeps growing while lmaster is away
}

function route() {
  clearInterval(timer);
  // every view's router runs, so each hides its own view when the hash is not its own
  const jobsShown = typeof jobsRoute === "function" && jobsRoute(location.hash); // the jobs pages (jobs.js)
  const alarmsShown = typeof alarmsRoute === "function" && alarmsRoute(location.hash); // the alarms view (alarms.js)
  if (jobsShown || alarmsShown) {
    $("#nodes-view").hidden = $("#node-view").hidden = true; currentHost = null;
    return;
  }
  const match = location.hash.match(/^#\/node\/(.+)$/);
  liveRoute(match ? decodeURIComponent(match[1]) : null); // live.js: subscribe to what this view shows
  $("#nodes-view").hidden = !!match;
  $("#node-view").hidden = !match;
  if (match) {
    const host = decodeURIComponent(match[1]);
    if (currentHost !== host) {
      for (const entry of charts.values()) entry.plot.destroy();
      charts = new Map();
      $("#charts").replaceChildren();
      $("#node-facts").replaceChildren();
      $("#latest tbody").replaceChildren();
    }
    currentHost = host;
    const tick = () => refreshNode(host).catch(showError);
    tick();
    timer = setInterval(() => liveQuiet() || tick(), REFRESH_MS); // live.js: fewer polls while the stream is live
  } else {
    currentHost = null;
    document.title = "FrUCToSA nodes";
    const nodesRoute = location.hash.match(/^#\/nodes(?:\?(.*))?$/);
    loadControls(nodesRoute ? nodesRoute[1] : "");
    saveControls();
    const tick = () => refreshNodes().catch(showError);
    tick();
    timer = setInterval(() => liveQuiet() || tick(), REFRESH_MS); // live.js: fewer polls while the stream is live
  }
}

window.addEventListener("hashchange", route);
if (typeof startAlarms === "function") startAlarms(); // alarm count and node badges (static/alarms.js)
route();
