// The Registry page: renders every section's JSON (include/registry_ops/page/model.py) the same
// way: figures, sortable and filterable tables, line charts; values formatted by their column's
// kind. Plain DOM, no framework and no external source: the page runs inside Airflow's iframe,
// offline. Every value goes in through textContent (never innerHTML): S3 content is data.
"use strict";

const PAGE = window.REGISTRY_PAGE; // {base: "<mount>/", airflow: "<airflow root>", sections: [...]}
const ROW_STEP = 100;
const NUMERIC = new Set(["count", "bytes", "usd", "percent", "seconds"]);
const TIMEY = new Set(["time", "date"]);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

// ---- formatting ---------------------------------------------------------------------------
function fmtBytes(n) {
  if (n === null || n === undefined || isNaN(n)) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let v = Math.abs(n), i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  const s = i === 0 ? String(v) : v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2);
  return (n < 0 ? "-" : "") + s + " " + units[i];
}
function fmtCount(n) { return n === null || n === undefined ? "" : Number(n).toLocaleString("en-US"); }
function fmtUsd(n) {
  if (n === null || n === undefined) return "";
  return "$" + Number(n).toLocaleString("en-US", {minimumFractionDigits: 2, maximumFractionDigits: 2});
}
function relTime(iso) {
  const t = Date.parse(iso);
  if (isNaN(t)) return "";
  const s = (t - Date.now()) / 1000, a = Math.abs(s);
  const [v, u] = a < 90 ? [a, "s"] : a < 5400 ? [a / 60, "min"] : a < 129600 ? [a / 3600, "h"] : [a / 86400, "d"];
  const txt = Math.round(v) + " " + u;
  return s < 0 ? txt + " ago" : "in " + txt;
}
function absTime(iso) {
  const d = new Date(iso);
  if (isNaN(d)) return String(iso);
  return d.toISOString().replace("T", " ").slice(0, 16) + " UTC";
}
function fmtSeconds(n) {
  if (n === null || n === undefined) return "";
  if (n < 120) return Number(n).toFixed(n < 10 ? 1 : 0) + " s";
  if (n < 7200) return (n / 60).toFixed(1) + " min";
  return (n / 3600).toFixed(1) + " h";
}
function text(kind, v) {
  if (v === null || v === undefined || v === "") return "";
  switch (kind) {
    case "bytes": return fmtBytes(v);
    case "count": return fmtCount(v);
    case "usd": return fmtUsd(v);
    case "percent": return (Number(v) * 100).toFixed(2) + " %";
    case "seconds": return fmtSeconds(v);
    case "time": return absTime(v) + " (" + relTime(v) + ")";
    case "date": return String(v).slice(0, 10);
    case "digest": return String(v).length > 23 ? String(v).slice(0, 19) + "…" : String(v);
    case "list": return Array.isArray(v) ? v.join(", ") : String(v);
    default: return typeof v === "object" ? JSON.stringify(v) : String(v);
  }
}
function cell(kind, v) {
  if (kind === "restore") {
    if (!v) return "";
    const q = new URLSearchParams();
    for (const [k, val] of Object.entries(v)) if (val !== null && val !== undefined) q.set(k, val);
    return el("a", {class: "button restore", href: PAGE.base + "restore?" + q.toString()}, "Restore");
  }
  if (kind === "status") return v ? el("span", {class: "status " + String(v).toLowerCase()}, String(v)) : "";
  const span = el("span", {}, text(kind, v));
  if (kind === "time" || kind === "digest") span.title = String(v);
  return span;
}
function sortKey(kind, v) {
  if (v === null || v === undefined || v === "") return null;
  if (NUMERIC.has(kind)) return Number(v);
  if (TIMEY.has(kind)) return Date.parse(v);
  if (Array.isArray(v)) return v.join(",").toLowerCase();
  return String(typeof v === "object" ? JSON.stringify(v) : v).toLowerCase();
}

