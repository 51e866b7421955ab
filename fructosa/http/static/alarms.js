// FrUCToSA's page: the alarms view (#/alarms), the header's count of firing alarms, and the badge on nodes
// with a firing alarm in the nodes table. Loaded before app.js, whose helpers (api, load, element, $, ago)
// it calls once the page runs (classic scripts share their top-level names). A server without alarm routes (404) shows no link and is not asked again.
"use strict";

const ALARMS_REFRESH_MS = 5000;
const SEVERITY_ORDER = { critical: 0, warning: 1, info: 2 };
const STATUS_ORDER = { firing: 0, pending: 1, resolved: 2, ok: 3 };
const alarmsView = { alarms: [], firingNodes: new Map(), available: true, timer: null, pageTimer: null };

// The hosts with a firing alarm (host → names), for the nodes table's badge.
function firingNodesOf(alarms) {
  const nodes = new Map();
  for (const alarm of alarms) {
    if (alarm.target !== "node") continue;
    for (const [key, state] of Object.entries(alarm.states || {})) {
      if (state.status !== "firing") continue;
      if (!nodes.has(key)) nodes.set(key, []);
      nodes.get(key).push(alarm.name);
    }
  }
  return nodes;
}

async function refreshAlarms() {
  if (!alarmsView.available) return;
  let data;
  try {
    data = await load("api/alarms"); // asks for the token when the server wants one, like the nodes table
  } catch (error) {
    if (String(error.message).startsWith("404")) {
      alarmsView.available = false;
      clearInterval(alarmsView.timer);
      $("#alarms-link").hidden = true;
    } else if (!$("#alarms-view").hidden) showError(error);
    return;
  }
  alarmsView.alarms = data.alarms || [];
  alarmsView.firingNodes = firingNodesOf(alarmsView.alarms);
  const firing = alarmsView.alarms.filter((alarm) => alarm.firing > 0).length;
  $("#alarms-link").hidden = false;
  const count = $("#alarms-count");
  count.textContent = String(firing);
  count.className = firing ? "alarm-count firing" : "alarm-count";
  if (!$("#alarms-view").hidden) renderAlarms();
}

// A node's badge in the nodes table: "" when none of its alarms fires.
function alarmBadge(host) {
  const names = alarmsView.firingNodes.get(host);
  if (!names) return "";
  return element("span", { class: "alarm-badge", title: `firing: ${names.join(", ")}` }, `⚠ ${names.length}`);
}

function alarmValue(alarm) {
  const values = Object.values(alarm.states || {}).map((state) => state.value).filter((value) => value != null);
  if (!values.length) return "";
  const shown = alarm.operator === "<" || alarm.operator === "<=" ? Math.min(...values) : Math.max(...values);
  return Number.isInteger(shown) ? String(shown) : shown.toFixed(2);
}

function renderAlarms() {
  const rows = [...alarmsView.alarms].sort((a, b) =>
    (STATUS_ORDER[a.status] ?? 9) - (STATUS_ORDER[b.status] ?? 9)
    || (SEVERITY_ORDER[a.severity] ?? 9) - (SEVERITY_ORDER[b.severity] ?? 9)
    || a.name.localeCompare(b.name));
  const body = document.createDocumentFragment();
  for (const alarm of rows) {
    const firingKeys = Object.entries(alarm.states || {}).filter(([, state]) => state.status === "firing").map(([key]) => key);
    const rule = `${alarm.target} ${alarm.metric} ${alarm.operator} ${alarm.value}` + (alarm.for ? ` for ${alarm.for} s` : "");
    body.append(element("tr", { "data-alarm": alarm.name, class: `alarm-${alarm.status}` },
      element("td", {}, element("span", { class: `alarm-status ${alarm.status}` }, alarm.status)),
      element("td", {}, alarm.name),
      element("td", {}, element("span", { class: `severity ${alarm.severity}` }, alarm.severity)),
      element("td", { class: "num", title: alarm.since ? when(alarm.since) : "" }, alarm.since ? ago(alarm.since) : ""),
      element("td", { class: "num" }, alarmValue(alarm)),
      element("td", {}, firingKeys.join(", ")),
      element("td", { class: "rule" }, rule),
      element("td", {}, alarm.origin)));
  }
  $("#alarms tbody").replaceChildren(body);
  $("#alarms-empty").hidden = rows.length > 0;
}

// app.js's router asks first: true when the hash is #/alarms (this view shown), false otherwise (hidden).
function alarmsRoute(hash) {
  const shown = /^#\/alarms\/?$/.test(hash);
  $("#alarms-view").hidden = !shown;
  clearInterval(alarmsView.pageTimer);
  if (shown) {
    document.title = "FrUCToSA alarms";
    refreshAlarms();
    alarmsView.pageTimer = setInterval(() => renderAlarms(), 1000); // ages tick between two refreshes
  }
  return shown;
}

function startAlarms() {
  refreshAlarms();
  alarmsView.timer = setInterval(refreshAlarms, ALARMS_REFRESH_MS);
}
