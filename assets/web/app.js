// convnet serve: the page. Plain JavaScript and Canvas, no libraries.
// It asks the server (docs/serve.md) for the model, sends the drawing on
// every stroke, and draws every layer's output maps.
"use strict";

const state = {
  model: null,
  input: null, // the network's input (C·H·W values) of the last forward
  forward: null, // the last /api/forward reply
  inFlight: false,
  pending: null, // a request to send when the one in flight returns
  unit: null, // the unit shown in the arithmetic panel: {layer, channel, y, x}
  layerViews: [], // per card (index 0: the input), how its canvas is laid out
  latencies: [], // stroke-to-maps milliseconds, newest last
};
window.convnet = state; // for the browser test and the curious

const $ = (id) => document.getElementById(id);

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  };
  const response = await fetch(path, options);
  const reply = await response.json();
  if (!response.ok) throw new Error(reply.error || response.statusText);
  return reply;
}

function fmt(v) {
  if (v === null || v === undefined) return "pad";
  const a = Math.abs(v);
  if (a !== 0 && (a < 0.001 || a >= 10000)) return v.toExponential(2);
  if (a >= 100) return v.toFixed(1);
  return v.toFixed(3);
}

// ---- colour scales ---------------------------------------------------------

const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
const DIVERGING = [[33, 102, 172], [146, 197, 222], [247, 247, 247], [244, 165, 130], [178, 24, 43]];
const GREY = [[0, 0, 0], [255, 255, 255]];

function lut(stops) {
  const table = new Uint8ClampedArray(256 * 3);
  for (let i = 0; i < 256; i++) {
    const t = (i / 255) * (stops.length - 1);
    const k = Math.min(Math.floor(t), stops.length - 2);
    const f = t - k;
    for (let c = 0; c < 3; c++) table[i * 3 + c] = stops[k][c] * (1 - f) + stops[k + 1][c] * f;
  }
  return table;
}
const LUTS = { viridis: lut(VIRIDIS), diverging: lut(DIVERGING), grey: lut(GREY) };

// The colour scale of a layer: values from lo to hi through a table.
function scaleFor(min, max, kind) {
  if (kind === "grey") return { lo: Math.min(0, min), hi: Math.max(1, max), table: LUTS.grey, name: "grey" };
  if (min < 0) {
    const m = Math.max(-min, max, 1e-12);
    return { lo: -m, hi: m, table: LUTS.diverging, name: "diverging" };
  }
  return { lo: 0, hi: Math.max(max, 1e-12), table: LUTS.viridis, name: "viridis" };
}

function colourIndex(scale, v) {
  const t = (v - scale.lo) / (scale.hi - scale.lo);
  return Math.max(0, Math.min(255, Math.round(t * 255)));
}

function drawScale(container, scale) {
  container.innerHTML = "";
  const bar = document.createElement("canvas");
  bar.width = 120;
  bar.height = 1;
  const ctx = bar.getContext("2d");
  const img = ctx.createImageData(120, 1);
  for (let x = 0; x < 120; x++) {
    const i = Math.round((x / 119) * 255);
    img.data.set([scale.table[i * 3], scale.table[i * 3 + 1], scale.table[i * 3 + 2], 255], x * 4);
  }
  ctx.putImageData(img, 0, 0);
  const lo = document.createElement("span");
  lo.textContent = fmt(scale.lo);
  const hi = document.createElement("span");
  hi.textContent = fmt(scale.hi);
  container.append(lo, bar, hi);
  if (scale.name === "diverging") container.title = "blue: negative, white: 0, red: positive";
  else if (scale.name === "viridis") container.title = "dark: 0, yellow: the layer's largest value";
}

// ---- a layer's maps as one canvas ---------------------------------------------

// Lays out `shape` ([C, H, W] or [N]) as a grid of maps, cell pixels `px`.
function layout(shape, maxWidth) {
  const flat = shape.length !== 3;
  const [c, h, w] = flat ? [1, 1, shape[0]] : shape;
  const gap = flat ? 0 : 1;
  let px, cols;
  if (flat) {
    cols = 1;
    px = Math.max(1, Math.min(24, Math.floor(maxWidth / w)));
  } else {
    // Maps about 60–90 pixels wide, as many to a row as fit.
    px = Math.max(1, Math.min(10, Math.round(80 / Math.max(w, h))));
    cols = Math.max(1, Math.min(c, Math.floor((maxWidth + gap * px) / ((w + gap) * px))));
  }
  const rows = Math.ceil(c / cols);
  const nativeW = cols * (w + gap) - gap;
  const nativeH = rows * (h + gap) - gap;
  return { c, h, w, cols, rows, gap, px, flat, nativeW, nativeH };
}