// ---- tables -------------------------------------------------------------------------------
function renderTable(sectionId, table) {
  const state = {rows: table.rows.slice(), filter: "", sort: null, desc: false, shown: ROW_STEP,
                 total: table.total ?? table.rows.length, server: false};
  const searchable = sectionId === "retention" && table.id === "deleted";
  const box = el("div", {class: "tablebox", "data-table": table.id});
  const input = el("input", {type: "search", placeholder: searchable ? "search digest, tag, repository, rule, run" : "filter",
                             "aria-label": "filter " + table.title});
  const count = el("span", {class: "meta"});
  box.append(el("div", {class: "bar"}, el("h3", {}, table.title), input, count));
  if (table.note) box.append(el("div", {class: "meta"}, table.note));
  const thead = el("thead"), tbody = el("tbody");
  const scroll = el("div", {class: "scroll"}, el("table", {}, thead, tbody));
  const more = el("button", {class: "more", onclick: () => { state.shown += ROW_STEP; draw(); }}, "Show more");
  box.append(scroll, more);

  const head = el("tr");
  table.columns.forEach((c) => {
    const th = el("th", {class: NUMERIC.has(c.kind) ? "num" : "", "data-key": c.key}, c.label, " ",
                  el("span", {class: "arrow"}, ""));
    th.addEventListener("click", () => {
      state.desc = state.sort === c.key ? !state.desc : NUMERIC.has(c.kind) || TIMEY.has(c.kind);
      state.sort = c.key; draw();
    });
    head.append(th);
  });
  thead.append(head);

  function visible() {
    let rows = state.rows;
    const f = state.filter.trim().toLowerCase();
    if (f && !state.server) {
      rows = rows.filter((r) => table.columns.some((c) => {
        const v = r[c.key];
        if (v === null || v === undefined) return false;
        return (String(typeof v === "object" ? JSON.stringify(v) : v) + " " + text(c.kind, v)).toLowerCase().includes(f);
      }));
    }
    if (state.sort) {
      const col = table.columns.find((c) => c.key === state.sort);
      rows = rows.slice().sort((a, b) => {
        const x = sortKey(col.kind, a[col.key]), y = sortKey(col.kind, b[col.key]);
        if (x === y) return 0;
        if (x === null) return 1;
        if (y === null) return -1;
        return (x < y ? -1 : 1) * (state.desc ? -1 : 1);
      });
    }
    return rows;
  }
  function draw() {
    const rows = visible();
    tbody.replaceChildren(...rows.slice(0, state.shown).map((r) => el("tr", {},
      table.columns.map((c) => el("td", {class: (NUMERIC.has(c.kind) ? "num" : "") + (r._alert === c.key ? " alert" : "")},
                                      cell(c.kind, r[c.key]))))));
    head.querySelectorAll("th").forEach((th) => {
      th.querySelector(".arrow").textContent = th.dataset.key === state.sort ? (state.desc ? "▼" : "▲") : "";
    });
    const of = state.server ? state.total : (state.filter ? rows.length : state.total);
    count.textContent = fmtCount(Math.min(rows.length, state.shown)) + " of " + fmtCount(of) + " rows";
    more.style.display = rows.length > state.shown ? "" : "none";
    if (!rows.length) tbody.append(el("tr", {}, el("td", {colspan: table.columns.length, class: "meta"},
                                                  state.filter ? "no row matches" : "no rows")));
  }
  let timer = null;
  input.addEventListener("input", () => {
    state.filter = input.value; state.shown = ROW_STEP;
    if (searchable && (table.total ?? 0) > table.rows.length) {
      clearTimeout(timer);
      timer = setTimeout(async () => {
        const q = input.value.trim();
        if (!q) { state.server = false; state.rows = table.rows.slice(); state.total = table.total; draw(); return; }
        const found = await getJson("api/retention/deleted?q=" + encodeURIComponent(q) + "&limit=500");
        if (found && !found.__error && input.value.trim() === q) {
          state.server = true; state.rows = found.rows; state.total = found.total ?? found.rows.length; draw();
        }
      }, 250);
    } else draw();
  });
  draw();
  return box;
}

// ---- charts -------------------------------------------------------------------------------
const COLOURS = ["#017cee", "#c53030", "#2f855a", "#b7791f", "#6b46c1", "#319795"];
function renderChart(chart) {
  const W = 760, H = 220, L = 70, R = 10, T = 10, B = 30;
  const xs = chart.x.map((x) => Date.parse(x));
  const vals = chart.series.flatMap((s) => s.values.filter((v) => v !== null));
  const box = el("div", {class: "chartbox", "data-chart": chart.id}, el("h3", {}, chart.title));
  if (!xs.length || !vals.length) { box.append(el("div", {class: "meta"}, "no data points yet")); return box; }
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y1 = Math.max(...vals, 0) || 1, y0 = Math.min(...vals, 0);
  const px = (x) => L + (x1 === x0 ? (W - L - R) / 2 : ((x - x0) / (x1 - x0)) * (W - L - R));
  const py = (y) => T + (1 - (y - y0) / (y1 - y0 || 1)) * (H - T - B);
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("class", "chart"); svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("role", "img"); svg.setAttribute("aria-label", chart.title);
  const add = (tag, attrs, txt) => {
    const n = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (txt !== undefined) n.textContent = txt;
    svg.append(n); return n;
  };
  for (let i = 0; i <= 4; i++) {
    const y = y0 + ((y1 - y0) * i) / 4;
    add("line", {x1: L, x2: W - R, y1: py(y), y2: py(y), stroke: "#e2e8f0"});
    add("text", {x: L - 6, y: py(y) + 3, "text-anchor": "end"}, text(chart.kind, chart.kind === "count" ? Math.round(y) : y));
  }
  [0, Math.floor((xs.length - 1) / 2), xs.length - 1].forEach((i) =>
    add("text", {x: px(xs[i]), y: H - 8, "text-anchor": "middle"}, String(chart.x[i]).slice(0, 10)));
  chart.series.forEach((s, k) => {
    const pts = s.values.map((v, i) => (v === null ? null : `${px(xs[i]).toFixed(1)},${py(v).toFixed(1)}`)).filter(Boolean);
    add("polyline", {points: pts.join(" "), fill: "none", stroke: COLOURS[k % COLOURS.length], "stroke-width": 2});
    s.values.forEach((v, i) => {
      if (v === null) return;
      const c = add("circle", {cx: px(xs[i]), cy: py(v), r: 2.5, fill: COLOURS[k % COLOURS.length]});
      const t = document.createElementNS(NS, "title");
      t.textContent = `${s.name} ${String(chart.x[i]).slice(0, 10)}: ${text(chart.kind, v)}`; c.append(t);
    });
  });
  box.append(svg, el("div", {class: "legend"}, chart.series.map((s, k) =>
    el("span", {}, el("i", {style: "background:" + COLOURS[k % COLOURS.length]}), s.name))));
  return box;
}

