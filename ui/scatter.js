// The explorer's map: a WebGL 2 scatter of up to millions of points, fed binary columns by URL (ui/scatter.py).
//
// Python sends small JSON only: the URLs of the columns (float32 x,y; uint8 RGBA; int32 split rows; tooltip
// columns), the thumbnail atlas' layout, the rings and the mode. Each column is fetched once per URL and
// kept, so a rerun that changes the colours fetches only the new colour column, and a click or a new
// neighbour ring fetches nothing. Hover, pan, zoom, the tooltip and the rings happen here and never rerun
// the page; only a click (trigger `click`: {row}) and a lasso or box (state `selection`: {rows, how}) go back to Python.
// Given the split's k-NN graph as two columns (`neighbours`), the map also lists a picked point's neighbours
// itself, beside the points: one HTTP range request per column reads the picked row, so a click shows its
// neighbours in milliseconds at any size, while Python learns of the pick (one rerun) in the background.
// Hover picking uses a uniform grid over the points (built once per position column), not a GPU picking
// pass, so it costs well under a millisecond even where the GPU is software (SwiftShader).

const COLUMNS = new Map(); // url -> Promise<ArrayBuffer>; the newest 12 are kept
const ATLASES = new Map(); // url -> Promise<HTMLImageElement> (decoded, 4 MB each); the newest 48 are kept
const THUMB = 128; // tooltip image side, CSS px
const QUERY = 160, NBR = 94; // the side's picked image and its neighbours' sides, CSS px
const PREFETCH_MS = 150; // a pointer resting this long on a point reads its neighbours ahead of a click
const RING = { focus: "rgba(0,0,0,1)", marked: "rgba(255,140,0,1)", hover: "rgba(0,0,0,.55)" };

function column(url) {
  if (!COLUMNS.has(url)) {
    const p = fetch(url).then((r) => {
      if (!r.ok) throw new Error(`${r.status} on ${url}`);
      return r.arrayBuffer();
    });
    p.catch(() => COLUMNS.delete(url));
    COLUMNS.set(url, p);
    while (COLUMNS.size > 12) COLUMNS.delete(COLUMNS.keys().next().value);
  }
  return COLUMNS.get(url);
}

// Bytes [start, start + bytes) of a column: an HTTP range request (206), or, from a server that sends the
// whole file instead (200), a slice of the whole column, which is then kept like any other.
async function slice(url, start, bytes) {
  if (COLUMNS.has(url)) return (await COLUMNS.get(url)).slice(start, start + bytes);
  const r = await fetch(url, { headers: { Range: `bytes=${start}-${start + bytes - 1}` } });
  if (!r.ok) throw new Error(`${r.status} on ${url}`);
  const b = await r.arrayBuffer();
  if (r.status === 206) return b;
  COLUMNS.set(url, Promise.resolve(b));
  return b.slice(start, start + bytes);
}

function atlas(url) {
  if (!ATLASES.has(url)) {
    const img = new Image();
    img.src = url;
    const p = img.decode().then(() => img);
    p.catch(() => ATLASES.delete(url));
    ATLASES.set(url, p);
    while (ATLASES.size > 48) ATLASES.delete(ATLASES.keys().next().value);
  }
  return ATLASES.get(url);
}

// The atlas file of split row ``row`` and the CSS that shows its tile in a ``px``-wide box.
function sprite(a, row, px) {
  const per = a.cols * a.cols, f = Math.floor(row / per), j = row % per, s = px / a.tile;
  const url = `${a.base}atlas-${f}.${a.ext}`;
  return {
    url,
    css: `background-image:url("${url}");background-size:${a.cols * a.tile * s}px auto;` +
      `background-position:-${(j % a.cols) * a.tile * s}px -${Math.floor(j / a.cols) * a.tile * s}px`,
  };
}

const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);

const VS = `#version 300 es
in vec2 a_from; in vec2 a_to; in vec4 a_rgba;
uniform float u_t; uniform vec2 u_centre; uniform vec2 u_scale; uniform float u_px;
out vec4 v_rgba;
void main() {
  vec2 p = mix(a_from, a_to, u_t);
  gl_Position = vec4((p - u_centre) * u_scale, 0.0, 1.0);
  gl_PointSize = u_px;
  v_rgba = a_rgba;
}`;
const FS = `#version 300 es
precision mediump float;
in vec4 v_rgba; out vec4 o;
void main() {
  vec2 d = gl_PointCoord - 0.5;
  if (dot(d, d) > 0.25) discard;
  o = vec4(v_rgba.rgb * v_rgba.a, v_rgba.a);
}`;

function program(gl) {
  const shader = (type, src) => {
    const s = gl.createShader(type);
    gl.shaderSource(s, src);
    gl.compileShader(s);
    if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(s));
    return s;
  };
  const p = gl.createProgram();
  gl.attachShader(p, shader(gl.VERTEX_SHADER, VS));
  gl.attachShader(p, shader(gl.FRAGMENT_SHADER, FS));
  gl.linkProgram(p);
  if (!gl.getProgramParameter(p, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(p));
  return p;
}

