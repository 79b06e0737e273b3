// scatterbrained live dashboard: applies the records of /events (server-sent events) to a
// small state and draws it as inline SVG. No framework, no build step.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const MODES = ["peer", "seeding", "leeching", "offline"];
const MAX_POINTS = 5000; // per node and series
const MAX_LOG = 400;
const TRAFFIC_EPOCHS = 3; // a link stays lit this many epochs after a merge

let state = fresh(null);
let selected = null;
let drawPending = false;

function fresh(run) {
  return {
    run, nodes: new Map(), edges: run ? run.edges || [] : [], traffic: new Map(),
    epoch: 0, epochs: run ? run.epochs : null, bytes: [], log: [], finished: false,
  };
}

function node(id) {
  let n = state.nodes.get(id);
  if (!n) {
    n = { id, mode: null, alive: true, paused: false, gone: false, acc: [], loss: [],
      sent: 0, received: 0, peers: null, merged: 0, lastAcc: null, lastLoss: null };
    state.nodes.set(id, n);
  }
  return n;
}

function push(series, point) {
  series.push(point);
  if (series.length > MAX_POINTS) series.shift();
}

function log(kind, text, epoch) {
  state.log.push({ kind, text, epoch, time: new Date() });
  if (state.log.length > MAX_LOG) state.log.shift();
}

// ---- applying records -------------------------------------------------------------------

function apply(record) {
  const handler = { run: onRun, epoch: onEpoch, members: onMembers, log: onLog, end: onEnd }[record.kind];
  if (handler) handler(record);
}

function onRun(r) {
  state = fresh(r);
  for (const id of r.nodes || []) node(id).mode = (r.modes || {})[id] || null;
  document.getElementById("title").textContent = r.title || "";
  log("run", `run started: ${r.title || ""}`, 0);
}

function onEpoch(r) {
  let sent = 0;
  const accs = [];
  for (const row of r.rows || []) {
    const n = node(row.node);
    applyEvent(n, row.event, r.epoch);
    n.alive = row.alive !== false;
    if (row.mode && n.mode && row.mode !== n.mode && n.alive) {
      log("mode", `${n.id} mode ${n.mode} \u2192 ${row.mode}`, r.epoch);
    }
    if (row.mode) n.mode = row.mode;
    if (row.accuracy != null) { push(n.acc, [r.epoch, row.accuracy]); n.lastAcc = row.accuracy; accs.push(row.accuracy); }
    if (row.loss != null) { push(n.loss, [r.epoch, row.loss]); n.lastLoss = row.loss; }
    n.sent += row.bytes_sent || 0;
    n.received += row.bytes_received || 0;
    n.peers = row.peers != null ? row.peers : n.peers;
    n.merged = (row.merged_from || []).length;
    sent += row.bytes_sent || 0;
    for (const src of row.merged_from || []) state.traffic.set(edgeKey(src, row.node), r.epoch);
  }
  if (r.edges) state.edges = r.edges;
  state.epoch = Math.max(state.epoch, r.epoch);
  push(state.bytes, [r.epoch, sent]);
  const mean = accs.length ? accs.reduce((a, b) => a + b, 0) / accs.length : null;
  log("epoch", `epoch ${r.epoch}: mean accuracy ${fmt(mean)}, sent ${fmtBytes(sent)}`, r.epoch);
}

function applyEvent(n, event, epoch) {
  if (!event) return;
  if (event === "paused") n.paused = true;
  if (event === "resumed" || event === "restarted" || event === "killed") n.paused = false;
  const kind = event === "killed" || event === "paused" ? "fault" : "recover";
  log(kind, `${n.id} ${event} (before epoch ${epoch})`, epoch);
}

function onMembers(r) {
  const present = r.nodes || {};
  for (const [id, mode] of Object.entries(present)) {
    const n = node(id);
    n.gone = false;
    if (mode) n.mode = mode;
  }
  for (const n of state.nodes.values()) if (!(n.id in present)) n.gone = true;
  if (r.edges) state.edges = r.edges;
}

