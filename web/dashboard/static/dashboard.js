// vmpooler dashboard: a snapshot from /dashboard/data, live updates from /dashboard/events (SSE),
// history from /dashboard/history. Updates are coalesced: at most one DOM update per frame, and
// only the pool cells whose numbers changed are touched.
const $ = (id) => document.getElementById(id);
const S = { pools: [], index: new Map(), rows: [], today: null, feed: [], seen: new Set(),
  dirty: new Set(), all: true, hist: null, window: "hour", selected: null, cells: [], week: null };
const stats = (window.dashboard = { firstPaint: 0, updates: 0, lastMessage: 0, lastCheckout: 0, lastUpdate: 0, charts: 0, week: 0, mode: "" });
const ROW = { size: 0, ready: 1, cloning: 2, booting: 3, running: 4, completed: 5 };
const major = (p) => p.split("-")[0];

async function json(url) {
  const r = await fetch(url, { cache: "no-store" });
  if (!r.ok) throw new Error(`${url}: ${r.status}`);
  return r.json();
}

function applySnapshot(d) {
  if (S.pools.length !== d.pools.length || S.pools.some((p, i) => p !== d.pools[i])) {
    S.pools = d.pools; S.index = new Map(d.pools.map((p, i) => [p, i])); S.cells = []; S.all = true;
  }
  S.rows = d.rows; S.today = d.today;
  d.rows.forEach((_, i) => S.dirty.add(i));
  addEvents(d.feed.slice().reverse());
  schedule();
}

function addEvents(events) {
  for (const e of events) {
    const key = e.pool + "/" + e.pos;
    if (S.seen.has(key)) continue;
    S.seen.add(key); S.feed.push(e);
  }
  S.feed.sort((a, b) => b.at - a.at);
  if (S.feed.length > 40) {
    for (const e of S.feed.splice(40)) S.seen.delete(e.pool + "/" + e.pos);
  }
}

function applyUpdate(msg) {
  for (const [pool, row] of Object.entries(msg.rows)) {
    const i = S.index.get(pool);
    if (i !== undefined) { S.rows[i] = row; S.dirty.add(i); }
  }
  addEvents(msg.events);
  liveHistory(msg);
  stats.updates++; stats.lastMessage = Date.now();
  if (msg.events.some((e) => e.type === "vm.checked-out")) stats.lastCheckout = stats.lastMessage;
  schedule();
}

// Keep the charts' newest point live between history reloads: advance the window to the newest
// event's time, set the touched pools' gauges, count checkouts and failures.
function liveHistory(msg) {
  const h = S.hist;
  if (!h || !msg.events.length || h.window !== "hour") return;
  const at = Math.max(...msg.events.map((e) => e.at));
  const n = h.checkouts.length;
  let shift = Math.floor((at - h.start) / h.step) - (n - 1);
  if (shift > n) shift = n;
  for (; shift > 0; shift--) {
    for (const k of ["checkouts", "failures"]) h[k] = h[k].slice(1).concat([0]);
    for (const k of ["clone", "boot"]) h[k] = h[k].slice(1).concat([null]);
    for (const s of Object.values(h.pools)) for (const j of [0, 1]) s[j] = s[j].slice(1).concat(s[j].slice(-1));
    h.start += h.step;
  }
  for (const [pool, row] of Object.entries(msg.rows)) {
    const s = h.pools[pool];
    if (s) { s[0][n - 1] = row[ROW.ready]; s[1][n - 1] = row[ROW.running]; }
  }
  for (const e of msg.events) {
    if (e.type === "vm.checked-out") h.checkouts[n - 1]++;
    else if (e.type === "vm.checkout-reverted") h.checkouts[n - 1] = Math.max(0, h.checkouts[n - 1] - 1);
    else if (e.type === "pool.checkout-failed") h.failures[n - 1]++;
  }
  if (!chartTimer) chartTimer = setTimeout(() => { chartTimer = 0; drawCharts(); }, 500);
}
let chartTimer = 0;

let frame = 0;
function schedule() { if (!frame) frame = requestAnimationFrame(render); }

function render() {
  frame = 0;
  const grid = $("pools");
  if (S.all || S.cells.length !== S.pools.length) {
    grid.replaceChildren(...S.pools.map((p, i) => (S.cells[i] = cell(p))));
    S.pools.forEach((_, i) => S.dirty.add(i));
    S.all = false;
  }
  for (const i of S.dirty) paintCell(i);
  S.dirty.clear();
  renderNumbers(); renderFeed();
  if (!stats.firstPaint) stats.firstPaint = performance.now();
  stats.lastUpdate = Date.now();
}

