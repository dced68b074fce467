// The station's dashboard: /api/state once, then server-sent events (/api/events).
// Read-only until an operator token is given; then actions go to POST /api/control.
"use strict";

const FEED_ROWS = 100;          // rows kept per line (the server keeps as many)
const NG_SHOWN = 6;             // ng pictures per line
const TOKEN_KEY = "musc-edge-operator-token";

const lines = new Map();        // line name -> {el, feed: [], ng: [], thresholds: [], status}
let operator = null;            // {name, actions} once signed in
let stale = false;              // the event stream dropped: reload the state when it is back

const $ = (root, sel) => root.querySelector(sel);
const fmt = (v, digits = 3) => (v === null || v === undefined ? "–" : Number(v).toPrecision(digits));
const ms = (v) => (v === null || v === undefined ? "–" : `${Math.round(v)} ms`);
const clock = (ts) => new Date(ts * 1000).toLocaleTimeString([], {hour12: false});

function el(tag, attrs = {}, ...children) {
  const node = ["path", "circle", "text"].includes(tag)
    ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function toast(text, bad = false) {
  const t = document.getElementById("toast");
  t.textContent = text;
  t.className = bad ? "bad" : "";
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 5000);
}

// --- operator -----------------------------------------------------------------

function token() { return sessionStorage.getItem(TOKEN_KEY); }

async function whoami() {
  const t = token();
  const reply = await fetch("/api/whoami", {headers: t ? {Authorization: `Bearer ${t}`} : {}});
  const who = await reply.json();
  operator = who.role === "operator" ? who : null;
  if (t && !operator) { sessionStorage.removeItem(TOKEN_KEY); toast("unknown operator token", true); }
  document.getElementById("role").textContent = operator ? `operator ${operator.name}` : "viewer (read-only)";
  document.getElementById("token").hidden = !!operator;
  document.getElementById("signin-button").hidden = !!operator;
  document.getElementById("signout-button").hidden = !operator;
  document.body.classList.toggle("is-operator", !!operator);
  for (const [name, line] of lines) renderOperator(name, line);
}

async function act(request) {
  const reply = await fetch("/api/control", {
    method: "POST", body: JSON.stringify(request),
    headers: {"Content-Type": "application/json", Authorization: `Bearer ${token()}`},
  });
  const body = await reply.json();
  const what = `${request.cmd} ${request.line || ""}`.trim();
  if (body.ok) toast(`${what}: done`); else toast(`${what}: ${body.error}`, true);
  return body;
}

const can = (action) => operator && operator.actions.includes(action);

function renderOperator(name, line) {
  const form = $(line.el, ".operator");
  form.hidden = !(can("switch") || can("set_threshold"));
  $(form, ".accept-shift").hidden = !(can("accept_shift") && line.status && "references" in line.status);
  renderAlerts(name, line);
  renderFeed(name, line);
}

// --- panels -------------------------------------------------------------------

function panel(name) {
  if (lines.has(name)) return lines.get(name);
  document.getElementById("loading")?.remove();
  const node = document.getElementById("line-template").content.firstElementChild.cloneNode(true);
  node.dataset.line = name;
  $(node, ".name").textContent = name;
  const line = {el: node, feed: [], ng: [], thresholds: [], status: null};
  $(node, ".switch").addEventListener("click", () => {
    const profile = $(node, ".profile").value.trim();
    if (profile) act({cmd: "switch", line: name, profile});
  });
  $(node, ".set-threshold").addEventListener("click", () => {
    const value = parseFloat($(node, ".new-threshold").value);
    if (Number.isFinite(value)) act({cmd: "set_threshold", line: name, value, source: `operator:${operator.name}`});
  });
  $(node, ".accept-shift").addEventListener("click", () => act({cmd: "accept_shift", line: name}));
  document.getElementById("lines").append(node);
  lines.set(name, line);
  renderOperator(name, line);
  return line;
}

function renderStatus(name, line) {
  const s = line.status;
  if (!s) return;
  const e = line.el;
  if (s.served === false) {
    $(e, ".product").textContent = "not served by this station: its parts are answered with errors";
    return;
  }
  $(e, ".product").textContent = `${s.product} · ${s.profile_source}`;
  const refs = "references" in s ? ` · ${s.references} references` : "";
  $(e, ".window").textContent = `${s.window}/${s.capacity}${refs}${s.window < s.min_window ? " (warming up)" : ""}`;
  $(e, ".threshold").textContent = s.threshold === null ? "–" : `${fmt(s.threshold)} (${s.threshold_source})`;
  $(e, ".rate").textContent = Number(s.parts_per_s).toFixed(2);
  $(e, ".latency").textContent = `${ms(s.latency_ms.p50)} / ${ms(s.latency_ms.p95)}`;
  $(e, ".queue").textContent = `${s.queue}/${s.queue_capacity}${s.dropped ? ` · ${s.dropped} dropped` : ""}`;
  $(e, ".alert-count").textContent = "alerts" in s ? String(s.alerts.length) : "–";
  renderAlerts(name, line);
  renderPlot(line);
}

