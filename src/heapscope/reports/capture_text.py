"""Terminal reports made from a capture: summary table, statistics, call tree.

Each function takes what ``heapscope.FileReader`` returns and gives text; none
reads the file itself. Every name from the program (function, file) goes
through ``safe_text``.
"""

import datetime
import json

from heapscope.reports.text import format_bytes, safe_text, table


def describe_location(location):
    """``function  file:line`` for a (function, filename, lineno) frame."""
    function, filename, lineno = location
    return safe_text(function), f"{safe_text(filename)}:{lineno}"


def group_by_location(reader, records):
    """[(location, bytes, count)] for records, biggest first."""
    groups = {}
    for record in records:
        if reader.is_heapscope_own(record.stack_id):
            continue
        location = reader.location(record.stack_id, record.native_stack_id)
        entry = groups.get(location)
        if entry is None:
            groups[location] = [record.size, record.n_allocations]
        else:
            entry[0] += record.size
            entry[1] += record.n_allocations
    rows = [(location, size, count) for location, (size, count) in groups.items()]
    rows.sort(key=lambda row: (-row[1], -row[2], row[0]))
    return rows


def _duration(metadata):
    seconds = max((metadata.end_time - metadata.start_time).total_seconds(), 0.0)
    return f"{seconds:.2f} s"


def _started(metadata):
    return metadata.start_time.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def header_lines(title, path, metadata):
    """The lines that head every report: what ran, when, for how long, peak and totals."""
    settings = [metadata.file_format.name]
    if metadata.trace_python_allocators:
        settings.append("Python allocators traced")
    if metadata.has_native_traces:
        settings.append("native traces")
    state = "" if metadata.complete else ", unfinished"
    lines = [
        f"heapscope {title}: {safe_text(metadata.command_line) or '(unknown command)'}",
        f"  capture   {safe_text(path)} ({', '.join(settings)}{state})",
        f"  ran       {_duration(metadata)} from {_started(metadata)}, pid {metadata.pid}",
        f"  peak      {format_bytes(metadata.peak_memory)} of traced memory"
        + (" (sampled: the peak of an estimate runs high, docs/sampling.md)" if metadata.sampled else ""),
        f"  totals    {metadata.total_allocations} allocations, {metadata.total_frames} distinct frames",
    ]
    if metadata.sampled:
        lines.insert(2, f"  sampled   {describe_sampling_text(metadata.sampling)}: sizes and counts are "
                        f"unbiased estimates")
    return lines


def describe_sampling_text(text):
    """A capture's sampling in words: "Poisson, 1 sample per 64.0 KiB on
    average" or "size ranges <128 B: 0.0001, <8.0 KiB: 0.1"."""
    from heapscope._sampling import parse_sampling

    try:
        sampling = parse_sampling(text)
    except ValueError:  # a damaged or foreign file's metadata: show it as it is
        return safe_text(text)
    if isinstance(sampling, int):
        return f"Poisson, 1 sample per {format_bytes(sampling)} on average"
    if isinstance(sampling, dict):
        return "size ranges " + ", ".join(f"<{format_bytes(bound)}: {p:g}" for bound, p in sampling.items())
    return "exact"


def pool_lines(reader, records):
    """One line per resource pool (heapscope.pools) holding resources among
    *records*: its name, bytes and count."""
    names = reader.pool_names
    totals = {}
    for record in records:
        if record.domain in names:
            size, count = totals.get(record.domain, (0, 0))
            totals[record.domain] = (size + record.size, count + record.n_allocations)
    return [f"  pool      {safe_text(names[domain])} (domain {domain}): {format_bytes(size)} in {count} resources"
            for domain, (size, count) in sorted(totals.items(), key=lambda item: (-item[1][0], item[0]))]


def summary_report(reader, path, records, rows_shown, what):
    """The summary: header, then the top locations of *records* (a list of
    AllocationRecord) as a table. *what* names the records ("memory held at
    the high-water mark")."""
    lines = header_lines("summary", path, reader.metadata)
    rows = group_by_location(reader, records)
    total_bytes = sum(size for _, size, _ in rows)
    total_count = sum(count for _, _, count in rows)
    lines.append(f"  shown     {what}: {format_bytes(total_bytes)} in {total_count} blocks")
    lines += pool_lines(reader, records)
    lines.append("")
    if not rows:
        lines.append("  (nothing)")
        return "\n".join(lines)
    shown = rows[:rows_shown]
    cells = []
    for location, size, count in shown:
        function, where = describe_location(location)
        share = 100 * size / total_bytes if total_bytes else 0.0
        cells.append([function, where, format_bytes(size), f"{share:.1f}%", count])
    lines.append(table(["function", "location", "size", "share", "blocks"], cells, ["<", "<", ">", ">", ">"]))
    rest = rows[rows_shown:]
    if rest:
        lines.append(f"\n  ... and {len(rest)} more locations, holding "
                     f"{format_bytes(sum(size for _, size, _ in rest))}")
    return "\n".join(lines)


_BAR = "\u2587"