function cell(pool) {
  const el = document.createElement("div");
  el.className = "pool"; el.dataset.pool = pool;
  el.innerHTML = '<div class="n"></div><div class="bar"><i></i></div><div class="c"></div>';
  el.firstChild.textContent = pool; el.title = pool;
  return el;
}

function paintCell(i) {
  const el = S.cells[i], r = S.rows[i];
  if (!el || !r) return;
  const [size, ready, cloning, booting, running, completed] = r;
  const pct = size ? Math.min(100, (100 * ready) / size) : 0;
  const bar = el.children[1].firstChild;
  bar.style.width = pct + "%";
  bar.className = pct < 25 ? "bad" : pct < 50 ? "warn" : "";
  el.classList.toggle("empty", ready === 0 && size !== 0);
  el.classList.toggle("sel", S.pools[i] === S.selected);
  el.children[2].textContent =
    `${ready}/${size} ready · ${cloning + booting} pend · ${running} run · ${completed} done`;
}

function totals() {
  const t = [0, 0, 0, 0, 0, 0];
  for (const r of S.rows) for (let k = 0; k < 6; k++) t[k] += r[k];
  return t;
}

function renderNumbers() {
  const [size, ready, cloning, booting, running, completed] = totals();
  const td = S.today || { clone: {}, boot: {} };
  const cap = size ? Math.round((1000 * ready) / size) / 10 : 0;
  const items = [
    [td.clone.count ?? 0, "cloned today"], [`${td.clone.average ?? 0}s`, "clone time today"],
    [`${td.boot.average ?? 0}s`, "boot time today"], [`${cap}%`, "capacity"],
    [ready + cloning + booting + running + completed, "total VMs"], [ready, "ready"],
    [cloning + booting, "pending"], [cloning, "cloning"], [booting, "booting"],
    [running, "running"], [completed, "completed"],
  ];
  $("numbers").innerHTML = items.map(([v, l]) => `<div><b>${v}</b><span>${l}</span></div>`).join("");
  const empty = S.rows.filter((r) => r[1] === 0 && r[0] !== 0).length;
  $("empty").textContent = empty ? `${empty} empty` : "";
  const byMajor = new Map();
  S.pools.forEach((p, i) => byMajor.set(major(p), (byMajor.get(major(p)) || 0) + S.rows[i][4]));
  $("majors").innerHTML = [...byMajor].sort((a, b) => b[1] - a[1])
    .map(([m, n]) => `<li><i style="background:${color(m)}"></i>${esc(m)}: <b>${n}</b></li>`).join("");
}

function renderFeed() {
  $("feed").innerHTML = S.feed.map((e) => {
    const t = new Date(e.at).toISOString().slice(11, 19);
    const vm = e.vm ? `<a href="/dashboard/vm/${encodeURIComponent(e.vm)}">${esc(e.vm)}</a>` : "";
    return `<li><time>${t}</time>${esc(e.pool)} ${esc(e.type)} ${vm}</li>`;
  }).join("");
}

// A VM's whole history in a dialog (the link itself serves the JSON, for scripts and new tabs).
$("feed").addEventListener("click", async (ev) => {
  const a = ev.target.closest("a");
  if (!a || ev.button !== 0 || ev.ctrlKey || ev.metaKey || ev.shiftKey) return;
  ev.preventDefault();
  const d = await (await fetch(a.href)).json();
  $("vm-name").textContent = d.ok ? `${d.vm} (${d.pool})` : `${a.textContent}: no history`;
  $("vm-events").innerHTML = (d.events || []).map((e) => {
    const { type, ...rest } = e.event;
    const details = Object.entries(rest).map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(" ");
    return `<tr><td>${new Date(e.at).toISOString().replace("T", " ").slice(0, 23)}</td><td>${esc(e.type)}</td><td>${esc(e.actor)}</td><td>${esc(details)}</td></tr>`;
  }).join("");
  $("vm").showModal();
});

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const PALETTE = ["#3767c2", "#d33c2f", "#2e9d55", "#e07b00", "#8a4fbf", "#1b9aaa", "#c2407f", "#7a8b2b",
  "#5b4636", "#e6b400", "#4f6d7a", "#ff7f6e"];
const colors = new Map();
function color(key) {  // OS families get palette colours in name order, then the palette repeats
  if (!colors.has(key)) {
    const all = [...new Set([...S.pools.map(major), key])].sort();
    all.forEach((m, i) => colors.set(m, PALETTE[i % PALETTE.length]));
  }
  return colors.get(key);
}