// ---- sections -----------------------------------------------------------------------------
async function getJson(path) {
  try {
    const resp = await fetch(PAGE.base + path, {credentials: "same-origin", headers: {Accept: "application/json"}});
    if (resp.status === 401) {
      return {__error: "Your Airflow session has ended: sign in to Airflow again, then reload this page."};
    }
    const body = await resp.json().catch(() => null);
    if (!resp.ok) return {__error: `HTTP ${resp.status}: ${(body && body.detail) || resp.statusText}`};
    return body;
  } catch (e) {
    return {__error: "could not reach the API server: " + e};
  }
}

function renderSection(card, data) {
  card.replaceChildren();
  const status = data.status || "error";
  const h = el("h2", {}, data.title, el("span", {class: "status " + status}, status.replace("_", " ")));
  card.append(h);
  const meta = [];
  if (data.as_of) meta.push("as of " + absTime(data.as_of) + " (" + relTime(data.as_of) + ")");
  if (data.source) meta.push("from " + data.source);
  if (meta.length) card.append(el("div", {class: "meta"}, meta.join(" · ")));
  if (data.message) card.append(el("div", {class: "msg " + status}, data.message));
  if (data.figures && data.figures.length) {
    card.append(el("div", {class: "figures"}, data.figures.map((f) =>
      el("div", {class: "figure" + (f.alert ? " alert" : "")}, el("div", {class: "label"}, f.label),
         el("div", {class: "value", title: f.kind === "time" ? String(f.value) : null},
            f.kind === "time" ? relTime(f.value) || "" : text(f.kind, f.value))))));
  }
  if (data.notes && data.notes.length) card.append(el("ul", {class: "notes"}, data.notes.map((n) => el("li", {}, n))));
  (data.charts || []).forEach((c) => card.append(renderChart(c)));
  (data.tables || []).forEach((t) => card.append(renderTable(data.id, t)));
  const dot = document.querySelector(`nav a[href="#${data.id}"] .dot`);
  if (dot) dot.className = "dot " + status;
}

const loaded = {};
function artefactAges() {
  const card = document.getElementById("artefacts");
  const rows = PAGE.sections.filter((s) => s.id !== "health").map((s) => {
    const d = loaded[s.id];
    return {section: s.title, status: d ? d.status : "loading", as_of: d && d.as_of, source: d && d.source};
  });
  card.replaceChildren(renderTable("artefacts", {id: "artefacts", title: "How old each artefact is",
    columns: [{key: "section", label: "Section", kind: "text"}, {key: "status", label: "Status", kind: "status"},
              {key: "as_of", label: "Written", kind: "time"}, {key: "source", label: "Object", kind: "text"}],
    rows}));
}

async function loadSection(s) {
  const card = document.getElementById(s.id);
  const data = await getJson(s.path);
  const shown = data && !data.__error ? data : {id: s.id, title: s.title, status: "error",
                                                message: (data && data.__error) || "no answer"};
  loaded[s.id] = shown;
  renderSection(card, shown);
  artefactAges();
}

function main() {
  const nav = document.querySelector("header nav");
  const main = document.querySelector("main");
  PAGE.sections.forEach((s) => {
    nav.append(el("a", {href: "#" + s.id}, el("span", {class: "dot"}), s.title));
    main.append(el("section", {class: "card", id: s.id}, el("h2", {}, s.title), el("div", {class: "meta"}, "loading…")));
  });
  const health = document.getElementById("health");
  health.after(el("section", {class: "card", id: "artefacts"}));
  artefactAges();
  PAGE.sections.forEach((s) => loadSection(s));
}

main();
