// The temporal chart: resident size and heap over time. A click picks a
// moment, a drag picks a window; onSelect(t0, t1) gets the times (t0 == t1
// for a click).

var CHART_H = 190, PAD_L = 74, PAD_R = 30, PAD_T = 12, PAD_B = 24;
var RSS_COLOR = "#3b6fb6", HEAP_COLOR = "#e0761f", MOMENT_COLOR = "#b3122e";
var PROCESS_COLORS = ["#2a9d5c", "#8e44ad", "#c0392b", "#16a5a5", "#7f8c1a", "#d35c9a", "#555555"];

// 1, 2, 2.5 or 5 times a power of ten, at least x.
function niceStep(x) {
  if (!(x > 0)) return 1;
  var p = Math.pow(10, Math.floor(Math.log10(x))), steps = [1, 2, 2.5, 5, 10];
  for (var i = 0; i < steps.length; i++) if (steps[i] * p >= x) return steps[i] * p;
  return 10 * p;
}

function Chart(host, doc, temporal, onSelect) {
  this.onSelect = onSelect;
  this.temporal = temporal;
  var line = doc.timeline;
  this.series = [];
  if (line && line.t.length) {
    this.t = line.t;
    this.series.push({ name: "resident size (rss)", color: RSS_COLOR, values: line.rss });
    this.series.push({ name: line.processes ? "heap, all processes" : "heap", color: HEAP_COLOR, values: line.heap });
    // Merged captures: each process's heap on its own times.
    var processes = line.processes || [];
    for (var p = 0; p < processes.length; p++) {
      this.series.push({ name: processes[p].name, color: PROCESS_COLORS[p % PROCESS_COLORS.length],
                         values: processes[p].heap, t: processes[p].t });
    }
  } else {
    this.t = temporal.t;
    this.series.push({ name: "heap", color: HEAP_COLOR, values: temporal.heap });
  }
  var times = this.t.concat(temporal.t);
  for (var q = 0; q < this.series.length; q++) if (this.series[q].t) times = times.concat(this.series[q].t);
  this.tMin = times.length ? Math.min.apply(null, times) : 0;
  this.tMax = times.length ? Math.max.apply(null, times) : 1;
  if (this.tMax <= this.tMin) this.tMax = this.tMin + 1;
  this.yMax = 1;
  for (var s = 0; s < this.series.length; s++) {
    for (var i = 0; i < this.series[s].values.length; i++) this.yMax = Math.max(this.yMax, this.series[s].values[i]);
  }
  this.selection = null; this.moment = -1; this.drag = null;
  this.root = el("div", "chart");
  var legend = el("div", "chart-legend");
  for (var l = 0; l < this.series.length; l++) {
    var item = el("span", "legend-item");
    var swatch = el("span", "swatch line");
    swatch.style.background = this.series[l].color;
    item.appendChild(swatch);
    item.appendChild(document.createTextNode(this.series[l].name));
    legend.appendChild(item);
  }
  this.readout = el("span", "chart-readout", "Click for the heap at a moment; drag across a window for its highest heap.");
  legend.appendChild(this.readout);
  this.canvas = el("canvas", "chart-canvas");
  this.canvas.setAttribute("aria-label", "memory over time");
  this.root.appendChild(legend);
  this.root.appendChild(this.canvas);
  host.appendChild(this.root);
  this.ctx = this.canvas.getContext("2d");
  var self = this;
  this.canvas.addEventListener("mousedown", function (e) {
    var x = self.localX(e);
    self.drag = { x0: x, x1: x };
    e.preventDefault();
  });
  window.addEventListener("mousemove", function (e) {
    var x = self.localX(e);
    if (self.drag) { self.drag.x1 = x; self.draw(); return; }
    if (e.target === self.canvas) self.showReadout(x);
  });
  window.addEventListener("mouseup", function () {
    if (!self.drag) return;
    var d = self.drag;
    self.drag = null;
    var a = self.timeAt(Math.min(d.x0, d.x1)), b = self.timeAt(Math.max(d.x0, d.x1));
    if (Math.abs(d.x1 - d.x0) < 4) a = b = self.timeAt(d.x1);
    self.onSelect(a, b);
  });
  onWidthChange(this.root, function () { self.draw(); });
}

Chart.prototype.localX = function (e) {
  return e.clientX - this.canvas.getBoundingClientRect().left;
};

Chart.prototype.plotWidth = function () { return Math.max(this.width - PAD_L - PAD_R, 10); };

Chart.prototype.xOf = function (t) {
  return PAD_L + (t - this.tMin) / (this.tMax - this.tMin) * this.plotWidth();
};

Chart.prototype.timeAt = function (x) {
  var f = Math.min(Math.max((x - PAD_L) / this.plotWidth(), 0), 1);
  return this.tMin + f * (this.tMax - this.tMin);
};

Chart.prototype.yOf = function (v) {
  return PAD_T + (1 - v / this.yMax) * (CHART_H - PAD_T - PAD_B);
};