// --- history charts (canvas) ---
async function loadHistory(incremental) {
  const h = S.hist;
  const since = incremental && h && h.window === S.window ? h.start + h.step * (h.checkouts.length - 1) : null;
  const d = await json(`/dashboard/history?window=${S.window}` + (since !== null ? `&since=${since}` : ""));
  if (d.window !== S.window || S.hist !== h) return;  // switched or reloaded meanwhile
  S.hist = since === null ? d : merge(h, d);
  drawCharts();
}

function merge(h, d) {
  const at = Math.max(0, Math.round((d.start - h.start) / h.step)), n = h.checkouts.length;
  const cut = (a, b) => a.slice(0, at).concat(b).slice(-n);
  for (const k of ["checkouts", "failures", "clone", "boot"]) h[k] = cut(h[k], d[k]);
  for (const [p, [r, u]] of Object.entries(d.pools)) {
    const old = h.pools[p] || [[], []];
    h.pools[p] = [cut(old[0], r), cut(old[1], u)];
  }
  h.start = d.start + d.step * (d.checkouts.length - h.checkouts.length);
  return h;
}

function drawCharts() {
  const h = S.hist;
  if (!h) return;
  stats.charts++;
  const byMajor = new Map();
  for (const [p, [, running]] of Object.entries(h.pools)) {
    const m = major(p), acc = byMajor.get(m) || running.map(() => 0);
    byMajor.set(m, acc.map((v, i) => v + running[i]));
  }
  const stacks = [...byMajor].sort((a, b) => a[0].localeCompare(b[0]))
    .map(([m, v]) => ({ label: m, values: v, color: color(m) }));
  chart($("c-running"), stacks, true);
  $("legend").innerHTML = stacks.map((s) => `<span><i style="background:${s.color}"></i>${esc(s.label)}</span>`).join("");
  const picked = S.selected ? [h.pools[S.selected] || [[], []]] : Object.values(h.pools);
  const sum = (k) => h.checkouts.map((_, i) => picked.reduce((a, s) => a + (s[k][i] || 0), 0));
  chart($("c-pool"), [{ label: "ready", values: sum(0), color: "#2e9d55" }, { label: "running", values: sum(1), color: "#3767c2" }]);
  chart($("c-times"), [{ label: "clone", values: h.clone, color: "#8a4fbf" }, { label: "boot", values: h.boot, color: "#e07b00" }]);
  chart($("c-checkouts"), [{ label: "checkouts", values: h.checkouts, color: "#3767c2" }, { label: "failures", values: h.failures, color: "#d33c2f" }]);
}

function chart(canvas, series, stacked = false) {
  const dpr = window.devicePixelRatio || 1, w = canvas.clientWidth, ht = canvas.clientHeight;
  canvas.width = w * dpr; canvas.height = ht * dpr;
  const g = canvas.getContext("2d");
  g.scale(dpr, dpr); g.clearRect(0, 0, w, ht);
  const n = Math.max(1, ...series.map((s) => s.values.length));
  const base = new Array(n).fill(0);
  const tops = series.map((s) => s.values.map((v, i) => (stacked ? (base[i] += v || 0) : v)));
  const max = Math.max(1, ...tops.flat().filter((v) => v !== null));
  const x = (i) => 30 + ((w - 34) * i) / Math.max(1, n - 1), y = (v) => ht - 14 - ((ht - 20) * v) / max;
  g.font = "10px sans-serif"; g.fillStyle = "#777";
  g.fillText(String(max), 2, 10); g.fillText("0", 2, ht - 14);
  const s0 = S.hist, label = (i) => new Date(s0.start + s0.step * i).toISOString().slice(11, 16);
  g.fillText(label(0), 30, ht - 2); g.fillText(label(n - 1), w - 32, ht - 2);
  tops.forEach((vals, k) => {
    g.beginPath(); g.strokeStyle = series[k].color; g.lineWidth = 1.5;
    let started = false;
    vals.forEach((v, i) => {
      if (series[k].values[i] === null) { started = false; return; }
      if (!started && !stacked) { g.fillStyle = series[k].color; g.fillRect(x(i) - 1.5, y(v) - 1.5, 3, 3); }
      started ? g.lineTo(x(i), y(v)) : g.moveTo(x(i), y(v)); started = true;
    });
    if (stacked) {
      const below = k ? tops[k - 1] : vals.map(() => 0);
      for (let i = n - 1; i >= 0; i--) g.lineTo(x(i), y(below[i]));
      g.closePath(); g.fillStyle = series[k].color; g.globalAlpha = 0.75; g.fill(); g.globalAlpha = 1;
      return;  // areas only: the top line of an empty layer would cover the one below
    }
    g.stroke();
  });
}

// --- live updates: SSE, polling when it is not available ---
let es = null, failures = 0, pollTimer = 0;
function setMode(mode, text) { stats.mode = mode; const el = $("live"); el.className = "live " + mode; el.textContent = text; }