// A uniform grid over the points: cell c holds order[start[c] .. start[c + 1]).
function buildGrid(xy, n) {
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  for (let i = 0; i < n; i++) {
    const x = xy[2 * i], y = xy[2 * i + 1];
    if (x < x0) x0 = x;
    if (x > x1) x1 = x;
    if (y < y0) y0 = y;
    if (y > y1) y1 = y;
  }
  const g = Math.max(1, Math.min(2048, Math.ceil(Math.sqrt(n / 4))));
  const w = (x1 - x0 || 1) / g, h = (y1 - y0 || 1) / g;
  const cell = new Int32Array(n), start = new Int32Array(g * g + 1), order = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const cx = Math.min(g - 1, Math.floor((xy[2 * i] - x0) / w));
    const cy = Math.min(g - 1, Math.floor((xy[2 * i + 1] - y0) / h));
    cell[i] = cy * g + cx;
    start[cell[i] + 1]++;
  }
  for (let c = 0; c < g * g; c++) start[c + 1] += start[c];
  const fill = start.slice(0, g * g);
  for (let i = 0; i < n; i++) order[fill[cell[i]]++] = i;
  return { x0, y0, w, h, g, start, order };
}

// The point nearest (x, y) within r (data units), or -1; on ties the one drawn last (on top).
function nearest(grid, xy, x, y, r) {
  const { x0, y0, w, h, g, start, order } = grid;
  const cx0 = Math.max(0, Math.floor((x - r - x0) / w)), cx1 = Math.min(g - 1, Math.floor((x + r - x0) / w));
  const cy0 = Math.max(0, Math.floor((y - r - y0) / h)), cy1 = Math.min(g - 1, Math.floor((y + r - y0) / h));
  let best = -1, bd = r * r;
  for (let cy = cy0; cy <= cy1; cy++) {
    for (let cx = cx0; cx <= cx1; cx++) {
      const c = cy * g + cx;
      for (let k = start[c]; k < start[c + 1]; k++) {
        const i = order[k], dx = xy[2 * i] - x, dy = xy[2 * i + 1] - y, d = dx * dx + dy * dy;
        if (d < bd || (d === bd && i > best)) (bd = d), (best = i);
      }
    }
  }
  return best;
}

// Indexes of the points inside a polygon (data units, [[x, y], ...]); a box is a 4-point polygon.
function inside(xy, n, poly) {
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  for (const [x, y] of poly) (x0 = Math.min(x0, x)), (x1 = Math.max(x1, x)), (y0 = Math.min(y0, y)), (y1 = Math.max(y1, y));
  const out = [];
  const m = poly.length;
  for (let i = 0; i < n; i++) {
    const x = xy[2 * i], y = xy[2 * i + 1];
    if (x < x0 || x > x1 || y < y0 || y > y1) continue;
    let odd = false;
    for (let a = 0, b = m - 1; a < m; b = a++) {
      const [xa, ya] = poly[a], [xb, yb] = poly[b];
      if (ya > y !== yb > y && x < ((xb - xa) * (y - ya)) / (yb - ya) + xa) odd = !odd;
    }
    if (odd) out.push(i);
  }
  return out;
}

// The view that frames a box [x0, y0, x1, y1] (given: e.g. every frame of an animation), else the 0.5-99.5th
// percentile box of (a sample of) the points.
function fit(xy, n, w, h, box) {
  if (box) {
    const k = 0.9 * Math.min(w / (box[2] - box[0] || 1), h / (box[3] - box[1] || 1));
    return { cx: (box[0] + box[2]) / 2, cy: (box[1] + box[3]) / 2, k };
  }
  const step = Math.max(1, Math.floor(n / 20000)), xs = [], ys = [];
  for (let i = 0; i < n; i += step) xs.push(xy[2 * i]), ys.push(xy[2 * i + 1]);
  if (!xs.length) return { cx: 0, cy: 0, k: 1 };
  const q = (a, p) => a[Math.min(a.length - 1, Math.floor(p * a.length))];
  xs.sort((a, b) => a - b), ys.sort((a, b) => a - b);
  const lx = q(xs, 0.005), hx = q(xs, 0.995), ly = q(ys, 0.005), hy = q(ys, 0.995);
  const k = 0.9 * Math.min(w / (hx - lx || 1), h / (hy - ly || 1));
  return { cx: (lx + hx) / 2, cy: (ly + hy) / 2, k };
}

