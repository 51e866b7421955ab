// FrUCToSA's jobs pages: the jobs table (#/jobs) and one job with its flags and charts (#/job/ID).
// Loaded before app.js and called from its router (jobsRoute); uses app.js's helpers (load, element, bytes,
// when, align, COLORS, showError) only once the page has loaded. Data: /api/jobs, /api/jobs/ID, its history.
"use strict";

const JOB_COLUMNS = [
  ["job_id", "Job", ""], ["user", "User", ""], ["partition", "Partition", ""], ["nodes", "Nodes", ""],
  ["cpus", "CPUs", "num"], ["start", "Start", "num"], ["duration_seconds", "Duration", "num"],
  ["state", "State", ""], ["cpu_efficiency_percent", "CPU eff. %", "num"], ["flags", "Flags", ""],
];
const JOB_CHARTS = [
  { title: "CPU % (of one CPU)", metrics: ["cpu_percent"] },
  { title: "Resident memory", metrics: ["rss"], bytes: true },
  { title: "IO bytes/s", metrics: ["read_bytes_per_second", "write_bytes_per_second"], bytes: true },
];
const jobsView = { rows: [], sortKey: "start", sortDir: -1, selected: 0, timer: null, charts: new Map(), built: false, current: null };

function duration(seconds) {
  if (seconds == null) return "";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  const hours = Math.floor(seconds / 3600), minutes = Math.round((seconds % 3600) / 60);
  return hours < 48 ? `${hours} h ${minutes} min` : `${Math.round(seconds / 86400)} d`;
}

function buildJobViews() {
  if (jobsView.built) return;
  jobsView.built = true;
  const head = element("tr", {}, ...JOB_COLUMNS.map(([key, label, cls]) => element("th", { "data-key": key, scope: "col", tabindex: "0", class: cls }, label)));
  const list = element("main", { id: "jobs-view", hidden: "" },
    element("div", { class: "toolbar" },
      element("label", {}, "Filter ", element("input", { id: "job-filter", type: "search", placeholder: "job, user, partition, node, flag… ( / )", autocomplete: "off" })),
      element("label", {}, "Status ", element("select", { id: "job-status" }, element("option", { value: "" }, "all"), element("option", { value: "running" }, "running"), element("option", { value: "ended" }, "ended"))),
      element("span", { id: "job-count" }),
      element("span", { class: "keys" }, "j/k move · Enter open · / filter")),
    element("table", { id: "jobs" }, element("thead", {}, head), element("tbody")));
  const one = element("main", { id: "job-view", hidden: "" },
    element("div", { class: "node-head" }, element("h1", { id: "job-title" }), element("a", { href: "#/jobs", title: "back to the jobs (Escape)" }, "← all jobs")),
    element("dl", { id: "job-facts" }), element("ul", { id: "job-flags" }), element("div", { id: "job-charts" }),
    element("table", { id: "job-nodes" }));
  document.querySelector("#node-view").after(list, one);
  list.querySelectorAll("th").forEach((th) => {
    th.addEventListener("click", () => sortJobs(th.dataset.key));
    th.addEventListener("keydown", (event) => { if (event.key === "Enter" || event.key === " ") { event.preventDefault(); sortJobs(th.dataset.key); } });
  });
  list.querySelector("tbody").addEventListener("click", (event) => {
    const row = event.target.closest("tr[data-job]");
    if (row) location.hash = `#/job/${row.dataset.job}`;
  });
  $("#job-filter").addEventListener("input", () => { jobsView.selected = 0; renderJobs(); });
  $("#job-status").addEventListener("change", () => refreshJobs().catch(showError));
  document.addEventListener("keydown", jobKeys);
}

