// The page's data (heapscope.reports.page_data, version 1) decoded into
// typed arrays, and the trees, rows and moments the views draw.

// What a frame is, for colours and labels.
var KIND_PYTHON = 0, KIND_NATIVE = 1, KIND_HIDDEN = 2, KIND_THREAD = 3, KIND_OTHER = 4;

function Data(doc) {
  this.doc = doc;
  this.isDiff = !!doc.is_diff;
  this.fn = []; this.file = []; this.line = []; this.kind = []; this.hidden = [];
  var frames = doc.frames || [];
  for (var i = 0; i < frames.length; i++) {
    var row = frames[i];
    this.addFrame(String(row[0]), String(row[1]), row[2] | 0,
                  row[4] ? KIND_HIDDEN : row[3] ? KIND_NATIVE : KIND_PYTHON, !!row[4]);
  }
  // Frames the page makes: a stack without frames, a stack of hidden frames
  // only (when they are hidden), and one per thread (split view).
  this.UNKNOWN = this.addFrame("<unknown>", "", 0, KIND_OTHER, false);
  this.HIDDEN_ALL = this.addFrame("[import machinery and heapscope frames]", "", 0, KIND_OTHER, false);
  this.threads = (doc.threads || []).map(function (t) { return { id: t[0], name: String(t[1]) }; });
  this.threadFrame = [];
  for (var t = 0; t < this.threads.length; t++) {
    this.threadFrame.push(this.addFrame(this.threads[t].name, "", 0, KIND_THREAD, false));
  }
  this.allocators = (doc.allocators || []).map(String);
  var nodes = doc.nodes || [-1, -1];
  this.nTrie = nodes.length >> 1;
  this.trieParent = new Int32Array(this.nTrie);
  this.trieFrame = new Int32Array(this.nTrie);
  this.trieDepth = new Int32Array(this.nTrie);
  for (var n = 0; n < this.nTrie; n++) {
    this.trieParent[n] = nodes[2 * n];
    this.trieFrame[n] = nodes[2 * n + 1];
    if (n) this.trieDepth[n] = this.trieDepth[this.trieParent[n]] + 1;  // a parent comes before its children
  }
  this.samples = decodeSamples(doc.samples || [], doc.sample_stride || 5);
  this.sources = doc.sources || {};
}

Data.prototype.addFrame = function (fn, file, line, kind, hidden) {
  this.fn.push(fn); this.file.push(file); this.line.push(line); this.kind.push(kind); this.hidden.push(hidden);
  return this.fn.length - 1;
};

Data.prototype.frame = function (f) {
  if (f < 0) return { function: "all", filename: "", lineno: 0, native: false, hidden: false, kind: KIND_OTHER };
  return { function: this.fn[f], filename: this.file[f], lineno: this.line[f], native: this.kind[f] === KIND_NATIVE,
           hidden: this.hidden[f], kind: this.kind[f] };
};

Data.prototype.sourceLine = function (f) {
  if (f < 0) return "";
  var lines = Object.prototype.hasOwnProperty.call(this.sources, this.file[f]) ? this.sources[this.file[f]] : null;
  var key = String(this.line[f]);
  return lines && Object.prototype.hasOwnProperty.call(lines, key) ? String(lines[key]) : "";
};

Data.prototype.threadName = function (t) {
  return t >= 0 && t < this.threads.length ? this.threads[t].name : "merged threads";
};

// A set of samples as parallel typed arrays. thread -1: threads merged.
function SampleSet(n) {
  this.n = n;
  this.node = new Int32Array(n);
  this.thread = new Int32Array(n);
  this.alloc = new Int32Array(n);
  this.bytes = new Float64Array(n);
  this.blocks = new Float64Array(n);
  this.before = new Float64Array(n);
  this.beforeBlocks = new Float64Array(n);
}

function decodeSamples(flat, stride) {
  var n = Math.floor(flat.length / stride), set = new SampleSet(n);
  for (var i = 0, j = 0; i < n; i++, j += stride) {
    set.node[i] = flat[j]; set.thread[i] = flat[j + 1]; set.alloc[i] = flat[j + 2];
    set.bytes[i] = flat[j + 3]; set.blocks[i] = flat[j + 4];
    if (stride >= 7) { set.before[i] = flat[j + 5]; set.beforeBlocks[i] = flat[j + 6]; }
  }
  return set;
}

