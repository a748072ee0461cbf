// The location table: one row per innermost frame, thread and allocator;
// click a header to sort, type to filter.

var TABLE_PAGE = 500;

function Table(host, data, groups) {
  this.data = data;
  var diff = data.isDiff;
  this.total = 0; this.totalBefore = 0;
  this.rows = groups.map(function (g) {
    var frame = data.frame(g.frame);
    var row = { location: frameLocation(frame), function: frame.function, bytes: g.bytes, blocks: g.blocks,
                share: g.bytes, before: g.before, beforeBlocks: g.beforeBlocks, change: g.bytes - g.before,
                blocksChange: g.blocks - g.beforeBlocks, native: frame.native,
                allocator: data.allocators[g.alloc] || "", thread: data.threadName(g.thread) };
    row.haystack = (row.location + "\u0000" + row.function + "\u0000" + row.allocator + "\u0000" + row.thread).toLowerCase();
    return row;
  });
  for (var i = 0; i < this.rows.length; i++) { this.total += this.rows[i].bytes; this.totalBefore += this.rows[i].before; }
  var total = this.total;
  var text = function (key) { return function (r) { return r[key]; }; };
  var size = function (key) { return function (r) { return fmtBytes(r[key]); }; };
  var exact = function (key) { return function (r) { return fmtInt(r[key]) + " B"; }; };
  this.columns = [{ key: "location", title: "Location", text: text("location"), cls: "loc" },
                  { key: "function", title: "Function", text: text("function"), cls: "fn" }];
  if (diff) {
    this.columns.push({ key: "before", title: "Before", numeric: true, text: size("before"), exact: exact("before") },
                      { key: "bytes", title: "After", numeric: true, text: size("bytes"), exact: exact("bytes") },
                      { key: "change", title: "Change", numeric: true, text: function (r) { return fmtSigned(r.change); },
                        exact: function (r) { return fmtSignedInt(r.change) + " B"; }, signed: true },
                      { key: "blocksChange", title: "Blocks change", numeric: true,
                        text: function (r) { return fmtSignedInt(r.blocksChange); }, signed: true });
  } else {
    this.columns.push({ key: "bytes", title: "Bytes", numeric: true, text: size("bytes"), exact: exact("bytes") },
                      { key: "share", title: "% of total", numeric: true,
                        text: function (r) { return fmtPct(r.bytes, total); } },
                      { key: "blocks", title: "Blocks", numeric: true, text: function (r) { return fmtInt(r.blocks); } });
  }
  this.columns.push({ key: "allocator", title: "Allocator", text: text("allocator") },
                    { key: "thread", title: "Thread", text: text("thread") });
  this.sortKey = diff ? "absChange" : "bytes"; this.desc = true;
  this.query = ""; this.limit = TABLE_PAGE;

  this.root = el("div", "table-block");
  var bar = el("div", "toolbar");
  this.filter = el("input", "filter");
  this.filter.type = "search";
  this.filter.placeholder = "Filter by location, function, allocator or thread";
  this.filter.setAttribute("aria-label", "filter the table");
  this.summary = el("span", "summary");
  bar.appendChild(this.filter); bar.appendChild(this.summary);
  this.table = el("table", "locations");
  this.thead = el("thead"); this.tbody = el("tbody");
  this.table.appendChild(this.thead); this.table.appendChild(this.tbody);
  this.more = el("button", "more");
  this.root.appendChild(bar); this.root.appendChild(this.table); this.root.appendChild(this.more);
  host.appendChild(this.root);
  var self = this;
  this.filter.addEventListener("input", function () { self.query = self.filter.value; self.limit = TABLE_PAGE; self.render(); });
  this.more.addEventListener("click", function () { self.limit += TABLE_PAGE * 4; self.render(); });
  this.render();
}

Table.prototype.sortBy = function (key) {
  if (this.sortKey === key) this.desc = !this.desc;
  else { this.sortKey = key; this.desc = this.columns.some(function (c) { return c.key === key && c.numeric; }); }
  this.render();
};

Table.prototype.matching = function () {
  var q = this.query.trim().toLowerCase(), key = this.sortKey, desc = this.desc;
  var rows = q ? this.rows.filter(function (r) { return r.haystack.indexOf(q) >= 0; }) : this.rows.slice();
  var value = key === "absChange" ? function (r) { return Math.abs(r.change); } : function (r) { return r[key]; };
  rows.sort(function (a, b) {
    var x = value(a), y = value(b), order = x < y ? -1 : x > y ? 1 : 0;
    return (desc ? -order : order) || (b.bytes - a.bytes) || (a.location < b.location ? -1 : a.location > b.location ? 1 : 0);
  });
  return rows;
};

Table.prototype.render = function () {
  var rows = this.matching(), self = this;
  this.current = rows;
  clear(this.thead);
  var tr = el("tr");
  this.columns.forEach(function (col) {
    var key = col.key, th = el("th", col.numeric ? "num" : null);
    // The table of changes starts sorted by the size of the change.
    var sorted = self.sortKey === key || (self.sortKey === "absChange" && key === "change");
    var button = el("button", "sort", col.title + (sorted ? (self.desc ? " \u25bc" : " \u25b2") : ""));
    if (self.sortKey === "absChange" && key === "change") button.title = "sorted by the size of the change";
    th.setAttribute("aria-sort", sorted ? (self.desc ? "descending" : "ascending") : "none");
    button.addEventListener("click", function () { self.sortBy(key); });
    th.appendChild(button);
    tr.appendChild(th);
  });
  this.thead.appendChild(tr);
  clear(this.tbody);
  var shown = Math.min(rows.length, this.limit), fragment = document.createDocumentFragment();
  for (var i = 0; i < shown; i++) {
    var row = rows[i], line = el("tr");
    for (var c = 0; c < this.columns.length; c++) {
      var col = this.columns[c], td = el("td", col.numeric ? "num" : col.cls || null, col.text(row));
      if (col.exact) td.title = col.exact(row);
      if (col.signed && row[col.key]) td.classList.add(row[col.key] > 0 ? "grow" : "shrink");
      if (col.key === "function" && row.native) td.classList.add("native");
      line.appendChild(td);
    }
    fragment.appendChild(line);
  }
  this.tbody.appendChild(fragment);
  this.shownCount = shown;
  var sum = 0, before = 0;
  for (var r = 0; r < rows.length; r++) { sum += rows[r].bytes; before += rows[r].before; }
  var what = this.data.isDiff ? "change " + fmtSigned(sum - before) + " (" + fmtBytes(before) + " \u2192 " + fmtBytes(sum) + ")"
                              : fmtBytes(sum) + " (" + fmtPct(sum, this.total) + " of " + fmtBytes(this.total) + ")";
  this.summary.textContent = fmtInt(rows.length) + " of " + fmtInt(this.rows.length) + " rows, " + what;
  this.more.hidden = shown >= rows.length;
  this.more.textContent = "Show more (" + fmtInt(rows.length - shown) + " rows not shown)";
};

// The rows on screen, as the table computed them (the test hook).
Table.prototype.shown = function () {
  return this.current.slice(0, this.shownCount).map(function (r) {
    return { location: r.location, function: r.function, bytes: r.bytes, blocks: r.blocks, before: r.before,
             beforeBlocks: r.beforeBlocks, change: r.change, allocator: r.allocator, thread: r.thread };
  });
};