const CSS = `
.wrap { display: flex; gap: 12px; width: 100%; height: 100%; font: 12px sans-serif; color: #222; }
.side { flex: 2 1 0; min-width: 220px; overflow-y: auto; display: none; line-height: 1.35; }
.wrap.with-side .side { display: block; }
.side .head { font-weight: 600; font-size: 14px; margin-bottom: 4px; }
.side .sprite { image-rendering: pixelated; background-repeat: no-repeat; background-color: #eee; border-radius: 3px; }
.side .caption, .side .path { color: #666; margin: 4px 0 8px; }
.side .path { word-break: break-all; }
.side .grid { display: grid; grid-template-columns: repeat(auto-fill, 100px); gap: 6px; }
.side .nbr { cursor: pointer; border: 1px solid transparent; border-radius: 4px; padding: 2px; background: none;
  text-align: left; font: inherit; color: inherit; }
.side .nbr:hover { border-color: #f08c00; }
.side .nbr .sprite { width: ${NBR}px; height: ${NBR}px; }
.side .clear { margin-top: 10px; font: 12px sans-serif; padding: 3px 10px; border: 1px solid #ccc; background: #fff;
  border-radius: 4px; cursor: pointer; }
.map { position: relative; flex: 3 1 0; min-width: 0; width: 100%; height: 100%; overflow: hidden; border: 1px solid #e6e6e6; border-radius: 6px;
  background: #fff; touch-action: none; user-select: none; font: 12px sans-serif; }
.map canvas { position: absolute; left: 0; top: 0; width: 100%; height: 100%; }
.map .tools { position: absolute; right: 6px; top: 6px; display: flex; gap: 2px; z-index: 2; }
.map .tools button { font: 12px sans-serif; padding: 3px 8px; border: 1px solid #ccc; background: #fff; border-radius: 4px;
  cursor: pointer; color: #333; }
.map .tools button[aria-pressed="true"] { background: #333; color: #fff; border-color: #333; }
.map .tip { position: absolute; z-index: 3; pointer-events: none; background: #fff; color: #222; padding: 6px;
  box-shadow: 0 1px 4px rgba(0,0,0,.3); border-radius: 4px; max-width: 300px; display: none; line-height: 1.35; }
.map .tip .thumb { width: ${THUMB}px; height: ${THUMB}px; image-rendering: pixelated; background-repeat: no-repeat;
  margin-bottom: 4px; background-color: #eee; }
.map .tip .path { color: #666; word-break: break-all; }
.map .note { position: absolute; left: 8px; bottom: 6px; color: #666; z-index: 2; pointer-events: none; }
.map .error { position: absolute; inset: 0; display: flex; align-items: center; justify-content: center; color: #a00;
  padding: 20px; text-align: center; }
`;

class ScatterMap {
  constructor(root) {
    this.root = root;
    const style = document.createElement("style");
    style.textContent = CSS;
    root.appendChild(style);
    this.wrap = document.createElement("div");
    this.wrap.className = "wrap";
    root.appendChild(this.wrap);
    this.box = document.createElement("div");
    this.box.className = "map";
    this.box.innerHTML =
      `<canvas class="gl"></canvas><canvas class="overlay"></canvas><div class="tools">` +
      `<button data-mode="pan" title="drag to pan, wheel to zoom, click a point to pick it">Pan</button>` +
      `<button data-mode="lasso" title="draw around points to select them">Lasso</button>` +
      `<button data-mode="box" title="drag a box to select points">Box</button>` +
      `<button data-act="fit" title="show every point">Fit</button></div>` +
      `<div class="tip"><div class="thumb"></div><div class="text"></div></div><div class="note"></div>`;
    this.wrap.appendChild(this.box);
    this.side = document.createElement("div");
    this.side.className = "side";
    this.wrap.appendChild(this.side);
    this.side.addEventListener("click", (e) => {
      const b = e.target.closest("button");
      if (b && b.dataset.row != null) this.pickRow(Number(b.dataset.row), true);
      else if (b && b.classList.contains("clear")) this.pickRow(null, true);
    });
    this.focusRow = undefined; // the split row whose neighbours the side lists (null: none picked)
    this.canvas = this.box.querySelector("canvas.gl");
    this.overlay = this.box.querySelector("canvas.overlay");
    this.tip = this.box.querySelector(".tip");
    this.note = this.box.querySelector(".note");
    this.gl = this.canvas.getContext("webgl2", { antialias: false, preserveDrawingBuffer: false });
    if (!this.gl) {
      this.fail("This browser has no WebGL 2, which the map needs: use a current Chrome, Edge, Firefox or Safari.");
      return;
    }
    const gl = this.gl;
    this.prog = program(gl);
    this.loc = {
      from: gl.getAttribLocation(this.prog, "a_from"), to: gl.getAttribLocation(this.prog, "a_to"),
      rgba: gl.getAttribLocation(this.prog, "a_rgba"), t: gl.getUniformLocation(this.prog, "u_t"),
      centre: gl.getUniformLocation(this.prog, "u_centre"), scale: gl.getUniformLocation(this.prog, "u_scale"),
      px: gl.getUniformLocation(this.prog, "u_px"),
    };
    this.vao = gl.createVertexArray();
    this.buf = { from: gl.createBuffer(), to: gl.createBuffer(), rgba: gl.createBuffer() };
    this.n = 0;
    this.t = 1;
    this.mode = "pan";
    this.view = null;
    this.hover = -1;
    this.lastPath = null;
    this.listen();
    new ResizeObserver(() => this.resize()).observe(this.box);
    this.resize();
  }

