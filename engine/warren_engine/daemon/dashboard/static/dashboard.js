// Warren's dashboard: polls the engine's JSON every two seconds and draws it.
// Read-only; no library, no build step. Every value from the engine is put in the page as
// text (textContent), never as markup.
"use strict";

const POLL_MS = 2000;
const API = "/_dashboard/api/";
const SVG = "http://www.w3.org/2000/svg";
const CHART = { width: 600, height: 170, left: 44, right: 10, top: 10, bottom: 22 };

let selected = readSelection(); // {environment, instance, function} or null
let latest = null; // the last overview
const opened = new Set(); // failures whose traceback is open: kept open across redraws

function readSelection() {
  const parts = decodeURIComponent(location.hash.slice(1)).split("/");
  if (parts.length !== 3 || parts.some((part) => !part)) return null;
  return { environment: parts[0], instance: parts[1], function: parts[2] };
}

function select(pool) {
  selected = pool;
  const hash = pool ? `#${[pool.environment, pool.instance, pool.function].map(encodeURIComponent).join("/")}` : "";
  history.replaceState(null, "", location.pathname + hash);
  refresh();
}

function same(a, b) {
  return a && b && a.environment === b.environment && a.instance === b.instance && a.function === b.function;
}

function query(pool) {
  if (!pool) return "";
  return "?" + new URLSearchParams(pool).toString();
}

class Unauthorized extends Error {}

async function get(path) {
  const reply = await fetch(API + path, { credentials: "same-origin", cache: "no-store" });
  if (reply.status === 401) throw new Unauthorized("the dashboard's token is needed");
  if (!reply.ok) throw new Error(`${path}: HTTP ${reply.status}`);
  return reply.json();
}

function element(tag, text, className) {
  const made = document.createElement(tag);
  if (text !== undefined && text !== null) made.textContent = String(text);
  if (className) made.className = className;
  return made;
}

function clock(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString([], { hour12: false });
}

// -- the table ------------------------------------------------------------------------

function drawTotals(overview) {
  const totals = document.getElementById("totals");
  totals.replaceChildren();
  const shown = [
    ["apps", overview.totals.apps],
    ["functions", overview.totals.functions],
    ["containers", overview.totals.containers],
    ["queued", overview.totals.queued],
    ["running", overview.totals.running],
  ];
  for (const [name, value] of shown) {
    const item = element("li");
    item.append(element("b", value), ` ${name}`);
    totals.append(item);
  }
  document.getElementById("node").textContent = `node ${overview.node}`;
}

function poolCell(pool) {
  const cell = element("td");
  cell.append(element("span", pool.containers, "count"));
  for (const pid of pool.pids) cell.append(element("span", pid, "pid"));
  if (pool.error) cell.append(element("span", pool.error, "bad"));
  return cell;
}

function drawPools(overview) {
  const body = document.querySelector("#pools tbody");
  body.replaceChildren();
  if (!overview.apps.length) {
    const row = element("tr");
    const cell = element("td", "No app is deployed or running on this engine.", "muted");
    cell.colSpan = 9;
    row.append(cell);
    body.append(row);
  }
  for (const app of overview.apps) {
    const header = element("tr", null, "app-row");
    const name = element("td");
    name.colSpan = 9;
    name.append(app.app, " ", element("span", `${app.environment} / ${app.instance}${app.ephemeral ? " (app.run)" : ""}`, "env"));
    header.append(name);
    body.append(header);
    for (const fn of app.functions) {
      const pool = { environment: app.environment, instance: app.instance, function: fn.key };
      const row = element("tr", null, same(pool, selected) ? "pool selected" : "pool");
      row.dataset.app = app.app;
      row.dataset.function = fn.key;
      row.dataset.containers = fn.containers;
      row.addEventListener("click", () => select(same(pool, selected) ? null : pool));
      const web = element("td");
      if (fn.web_url) {
        const link = element("a", "endpoint");
        link.href = fn.web_url;
        link.addEventListener("click", (event) => event.stopPropagation());
        web.append(link);
      }
      const failures = element("td", fn.failures === null ? "-" : fn.failures, "number");
      if (fn.failures) failures.classList.add("bad");
      row.append(
        element("td", app.app, "muted"),
        element("td", fn.key),
        element("td", fn.local ? `${fn.node} (this engine)` : fn.node),
        poolCell(fn),
        element("td", fn.queued, "number"),
        element("td", fn.running, "number"),
        element("td", fn.inputs_received, "number"),
        failures,
        web,
      );
      body.append(row);
    }
  }
}