function onLog(r) {
  log(/mode/.test(r.text) ? "mode" : "info", r.text, state.epoch);
}

function onEnd(r) {
  state.finished = true;
  const s = r.summary || {};
  log("run", `run finished: mean accuracy ${fmt(s.mean_accuracy)}, ${fmtBytes(s.bytes_total || 0)} sent`, state.epoch);
}

// ---- drawing ----------------------------------------------------------------------------

function el(name, attrs, parent) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

function edgeKey(a, b) { return a < b ? `${a}|${b}` : `${b}|${a}`; }
function fmt(v) { return v == null ? "-" : v.toFixed(3); }
function fmtBytes(n) {
  const units = ["B", "kB", "MB", "GB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
}
function modeColor(mode) {
  return MODES.includes(mode) ? `var(--${mode})` : "#b0b7bf";
}
function nodeColor(i, count) { return `hsl(${Math.round((360 * i) / Math.max(1, count))}, 65%, 45%)`; }
function nodeState(n) { return !n.alive ? "killed" : n.paused ? "paused" : n.gone ? "gone" : "alive"; }

function schedule() {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => { drawPending = false; draw(); });
}

function draw() {
  const ids = [...state.nodes.keys()];
  drawTopology(ids);
  const colors = new Map(ids.map((id, i) => [id, nodeColor(i, ids.length)]));
  const xMax = Math.max(state.epochs || 0, state.epoch, 1);
  const accs = ids.map((id) => ({ id, color: colors.get(id), points: state.nodes.get(id).acc }));
  drawChart("accuracy", accs.concat([{ id: "mean", points: meanSeries() }]), { xMax, yMin: 0, yMax: 1 });
  const losses = ids.map((id) => ({ id, color: colors.get(id), points: state.nodes.get(id).loss }));
  const values = losses.flatMap((s) => s.points.map((p) => p[1]));
  const lo = values.length ? Math.min(...values) : 0, hi = values.length ? Math.max(...values) : 1;
  const pad = Math.max(0.05, (hi - lo) * 0.08);
  drawChart("loss", losses, { xMax, yMin: Math.max(0, lo - pad), yMax: hi + pad });
  drawBytes(xMax);
  drawTable(ids, colors);
  drawLog();
  drawHeader();
}

function meanSeries() {
  const sums = new Map();
  for (const n of state.nodes.values()) {
    for (const [e, v] of n.acc) {
      const s = sums.get(e) || [0, 0];
      sums.set(e, [s[0] + v, s[1] + 1]);
    }
  }
  return [...sums.entries()].sort((a, b) => a[0] - b[0]).map(([e, s]) => [e, s[0] / s[1]]);
}

function drawTopology(ids) {
  const svg = document.getElementById("topology");
  svg.replaceChildren();
  svg.dataset.nodes = String(ids.length);
  const c = 260, R = ids.length > 1 ? 215 : 0;
  const r = Math.max(5, Math.min(20, 520 / Math.max(ids.length, 1) / 2.2));
  const pos = new Map(ids.map((id, i) => {
    const a = (2 * Math.PI * i) / Math.max(ids.length, 1) - Math.PI / 2;
    return [id, [c + R * Math.cos(a), c + R * Math.sin(a)]];
  }));
  const drawn = new Set();
  const edges = el("g", {}, svg);
  for (const [a, b] of state.edges) {
    const key = edgeKey(a, b);
    if (drawn.has(key) || !pos.has(a) || !pos.has(b)) continue;
    drawn.add(key);
    line(edges, pos.get(a), pos.get(b), { class: "edge" });
  }
  for (const [key, epoch] of state.traffic) {
    const age = state.epoch - epoch;
    if (age >= TRAFFIC_EPOCHS) { state.traffic.delete(key); continue; }
    const [a, b] = key.split("|");
    if (!pos.has(a) || !pos.has(b)) continue;
    line(edges, pos.get(a), pos.get(b), {
      class: "edge traffic", "stroke-width": String(3 - age), "stroke-opacity": String(1 - age / TRAFFIC_EPOCHS),
      "data-edge": key,
    });
  }
  for (const id of ids) {
    const n = state.nodes.get(id), [x, y] = pos.get(id), st = nodeState(n);
    const g = el("g", { class: "node" + (selected === id ? " selected" : ""), "data-node": id,
      "data-mode": n.mode || "", "data-state": st }, svg);
    el("title", {}, g).textContent = `${id}: ${n.mode || "?"}, ${st}, accuracy ${fmt(n.lastAcc)}`;
    el("circle", { cx: x, cy: y, r, fill: modeColor(n.mode) }, g);
    if (st === "killed") {
      const d = r * 0.75;
      line(g, [x - d, y - d], [x + d, y + d], { class: "cross" });
      line(g, [x - d, y + d], [x + d, y - d], { class: "cross" });
    }
    if (r >= 12) el("text", { class: "id", x, y: y + 3.5 }, g).textContent = id;
    if (st !== "alive") {
      const out = y >= c ? y + r + 13 : y - r - 6;
      el("text", { class: "badge", x, y: out }, g).textContent = st;
    }
    g.addEventListener("click", () => { selected = selected === id ? null : id; schedule(); });
  }
}