  fail(message) {
    const e = document.createElement("div");
    e.className = "error";
    e.textContent = message;
    this.box.appendChild(e);
  }

  resize() {
    const dpr = window.devicePixelRatio || 1, r = this.box.getBoundingClientRect();
    this.w = Math.max(1, r.width), this.h = Math.max(1, r.height), this.dpr = dpr;
    for (const c of [this.canvas, this.overlay]) (c.width = Math.round(this.w * dpr)), (c.height = Math.round(this.h * dpr));
    if (this.fitted && this.xy) this.view = fit(this.xy, this.n, this.w, this.h, this.d.bounds); // untouched views follow the size
    this.request();
  }

  // ---- data ---------------------------------------------------------------------------------------------
  async update(d, trigger, setState) {
    this.trigger = trigger;
    this.setState = setState;
    this.d = d;
    for (const b of this.box.querySelectorAll(".tools button[data-mode]")) b.setAttribute("aria-pressed", String(b.dataset.mode === this.mode));
    this.note.textContent = d.note || "";
    if (this.wrap.classList.contains("with-side") !== !!d.neighbours) {
      this.wrap.classList.toggle("with-side", !!d.neighbours);
      this.resize(); // the map is narrower beside the neighbours
    }
    const gl = this.gl;
    if (!gl) return;
    const token = (this.token = {});
    try {
      const [xyBuf, rgbaBuf] = await Promise.all([column(d.xy), column(d.rgba)]);
      const rowsBuf = d.rows ? await column(d.rows) : null;
      if (token !== this.token) return; // a newer update came in while these loaded
      const xy = new Float32Array(xyBuf), n = xy.length / 2;
      if (d.xy !== this.xyUrl) {
        const morph = d.transition_ms > 0 && this.xy && this.xy.length === xy.length && d.view_key === this.viewKey;
        gl.bindBuffer(gl.ARRAY_BUFFER, this.buf.from);
        gl.bufferData(gl.ARRAY_BUFFER, morph ? this.xy : xy, gl.STATIC_DRAW);
        gl.bindBuffer(gl.ARRAY_BUFFER, this.buf.to);
        gl.bufferData(gl.ARRAY_BUFFER, xy, gl.STATIC_DRAW);
        this.xy = xy, this.n = n, this.xyUrl = d.xy;
        this.grid = buildGrid(xy, n);
        if (morph) this.animate(d.transition_ms);
        else this.t = 1;
      }
      if (d.rgba !== this.rgbaUrl) {
        gl.bindBuffer(gl.ARRAY_BUFFER, this.buf.rgba);
        gl.bufferData(gl.ARRAY_BUFFER, new Uint8Array(rgbaBuf), gl.STATIC_DRAW);
        this.rgbaUrl = d.rgba;
      }
      if (d.rows !== this.rowsUrl) (this.rows = rowsBuf ? new Int32Array(rowsBuf) : null), (this.rowsUrl = d.rows), (this.inv = null);
      const points = [d.xy, d.rgba, d.point_px, d.view_key].join("|"); // what the GL pass draws; rings: the overlay
      if (!this.view || d.view_key !== this.viewKey) (this.view = fit(this.xy, this.n, this.w, this.h, this.d.bounds)), (this.fitted = true);
      this.viewKey = d.view_key;
      this.info = await this.loadInfo(d);
      if (token !== this.token) return;
      if (d.neighbours) {
        if (d.neighbours.labels) column(d.neighbours.labels); // every row's class (2 MB at 1M), before the first pick
        const graph = `${d.neighbours.rows}|${d.neighbours.k}`, fresh = graph !== this.graph; // another k or split
        this.graph = graph;
        this.follow(d.focus_row ?? null, fresh);
      }
      if (points !== this.drawnPoints || this.t < 1) this.draw(true);
      else this.drawOverlay(); // a click's new rings: a million points need not be drawn again
      this.drawnPoints = points;
      this.box.dataset.drawn = d.xy + "|" + d.rgba;
      this.box.dataset.marked = String((d.neighbours ? this.rings().marked : d.marked || []).length / 2);
      this.box.dataset.points = String(this.n);
      if (d.preview) this.box.dataset.preview = "1"; // a stand-in while the real map is computed (tests skip it)
    } catch (e) {
      this.fail(`The map could not load its data (${e.message}). Reload the page; if it persists, recompute the map.`);
    }
  }

  async loadInfo(d) {
    const info = {};
    for (const [name, spec] of Object.entries(d.columns || {})) {
      const buf = await column(spec.url);
      info[name] = { ...spec, values: spec.dtype === "int16" ? new Int16Array(buf) : spec.dtype === "uint8" ? new Uint8Array(buf) : new Float32Array(buf) };
    }
    return info;
  }