def stats_report(reader, path, stats):
    """The statistics of every allocation, as text."""
    lines = header_lines("stats", path, reader.metadata)
    lines += ["", f"Total allocations:     {stats.total_allocations}",
              f"Total bytes allocated: {format_bytes(stats.total_bytes)} ({stats.total_bytes} B)",
              f"Peak memory:           {format_bytes(stats.peak_memory)} ({stats.peak_memory} B)",
              "", "Allocation sizes:"]
    buckets = [bucket for bucket in stats.histogram if bucket[2]]
    if not buckets:
        lines.append("  (no allocations)")
    else:
        most = max(count for _, _, count in buckets)
        labels = [format_bytes(low) if low == high else f"{format_bytes(low)} .. {format_bytes(high)}"
                  for low, high, _ in buckets]
        width = max(map(len, labels))
        count_width = len(str(most))
        for label, (_, _, count) in zip(labels, buckets):
            bar = _BAR * max(1, round(40 * count / most))
            lines.append(f"  {label:>{width}}  {count:>{count_width}}  {bar}")
    lines += ["", "Allocations by function:"]
    for name, count in sorted(stats.allocators.items(), key=lambda item: (-item[1], item[0])):
        lines.append(f"  {name:<16} {count}")
    for title, ranked, show in (("by bytes allocated", stats.top_locations_by_bytes, format_bytes),
                                ("by number of allocations", stats.top_locations_by_count, str)):
        lines += ["", f"Top {len(ranked)} locations {title}:"]
        if not ranked:
            lines.append("  (none)")
        cells = []
        for rank, (location, value) in enumerate(ranked, 1):
            function, where = describe_location(location)
            cells.append([f"{rank}.", show(value), function, where])
        if cells:
            lines.append("\n".join("  " + line for line in table(["", "", "function", "location"], cells,
                                                                   ["<", ">", "<", "<"]).split("\n")[2:]))
    return "\n".join(lines)


def _location_json(location):
    function, filename, lineno = location
    return {"function": function, "filename": filename, "lineno": lineno}


def _iso(moment):
    return moment.isoformat() if isinstance(moment, datetime.datetime) else None


def stats_json(reader, path, stats):
    """The statistics as JSON (memray's key names where memray has them)."""
    metadata = reader.metadata
    document = {
        "capture": path,
        "metadata": {
            "command_line": metadata.command_line,
            "pid": metadata.pid,
            "start_time": _iso(metadata.start_time),
            "end_time": _iso(metadata.end_time),
            "total_allocations": metadata.total_allocations,
            "total_frames": metadata.total_frames,
            "sampling": metadata.sampling,
            "peak_memory": metadata.peak_memory,
            "python_allocator": metadata.python_allocator,
            "has_native_traces": metadata.has_native_traces,
            "trace_python_allocators": metadata.trace_python_allocators,
            "file_format": metadata.file_format.name,
            "complete": metadata.complete,
            "damage": metadata.damage,
        },
        "total_num_allocations": stats.total_allocations,
        "total_bytes_allocated": stats.total_bytes,
        "peak_memory": stats.peak_memory,
        "allocation_size_histogram": [{"min_bytes": low, "max_bytes": high, "count": count}
                                      for low, high, count in stats.histogram],
        "allocator_type_distribution": dict(stats.allocators),
        "top_allocations_by_size": [{"location": _location_json(location), "size": size}
                                    for location, size in stats.top_locations_by_bytes],
        "top_allocations_by_count": [{"location": _location_json(location), "count": count}
                                     for location, count in stats.top_locations_by_count],
    }
    return json.dumps(document, indent=2)


class _Node:
    __slots__ = ("size", "count", "children")

    def __init__(self):
        self.size = 0
        self.count = 0
        self.children = {}


def build_tree(reader, records, hybrid=False):
    """A call tree (outermost frame at the root) of records' sizes and counts."""
    root = _Node()
    stacks = {}
    for record in records:
        if reader.is_heapscope_own(record.stack_id):
            continue
        key = (record.stack_id, record.native_stack_id)
        stack = stacks.get(key)
        if stack is None:
            stack = record.hybrid_stack_trace() if hybrid else record.stack_trace()
            stack = stacks[key] = list(reversed(stack)) or [("<unknown>", "<unknown>", 0)]
        node = root
        node.size += record.size
        node.count += record.n_allocations
        for frame in stack:
            child = node.children.get(frame)
            if child is None:
                child = node.children[frame] = _Node()
            child.size += record.size
            child.count += record.n_allocations
            node = child
    return root


def tree_report(root, title, *, min_share=0.01, max_children=10):
    """The tree as text with box-drawing branches, biggest first. Branches
    under *min_share* of the total, and beyond *max_children* per node, are
    folded into one line each."""
    total = root.size
    lines = [f"{title}: {format_bytes(total)} in {root.count} blocks"]
    if not root.children:
        lines.append("  (nothing)")
        return "\n".join(lines)
    floor = total * min_share

    def share(size):
        return f"{100 * size / total:5.1f}%" if total else "  0.0%"

    def entries_of(node, prefix):
        """The lines under *node*, in print order, as work items."""
        ordered = sorted(node.children.items(), key=lambda item: (-item[1].size, -item[1].count, item[0]))
        shown = [item for item in ordered[:max_children] if item[1].size >= floor and item[1].size > 0]
        hidden = [child for _, child in ordered[len(shown):]]
        items = [(frame, child, None) for frame, child in shown]
        if hidden:
            items.append((None, None, hidden))
        return [(frame, child, rest, prefix, index == len(items) - 1)
                for index, (frame, child, rest) in enumerate(items)]

    # Depth first with an explicit stack, so a deep program stack cannot hit
    # Python's recursion limit.
    work = list(reversed(entries_of(root, "")))
    while work:
        frame, node, rest, prefix, last = work.pop()
        branch = "\u2514\u2500\u2500 " if last else "\u251c\u2500\u2500 "
        if rest is not None:
            size = sum(child.size for child in rest)
            lines.append(f"{prefix}{branch}{format_bytes(size)} {share(size)}  "
                         f"... {len(rest)} smaller {'branch' if len(rest) == 1 else 'branches'}")
            continue
        function, where = describe_location(frame)
        lines.append(f"{prefix}{branch}{format_bytes(node.size)} {share(node.size)}  {function}  {where}")
        work.extend(reversed(entries_of(node, prefix + ("    " if last else "\u2502   "))))
    return "\n".join(lines)