// -- the charts -----------------------------------------------------------------------

function svg(tag, attributes, text) {
  const made = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) made.setAttribute(name, String(value));
  if (text !== undefined) made.textContent = text;
  return made;
}

function ceiling(value) {
  // A round top for the axis: 1, 2, 5, 10, 20, 50...
  if (value <= 1) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) if (value <= step * power) return step * power;
  return 10 * power;
}

function span(points, now, window) {
  // The last ten minutes, or less while the engine is younger: whole minutes, one at least.
  if (!points.length) return 60;
  const seen = now - points[0].t + 2;
  return Math.min(window, Math.max(60, Math.ceil(seen / 60) * 60));
}

function ago(seconds) {
  if (seconds <= 0) return "now";
  return seconds % 60 ? `-${Math.round(seconds)} s` : `-${seconds / 60} min`;
}

function drawChart(id, points, series, now, window) {
  const chart = document.getElementById(id);
  chart.replaceChildren();
  const { width, height, left, right, top, bottom } = CHART;
  const plotWidth = width - left - right;
  const plotHeight = height - top - bottom;
  const highest = Math.max(0, ...points.flatMap((point) => series.map((name) => point[name])));
  const top_ = ceiling(highest);
  const shown = span(points, now, window);
  const x = (t) => left + plotWidth * (1 - Math.min(shown, Math.max(0, now - t)) / shown);
  const y = (value) => top + plotHeight * (1 - value / top_);
  for (const fraction of [0, 0.5, 1]) {
    const level = top_ * fraction;
    chart.append(svg("line", { class: "grid", x1: left, x2: width - right, y1: y(level), y2: y(level) }));
    const label = Number.isInteger(level) ? level : level.toFixed(1);
    chart.append(svg("text", { class: "axis", x: left - 6, y: y(level) + 4, "text-anchor": "end" }, String(label)));
  }
  for (const [fraction, anchor] of [[1, "start"], [0.5, "middle"], [0, "end"]]) {
    const back = shown * fraction;
    chart.append(svg("text", { class: "axis", x: x(now - back), y: height - 6, "text-anchor": anchor }, ago(back)));
  }
  for (const name of series) {
    const coordinates = points.map((point) => `${x(point.t).toFixed(1)},${y(point[name]).toFixed(1)}`).join(" ");
    if (name === "rate" && points.length) {
      const first = x(points[0].t).toFixed(1);
      const last = x(points[points.length - 1].t).toFixed(1);
      const base = y(0).toFixed(1);
      chart.append(svg("polygon", { class: "area", points: `${first},${base} ${coordinates} ${last},${base}` }));
    }
    chart.append(svg("polyline", { class: name, points: coordinates, "data-series": name }));
  }
  chart.dataset.points = String(points.length);
  chart.dataset.max = String(highest);
  chart.dataset.last = String(points.length ? series.map((name) => points[points.length - 1][name]).join(",") : "");
}

function drawHistory(historyData) {
  const points = historyData.points;
  const now = points.length ? points[points.length - 1].t : Date.now() / 1000;
  drawChart("depth-chart", points, ["queued", "running"], now, historyData.window);
  drawChart("rate-chart", points, ["rate"], now, historyData.window);
  document.getElementById("chart-subject").textContent = selected
    ? `${selected.instance}.${selected.function}`
    : "all functions";
}

// -- failures, log, dead letters ------------------------------------------------------