  row(i) {
    return this.rows ? this.rows[i] : i;
  }

  // The point of split row ``row`` (-1 when it is not plotted): the inverse of ``rows``, built once per column.
  indexOf(row) {
    if (row == null || row < 0) return -1;
    if (!this.rows) return row < this.n ? row : -1;
    if (!this.inv) {
      let top = 0;
      for (const r of this.rows) if (r > top) top = r;
      this.inv = new Int32Array(top + 1).fill(-1);
      this.rows.forEach((r, i) => (this.inv[r] = i));
    }
    return row < this.inv.length ? this.inv[row] : -1;
  }

  // ---- the picked point's neighbours (with `neighbours`) ---------------------------------------------------
  // Python's pick (the Find box, a grid's button, a link, or the echo of a click here) is shown, unless it is
  // the echo of an older click while the newest is on its way (it would flash the older pick back).
  // ``fresh``: the graph's columns changed (another k), so the same pick is read again.
  follow(row, fresh) {
    if (this.sent !== undefined && performance.now() - this.sentAt < 10000) {
      if (row === this.sent) this.sent = undefined;
      if (!fresh) return;
      row = this.focusRow;
    }
    this.sent = undefined;
    if (row !== this.focusRow || fresh) this.pickRow(row, false);
  }

  // Pick split row ``row`` (null: clear): its ring at once, then its neighbours, read from the graph's columns
  // (one range request each). ``fromUser``: a click here, which Python learns as trigger `click` ({row: -1}: cleared).
  async pickRow(row, fromUser) {
    const nb = this.d.neighbours, token = (this.pickToken = {}), t0 = performance.now();
    this.focusRow = row;
    this.hits = [];
    if (fromUser) (this.sent = row), (this.sentAt = t0), this.trigger("click", { row: row ?? -1 });
    this.drawOverlay();
    for (const k of ["ready", "listedMs", "paintedMs"]) delete this.side.dataset[k];
    if (row == null) return this.renderSide();
    try {
      const [hits, lb] = await Promise.all([this.neighboursOf(row), nb.labels ? column(nb.labels) : null, this.loadPaths()]);
      if (token !== this.pickToken) return; // a newer pick
      this.labels = lb ? new Int16Array(lb) : null;
      this.hits = hits;
      this.renderSide();
      this.drawOverlay();
      this.box.dataset.marked = String(this.rings().marked.length / 2);
      this.side.dataset.listedMs = (performance.now() - t0).toFixed(1); // pick to neighbours listed and ringed (bench)
      requestAnimationFrame(() => (this.side.dataset.paintedMs = (performance.now() - t0).toFixed(1))); // ... on screen
      await this.atlasesOf(row, hits); // their pictures: often fetched already, while the pointer rested on the point
      if (token !== this.pickToken) return;
      this.side.dataset.ready = String(row);
      this.side.dataset.readyMs = (performance.now() - t0).toFixed(1); // ... and their pictures shown (bench)
    } catch (e) {
      if (token === this.pickToken) this.side.innerHTML = `<div class="caption">The neighbours could not be read (${esc(e.message)}): reload the page.</div>`;
    }
  }

  // Split row ``row``'s neighbours [{r, s}] from the graph's columns (one range request each), kept for the
  // last 64 rows asked, so a click on a point the pointer rested on needs no request.
  neighboursOf(row) {
    const nb = this.d.neighbours, key = `${nb.rows}|${row}`;
    if (!this.rowCache || this.rowCache.graph !== nb.rows) this.rowCache = { graph: nb.rows, rows: new Map() };
    const cache = this.rowCache.rows;
    if (!cache.has(key)) {
      const k = nb.k, at = row * k * 4;
      const p = Promise.all([slice(nb.rows, at, k * 4), slice(nb.sims, at, k * 4)]).then(([rb, sb]) => {
        const rows = new Int32Array(rb), sims = new Float32Array(sb);
        return Array.from(rows, (r, j) => ({ r, s: sims[j] })).filter((h) => h.r >= 0 && h.r !== row);
      });
      p.catch(() => cache.delete(key));
      cache.set(key, p);
      while (cache.size > 64) cache.delete(cache.keys().next().value);
    }
    return cache.get(key);
  }

  // The atlases holding the pictures of ``row`` and its neighbours, decoded.
  atlasesOf(row, hits) {
    const a = this.d.thumbs;
    if (!a) return Promise.resolve();
    const urls = new Set([row, ...hits.map((h) => h.r)].map((r) => sprite(a, r, 1).url));
    return Promise.all([...urls].map((u) => atlas(u).catch(() => null)));
  }

  // The pointer rested on a point: read its neighbours and their pictures before a click asks for them.
  prefetch(row) {
    if (!this.d.neighbours) return;
    this.neighboursOf(row).then((hits) => this.atlasesOf(row, hits), () => null);
  }