function line(parent, [x1, y1], [x2, y2], attrs) {
  return el("line", { x1, y1, x2, y2, ...attrs }, parent);
}

function drawChart(id, series, { xMax, yMin, yMax }) {
  const svg = document.getElementById(id);
  svg.replaceChildren();
  const [W, H] = svg.getAttribute("viewBox").split(" ").slice(2).map(Number);
  const m = { l: 40, r: 10, t: 8, b: 22 };
  const sx = (x) => m.l + ((x - 0) / xMax) * (W - m.l - m.r);
  const sy = (y) => H - m.b - ((y - yMin) / (yMax - yMin || 1)) * (H - m.t - m.b);
  axes(svg, { W, H, m, sx, sy, xMax, yMin, yMax });
  svg.classList.toggle("has-selection", selected !== null);
  for (const s of series) {
    if (!s.points.length) continue;
    const pts = s.points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(Math.min(y, yMax)).toFixed(1)}`).join(" ");
    const last = s.points[s.points.length - 1][1];
    const cls = "curve" + (s.id === "mean" ? " mean" : "") + (s.id === selected ? " selected" : "");
    const attrs = { class: cls, points: pts, "data-node": s.id, "data-points": s.points.length,
      "data-last": last.toFixed(4) };
    if (s.color) attrs.stroke = s.color;
    el("polyline", attrs, svg);
  }
}

function axes(svg, { W, H, m, sx, sy, xMax, yMin, yMax }) {
  const g = el("g", { class: "axis" }, svg);
  line(g, [m.l, H - m.b], [W - m.r, H - m.b], {});
  line(g, [m.l, m.t], [m.l, H - m.b], {});
  for (let i = 0; i <= 4; i++) {
    const v = yMin + ((yMax - yMin) * i) / 4;
    line(g, [m.l - 3, sy(v)], [W - m.r, sy(v)], { "stroke-opacity": i ? 0.35 : 1 });
    el("text", { x: m.l - 5, y: sy(v) + 3, "text-anchor": "end" }, g).textContent = tick(v);
  }
  const step = Math.max(1, Math.ceil(xMax / 10));
  for (let x = 0; x <= xMax; x += step) {
    el("text", { x: sx(x), y: H - m.b + 14, "text-anchor": "middle" }, g).textContent = String(x);
  }
}

function tick(v) {
  if (v >= 1e6) return `${(v / 1e6).toFixed(1)}M`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(0)}k`;
  return v >= 10 ? v.toFixed(0) : v.toFixed(2);
}

