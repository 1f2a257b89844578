// genlab serve: the page. Plain JavaScript, no build step, nothing loaded from elsewhere.
// The server does the model's work; this file keeps the current latent z, draws the map and
// sends at most one decode request at a time (the newest z wins; stale ones are never sent).
"use strict";

const $ = (id) => document.getElementById(id);
// tab10: ten colours that stay distinct on white, one per class
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

const S = {
  runs: [],
  info: null, // the run's /api/runs/{run} answer
  z: null, // current latent (Array of numbers)
  eps: null, // last prior draw, which the temperature scales
  A: null,
  B: null,
  user: null, // the encoded user image: {point, cov}
  base: null, // the map's points, drawn once per run
};

// -- talking to the server ----------------------------------------------------------------------
async function api(path, options = {}) {
  const res = await fetch(path, options);
  let body = null;
  try {
    body = await res.json();
  } catch (e) {
    body = { error: `${res.status} ${res.statusText}` };
  }
  if (!res.ok) throw new Error(body.error || `${res.status}`);
  return body;
}

function post(path, obj) {
  return api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(obj) });
}

function runPath(suffix = "") {
  return `/api/runs/${encodeURIComponent(S.info.name)}${suffix}`;
}

function showError(err) {
  const box = $("error");
  box.textContent = String(err.message || err);
  box.hidden = false;
  clearTimeout(showError.timer);
  showError.timer = setTimeout(() => (box.hidden = true), 6000);
}

// One request in flight per purpose; while it runs only the newest request waits, older ones are dropped.
function coalescer(send, onResult) {
  let busy = false;
  let pending = null;
  async function pump() {
    if (busy || pending === null) return;
    const req = pending;
    pending = null;
    busy = true;
    try {
      onResult(await send(req), req);
    } catch (err) {
      showError(err);
    } finally {
      busy = false;
      pump();
    }
  }
  return (req) => {
    pending = req;
    pump();
  };
}

const requestDecode = coalescer(
  async (req) => {
    const t0 = performance.now();
    const out = await post(runPath("/decode"), { z: req.z, label: req.label });
    out.roundTrip = performance.now() - t0;
    return out;
  },
  (out, req) => {
    if (req.run !== S.info.name) return; // answered after a switch of run
    $("decoded").src = out.images[0];
    $("decode-status").textContent = `${req.source} · decoded in ${out.ms.toFixed(0)} ms (round trip ${out.roundTrip.toFixed(0)} ms)`;
  },
);

function currentLabel() {
  return S.info.conditional ? Number($("label").value) : null;
}

function setZ(z, source) {
  S.z = z;
  syncSliders();
  drawMap();
  requestDecode({ z: S.z.slice(), label: currentLabel(), source, run: S.info.name });
}

