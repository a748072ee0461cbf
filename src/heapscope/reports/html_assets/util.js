// Formatting and DOM helpers. Every name from the profiled program reaches
// the page through textContent (here) or canvas fillText: never as markup.

var UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

// "0 B", "1023 B", "976.6 KiB": binary units, as heapscope's terminal reports.
function fmtBytes(size) {
  var value = Math.abs(size), i = 0;
  while (value >= 1024 && i < UNITS.length - 1) { value /= 1024; i++; }
  var text = i === 0 ? String(Math.round(value)) + " B" : value.toFixed(1) + " " + UNITS[i];
  return (size < 0 ? "-" : "") + text;
}

// "1,000,000"
function fmtInt(n) {
  var s = String(Math.round(Math.abs(n))), out = "";
  while (s.length > 3) { out = "," + s.slice(-3) + out; s = s.slice(0, -3); }
  return (n < 0 ? "-" : "") + s + out;
}

function fmtSigned(size) { return (size > 0 ? "+" : "") + fmtBytes(size); }
function fmtSignedInt(n) { return (n > 0 ? "+" : "") + fmtInt(n); }

function fmtPct(part, whole) {
  if (!whole) return "0.0%";
  return (100 * part / whole).toFixed(1) + "%";
}

function fmtSeconds(t) {
  if (t >= 100) return t.toFixed(0) + " s";
  if (t >= 10) return t.toFixed(1) + " s";
  return t.toFixed(2) + " s";
}

// An element with a class and text (never markup).
function el(tag, cls, text) {
  var node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
}

// A stable 32-bit hash of a string (FNV-1a), for colours.
function hashString(s) {
  var h = 2166136261;
  for (var i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 16777619);
  }
  return h >>> 0;
}

// Calls fn when node's width changes (a window resized, a scroll bar came).
function onWidthChange(node, fn) {
  var width = node.clientWidth, timer = 0;
  new ResizeObserver(function () {
    if (node.clientWidth === width) return;
    width = node.clientWidth;
    clearTimeout(timer);
    timer = setTimeout(fn, 60);
  }).observe(node);
}

// "file:line", or the file alone for a native frame without a line.
function frameLocation(frame) {
  if (!frame.filename) return "";
  return frame.lineno > 0 ? frame.filename + ":" + frame.lineno : frame.filename;
}
