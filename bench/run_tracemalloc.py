"""Side-by-side timing of heapscope.tracemalloc against stdlib tracemalloc and memray.

    python bench/run_tracemalloc.py [--reps 5 | --quick] [--workloads W ...]
                                    [--modes M ...] [--write-results]

Every run is a fresh interpreter (bench/_driver.py) that times only the
workload; runs are interleaved round-robin over repetitions.  Prints Markdown
tables to stdout, progress to stderr, raw numbers to bench/out/*.json, and with
--write-results rewrites the "tracemalloc door" section of bench/RESULTS.md.
"""
import argparse
import sys

import _harness as h

MODES = ["plain", "tracemalloc-1", "tracemalloc-64", "memray", "heapscope-64"]
TOOL = {"tracemalloc-1": "tracemalloc", "tracemalloc-64": "tracemalloc",
        "memray": "memray", "heapscope-64": "heapscope", "heapscope-64-nocache": "heapscope"}
MEMORY_MODES = ["tracemalloc-1", "tracemalloc-64", "heapscope-64"]
SECTION = "tracemalloc"


def parse_args(argv, modes=MODES):
    names = h.name_list
    workloads = h.workload_names()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=5, help="repetitions per (workload, mode)")
    p.add_argument("--quick", action="store_true", help="one repetition (same as --reps 1)")
    p.add_argument("--workloads", nargs="+", type=names(workloads), action="extend",
                   metavar="W", help=f"subset of: {', '.join(workloads)}")
    p.add_argument("--modes", nargs="+", type=names(modes), action="extend",
                   metavar="M", help=f"subset of: {', '.join(modes)} (plain is always run)")
    p.add_argument("--timeout", type=float, default=1200, help="seconds per run (default 1200)")
    p.add_argument("--write-results", action="store_true",
                   help="rewrite the tracemalloc section of bench/RESULTS.md")
    args = p.parse_args(argv)
    args.workloads = [w for w in workloads if w in sum(args.workloads or [workloads], [])]
    chosen = sum(args.modes or [modes], [])
    args.modes = [m for m in modes if m in chosen or m == "plain"]
    if args.quick:
        args.reps = 1
    return args


def run_all(args, runnable, run_one=h.run_driver, once=()):
    """Every (workload, mode) pair args.reps times, interleaved; *run_one(mode,
    workload, timeout=...)* makes one run (a fresh driver process by default).
    Modes in *once* run in the first repetition only, still interleaved."""
    schedule = [(rep, (w, m)) for rep, (w, m) in
                h.interleave([(w, m) for w in args.workloads for m in runnable], args.reps)
                if rep == 0 or m not in once]
    runs = []
    for i, (rep, (workload, mode)) in enumerate(schedule, 1):
        result = run_one(mode, workload, timeout=args.timeout)
        result.update(rep=rep, workload=workload, mode=mode)
        runs.append(result)
        status = ("FAILED: " + result["error"] if "error" in result else
                  h.fmt_seconds(result.get("elapsed_s")) +
                  (f" wall, {h.fmt_seconds(result['cpu_s'])} CPU" if "cpu_s" in result else ""))
        h.progress(f"[{i}/{len(schedule)}] rep {rep + 1}/{args.reps} {workload} / {mode}: {status}")
    return runs


def summarize(runs, workloads, modes):
    """{(workload, mode): {"time", "cpu", "ratio", "tool_memory", "rss", "capture", "ok", "errors"}}:
    medians of the successful runs ("time" is wall time, "ratio" its ratio to plain's)."""
    cells = {}
    for w in workloads:
        for m in modes:
            mine = [r for r in runs if r["workload"] == w and r["mode"] == m]
            ok = [r for r in mine if "error" not in r]
            cells[w, m] = {
                "ok": len(ok), "errors": [r["error"] for r in mine if "error" in r],
                "time": h.median([r["elapsed_s"] for r in ok]),
                "cpu": h.median([r.get("cpu_s") for r in ok]),
                "tool_memory": h.median([r.get("tool_memory_bytes") for r in ok]),
                "rss": h.median([r.get("peak_rss_bytes") for r in ok]),
                "capture": h.median([r.get("capture_bytes") for r in ok]),
            }
        base = cells[w, "plain"]["time"]
        for m in modes:
            t = cells[w, m]["time"]
            cells[w, m]["ratio"] = t / base if t and base else None
    return cells