function drawFailures(data) {
  const box = document.getElementById("failures");
  box.replaceChildren();
  document.getElementById("failures-subject").textContent = selected ? `of ${selected.function}` : "of every function";
  if (!data.failures.length) {
    box.append(element("p", "none", "muted"));
    return;
  }
  for (const failure of data.failures) {
    const item = element("details", null, "failure");
    const key = `${failure.call}:${failure.index}:${failure.attempt}:${failure.time}`;
    item.open = opened.has(key);
    item.addEventListener("toggle", () => (item.open ? opened.add(key) : opened.delete(key)));
    const summary = element("summary");
    const attempt = failure.retrying ? `attempt ${failure.attempt}, retried` : `attempt ${failure.attempt}`;
    summary.append(
      element("span", `${clock(failure.time)} `, "muted"),
      element("span", `${failure.instance}.${failure.function} `),
      element("span", `${failure.type}: ${failure.message}`, "what"),
      element("span", ` (${attempt}; call ${failure.call}:${failure.index}, container ${failure.container})`, "muted"),
    );
    item.append(summary, element("pre", failure.traceback || "(no traceback)"));
    box.append(item);
  }
}

function drawLog(data) {
  const log = document.getElementById("log");
  const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  log.replaceChildren();
  document.getElementById("log-subject").textContent = selected ? `of ${selected.function}` : "";
  if (!data) {
    log.append(element("span", "Select a function to follow its output.", "muted"));
    return;
  }
  if (!data.lines.length) log.append(element("span", "nothing printed in the last ten minutes", "muted"));
  for (const line of data.lines) {
    log.append(element("span", `${clock(line.time)} [${line.container}] `, "when"));
    log.append(element("span", `${line.text}\n`, line.stream));
  }
  if (atBottom) log.scrollTop = log.scrollHeight;
}

function drawDeadLetters(data) {
  const box = document.getElementById("dead-letters");
  box.replaceChildren();
  document.getElementById("dead-subject").textContent = `of environment ${data.environment}`;
  if (!data.available) {
    box.append(element("p", "This engine has no dead-letter reader to show (use warren dead list).", "notice"));
    return;
  }
  if (data.error) {
    box.append(element("p", `The dead-letter queue could not be read: ${data.error}`, "notice"));
    return;
  }
  if (!data.entries.length) {
    box.append(element("p", "empty", "muted"));
    return;
  }
  const table = element("table");
  const head = element("tr");
  for (const name of ["id", "function", "reason", "when"]) head.append(element("th", name));
  table.append(head);
  for (const entry of data.entries) {
    const row = element("tr");
    const where = entry.function ? `${entry.app ? `${entry.app}.` : ""}${entry.function}` : "-";
    row.append(
      element("td", entry.id),
      element("td", where),
      element("td", entry.reason),
      element("td", entry.dead_at ? clock(entry.dead_at) : "-"),
    );
    table.append(row);
  }
  if (data.total > data.entries.length) {
    box.append(element("p", `the first ${data.entries.length} of ${data.total} messages`, "muted"));
  }
  box.append(table);
}

// -- polling --------------------------------------------------------------------------

function problem(text) {
  const box = document.getElementById("problem");
  box.hidden = !text;
  box.textContent = text || "";
}

let refreshing = false;

async function refresh() {
  if (refreshing) return;
  refreshing = true;
  try {
    latest = await get("overview");
    drawTotals(latest);
    drawPools(latest);
    const environment = selected ? selected.environment : latest.apps.length ? latest.apps[0].environment : "";
    // Each panel on its own: one that fails leaves the others live.
    const panels = [
      [get("history" + query(selected)), drawHistory],
      [get("failures" + query(selected)), drawFailures],
      [selected ? get("logs" + query(selected)) : Promise.resolve(null), drawLog],
      [get("dead-letters" + (environment ? `?environment=${encodeURIComponent(environment)}` : "")), drawDeadLetters],
    ];
    const settled = await Promise.allSettled(panels.map(([pending]) => pending));
    const failed = [];
    settled.forEach((outcome, index) => {
      if (outcome.status === "fulfilled") panels[index][1](outcome.value);
      else failed.push(outcome.reason);
    });
    if (failed.length) throw failed[0];
    document.getElementById("updated").textContent = `updated ${clock(Date.now() / 1000)}`;
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
    problem("");
  } catch (error) {
    if (error instanceof Unauthorized) {
      problem("The dashboard's token is needed: open the address the engine printed when it started.");
    } else {
      problem(`The engine does not answer: ${error.message}`);
    }
  } finally {
    refreshing = false;
  }
}

window.addEventListener("hashchange", () => {
  selected = readSelection();
  refresh();
});
refresh();
setInterval(refresh, POLL_MS);
