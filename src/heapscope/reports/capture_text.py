"""Terminal reports: summary table, statistics, call tree.

The summary and the tree render a report-model Profile
(heapscope.reports.model); the statistics render ``FileReader.stats()``.
None reads a file itself. Every name from the program (function, file) goes
through ``safe_text``.
"""

import datetime
import json

from heapscope.reports.text import format_bytes, safe_text, table


def describe_location(location):
    """``function  file:line`` for a frame: a model Frame or a (function,
    filename, lineno) tuple."""
    function, filename, lineno = location[:3] if isinstance(location, tuple) else \
        (location.function, location.filename, location.lineno)
    return safe_text(function), f"{safe_text(filename)}:{lineno}"


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


def pool_lines(profile):
    """One line per resource pool (heapscope.pools) holding resources in
    *profile*: its name, bytes and count."""
    totals = {}
    for sample in profile.samples:
        if sample.domain in profile.domains:
            size, count = totals.get(sample.domain, (0, 0))
            totals[sample.domain] = (size + sample.bytes, count + sample.blocks)
    return [f"  pool      {safe_text(profile.domains[domain])} (domain {domain}): {format_bytes(size)} in "
            f"{count} resources" for domain, (size, count) in sorted(totals.items(), key=lambda item: (-item[1][0], item[0]))]


def location_table(rows, rows_shown):
    """Lines of the table of *rows* (the model's LocationRows, largest first):
    function, location, size, share and blocks, then how many more."""
    total_bytes = sum(row.bytes for row in rows)
    if not rows:
        return ["  (nothing)"]
    cells = []
    for row in rows[:rows_shown]:
        function, where = describe_location(row.frame)
        share = 100 * row.bytes / total_bytes if total_bytes else 0.0
        cells.append([function, where, format_bytes(row.bytes), f"{share:.1f}%", row.blocks])
    lines = [table(["function", "location", "size", "share", "blocks"], cells, ["<", "<", ">", ">", ">"])]
    rest = rows[rows_shown:]
    if rest:
        lines.append(f"\n  ... and {len(rest)} more locations, holding "
                     f"{format_bytes(sum(row.bytes for row in rest))}")
    return lines


def summary_report(reader, profile, rows_shown, what):
    """The summary: header, then the top locations of *profile* (a
    report-model Profile made from *reader*) as a table. *what* names the
    bytes ("memory held at the high-water mark")."""
    lines = header_lines("summary", profile.source, reader.metadata)
    rows = profile.locations()
    total_bytes = sum(row.bytes for row in rows)
    total_count = sum(row.blocks for row in rows)
    lines.append(f"  shown     {what}: {format_bytes(total_bytes)} in {total_count} blocks")
    lines += pool_lines(profile)
    lines.append("")
    lines += location_table(rows, rows_shown)
    return "\n".join(lines)


def merged_summary_report(readers, sources, profile, rows_shown, what):
    """The summary of several captures merged (heapscope.reports.merge):
    each capture's header, what merging means for the peak, then the top
    locations over every process."""
    lines = [f"heapscope summary: {len(readers)} processes"]
    for reader, source in zip(readers, sources):
        lines += ["  " + line for line in header_lines("summary", source, reader.metadata)]
    lines += [f"  {safe_text(line)}" for line in profile.header[1:2]]
    rows = profile.locations()
    total_bytes = sum(row.bytes for row in rows)
    total_count = sum(row.blocks for row in rows)
    lines.append(f"  shown     {what}, summed over the processes: {format_bytes(total_bytes)} in "
                 f"{total_count} blocks")
    lines += pool_lines(profile)
    lines.append("")
    lines += location_table(rows, rows_shown)
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


def tree_report(profile, *, min_share=0.01, max_children=10):
    """The profile's call tree as text with box-drawing branches, biggest
    first. Branches under *min_share* of the total, and beyond
    *max_children* per node, are folded into one line each."""
    root = profile.call_tree()
    total = root.bytes
    lines = [f"{profile.title}: {format_bytes(total)} in {root.blocks} blocks"]
    if not root.children:
        lines.append("  (nothing)")
        return "\n".join(lines)
    floor = total * min_share

    def share(size):
        return f"{100 * size / total:5.1f}%" if total else "  0.0%"

    def entries_of(node, prefix):
        """The lines under *node*, in print order, as work items."""
        ordered = node.ordered_children()
        shown = [child for child in ordered[:max_children] if child.bytes >= floor and child.bytes > 0]
        hidden = ordered[len(shown):]
        items = [(child.frame, child, None) for child in shown]
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
            size = sum(child.bytes for child in rest)
            lines.append(f"{prefix}{branch}{format_bytes(size)} {share(size)}  "
                         f"... {len(rest)} smaller {'branch' if len(rest) == 1 else 'branches'}")
            continue
        function, where = describe_location(frame)
        lines.append(f"{prefix}{branch}{format_bytes(node.bytes)} {share(node.bytes)}  {function}  {where}")
        work.extend(reversed(entries_of(node, prefix + ("    " if last else "\u2502   "))))
    return "\n".join(lines)