function renderMaps(canvas, view, data, scale) {
  const { c, h, w, cols, gap, px, nativeW, nativeH } = view;
  const off = view.off || (view.off = document.createElement("canvas"));
  off.width = nativeW;
  off.height = nativeH;
  const octx = off.getContext("2d");
  const img = octx.createImageData(nativeW, nativeH);
  const out = img.data;
  // The gaps: light grey.
  for (let i = 0; i < out.length; i += 4) {
    out[i] = 225; out[i + 1] = 228; out[i + 2] = 233; out[i + 3] = 255;
  }
  const table = scale.table;
  const span = scale.hi - scale.lo;
  for (let ch = 0; ch < c; ch++) {
    const gx = (ch % cols) * (w + gap);
    const gy = Math.floor(ch / cols) * (h + gap);
    for (let y = 0; y < h; y++) {
      let o = ((gy + y) * nativeW + gx) * 4;
      let s = (ch * h + y) * w;
      for (let x = 0; x < w; x++, o += 4, s++) {
        let t = Math.round(((data[s] - scale.lo) / span) * 255);
        t = t < 0 ? 0 : t > 255 ? 255 : t;
        out[o] = table[t * 3];
        out[o + 1] = table[t * 3 + 1];
        out[o + 2] = table[t * 3 + 2];
      }
    }
  }
  octx.putImageData(img, 0, 0);
  canvas.width = nativeW * px;
  canvas.height = nativeH * px;
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(off, 0, 0, canvas.width, canvas.height);
}

// Outlines cells of a card's canvas: `boxes` are [channel, y0, x0, h, w]
// rectangles in map coordinates, clipped to each map.
function outline(canvas, view, boxes, colour, width) {
  const ctx = canvas.getContext("2d");
  ctx.strokeStyle = colour;
  ctx.lineWidth = width;
  for (const [ch, y0, x0, bh, bw] of boxes) {
    const ya = Math.max(0, y0), xa = Math.max(0, x0);
    const yb = Math.min(view.h, y0 + bh), xb = Math.min(view.w, x0 + bw);
    if (yb <= ya || xb <= xa) continue;
    const gx = (ch % view.cols) * (view.w + view.gap);
    const gy = Math.floor(ch / view.cols) * (view.h + view.gap);
    const p = view.px;
    ctx.strokeRect((gx + xa) * p + width / 2, (gy + ya) * p + width / 2,
      (xb - xa) * p - width, (yb - ya) * p - width);
  }
}

// ---- the cards ----------------------------------------------------------------

function layerCard(index, title, kind, shape, params) {
  const card = document.createElement("div");
  card.className = "card layer";
  card.dataset.layer = String(index);
  const shapeText = shape.join("×");
  const paramText = params ? `${params.toLocaleString("en")} parameters` : "no parameters";
  card.innerHTML = `<div class="head"><h3><span>${title}</span><span class="kind">${kind}</span>` +
    `<span class="meta">${shapeText} · ${paramText}</span></h3><div class="scale"></div></div>`;
  const canvas = document.createElement("canvas");
  canvas.className = "maps";
  canvas.dataset.layer = String(index);
  card.append(canvas);
  return card;
}

function buildLayers(model) {
  const root = $("layers");
  root.innerHTML = "";
  const width = Math.max(300, root.clientWidth - 30);
  state.layerViews = [];
  // Card 0: the input.
  const inputShape = model.input_shape;
  const inputCard = layerCard(0, "input", "Image", inputShape, 0);
  inputCard.querySelector("canvas.maps").dataset.layer = "-1";
  root.append(inputCard);
  const inputView = layout(inputShape, width);
  // The input bigger: its receptive fields are outlined on it.
  if (!inputView.flat) inputView.px = Math.max(inputView.px, Math.floor(224 / Math.max(inputView.w, inputView.h)));
  inputView.cols = 1;
  inputView.rows = inputView.c;
  inputView.nativeW = inputView.w;
  inputView.nativeH = inputView.c * (inputView.h + inputView.gap) - inputView.gap;
  state.layerViews.push({ ...inputView, card: inputCard });
  for (const layer of model.layers) {
    let kind = layer.kind;
    if (layer.conv) kind += ` ${layer.conv.size}×${layer.conv.size}, stride ${layer.conv.stride}, pad ${layer.conv.pad}`;
    if (layer.pool) kind += ` ${layer.pool.size}×${layer.pool.size}, stride ${layer.pool.stride}`;
    const card = layerCard(layer.index, layer.name, kind, layer.shape, layer.params);
    root.append(card);
    state.layerViews.push({ ...layout(layer.shape, width), card });
  }
  const soft = document.createElement("div");
  soft.className = "card layer";
  soft.innerHTML = `<div class="head"><h3><span>softmax</span><span class="kind">probabilities</span>` +
    `<span class="meta">${model.class_names.length} classes</span></h3></div><div class="bars" id="softmax-bars"></div>`;
  root.append(soft);
  for (const view of state.layerViews) {
    view.canvas = view.card.querySelector("canvas.maps");
    view.canvas.addEventListener("click", (e) => clickUnit(e, view));
  }
}

function renderBars(container, probabilities, names) {
  const best = probabilities.indexOf(Math.max(...probabilities));
  container.innerHTML = "";
  probabilities.forEach((p, i) => {
    const bar = document.createElement("div");
    bar.className = "bar" + (i === best ? " best" : "");
    bar.innerHTML = `<span class="label">${names[i] ?? i}</span><span class="track"><span class="fill" style="display:block;width:${(100 * p).toFixed(1)}%"></span></span><span class="value">${(100 * p).toFixed(1)}%</span>`;
    container.append(bar);
  });
}

