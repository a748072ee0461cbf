// The flame graph: an icicle (callers above callees) drawn on a canvas.
// Only frames at least MIN_PX wide are laid out, so a profile of 100,000
// stacks draws as fast as one of a hundred.

var ROW = 18, MIN_PX = 1, FONT = "12px 'DejaVu Sans Mono', Menlo, Consolas, monospace";

function Flame(host, data, onChange) {
  this.data = data;
  this.onChange = onChange || function () {};
  this.root = el("div", "flame");
  this.crumbs = el("div", "crumbs");
  this.canvas = el("canvas", "flame-canvas");
  this.canvas.setAttribute("aria-label", "flame graph");
  this.tip = el("div", "tooltip");
  this.tip.hidden = true;
  this.empty = el("div", "empty", "Nothing to show: no memory is held here.");
  this.empty.hidden = true;
  this.root.appendChild(this.crumbs);
  this.root.appendChild(this.empty);
  this.root.appendChild(this.canvas);
  host.appendChild(this.root);
  document.body.appendChild(this.tip);
  this.ctx = this.canvas.getContext("2d");
  this.ctx.font = FONT;
  this.charW = this.ctx.measureText("M").width || 7;
  this.view = null; this.focus = 0; this.matches = null; this.query = "";
  this.colors = []; this.lastDrawMs = 0;
  this.cap = 0; this.grow(4096); this.nRects = 0;
  var self = this;
  this.canvas.addEventListener("mousemove", function (e) { self.hover(e); });
  this.canvas.addEventListener("mouseleave", function () { self.tip.hidden = true; });
  this.canvas.addEventListener("click", function (e) {
    var node = self.hitEvent(e);
    if (node >= 0 && node !== self.focus) self.zoom(node);
  });
  onWidthChange(this.root, function () { if (self.view) self.draw(); });
}

Flame.prototype.grow = function (cap) {
  var old = this.cap ? this : null;
  var next = { rx: new Float64Array(cap), rw: new Float64Array(cap), rrow: new Int32Array(cap), rnode: new Int32Array(cap) };
  if (old) {
    next.rx.set(this.rx); next.rw.set(this.rw); next.rrow.set(this.rrow); next.rnode.set(this.rnode);
  }
  this.rx = next.rx; this.rw = next.rw; this.rrow = next.rrow; this.rnode = next.rnode; this.cap = cap;
};

// Shows a new tree; keepZoom follows the zoomed frames into it.
Flame.prototype.setView = function (view, keepZoom) {
  var frames = [];
  if (keepZoom && this.view) {
    var path = this.view.path(this.focus);
    for (var i = 1; i < path.length; i++) frames.push(this.view.frame[path[i]]);
  }
  this.view = view;
  this.focus = frames.length ? view.follow(frames) : 0;
  this.updateSearch();
  this.draw();
};

Flame.prototype.zoom = function (node) {
  this.focus = node;
  this.draw();
  this.onChange("zoom");
};

// Frames whose function or file holds the query (any case) are marked.
Flame.prototype.search = function (query) {
  this.query = query;
  this.updateSearch();
  this.draw();
  this.onChange("search");
};

Flame.prototype.updateSearch = function () {
  var q = this.query.trim().toLowerCase(), data = this.data;
  if (!q) { this.matches = null; this.matched = null; return; }
  var matches = new Uint8Array(data.fn.length);
  for (var f = 0; f < data.fn.length; f++) {
    if (data.fn[f].toLowerCase().indexOf(q) >= 0 || data.file[f].toLowerCase().indexOf(q) >= 0) matches[f] = 1;
  }
  this.matches = matches;
  this.matched = this.view ? this.view.matchedTotals(matches) : null;
};

Flame.prototype.layout = function () {
  var v = this.view, width = this.width;
  this.nRects = 0;
  this.maxRow = 0;
  if (!v || v.w[this.focus] <= 0) return;
  var path = v.path(this.focus);
  for (var i = 0; i < path.length; i++) this.addRect(path[i], 0, width, i);
  var scale = width / v.w[this.focus], nodes = [this.focus], xs = [0];
  while (nodes.length) {
    var node = nodes.pop(), x = xs.pop();
    v.children(node);
    for (var c = v.childStart[node]; c < v.childStart[node + 1]; c++) {
      var child = v.childList[c], w = v.w[child] * scale;
      if (w < MIN_PX) break;  // widest first: the rest are narrower
      this.addRect(child, x, w, v.depth[child]);
      nodes.push(child); xs.push(x);
      x += w;
    }
  }
};

