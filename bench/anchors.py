"""Issue 17: bench/depth.py with and without anchored stack walks (CPython
3.11+, on by default with Python's allocators traced; HEAPSCOPE_FRAME_ANCHORS=0
turns them off: walks of a deep stack stop at an anchor frame a few frames
below the top, whose frame object identifies its call), side by side in one
process: the same build, anchors turned on and off between cells, medians of
interleaved repeats, the order rotated at each repeat. CPU time of the loop
alone. The machine is shared and noisy: read the ratios of one run.

    python bench/anchors.py [--n 300000] [--reps 5] [--instructions]

--instructions also counts instructions per iteration with valgrind's
callgrind (PYTHONHASHSEED=0, the difference between 10,000 and 40,000
iterations, so that start-up and the one-off frame objects cancel).
"""

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import depth  # noqa: E402  (bench/depth.py)

from heapscope import _heapscope as native  # noqa: E402

DEPTHS = (5, 150)
MODES = ("plain", "door64", "door64+anchors", "capture", "capture+anchors")


def measure(mode, n, at_depth):
    base = mode.split("+")[0]
    if mode.endswith("+anchors"):
        os.environ.pop("HEAPSCOPE_FRAME_ANCHORS", None)
    else:
        os.environ["HEAPSCOPE_FRAME_ANCHORS"] = "0"  # read when a session starts
    try:
        before = native._anchored_walks()
        seconds = depth.measure(base, n, at_depth)
        return seconds, native._anchored_walks() - before
    finally:
        os.environ.pop("HEAPSCOPE_FRAME_ANCHORS", None)


def instructions(mode, at_depth, n):
    env = dict(os.environ, PYTHONHASHSEED="0")
    done = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
                           os.path.abspath(__file__), "--child", mode, str(at_depth), str(n)],
                          env=env, capture_output=True, text=True, check=True)
    return int(re.search(r"Collected : (\d+)", done.stderr).group(1))


def instructions_table():
    small, large = 10_000, 40_000
    print("\nInstructions per iteration (callgrind, PYTHONHASHSEED=0, 40,000 minus 10,000 iterations):\n")
    print("| mode | depth 5 | depth 150 | depth 150 / depth 5 |")
    print("| --- | ---: | ---: | ---: |")
    for mode in MODES:
        per = {d: (instructions(mode, d, large) - instructions(mode, d, small)) / (large - small) for d in DEPTHS}
        print(f"| {mode} | {per[5]:,.0f} | {per[150]:,.0f} | {per[150] / per[5]:.2f}x |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--instructions", action="store_true")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if sys.version_info < (3, 11):
        sys.exit("anchored walks need CPython 3.11+ (3.9 and 3.10 reuse frame objects)")
    sys.setrecursionlimit(10_000)
    if args.child:
        measure(args.child[0], int(args.child[2]), int(args.child[1]))
        return
    cells = [(mode, d) for mode in MODES for d in DEPTHS]
    times = {cell: [] for cell in cells}
    anchored = {}
    measure("plain", args.n // 10, 5)  # warm up
    for rep in range(args.reps):
        order = cells[rep % len(cells):] + cells[:rep % len(cells)]
        for cell in order:
            seconds, walks = measure(cell[0], args.n, cell[1])
            times[cell].append(seconds)
            anchored[cell] = walks
        print(f"rep {rep + 1}/{args.reps} done", file=sys.stderr)
    print(f"Python {platform.python_version()}, {args.n} lists per cell, CPU time, "
          f"median of {args.reps} interleaved repeats\n")
    med = {cell: statistics.median(values) for cell, values in times.items()}
    print("| mode | depth 5 | depth 150 | depth 150 / depth 5 | vs plain at 5 | vs plain at 150 "
          "| anchored walks at 150 (last rep) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for mode in MODES:
        shallow, deep = med[(mode, 5)], med[(mode, 150)]
        print(f"| {mode} | {shallow:.3f} s | {deep:.3f} s | **{deep / shallow:.2f}x** | "
              f"{shallow / med[('plain', 5)]:.2f}x | {deep / med[('plain', 150)]:.2f}x | "
              f"{anchored[(mode, 150)]:,} |")
    if args.instructions:
        instructions_table()


if __name__ == "__main__":
    main()