// The call tree of a sample set as a view: node 0 is the root (frame -1);
// a node's id is larger than its parent's; children in CSR form, widest
// first. opts.threads: "merged", "split" (one subtree per thread) or a
// thread index; opts.hide folds hidden frames away; opts.inverted puts the
// innermost frame at the top. Widths (w): bytes, or in a difference the sum
// over the node's stacks of max(after, before), so a parent is never
// narrower than its children and a stack that shrank to nothing still shows.
function buildView(data, set, opts) {
  var hidden = data.hidden, hide = !!opts.hide, split = opts.threads === "split";
  var only = typeof opts.threads === "number" ? opts.threads : -1;
  // Room for every node the tree can have: each is on the path of a sample
  // (or is a thread's, or a stack's without frames); top-down, the trie
  // bounds them too (once per thread when split).
  var most = 0, T = data.threads.length;
  for (var d = 0; d < set.n; d++) most += data.trieDepth[set.node[d]] + 1;
  if (!opts.inverted) most = Math.min(most, data.nTrie * (split ? Math.max(T, 1) : 1) + set.n);
  most += T + 2;
  var frame = new Int32Array(most), parent = new Int32Array(most), count = 1, index = new ChildIndex(2 * most);
  frame[0] = -1; parent[0] = -1;
  function child(p, f) {
    var c = index.get(p, f);
    if (c < 0) {
      c = count++; frame[c] = f; parent[c] = p; index.set(p, f, c);
    }
    return c;
  }
  var n = set.n, leaf = new Int32Array(n).fill(-1);
  // Samples grouped by thread when split, so one memo serves a group.
  var order = new Int32Array(n);
  for (var i = 0; i < n; i++) order[i] = i;
  if (split) order.sort(function (a, b) { return set.thread[a] - set.thread[b] || a - b; });
  var memo = opts.inverted ? null : new Int32Array(data.nTrie).fill(-1), touched = [];
  var path = new Int32Array(256), group = -2, groupRoot = 0;
  for (var k = 0; k < n; k++) {
    var s = order[k], th = set.thread[s];
    if (only >= 0 && th !== only) continue;
    var g = split ? th : -1;
    if (g !== group) {
      group = g;
      groupRoot = split && th >= 0 && th < T ? child(0, data.threadFrame[th]) : 0;
      if (memo) { for (var u = 0; u < touched.length; u++) memo[touched[u]] = -1; touched.length = 0; }
    }
    var v, t = set.node[s];
    if (memo) {
      // Top-down: the view node of a trie node is its parent's, plus its
      // frame unless hidden; resolved once per trie node.
      if (path.length <= data.trieDepth[t]) path = new Int32Array(2 * data.trieDepth[t] + 1);
      var m = 0;
      while (t > 0 && memo[t] < 0) { path[m++] = t; t = data.trieParent[t]; }
      v = t > 0 ? memo[t] : groupRoot;
      while (m > 0) {
        var tn = path[--m], f = data.trieFrame[tn];
        if (!(hide && hidden[f])) v = child(v, f);
        memo[tn] = v;
        if (split) touched.push(tn);
      }
    } else {
      v = groupRoot;
      for (; t > 0; t = data.trieParent[t]) {
        var fi = data.trieFrame[t];
        if (!(hide && hidden[fi])) v = child(v, fi);
      }
    }
    if (v === groupRoot) v = child(groupRoot, set.node[s] > 0 ? data.HIDDEN_ALL : data.UNKNOWN);
    leaf[s] = v;
  }
  return new View(data, frame.subarray(0, count), parent.subarray(0, count), leaf, set, opts);
}

// (parent node, frame) -> child node: an open-addressing hash table in
// typed arrays (a Map keyed by parent * frames + frame hashes doubles, and
// is several times slower on a large profile).
function ChildIndex(room) {
  var capacity = 16;
  while (capacity < room) capacity *= 2;
  this.size = 0;
  this.alloc(capacity);
}

ChildIndex.prototype.alloc = function (capacity) {
  this.mask = capacity - 1;
  this.parents = new Int32Array(capacity).fill(-1);
  this.frames = new Int32Array(capacity);
  this.values = new Int32Array(capacity);
};