  // The picked point's ring and its plotted neighbours' rings (data coordinates; unplotted ones have none).
  rings() {
    const at = (r) => {
      const i = this.indexOf(r);
      return i >= 0 ? [this.xy[2 * i], this.xy[2 * i + 1]] : null;
    };
    const marked = [];
    for (const h of this.hits || []) marked.push(...(at(h.r) || []));
    return { focus: at(this.focusRow), marked };
  }

  // Beside the map: the picked image, its file, and its neighbours (similarity, class), each a button that picks it.
  renderSide() {
    const row = this.focusRow, nb = this.d.neighbours, a = this.d.thumbs, names = nb.names || [];
    this.side.dataset.row = row == null ? "" : String(row);
    if (row == null) {
      this.side.innerHTML =
        `<div class="head">Nearest neighbours</div><div class="caption">Click a point on the map, the button under ` +
        `an image of a grid below, or find an image by its index, to see its nearest neighbours here and marked ` +
        `on the map (orange rings).</div>`;
      return;
    }
    const cls = (r) => (this.labels && this.labels[r] >= 0 ? names[this.labels[r]] ?? "" : "");
    const pic = (r, px) => (a ? `<div class="sprite" style='width:${px}px;height:${px}px;${sprite(a, r, px).css}'></div>` : "");
    const i = this.indexOf(row), path = i >= 0 && this.paths ? this.paths[i] : null, own = cls(row);
    const hits = this.hits, ringed = this.rings().marked.length / 2;
    let note = `${hits.length} nearest neighbours in the ${esc(nb.split)} split, with their cosine similarity`;
    if (own) note += `; ${hits.filter((h) => cls(h.r) === own).length} share its label`;
    if (ringed < hits.length) note += `; ${ringed} of them are among the plotted points (raise Points to see all)`;
    const tiles = hits.map(
      (h) => `<button class="nbr" data-row="${h.r}" title="#${h.r}: pick it (its neighbours here, a black ring on the map)">` +
        `${pic(h.r, NBR)}<div>${h.s.toFixed(3)} · ${esc(cls(h.r))}</div><div class="caption">#${h.r}</div></button>`,
    );
    this.side.innerHTML =
      `<div class="head">#${row}${own ? ` · ${esc(own)}` : ""}</div>${pic(row, QUERY)}` +
      (path ? `<div class="path">${esc(path)}</div>` : "") +
      `<div class="caption">${hits.length ? note : "The split holds no other image."}</div>` +
      `<div class="grid">${tiles.join("")}</div><button class="clear">✕ Clear</button>`;
  }

  // ---- drawing ------------------------------------------------------------------------------------------
  // Drawing a million points takes ~1 s where the GPU is software (SwiftShader): only pan, zoom, resize and new
  // columns redraw them; rings, the hover ring and a lasso in progress redraw the overlay canvas alone.
  request() {
    if (!this.pending) this.pending = requestAnimationFrame(() => ((this.pending = 0), this.draw(false)));
  }

  requestOverlay() {
    if (!this.pendingOverlay) this.pendingOverlay = requestAnimationFrame(() => ((this.pendingOverlay = 0), this.drawOverlay()));
  }

