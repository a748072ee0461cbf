"""Issue 17: does an allocation cost more when the stack is deep?

In one process: N small lists allocated (and dropped) at depth 5 and at
depth 150, with no tool ("plain"), in the tracemalloc door with 64 frames
("door64") and in an exact capture with Python allocators traced and full
stacks ("capture", written to /dev/null). CPU time of the loop alone
(time.process_time), medians of interleaved repeats, the order rotated at
each repeat. The figure that matters is the ratio of a mode's time at depth
150 to its time at depth 5 (target: at most 1.5x).

    python bench/depth.py [--n 1000000] [--reps 5] [--modes plain door64 capture]

The machine is shared and noisy: read the ratios, not the absolute times.
"""

import argparse
import gc
import os
import platform
import statistics
import sys
import time

import heapscope
import heapscope.tracemalloc as door

DEPTHS = (5, 150)


def allocate(n):
    for i in range(n):
        x = [i, i]  # one list object and its item array per iteration
    return x


def at_depth(depth, fn, *args):
    """Calls fn(*args) with `depth` Python frames on the stack above this module's caller."""
    if depth <= 1:
        return fn(*args)
    return at_depth(depth - 1, fn, *args)


def timed(n, depth):
    def run():
        start = time.process_time()
        allocate(n)
        return time.process_time() - start
    base = len(_stack())  # frames already under us (this script's own)
    return at_depth(max(1, depth - base - 2), run)


def _stack():
    frames = []
    f = sys._getframe(1)
    while f is not None:
        frames.append(f)
        f = f.f_back
    return frames


def measure(mode, n, depth):
    gc.collect()
    if mode == "plain":
        return timed(n, depth)
    if mode == "door64":
        door.start(64)
        try:
            return timed(n, depth)
        finally:
            door.stop()
    if mode == "capture":
        with heapscope.Tracker(os.devnull, trace_python_allocators=True):
            return timed(n, depth)
    raise ValueError(mode)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--modes", nargs="+", default=["plain", "door64", "capture"])
    parser.add_argument("--depths", nargs="+", type=int, default=list(DEPTHS))
    args = parser.parse_args()
    sys.setrecursionlimit(10_000)
    cells = [(mode, depth) for mode in args.modes for depth in args.depths]
    times = {cell: [] for cell in cells}
    measure("plain", args.n // 10, 5)  # warm up
    for rep in range(args.reps):
        order = cells[rep % len(cells):] + cells[:rep % len(cells)]
        for cell in order:
            times[cell].append(measure(cell[0], args.n, cell[1]))
        print(f"rep {rep + 1}/{args.reps} done", file=sys.stderr)
    print(f"Python {platform.python_version()}, {args.n} lists per cell, CPU time, "
          f"median of {args.reps} interleaved repeats\n")
    med = {cell: statistics.median(values) for cell, values in times.items()}
    if tuple(args.depths) != DEPTHS:
        print("| mode | " + " | ".join(f"depth {d}" for d in args.depths) + " |")
        print("| --- |" + " ---: |" * len(args.depths))
        for mode in args.modes:
            print(f"| {mode} | " + " | ".join(f"{med[(mode, d)]:.4f} s" for d in args.depths) + " |")
        return
    print("| mode | depth 5 | depth 150 | depth 150 / depth 5 | vs plain at 5 | vs plain at 150 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for mode in args.modes:
        shallow, deep = med[(mode, 5)], med[(mode, 150)]
        plain5 = med.get(("plain", 5))
        plain150 = med.get(("plain", 150))
        vs5 = f"{shallow / plain5:.2f}x" if plain5 else "-"
        vs150 = f"{deep / plain150:.2f}x" if plain150 else "-"
        print(f"| {mode} | {shallow:.3f} s | {deep:.3f} s | **{deep / shallow:.2f}x** | {vs5} | {vs150} |")


if __name__ == "__main__":
    main()