Chart.prototype.showReadout = function (x) {
  var t = this.timeAt(x), best = 0;
  for (var i = 1; i < this.t.length; i++) if (Math.abs(this.t[i] - t) < Math.abs(this.t[best] - t)) best = i;
  if (!this.t.length) return;
  var parts = [fmtSeconds(this.t[best])];
  for (var s = 0; s < this.series.length; s++) {
    if (this.series[s].t) continue;  // a process's own line: its times differ
    parts.push(this.series[s].name.split(" ")[0] + " " + fmtBytes(this.series[s].values[best]));
  }
  this.readout.textContent = parts.join(", ");
};

Chart.prototype.setState = function (selection, moment) {
  this.selection = selection; this.moment = moment;
  this.draw();
};

Chart.prototype.draw = function () {
  var dpr = window.devicePixelRatio || 1;
  this.width = Math.max(this.root.clientWidth, 300);
  this.canvas.style.width = this.width + "px";
  this.canvas.style.height = CHART_H + "px";
  this.canvas.width = Math.round(this.width * dpr);
  this.canvas.height = Math.round(CHART_H * dpr);
  var ctx = this.ctx, bottom = CHART_H - PAD_B, right = this.width - PAD_R;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, this.width, CHART_H);
  ctx.font = "11px 'DejaVu Sans', Arial, sans-serif";
  ctx.fillStyle = "#fafafa";
  ctx.fillRect(PAD_L, PAD_T, right - PAD_L, bottom - PAD_T);
  // Axes: bytes on the left, seconds below.
  var unit = 1;
  while (this.yMax / unit >= 1024 && unit < Math.pow(1024, 4)) unit *= 1024;
  var step = niceStep(this.yMax / unit / 4) * unit;
  ctx.strokeStyle = "#e2e2e2"; ctx.fillStyle = "#555"; ctx.lineWidth = 1;
  ctx.textAlign = "right"; ctx.textBaseline = "middle";
  for (var v = 0; v <= this.yMax * 1.0001; v += step) {
    var y = Math.round(this.yOf(v)) + 0.5;
    ctx.beginPath(); ctx.moveTo(PAD_L, y); ctx.lineTo(right, y); ctx.stroke();
    ctx.fillText(fmtBytes(v), PAD_L - 6, y);
  }
  var tStep = niceStep((this.tMax - this.tMin) / Math.max(Math.floor(this.plotWidth() / 90), 1));
  ctx.textAlign = "center"; ctx.textBaseline = "top";
  for (var t = Math.ceil(this.tMin / tStep) * tStep; t <= this.tMax + 1e-9; t += tStep) {
    var x = Math.round(this.xOf(t)) + 0.5;
    ctx.beginPath(); ctx.moveTo(x, PAD_T); ctx.lineTo(x, bottom); ctx.stroke();
    ctx.fillText(fmtSeconds(t), x, bottom + 5);
  }
  // The window: chosen (selection) or being dragged.
  var win = null;
  if (this.drag) win = [this.timeAt(Math.min(this.drag.x0, this.drag.x1)), this.timeAt(Math.max(this.drag.x0, this.drag.x1))];
  else if (this.selection && this.selection[1] > this.selection[0]) win = this.selection;
  if (win) {
    ctx.fillStyle = "rgba(59,111,182,0.16)";
    ctx.fillRect(this.xOf(win[0]), PAD_T, Math.max(this.xOf(win[1]) - this.xOf(win[0]), 1), bottom - PAD_T);
  }
  // The moments the heap is known at, as ticks on the time axis.
  ctx.strokeStyle = "#999";
  for (var k = 0; k < this.temporal.t.length; k++) {
    var mx = Math.round(this.xOf(this.temporal.t[k])) + 0.5;
    ctx.beginPath(); ctx.moveTo(mx, bottom - 4); ctx.lineTo(mx, bottom); ctx.stroke();
  }
  ctx.lineWidth = 1.8; ctx.lineJoin = "round";
  for (var s = 0; s < this.series.length; s++) {
    var values = this.series[s].values, ts = this.series[s].t || this.t;
    ctx.strokeStyle = this.series[s].color;
    ctx.beginPath();
    for (var i = 0; i < ts.length; i++) {
      var px = this.xOf(ts[i]), py = this.yOf(values[i]);
      if (i) ctx.lineTo(px, py); else ctx.moveTo(px, py);
    }
    ctx.stroke();
  }
  if (this.moment >= 0) {
    var at = this.xOf(this.temporal.t[this.moment]);
    ctx.strokeStyle = MOMENT_COLOR; ctx.lineWidth = 1.5;
    ctx.beginPath(); ctx.moveTo(at, PAD_T); ctx.lineTo(at, bottom); ctx.stroke();
    ctx.fillStyle = MOMENT_COLOR;
    ctx.beginPath(); ctx.arc(at, this.yOf(this.temporal.heap[this.moment]), 4, 0, 2 * Math.PI); ctx.fill();
  }
  ctx.strokeStyle = "#bbb"; ctx.lineWidth = 1;
  ctx.strokeRect(PAD_L + 0.5, PAD_T + 0.5, right - PAD_L, bottom - PAD_T);
};
