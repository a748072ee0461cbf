"""The "real programs" set (issue 17): pyperformance's benchmarks under every tool, side by side.

    python bench/pyperf_set.py --list
    python bench/pyperf_set.py [--only NAME ...] [--repeats N] [--modes M ...] [--once M ...]
                               [--timeout S] [--json PATH] [--write-results]
    python bench/pyperf_set.py --from-json bench/out/pyperf-....json [--write-results]

Each benchmark is pyperformance's own workload function, imported from the
installed pyperformance package and run in-process for a fixed amount of work
(bench/pyperf_workloads.py), without pyperf's worker processes. Every run is a
fresh interpreter (bench/_driver.py, the same driver as the other runners)
that times tool start + workload + tool stop, in CPU time (all threads of
the process, so a tool's writer thread counts) and wall time. Runs are
interleaved over the repetitions and each cell is a median (bench/_harness.py).

Prints progress to stderr and Markdown tables to stdout, writes the raw runs
and the summary as JSON (bench/out/pyperf-*.json, or --json PATH), and with
--write-results rewrites the "Real programs (issue 17)" section of
bench/RESULTS.md. Needs the bench venv: bench/requirements-pyperf.txt.
"""
import argparse
import json
import os
import sys

import _harness as h
import pyperf_workloads
import run_sampling
import run_tracemalloc as rt

# Mode -> what runs around the workload; the order of the table columns.
MODES = {
    "plain": "nothing",
    "plain-thread": "plain Python with one more thread, asleep (any tool's writer thread, doing nothing)",
    "heapscope-exact": "`heapscope.Tracker(file, trace_python_allocators=True)` "
                       "(`heapscope run --trace-python-allocators`)",
    "heapscope-exact-nopyalloc": "`heapscope.Tracker(file)`: exact, Python's allocators not traced",
    "heapscope-sampled": "`heapscope.Tracker(file, trace_python_allocators=True, sampling=True)` "
                         "(`heapscope run --sample --trace-python-allocators`, default interval 64 KiB)",
    "heapscope-64": "`heapscope.tracemalloc.start(64)` (the tracemalloc door, no file)",
    "heapscope-exact-noanchors": "heapscope-exact with `HEAPSCOPE_FRAME_ANCHORS=0`: every walk reads every frame",
    "heapscope-64-noanchors": "heapscope-64 with `HEAPSCOPE_FRAME_ANCHORS=0`",
    "memray-file": "`memray.Tracker(file, trace_python_allocators=True)` (`memray run --trace-python-allocators`)",
    "memray-file-nopyalloc": "`memray.Tracker(file)`: memray's default, pymalloc's arenas, not its blocks",
    "tracemalloc-1": "stdlib `tracemalloc.start(1)`",
    "tracemalloc-64": "stdlib `tracemalloc.start(64)`",
    "scalene": "`python -m scalene run --memory` around the driver (a program, not in-process; see notes)",
}

# (heapscope mode, memray mode, what is compared, per-benchmark target or None)
HEAD_TO_HEAD = [
    ("heapscope-exact", "memray-file", "exact, Python allocators traced, both tools", 0.5),
    ("heapscope-exact-nopyalloc", "memray-file-nopyalloc", "both tools' default modes", None),
    ("heapscope-exact", "memray-file-nopyalloc", "heapscope seeing every block vs memray's default", 1.0),
]

# (description, numerator mode, denominator mode, "every" or "geomean", bound)
TARGETS = [
    ("heapscope exact (Python allocators) / memray same mode, every benchmark", "heapscope-exact",
     "memray-file", "every", 0.5),
    ("heapscope exact (Python allocators) / memray same mode, geomean", "heapscope-exact",
     "memray-file", "geomean", 0.4),
    ("heapscope exact (every block) / memray default, every benchmark", "heapscope-exact",
     "memray-file-nopyalloc", "every", 1.0),
    ("heapscope sampled / plain, geomean", "heapscope-sampled", "plain", "geomean", 1.03),
    ("`heapscope.tracemalloc.start(64)` / plain, geomean", "heapscope-64", "plain", "geomean", 1.3),
]

SECTION = "pyperf"
COLLECTION = os.path.join(h.BENCH, "pyperf_workloads.py")


def parse_args(argv):
    names = h.name_list
    benchmarks = sorted(pyperf_workloads.BENCHMARKS)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--list", action="store_true", help="list the benchmarks and modes, then exit")
    p.add_argument("--only", nargs="+", type=names(benchmarks), action="extend", metavar="NAME",
                   help="subset of the benchmarks (space- or comma-separated)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repetitions per cell (default 3)")
    p.add_argument("--modes", nargs="+", type=names(list(MODES)), action="extend", metavar="M",
                   help=f"subset of: {', '.join(MODES)} (plain always runs)")
    p.add_argument("--once", nargs="*", type=names(list(MODES)), action="extend", metavar="M",
                   help="modes run in the first repetition only (default: tracemalloc-64, 50x plain, "
                        "which alone would take half the run); --once with no name: none")
    p.add_argument("--timeout", type=float, default=600, help="seconds per run (default 600)")
    p.add_argument("--json", metavar="PATH", help="write the raw runs and summary here too")
    p.add_argument("--from-json", metavar="PATH",
                   help="no runs: report (and with --write-results publish) the runs saved in PATH")
    p.add_argument("--write-results", action="store_true",
                   help="rewrite the 'Real programs (issue 17)' section of bench/RESULTS.md")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    chosen = sum(args.only or [benchmarks], [])
    args.workloads = [b for b in benchmarks if b in chosen]
    chosen = sum(args.modes or [list(MODES)], [])
    args.modes = [m for m in MODES if m in chosen or m == "plain"]
    args.reps = args.repeats  # the name run_tracemalloc.run_all reads
    args.once = ["tracemalloc-64"] if args.once is None else sum(args.once, [])
    return args


