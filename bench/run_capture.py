"""Capture files side by side: heapscope.Tracker against memray.Tracker.

    python bench/run_capture.py [--reps 3 | --quick] [--workloads W ...] [--big] [--write-results]

Both tools trace Python's allocators (memray's ``trace_python_allocators=True``)
and write to a file, with and without native stacks. For every run: the
slowdown against plain Python (timed span: tracker start + workload + stop,
as in run_tracemalloc.py), the capture's size, and the time to compute the
peak report from that capture in a fresh process (bench/_peak_report.py:
open, high-water-mark records, Python stack of each record).

--big adds bench/big/events50m.py (about 50 million events) for the report
time on a large capture.
"""
import os
import sys

import _harness as h
import run_tracemalloc as rt

MODES = ["plain", "memray-capture", "heapscope-capture", "memray-capture-native", "heapscope-capture-native"]
PAIRS = [("memray-capture", "heapscope-capture"), ("memray-capture-native", "heapscope-capture-native")]
SECTION = "capture"


def cells_for(runs, workloads, modes):
    cells = rt.summarize(runs, workloads, modes)
    for (w, m), c in cells.items():
        ok = [r for r in runs if r["workload"] == w and r["mode"] == m and "error" not in r]
        c["report"] = h.median([r.get("report_s") for r in ok if r.get("report_s") is not None])
        c["events"] = h.median([r.get("total_allocations") for r in ok if r.get("total_allocations") is not None])
        c["report_errors"] = [r["report_error"] for r in ok if "report_error" in r]
    return cells


def table(args, cells, modes, workloads):
    def get(w, m, key):
        return cells.get((w, m), {}).get(key)

    headers = ["workload", "plain"]
    for memray, ours in PAIRS:
        if memray in modes and ours in modes:
            headers += [memray, ours, "ratio"]
    rows, geo = [], {}
    for w in workloads:
        row = [w, h.fmt_seconds(get(w, "plain", "time"))]
        for memray, ours in PAIRS:
            if memray in modes and ours in modes:
                a, b = get(w, memray, "ratio"), get(w, ours, "ratio")
                row += [h.fmt_ratio(a), h.fmt_ratio(b), h.fmt_ratio(b / a) if a and b else "–"]
                geo.setdefault(memray, []).append(a)
                geo.setdefault(ours, []).append(b)
        rows.append(row)
    g = ["**geomean**", ""]
    for memray, ours in PAIRS:
        if memray in modes and ours in modes:
            ga = h.geomean([x for x in geo.get(memray, []) if x])
            gb = h.geomean([x for x in geo.get(ours, []) if x])
            g += [h.fmt_ratio(ga), h.fmt_ratio(gb), h.fmt_ratio(gb / ga) if ga and gb else "–"]
    out = [f"Slowdown against plain Python (median of {args.reps} interleaved run(s)); "
           "ratio = heapscope's slowdown / memray's.", "", h.markdown_table(headers, rows + [g])]

    headers = ["workload"]
    for memray, ours in PAIRS:
        if memray in modes and ours in modes:
            headers += [f"{memray} size", f"{ours} size", "size ratio", "memray report", "heapscope report",
                        "report ratio"]
    rows = []
    for w in workloads:
        row = [w]
        for memray, ours in PAIRS:
            if memray in modes and ours in modes:
                sa, sb = get(w, memray, "capture"), get(w, ours, "capture")
                ra, rb = get(w, memray, "report"), get(w, ours, "report")
                row += [h.fmt_bytes(sa), h.fmt_bytes(sb), h.fmt_ratio(sb / sa) if sa and sb else "–",
                        h.fmt_seconds(ra), h.fmt_seconds(rb), h.fmt_ratio(rb / ra) if ra and rb else "–"]
        rows.append(row)
    out += ["", "Capture size and peak-report time (median; report = open the file, high-water-mark "
            "records, each record's Python stack; fresh process).", "", h.markdown_table(headers, rows)]
    events = [[w] + [f"{int(get(w, m, 'events')):,}" if get(w, m, "events") else "–" for m in modes[1:]]
              for w in workloads]
    out += ["", "`metadata.total_allocations` as each tool's reader reports it. They do not count the same "
            "thing: heapscope counts allocations; memray's figure is about allocations plus deallocations on "
            "the allocation-heavy workloads, and 41.7 million on call_heavy, which allocates almost nothing.", "",
            h.markdown_table(["workload"] + modes[1:], events)]
    notes = []
    for (w, m), c in cells.items():
        if c["errors"]:
            notes.append(f"- `{w}` / `{m}`: {len(c['errors'])} run(s) failed: {c['errors'][0]}")
        if c.get("report_errors"):
            notes.append(f"- `{w}` / `{m}`: report failed: {c['report_errors'][0]}")
    if notes:
        out += ["", "Notes:", ""] + notes
    return "\n".join(out)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    big = "--big" in argv
    argv = [a for a in argv if a != "--big"]
    args = rt.parse_args(argv, MODES)
    probe = h.probe_modes(args.modes)
    runnable = [m for m in args.modes if probe[m]["ok"]]
    for m in args.modes:
        if not probe[m]["ok"]:
            h.progress(f"skipping {m}: {probe[m]['error']}")
    runs = rt.run_all(args, runnable)
    workloads = list(args.workloads)
    if big:
        big_path = os.path.join(h.BENCH, "big", "events50m.py")
        big_modes = [m for m in ("plain", "memray-capture", "heapscope-capture") if m in runnable]
        for rep in range(args.reps):
            for mode in big_modes:
                result = h.run_json([h.DRIVER, mode, big_path], timeout=args.timeout)
                result.update(rep=rep, workload="events50m", mode=mode)
                runs.append(result)
                h.progress(f"big rep {rep + 1}/{args.reps} {mode}: "
                           f"{h.fmt_seconds(result.get('elapsed_s')) if 'error' not in result else result['error']}")
        workloads.append("events50m")
    cells = cells_for(runs, workloads, runnable)
    machine = h.machine_info()
    tools = rt.tool_versions({m: probe[m] for m in args.modes}, [])
    for m in runnable:
        if m != "plain":
            tools[m.split("-")[0]] = probe[m].get("version")
    command, date = h.command_line(), h.now_utc()
    raw = h.save_raw(SECTION, {"command": command, "date": date, "machine": machine, "tools": tools,
                               "reps": args.reps, "workloads": workloads, "modes": runnable, "runs": runs})
    text = table(args, cells, runnable, workloads)
    print(text)
    h.progress(f"raw results: {raw}")
    if args.write_results:
        h.replace_section(SECTION, "\n".join([
            "## Capture files (Tracker)", "",
            "heapscope.Tracker against memray.Tracker, both with `trace_python_allocators=True`, "
            "writing to a file; with and without native traces.", "",
            f"- Date: {date}", f"- Command: `{command}`", h.machine_markdown(machine, tools), "", text]))
        h.progress(f"wrote section '{SECTION}' of {h.RESULTS_MD}")


if __name__ == "__main__":
    main()