def report(args, cells, probe):
    modes, workloads = args.modes, args.workloads
    skipped = {m: probe[m]["error"] for m in modes if not probe[m]["ok"]}

    def cell(w, m, text):
        c = cells.get((w, m))
        if m in skipped:
            return "skipped (see notes)"
        if not c or c["ok"] == 0:
            return "failed"
        return text(c) + (f" ({len(c['errors'])} failed)" if c["errors"] else "")

    def time_text(m):
        return lambda c: h.fmt_seconds(c["time"]) + ("" if m == "plain" else f" ({h.fmt_ratio(c['ratio'])})")

    rows = [[w] + [cell(w, m, time_text(m)) for m in modes] for w in workloads]
    geo = ["**geomean ratio**"]
    for m in modes:
        ratios = [cells[w, m]["ratio"] for w in workloads if (w, m) in cells]
        have = [r for r in ratios if r]
        geo.append("skipped (see notes)" if m in skipped else h.fmt_ratio(h.geomean(have)) +
                   ("" if len(have) == len(workloads) else f" ({len(have)}/{len(workloads)})"))
    out = [f"Wall time of the workload alone, median of {args.reps} interleaved run(s) "
           "per cell, and slowdown vs plain (median/median).", "",
           h.markdown_table(["workload"] + modes, rows + [geo])]

    mem_modes = [m for m in MEMORY_MODES if m in modes]
    if mem_modes:
        headers = ["workload"] + mem_modes
        both = {"tracemalloc-64", "heapscope-64"} <= set(mem_modes)
        if both:
            headers.append("heapscope / tracemalloc-64")
        if "memray" in modes:
            headers.append("memray capture file")
        rows = []
        for w in workloads:
            row = [w] + [cell(w, m, lambda c: h.fmt_bytes(c["tool_memory"])) for m in mem_modes]
            if both:
                a, b = (cells.get((w, m), {}).get("tool_memory") for m in ("heapscope-64", "tracemalloc-64"))
                row.append(h.fmt_ratio(a / b) if a is not None and b else "–")
            if "memray" in modes:
                row.append(cell(w, "memray", lambda c: h.fmt_bytes(c["capture"])))
            rows.append(row)
        out += ["", "Tool memory: `get_tracemalloc_memory()` just before stop (median).", "",
                h.markdown_table(headers, rows)]

    rows = [[w] + [cell(w, m, lambda c: h.fmt_bytes(c["rss"])) for m in modes] for w in workloads]
    out += ["", "Peak RSS of the whole process (VmHWM, median).", "",
            h.markdown_table(["workload"] + modes, rows)]

    notes = [f"- `{m}` skipped, not importable here: {why}" for m, why in skipped.items()]
    for (w, m), c in cells.items():
        if c["errors"]:
            notes.append(f"- `{w}` / `{m}`: {len(c['errors'])} run(s) failed: {c['errors'][0]}")
    if notes:
        out += ["", "Notes:", ""] + notes
    return "\n".join(out)


def tool_versions(probe, modes):
    versions = {"numpy": h.package_versions(["numpy"])["numpy"] or "not installed"}
    for m in modes:
        if m in TOOL:
            versions[TOOL[m]] = probe[m].get("version") if probe[m]["ok"] else "not importable"
    return versions


INTRO = ("heapscope.tracemalloc against the stdlib tracemalloc and memray "
         "(`trace_python_allocators=True`), each run in a fresh interpreter.")


def main(argv=None, modes=MODES, section=SECTION, heading="## tracemalloc door", intro=INTRO):
    args = parse_args(sys.argv[1:] if argv is None else argv, modes)
    probe = h.probe_modes(args.modes)
    runnable = [m for m in args.modes if probe[m]["ok"]]
    for m in args.modes:
        if not probe[m]["ok"]:
            h.progress(f"skipping {m}: {probe[m]['error']}")
    if "plain" not in runnable:
        sys.exit("plain mode cannot run: " + probe["plain"].get("error", "?"))

    runs = run_all(args, runnable)
    cells = summarize(runs, args.workloads, runnable)
    machine = h.machine_info()
    tools = tool_versions(probe, args.modes)
    command, date = h.command_line(), h.now_utc()
    raw = h.save_raw(section, {"command": command, "date": date, "machine": machine,
                                     "tools": tools, "probe": probe, "reps": args.reps,
                                     "workloads": args.workloads, "modes": args.modes,
                                     "runs": runs})
    table = report(args, cells, probe)
    print(table)
    h.progress(f"raw results: {raw}")
    if args.write_results:
        h.replace_section(section, "\n".join([
            heading, "", intro, "",
            f"- Date: {date}", f"- Command: `{command}`", h.machine_markdown(machine, tools), "",
            table]))
        h.progress(f"wrote section '{section}' of {h.RESULTS_MD}")


if __name__ == "__main__":
    main()