// -- the map ------------------------------------------------------------------------------------
function dot(a, b) {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

function project(z) {
  const m = S.info.map;
  const d = z.map((v, i) => v - m.origin[i]);
  return [dot(m.axes[0], d), dot(m.axes[1], d)];
}

// Move z within the map's plane through z to map point p: the coordinates off the plane are kept.
function zAtMapPoint(p) {
  const m = S.info.map;
  const cur = project(S.z);
  return S.z.map((v, i) => v + m.axes[0][i] * (p[0] - cur[0]) + m.axes[1][i] * (p[1] - cur[1]));
}

function toCanvas(p) {
  const c = $("map");
  const [x0, x1, y0, y1] = S.info.map.extent;
  return [((p[0] - x0) / (x1 - x0)) * c.width, c.height - ((p[1] - y0) / (y1 - y0)) * c.height];
}

function fromCanvas(x, y) {
  const c = $("map");
  const [x0, x1, y0, y1] = S.info.map.extent;
  return [x0 + (x / c.width) * (x1 - x0), y0 + ((c.height - y) / c.height) * (y1 - y0)];
}

function niceTicks(lo, hi) {
  const step = Math.pow(10, Math.floor(Math.log10((hi - lo) / 4)));
  const mult = (hi - lo) / step > 20 ? 5 : (hi - lo) / step > 8 ? 2 : 1;
  const s = step * mult;
  const ticks = [];
  for (let t = Math.ceil(lo / s) * s; t <= hi; t += s) ticks.push(Math.round(t / s) * s);
  return ticks;
}

function drawBase() {
  const m = S.info.map;
  const c = document.createElement("canvas");
  c.width = $("map").width;
  c.height = $("map").height;
  const g = c.getContext("2d");
  g.fillStyle = "#fbfbfd";
  g.fillRect(0, 0, c.width, c.height);
  g.strokeStyle = "#e3e5ea";
  g.fillStyle = "#8a8f98";
  g.font = "11px system-ui, sans-serif";
  const [x0, x1, y0, y1] = m.extent;
  for (const t of niceTicks(x0, x1)) {
    const [x] = toCanvas([t, 0]);
    g.beginPath();
    g.moveTo(x, 0);
    g.lineTo(x, c.height);
    g.stroke();
    if (x > 40) g.fillText(String(+t.toFixed(2)), x + 2, c.height - 4); // the corner is the y labels
  }
  for (const t of niceTicks(y0, y1)) {
    const [, y] = toCanvas([0, t]);
    g.beginPath();
    g.moveTo(0, y);
    g.lineTo(c.width, y);
    g.stroke();
    g.fillText(String(+t.toFixed(2)), 20, y - 3); // right of the rotated axis name
  }
  g.fillStyle = "#444";
  g.font = "12px system-ui, sans-serif";
  g.fillText(m.axis_labels[0] + " →", c.width - 60, c.height - 18);
  g.save();
  g.translate(13, 80);
  g.rotate(-Math.PI / 2);
  g.fillText(m.axis_labels[1] + " →", 0, 0);
  g.restore();
  if (m.points) {
    g.globalAlpha = 0.55;
    for (let i = 0; i < m.points.length; i++) {
      const [x, y] = toCanvas(m.points[i]);
      g.fillStyle = PALETTE[m.labels[i] % PALETTE.length];
      g.fillRect(x - 1.5, y - 1.5, 3, 3);
    }
    g.globalAlpha = 1;
  }
  S.base = c;
}

// A point off the map is drawn at its edge, so an unusual encoding is still seen.
function marker(g, p, text, colour) {
  const c = $("map");
  let [x, y] = toCanvas(p);
  x = Math.min(Math.max(x, 10), c.width - 10);
  y = Math.min(Math.max(y, 10), c.height - 10);
  g.beginPath();
  g.arc(x, y, 9, 0, 2 * Math.PI);
  g.fillStyle = colour;
  g.fill();
  g.fillStyle = "#fff";
  g.font = "bold 11px system-ui, sans-serif";
  g.textAlign = "center";
  g.textBaseline = "middle";
  g.fillText(text, x, y + 0.5);
  g.textAlign = "start";
  g.textBaseline = "alphabetic";
}

// The user's posterior N(point, cov) on the map: its 1- and 2-sigma ellipses.
function ellipse(g, point, cov) {
  const [a, b, c] = [cov[0][0], cov[0][1], cov[1][1]];
  const tr = (a + c) / 2;
  const det = Math.sqrt(Math.max(((a - c) / 2) ** 2 + b * b, 0));
  const l1 = tr + det;
  const l2 = Math.max(tr - det, 0);
  const angle = Math.atan2(l1 - a, b || 1e-12);
  const [x0, x1, y0, y1] = S.info.map.extent;
  const sx = $("map").width / (x1 - x0);
  const sy = $("map").height / (y1 - y0);
  const [cx, cy] = toCanvas(point);
  for (const k of [1, 2]) {
    g.save();
    g.translate(cx, cy);
    g.scale(sx, -sy); // map units, y up
    g.rotate(b === 0 ? (a >= c ? 0 : Math.PI / 2) : angle);
    g.beginPath();
    g.ellipse(0, 0, k * Math.sqrt(l1), k * Math.sqrt(l2), 0, 0, 2 * Math.PI);
    g.restore();
    g.strokeStyle = k === 1 ? "rgba(200,30,30,0.95)" : "rgba(200,30,30,0.45)";
    g.lineWidth = 2;
    g.stroke();
  }
  g.lineWidth = 1;
}

function drawMap() {
  if (!S.info || !S.info.map || !S.base) return;
  const c = $("map");
  const g = c.getContext("2d");
  g.drawImage(S.base, 0, 0);
  if (S.user && S.user.point) {
    if (S.user.cov) ellipse(g, S.user.point, S.user.cov);
    marker(g, S.user.point, "✎", "#c81e1e");
  }
  if (S.A) marker(g, project(S.A), "A", "#333");
  if (S.B) marker(g, project(S.B), "B", "#333");
  const [x, y] = toCanvas(project(S.z));
  g.strokeStyle = "#111";
  g.lineWidth = 2;
  g.beginPath();
  g.arc(x, y, 6, 0, 2 * Math.PI);
  g.moveTo(x - 11, y);
  g.lineTo(x - 4, y);
  g.moveTo(x + 4, y);
  g.lineTo(x + 11, y);
  g.moveTo(x, y - 11);
  g.lineTo(x, y - 4);
  g.moveTo(x, y + 4);
  g.lineTo(x, y + 11);
  g.stroke();
  g.lineWidth = 1;
}

function nearestPoint(x, y) {
  const pts = S.info.map.points;
  if (!pts) return -1;
  let best = -1;
  let bestD = 36; // within 6 px
  for (let i = 0; i < pts.length; i++) {
    const [px, py] = toCanvas(pts[i]);
    const d = (px - x) ** 2 + (py - y) ** 2;
    if (d < bestD) {
      bestD = d;
      best = i;
    }
  }
  return best;
}

function mapEvent(ev) {
  const c = $("map");
  const r = c.getBoundingClientRect();
  return [((ev.clientX - r.left) / r.width) * c.width, ((ev.clientY - r.top) / r.height) * c.height];
}

function setupMap() {
  const c = $("map");
  c.addEventListener("mousemove", (ev) => {
    if (!S.info || !S.info.map) return;
    const [x, y] = mapEvent(ev);
    const p = fromCanvas(x, y);
    S.eps = null;
    setZ(zAtMapPoint(p), `map (${p[0].toFixed(2)}, ${p[1].toFixed(2)})`);
  });
  c.addEventListener("click", async (ev) => {
    if (!S.info || !S.info.map) return;
    const [x, y] = mapEvent(ev);
    const i = nearestPoint(x, y);
    if (i < 0) return;
    try {
      const pt = await api(runPath(`/points/${i}`));
      $("picked").hidden = false;
      $("picked-image").src = pt.image;
      $("picked-text").textContent = `test image #${i}, class ${S.info.classes[pt.label] ?? pt.label}`;
      if (S.info.conditional) $("label").value = String(pt.label);
      setZ(pt.z, `test image #${i}`);
    } catch (err) {
      showError(err);
    }
  });
}

function legend() {
  const box = $("legend");
  box.textContent = "";
  const m = S.info.map;
  if (!m || !m.points) return;
  const present = new Set(m.labels);
  S.info.classes.forEach((name, i) => {
    if (!present.has(i)) return;
    const item = document.createElement("span");
    const sw = document.createElement("i");
    sw.style.background = PALETTE[i % PALETTE.length];
    item.append(sw, name);
    box.append(item);
  });
}

// -- sliders ------------------------------------------------------------------------------------
function sliderValue(s) {
  if (s.dim !== null) return S.z[s.dim];
  return project(S.z)[s.axis];
}

function buildSliders() {
  const box = $("sliders");
  box.textContent = "";
  for (const s of S.info.sliders) {
    const row = document.createElement("label");
    row.className = "slider";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = s.label;
    name.title = s.note;
    const input = document.createElement("input");
    input.type = "range";
    input.className = "zslider";
    input.min = String(s.min);
    input.max = String(s.max);
    input.step = String((s.max - s.min) / 400);
    const out = document.createElement("output");
    input.addEventListener("input", () => {
      const v = Number(input.value);
      let z;
      if (s.dim !== null) {
        z = S.z.slice();
        z[s.dim] = v;
      } else {
        const p = project(S.z);
        p[s.axis] = v;
        z = zAtMapPoint(p);
      }
      S.eps = null;
      setZ(z, `slider ${s.label} = ${v.toFixed(2)}`);
    });
    s.input = input;
    s.output = out;
    const note = document.createElement("small");
    note.textContent = s.note;
    row.append(name, input, out, note);
    box.append(row);
  }
}

function syncSliders() {
  if (!S.info.panels.sliders.ok) return;
  for (const s of S.info.sliders) {
    const v = sliderValue(s);
    s.input.value = String(v);
    s.output.textContent = v.toFixed(2);
  }
}

// -- prior draws and temperature ----------------------------------------------------------------
async function randomZ() {
  try {
    const seed = Math.floor(Math.random() * 2 ** 31);
    const out = await post(runPath("/prior"), { n: 1, seed });
    S.eps = out.z[0];
    applyTemperature(`random z (seed ${seed})`);
  } catch (err) {
    showError(err);
  }
}

function applyTemperature(source) {
  const t = Number($("temperature").value);
  $("temperature-value").textContent = t.toFixed(2);
  if (!S.eps) return;
  setZ(
    S.eps.map((v) => v * t),
    `${source || "random z"} × temperature ${t.toFixed(2)}`,
  );
}

// -- your own image -----------------------------------------------------------------------------
function setupDrawing() {
  const c = $("draw");
  const g = c.getContext("2d");
  let drawing = false;
  let last = null;
  const clear = () => {
    g.fillStyle = "#000";
    g.fillRect(0, 0, c.width, c.height);
  };
  clear();
  const pos = (ev) => {
    const r = c.getBoundingClientRect();
    return [((ev.clientX - r.left) / r.width) * c.width, ((ev.clientY - r.top) / r.height) * c.height];
  };
  const stroke = (p) => {
    g.strokeStyle = "#fff";
    g.lineWidth = c.width / 12; // about an MNIST pen stroke once scaled to 28 px
    g.lineCap = "round";
    g.lineJoin = "round";
    g.beginPath();
    g.moveTo(...(last || p));
    g.lineTo(...p);
    g.stroke();
    last = p;
  };
  c.addEventListener("mousedown", (ev) => {
    drawing = true;
    last = null;
    stroke(pos(ev));
  });
  c.addEventListener("mousemove", (ev) => drawing && stroke(pos(ev)));
  const finish = () => {
    if (!drawing) return;
    drawing = false;
    c.toBlob((blob) => encodeBytes(blob), "image/png");
  };
  c.addEventListener("mouseup", finish);
  c.addEventListener("mouseleave", finish);
  $("clear").addEventListener("click", () => {
    clear();
    S.user = null;
    $("encode-result").hidden = true;
    drawMap();
  });
  $("upload").addEventListener("change", async () => {
    const file = $("upload").files[0];
    if (file) encodeBytes(file);
    $("upload").value = "";
  });
}

const requestEncode = coalescer(
  async (req) => {
    const label = S.info.conditional ? `?label=${currentLabel()}` : "";
    try {
      return await api(runPath(`/encode${label}`), { method: "POST", headers: { "Content-Type": "application/octet-stream" }, body: req.blob });
    } catch (err) {
      if (req.run === S.info.name) $("encode-status").textContent = "";
      throw err;
    }
  },
  (out, req) => {
    if (req.run !== S.info.name) return;
    $("encode-status").textContent = "";
    $("encode-result").hidden = false;
    $("seen").src = out.input;
    $("recon").src = out.reconstruction;
    const where = out.map_point ? "its posterior is the red mark on the map" : "";
    $("encode-note").textContent = [out.note, where, `${out.ms.toFixed(0)} ms`].filter(Boolean).join(" · ");
    S.user = out.map_point ? { point: out.map_point, cov: out.map_cov || null } : null;
    S.eps = null;
    setZ(out.z, "your image's latent");
    showLikelihood(out.likelihood);
  },
);

function encodeBytes(blob) {
  // a likelihood model's first image also scores the test images it is ranked among (seconds): say so
  $("encode-status").textContent = S.info.panels.likelihood.ok ? "encoding… (the first image of a run also scores the test images)" : "encoding…";
  requestEncode({ blob, run: S.info.name });
}

function showLikelihood(lik) {
  const box = $("likelihood");
  box.textContent = "";
  if (!S.info.panels.likelihood.ok) {
    box.append(unavailable(S.info.panels.likelihood.reason));
    return;
  }
  if (!lik) return;
  const p = document.createElement("p");
  p.innerHTML = "";
  const strong = document.createElement("strong");
  strong.textContent = `log p(x) ≥ ${lik.bound.toFixed(1)} nats`;
  p.append(strong, ` (${lik.name}, k=${lik.k}${lik.binarised ? ", binarised" : ""}); test median ${lik.test_median.toFixed(1)}. `);
  const hint = document.createElement("span");
  hint.className = lik.below < 0.05 ? "ood" : "typical";
  hint.textContent = lik.hint;
  p.append(hint);
  const c = document.createElement("canvas");
  c.width = 300;
  c.height = 70;
  c.id = "likelihood-hist";
  const g = c.getContext("2d");
  const { edges, counts } = lik.hist;
  const max = Math.max(...counts, 1);
  const w = c.width / counts.length;
  g.fillStyle = "#9aa4b5";
  counts.forEach((n, i) => {
    const h = (n / max) * (c.height - 14);
    g.fillRect(i * w + 1, c.height - 12 - h, w - 2, h);
  });
  const x = ((lik.bound - edges[0]) / (edges[edges.length - 1] - edges[0])) * c.width;
  g.fillStyle = "#c81e1e";
  g.fillRect(Math.min(Math.max(x - 1, 0), c.width - 2), 0, 2, c.height - 12);
  g.fillStyle = "#666";
  g.font = "10px system-ui, sans-serif";
  g.fillText(edges[0].toFixed(0), 0, c.height - 1);
  const right = edges[edges.length - 1].toFixed(0);
  g.fillText(right, c.width - g.measureText(right).width, c.height - 1);
  const cap = document.createElement("p");
  cap.className = "caption";
  cap.textContent = `${lik.test_n} test images' bounds (grey), yours (red)`;
  box.append(p, c, cap);
}

// -- interpolation ------------------------------------------------------------------------------
async function interpolate() {
  if (!S.A || !S.B) {
    $("interp-status").textContent = !S.A ? "set A first" : "now set B";
    return;
  }
  const steps = Math.min(32, Math.max(2, Number($("steps").value) || 10));
  try {
    const out = await post(runPath("/interpolate"), { a: S.A, b: S.B, steps, mode: $("mode").value, label: currentLabel() });
    const strip = $("strip");
    strip.textContent = "";
    out.images.forEach((src, i) => {
      const im = document.createElement("img");
      im.src = src;
      im.width = im.height = 64;
      im.alt = `step ${i + 1}`;
      strip.append(im);
    });
    $("interp-status").textContent = `${out.mode} from A to B in ${steps} steps`;
  } catch (err) {
    showError(err);
  }
}

// -- the run panel ------------------------------------------------------------------------------
function chart(name, series) {
  const c = document.createElement("canvas");
  c.width = 250;
  c.height = 110;
  const g = c.getContext("2d");
  const xs = series.map((p) => p[0]);
  const ys = series.map((p) => p[1]);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (y1 === y0) [y0, y1] = [y0 - 1, y1 + 1];
  const px = (x) => 34 + ((x - x0) / (x1 - x0 || 1)) * (c.width - 40);
  const py = (y) => 18 + (1 - (y - y0) / (y1 - y0)) * (c.height - 34);
  g.fillStyle = "#fff";
  g.fillRect(0, 0, c.width, c.height);
  g.fillStyle = "#333";
  g.font = "bold 11px system-ui, sans-serif";
  g.fillText(name, 4, 12);
  g.font = "10px system-ui, sans-serif";
  g.fillStyle = "#777";
  g.fillText(y1.toPrecision(3), 2, 24);
  g.fillText(y0.toPrecision(3), 2, c.height - 16);
  g.fillText(`step ${x0}`, 34, c.height - 3);
  const lastLabel = `${x1}`;
  g.fillText(lastLabel, c.width - g.measureText(lastLabel).width - 4, c.height - 3);
  g.strokeStyle = "#2f6fb5";
  g.lineWidth = 1.5;
  g.beginPath();
  series.forEach((p, i) => (i ? g.lineTo(px(p[0]), py(p[1])) : g.moveTo(px(p[0]), py(p[1]))));
  g.stroke();
  return c;
}

async function loadPanel() {
  const name = S.info.name;
  let p;
  try {
    p = await api(runPath("/panel"));
  } catch (err) {
    showError(err);
    return;
  }
  if (name !== S.info.name) return;
  const changed = p.changed.length ? ` Changed from the preset: ${p.changed.join(", ")}.` : "";
  $("run-desc").textContent = `${p.family}/${p.preset}: ${p.description || "(no description)"} — trained on ${p.dataset}${p.steps ? `, ${p.steps} steps` : ""}.${changed}`;
  const warn = $("warnings");
  warn.textContent = "";
  for (const w of p.warnings) {
    const li = document.createElement("li");
    li.textContent = w;
    warn.append(li);
  }
  const curves = $("curves");
  curves.textContent = "";
  const keys = Object.keys(p.curves).filter((k) => p.curves[k].length > 1);
  const preferred = keys.filter((k) => /loss|recon|kl|elbo/i.test(k));
  const shown = (preferred.length ? preferred : keys).slice(0, 4);
  if (!shown.length) curves.append(unavailable("no training curves: metrics.jsonl is missing or has fewer than 2 log lines"));
  for (const k of shown) curves.append(chart(k, p.curves[k]));
  const pics = $("pictures");
  pics.textContent = "";
  for (const f of p.pictures.slice(0, 1)) {
    const fig = document.createElement("figure");
    const im = document.createElement("img");
    im.src = runPath(`/files/${f}`);
    im.alt = f;
    im.className = "samples";
    const cap = document.createElement("figcaption");
    cap.textContent = f;
    fig.append(im, cap);
    pics.append(fig);
  }
  if (!p.pictures.length) pics.append(unavailable("no sample grid in this run"));
  const ev = $("evaluation");
  ev.textContent = "";
  if (!p.evaluation.length) {
    ev.append(unavailable("not evaluated yet: `genlab evaluate RUN` writes metrics.json"));
  } else {
    const t = document.createElement("table");
    const head = t.insertRow();
    for (const h of ["metric", "value", "better"]) {
      const th = document.createElement("th");
      th.textContent = h;
      head.append(th);
    }
    for (const r of p.evaluation) {
      const row = t.insertRow();
      const v = r.value === null ? "–" : Number(r.value).toPrecision(4) + (r.std !== null ? ` ± ${Number(r.std).toPrecision(2)}` : "");
      for (const text of [r.label, v, r.better ?? ""]) row.insertCell().textContent = text;
    }
    const cap = document.createElement("p");
    cap.className = "caption";
    cap.textContent = `evaluation (metrics.json${p.evaluation_n ? `, n = ${p.evaluation_n}` : ""})`;
    ev.append(cap, t);
  }
}

// -- one run's page -----------------------------------------------------------------------------
function unavailable(reason) {
  const p = document.createElement("p");
  p.className = "na";
  p.textContent = reason;
  return p;
}

function setAvailable(cardId, panel) {
  const card = $(cardId);
  const body = card.querySelector(".body");
  const old = card.querySelector(":scope > .na");
  if (old) old.remove();
  body.hidden = !panel.ok;
  if (!panel.ok) card.append(unavailable(panel.reason));
}

async function showRun(name) {
  let info;
  try {
    info = await api(`/api/runs/${encodeURIComponent(name)}`);
  } catch (err) {
    showError(err);
    return;
  }
  S.info = info;
  S.A = S.B = S.eps = S.user = S.base = null;
  S.z = info.z0 ? info.z0.slice() : null;
  history.replaceState(null, "", `#${encodeURIComponent(name)}`);
  document.querySelectorAll("#run-tabs button").forEach((b) => b.setAttribute("aria-current", String(b.dataset.run === name)));
  $("run-title").textContent = `${info.title} · ${info.latent_dim}-d latent${info.conditional ? " · conditional" : ""}`;
  const P = info.panels;
  setAvailable("map-card", P.map);
  setAvailable("decoder-card", P.random);
  setAvailable("encode-card", P.encode);
  setAvailable("interp-card", P.interpolate);
  $("map-caption").textContent = info.map ? info.map.caption : "";
  $("map-hint").textContent =
    info.map && info.map.points
      ? "Hover or drag to decode that point; click a dot to take that test image's latent."
      : "Hover or drag to decode that point; the coordinates off this plane stay as the sliders set them.";
  $("ranking").textContent = P.sliders.ok ? `ranked by ${info.ranking}` : P.sliders.reason;
  $("label-row").hidden = !info.conditional;
  $("label").textContent = "";
  if (info.conditional) {
    info.classes.slice(0, info.num_classes).forEach((c, i) => $("label").append(new Option(`${i}: ${c}`, String(i))));
  }
  $("mode").value = info.interpolation_mode;
  $("strip").textContent = "";
  $("picked").hidden = true;
  $("encode-result").hidden = true;
  $("encode-status").textContent = "";
  $("interp-status").textContent = "set A and B (hover, click a dot or draw, then press the buttons)";
  $("sliders").textContent = "";
  if (P.sliders.ok) buildSliders();
  if (info.map) {
    drawBase();
    legend();
  }
  if (S.z) setZ(S.z, info.map && info.map.points ? "centre of the test images" : "z = 0");
  loadPanel();
}

async function main() {
  setupMap();
  setupDrawing();
  $("random").addEventListener("click", randomZ);
  $("reset").addEventListener("click", () => {
    S.eps = null;
    setZ(S.info.z0.slice(), "centre");
  });
  $("temperature").addEventListener("input", () => applyTemperature());
  $("label").addEventListener("change", () => S.z && setZ(S.z, `class ${$("label").value}`));
  $("set-a").addEventListener("click", () => {
    S.A = S.z.slice();
    drawMap();
    interpolate();
  });
  $("set-b").addEventListener("click", () => {
    S.B = S.z.slice();
    drawMap();
    interpolate();
  });
  $("mode").addEventListener("change", interpolate);
  $("steps").addEventListener("change", interpolate);
  try {
    S.runs = await api("/api/runs");
  } catch (err) {
    showError(err);
    return;
  }
  const tabs = $("run-tabs");
  for (const r of S.runs) {
    const b = document.createElement("button");
    b.type = "button";
    b.dataset.run = r.name;
    b.textContent = r.name;
    b.title = r.title;
    b.addEventListener("click", () => showRun(r.name));
    tabs.append(b);
  }
  const wanted = decodeURIComponent(location.hash.slice(1));
  await showRun(S.runs.some((r) => r.name === wanted) ? wanted : S.runs[0].name);
  document.body.dataset.ready = "true"; // for tests and scripts: the first run is laid out
}

main();
