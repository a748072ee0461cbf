"""What a label costs an allocation (issue 18): one capture (every
allocation recorded, native traces off, written to /dev/null) of a loop of
200,000 bytearray(1000) at one line, without a label, inside one label, and
with a push and pop around every allocation (the worst case: the thread's
stack cache is emptied each time). Interleaved repeats, medians.

    python bench/label_cost.py [--reps 7] [--count 200000]

The machine is shared and noisy: compare the columns of one run.
"""

import argparse
import os
import statistics
import time

import heapscope


def loop(count):
    for _ in range(count):
        data = bytearray(1000)
        del data


def labelled_each(count):
    label = heapscope.label("each")
    for _ in range(count):
        with label:
            data = bytearray(1000)
            del data


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--count", type=int, default=200_000)
    options = parser.parse_args()
    modes = {
        "no label": lambda: loop(options.count),
        "inside one label": lambda: _inside(options.count),
        "push+pop per allocation": lambda: labelled_each(options.count),
    }
    times = {mode: [] for mode in modes}
    for _ in range(options.reps):
        for mode, run in modes.items():
            with heapscope.Tracker(destination=heapscope.FileDestination(os.devnull, overwrite=True)):
                started = time.perf_counter()
                run()
                times[mode].append(time.perf_counter() - started)
    base = statistics.median(times["no label"])
    print(f"{options.count} allocations in a capture, median of {options.reps} interleaved runs:")
    for mode, values in times.items():
        median = statistics.median(values)
        print(f"  {mode:<24} {median * 1e9 / options.count:8.1f} ns/allocation  {median / base:5.2f}x")


def _inside(count):
    with heapscope.label("outer"):
        loop(count)


if __name__ == "__main__":
    main()