// The value of each hex digit's character code.
const HEX = new Uint8Array(128);
for (let i = 0; i < 16; i++) HEX["0123456789abcdef".charCodeAt(i)] = i;

// Layers sent as bytes (`"maps": "u8"`) back to numbers for drawing.
function decodeMaps(reply) {
  for (const layer of reply.layers) {
    if (layer.data || layer.u8 === undefined) continue;
    const hex = layer.u8;
    const n = hex.length / 2;
    const data = new Float32Array(n);
    const step = (layer.max - layer.min) / 255;
    for (let i = 0; i < n; i++) {
      data[i] = layer.min + (HEX[hex.charCodeAt(2 * i)] * 16 + HEX[hex.charCodeAt(2 * i + 1)]) * step;
    }
    layer.data = data;
    delete layer.u8;
  }
}

function renderForward(reply) {
  decodeMaps(reply);
  state.forward = reply;
  state.input = reply.input;
  const model = state.model;
  // The input card and the small "network sees" picture.
  const inputView = state.layerViews[0];
  const [c] = model.input_shape;
  const inputScale = scaleFor(Math.min(...reply.input), Math.max(...reply.input), "grey");
  renderMaps(inputView.canvas, inputView, reply.input, inputScale);
  drawScale(inputView.card.querySelector(".scale"), inputScale);
  drawSees(reply.input, model.input_shape);
  reply.layers.forEach((layer, i) => {
    const view = state.layerViews[i + 1];
    const scale = scaleFor(layer.min, layer.max);
    renderMaps(view.canvas, view, layer.data, scale);
    drawScale(view.card.querySelector(".scale"), scale);
  });
  const names = model.class_names;
  renderBars($("probabilities"), reply.probabilities, names);
  renderBars($("softmax-bars"), reply.probabilities, names);
  const p = reply.probabilities[reply.prediction];
  $("prediction").textContent = reply.class;
  $("prediction").dataset.class = reply.class;
  $("confidence").textContent = `${(100 * p).toFixed(1)}% sure`;
  void c;
  if (state.unit) {
    // Keep the unit's outlines on the new maps until its new numbers come.
    if (state.unitReply) highlight(state.unitReply);
    showUnit(state.unit);
  }
}

