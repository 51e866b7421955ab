// The page moves by itself: lmaster's live stream (GET /api/stream, a WebSocket) appends datapoints to the node
// page's charts and changes the nodes table's states as agents connect or go down. While the stream is open,
// app.js polls only every LIVE_POLL_MS for what the stream does not carry (facts, usage columns); when it fails,
// app.js polls as before and the stream is tried again after a pause. Loaded before app.js, whose globals
// (view, currentHost, drawCharts...) it uses once app.js calls its hooks.
"use strict";

const LIVE_POLL_MS = 30000;
const LIVE_RETRY_MS = [1000, 2000, 5000, 10000, 30000];
const LIVE_DRAW_MS = 1000;
// The node page's main series (what app.js's CHARTS draw), below the host.
const LIVE_SERIES = ["CPUPercent.*", "{VirtualMemory,SwapMemory}.percent", "NetIOCounters.bytes_*",
  "DiskIOCounters.{read,write}_bytes", "LoadAverage.*", "SlurmJobs.**", "GPU.**"];

const live = { ws: null, open: false, host: null, patterns: [], history: null, span: 3600, polled: 0, failures: 0, drawing: null };

function liveUrl() {
  const url = new URL("api/stream", location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

function liveIndicator() {
  const badge = document.getElementById("live");
  if (!badge) return;
  badge.className = live.open ? "live on" : "live off";
  badge.textContent = live.open ? "● live" : "○ offline";
  badge.title = live.open ? "updates pushed by lmaster as they arrive" : `polling every ${REFRESH_MS / 1000} s; the live stream is retried`;
}

function liveSend(message) {
  live.ws.send(JSON.stringify(message));
}

function liveConnect() {
  if (live.ws) return;
  let ws;
  try { ws = new WebSocket(liveUrl()); } catch (_) { liveClosed(); return; }
  live.ws = ws;
  ws.onopen = () => {
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) ws.send(JSON.stringify({ token })); // browsers cannot set the Authorization header on a WebSocket
    live.patterns = [];
    liveSubscribe(true); // its acknowledgement says the token was taken: only then is the page live
  };
  ws.onmessage = (message) => {
    let data;
    try { data = JSON.parse(message.data); } catch (_) { return; }
    if (data.datapoints) liveAppend(data.datapoints);
    else if (data.event) liveEvent(data.event);
    else if (data.subscribed && !live.open) liveAccepted();
  };
  ws.onclose = () => { if (live.ws === ws) liveClosed(); };
}

function liveAccepted() {
  live.open = true;
  live.failures = 0;
  live.polled = Date.now();
  liveIndicator();
  route(); // app.js: one poll now catches up with what happened before; then the stream brings the news
}

function liveClosed() {
  live.ws = null;
  live.open = false;
  live.polled = 0; // poll at the next tick: the stream's news stop here
  liveIndicator();
  const pause = LIVE_RETRY_MS[Math.min(live.failures++, LIVE_RETRY_MS.length - 1)];
  setTimeout(liveConnect, pause);
}

// What the page shows now: the node page's main series, or nothing (events come to every client anyway).
function liveSubscribe(opening = false) {
  const wanted = live.host ? LIVE_SERIES.map((series) => `${live.host}.${series}`) : [];
  const gone = live.patterns.filter((pattern) => !wanted.includes(pattern));
  const added = wanted.filter((pattern) => !live.patterns.includes(pattern));
  if (!live.ws || live.ws.readyState !== WebSocket.OPEN) return;
  if (gone.length) liveSend({ unsubscribe: gone });
  if (added.length || opening) liveSend({ subscribe: added });
  live.patterns = wanted;
}

// app.js hook (route): the page now shows this host (null: the nodes table).
function liveRoute(host) {
  if (host !== live.host) live.history = null;
  live.host = host;
  liveIndicator();
  liveConnect();
  liveSubscribe();
}

// app.js hook (refreshNode): the history the charts were drawn from, to which live datapoints are appended.
function liveHistory(host, history) {
  if (host !== live.host) return;
  live.history = history;
  const times = Object.values(history).map((series) => series.times).filter((times) => times.length);
  const first = Math.min(...times.map((t) => t[0])), last = Math.max(...times.map((t) => t[t.length - 1]));
  if (times.length && last > first) live.span = last - first;
}

// app.js hook (polling ticks): true while the stream keeps the page current, so that this tick is skipped.
function liveQuiet() {
  const now = Date.now();
  if (live.open && now - live.polled < LIVE_POLL_MS) return true;
  live.polled = now;
  return false;
}

function liveAppend(points) {
  const host = live.host, history = live.history;
  if (!host || !history) return;
  for (const [path, time, value] of points) {
    if (!path.startsWith(host + ".")) continue;
    let series = history[path];
    if (!series) series = history[path] = { times: [], values: [] };
    const times = series.times;
    if (times.length && time <= times[times.length - 1]) continue; // already drawn (the poll got it first)
    times.push(time);
    series.values.push(value);
    let old = 0;
    while (old < times.length && times[old] < time - live.span) old++;
    if (old) { times.splice(0, old); series.values.splice(0, old); }
  }
  if (!live.drawing) {
    live.drawing = setTimeout(() => {
      live.drawing = null;
      if (live.host && live.history && live.host === currentHost) drawCharts(live.host, live.history);
    }, LIVE_DRAW_MS);
  }
}

function liveEvent(event) {
  if (event.agent === undefined || !event.node_state) return;
  if (currentHost === event.agent) { refreshNode(currentHost).catch(showError); return; }
  if (currentHost !== null) return;
  const groups = view.grouped ? Object.values(view.grouped) : [view.nodes || {}];
  const node = groups.map((group) => group[event.agent]).find(Boolean);
  const wanted = $("#state-filter").value;
  if (!node || (wanted && wanted !== event.node_state) || view.grouped && $("#group-by").value === "state") {
    refreshNodes().catch(showError); // a new node, or one that leaves the filtered view or its group
    return;
  }
  node.state = event.node_state;
  if (event.state === "connected") node.last_seen = event.time;
  buildRows();
  renderTable();
}
