"""Sampling overhead side by side: plain Python, heapscope exact and sampled,
memray, and Scalene's memory mode.

    python bench/run_sampling.py [--reps 5 | --quick] [--workloads W ...] [--modes M ...]
                                 [--intervals] [--accuracy] [--write-results]

heapscope and memray write a capture file with Python's allocators traced
(`trace_python_allocators=True`); heapscope-sampled is the same Tracker with
`sampling=True` (Poisson byte sampling at the default mean interval);
heapscope-door-sampled is `heapscope.tracemalloc.start(64, sampling=True)`
(Python's allocators only, no file).
Scalene runs the same driver under `python -m scalene run --memory` (CPU and
memory profiling, its sampled allocation tracking through LD_PRELOAD); its
figure is the workload's own time measured inside the process, like the
others'. --intervals adds heapscope-sampled-16k ... -1024k, the runs from
which the default interval was chosen (docs/sampling.md). --accuracy adds
the per-line error of sampled captures against exact ones (bench/_accuracy.py).
"""
import os
import sys

import _harness as h
import run_tracemalloc as rt

MODES = ["plain", "heapscope-exact", "heapscope-sampled", "heapscope-door-sampled", "memray-file", "scalene"]
INTERVAL_MODES = [f"heapscope-sampled-{k}k" for k in (16, 32, 64, 128, 256, 512, 1024)]
SECTION = "sampling"


def run_one(mode, workload, timeout):
    if mode == "scalene":
        return h.run_driver_under_scalene(h.workload_path(workload), timeout)
    return h.run_driver(mode, workload, timeout=timeout)


def cpu_ratios(runs, workloads, modes):
    """{(workload, mode): median CPU time / plain's median CPU time}."""
    medians = {(w, m): h.median([r["cpu_s"] for r in runs
                                 if r["workload"] == w and r["mode"] == m and "cpu_s" in r])
               for w in workloads for m in modes}
    return {(w, m): medians[w, m] / medians[w, "plain"] if medians[w, m] and medians[w, "plain"] else None
            for w in workloads for m in modes}


def ratio_table(workloads, modes, base, ratio, errors):
    rows = []
    for w in workloads:
        row = [w, h.fmt_seconds(base(w))]
        for m in modes[1:]:
            row.append(h.fmt_ratio(ratio(w, m)) + (f" ({errors(w, m)} failed)" if errors(w, m) else ""))
        rows.append(row)
    geo = ["**geomean**", ""]
    for m in modes[1:]:
        geo.append(h.fmt_ratio(h.geomean([ratio(w, m) for w in workloads if ratio(w, m)])))
    return h.markdown_table(["workload", "plain"] + modes[1:], rows + [geo])


def table(args, cells, modes, workloads, cpu):
    errors = lambda w, m: len(cells[w, m]["errors"])  # noqa: E731
    out = [f"CPU time of the process (all threads: a tool's writer thread counts) against plain Python, "
           f"median of {args.reps} interleaved run(s) per cell. The plain column is plain's CPU seconds.", "",
           ratio_table(workloads, modes, lambda w: cpu.get((w, "plain-seconds")),
                       lambda w, m: cpu[w, m], errors),
           "", f"Wall time against plain Python (same runs; more exposed to other jobs on the machine).", "",
           ratio_table(workloads, modes, lambda w: cells[w, "plain"]["time"],
                       lambda w, m: cells[w, m]["ratio"], errors)]
    sizes = [[w] + [h.fmt_bytes(cells[w, m]["capture"]) for m in modes if cells[w, m].get("capture")]
             for w in workloads]
    file_modes = [m for m in modes if any(cells[w, m].get("capture") for w in workloads)]
    if file_modes:
        out += ["", "Capture file size (median).", "", h.markdown_table(["workload"] + file_modes, sizes)]
    notes = [f"- `{w}` / `{m}`: {len(c['errors'])} run(s) failed: {c['errors'][0]}"
             for (w, m), c in cells.items() if c["errors"]]
    if notes:
        out += ["", "Notes:", ""] + notes
    return "\n".join(out)