function renderAlerts(name, line) {
  const box = $(line.el, ".alerts");
  box.replaceChildren();
  for (const alert of (line.status && line.status.alerts) || []) {
    const row = el("div", {class: "alert"}, el("b", {}, alert.kind || "alert"),
      el("span", {}, alert.message || ""), el("span", {class: "muted"}, alert.ts ? clock(alert.ts) : ""));
    if (can("ack_alert")) {
      row.append(el("button", {type: "button", class: "ack", onclick: () => act({cmd: "ack_alert", line: name, id: alert.id})},
        "Acknowledge"));
    }
    box.append(row);
  }
}

function scoreCell(v) {
  const cell = el("td", {class: "score"});
  if (v.score === null || v.threshold === null) {
    cell.textContent = v.score === null ? "–" : fmt(v.score);
    return cell;
  }
  const top = Math.max(v.score, v.threshold) * 1.25 || 1;
  const bar = el("span", {class: "bar"}, el("i"), el("b"));
  bar.firstChild.style.width = `${Math.max(0, Math.min(100, 100 * v.score / top))}%`;
  bar.lastChild.style.left = `${Math.max(0, Math.min(100, 100 * v.threshold / top))}%`;
  cell.append(`${fmt(v.score)} ${v.score > v.threshold ? ">" : "≤"} ${fmt(v.threshold)}`, bar);
  return cell;
}

function feedRow(name, v) {
  const note = v.code || (v.regions ? `${v.regions} region(s)` : "");
  const row = el("tr", {class: `verdict ${v.verdict}`, "data-part": v.part},
    el("td", {}, clock(v.ts)), el("td", {class: "part"}, v.part),
    el("td", {}, el("span", {class: `chip ${v.verdict}`}, v.verdict)), scoreCell(v),
    el("td", {}, ms(v.latency_ms)), el("td", {class: "note", title: v.message || ""}, note));
  if (can("label") && lineHasGuard(name)) {
    const buttons = el("span", {class: "label-buttons"});
    for (const label of ["good", "defect"]) {
      buttons.append(el("button", {type: "button", onclick: () => act({cmd: "label", line: name, part: v.part, label})}, label));
    }
    row.lastChild.append(" ", buttons);
  }
  return row;
}

function lineHasGuard(name) {
  const s = lines.get(name).status;
  return !!s && "references" in s;
}

function renderFeed(name, line) {
  $(line.el, ".feed tbody").replaceChildren(...line.feed.slice().reverse().map((v) => feedRow(name, v)));
}

function renderNg(name, line) {
  const box = $(line.el, ".ng-parts");
  if (!line.ng.length) return;
  box.replaceChildren(...line.ng.slice().reverse().map((v) => el("figure", {"data-part": v.part},
    el("img", {alt: `${v.part}: anomaly map over the part`, loading: "lazy",
      src: `/api/lines/${encodeURIComponent(name)}/parts/${encodeURIComponent(v.part)}/picture.png`}),
    el("figcaption", {}, `${v.part} · score ${fmt(v.score)} > ${fmt(v.threshold)}`))));
}

