"""Issue 17: what a shadow stack kept from the frame-evaluation hook (PEP 523)
costs before it records anything, on CPython 3.11.

Builds eval_frame_floor.c in a temporary directory and times three
call patterns with and without the hook, in one process: CPU time, medians
of interleaved repeats. The machine is shared and noisy.

    python bench/designs/eval_frame_floor.py [--reps 5]
"""

import argparse
import statistics
import sys
import tempfile
import time

from floor_workloads import build_extension, call_heavy, fib, generators


def build(directory):
    return build_extension("eval_frame_floor", directory, ("-w",))


WORKLOADS = (("call_heavy", call_heavy, 1_000_000), ("fib(25)", fib, 25), ("generator", generators, 2_000_000))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    if sys.version_info[:2] != (3, 11):
        sys.exit("eval_frame_floor.c is written against CPython 3.11's frame evaluation API")
    with tempfile.TemporaryDirectory() as directory:
        hook = build(directory)
        times = {}
        for rep in range(args.reps):
            for hooked in ((False, True) if rep % 2 == 0 else (True, False)):
                if hooked:
                    hook.install()
                for name, function, argument in WORKLOADS:
                    start = time.process_time()
                    function(argument)
                    times.setdefault((name, hooked), []).append(time.process_time() - start)
                if hooked:
                    hook.uninstall()
    print("| workload | plain | with the hook | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for name, _, _ in WORKLOADS:
        plain = statistics.median(times[(name, False)])
        hooked = statistics.median(times[(name, True)])
        print(f"| {name} | {plain:.3f} s | {hooked:.3f} s | {hooked / plain:.2f}x |")


if __name__ == "__main__":
    main()