Flame.prototype.addRect = function (node, x, w, row) {
  if (this.nRects === this.cap) this.grow(this.cap * 2);
  var i = this.nRects++;
  this.rx[i] = x; this.rw[i] = w; this.rrow[i] = row; this.rnode[i] = node;
  if (row > this.maxRow) this.maxRow = row;
};

Flame.prototype.frameColor = function (f) {
  var color = this.colors[f];
  if (color) return color;
  var data = this.data, h = hashString(data.fn[f] + "\u0000" + data.file[f]), kind = data.kind[f];
  if (kind === KIND_NATIVE) color = "hsl(" + (195 + h % 35) + ",55%," + (62 + (h >>> 8) % 12) + "%)";
  else if (kind === KIND_HIDDEN) color = "hsl(0,0%," + (76 + (h >>> 8) % 8) + "%)";
  else if (kind === KIND_THREAD) color = "hsl(140,30%,70%)";
  else if (kind === KIND_OTHER) color = "hsl(40,8%,78%)";
  else color = "hsl(" + (8 + h % 42) + ",78%," + (58 + (h >>> 8) % 12) + "%)";
  this.colors[f] = color;
  return color;
};

// Growth red, shrinkage blue; the stronger the colour, the larger the
// change against the frame's own size (a frame that is all new or all gone
// is fully saturated, one that changed by 1% is nearly grey).
function diffColor(after, before) {
  var change = after - before, base = Math.max(after, before);
  if (!change || !base) return "hsl(0,0%,86%)";
  var r = Math.sqrt(Math.abs(change) / base);
  var hue = change > 0 ? 0 : 215;
  return "hsl(" + hue + "," + Math.round(30 + 60 * r) + "%," + Math.round(88 - 30 * r) + "%)";
}

Flame.prototype.nodeColor = function (node) {
  var v = this.view, f = v.frame[node];
  if (this.matches && (f < 0 || !this.matches[f])) return "hsl(0,0%,90%)";
  if (this.data.isDiff) return diffColor(v.bytes[node], v.before[node]);
  if (f < 0) return "hsl(40,8%,80%)";
  return this.frameColor(f);
};

Flame.prototype.label = function (node) {
  var v = this.view, f = v.frame[node];
  if (f < 0) return "all: " + fmtBytes(v.bytes[0]) + (this.data.isDiff ? " (" + fmtSigned(v.bytes[0] - v.before[0]) + ")" : "");
  return this.data.fn[f];
};

Flame.prototype.draw = function () {
  var start = performance.now();
  var dpr = window.devicePixelRatio || 1;
  this.width = Math.max(this.root.clientWidth, 200);
  this.layout();
  var height = (this.maxRow + 1) * ROW + 1;
  this.canvas.style.width = this.width + "px";
  this.canvas.style.height = height + "px";
  this.canvas.width = Math.round(this.width * dpr);
  this.canvas.height = Math.round(height * dpr);
  var ctx = this.ctx, v = this.view;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.font = FONT;
  ctx.textBaseline = "middle";
  var focusRow = v ? v.depth[this.focus] : 0, charW = this.charW;
  for (var i = 0; i < this.nRects; i++) {
    var node = this.rnode[i], x = this.rx[i], w = this.rw[i], y = this.rrow[i] * ROW;
    ctx.globalAlpha = this.rrow[i] < focusRow ? 0.55 : 1;
    ctx.fillStyle = this.nodeColor(node);
    ctx.fillRect(x, y, w > 2 ? w - 0.5 : w, ROW - 1);
    var room = Math.floor((w - 6) / charW);
    if (room >= 3) {
      var text = this.label(node);
      if (text.length > room) text = text.slice(0, room - 1) + "\u2026";
      ctx.fillStyle = this.matches && !this.matches[v.frame[node]] ? "#999" : "#1d1d1d";
      ctx.fillText(text, x + 3, y + ROW / 2);
    }
  }
  ctx.globalAlpha = 1;
  this.empty.hidden = this.nRects > 0;
  this.drawCrumbs();
  this.lastDrawMs = performance.now() - start;
};

Flame.prototype.drawCrumbs = function () {
  clear(this.crumbs);
  if (!this.view) return;
  var path = this.view.path(this.focus), self = this;
  for (var i = 0; i < path.length; i++) {
    if (i) this.crumbs.appendChild(el("span", "crumb-sep", "\u203a"));
    var node = path[i], last = i === path.length - 1;
    var crumb = el(last ? "span" : "button", last ? "crumb current" : "crumb", i ? this.data.fn[this.view.frame[node]] : "all");
    if (!last) crumb.addEventListener("click", (function (n) { return function () { self.zoom(n); }; }(node)));
    this.crumbs.appendChild(crumb);
  }
};

