"""HTML flame graphs of the same program, heapscope against memray: page
size and build time, side by side in one run.

    python bench/run_reports.py [--reps 3] [--big] [--program PATH [ARGS...]]

The program (examples/order_pipeline.py by default; --big adds
bench/big/events50m.py, about 50 million events) is captured once by
`memray run --trace-python-allocators` and once by `heapscope run
--trace-python-allocators`; then `memray flamegraph`, `memray flamegraph
--temporal`, `heapscope flamegraph` and `heapscope flamegraph --temporal`
are timed on their own tool's capture, interleaved, each a fresh process
(wall time from start to exit, so interpreter start-up counts for both).
Prints a Markdown table: median build time and page size.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import _harness as h

COMMANDS = {
    "memray flamegraph": ["-m", "memray", "flamegraph", "-f", "-o", "{out}", "{memray}"],
    "memray flamegraph --temporal": ["-m", "memray", "flamegraph", "--temporal", "-f", "-o", "{out}", "{memray}"],
    "heapscope flamegraph": ["-m", "heapscope", "flamegraph", "-f", "-o", "{out}", "{heapscope}"],
    "heapscope flamegraph --temporal": ["-m", "heapscope", "flamegraph", "--temporal", "-f", "-o", "{out}",
                                        "{heapscope}"],
}


def capture(program, work, name):
    paths = {"memray": os.path.join(work, f"{name}.memray.bin"), "heapscope": os.path.join(work, f"{name}.hscap")}
    for tool, command in (("memray", ["-m", "memray", "run", "--trace-python-allocators", "-f", "-o",
                                      paths["memray"]]),
                          ("heapscope", ["-m", "heapscope", "run", "--trace-python-allocators", "--force", "-o",
                                         paths["heapscope"]])):
        h.progress(f"capturing {name} with {tool}")
        subprocess.run([sys.executable] + command + program, env=h.bench_env(), check=True, timeout=3600,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work)
    return paths


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--big", action="store_true", help="also bench/big/events50m.py (about 50 M events)")
    parser.add_argument("--program", nargs=argparse.REMAINDER,
                        default=[os.path.join(h.REPO, "examples", "order_pipeline.py")])
    options = parser.parse_args()
    work = tempfile.mkdtemp(prefix="heapscope-bench-reports-")
    try:
        programs = {"program": options.program}
        if options.big:
            programs["events50m"] = [os.path.join(h.BENCH, "big", "events50m.py")]
        captures = {name: capture(program, work, name) for name, program in programs.items()}
        keys = [(name, command) for name in programs for command in COMMANDS]
        times = {key: [] for key in keys}
        sizes = {}
        for index, (rep, key) in enumerate(h.interleave(keys, options.reps), 1):
            name, command = key
            out = os.path.join(work, f"{name}-{command.replace(' ', '_')}.html")
            argv = [arg.format(out=out, **captures[name]) for arg in COMMANDS[command]]
            start = time.perf_counter()
            result = subprocess.run([sys.executable] + argv, env=h.bench_env(), capture_output=True, text=True,
                                    timeout=3600, cwd=work)
            elapsed = time.perf_counter() - start
            if result.returncode != 0:
                h.progress(f"[{index}] {name} {command}: exit {result.returncode}: "
                           f"{(result.stderr.strip().splitlines() or [''])[-1]}")
                continue
            times[key].append(elapsed)
            sizes[key] = os.path.getsize(out)
            h.progress(f"[{index}] {name} {command}: {elapsed:.2f} s, {sizes[key] / 1e6:.2f} MB")
        capture_sizes = {name: {tool: os.path.getsize(path) for tool, path in paths.items()}
                         for name, paths in captures.items()}
        rows = []
        for name, command in keys:
            median = h.median(times[(name, command)])
            rows.append([name, command, h.fmt_seconds(median) if median else "failed",
                         h.fmt_bytes(sizes[(name, command)]) if (name, command) in sizes else "-"])
        print(f"- Date: {h.now_utc()}\n- Command: `{h.command_line()}`\n"
              f"- Median of {options.reps} interleaved runs; captures (heapscope / memray): " +
              "; ".join(f"{name} {h.fmt_bytes(s['heapscope'])} / {h.fmt_bytes(s['memray'])}"
                        for name, s in capture_sizes.items()) + "\n")
        print(h.markdown_table(["program", "command", "build time", "page size"], rows))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
