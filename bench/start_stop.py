"""What starting and stopping a capture costs a fresh process, side by side.

    python bench/start_stop.py [--repeats N] [--python PATH ...] [--modes M ...]

Each run is a fresh interpreter that imports the tool (not timed), then
times the first start of a capture and its stop around an empty workload,
in CPU time of the whole process (every thread: a writer thread's work
counts) and in wall time. Runs are interleaved over the repetitions, the
figures are medians. With several --python, each one's installed heapscope
is measured in the same run: a build against another.

This is the fixed cost every run of bench/pyperf_set.py pays in its fresh
process (0.1-0.3 s of work), so it is what separates that set's time from
its instruction counts.
"""
import argparse
import json
import subprocess
import sys
import tempfile

import _harness as h

# mode -> the capture started (in the child, `path` is a fresh file name)
MODES = {
    "heapscope-sampled": "heapscope.Tracker(path, trace_python_allocators=True, sampling=True)",
    "heapscope-exact": "heapscope.Tracker(path, trace_python_allocators=True)",
    "memray": "memray.Tracker(path, trace_python_allocators=True)",
}

CHILD = r"""
import json, os, sys, time
mode, path = sys.argv[1], sys.argv[2]
import {module}
tracker = {make}
cpu, wall = time.process_time(), time.perf_counter()
tracker.__enter__()
entered_cpu, entered_wall = time.process_time(), time.perf_counter()
tracker.__exit__(None, None, None)
stopped_cpu, stopped_wall = time.process_time(), time.perf_counter()
print(json.dumps({{"start_cpu": entered_cpu - cpu, "start_wall": entered_wall - wall,
                  "stop_cpu": stopped_cpu - entered_cpu, "stop_wall": stopped_wall - entered_wall}}))
"""


def run_once(python, mode, directory, index):
    module = "memray" if mode == "memray" else "heapscope"
    code = CHILD.format(module=module, make=MODES[mode])
    path = f"{directory}/capture-{index}.bin"
    result = subprocess.run([python, "-c", code, mode, path], capture_output=True, text=True,
                            env=h.bench_env(), timeout=120)
    if result.returncode != 0:
        raise SystemExit(f"{python} {mode}: {result.stderr.strip()[-800:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--python", action="append", help="an interpreter whose heapscope is measured "
                        "(default: this one); repeat to compare builds")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    args = parser.parse_args(argv)
    pythons = args.python or [sys.executable]
    keys = [(python, mode) for python in pythons for mode in args.modes
            if not (mode == "memray" and python != pythons[0])]
    runs = {key: [] for key in keys}
    with tempfile.TemporaryDirectory() as directory:
        schedule = h.interleave(keys, args.repeats)
        for index, (_, key) in enumerate(schedule):
            if index % 20 == 0:
                h.progress(f"run {index + 1}/{len(schedule)}")
            runs[key].append(run_once(*key, directory, index))
    rows = []
    for (python, mode), measured in runs.items():
        cells = [h.median([m[field] for m in measured]) * 1e3
                 for field in ("start_cpu", "start_wall", "stop_cpu", "stop_wall")]
        rows.append(([f"`{python}`"] if len(pythons) > 1 else []) + [mode] + [f"{c:.2f} ms" for c in cells])
    print(f"{h.now_utc()}, medians of {args.repeats} interleaved fresh processes each\n")
    headers = ["mode", "start CPU", "start wall", "stop CPU", "stop wall"]
    print(h.markdown_table((["interpreter"] if len(pythons) > 1 else []) + headers, rows))


if __name__ == "__main__":
    main()