function drawBytes(xMax) {
  const svg = document.getElementById("bytes");
  svg.replaceChildren();
  const [W, H] = svg.getAttribute("viewBox").split(" ").slice(2).map(Number);
  const m = { l: 40, r: 10, t: 8, b: 22 };
  const yMax = Math.max(1, ...state.bytes.map((p) => p[1]));
  const sx = (x) => m.l + (x / (xMax + 0.5)) * (W - m.l - m.r);
  const sy = (y) => H - m.b - (y / yMax) * (H - m.t - m.b);
  axes(svg, { W, H, m, sx, sy, xMax, yMin: 0, yMax });
  const w = Math.max(1, (W - m.l - m.r) / (xMax + 0.5) - 2);
  for (const [e, v] of state.bytes) {
    el("rect", { class: "bar", x: sx(e) - w / 2, y: sy(v), width: w, height: H - m.b - sy(v),
      "data-epoch": e, "data-bytes": v }, svg);
  }
}

function drawTable(ids, colors) {
  const body = document.querySelector("#nodes tbody");
  body.replaceChildren();
  for (const id of ids) {
    const n = state.nodes.get(id), st = nodeState(n);
    const tr = document.createElement("tr");
    tr.dataset.node = id;
    if (selected === id) tr.className = "selected";
    const cells = [
      `<span style="color:${colors.get(id)}">\u25cf</span> ${id}`,
      `<span class="chip" style="background:${modeColor(n.mode)}">${n.mode || "?"}</span>`,
      st, fmt(n.lastAcc), fmt(n.lastLoss), fmtBytes(n.sent), fmtBytes(n.received),
      n.peers == null ? "-" : String(n.peers), String(n.merged),
    ];
    cells.forEach((html, i) => {
      const td = document.createElement("td");
      td.innerHTML = html;
      if (i === 2 && st !== "alive") td.className = st;
      tr.appendChild(td);
    });
    tr.addEventListener("click", () => { selected = selected === id ? null : id; schedule(); });
    body.appendChild(tr);
  }
}

function drawLog() {
  const list = document.getElementById("log");
  list.replaceChildren();
  for (let i = state.log.length - 1; i >= 0; i--) {
    const item = state.log[i];
    const li = document.createElement("li");
    li.className = item.kind;
    const when = document.createElement("span");
    when.className = "when";
    when.textContent = item.time.toLocaleTimeString();
    li.append(when, item.text);
    list.appendChild(li);
  }
}

function drawHeader() {
  const nodes = [...state.nodes.values()];
  // The mean of the newest epoch's accuracies: the end of the black curve, the event log's
  // and the summary's number (a paused node's old accuracy does not count).
  const series = meanSeries();
  const mean = series.length ? series[series.length - 1][1] : null;
  document.getElementById("stat-epoch").textContent = state.epochs ? `${state.epoch}/${state.epochs}` : String(state.epoch);
  document.getElementById("stat-acc").textContent = fmt(mean);
  document.getElementById("stat-alive").textContent = `${nodes.filter((n) => n.alive && !n.gone).length}/${nodes.length}`;
  document.getElementById("stat-bytes").textContent = fmtBytes(state.bytes.reduce((a, p) => a + p[1], 0));
  document.body.dataset.epoch = String(state.epoch);
  if (state.finished) setStatus("finished");
}

function setStatus(status) {
  document.body.dataset.status = status;
  document.getElementById("status").textContent = status;
}

function legend() {
  const box = document.getElementById("legend");
  const items = MODES.map((m) => `<span><i style="background:var(--${m})"></i>${m}</span>`);
  items.push('<span><i style="background:#fff;border:2px solid var(--killed)"></i>killed</span>');
  items.push('<span><i style="background:#fff;border:2px dashed #24292f"></i>paused</span>');
  items.push('<span><i style="background:var(--traffic);border-radius:0;height:3px"></i>merged recently</span>');
  box.innerHTML = items.join("");
}

function connect() {
  const source = new EventSource("/events");
  source.onopen = () => { state = fresh(null); setStatus("live"); }; // the replay follows
  source.onmessage = (message) => {
    let record;
    try { record = JSON.parse(message.data); } catch (e) { return; }
    apply(record);
    if (!state.finished) setStatus("live");
    schedule();
  };
  source.onerror = () => { if (!state.finished) setStatus("disconnected"); };
}

legend();
draw();
connect();