// Scores (dots, coloured by verdict) and the threshold (a step line) over the feed's time span.
function renderPlot(line) {
  const svg = $(line.el, ".plot");
  const W = 420, H = 140, pad = 22;
  const scored = line.feed.filter((v) => v.score !== null);
  let steps = line.thresholds.map(([ts, value]) => [ts, value]);
  const history = line.status && line.status.threshold_history;  // the line's own record, when it keeps one
  if (Array.isArray(history) && history.length) {
    steps = history.map((h) => (Array.isArray(h) ? [h[0], h[1]] : [h.ts, h.value])).filter((h) => h[1] !== null);
  }
  svg.replaceChildren();
  if (!scored.length && !steps.length) {
    svg.append(el("text", {x: pad, y: H / 2}, "no scores yet (window warming up)"));
    return;
  }
  const times = scored.map((v) => v.ts).concat(steps.map((s) => s[0]));
  const t1 = Math.max(...times), t0 = Math.min(...(scored.length ? scored.map((v) => v.ts) : times));
  const values = scored.map((v) => v.score).concat(steps.filter((s) => s[0] >= t0).map((s) => s[1]));
  const before = steps.filter((s) => s[0] < t0).pop();
  if (before) values.push(before[1]);
  let lo = Math.min(...values), hi = Math.max(...values);
  if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
  const x = (t) => pad + (W - 2 * pad) * (t1 > t0 ? (t - t0) / (t1 - t0) : 0.5);
  const y = (v) => H - pad + (2 * pad - H) * (v - lo) / (hi - lo);
  const visible = (before ? [[t0, before[1]]] : []).concat(steps.filter((s) => s[0] >= t0));
  if (visible.length) {
    let d = `M${x(visible[0][0])},${y(visible[0][1])}`;
    for (const [t, v] of visible.slice(1)) d += ` H${x(t)} V${y(v)}`;
    d += ` H${x(t1)}`;
    svg.append(el("path", {class: "thr", d}));
  }
  for (const v of scored) svg.append(el("circle", {class: `dot ${v.verdict}`, cx: x(v.ts), cy: y(v.score), r: 3}));
  svg.append(el("text", {x: 2, y: pad - 8}, fmt(hi)), el("text", {x: 2, y: H - 6}, fmt(lo)),
    el("text", {x: W - 150, y: pad - 8}, "— threshold   • score"));
}

// --- data ------------------------------------------------------------------------

function onStatus(status) {
  document.getElementById("uptime").textContent = `up ${Math.round(status.station.uptime_s)} s`;
  for (const [name, s] of Object.entries(status.lines)) {
    const line = panel(name);
    line.status = s;
    renderStatus(name, line);
  }
}

function onVerdict(v) {
  const line = panel(v.line);
  if (!line.status) {  // not in the last status: not served, until a status says otherwise
    line.status = {served: false};
    renderStatus(v.line, line);
  }
  if (line.feed.some((f) => f.part === v.part)) return;  // already in the snapshot
  line.feed.push(v);
  if (line.feed.length > FEED_ROWS) line.feed.shift();
  if (v.threshold !== null) {
    const last = line.thresholds[line.thresholds.length - 1];
    if (!last || last[1] !== v.threshold || last[2] !== v.threshold_source) line.thresholds.push([v.ts, v.threshold, v.threshold_source]);
  }
  $(line.el, ".feed tbody").prepend(feedRow(v.line, v));
  const rows = $(line.el, ".feed tbody").rows;
  if (rows.length > FEED_ROWS) rows[rows.length - 1].remove();
  if (v.picture) {
    line.ng.push(v);
    if (line.ng.length > NG_SHOWN) line.ng.shift();
    renderNg(v.line, line);
  }
  renderPlot(line);
}

async function load() {
  const reply = await fetch("/api/state");
  if (!reply.ok) throw new Error(`state: HTTP ${reply.status}`);
  const state = await reply.json();
  for (const [name, s] of Object.entries(state.lines)) {
    const line = panel(name);
    Object.assign(line, {feed: s.feed, ng: s.ng.slice(-NG_SHOWN), thresholds: s.thresholds, status: s});
    renderFeed(name, line);
    renderNg(name, line);
    renderStatus(name, line);
  }
  onStatus({station: state.station, lines: Object.fromEntries(Object.entries(state.lines).filter(([, s]) => s.served !== false))});
}

function connect() {
  const events = new EventSource("/api/events");
  const conn = document.getElementById("connection");
  events.addEventListener("open", () => {
    conn.textContent = "live";
    conn.className = "conn up";
    if (stale) { stale = false; load().catch(() => { stale = true; }); }
  });
  events.addEventListener("error", () => {
    conn.textContent = "reconnecting…";
    conn.className = "conn down";
    stale = true;
  });
  events.addEventListener("verdict", (e) => onVerdict(JSON.parse(e.data)));
  events.addEventListener("status", (e) => onStatus(JSON.parse(e.data)));
}

document.getElementById("signin").addEventListener("submit", (e) => {
  e.preventDefault();
  const value = document.getElementById("token").value.trim();
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  document.getElementById("token").value = "";
  whoami();
});
document.getElementById("signout-button").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  whoami();
});

// Subscribe first so no verdict falls between the snapshot and the stream; the
// snapshot then replaces what arrived meanwhile (it holds those verdicts too).
connect();
load().catch(() => { stale = true; }).then(whoami);
