"""Two builds of heapscope side by side: a change's cost, measured.

    python bench/run_builds.py --before PYTHON --after PYTHON [--reps 5] [--modes M ...] [--workloads W ...]

PYTHON is the interpreter of a virtual environment where that build is
installed (e.g. one made from `git worktree add /tmp/before REV`). Every
(build, mode, workload) runs interleaved with plain Python under the same
interpreters, and the table gives each build's slowdown over plain
(median/median) and after/before. Writes nothing: paste the table where it
belongs (bench/RESULTS.md).
"""
import argparse
import os

import _harness as h

MODES = ["heapscope-64", "heapscope-exact", "heapscope-sampled"]


def run(python, mode, workload, timeout, clock):
    # _harness runs sys.executable; this runner needs the build's own interpreter.
    import json
    import subprocess

    cmd = [python, h.DRIVER, mode, os.path.join(h.WORKLOADS, workload + ".py")]
    try:
        proc = subprocess.run(cmd, cwd=h.REPO, env=h.bench_env(), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        h.progress(f"  {mode} {workload}: exit {proc.returncode}: {(proc.stderr.strip().splitlines() or [''])[-1]}")
        return None
    return json.loads(lines[-1]).get("cpu_s" if clock == "cpu" else "elapsed_s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the interpreter with the earlier build")
    parser.add_argument("--after", required=True, help="the interpreter with the later build")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--modes", nargs="+", default=MODES)
    parser.add_argument("--workloads", nargs="+", default=h.workload_names())
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                        help="CPU time of the process (default: steadier on a shared machine) or wall time")
    options = parser.parse_args()
    builds = {"before": options.before, "after": options.after}
    keys = [(build, mode, workload) for build in builds for mode in ["plain"] + options.modes
            for workload in options.workloads]
    times = {key: [] for key in keys}
    schedule = h.interleave(keys, options.reps)
    for index, (rep, key) in enumerate(schedule, 1):
        h.progress(f"[{index}/{len(schedule)}] rep {rep + 1}: {' '.join(key)}")
        times[key].append(run(builds[key[0]], key[1], key[2], options.timeout, options.clock))
    rows = []
    ratios = {(build, mode): [] for build in builds for mode in options.modes}
    changes = {mode: [] for mode in options.modes}
    for workload in options.workloads:
        for mode in options.modes:
            cells = [workload, mode]
            slowdown = {}
            for build in builds:
                plain = h.median(times[(build, "plain", workload)])
                timed = h.median(times[(build, mode, workload)])
                slowdown[build] = timed / plain if plain and timed else None
                if slowdown[build]:
                    ratios[(build, mode)].append(slowdown[build])
                cells.append(f"{h.fmt_seconds(timed)} ({h.fmt_ratio(slowdown[build])})" if timed else "failed")
            change = slowdown["after"] / slowdown["before"] if slowdown["after"] and slowdown["before"] else None
            if change:
                changes[mode].append(change)
            cells.append(f"{change:.3f}" if change else "-")
            rows.append(cells)
    for mode in options.modes:
        rows.append([f"**geomean**", mode] + [h.fmt_ratio(h.geomean(ratios[(b, mode)])) for b in builds]
                    + [f"{h.geomean(changes[mode]):.3f}" if changes[mode] else "-"])
    print(f"- Date: {h.now_utc()}\n- Command: `{h.command_line()}`\n- Median of {options.reps} interleaved runs; "
          f"{options.clock} time; slowdown over plain Python "
          f"under the same interpreter\n")
    print(h.markdown_table(["workload", "mode", "before", "after", "after/before"], rows))


if __name__ == "__main__":
    main()
