"""The "real programs" set (issue 17) in instructions, not time.

On a shared 2-core machine, a pyperformance benchmark's 0.2-0.4 s run moves by
±20% from one run to the next, more than a change of a few percent in a hook
(bench/RESULTS.md, "Real programs"). Instruction counts do not depend on the
load: each benchmark runs under `valgrind --tool=callgrind` once with one run
of its fixed work inside the tool and once with two, in one process each
(imports, set-up and a warm-up run outside any tool), and the difference is
what one run costs under the mode, every thread counted (a capture's
background thread included). Callgrind counts user-space instructions only:
not the kernel's side of write(2), nor cache misses.

    python bench/pyperf_instructions.py [--only NAME ...] [--modes M ...] [--jobs 2] [--no-plain]

Modes are bench/_driver.py's. Prints, per benchmark, plain's instructions per
run and each mode's ratio to it, and the geomeans; with --no-plain (another
build of the same Python, to compare with a run that had plain), each mode's
instructions per run instead. Each cell takes minutes: callgrind runs the
benchmark's set-up, a warm-up run and the measured runs ~50 times slower.
"""

import argparse
import concurrent.futures
import math
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_MODES = ["heapscope-sampled", "heapscope-exact", "heapscope-64"]


def run_child(mode, name, runs):
    """The measured process: `runs` runs of benchmark `name` under `mode`."""
    sys.path.insert(0, HERE)
    import _driver
    import pyperf_workloads

    work = pyperf_workloads.prepare(name)
    work()  # warm-up, outside any tool: caches, lazy imports
    tool = _driver.MODES[mode]()
    tool.start()
    try:
        for _ in range(runs):
            work()
    finally:
        tool.stop()
    tool.cleanup()


def instructions(mode, name, runs, workdir):
    """Every thread's instructions of one child process (callgrind's total)."""
    out = os.path.join(workdir, f"{name}.{mode}.{runs}.out")
    proc = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
                           os.path.abspath(__file__), "--child", mode, name, str(runs)],
                          capture_output=True, text=True, env=dict(os.environ, PYTHONHASHSEED="0"))
    found = re.findall(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or not found:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"{name} under {mode} failed (exit {proc.returncode}):\n{tail}")
    os.unlink(out)
    return int(found[-1])


def per_run(mode, name, workdir):
    return instructions(mode, name, 2, workdir) - instructions(mode, name, 1, workdir)


def main():
    sys.path.insert(0, HERE)
    import pyperf_workloads

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME")
    parser.add_argument("--modes", nargs="+", default=DEFAULT_MODES, metavar="M")
    parser.add_argument("--jobs", type=int, default=2, help="callgrind processes at once (default 2)")
    parser.add_argument("--no-plain", action="store_true", help="skip plain; print instructions, not ratios")
    args = parser.parse_args()
    names = [n for part in (args.only or list(pyperf_workloads.BENCHMARKS)) for n in part.split(",") if n]
    unknown = [n for n in names if n not in pyperf_workloads.BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(pyperf_workloads.BENCHMARKS)}")
    modes = ([] if args.no_plain else ["plain"]) + [m for m in args.modes if m != "plain"]
    import _driver

    bad = [m for m in modes if m not in _driver.MODES]
    if bad:
        parser.error(f"unknown mode(s) {', '.join(bad)}; choose from {', '.join(_driver.MODES)}")

    cells = [(name, mode) for name in names for mode in modes]
    results = {}
    with tempfile.TemporaryDirectory(prefix="heapscope-instr-") as workdir, \
            concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {pool.submit(per_run, mode, name, workdir): (name, mode) for name, mode in cells}
        for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
            name, mode = futures[future]
            results[name, mode] = future.result()
            print(f"[{done}/{len(cells)}] {name} {mode}: {results[name, mode] / 1e6:,.1f} M", file=sys.stderr)

    print(f"Python {sys.version.split()[0]}: instructions per run of each benchmark's fixed work "
          f"(callgrind, two runs minus one, every thread){'' if args.no_plain else ', ratio to plain'}\n")
    if args.no_plain:
        print("| benchmark | " + " | ".join(modes) + " |")
        print("| --- | " + " | ".join("---:" for _ in modes) + " |")
        for name in names:
            print(f"| {name} | " + " | ".join(f"{results[name, mode] / 1e6:,.1f} M" for mode in modes) + " |")
        return
    print("| benchmark | plain | " + " | ".join(modes[1:]) + " |")
    print("| --- | ---: | " + " | ".join("---:" for _ in modes[1:]) + " |")
    logs = {mode: [] for mode in modes[1:]}
    for name in names:
        plain = results[name, "plain"]
        row = []
        for mode in modes[1:]:
            ratio = results[name, mode] / plain
            logs[mode].append(math.log(ratio))
            row.append(f"{ratio:.3f}x")
        print(f"| {name} | {plain / 1e6:,.0f} M | " + " | ".join(row) + " |")
    print("| **geomean** | | " + " | ".join(f"{math.exp(sum(v) / len(v)):.3f}x" for v in logs.values()) + " |")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        run_child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()
