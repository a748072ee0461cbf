"""Issue 17: bench/depth.py with and without anchored stack walks
(HEAPSCOPE_FRAME_ANCHORS=1, CPython 3.12+: sys.monitoring reports when an
anchor frame a few frames below the top leaves the stack, and walks stop at
it), side by side in one process: the same build, the option turned on and
off between cells, medians of interleaved repeats, the order rotated at each
repeat. CPU time of the loop alone. The machine is shared and noisy: read
the ratios of one run.

    python bench/designs/monitor_anchors.py [--n 300000] [--reps 5]
"""

import argparse
import os
import platform
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import depth  # noqa: E402  (bench/depth.py)

from heapscope import _heapscope as native  # noqa: E402

DEPTHS = (5, 150)
MODES = ("plain", "door64", "door64+anchors", "capture", "capture+anchors")


def measure(mode, n, at_depth):
    base = mode.split("+")[0]
    if mode.endswith("+anchors"):
        os.environ["HEAPSCOPE_FRAME_ANCHORS"] = "1"  # read when a session starts
    else:
        os.environ.pop("HEAPSCOPE_FRAME_ANCHORS", None)
    try:
        before = native._anchored_walks()
        seconds = depth.measure(base, n, at_depth)
        return seconds, native._anchored_walks() - before
    finally:
        os.environ.pop("HEAPSCOPE_FRAME_ANCHORS", None)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300_000)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    if sys.version_info < (3, 12):
        sys.exit("anchored walks need sys.monitoring: CPython 3.12+")
    sys.setrecursionlimit(10_000)
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


if __name__ == "__main__":
    main()