def list_benchmarks():
    rows = [[name, str(work), description]
            for name, (_, work, description, _) in sorted(pyperf_workloads.BENCHMARKS.items())]
    print(h.markdown_table(["benchmark", "work", "what it runs"], rows))
    print()
    print(h.markdown_table(["mode", "what runs around the workload"], [[m, what] for m, what in MODES.items()]))


def run_one(mode, workload, timeout):
    target = f"{COLLECTION}::{workload}"
    if mode == "scalene":
        return h.run_driver_under_scalene(target, timeout)
    return h.run_driver(mode, workload, timeout=timeout, target=target)


def ratio(cells, workload, mode, base, key):
    a, b = cells[workload, mode][key], cells[workload, base][key]
    return a / b if a and b else None


def failed(cells):
    return lambda w, m: len(cells[w, m]["errors"])


def head_to_head_table(cells, workloads, pairs, key):
    headers = ["benchmark"] + [f"{a} / {b}" for a, b, _, _ in pairs]
    rows = [[w] + [h.fmt_ratio(ratio(cells, w, a, b, key)) for a, b, _, _ in pairs] for w in workloads]
    rows.append(["**geomean**"] + [h.fmt_ratio(h.geomean([ratio(cells, w, a, b, key) for w in workloads]))
                                   for a, b, _, _ in pairs])
    return h.markdown_table(headers, rows)


def sizes_table(cells, workloads, pairs):
    headers, rows = ["benchmark"], [[w] for w in workloads]
    geo = ["**geomean**"]
    for a, b in pairs:
        headers += [a, b, "ratio"]
        ratios = []
        for w, row in zip(workloads, rows):
            x, y = cells[w, a]["capture"], cells[w, b]["capture"]
            ratios.append(x / y if x and y else None)
            row += [h.fmt_bytes(x), h.fmt_bytes(y), h.fmt_ratio(ratios[-1])]
        geo += ["", "", h.fmt_ratio(h.geomean(ratios))]
    return h.markdown_table(headers, rows + [geo])


def evaluate_targets(cells, workloads, modes):
    """[{target, cpu, wall, worst, met_cpu, met_wall}] for the targets whose modes ran."""
    results = []
    for description, mode, base, kind, bound in TARGETS:
        if mode not in modes or base not in modes:
            continue
        entry = {"target": description, "bound": bound, "kind": kind}
        for key, name in (("cpu", "cpu"), ("time", "wall")):
            ratios = {w: ratio(cells, w, mode, base, key) for w in workloads}
            ratios = {w: r for w, r in ratios.items() if r}
            if not ratios:
                entry[name] = None
                continue
            if kind == "geomean":
                value = h.geomean(list(ratios.values()))
                entry[name] = value
                entry[f"met_{name}"] = value <= bound
            else:
                worst = max(ratios, key=ratios.get)
                over = sorted((w for w, r in ratios.items() if r > bound), key=lambda w: -ratios[w])
                entry[name] = ratios[worst]
                entry[f"met_{name}"] = not over
                entry[f"over_{name}"] = [f"{w} {h.fmt_ratio(ratios[w])}" for w in over]
        results.append(entry)
    return results


def targets_table(results):
    def verdict(entry, name):
        if entry.get(name) is None:
            return "–"
        value = h.fmt_ratio(entry[name])
        if entry[f"met_{name}"]:
            return f"{value} met"
        gap = entry[name] / entry["bound"]
        return f"{value} **missed** ({gap:.2f}× the bound)"

    rows = []
    for entry in results:
        what = "worst" if entry["kind"] == "every" else "geomean"
        over = entry.get("over_cpu") or []
        rows.append([entry["target"], f"≤ {entry['bound']:g}×", what, verdict(entry, "cpu"), verdict(entry, "wall"),
                     f"{len(over)}: " + ", ".join(over) if over else ""])
    return h.markdown_table(["target", "bound", "measure", "CPU time", "wall time", "over the bound (CPU)"], rows)