function drawSees(values, [c, h, w]) {
  const canvas = $("sees");
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(w, h);
  for (let i = 0; i < h * w; i++) {
    for (let k = 0; k < 3; k++) {
      const v = values[(c === 3 ? k : 0) * h * w + i];
      img.data[i * 4 + k] = Math.round(255 * Math.max(0, Math.min(1, v)));
    }
    img.data[i * 4 + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
}

// ---- sending the input --------------------------------------------------------

// Sends the input for a forward pass; `started` is when the user acted, or
// null for a refresh (a new snapshot of a training network), which is not
// a latency to report.
function send(request, started) {
  state.lastRequest = request;
  if (state.inFlight) {
    const first = state.pending ? state.pending.started : null;
    state.pending = { request, started: first !== null ? first : started };
    return;
  }
  state.inFlight = true;
  api("/api/forward", { ...request, maps: "u8" })
    .then((reply) => {
      renderForward(reply);
      if (started === null) return;
      const ms = performance.now() - started;
      state.latencies.push(ms);
      $("latency").textContent = `stroke → maps ${ms.toFixed(0)} ms (server ${reply.server_ms.toFixed(1)} ms)`;
    })
    .catch((e) => { $("latency").textContent = `error: ${e.message}`; })
    .finally(() => {
      state.inFlight = false;
      if (state.pending) {
        const next = state.pending;
        state.pending = null;
        send(next.request, next.started);
      }
    });
}

// The drawing, shrunk to 140×140 by the browser (anti-aliased), as ink values.
const SHRUNK = 140;
function drawingRequest() {
  const canvas = $("draw");
  const off = document.createElement("canvas");
  off.width = SHRUNK;
  off.height = SHRUNK;
  const ctx = off.getContext("2d");
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(canvas, 0, 0, SHRUNK, SHRUNK);
  const data = ctx.getImageData(0, 0, SHRUNK, SHRUNK).data;
  const pixels = new Array(SHRUNK * SHRUNK);
  for (let i = 0; i < pixels.length; i++) pixels[i] = Math.round((data[i * 4] / 255) * 1000) / 1000;
  return { drawing: { width: SHRUNK, height: SHRUNK, pixels } };
}

function setupDrawing() {
  const canvas = $("draw");
  const ctx = canvas.getContext("2d");
  const clear = () => {
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
  };
  clear();
  let last = null;
  const point = (e) => {
    const r = canvas.getBoundingClientRect();
    return [(e.clientX - r.left) * (canvas.width / r.width), (e.clientY - r.top) * (canvas.height / r.height)];
  };
  const stroke = (to) => {
    ctx.strokeStyle = "#fff";
    ctx.fillStyle = "#fff";
    ctx.lineWidth = 20;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.beginPath();
    if (last) {
      ctx.moveTo(last[0], last[1]);
      ctx.lineTo(to[0], to[1]);
      ctx.stroke();
    } else {
      ctx.arc(to[0], to[1], 10, 0, 2 * Math.PI);
      ctx.fill();
    }
    last = to;
    send(drawingRequest(), performance.now());
  };
  canvas.addEventListener("pointerdown", (e) => {
    canvas.setPointerCapture(e.pointerId);
    last = null;
    $("input-title").textContent = "Draw a digit";
    stroke(point(e));
  });
  canvas.addEventListener("pointermove", (e) => { if (last) stroke(point(e)); });
  const end = () => { last = null; };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
  $("clear").addEventListener("click", () => {
    clear();
    send(drawingRequest(), performance.now());
  });
  send(drawingRequest(), performance.now());
}

function setupUpload(model) {
  const [c, h, w] = model.input_shape;
  $("draw").hidden = true;
  $("upload-area").hidden = false;
  $("input-title").textContent = "Choose a picture";
  $("clear").hidden = true;
  $("upload").addEventListener("change", () => {
    const file = $("upload").files[0];
    if (!file) return;
    const img = new Image();
    img.onload = () => {
      const off = document.createElement("canvas");
      off.width = w;
      off.height = h;
      const ctx = off.getContext("2d");
      ctx.drawImage(img, 0, 0, w, h);
      const data = ctx.getImageData(0, 0, w, h).data;
      const image = new Array(c * h * w);
      for (let i = 0; i < h * w; i++) {
        if (c === 3) for (let k = 0; k < 3; k++) image[k * h * w + i] = data[i * 4 + k] / 255;
        else image[i] = (0.299 * data[i * 4] + 0.587 * data[i * 4 + 1] + 0.114 * data[i * 4 + 2]) / 255;
      }
      send({ image }, performance.now());
    };
    img.src = URL.createObjectURL(file);
  });
  send({ image: new Array(c * h * w).fill(0) }, performance.now());
}

async function loadSamples(model) {
  const { samples } = await api("/api/samples");
  const root = $("samples");
  root.innerHTML = "";
  if (!samples.length) {
    root.closest(".card").hidden = true;
    return;
  }
  const [c, h, w] = model.input_shape;
  for (const s of samples) {
    const item = document.createElement("div");
    item.className = "sample" + (s.correct ? "" : " wrong");
    item.title = `test image ${s.index}: ${s.label_name}, predicted ${s.prediction_name}`;
    const canvas = document.createElement("canvas");
    canvas.width = w;
    canvas.height = h;
    const ctx = canvas.getContext("2d");
    const img = ctx.createImageData(w, h);
    for (let i = 0; i < h * w; i++) {
      for (let k = 0; k < 3; k++) img.data[i * 4 + k] = Math.round(255 * s.image[(c === 3 ? k : 0) * h * w + i]);
      img.data[i * 4 + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
    const label = document.createElement("span");
    label.textContent = s.correct ? s.label_name : `${s.label_name}→${s.prediction_name}`;
    item.append(canvas, label);
    item.addEventListener("click", () => {
      $("input-title").textContent = `Test image ${s.index} (a ${s.label_name})`;
      const draw = $("draw");
      const ctx2 = draw.getContext("2d");
      ctx2.imageSmoothingEnabled = false;
      ctx2.drawImage(canvas, 0, 0, draw.width, draw.height);
      send({ image: s.image }, performance.now());
    });
    root.append(item);
  }
}

// ---- filters ------------------------------------------------------------------

// One convolution's filters as a canvas (at most `maxWidth` pixels wide),
// with a head that names them and shows the colour scale.
function filterBox(layer, first, maxWidth) {
  const [fn, c, kh, kw] = layer.shape;
  const box = document.createElement("div");
  box.className = "filter-layer";
  const scale = scaleFor(layer.min, layer.max);
  const rgb = first && c === 3;
  // First layer: each filter a picture (RGB for colour input). Deeper
  // layers: a row per filter, a column per input channel (up to 64×64).
  const rows = first ? Math.ceil(fn / 16) : Math.min(fn, 64);
  const cols = first ? Math.min(fn, 16) : Math.min(c, 64);
  const cells = first ? (rgb ? 1 : c) : 1;
  const gap = 1;
  const nativeW = cols * (kw * cells + gap) - gap;
  const nativeH = rows * (kh + gap) - gap;
  const px = Math.max(1, Math.min(first ? 10 : 4, Math.floor(maxWidth / nativeW)));
  const head = document.createElement("div");
  head.className = "head";
  const what = first ? `${fn} filters, ${c}×${kh}×${kw} each` : `rows: ${Math.min(fn, 64)} of ${fn} filters · columns: ${Math.min(c, 64)} of ${c} input channels`;
  head.innerHTML = `<h3><span>${layer.name}</span><span class="meta">${what}</span></h3><div class="scale"></div>`;
  box.append(head);
  const off = document.createElement("canvas");
  off.width = nativeW;
  off.height = nativeH;
  const octx = off.getContext("2d");
  const img = octx.createImageData(nativeW, nativeH);
  img.data.fill(255);
  const put = (x, y, rgbv) => img.data.set([rgbv[0], rgbv[1], rgbv[2], 255], (y * nativeW + x) * 4);
  const colour = (v) => { const t = colourIndex(scale, v); return [scale.table[t * 3], scale.table[t * 3 + 1], scale.table[t * 3 + 2]]; };
  const W = layer.weight;
  const at = (f, ch, y, x) => W[((f * c + ch) * kh + y) * kw + x];
  if (first) {
    for (let f = 0; f < fn; f++) {
      const gx = (f % cols) * (kw * cells + gap), gy = Math.floor(f / cols) * (kh + gap);
      for (let y = 0; y < kh; y++) for (let x = 0; x < kw; x++) {
        if (rgb) {
          const v = [0, 1, 2].map((k) => Math.round(255 * (at(f, k, y, x) - layer.min) / (layer.max - layer.min || 1)));
          put(gx + x, gy + y, v);
        } else {
          for (let ch = 0; ch < c; ch++) put(gx + ch * kw + x, gy + y, colour(at(f, ch, y, x)));
        }
      }
    }
  } else {
    for (let f = 0; f < rows; f++) for (let ch = 0; ch < cols; ch++) {
      const gx = ch * (kw + gap), gy = f * (kh + gap);
      for (let y = 0; y < kh; y++) for (let x = 0; x < kw; x++) put(gx + x, gy + y, colour(at(f, ch, y, x)));
    }
  }
  octx.putImageData(img, 0, 0);
  const canvas = document.createElement("canvas");
  canvas.width = nativeW * px;
  canvas.height = nativeH * px;
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(off, 0, 0, canvas.width, canvas.height);
  box.append(canvas);
  drawScale(head.querySelector(".scale"), scale);
  return box;
}

// Every convolution's filters (again after each new snapshot of a training
// network; the training card shows the first layer's too).
async function loadFilters() {
  const { layers, version } = await api("/api/filters");
  const root = $("filters");
  root.innerHTML = "";
  if (!layers.length) {
    root.textContent = "This network has no convolutions.";
    return;
  }
  layers.forEach((layer, n) => root.append(filterBox(layer, n === 0, 560)));
  const liveRoot = $("live-filters");
  if (!$("training").hidden) {
    const box = filterBox(layers[0], true, 520);
    box.dataset.version = String(version);
    liveRoot.replaceChildren(box);
  }
  state.filtersVersion = version;
}

// ---- one unit's arithmetic ---------------------------------------------------

function clickUnit(e, view) {
  const canvas = e.currentTarget;
  const layer = Number(canvas.dataset.layer);
  if (layer < 0 || !state.input) return;
  const r = canvas.getBoundingClientRect();
  const px = Math.floor(((e.clientX - r.left) * (canvas.width / r.width)) / view.px);
  const py = Math.floor(((e.clientY - r.top) * (canvas.height / r.height)) / view.px);
  const cellW = view.w + view.gap, cellH = view.h + view.gap;
  const x = px % cellW, y = py % cellH;
  if (x >= view.w || y >= view.h) return;
  const channel = Math.floor(py / cellH) * view.cols + Math.floor(px / cellW);
  if (channel >= view.c) return;
  showUnit(view.flat ? { layer, channel: x, y: 0, x: 0 } : { layer, channel, y, x });
}

function table(values, rows, cols, scale, mark) {
  let html = '<table class="nums">';
  for (let y = 0; y < rows; y++) {
    html += "<tr>";
    for (let x = 0; x < cols; x++) {
      const v = values[y * cols + x];
      let style = "";
      if (v !== null && scale) {
        const t = colourIndex(scale, v);
        const [R, G, B] = [scale.table[t * 3], scale.table[t * 3 + 1], scale.table[t * 3 + 2]];
        const light = 0.299 * R + 0.587 * G + 0.114 * B > 140;
        style = `background:rgb(${R},${G},${B});color:${light ? "#111" : "#fff"}`;
      }
      if (mark && mark[0] === y && mark[1] === x) style += ";outline:2px solid var(--mark)";
      html += `<td style="${style}">${v === null ? "pad" : Math.abs(v) >= 0.005 || v === 0 ? v.toFixed(2) : v.toExponential(0)}</td>`;
    }
    html += "</tr>";
  }
  return html + "</table>";
}

function figure(caption, html) {
  return `<figure>${html}<figcaption>${caption}</figcaption></figure>`;
}

async function showUnit(unit) {
  state.unit = unit;
  const body = $("unit-body");
  let u;
  try {
    u = await api("/api/unit", { image: state.input, ...unit });
  } catch (e) {
    body.textContent = `error: ${e.message}`;
    return;
  }
  if (state.unit !== unit) return;
  state.unitReply = u;
  $("unit-help").hidden = true;
  const card = $("unit");
  card.dataset.layer = String(u.layer);
  card.dataset.channel = String(u.unit.channel);
  card.dataset.y = String(u.unit.y);
  card.dataset.x = String(u.unit.x);
  const where = u.input_shape.length === 3 && state.model.layers[u.layer].shape.length === 3
    ? `map ${u.unit.channel}, row ${u.unit.y}, column ${u.unit.x}` : `unit ${u.unit.channel}`;
  let html = `<p><b>${u.name}</b> (${u.kind}) · ${where}<br><span class="dim small">input: ${u.input_layer} ${u.input_shape.join("×")}</span></p>`;
  if (u.kind === "Convolution") {
    const { height: kh, width: kw, channels } = u.window;
    const size = kh * kw;
    const partial = [];
    for (let ch = 0; ch < channels; ch++) {
      let s = 0;
      for (let i = 0; i < size; i++) s += u.products[ch * size + i];
      partial.push(s);
    }
    const shown = Math.min(channels, 3);
    const fmax = Math.max(...u.filter.map(Math.abs), 1e-12);
    const filterScale = { lo: -fmax, hi: fmax, table: LUTS.diverging };
    const pmax = Math.max(...u.products.map(Math.abs), 1e-12);
    const productScale = { lo: -pmax, hi: pmax, table: LUTS.diverging };
    const inputs = u.patch.filter((v) => v !== null);
    const inputScale = scaleFor(Math.min(...inputs), Math.max(...inputs), u.layer === 0 ? "grey" : undefined);
    for (let ch = 0; ch < shown; ch++) {
      const part = (a) => a.slice(ch * size, (ch + 1) * size);
      html += `<div class="small dim">input channel ${ch}${channels > 1 ? ` — partial sum ${fmt(partial[ch])}` : ""}</div>`;
      html += '<div class="mats">' + figure("input patch", table(part(u.patch), kh, kw, inputScale)) +
        '<span class="pair"><span class="op">⊙</span>' + figure("filter", table(part(u.filter), kh, kw, filterScale)) + "</span>" +
        '<span class="pair"><span class="op">=</span>' + figure("products", table(part(u.products), kh, kw, productScale)) + "</span></div>";
    }
    if (channels > shown) {
      html += `<div class="partials">… and ${channels - shown} more input channels. Partial sums of all ${channels}: ${partial.map(fmt).join(", ")}</div>`;
    }
    html += '<div class="equation">' +
      `Σ products = <span class="num" id="unit-sum" data-value="${u.sum}">${fmt(u.sum)}</span><br>` +
      `+ bias <span class="num" id="unit-bias" data-value="${u.bias}">${fmt(u.bias)}</span>` +
      ` = <span class="num" id="unit-total" data-value="${u.total}">${fmt(u.total)}</span>` +
      ` <span class="dim small">(the layer's output: <span id="unit-output" data-value="${u.output}">${fmt(u.output)}</span>)</span><br>`;
    if (u.relu) {
      html += `${u.relu.name}: max(0, ${fmt(u.total)}) = <span class="num result" id="unit-relu" data-value="${u.relu.output}">${fmt(u.relu.output)}</span>`;
    }
    html += "</div>";
  } else if (u.kind === "MaxPooling" || u.kind === "AvgPooling") {
    const { height: kh, width: kw } = u.window;
    const vals = u.values.filter((v) => v !== null);
    const scale = scaleFor(Math.min(...vals), Math.max(...vals));
    const mark = u.winner ? [u.winner.y - u.window.y0, u.winner.x - u.window.x0] : null;
    html += '<div class="mats">' + figure(`window of input map ${u.unit.channel}`, table(u.values, kh, kw, scale, mark)) + "</div>";
    html += '<div class="equation">';
    if (u.winner) {
      html += `max = <span class="num result" id="unit-winner" data-value="${u.winner.value}">${fmt(u.winner.value)}</span>, from row ${u.winner.y}, column ${u.winner.x} of the input (outlined)`;
    } else {
      html += `mean of the window = <span class="num result">${fmt(u.output)}</span>`;
    }
    html += `<br><span class="dim small">the layer's output: <span id="unit-output" data-value="${u.output}">${fmt(u.output)}</span></span></div>`;
  } else {
    html += '<div class="equation">';
    if (u.input_value !== undefined) {
      const f = u.kind === "Relu" ? `max(0, ${fmt(u.input_value)})` : `${u.kind.toLowerCase()}(${fmt(u.input_value)})`;
      html += `${f} = `;
    } else {
      html += "output = ";
    }
    html += `<span class="num result" id="unit-output" data-value="${u.output}">${fmt(u.output)}</span></div>`;
    if (u.kind === "Affine") html += '<p class="dim small">An affine unit sums every input times its weight, plus a bias.</p>';
  }
  $("unit-body").innerHTML = html;
  highlight(u);
}

// Redraws the maps of the clicked layer and of its input with the unit and
// its receptive field outlined.
function highlight(u) {
  const reply = state.forward;
  if (!reply) return;
  // Redraw the two cards without old outlines.
  const redraw = (cardIndex) => {
    const view = state.layerViews[cardIndex];
    const canvas = view.canvas;
    const data = cardIndex === 0 ? reply.input : reply.layers[cardIndex - 1].data;
    const scale = cardIndex === 0
      ? scaleFor(Math.min(...data), Math.max(...data), "grey")
      : scaleFor(reply.layers[cardIndex - 1].min, reply.layers[cardIndex - 1].max);
    renderMaps(canvas, view, data, scale);
    return { view, canvas };
  };
  if (state.marked) for (const i of state.marked) redraw(i);
  const self = redraw(u.layer + 1);
  const input = redraw(u.layer);
  state.marked = [u.layer, u.layer + 1];
  if (self.view.flat) {
    outline(self.canvas, self.view, [[0, 0, u.unit.channel, 1, 1]], "#ff2d95", 2);
    return;
  }
  outline(self.canvas, self.view, [[u.unit.channel, u.unit.y, u.unit.x, 1, 1]], "#ff2d95", 2);
  if (!u.window) return;
  const channels = u.kind === "Convolution" ? [...Array(u.window.channels).keys()] : [u.unit.channel];
  outline(input.canvas, input.view,
    channels.map((ch) => [ch, u.window.y0, u.window.x0, u.window.height, u.window.width]), "#ff2d95", 2);
  if (u.winner) outline(input.canvas, input.view, [[u.unit.channel, u.winner.y, u.winner.x, 1, 1]], "#ffd400", 2);
}

// ---- training live (convnet train --serve) ---------------------------------------

const live = {
  lastId: 0, // the newest event's id
  start: null, // the "start" event
  batches: [], // [step, loss] per mini-batch
  epochs: [], // "epoch" events
  current: null, // the newest "batch" event
  snapshot: null, // the newest "snapshot" event
  done: null, // the "done" event
  source: null,
  drawPending: false,
  filtersBusy: false,
  filtersAgain: false,
};
state.live = live;

function setupLive() {
  $("training").hidden = false;
  // The stream replays the run so far, then follows it; on a reconnect the
  // browser asks only for what it missed (Last-Event-ID).
  const source = new EventSource("/api/progress");
  live.source = source;
  source.onmessage = (e) => onProgress(JSON.parse(e.data));
  source.onerror = () => {
    if (live.done) source.close();
    else $("training-status").textContent = "lost the connection to the server: retrying …";
  };
}

function onProgress(ev) {
  if (ev.id <= live.lastId) return;
  live.lastId = ev.id;
  if (ev.type === "start") live.start = ev;
  else if (ev.type === "batch") {
    live.current = ev;
    live.batches.push([ev.step, ev.loss]);
  } else if (ev.type === "epoch") live.epochs.push(ev);
  else if (ev.type === "snapshot") {
    live.snapshot = ev;
    refreshNetwork();
  } else if (ev.type === "done") {
    live.done = ev;
    live.source.close();
    refreshNetwork();
    if (state.model) loadSamples(state.model).catch(() => {});
  }
  if (!live.drawPending) {
    live.drawPending = true;
    requestAnimationFrame(() => { live.drawPending = false; drawLive(); });
  }
}

// A newer network: the drawing's answer and maps, and the filters, again.
function refreshNetwork() {
  if (state.lastRequest) send(state.lastRequest, null);
  if (live.filtersBusy) {
    live.filtersAgain = true;
    return;
  }
  live.filtersBusy = true;
  loadFilters().catch(() => {}).finally(() => {
    live.filtersBusy = false;
    if (live.filtersAgain) {
      live.filtersAgain = false;
      refreshNetwork();
    }
  });
}

function pct(x) { return `${(100 * x).toFixed(2)}%`; }

function drawLive() {
  const s = live.start;
  const last = live.epochs[live.epochs.length - 1];
  let text;
  if (live.done) {
    const how = { finished: "finished", interrupted: "interrupted (Ctrl-C)", failed: `failed: ${live.done.message}` }[live.done.status] || live.done.status;
    text = `training ${how}` + (last ? ` after epoch ${last.epoch}: test accuracy ${pct(last.test_acc)}` : "") +
      ". The page uses the final network.";
  } else if (live.current && s) {
    const c = live.current;
    text = `epoch ${c.epoch}/${s.epochs} · batch ${c.batch}/${c.batches} · loss ${c.loss === null ? "not finite" : c.loss.toFixed(4)}` +
      (last ? ` · test accuracy ${pct(last.test_acc)} after epoch ${last.epoch}` : "");
  } else {
    text = "starting …";
  }
  $("training-status").textContent = text;
  $("training-status").dataset.state = live.done ? live.done.status : "training";
  const snap = live.snapshot;
  $("training-snapshot").textContent = snap
    ? `The page's network: snapshot ${snap.version}, taken at epoch ${snap.epoch}, batch ${snap.batch}.`
    : "The page's network: the initial weights.";
  drawLossCurve();
  drawAccuracyCurve();
}

// A chart's frame: the plot area, axes and tick labels. `xs` and `ys` are
// [lo, hi]; returns functions from data to canvas coordinates.
function chartFrame(canvas, xs, ys, xTicks, yTicks, yFormat) {
  const width = Math.max(200, Math.floor(canvas.clientWidth || canvas.width));
  canvas.width = width;
  const height = canvas.height;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, width, height);
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, width, height);
  const m = { left: 44, right: 10, top: 8, bottom: 26 };
  const X = (x) => m.left + ((x - xs[0]) / (xs[1] - xs[0] || 1)) * (width - m.left - m.right);
  const Y = (y) => height - m.bottom - ((y - ys[0]) / (ys[1] - ys[0] || 1)) * (height - m.top - m.bottom);
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = "#6b7280";
  ctx.strokeStyle = "#e3e6eb";
  ctx.lineWidth = 1;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (const y of yTicks) {
    ctx.beginPath();
    ctx.moveTo(m.left, Math.round(Y(y)) + 0.5);
    ctx.lineTo(width - m.right, Math.round(Y(y)) + 0.5);
    ctx.stroke();
    ctx.fillText(yFormat(y), m.left - 4, Y(y));
  }
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  for (const [x, label] of xTicks) {
    ctx.beginPath();
    ctx.moveTo(Math.round(X(x)) + 0.5, m.top);
    ctx.lineTo(Math.round(X(x)) + 0.5, height - m.bottom);
    ctx.stroke();
    ctx.fillText(label, X(x), height - m.bottom + 4);
  }
  return { ctx, X, Y };
}

function line(ctx, points, colour, width) {
  ctx.strokeStyle = colour;
  ctx.lineWidth = width;
  ctx.beginPath();
  points.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
  ctx.stroke();
}

function dots(ctx, points, colour) {
  ctx.fillStyle = colour;
  for (const [x, y] of points) {
    ctx.beginPath();
    ctx.arc(x, y, 3.5, 0, 2 * Math.PI);
    ctx.fill();
  }
}

// Epoch boundaries as x ticks: at most about ten labelled.
function epochTicks(first, last, perEpoch) {
  const every = Math.max(1, Math.ceil((last - first) / 10));
  const ticks = [];
  for (let e = first; e <= last; e += every) ticks.push([e * perEpoch, String(e)]);
  return ticks;
}

function drawLossCurve() {
  const s = live.start;
  if (!s) return;
  const canvas = $("loss-curve");
  const losses = live.batches.filter(([, l]) => l !== null && Number.isFinite(l));
  const tests = live.epochs.filter((e) => e.test_loss !== null).map((e) => [e.epoch * s.batches, e.test_loss]);
  let top = Math.max(0.1, ...losses.map(([, l]) => l), ...tests.map(([, l]) => l));
  const step = top > 2 ? 0.5 : top > 1 ? 0.25 : 0.1;
  top = Math.ceil(top / step) * step;
  const yTicks = [];
  for (let y = 0; y <= top + 1e-9; y += step) yTicks.push(y);
  const { ctx, X, Y } = chartFrame(canvas, [s.start_epoch * s.batches, s.epochs * s.batches], [0, top],
    epochTicks(s.start_epoch, s.epochs, s.batches), yTicks, (y) => y.toFixed(step < 0.25 ? 1 : 2));
  line(ctx, losses.map(([x, l]) => [X(x), Y(l)]), "#c7cdd6", 1);
  // The trend: an exponential moving average of the batch losses.
  let avg = null;
  const smooth = losses.map(([x, l]) => {
    avg = avg === null ? l : 0.9 * avg + 0.1 * l;
    return [X(x), Y(avg)];
  });
  line(ctx, smooth, "#2563eb", 2);
  dots(ctx, tests.map(([x, l]) => [X(x), Y(l)]), "#f97316");
}

function drawAccuracyCurve() {
  const s = live.start;
  if (!s) return;
  const canvas = $("acc-curve");
  const accs = live.epochs.flatMap((e) => [e.train_acc, e.test_acc]);
  const low = accs.length ? Math.max(0, Math.floor(Math.min(...accs) * 10) / 10) : 0;
  const yTicks = [];
  const step = 1 - low > 0.5 ? 0.2 : 0.1;
  for (let y = low; y <= 1 + 1e-9; y += step) yTicks.push(y);
  const { ctx, X, Y } = chartFrame(canvas, [s.start_epoch, s.epochs], [low, 1],
    epochTicks(s.start_epoch, s.epochs, 1), yTicks, (y) => `${Math.round(100 * y)}%`);
  const train = live.epochs.map((e) => [X(e.epoch), Y(e.train_acc)]);
  const test = live.epochs.map((e) => [X(e.epoch), Y(e.test_acc)]);
  line(ctx, train, "#2563eb", 2);
  dots(ctx, train, "#2563eb");
  line(ctx, test, "#16a34a", 2);
  dots(ctx, test, "#16a34a");
}

// ---- start ----------------------------------------------------------------------

async function main() {
  const model = await api("/api/model");
  state.model = model;
  $("model-name").textContent = model.model;
  $("model-summary").textContent =
    `${model.layers.length} layers · ${model.params.toLocaleString("en")} parameters · input ${model.input_shape.join("×")} · ${model.class_names.length} classes`;
  buildLayers(model);
  if (model.progress) setupLive();
  if (model.drawable) setupDrawing();
  else setupUpload(model);
  await Promise.all([loadSamples(model), loadFilters()]);
}

main().catch((e) => {
  document.body.insertAdjacentHTML("afterbegin", `<p style="color:#dc2626;padding:8px 18px">error: ${e.message}</p>`);
});