Flame.prototype.hitEvent = function (e) {
  var box = this.canvas.getBoundingClientRect();
  return this.hit(e.clientX - box.left, e.clientY - box.top);
};

Flame.prototype.hit = function (x, y) {
  var row = Math.floor(y / ROW);
  for (var i = 0; i < this.nRects; i++) {
    if (this.rrow[i] === row && x >= this.rx[i] && x < this.rx[i] + this.rw[i]) return this.rnode[i];
  }
  return -1;
};

Flame.prototype.hover = function (e) {
  var node = this.hitEvent(e);
  this.canvas.style.cursor = node >= 0 ? "pointer" : "default";
  if (node < 0) { this.tip.hidden = true; return; }
  this.fillTip(node);
  this.tip.hidden = false;
  var pad = 14, tw = this.tip.offsetWidth, th = this.tip.offsetHeight;
  var left = e.clientX + pad, top = e.clientY + pad;
  if (left + tw > window.innerWidth - 4) left = Math.max(4, e.clientX - pad - tw);
  if (top + th > window.innerHeight - 4) top = Math.max(4, e.clientY - pad - th);
  this.tip.style.left = left + "px";
  this.tip.style.top = top + "px";
};

// What the tooltip says about a node, as [label, value] rows.
Flame.prototype.describe = function (node) {
  var v = this.view, data = this.data, f = v.frame[node], total = v.bytes[0];
  var rows = [];
  if (data.isDiff) {
    var change = v.bytes[node] - v.before[node];
    rows.push(["before", fmtBytes(v.before[node]) + " (" + fmtInt(v.before[node]) + " B)"]);
    rows.push(["after", fmtBytes(v.bytes[node]) + " (" + fmtInt(v.bytes[node]) + " B)"]);
    rows.push(["change", fmtSigned(change) + " (" + fmtSignedInt(change) + " B" +
               (v.before[node] ? ", " + (change > 0 ? "+" : "") + fmtPct(change, v.before[node]) : "") + ")"]);
    rows.push(["blocks", fmtInt(v.beforeBlocks[node]) + " \u2192 " + fmtInt(v.blocks[node])]);
  } else {
    rows.push(["bytes", fmtBytes(v.bytes[node]) + " (" + fmtInt(v.bytes[node]) + " B)"]);
    if (!v.blocksUnknown) rows.push(["blocks", fmtInt(v.blocks[node])]);
    rows.push(["share", fmtPct(v.bytes[node], total) + " of " + fmtBytes(total)]);
    if (node > 0 && v.selfBytes[node]) rows.push(["own", fmtBytes(v.selfBytes[node]) + " allocated in this frame itself"]);
  }
  var frame = data.frame(f);
  return { frame: frame, location: frameLocation(frame), source: data.sourceLine(f), rows: rows };
};

Flame.prototype.fillTip = function (node) {
  var d = this.describe(node), tip = this.tip;
  clear(tip);
  tip.appendChild(el("div", "tip-fn", node === 0 ? "all" : d.frame.function));
  var where = d.location;
  if (d.frame.native) where += (where ? "  " : "") + "[native]";
  if (d.frame.hidden) where += (where ? "  " : "") + "[import machinery / heapscope]";
  if (d.frame.kind === KIND_THREAD) where = "thread";
  if (where) tip.appendChild(el("div", "tip-loc", where));
  if (d.source) tip.appendChild(el("code", "tip-src", d.source));
  var table = el("table", "tip-rows");
  for (var i = 0; i < d.rows.length; i++) {
    var tr = el("tr");
    tr.appendChild(el("th", null, d.rows[i][0]));
    tr.appendChild(el("td", null, d.rows[i][1]));
    table.appendChild(tr);
  }
  tip.appendChild(table);
};

// What is drawn, with the values the view computed (the test hook).
Flame.prototype.drawn = function () {
  var out = [], v = this.view, data = this.data;
  for (var i = 0; i < this.nRects; i++) {
    var node = this.rnode[i], f = v.frame[node], frame = data.frame(f);
    out.push({ node: node, function: node === 0 ? "all" : frame.function, filename: frame.filename,
               lineno: frame.lineno, native: frame.native, hidden: frame.hidden,
               bytes: v.bytes[node], blocks: v.blocks[node], before: v.before[node],
               beforeBlocks: v.beforeBlocks[node], selfBytes: v.selfBytes[node],
               matched: !!(this.matches && f >= 0 && this.matches[f]),
               x: this.rx[i], y: this.rrow[i] * ROW, width: this.rw[i], height: ROW - 1, depth: this.rrow[i] });
  }
  return out;
};