  draw(sync) {
    const gl = this.gl;
    if (!gl || !this.view) return;
    const { cx, cy, k } = this.view;
    gl.viewport(0, 0, this.canvas.width, this.canvas.height);
    gl.clearColor(1, 1, 1, 1);
    gl.clear(gl.COLOR_BUFFER_BIT);
    if (this.n) {
      gl.useProgram(this.prog);
      gl.bindVertexArray(this.vao);
      const attr = (loc, buf, size, type, norm) => {
        gl.bindBuffer(gl.ARRAY_BUFFER, buf);
        gl.enableVertexAttribArray(loc);
        gl.vertexAttribPointer(loc, size, type, norm, 0, 0);
      };
      attr(this.loc.from, this.buf.from, 2, gl.FLOAT, false);
      attr(this.loc.to, this.buf.to, 2, gl.FLOAT, false);
      attr(this.loc.rgba, this.buf.rgba, 4, gl.UNSIGNED_BYTE, true);
      gl.enable(gl.BLEND);
      gl.blendFunc(gl.ONE, gl.ONE_MINUS_SRC_ALPHA);
      gl.uniform1f(this.loc.t, this.t);
      gl.uniform2f(this.loc.centre, cx, cy);
      gl.uniform2f(this.loc.scale, (2 * k) / this.w, (2 * k) / this.h);
      gl.uniform1f(this.loc.px, (this.d.point_px || 2) * this.dpr);
      gl.drawArrays(gl.POINTS, 0, this.n);
    }
    if (sync) gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, new Uint8Array(4)); // waits for the draw: a GPU sync point
    this.box.dataset.view = JSON.stringify({ cx, cy, k, w: this.w, h: this.h }); // where a data point is on screen (tests)
    this.drawOverlay();
  }

  screen(x, y) {
    const { cx, cy, k } = this.view;
    return [this.w / 2 + (x - cx) * k, this.h / 2 - (y - cy) * k];
  }

  data(sx, sy) {
    const { cx, cy, k } = this.view;
    return [cx + (sx - this.w / 2) / k, cy - (sy - this.h / 2) / k];
  }

  drawOverlay() {
    const c = this.overlay.getContext("2d"), d = this.d || {}, px = d.point_px || 2;
    c.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    c.clearRect(0, 0, this.w, this.h);
    if (!this.view || this.t < 1) return;
    const ring = (x, y, r, colour, width) => {
      const [sx, sy] = this.screen(x, y);
      c.beginPath();
      c.arc(sx, sy, r, 0, 2 * Math.PI);
      c.strokeStyle = colour;
      c.lineWidth = width;
      c.stroke();
    };
    const { focus, marked: m } = d.neighbours ? this.rings() : { focus: d.focus, marked: d.marked || [] };
    for (let i = 0; i + 1 < m.length; i += 2) ring(m[i], m[i + 1], px + 4, RING.marked, 2);
    if (focus) ring(focus[0], focus[1], px + 8, RING.focus, 3);
    if (this.hover >= 0) ring(this.xy[2 * this.hover], this.xy[2 * this.hover + 1], px + 3, RING.hover, 1.5);
    const path = this.path || this.lastPath;
    if (path && path.length > 1) {
      c.beginPath();
      path.forEach(([x, y], i) => {
        const [sx, sy] = this.screen(x, y);
        i ? c.lineTo(sx, sy) : c.moveTo(sx, sy);
      });
      c.closePath();
      c.setLineDash([5, 4]);
      c.strokeStyle = "#333";
      c.lineWidth = 1.2;
      c.stroke();
      c.fillStyle = "rgba(40,40,40,.06)";
      c.fill();
      c.setLineDash([]);
    }
  }

  animate(ms) {
    const t0 = performance.now();
    const step = (now) => {
      this.t = Math.min(1, (now - t0) / ms);
      this.draw(false);
      if (this.t < 1) requestAnimationFrame(step);
      else this.box.dataset.morphed = this.xyUrl;
    };
    this.t = 0;
    requestAnimationFrame(step);
  }

  // ---- the pointer ---------------------------------------------------------------------------------------
  listen() {
    const box = this.box;
    box.querySelector(".tools").addEventListener("click", (e) => {
      const b = e.target.closest("button");
      if (!b) return;
      if (b.dataset.act === "fit") (this.view = fit(this.xy || [], this.n, this.w, this.h)), (this.fitted = !this.d.bounds), this.request(); // the points now shown
      if (b.dataset.mode) {
        this.mode = b.dataset.mode;
        for (const o of box.querySelectorAll(".tools button[data-mode]")) o.setAttribute("aria-pressed", String(o === b));
      }
    });
    const at = (e) => {
      const r = box.getBoundingClientRect();
      return [e.clientX - r.left, e.clientY - r.top];
    };
    this.overlay.addEventListener("pointerdown", (e) => {
      if (!this.view) return;
      this.overlay.setPointerCapture(e.pointerId);
      const [sx, sy] = at(e);
      this.drag = { sx, sy, view: { ...this.view }, moved: false };
      if (this.mode !== "pan") (this.path = [this.data(sx, sy)]), (this.lastPath = null);
      this.hideTip();
    });
    this.overlay.addEventListener("pointermove", (e) => {
      const [sx, sy] = at(e);
      const g = this.drag;
      if (!g) return this.hoverAt(sx, sy);
      if (Math.hypot(sx - g.sx, sy - g.sy) > 4) g.moved = true;
      if (this.mode === "pan") {
        this.fitted = false;
        this.view = { ...g.view, cx: g.view.cx - (sx - g.sx) / g.view.k, cy: g.view.cy + (sy - g.sy) / g.view.k };
        return this.request();
      }
      if (this.mode === "lasso") this.path.push(this.data(sx, sy));
      else {
        const [x0, y0] = this.data(g.sx, g.sy), [x1, y1] = this.data(sx, sy);
        this.path = [[x0, y0], [x1, y0], [x1, y1], [x0, y1]];
      }
      this.requestOverlay();
    });
    this.overlay.addEventListener("pointerup", (e) => {
      const g = this.drag;
      this.drag = null;
      if (!g) return;
      const [sx, sy] = at(e);
      if (!g.moved) {
        this.path = null;
        const i = this.pick(sx, sy);
        if (i < 0 && this.lastPath) {
          this.lastPath = null; // a click beside the points clears the area selection
          this.drawOverlay();
          this.setState("selection", { rows: [], how: null });
        }
        if (i >= 0 && this.d.neighbours) this.pickRow(this.row(i), true);
        else if (i >= 0) {
          this.d = { ...this.d, focus: [this.xy[2 * i], this.xy[2 * i + 1]], marked: [] }; // the ring at once
          this.drawOverlay();
          this.trigger("click", { row: this.row(i) });
        }
        return;
      }
      if (this.mode !== "pan" && this.path && this.path.length > 2) {
        const t0 = performance.now();
        const hits = inside(this.xy, this.n, this.path);
        const rows = hits.map((i) => this.row(i));
        this.box.dataset.selected = String(rows.length);
        this.box.dataset.selectMs = String(Math.round(performance.now() - t0));
        this.lastPath = this.path;
        this.path = null;
        this.drawOverlay();
        this.setState("selection", { rows, how: this.mode });
      }
    });
    this.overlay.addEventListener("pointerleave", () => this.hideTip());
    this.overlay.addEventListener(
      "wheel",
      (e) => {
        if (!this.view) return;
        e.preventDefault();
        const [sx, sy] = at(e);
        const [x, y] = this.data(sx, sy);
        const k = this.view.k * Math.exp(-e.deltaY * 0.0015);
        this.fitted = false;
        this.view = { k, cx: x - (sx - this.w / 2) / k, cy: y + (sy - this.h / 2) / k };
        this.hideTip();
        this.request();
      },
      { passive: false },
    );
  }

  pick(sx, sy) {
    if (!this.grid || !this.view) return -1;
    const [x, y] = this.data(sx, sy);
    return nearest(this.grid, this.xy, x, y, ((this.d.point_px || 2) / 2 + 4) / this.view.k);
  }

  hoverAt(sx, sy) {
    const i = this.pick(sx, sy);
    if (i < 0) return this.hideTip();
    if (i !== this.hover) {
      this.hover = i;
      this.hoverT0 = performance.now();
      this.showTip(i);
      this.drawOverlay();
      clearTimeout(this.resting);
      this.resting = setTimeout(() => this.hover === i && this.prefetch(this.row(i)), PREFETCH_MS);
    }
    const left = sx + 16 + 300 > this.w ? sx - 16 - Math.min(300, this.tip.offsetWidth || 300) : sx + 16;
    this.tip.style.left = `${Math.max(0, left)}px`;
    this.tip.style.top = `${Math.max(0, Math.min(sy + 12, this.h - (this.tip.offsetHeight || 200)))}px`;
  }

  hideTip() {
    clearTimeout(this.resting);
    this.tip.style.display = "none";
    if (this.hover >= 0) (this.hover = -1), this.drawOverlay();
  }

  showTip(i) {
    const d = this.d, row = this.row(i), info = this.info || {}, lines = [];
    const named = (col) => (col ? (col.values[i] >= 0 ? col.names[col.values[i]] ?? "?" : null) : null);
    const label = named(info.label);
    lines.push(`<b>#${row}</b>` + (label != null ? ` · ${esc(label)}` : ""));
    if (info.pred) lines.push(`kNN: ${esc(named(info.pred) ?? "–")}` + (info.conf ? ` (${info.conf.values[i]}%)` : ""));
    if (info.score) lines.push(`${esc(info.score.name)}: ${info.score.values[i].toFixed(3)}`);
    const text = this.tip.querySelector(".text");
    text.innerHTML = lines.join("<br>");
    this.tip.dataset.row = String(row);
    this.tip.style.display = "block";
    if (d.paths) this.showPath(i, text);
    const thumb = this.tip.querySelector(".thumb"), a = d.thumbs;
    thumb.style.display = a ? "block" : "none";
    delete this.tip.dataset.ready;
    if (!a) return;
    const { url, css } = sprite(a, row, THUMB);
    thumb.style.backgroundImage = "none";
    atlas(url).then(() => {
      if (this.tip.dataset.row !== String(row)) return; // the pointer moved on
      thumb.style.cssText += css;
      this.tip.dataset.ready = String(row);
      this.tip.dataset.readyMs = (performance.now() - this.hoverT0).toFixed(1); // pointer to picture (bench)
    }, () => (thumb.style.display = "none"));
  }

  // File paths arrive as one newline-separated text column, fetched on the first hover or pick that needs it.
  // Never fails: without its paths, a tooltip or the side shows none (a later hover tries again).
  loadPaths() {
    const url = this.d.paths;
    if (!url) return Promise.resolve();
    if (this.pathsUrl !== url) {
      this.pathsUrl = url;
      this.paths = null;
      this.pathsLoaded = column(url).then(
        (b) => this.pathsUrl === url && (this.paths = new TextDecoder().decode(b).split("\n")),
        () => this.pathsUrl === url && (this.pathsUrl = null),
      );
    }
    return this.pathsLoaded;
  }

  showPath(i, text) {
    if (!this.paths) this.loadPaths().then(() => this.paths && this.hover >= 0 && this.showTip(this.hover));
    if (this.paths && this.paths[i] != null) {
      const p = document.createElement("div");
      p.className = "path";
      p.textContent = this.paths[i];
      text.appendChild(p);
    }
  }
}

export default function (component) {
  const { data, parentElement, setTriggerValue, setStateValue } = component;
  let map = parentElement.__scatter;
  if (!map) map = parentElement.__scatter = new ScatterMap(parentElement);
  map.update(data, setTriggerValue, setStateValue);
}
