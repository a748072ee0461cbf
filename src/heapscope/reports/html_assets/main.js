// The page: header, controls, and the views of its kind (flamegraph,
// temporal, table, diff). window.heapscopeReport is a read-only hook for
// tests and benchmarks: what the page computed and drew.

var TIME_ORIGIN = performance.now();
var options = JSON.parse(document.getElementById("heapscope-options").textContent);
var doc = JSON.parse(document.getElementById("heapscope-data").textContent);
var timings = { parse: performance.now() - TIME_ORIGIN };
var data = new Data(doc);
var app = document.getElementById("app");
var kind = options.kind;
var KIND_TITLES = { flamegraph: "Flame graph", temporal: "Temporal flame graph", table: "Allocations by location",
                    diff: "Differential flame graph" };

function header() {
  var head = el("header", "page-head");
  var top = el("div", "title-row");
  top.appendChild(el("h1", null, doc.title || "heapscope report"));
  top.appendChild(el("span", "badge kind", KIND_TITLES[kind]));
  if (doc.sampled) {
    var badge = el("span", "badge sampled", "sampled: estimates");
    badge.title = "Bytes and blocks are unbiased estimates from a sampled capture (docs/sampling.md).";
    top.appendChild(badge);
  }
  head.appendChild(top);
  if (doc.source) head.appendChild(el("div", "source", doc.source));
  var set = data.samples, bytes = 0, blocks = 0, before = 0, beforeBlocks = 0;
  for (var i = 0; i < set.n; i++) {
    bytes += set.bytes[i]; blocks += set.blocks[i]; before += set.before[i]; beforeBlocks += set.beforeBlocks[i];
  }
  var totals = data.isDiff
    ? "Before " + fmtBytes(before) + " in " + fmtInt(beforeBlocks) + " blocks \u2192 after " + fmtBytes(bytes) + " in " +
      fmtInt(blocks) + " blocks: change " + fmtSigned(bytes - before) + " (" + fmtSignedInt(bytes - before) + " B)"
    : "Total " + fmtBytes(bytes) + " (" + fmtInt(bytes) + " B) in " + fmtInt(blocks) + " blocks";
  head.appendChild(el("div", "totals", totals));
  if (doc.header && doc.header.length) head.appendChild(el("pre", "header-lines", doc.header.join("\n")));
  app.appendChild(head);
}

function labelled(control, text) {
  var label = el("label", "control");
  label.appendChild(control);
  label.appendChild(document.createTextNode(text));
  return label;
}

function legend(items) {
  var box = el("div", "legend");
  for (var i = 0; i < items.length; i++) {
    var item = el("span", "legend-item"), swatch = el("span", "swatch");
    swatch.style.background = items[i][0];
    item.appendChild(swatch);
    item.appendChild(document.createTextNode(items[i][1]));
    box.appendChild(item);
  }
  return box;
}

var flame = null, table = null, chart = null, temporal = null, controls = {};
var state = { threads: options.split_threads ? "split" : "merged", hide: true, inverted: !!options.inverted,
              moment: -1, window: null };

function flameControls() {
  var bar = el("div", "toolbar");
  var select = el("select", "threads");
  select.setAttribute("aria-label", "threads");
  var choices = [["merged", "All threads, merged"], ["split", "All threads, one subtree each"]];
  data.threads.forEach(function (t, i) { choices.push([String(i), "Thread: " + t.name]); });
  choices.forEach(function (c) {
    var option = el("option", null, c[1]);
    option.value = c[0];
    select.appendChild(option);
  });
  select.value = state.threads;
  select.disabled = data.threads.length < 2 && !options.split_threads;
  select.addEventListener("change", function () {
    state.threads = select.value === "merged" || select.value === "split" ? select.value : Number(select.value);
    timed(function () { rebuild(false); });
  });
  var hide = el("input");
  hide.type = "checkbox"; hide.checked = state.hide;
  hide.addEventListener("change", function () { state.hide = hide.checked; timed(function () { rebuild(true); }); });
  var inverted = el("input");
  inverted.type = "checkbox"; inverted.checked = state.inverted;
  inverted.addEventListener("change", function () { state.inverted = inverted.checked; timed(function () { rebuild(false); }); });
  var search = el("input", "search");
  search.type = "search";
  search.placeholder = "Search functions and files";
  search.setAttribute("aria-label", "search frames");
  search.addEventListener("input", function () { timed(function () { flame.search(search.value); }); });
  var reset = el("button", "reset", "Reset zoom");
  reset.title = "Show the whole graph again (Esc)";
  reset.addEventListener("click", function () { flame.zoom(0); });
  var found = el("span", "found");
  found.setAttribute("aria-live", "polite");
  bar.appendChild(select);
  bar.appendChild(labelled(hide, "Hide import machinery and heapscope frames"));
  bar.appendChild(labelled(inverted, "Inverted"));
  bar.appendChild(search);
  bar.appendChild(found);
  bar.appendChild(reset);
  controls.select = select; controls.hide = hide; controls.inverted = inverted;
  controls.search = search; controls.found = found; controls.reset = reset;
  app.appendChild(bar);
  app.appendChild(data.isDiff
    ? legend([["hsl(0,90%,58%)", "grew"], ["hsl(215,90%,58%)", "shrank"], ["hsl(0,0%,86%)", "unchanged"]])
    : legend([["hsl(28,78%,62%)", "Python"], ["hsl(210,55%,66%)", "native"],
              ["hsl(0,0%,79%)", "import machinery / heapscope"], ["hsl(140,30%,70%)", "thread"]]));
}