def report(args, cells, runnable, skipped):
    workloads = args.workloads
    errors = failed(cells)
    pairs = [p for p in HEAD_TO_HEAD if p[0] in runnable and p[1] in runnable]
    once = [m for m in args.once if m in runnable and args.reps > 1]
    out = ["**CPU time** (primary) against plain Python: median of "
           f"{args.reps} interleaved run(s) per cell" +
           (f" ({', '.join(once)}: one run, in the first repetition)" if once else "") +
           "; the plain column is plain's CPU seconds.", "",
           run_sampling.ratio_table(workloads, runnable, lambda w: cells[w, "plain"]["cpu"],
                                    lambda w, m: ratio(cells, w, m, "plain", "cpu"), errors),
           "", "**Wall time** against plain Python (same runs; more exposed to the other jobs on the machine).", "",
           run_sampling.ratio_table(workloads, runnable, lambda w: cells[w, "plain"]["time"],
                                    lambda w, m: ratio(cells, w, m, "plain", "time"), errors)]
    if pairs:
        out += ["", "heapscope against memray in the same mode: the ratio of their slowdowns "
                "(heapscope's median / memray's median), CPU time; below 1 heapscope is cheaper.", "",
                head_to_head_table(cells, workloads, pairs, "cpu"),
                "", "The same on wall time.", "", head_to_head_table(cells, workloads, pairs, "time")]
    results = evaluate_targets(cells, workloads, runnable)
    if results:
        out += ["", "Targets of issue 17 on this set.", "", targets_table(results)]
    size_pairs = [(a, b) for a, b in (("heapscope-exact", "memray-file"),
                                      ("heapscope-exact-nopyalloc", "memray-file-nopyalloc"))
                  if a in runnable and b in runnable]
    if size_pairs:
        out += ["", "Capture file sizes (median); ratio = heapscope / memray.", "",
                sizes_table(cells, workloads, size_pairs)]
    notes = [f"- `{m}` skipped: {why}" for m, why in skipped.items()]
    notes += [f"- `{w}` / `{m}`: {len(c['errors'])} run(s) failed: {c['errors'][0]}"
              for (w, m), c in cells.items() if c["errors"]]
    if notes:
        out += ["", "Notes:", ""] + notes
    return "\n".join(out), results


def measure(args):
    """Run the set; return the record that bench/out/pyperf-*.json keeps."""
    pyperf_workloads.benchmarks_dir()  # fails early, with the install hint, without pyperformance
    report_probe = h.probe_modes(args.modes)
    runnable = [m for m in args.modes if report_probe[m]["ok"]]
    skipped = {m: report_probe[m]["error"] for m in args.modes if not report_probe[m]["ok"]}
    for m, why in skipped.items():
        h.progress(f"skipping {m}: {why}")
    if "plain" not in runnable:
        sys.exit("plain mode cannot run: " + skipped.get("plain", "?"))
    load_before = os.getloadavg()
    runs = rt.run_all(args, runnable, run_one, once=args.once)
    load_after = os.getloadavg()
    tools = {"pyperformance": h.package_versions(["pyperformance"])["pyperformance"]}
    tools.update({m: report_probe[m].get("version") for m in runnable if m != "plain"})
    return {"command": h.command_line(), "date": h.now_utc(), "machine": h.machine_info(), "tools": tools,
            "reps": args.reps, "once": args.once, "load_average_before": load_before,
            "load_average_after": load_after, "workloads": args.workloads, "modes": runnable,
            "skipped": skipped, "runs": runs}


def results_section(data, runnable, text):
    load = lambda key: ", ".join(f"{x:.1f}" for x in data[key])  # noqa: E731
    tools = {mode.split("-")[0]: version for mode, version in data["tools"].items()}  # one line per tool
    return "\n".join([
        "## Real programs (issue 17)", "",
        "pyperformance's benchmarks, each its own workload function imported from the pyperformance "
        "package and run in-process for a fixed amount of work (bench/pyperf_workloads.py; no pyperf "
        "worker processes), under every tool in one run.", "",
        f"- Date: {data['date']}", f"- Command: `{data['command']}`",
        h.machine_markdown(data["machine"], tools),
        f"- Load average (1, 5, 15 min) at the start: {load('load_average_before')}; at the end: "
        f"{load('load_average_after')}. Other engineers build and test on the same 2 cores during the run, "
        "so wall times are inflated and noisy; **CPU time is the primary figure**, and even it is disturbed "
        "by the shared caches and clock. Read the ratios as ±5-10%.",
        "", h.markdown_table(["mode", "what runs around the workload"], [[m, MODES[m]] for m in runnable]),
        "", text])


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.list:
        list_benchmarks()
        return
    if args.from_json:
        with open(args.from_json, encoding="utf-8") as f:
            data = json.load(f)
        args.workloads, args.reps, args.once = data["workloads"], data["reps"], data["once"]
    else:
        data = measure(args)
    runnable = data["modes"]
    cells = rt.summarize(data["runs"], args.workloads, runnable)
    text, data["targets"] = report(args, cells, runnable, data["skipped"])
    data["cells"] = [{"workload": w, "mode": m, **c} for (w, m), c in cells.items()]
    if not args.from_json:
        h.progress(f"raw results: {h.save_raw(SECTION, data)}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
    print(text)
    if args.write_results:
        h.replace_section(SECTION, results_section(data, runnable, text))
        h.progress(f"wrote section '{SECTION}' of {h.RESULTS_MD}")


if __name__ == "__main__":
    main()