ChildIndex.prototype.slot = function (p, f) {
  var i = (Math.imul(p, 0x9e3779b1) ^ Math.imul(f + 1, 0x85ebca77)) & this.mask;
  while (this.parents[i] !== -1 && (this.parents[i] !== p || this.frames[i] !== f)) i = (i + 1) & this.mask;
  return i;
};

ChildIndex.prototype.get = function (p, f) {
  var i = this.slot(p, f);
  return this.parents[i] === -1 ? -1 : this.values[i];
};

ChildIndex.prototype.set = function (p, f, value) {
  if (2 * (this.size + 1) > this.mask + 1) {
    var parents = this.parents, frames = this.frames, values = this.values;
    this.alloc(2 * (this.mask + 1));
    for (var j = 0; j < parents.length; j++) {
      if (parents[j] !== -1) {
        var k = this.slot(parents[j], frames[j]);
        this.parents[k] = parents[j]; this.frames[k] = frames[j]; this.values[k] = values[j];
      }
    }
  }
  var i = this.slot(p, f);
  if (this.parents[i] === -1) this.size++;
  this.parents[i] = p; this.frames[i] = f; this.values[i] = value;
};

function View(data, frameList, parentList, leaf, set, opts) {
  var n = frameList.length;
  this.data = data; this.n = n; this.set = set; this.opts = opts;
  var frame = this.frame = frameList, parent = this.parent = parentList;
  var bytes = this.bytes = new Float64Array(n), blocks = this.blocks = new Float64Array(n);
  var before = this.before = new Float64Array(n), beforeBlocks = this.beforeBlocks = new Float64Array(n);
  var w = this.w = new Float64Array(n), diff = data.isDiff;
  for (var s = 0; s < set.n; s++) {
    var v = leaf[s];
    if (v < 0) continue;
    bytes[v] += set.bytes[s]; blocks[v] += set.blocks[s];
    before[v] += set.before[s]; beforeBlocks[v] += set.beforeBlocks[s];
    w[v] += diff ? Math.max(set.bytes[s], set.before[s]) : set.bytes[s];
  }
  this.selfBytes = Float64Array.from(bytes);
  this.selfBefore = Float64Array.from(before);
  var depth = this.depth = new Int32Array(n);
  for (var i = n - 1; i > 0; i--) {
    var p = parent[i];
    bytes[p] += bytes[i]; blocks[p] += blocks[i]; before[p] += before[i]; beforeBlocks[p] += beforeBlocks[i];
    w[p] += w[i];
  }
  for (var d = 1; d < n; d++) depth[d] = depth[parent[d]] + 1;
  // Children: childList[childStart[v] .. childStart[v + 1]), sorted when
  // first asked for (children(v)): a drawing asks only for the few
  // thousand nodes it draws.
  var count = new Int32Array(n + 1);
  for (var c = 1; c < n; c++) count[this.parent[c] + 1]++;
  for (var o = 0; o < n; o++) count[o + 1] += count[o];
  this.childStart = count;
  this.childList = new Int32Array(Math.max(n - 1, 0));
  var fill = Int32Array.from(count.subarray(0, n));
  for (var e = 1; e < n; e++) this.childList[fill[this.parent[e]]++] = e;
  this.sorted = new Uint8Array(n);
}

// Makes node's children widest first (ties: frame order, so every run draws
// the same); they are childList[childStart[node] .. childStart[node + 1]).
View.prototype.children = function (node) {
  if (this.sorted[node]) return;
  this.sorted[node] = 1;
  var a = this.childStart[node], b = this.childStart[node + 1], w = this.w, fr = this.frame;
  if (b - a > 1) this.childList.subarray(a, b).sort(function (x, y) { return w[y] - w[x] || fr[x] - fr[y]; });
};

// The nodes from the root down to node.
View.prototype.path = function (node) {
  var out = [];
  for (var v = node; v >= 0; v = this.parent[v]) out.push(v);
  return out.reverse();
};

// The node reached by following these frames from the root, or the deepest
// one that exists: a zoom kept across a change of view.
View.prototype.follow = function (frames) {
  var v = 0;
  for (var i = 0; i < frames.length; i++) {
    var next = -1;
    this.children(v);
    for (var c = this.childStart[v]; c < this.childStart[v + 1]; c++) {
      if (this.frame[this.childList[c]] === frames[i]) { next = this.childList[c]; break; }
    }
    if (next < 0 || this.w[next] <= 0) break;
    v = next;
  }
  return v;
};

