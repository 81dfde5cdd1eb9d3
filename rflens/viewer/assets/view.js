// rflens view: click a unit, see what it sees. Plain JavaScript on canvases, no dependencies.
// The view itself, shared by the page of `rflens view` (page.js after this file) and the
// notebook widget (widget.js after this file): `rflensViewer.view` mounts it on a copy of
// index.html's markup with a source of answers and an address that keeps the selection.
// The sources: Python (the rflens server over HTTP, or the notebook's kernel over the
// widget's comm: exact masks and projective fields as compact JSON; gradient RF and ERF jobs
// on the server) or, in an exported page, the engine's geometry inlined in the page, from
// which the same exact answers are computed here.
"use strict";
const rflensViewer = (function () {
  const MASK_RGBA = [0, 190, 255, 100];   // support: translucent cyan
  const MASK_EDGE_RGBA = [0, 190, 255, 255];  // the support's outline over a heat map
  const BOX = "#ff00ff";                  // box: opaque magenta (tests look for it)
  const PF = "#ffa500";                   // units that see the clicked pixel: opaque orange
  const VIEW = 448;                       // display size of the input and grid, in CSS pixels

  // -- compact arrays ---------------------------------------------------------------------
  function bytesOf(b64) {
    const bin = atob(b64);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }
  function unpackBits(bytes, n) {  // np.packbits order: most significant bit first
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = (bytes[i >> 3] >> (7 - (i & 7))) & 1;
    return out;
  }
  function decodeMask(d) {
    const n = d.shape.reduce((a, b) => a * b, 1);
    if (d.bits !== undefined) return unpackBits(bytesOf(d.bits), n);
    const out = new Uint8Array(n);
    let p = 0;
    d.rle.forEach((r, i) => { if (i % 2) out.fill(1, p, p + r); p += r; });
    return out;
  }
  const int32s = (b64) => new Int32Array(bytesOf(b64).buffer);     // little-endian, as written
  const float64s = (b64) => new Float64Array(bytesOf(b64).buffer);

  const prod = (a) => a.reduce((x, y) => x * y, 1);
  function flatIndex(idx, grid) { let f = 0; for (let a = 0; a < grid.length; a++) f = f * grid[a] + idx[a]; return f; }
  function unflat(f, grid) {
    const idx = new Array(grid.length);
    for (let a = grid.length - 1; a >= 0; a--) { idx[a] = f % grid[a]; f = Math.floor(f / grid[a]); }
    return idx;
  }
  function boxOf(mask, h, w) {
    let y0 = h, y1 = -1, x0 = w, x1 = -1, n = 0;
    for (let y = 0; y < h; y++) {
      const o = y * w;
      for (let x = 0; x < w; x++) {
        if (mask[o + x]) { n++; if (y < y0) y0 = y; if (y > y1) y1 = y; if (x < x0) x0 = x; if (x > x1) x1 = x; }
      }
    }
    return n ? { box: [[y0, y1 + 1], [x0, x1 + 1]], support: n } : { box: [[0, 0], [0, 0]], support: 0 };
  }
  const num = (v) => (Number.isFinite(v) ? (Number.isInteger(v) ? v : Math.round(v * 1e6) / 1e6) : null);

  async function fetchJSON(url, options) {
    const r = await fetch(url, options);
    const d = await r.json();
    if (!r.ok) throw new Error(d.error || r.statusText);
    return d;
  }

  // -- answers from Python ----------------------------------------------------------------
  // `ask(what, {layer, unit | pixel, channel})` resolves to the answer of the server's
  // api/<what> or the kernel's Scene.<what>; `channel` picks one neuron at each position,
  // null asks for the union over the channels.
  const channelParam = (channel) => (channel === null ? "" : "&channel=" + channel);
  class RemoteSource {
    constructor(ask) { this.ask = ask; this.cache = new Map(); this.live = true; }
    async unit(layer, idx, channel = null) {
      const key = layer + "|" + idx.join(",") + "|" + channel;
      if (!this.cache.has(key)) {
        const d = await this.ask("unit", { layer, unit: idx, channel });
        d.mask = decodeMask(d.mask);
        if (this.cache.size > 256) this.cache.delete(this.cache.keys().next().value);
        this.cache.set(key, d);
      }
      return this.cache.get(key);
    }
    async projective(layer, pixel, channel = null) {
      return decodeMask((await this.ask("projective", { layer, pixel, channel })).units);
    }
  }

  // -- the same answers from the geometry inlined in an exported page ---------------------
  // A unit reads node `node` at node position `pos` (its own index where null); the node's
  // support of a position is the union over its terms of the outer product of the matrix
  // rows of that position, one matrix (node grid x input) per axis.  What a layer's units read
  // is a "field", shared by the layers that read alike; where channels read differently (a
  // DenseNet block), the layer lists runs [field, count] over its channels.
  class StaticSource {
    constructor(data) { this.info = data; this.geo = data.geometry; this.nodes = {}; this.fields = {}; this.live = false; }
    async meta() { return this.info; }
    imageURL() { return this.info.image_data || null; }
    node(id) {
      if (!this.nodes[id]) {
        const g = this.geo.nodes[id], [h, w] = this.info.input_size.slice(1);
        this.nodes[id] = { grid: g.grid, terms: g.terms.map((t) => [unpackBits(bytesOf(t[0]), g.grid[0] * h),
                                                                    unpackBits(bytesOf(t[1]), g.grid[1] * w)]) };
      }
      return this.nodes[id];
    }
    layer(name, channel) {  // the decoded field a neuron of `channel` reads (null: all channels)
      const g = this.geo.layers[name], grid = this.record(name).grid;
      let id = g.field;
      if (channel !== null && g.channels) {
        let c = channel;
        for (const [field, count] of g.channels) { if (c < count) { id = field; break; } c -= count; }
      }
      if (!this.fields[id]) {
        const f = this.geo.fields[id], n = prod(grid);
        const axis = (v) => ({ axis: v.axis, values: float64s(v.values) });
        this.fields[id] = {
          grid,
          entries: f.entries.map((e) => ({ node: e.node, units: e.units === null ? null : unpackBits(bytesOf(e.units), n),
                                           pos: e.pos.map((p) => (p === null ? null : int32s(p))) })),
          lo: f.lo.map(axis), hi: f.hi.map(axis),
        };
      }
      return this.fields[id];
    }
    record(name) { return this.info.layers.find((r) => r.name === name); }
    async unit(name, idx, channel = null) {
      const L = this.layer(name, channel), [h, w] = this.info.input_size.slice(1);
      const f = flatIndex(idx, L.grid);
      const mask = new Uint8Array(h * w);
      for (const e of L.entries) {
        if (e.units && !e.units[f]) continue;
        const p = e.pos.map((arr, a) => (arr ? arr[f] : idx[a]));
        for (const [m0, m1] of this.node(e.node).terms) {
          const xs = [];
          for (let x = 0; x < w; x++) if (m1[p[1] * w + x]) xs.push(x);
          if (!xs.length) continue;
          for (let y = 0; y < h; y++) {
            if (!m0[p[0] * h + y]) continue;
            const o = y * w;
            for (const x of xs) mask[o + x] = 1;
          }
        }
      }
      const at = (v) => (v.axis === null ? v.values[f] : v.values[idx[v.axis]]);
      const unclipped = L.lo.map((lo, a) => [num(at(lo)), num(at(L.hi[a]))]);
      const { box, support } = boxOf(mask, h, w);
      return { layer: name, unit: idx, channel, mask, box, support_size: support, unclipped_box: unclipped,
               center: unclipped.map(([a, b]) => (a === null ? null : num((a + b - 1) / 2))) };
    }
    async projective(name, pixel, channel = null) {
      const L = this.layer(name, channel), [h, w] = this.info.input_size.slice(1), n = prod(L.grid);
      const out = new Uint8Array(n);
      for (const e of L.entries) {
        const node = this.node(e.node), [g0, g1] = node.grid;
        const seen = new Uint8Array(g0 * g1);
        for (const [m0, m1] of node.terms) {
          const cols = [];
          for (let j = 0; j < g1; j++) if (m1[j * w + pixel[1]]) cols.push(j);
          if (!cols.length) continue;
          for (let i = 0; i < g0; i++) if (m0[i * h + pixel[0]]) for (const j of cols) seen[i * g1 + j] = 1;
        }
        for (let f = 0; f < n; f++) {
          if (e.units && !e.units[f]) continue;
          const idx = unflat(f, L.grid);
          const p = e.pos.map((arr, a) => (arr ? arr[f] : idx[a]));
          if (seen[p[0] * g1 + p[1]]) out[f] = 1;
        }
      }
      return out;
    }
  }

  // -- the view ---------------------------------------------------------------------------
  // `root` holds index.html's markup (elements found by id inside it, so two widgets on one
  // notebook page keep apart); `address` reads and writes {layer, unit, channel, pixel} (the
  // page's URL hash, the widget's synced state); `keys` is where key presses are heard.
  function view(root, source, address, keys) {
    const $ = (id) => root.querySelector("#" + id);
    const state = {
      info: null, layer: null, unit: null, channel: null, hover: null, pixel: null,
      shown: null, pf: null, heat: null, job: null, token: 0, pfToken: 0,
      scale: 1, cell: 1, rows: 1, cols: 1, base: null,
    };

    const fmt = (v) => (v.every((x) => String(x) === String(v[0])) ? String(v[0]) : v.join("x"));
    const range = (lo, hi) => (fmt(lo) === fmt(hi) ? fmt(lo) : fmt(lo) + "–" + fmt(hi));
    const known = (v) => v && !v.some((x) => x === null);
    // the RF column: the size, or "global" where every unit sees the whole input
    const rfText = (r) => (r.global ? "global" : known(r.rf_size) ? fmt(r.rf_size) : "-");
    const strideText = (r) => (r.global ? (known(r.local_stride) ? fmt(r.local_stride) : "-") : fmt(r.stride));
    // what sets a layer apart, with its numbers; a layer like a plain convolution's has none
    function flags(r) {
      if (r.refused) return "refused: " + r.why + " in " + (r.module || "the model's forward");
      const out = [];
      const byChannel = r.rf_size_by_channel;  // as rflens table writes it
      const paths = range(r.min_rf, r.max_rf), channels = byChannel && range(byChannel[0], byChannel[1]);
      if (r.global) out.push(known(r.local_rf_size) ? "local RF " + fmt(r.local_rf_size) : "no local RF");
      else if (fmt(r.min_rf) !== fmt(r.max_rf) && paths !== channels) out.push("paths " + paths);  // a concatenation's paths are its channels
      if (byChannel) out.push("by channel " + channels);
      if (!r.uniform) out.push("non-uniform");
      if (!r.global && r.covers_input.every(Boolean)) out.push("covers input");
      return out.join(", ");
    }
    const gridText = (g) => (g.length ? g.join("x") : "1");
    const status = (text) => { $("status").textContent = text || ""; };

    // -- the layer table --------------------------------------------------------------------
    function buildTable() {
      const body = $("table").tBodies[0];
      const rows = state.info.layers.slice();
      for (const r of state.info.refused || []) rows.splice(r.index, 0, Object.assign({refused: true}, r));
      for (const r of rows) {
        const tr = document.createElement("tr");
        tr.dataset.name = r.name;
        const cells = r.refused ? [r.name, r.op, "", "", "", flags(r)]
          : [r.name, r.op, gridText(r.grid), rfText(r), strideText(r), flags(r)];
        for (const c of cells) {
          const td = document.createElement("td");
          td.textContent = c;
          tr.appendChild(td);
        }
        if (r.refused) {  // no field to draw: the row says why
          tr.className = "refused";
          tr.title = r.message;
          tr.addEventListener("click", () => status(r.message));
        } else {
          tr.addEventListener("click", () => selectLayer(r.name, true));
        }
        body.appendChild(tr);
      }
      $("search").addEventListener("input", filterTable);
    }
    function filterTable() {
      const q = $("search").value.trim().toLowerCase();
      for (const tr of $("table").tBodies[0].rows) {
        const r = state.info.layers.find((x) => x.name === tr.dataset.name)
          || (state.info.refused || []).find((x) => x.name === tr.dataset.name);
        tr.hidden = q !== "" && !(r.name.toLowerCase().includes(q) || r.op.toLowerCase().includes(q));
      }
    }
    const visibleLayers = () => Array.from($("table").tBodies[0].rows).filter((tr) => !tr.hidden && !tr.classList.contains("refused"))
      .map((tr) => tr.dataset.name);

    // -- choosing ---------------------------------------------------------------------------
    function gridDims(grid) {  // a long 1-D grid (tokens, flattened features) wraps into rows
      if (grid.length === 2) return [grid[0], grid[1]];
      if (grid.length === 1) { const cols = grid[0] <= 64 ? grid[0] : Math.ceil(Math.sqrt(grid[0])); return [Math.ceil(grid[0] / cols), cols]; }
      return [1, 1];
    }
    const clampUnit = (idx, grid) => idx.map((v, a) => Math.max(0, Math.min(grid[a] - 1, v)));
    const centreUnit = (grid) => grid.map((n) => Math.floor(n / 2));

    function selectLayer(name, keepUnit, unit) {
      const r = state.info.layers.find((x) => x.name === name);
      if (!r) { status("no layer named " + name); return; }
      const old = state.layer;
      state.layer = r;
      state.channel = validChannel(state.channel, r);  // kept where the new layer has it
      if (unit) state.unit = clampUnit(unit, r.grid);
      else if (keepUnit && old && state.unit && old.grid.length === r.grid.length) {
        // the same relative position on the new grid
        state.unit = clampUnit(state.unit.map((v, a) => Math.round(((v + 0.5) * r.grid[a]) / old.grid[a] - 0.5)), r.grid);
      } else state.unit = centreUnit(r.grid);
      state.hover = null;
      for (const tr of $("table").tBodies[0].rows) {
        const on = tr.dataset.name === name;
        tr.classList.toggle("selected", on);
        if (on) scrollToRow(tr);
      }
      layoutGrid();
      buildChannels();
      caption();
      writeAddress();
      showUnit();
      showProjective();
      selectionChanged();
    }
    function scrollToRow(tr) {  // only the table scrolls: in a notebook, the page around the view stays put
      const wrap = $("tablewrap"), box = wrap.getBoundingClientRect(), row = tr.getBoundingClientRect();
      const top = box.top + $("table").tHead.getBoundingClientRect().height;  // under the sticky header
      if (row.top < top) wrap.scrollTop -= top - row.top;
      else if (row.bottom > box.bottom) wrap.scrollTop += row.bottom - box.bottom;
    }
    function caption() {
      const r = state.layer, c = state.channel, g = c === null ? r : groupOf(r, c);
      const cap = $("gridcap");
      cap.textContent = `${r.name} (${r.op}): ${gridText(r.grid)} units, ` +
        (c === null ? "" : `channel ${c}: `) + `RF ${fmt(g.rf_size)}, stride ${fmt(g.stride)}`;
      cap.title = cap.textContent;  // long names are cut short on the page
    }

    // -- channels: a neuron is one channel at one position; none chosen, the union ------------
    const hasChannels = (r) => r.channels !== null;
    const validChannel = (c, r) => (hasChannels(r) && Number.isInteger(c) && c >= 0 && c < r.channels ? c : null);
    function channelGroups(r) {  // runs of channels sharing one geometry: one run where the field does not vary
      const g = r.channel_groups;
      if (!g) return [{ first: 0, stop: r.channels, rf_size: r.rf_size, stride: r.stride, start: r.start }];
      return g.stop.map((stop, i) => ({ first: i ? g.stop[i - 1] : 0, stop, rf_size: g.rf_size[i], stride: g.stride[i],
                                        start: g.start[i] }));
    }
    const groupOf = (r, c) => channelGroups(r).find((g) => g.first <= c && c < g.stop);
    const channelSpan = (g) => (g.stop - g.first > 1 ? `${g.first}-${g.stop - 1}` : String(g.first));
    function buildChannels() {
      const r = state.layer, box = $("channels");
      box.hidden = !hasChannels(r);
      if (box.hidden) return;
      $("channel").max = r.channels - 1;
      // where the field varies, every group is listed: a DenseNet block shows its fields at once
      const buttons = [["all", null, `the union over the ${r.channels} channels at a position`]].concat(
        r.channel_groups ? channelGroups(r).map((g) => [`${channelSpan(g)}: RF ${fmt(g.rf_size)}`, g.first,
          `channels ${channelSpan(g)}: RF ${fmt(g.rf_size)}, stride ${fmt(g.stride)}, start ${fmt(g.start)}`]) : []);
      $("groups").replaceChildren(...buttons.map(([text, c, title]) => {
        const b = document.createElement("button");
        b.type = "button"; b.textContent = text; b.title = title;
        b.dataset.channel = c === null ? "all" : c;
        b.addEventListener("click", () => selectChannel(c));
        return b;
      }));
      showChannel();
    }
    function showChannel() {
      const r = state.layer, c = state.channel, input = $("channel");
      if (!hasChannels(r)) return;
      if (document.activeElement !== input) input.value = c === null ? "" : String(c);  // not while typing
      $("chaninfo").textContent = c === null ? `all ${r.channels}` : `of 0..${r.channels - 1}`;
      const on = c === null ? "all" : String(groupOf(r, c).first);
      for (const b of $("groups").children) b.classList.toggle("on", b.dataset.channel === on);
    }
    function selectChannel(c) {
      c = validChannel(c, state.layer);
      if (c === state.channel) { showChannel(); return; }  // at either end: nothing to redo, no job to restart
      state.channel = c;
      showChannel();
      caption();
      writeAddress();
      showUnit();
      showProjective();
      selectionChanged();
    }
    function channelTyped(commit) {  // the number box: empty is all; out of range waits (or, committed, is clamped)
      const text = $("channel").value.trim(), r = state.layer;
      if (text === "") { selectChannel(null); return; }
      const c = Number(text);
      if (!Number.isInteger(c)) { if (commit) showChannel(); return; }
      if (validChannel(c, r) !== null) selectChannel(c);
      else if (commit) selectChannel(Math.max(0, Math.min(r.channels - 1, c)));
    }
    function stepChannel(step) {  // "all" sits before channel 0
      const c = state.channel, n = state.layer.channels;
      selectChannel(c === null ? (step > 0 ? 0 : null) : c + step < 0 ? null : Math.min(n - 1, c + step));
    }

    function selectUnit(idx) {
      state.unit = clampUnit(idx, state.layer.grid);
      writeAddress();
      showUnit();
      selectionChanged();
    }

    function writeAddress() {
      if (state.layer) address.write({ layer: state.layer.name, unit: state.unit, channel: state.channel, pixel: state.pixel });
    }
    function applyAddress() {  // what the address says, checked: a wrong part falls back to the default
      const h = address.read();
      const [ih, iw] = state.info.input_size.slice(1);
      state.pixel = h.pixel && h.pixel.length === 2 && h.pixel[0] >= 0 && h.pixel[0] < ih && h.pixel[1] >= 0 && h.pixel[1] < iw
        ? h.pixel : null;
      const name = h.layer && state.info.layers.some((r) => r.name === h.layer) ? h.layer : state.info.default_layer;
      state.channel = h.channel === undefined ? null : h.channel;  // checked against the layer by selectLayer
      const r = state.info.layers.find((x) => x.name === name);
      selectLayer(name, false, h.unit && h.unit.length === r.grid.length ? h.unit : null);
    }

    // -- drawing ----------------------------------------------------------------------------
    function layoutGrid() {
      const [rows, cols] = gridDims(state.layer.grid);
      state.rows = rows; state.cols = cols;
      state.cell = Math.max(1, Math.min(32, Math.floor(VIEW / Math.max(rows, cols))));
      const c = $("grid");
      c.width = cols * state.cell; c.height = rows * state.cell;
      c.style.width = c.width + "px"; c.style.height = c.height + "px";
      c.dataset.cell = state.cell;
      state.pf = null;
      drawGrid();
    }
    function unitAt(rowcol) {  // display (row, col) -> the layer's own index (null: no unit there)
      const g = state.layer.grid;
      if (g.length === 2) return rowcol;
      if (g.length === 1) { const i = rowcol[0] * state.cols + rowcol[1]; return i < g[0] ? [i] : null; }
      return [];
    }
    function rowcolOf(idx) {
      const g = state.layer.grid;
      return g.length === 2 ? idx : g.length === 1 ? [Math.floor(idx[0] / state.cols), idx[0] % state.cols] : [0, 0];
    }
    function outline(ctx, x, y, w, h, t, colour) {
      ctx.fillStyle = colour;
      t = Math.max(1, Math.min(t, Math.floor(w / 2), Math.floor(h / 2)));
      ctx.fillRect(x, y, w, t); ctx.fillRect(x, y + h - t, w, t);
      ctx.fillRect(x, y, t, h); ctx.fillRect(x + w - t, y, t, h);
    }
    function drawGrid() {
      const c = $("grid"), ctx = c.getContext("2d"), s = state.cell;
      ctx.fillStyle = "#eeeeee";
      ctx.fillRect(0, 0, c.width, c.height);
      if (state.pf) {
        ctx.fillStyle = PF;
        const g = state.layer.grid;
        for (let f = 0; f < state.pf.length; f++) {
          if (!state.pf[f]) continue;
          const [r, col] = rowcolOf(g.length ? unflat(f, g) : []);
          ctx.fillRect(col * s, r * s, s, s);
        }
      }
      if (s >= 6) {
        ctx.fillStyle = "#d4d4d4";
        for (let i = 0; i <= state.rows; i++) ctx.fillRect(0, i * s, c.width, 1);
        for (let j = 0; j <= state.cols; j++) ctx.fillRect(j * s, 0, 1, c.height);
      }
      const t = Math.max(1, Math.floor(s / 6));
      if (state.hover) { const [r, col] = rowcolOf(state.hover); outline(ctx, col * s, r * s, s, s, t, "#0077bb"); }
      if (state.unit) { const [r, col] = rowcolOf(state.unit); outline(ctx, col * s, r * s, s, s, t, BOX); }
    }

    function makeBase(img) {
      const [h, w] = state.info.input_size.slice(1);
      state.scale = Math.max(1, Math.floor(VIEW / Math.max(h, w)));
      const base = document.createElement("canvas");
      base.width = w; base.height = h;
      const ctx = base.getContext("2d");
      if (img) ctx.drawImage(img, 0, 0, w, h);
      else {  // the blank input: a light grid every 16 pixels
        ctx.fillStyle = "#f6f6f6"; ctx.fillRect(0, 0, w, h);
        ctx.fillStyle = "#dcdcdc";
        for (let y = 0; y < h; y += 16) ctx.fillRect(0, y, w, 1);
        for (let x = 0; x < w; x += 16) ctx.fillRect(x, 0, 1, h);
      }
      state.base = base;
      const c = $("image");
      c.width = w * state.scale; c.height = h * state.scale;
      c.style.width = c.width + "px"; c.style.height = c.height + "px";
      c.dataset.scale = state.scale;
    }
    function drawImage() {
      const c = $("image"), ctx = c.getContext("2d"), s = state.scale;
      const [h, w] = state.info.input_size.slice(1);
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(state.base, 0, 0, w * s, h * s);
      if (state.heat) ctx.drawImage(state.heat, 0, 0, w * s, h * s);
      const u = state.shown;
      if (u) {
        const layer = document.createElement("canvas");
        layer.width = w; layer.height = h;
        const lc = layer.getContext("2d"), data = lc.createImageData(w, h);
        // over a heat map, only the field's outline: a fill would hide the heat under it
        const edgeOnly = !!state.heat;
        c.dataset.mask = edgeOnly ? "outline" : "fill";
        const inside = (y, x) => y >= 0 && y < h && x >= 0 && x < w && u.mask[y * w + x];
        for (let i = 0; i < u.mask.length; i++) {
          if (!u.mask[i]) continue;
          if (!edgeOnly) { data.data.set(MASK_RGBA, i * 4); continue; }
          const y = Math.floor(i / w), x = i % w;
          if (!(inside(y - 1, x) && inside(y + 1, x) && inside(y, x - 1) && inside(y, x + 1))) {
            data.data.set(MASK_EDGE_RGBA, i * 4);
          }
        }
        lc.putImageData(data, 0, 0);
        ctx.drawImage(layer, 0, 0, w * s, h * s);
      }
      if (state.pixel) {
        const [py, px] = state.pixel;
        outline(ctx, px * s - 3, py * s - 3, s + 6, s + 6, 2, PF);
      }
      if (u && u.support_size > 0) {
        const [[y0, y1], [x0, x1]] = u.box;
        outline(ctx, x0 * s, y0 * s, (x1 - x0) * s, (y1 - y0) * s, 2, BOX);
      }
    }

    function showNumbers(u) {
      const r = state.layer, dl = $("numbers");
      const span = (b) => b.map(([a, z]) => (a === null ? "none" : `[${a}, ${z})`)).join(" x ");
      const rows = [
        ["layer", `${r.name} (${r.op})`],
        ["grid", gridText(r.grid)],
        ["unit", u.unit.length ? u.unit.join(", ") : "the only one"],
        ...(hasChannels(r) ? [["channel", channelText(r, u.channel)]] : []),
        ["box", span(u.box) + (JSON.stringify(u.box) !== JSON.stringify(u.unclipped_box) ? "  (clipped)" : "")],
        ["unclipped", span(u.unclipped_box)],
        ["centre", u.center.map((v) => (v === null ? "-" : v)).join(", ")],
        ["support", u.support_size + " pixels"],
        ["layer RF", r.global ? `global (every unit sees the whole input)` : `${fmt(r.rf_size)}, stride ${fmt(r.stride)}, start ${fmt(r.start)}`],
      ];
      if (r.global) {
        rows.push(["global", "via " + r.global_via[0]]);
        if (known(r.local_rf_size)) rows.push(["local RF", `${fmt(r.local_rf_size)}, stride ${fmt(r.local_stride)}, start ${fmt(r.local_start)}`]);
      }
      const f = flags(r);
      if (f) rows.push(["flags", f]);
      dl.replaceChildren(...rows.flatMap(([k, v]) => {
        const dt = document.createElement("dt"), dd = document.createElement("dd");
        dt.textContent = k; dd.textContent = v;
        return [dt, dd];
      }));
      dl.dataset.layer = r.name;
      dl.dataset.unit = u.unit.join(",");
      dl.dataset.channel = u.channel === null ? "" : u.channel;
      dl.dataset.hover = state.hover ? "1" : "";
    }

    function channelText(r, c) {
      if (c === null) return `all ${r.channels} (the union)` + (r.rf_size_by_channel ? "; the field varies by channel" : "");
      const g = groupOf(r, c);
      return `${c} of ${r.channels}: RF ${fmt(g.rf_size)}, stride ${fmt(g.stride)}, start ${fmt(g.start)}` +
        (r.channel_groups ? ` (group ${channelSpan(g)})` : "");
    }

    async function showUnit() {
      const idx = state.hover || state.unit;
      if (!idx) return;
      const token = ++state.token, layer = state.layer.name;
      try {
        const u = await source.unit(layer, idx, state.channel);
        if (token !== state.token) return;
        state.shown = u;
        showNumbers(u);
        drawImage();
        drawGrid();
        status("");
      } catch (e) { status(e.message); }
    }

    async function showProjective() {
      const token = ++state.pfToken;
      if (!state.pixel) { state.pf = null; drawGrid(); drawImage(); delete $("grid").dataset.pf; return; }
      const layer = state.layer.name, pixel = state.pixel.slice(), channel = state.channel;
      try {
        const pf = await source.projective(layer, pixel, channel);
        if (token !== state.pfToken) return;
        state.pf = pf;
        drawGrid();
        drawImage();
        let n = 0;
        for (const v of pf) n += v;
        $("grid").dataset.pf = `${layer}|${pixel.join(",")}|${n}|${channel === null ? "all" : channel}`;
        $("imagecap").textContent = `input: pixel (${pixel.join(", ")}) is seen by ${n} unit${n === 1 ? "" : "s"} of ${layer}` +
          (channel === null ? "" : `, channel ${channel}`);
      } catch (e) { status(e.message); }
    }

    // -- gradient RF and ERF jobs (server only) ----------------------------------------------
    let heatTimer = null;
    function selectionChanged() {
      state.heat = null;
      clearTimeout(heatTimer);
      if ($("grad").checked || $("erf").checked) heatTimer = setTimeout(startHeat, 250);
      else stopJob();
    }
    async function stopJob() {
      const job = state.job;
      state.job = null;
      $("jobline").hidden = true;
      if (job && (job.state === "running" || job.state === "queued")) {
        try { await fetchJSON("api/job/cancel?id=" + job.id, { method: "POST" }); } catch (e) { /* gone already */ }
      }
    }
    async function startHeat() {
      await stopJob();
      state.heat = null;
      drawImage();
      const kind = $("grad").checked ? "gradient" : $("erf").checked ? "erf" : null;
      if (!kind || !state.unit) { $("heatinfo").textContent = ""; return; }
      const q = `kind=${kind}&layer=${encodeURIComponent(state.layer.name)}&unit=${state.unit.join(",")}` +
                channelParam(state.channel) +
                (kind === "erf" ? "&inputs=" + Math.max(1, parseInt($("erfn").value, 10) || 16) : "");
      try {
        state.job = await fetchJSON("api/job?" + q, { method: "POST" });
      } catch (e) { $("heatinfo").textContent = e.message; return; }
      $("jobline").hidden = false;
      $("heatinfo").textContent = kind === "erf" ? "computing the ERF…" : "computing the gradient…";
      $("heat").dataset.state = "running";
      poll(state.job.id);
    }
    async function poll(id) {
      if (!state.job || state.job.id !== id) return;
      let job;
      try { job = await fetchJSON("api/job?id=" + id); } catch (e) { $("heatinfo").textContent = e.message; return; }
      if (!state.job || state.job.id !== id) return;
      state.job = job;
      const bar = $("progress");
      if (job.total) { bar.max = job.total; bar.value = job.done; } else bar.removeAttribute("value");
      if (job.state === "running" || job.state === "queued") { setTimeout(() => poll(id), 300); return; }
      $("jobline").hidden = true;
      $("heat").dataset.state = job.state;
      if (job.state === "done") {
        const img = new Image();
        img.onload = () => {
          if (!state.job || state.job.id !== id) return;
          state.heat = img;
          drawImage();
          $("heat").dataset.shown = id;
        };
        img.src = "api/heat.png?id=" + id;
        const n = job.numbers, of = job.channel === null ? "" : `channel ${job.channel}, `;
        $("heatinfo").textContent = of + (job.kind === "gradient"
          ? `gradient at ${n.input}: ${n.nonzero} of ${n.support} support pixels nonzero (log scale)\n` + n.explanation.join("\n")
          : `ERF over ${n.inputs} inputs (linear scale): σ ${n.sigma.join(" x ")} px, ` +
            `centre of mass ${n.center_of_mass.join(", ")}, 4σ/RF ${n.trf_ratio.join(" x ")}`);
      } else $("heatinfo").textContent = job.state === "cancelled" ? "cancelled" : job.message;
    }
    function heatToggle(which) {
      const other = which === "grad" ? "erf" : "grad";
      if ($(which).checked) $(other).checked = false;
      selectionChanged();
    }

    // -- events -----------------------------------------------------------------------------
    function gridEvent(ev) {
      const s = state.cell, r = Math.floor(ev.offsetY / s), c = Math.floor(ev.offsetX / s);
      if (r < 0 || c < 0 || r >= state.rows || c >= state.cols) return null;
      return unitAt([r, c]);
    }
    function wire() {
      const grid = $("grid"), image = $("image");
      grid.addEventListener("mousemove", (ev) => {
        const u = gridEvent(ev);
        if (!u || (state.hover && u.join() === state.hover.join())) return;
        state.hover = u;
        showUnit();
      });
      grid.addEventListener("mouseleave", () => { state.hover = null; showUnit(); drawGrid(); });
      grid.addEventListener("click", (ev) => { const u = gridEvent(ev); if (u) { state.hover = null; selectUnit(u); } });
      image.addEventListener("click", (ev) => {
        const s = state.scale, [h, w] = state.info.input_size.slice(1);
        const p = [Math.floor(ev.offsetY / s), Math.floor(ev.offsetX / s)];
        if (p[0] < 0 || p[1] < 0 || p[0] >= h || p[1] >= w) return;
        state.pixel = p;
        writeAddress();
        showProjective();
      });
      $("channel").addEventListener("input", () => channelTyped(false));
      $("channel").addEventListener("change", () => channelTyped(true));
      $("grad").addEventListener("change", () => heatToggle("grad"));
      $("erf").addEventListener("change", () => heatToggle("erf"));
      $("cancel").addEventListener("click", async () => {
        clearTimeout(heatTimer);
        await stopJob();
        $("heat").dataset.state = "cancelled";
        $("heatinfo").textContent = "cancelled";
      });
      keys.addEventListener("keydown", onKey);
    }
    function onKey(ev) {
      const search = $("search");
      if (document.activeElement === search) {
        if (ev.key === "Enter") { const v = visibleLayers(); if (v.length) selectLayer(v[0], true); search.blur(); }
        else if (ev.key === "Escape") search.blur();
        return;
      }
      const focused = document.activeElement;
      if (focused && focused.tagName === "INPUT" && focused.type === "number") {  // typing: Enter or Esc leaves the box
        if (ev.key === "Enter" || ev.key === "Escape") focused.blur();
        return;
      }
      const moves = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
      if (moves[ev.key] && state.unit && state.layer.grid.length) {
        const [dr, dc] = moves[ev.key];
        const rc = rowcolOf(state.unit);
        const next = unitAt([Math.max(0, Math.min(state.rows - 1, rc[0] + dr)), Math.max(0, Math.min(state.cols - 1, rc[1] + dc))]);
        if (next) selectUnit(next);
      } else if (ev.key === "]" || ev.key === "PageDown" || ev.key === "[" || ev.key === "PageUp") {
        const names = visibleLayers(), i = names.indexOf(state.layer.name);
        const step = ev.key === "]" || ev.key === "PageDown" ? 1 : -1;
        const j = i < 0 ? 0 : Math.max(0, Math.min(names.length - 1, i + step));
        if (names.length && names[j] !== state.layer.name) selectLayer(names[j], true);
      } else if ([",", ".", "<", ">"].includes(ev.key) && hasChannels(state.layer)) {
        stepChannel(ev.key === "." || ev.key === ">" ? 1 : -1);
      } else if (ev.key === "/") search.focus();
      else if (ev.key === "Escape") { state.pixel = null; writeAddress(); showProjective(); $("imagecap").textContent = "input"; }
      else if ((ev.key === "g" || ev.key === "e") && source.live && state.info.gradients) {
        const box = ev.key === "g" ? "grad" : "erf";
        $(box).checked = !$(box).checked;
        heatToggle(box);
      } else return;
      ev.preventDefault();
    }

    async function start() {
      try {
        state.info = await source.meta();
      } catch (e) { status("cannot load the model: " + e.message); return; }
      const i = state.info;
      $("model").textContent = `${i.model} at ${i.input_size.join("x")}` + (i.image ? `, on ${i.image} (${i.transform})` : ", blank input") +
        (i.weights ? `; ${i.weights}` : "");
      if (!i.gradients) {
        for (const id of ["grad", "erf", "erfn"]) $(id).disabled = true;
        $("heatinfo").textContent = source.live ? "gradients need a model with weights"
          : "gradient RF and ERF need the server: run rflens view without --html";
      }
      buildTable();
      const url = source.imageURL();
      let img = null;
      if (url) {
        img = new Image();
        await new Promise((ok, fail) => { img.onload = ok; img.onerror = () => fail(new Error("cannot load the image")); img.src = url; })
          .catch((e) => { status(e.message); img = null; });
      }
      makeBase(img);
      wire();
      applyAddress();
      await Promise.resolve();
      root.dataset.ready = "1";
    }
    return { state, source, ready: start(), apply: applyAddress };
  }

  return { view, RemoteSource, StaticSource, fetchJSON };
})();