ACCURACY_INTERVALS = ["true", "4096"]  # the default, and a small interval
ACCURACY_SEEDS = ["1", "2", "3"]


def accuracy(workloads, timeout):
    """Per-line error of sampled captures against an exact one (bench/_accuracy.py)."""
    results = {}
    for w in workloads:
        for interval in ACCURACY_INTERVALS:
            h.progress(f"accuracy {w} / sampling={interval}")
            results[w, interval] = h.run_json([os.path.join(h.BENCH, "_accuracy.py"),
                                               os.path.join(h.WORKLOADS, w + ".py"), interval] + ACCURACY_SEEDS,
                                              timeout=timeout)
    return results


def accuracy_table(workloads, results):
    headers = ["workload", "exact peak", "lines for 90%"]
    for interval in ACCURACY_INTERVALS:
        name = "default" if interval == "true" else f"{int(interval) // 1024} KiB"
        headers += [f"max line error, {name}", f"peak error, {name}"]
    rows = []
    for w in workloads:
        first = results[w, ACCURACY_INTERVALS[0]]
        if "error" in first:
            rows.append([w, "failed: " + first["error"]] + [""] * (len(headers) - 2))
            continue
        row = [w, h.fmt_bytes(first["exact_peak_bytes"]), str(first["lines_for_90pct"])]
        for interval in ACCURACY_INTERVALS:
            r = results[w, interval]
            if "error" in r:
                row += ["failed", ""]
                continue
            row += [f"{100 * h.median([x['max_line_error'] for x in r['runs']]):.1f}%",
                    f"{100 * h.median([x['peak_error'] for x in r['runs']]):.1f}%"]
        rows.append(row)
    return "\n".join([
        f"Accuracy: bytes at the high-water mark per source line of the workload, sampled capture against "
        f"an exact one; the largest relative error among the lines that hold 90% of the exact peak, and "
        f"the error of the peak itself (medians over seeds {', '.join(ACCURACY_SEEDS)}).", "",
        h.markdown_table(headers, rows)])


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    intervals = "--intervals" in argv
    with_accuracy = "--accuracy" in argv
    argv = [a for a in argv if a not in ("--intervals", "--accuracy")]
    modes = MODES + INTERVAL_MODES
    args = rt.parse_args(argv, modes)
    if "--modes" not in argv:  # the default set, and the interval sweep only when asked
        args.modes = MODES + (INTERVAL_MODES if intervals else [])
    report = h.probe_modes(args.modes)
    runnable = [m for m in args.modes if report[m]["ok"]]
    for m in args.modes:
        if not report[m]["ok"]:
            h.progress(f"skipping {m}: {report[m]['error']}")
    runs = rt.run_all(args, runnable, run_one)
    cells = rt.summarize(runs, args.workloads, runnable)
    cpu = cpu_ratios(runs, args.workloads, runnable)
    for w in args.workloads:
        cpu[w, "plain-seconds"] = h.median([r["cpu_s"] for r in runs
                                            if r["workload"] == w and r["mode"] == "plain" and "cpu_s" in r])
    machine = h.machine_info()
    tools = {m.split("-")[0]: report[m].get("version") for m in runnable if m != "plain"}
    command, date = h.command_line(), h.now_utc()
    raw = h.save_raw(SECTION, {"command": command, "date": date, "machine": machine, "tools": tools,
                               "reps": args.reps, "workloads": args.workloads, "modes": runnable, "runs": runs})
    text = table(args, cells, runnable, args.workloads, cpu)
    if with_accuracy:
        text += "\n\n" + accuracy_table(args.workloads, accuracy(args.workloads, args.timeout))
    print(text)
    h.progress(f"raw results: {raw}")
    if args.write_results:
        h.replace_section(SECTION, "\n".join([
            "## Sampling", "",
            "Sampled captures against exact ones and the peers: heapscope.Tracker exact and with "
            "`sampling=True`, memray.Tracker (`trace_python_allocators=True` for both tools), and Scalene's "
            "memory mode (`scalene run --memory`).", "",
            f"- Date: {date}", f"- Command: `{command}`", h.machine_markdown(machine, tools), "", text]))


if __name__ == "__main__":
    main()