// Bytes (and before-bytes) under the frames that match, each sample counted
// once: the samples whose stack, as this view shows it, holds a match.
View.prototype.matchedTotals = function (matches) {
  var data = this.data, set = this.set, opts = this.opts, hide = !!opts.hide, n = data.nTrie;
  var only = typeof opts.threads === "number" ? opts.threads : -1, split = opts.threads === "split";
  var has = new Uint8Array(n), shown = new Uint8Array(n);  // a match / a frame shown, from the root down
  for (var t = 1; t < n; t++) {
    var f = data.trieFrame[t], p = data.trieParent[t], visible = !(hide && data.hidden[f]);
    has[t] = has[p] | (visible && matches[f] ? 1 : 0);
    shown[t] = shown[p] | (visible ? 1 : 0);
  }
  var bytes = 0, before = 0;
  for (var s = 0; s < set.n; s++) {
    var th = set.thread[s], node = set.node[s];
    if (only >= 0 && th !== only) continue;
    var hit = has[node] || (split && th >= 0 && th < data.threadFrame.length && matches[data.threadFrame[th]]) ||
              (!shown[node] && matches[node > 0 ? data.HIDDEN_ALL : data.UNKNOWN]);
    if (hit) { bytes += set.bytes[s]; before += set.before[s]; }
  }
  return { bytes: bytes, before: before };
};

// Rows of the location table: samples grouped by innermost frame, thread
// and allocator.
function locationRows(data, set) {
  var groups = new Map(), rows = [];
  var T = data.threads.length + 1, A = data.allocators.length + 1;
  for (var s = 0; s < set.n; s++) {
    var node = set.node[s], f = node > 0 ? data.trieFrame[node] : data.UNKNOWN;
    var key = (f * T + (set.thread[s] + 1)) * A + set.alloc[s], row = groups.get(key);
    if (row === undefined) {
      row = { frame: f, thread: set.thread[s], alloc: set.alloc[s], bytes: 0, blocks: 0, before: 0, beforeBlocks: 0 };
      groups.set(key, row); rows.push(row);
    }
    row.bytes += set.bytes[s]; row.blocks += set.blocks[s];
    row.before += set.before[s]; row.beforeBlocks += set.beforeBlocks[s];
  }
  return rows;
}

// The heap at each moment of a temporal profile, replayed from the
// changes (page_data's "temporal"): moment k is moment k-1 plus changes[k].
function Temporal(doc) {
  var temporal = doc.temporal || { t: [], heap: [], changes: [] };
  this.t = temporal.t; this.heap = temporal.heap; this.changes = temporal.changes;
  this.k = -1; this.state = new Map();
}

Temporal.prototype.size = function () { return this.t.length; };

Temporal.prototype.samplesAt = function (k) {
  if (k < this.k) { this.state = new Map(); this.k = -1; }
  for (var j = this.k + 1; j <= k; j++) {
    var flat = this.changes[j] || [];
    for (var i = 0; i + 2 < flat.length; i += 3) {
      if (flat[i + 1] || flat[i + 2]) this.state.set(flat[i], [flat[i + 1], flat[i + 2]]);
      else this.state.delete(flat[i]);
    }
  }
  this.k = k;
  var set = new SampleSet(this.state.size), s = 0;
  this.state.forEach(function (value, node) {
    set.node[s] = node; set.thread[s] = -1; set.bytes[s] = value[0]; set.blocks[s] = value[1]; s++;
  });
  return set;
};

// The moment nearest to time t.
Temporal.prototype.nearest = function (t) {
  var best = -1;
  for (var k = 0; k < this.t.length; k++) {
    if (best < 0 || Math.abs(this.t[k] - t) < Math.abs(this.t[best] - t)) best = k;
  }
  return best;
};

// The moment of highest heap within [t0, t1]; the nearest one when none
// falls inside.
Temporal.prototype.highestIn = function (t0, t1) {
  var best = -1;
  for (var k = 0; k < this.t.length; k++) {
    if (this.t[k] >= t0 && this.t[k] <= t1 && (best < 0 || this.heap[k] > this.heap[best])) best = k;
  }
  return best >= 0 ? best : this.nearest((t0 + t1) / 2);
};