function jobKeys(event) {
  if ($("#token-dialog").open || !jobsView.built) return;
  const typing = ["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement.tagName);
  if (event.key === "Escape" && !typing && !$("#job-view").hidden) { location.hash = "#/jobs"; return; }
  if (typing || event.ctrlKey || event.metaKey || event.altKey || $("#jobs-view").hidden) return;
  const rows = [...document.querySelectorAll("#jobs tbody tr[data-job]")];
  const move = (step) => {
    if (!rows.length) return;
    jobsView.selected = Math.min(rows.length - 1, Math.max(0, jobsView.selected + step));
    rows.forEach((row, index) => row.classList.toggle("selected", index === jobsView.selected));
    rows[jobsView.selected].scrollIntoView({ block: "nearest" });
  };
  const actions = {
    "/": () => $("#job-filter").focus(), j: () => move(1), ArrowDown: () => move(1), k: () => move(-1), ArrowUp: () => move(-1),
    Enter: () => { if (rows[jobsView.selected]) location.hash = `#/job/${rows[jobsView.selected].dataset.job}`; },
  };
  if (actions[event.key]) { event.preventDefault(); actions[event.key](); }
}

function sortJobs(key) {
  jobsView.sortDir = jobsView.sortKey === key ? -jobsView.sortDir : (key === "start" ? -1 : 1);
  jobsView.sortKey = key;
  renderJobs();
}

function jobValue(row, key) {
  if (key === "nodes" || key === "flags") return (row[key] || []).join(",");
  if (key === "job_id") return Number(row.job_id);
  return row[key];
}

function compareJobs(a, b) {
  const x = jobValue(a, jobsView.sortKey), y = jobValue(b, jobsView.sortKey);
  if (x == null && y == null) return Number(b.job_id) - Number(a.job_id);
  if (x == null) return 1;
  if (y == null) return -1;
  const order = typeof x === "number" ? x - y : String(x).localeCompare(String(y), undefined, { numeric: true });
  return order * jobsView.sortDir || Number(b.job_id) - Number(a.job_id);
}

function flagBadges(flags) {
  const cell = element("td", { class: "flags" });
  for (const flag of flags || []) cell.append(element("span", { class: "flag", title: flag.message || flag }, (flag.name || flag).replace(/_/g, " ")), " ");
  return cell;
}

function renderJobs() {
  const text = $("#job-filter").value.trim().toLowerCase();
  const rows = jobsView.rows.filter((row) => !text || [row.job_id, row.name, row.user, row.partition, row.state, ...row.nodes, ...(row.flags || [])]
    .some((value) => value && String(value).toLowerCase().includes(text))).sort(compareJobs);
  jobsView.selected = Math.min(jobsView.selected, Math.max(0, rows.length - 1));
  $("#jobs tbody").replaceChildren(...rows.map((row, index) => element("tr", { "data-job": row.job_id, class: `${row.status}${index === jobsView.selected ? " selected" : ""}` },
    element("td", { title: row.name }, row.job_id), element("td", {}, row.user), element("td", {}, row.partition),
    element("td", { title: row.nodes.join(", ") }, row.nodes.length > 3 ? `${row.nodes.slice(0, 3).join(", ")} +${row.nodes.length - 3}` : row.nodes.join(", ")),
    element("td", { class: "num" }, row.cpus ?? ""), element("td", { class: "num" }, when(row.start)),
    element("td", { class: "num" }, duration(row.duration_seconds)),
    element("td", {}, element("span", { class: `job-state ${row.status}` }, row.state)),
    bar(row.cpu_efficiency_percent), flagBadges(row.flags))));
  $("#job-count").textContent = `${rows.length} of ${jobsView.rows.length} jobs`;
  document.querySelectorAll("#jobs th").forEach((th) => {
    th.classList.toggle("sorted-asc", th.dataset.key === jobsView.sortKey && jobsView.sortDir > 0);
    th.classList.toggle("sorted-desc", th.dataset.key === jobsView.sortKey && jobsView.sortDir < 0);
  });
}

async function refreshJobs() {
  const status = $("#job-status").value;
  const data = await load("api/jobs" + (status ? `?state=${status}` : ""));
  jobsView.rows = data.jobs;
  renderJobs();
}

// --- one job ---------------------------------------------------------------------------------------

function drawJobCharts(history) {
  const container = $("#job-charts");
  const nodes = Object.keys(history).sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
  for (const chart of JOB_CHARTS) {
    const lines = nodes.flatMap((node) => chart.metrics.filter((metric) => history[node][metric]).map((metric) => ({
      label: chart.metrics.length > 1 ? `${node} ${metric.split("_")[0]}` : node, series: history[node][metric] })));
    if (!lines.length) continue;
    const data = align(lines.map(({ series }) => [series.times, series.values]));
    const key = lines.map((line) => line.label).join(",");
    let entry = jobsView.charts.get(chart.title);
    if (entry && entry.key === key) { entry.plot.setData(data); continue; }
    if (entry) { entry.plot.destroy(); entry.box.remove(); }
    const box = element("section", { class: "chart" }, element("h2", {}, chart.title));
    container.append(box);
    const options = {
      width: Math.max(300, box.clientWidth - 12), height: 200, scales: { x: { time: true }, y: { auto: true } },
      axes: [TIME_AXIS, { size: 60, values: (u, ticks) => ticks.map((tick) => (chart.bytes ? bytes(tick) : tick)) }],
      series: [TIME_SERIES, ...lines.map((line, i) => ({ label: line.label, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: true, points: { show: false } }))],
      legend: { live: true },
    };
    jobsView.charts.set(chart.title, { key, box, plot: new uPlot(options, data, box) });
  }
  if (!container.children.length) container.replaceChildren(element("p", { class: "muted" }, "lmaster kept no samples of this job."));
  else container.querySelectorAll(":scope > p").forEach((p) => p.remove());
}

function drawJob(answer) {
  const job = answer.job, profile = answer.profile;
  $("#job-title").textContent = `Job ${job.job_id}${job.name ? ` (${job.name})` : ""}`;
  document.title = `job ${job.job_id} · FrUCToSA`;
  const facts = [
    ["State", element("span", { class: `job-state ${job.status}` }, job.state)], ["User", job.user], ["Partition", job.partition],
    ["Nodes", job.nodes.join(", ")], ["CPUs", job.cpus], ["Start", when(job.start)], ["End", job.end ? when(job.end) : "running"],
    ["Duration", duration(job.duration_seconds)], ["CPU efficiency", job.cpu_efficiency_percent == null ? "" : `${job.cpu_efficiency_percent} %`],
  ];
  if (profile) {
    facts.push(["CPUs used (mean)", profile.used_cpus_mean], ["Memory peak", bytes(profile.rss_peak)],
      ["Memory allocated", bytes(profile.allocated_memory_bytes) || "not recorded"],
      ["Read", bytes(profile.read_bytes)], ["Written", bytes(profile.write_bytes)], ["Profile from", answer.profile_source]);
  }
  $("#job-facts").replaceChildren(...facts.flatMap(([label, value]) => [element("dt", {}, label), element("dd", {}, value ?? "")]));
  const flags = profile ? profile.flags : [];
  $("#job-flags").replaceChildren(...(profile && !flags.length ? [element("li", { class: "muted" }, "No efficiency flags.")] : flags.map((flag) =>
    element("li", {}, element("span", { class: "flag" }, flag.name.replace(/_/g, " ")), ` ${flag.message} (value ${flag.value}, threshold ${flag.threshold})`))));
  const perNode = profile ? profile.nodes : {};
  const head = element("tr", {}, ...["Node", "CPU % now", "RSS now", "Read/s", "Write/s", "CPU % mean", "CPU % peak", "RSS peak", "Samples"].map((label, i) => element("th", { class: i ? "num" : "" }, label)));
  const rows = job.nodes.map((node) => {
    const now = answer.nodes[node] || {}, summary = perNode[node] || {};
    return element("tr", {}, element("td", {}, node), element("td", { class: "num" }, percent(now.cpu_percent)), element("td", { class: "num" }, bytes(now.rss)),
      element("td", { class: "num" }, bytes(now.read_bytes_per_second)), element("td", { class: "num" }, bytes(now.write_bytes_per_second)),
      element("td", { class: "num" }, percent(summary.cpu_percent_mean)), element("td", { class: "num" }, percent(summary.cpu_percent_peak)),
      element("td", { class: "num" }, bytes(summary.rss_peak)), element("td", { class: "num" }, summary.samples ?? ""));
  });
  $("#job-nodes").replaceChildren(element("thead", {}, head), element("tbody", {}, ...rows));
}

async function refreshJob(id) {
  const answer = await load(`api/jobs/${id}`);
  if (jobsView.current !== id) return;
  drawJob(answer);
  const history = await load(`api/jobs/${id}/history`);
  if (jobsView.current === id) drawJobCharts(history);
}

// Called by app.js's router on every hash change: true when the hash is a jobs page (then shown here).
function jobsRoute(hash) {
  clearInterval(jobsView.timer);
  const one = hash.match(/^#\/job\/(\d+)$/), list = /^#\/jobs(\?.*)?$/.test(hash);
  if (!one && !list) {
    if (jobsView.built) { $("#jobs-view").hidden = true; $("#job-view").hidden = true; }
    jobsView.current = null;
    return false;
  }
  buildJobViews();
  $("#jobs-view").hidden = !list;
  $("#job-view").hidden = !one;
  if (one) {
    const id = one[1];
    if (jobsView.current !== id) {
      for (const entry of jobsView.charts.values()) entry.plot.destroy();
      jobsView.charts = new Map();
      $("#job-charts").replaceChildren();
    }
    jobsView.current = id;
    const tick = () => refreshJob(id).catch(showError);
    tick();
    jobsView.timer = setInterval(tick, REFRESH_MS);
  } else {
    jobsView.current = null;
    document.title = "FrUCToSA jobs";
    const tick = () => refreshJobs().catch(showError);
    tick();
    jobsView.timer = setInterval(tick, REFRESH_MS);
  }
  return true;
}