function connect(cursor) {
  if (!window.EventSource) return poll();
  es = new EventSource(`/dashboard/events?since=${encodeURIComponent(cursor)}`);
  es.onopen = () => { failures = 0; setMode("on", "live"); };
  es.addEventListener("update", (m) => applyUpdate(JSON.parse(m.data)));
  es.addEventListener("resync", () => refresh().catch(() => {}));
  es.onerror = () => {
    setMode("off", "reconnecting");
    // The browser retries by itself (resuming after the last id) unless the server refused the stream.
    if (++failures >= 5 || es.readyState === EventSource.CLOSED) { es.close(); es = null; poll(); }
  };
}

function poll() {
  setMode("poll", "polling");
  clearInterval(pollTimer);
  pollTimer = setInterval(() => refresh().catch(() => setMode("off", "offline")), 5000);
}

async function refresh() { applySnapshot(await json("/dashboard/data")); }

$("pools").addEventListener("click", (ev) => {
  const el = ev.target.closest(".pool");
  if (!el) return;
  const prev = S.selected;
  S.selected = prev === el.dataset.pool ? null : el.dataset.pool;
  $("selected").textContent = S.selected || "all pools";
  for (const p of [prev, S.selected]) if (p && S.index.has(p)) S.dirty.add(S.index.get(p));
  schedule(); drawCharts();
});
$("filter").addEventListener("input", (ev) => {
  const q = ev.target.value.trim().toLowerCase();
  S.cells.forEach((el, i) => { el.hidden = q !== "" && !S.pools[i].toLowerCase().includes(q); });
});
$("window").addEventListener("change", (ev) => { S.window = ev.target.value; loadHistory(false).catch(() => {}); });
window.addEventListener("resize", () => { drawCharts(); drawWeek(); });

// The week, as vmpooler's dashboard shows it: from /api/v3/summary (the daily statistics projection).
async function loadWeek() {
  const from = new Date(Date.now() - 6 * 86400000).toISOString().slice(0, 10);
  S.week = await json(`/api/v3/summary?from=${from}`);
  drawWeek();
}

function drawWeek() {
  const d = S.week;
  if (!d) return;
  const days = d.daily.map((x) => x.date.slice(5));
  bars($("w-clones"), days, [{ values: d.daily.map((x) => x.clone.count.total), color: "#3767c2" }]);
  bars($("w-times"), days, [
    { values: d.daily.map((x) => x.clone.duration.average), color: "#8a4fbf" },
    { values: d.daily.map((x) => x.boot.duration.average), color: "#e07b00" },
  ]);
  const fam = new Map();
  for (const [pool, c] of Object.entries(d.clone.count.pool || {})) fam.set(major(pool), (fam.get(major(pool)) || 0) + c.total);
  const names = [...fam.keys()].sort();
  bars($("w-families"), names, [{ values: names.map((m) => fam.get(m)), colors: names.map(color) }]);
  stats.week++;
}

function bars(canvas, labels, series) {
  const dpr = window.devicePixelRatio || 1, w = canvas.clientWidth, ht = canvas.clientHeight;
  canvas.width = w * dpr; canvas.height = ht * dpr;
  const g = canvas.getContext("2d");
  g.scale(dpr, dpr); g.clearRect(0, 0, w, ht);
  const max = Math.max(1, ...series.flatMap((s) => s.values));
  const slot = (w - 30) / Math.max(1, labels.length), bw = Math.max(2, (slot * 0.8) / series.length);
  g.font = "10px sans-serif"; g.fillStyle = "#777";
  g.fillText(String(Math.round(max * 10) / 10), 2, 10); g.fillText("0", 2, ht - 14);
  labels.forEach((label, i) => {
    g.fillStyle = "#777"; g.fillText(label, 30 + slot * i, ht - 2, slot);
    series.forEach((s, k) => {
      const v = s.values[i] || 0, bh = ((ht - 24) * v) / max;
      g.fillStyle = s.colors ? s.colors[i] : s.color;
      g.fillRect(30 + slot * i + bw * k, ht - 14 - bh, bw - 1, bh);
    });
  });
}

async function start() {
  const d = await json("/dashboard/data");
  applySnapshot(d);
  connect(d.cursor);
  loadHistory(false).catch(() => {});
  loadWeek().catch(() => {});
  setInterval(() => loadHistory(true).catch(() => {}), 60000);
  setInterval(() => loadWeek().catch(() => {}), 600000);
  setInterval(() => { if (es) refresh().catch(() => {}); }, 60000);
}
start().catch((e) => { setMode("off", "offline"); console.warn(e); poll(); });