function showFound() {
  var found = controls.found, m = flame.matched, root = flame.view;
  if (!m) { found.textContent = ""; return; }
  if (!m.bytes && !m.before) { found.textContent = "no frame matches"; return; }
  found.textContent = data.isDiff
    ? "matched " + fmtBytes(m.before) + " \u2192 " + fmtBytes(m.bytes) + ", change " + fmtSigned(m.bytes - m.before)
    : "matched " + fmtBytes(m.bytes) + ", " + fmtPct(m.bytes, root.bytes[0]) + " of " + fmtBytes(root.bytes[0]);
}

function onFlameChange() {
  controls.reset.disabled = flame.focus === 0;
  showFound();
}

function rebuild(keepZoom) {
  var set = state.moment >= 0 ? temporal.samplesAt(state.moment) : data.samples;
  var view = buildView(data, set, { threads: state.moment >= 0 ? "merged" : state.threads, hide: state.hide,
                                    inverted: state.inverted });
  // The heap at a moment comes from the capture's digest, which counts bytes only.
  view.blocksUnknown = state.moment >= 0;
  flame.setView(view, keepZoom);
  onFlameChange();
}

// Runs an action and keeps how long it took (the page's own redraw time).
function timed(action) {
  var start = performance.now();
  action();
  timings.lastAction = performance.now() - start;
}

function temporalSection() {
  temporal = new Temporal(doc);
  var box = el("section", "temporal");
  app.appendChild(box);
  chart = new Chart(box, doc, temporal, function (t0, t1) {
    if (!temporal.size()) return;
    timed(function () {
      state.moment = t0 === t1 ? temporal.nearest(t0) : temporal.highestIn(t0, t1);
      state.window = t0 === t1 ? null : [t0, t1];
      chart.setState(state.window, state.moment);
      rebuild(true);
      showMoment();
    });
  });
  var bar = el("div", "toolbar moment-bar");
  var label = el("span", "moment");
  var clearButton = el("button", "clear", "Clear selection");
  clearButton.addEventListener("click", function () {
    timed(function () {
      state.moment = -1; state.window = null;
      chart.setState(null, -1);
      rebuild(true);
      showMoment();
    });
  });
  bar.appendChild(label); bar.appendChild(clearButton);
  box.appendChild(bar);
  controls.moment = label; controls.clear = clearButton;
}

function showMoment() {
  var k = state.moment;
  controls.clear.hidden = k < 0;
  controls.select.disabled = k >= 0 || data.threads.length < 2;
  controls.select.title = k >= 0 ? "The heap over time is recorded for all threads together." : "";
  if (k < 0) {
    controls.moment.textContent = "Showing: " + (doc.title || "the profile") +
      (temporal.size() ? ". Click the chart for the heap at a moment, or drag across it for a window." : ".");
    return;
  }
  var when = "the heap at " + fmtSeconds(temporal.t[k]);
  if (state.window) when += " (the highest within " + fmtSeconds(state.window[0]) + " \u2013 " + fmtSeconds(state.window[1]) + ")";
  controls.moment.textContent = "Showing " + when + ": " + fmtBytes(temporal.heap[k]) + " of heap, " +
    fmtBytes(flame.view.bytes[0]) + " in the graph.";
}

function onKey(e) {
  if (!flame) return;
  var typing = e.target && (e.target.tagName === "INPUT" || e.target.tagName === "SELECT");
  if (e.key === "Escape") {
    if (e.target === controls.search && controls.search.value) {
      controls.search.value = "";
      flame.search("");
    } else if (flame.focus !== 0) {
      flame.zoom(0);
    }
  } else if (e.key === "/" && !typing) {
    e.preventDefault();
    controls.search.focus();
  }
}

function main() {
  header();
  var start = performance.now();
  if (kind === "temporal") temporalSection();
  if (kind !== "table") {
    flameControls();
    var graph = el("section", "graph");
    app.appendChild(graph);
    flame = new Flame(graph, data, onFlameChange);
    rebuild(false);
    if (kind === "temporal") { chart.draw(); showMoment(); }
    document.addEventListener("keydown", onKey);
  }
  if (kind === "table" || kind === "diff") {
    var section = el("section", "table-section");
    if (kind === "diff") section.appendChild(el("h2", null, "Changes by location"));
    app.appendChild(section);
    table = new Table(section, data, locationRows(data, data.samples));
  }
  timings.build = performance.now() - start;
  timings.ready = performance.now();
  document.documentElement.setAttribute("data-ready", "1");
}

main();

window.heapscopeReport = Object.freeze({
  kind: kind,
  timings: timings,
  // The frames drawn, with the bytes and blocks the page computed for them.
  frames: function () { return flame ? flame.drawn() : []; },
  state: function () {
    if (!flame) return { kind: kind };
    var focus = flame.view.frame[flame.focus];
    return { kind: kind, focus: flame.focus === 0 ? null : data.frame(focus).function, threads: state.threads,
             hide: state.hide, inverted: state.inverted, search: flame.query, found: controls.found.textContent,
             total: flame.view.bytes[0], moment: state.moment,
             momentTime: state.moment >= 0 ? temporal.t[state.moment] : null, window: state.window };
  },
  // Where time t is on the temporal chart (held within its plot), in the
  // window's coordinates.
  chartPoint: function (t) {
    if (!chart) return null;
    var box = chart.canvas.getBoundingClientRect();
    var x = Math.min(Math.max(chart.xOf(t), PAD_L), chart.width - PAD_R);
    return { x: box.left + x, y: box.top + CHART_H / 2 };
  },
  // The table's rows on screen (filtered and sorted).
  tableRows: function () { return table ? table.shown() : []; }
});
