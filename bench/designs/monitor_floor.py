"""Issue 17: what it costs to invalidate a cached stack with sys.monitoring
events turned on locally for the cached frames' code objects (CPython 3.12+).

Builds monitor_floor.c (a builtin callback that only bumps a per-thread
generation) in a temporary directory and runs call-heavy workloads at depth
150 (145 frames of `layer`, the "cached" part) in three modes, in one
process:

- plain: no events;
- outer: PY_RETURN, PY_UNWIND and PY_YIELD on for the outer frames' code
  (`layer`, this module's drivers), which does not return during the loop:
  the case the design hopes for;
- recursive: the same events also on the hot code (the workload's own
  functions), as when a recursive function's code is on the cached part
  and the hot part: every one of its returns (or yields) reports.

It also times sys.monitoring.set_local_events itself (it re-instruments the
code object's bytecode), on code objects of several sizes.

Two measures: CPU time (medians of interleaved repeats; the machine is
shared and noisy), and with --instructions, instruction counts from
valgrind's callgrind (PYTHONHASHSEED=0, the difference between two loop
lengths, so the start-up cancels: exact, no noise).

    python bench/designs/monitor_floor.py [--reps 5] [--instructions]
"""

import argparse
import argparse as _argparse_module  # a big code object to instrument
import ast
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

from floor_workloads import add, build_extension, call_heavy, fib, generators, numbers

TOOL = 4  # a tool id sys.monitoring leaves free (0-5 are for tools; 2 is PROFILER_ID, 1 COVERAGE_ID)
DEPTH = 150


def build(directory):
    return build_extension("monitor_floor", directory, ())


def fail(i):
    raise KeyError(i)


def exceptions(n):
    caught = 0
    for i in range(n):
        try:
            fail(i)
        except KeyError:
            caught += 1
    return caught


def allocate(n):
    for i in range(n):
        x = [i, i]
    return x


# name -> (function, the hot code objects, time argument, two callgrind arguments)
WORKLOADS = {
    "call_heavy": (call_heavy, (call_heavy.__code__, add.__code__), 1_000_000, (20_000, 60_000)),
    "fib": (fib, (fib.__code__,), 27, (15, 18)),
    "generator": (generators, (generators.__code__, numbers.__code__), 2_000_000, (40_000, 120_000)),
    "exceptions": (exceptions, (exceptions.__code__, fail.__code__), 500_000, (10_000, 30_000)),
    "alloc": (allocate, (allocate.__code__,), 2_000_000, (40_000, 120_000)),
}
EVENTS = None  # set once sys.monitoring is known to exist


def layer(depth, fn, arg):
    if depth <= 1:
        start = time.process_time()
        fn(arg)
        return time.process_time() - start
    return layer(depth - 1, fn, arg)


def stack_depth():
    depth, frame = 0, sys._getframe(1)
    while frame is not None:
        depth, frame = depth + 1, frame.f_back
    return depth


def outer_codes():
    return (layer.__code__, run_mode.__code__, main.__code__)


def set_events(codes, events):
    # PY_UNWIND cannot be set locally (3.12, 3.13): it is on for the whole
    # interpreter whenever the design is, and every frame an exception leaves reports.
    sys.monitoring.set_events(TOOL, sys.monitoring.events.PY_UNWIND if events else 0)
    for code in codes:
        sys.monitoring.set_local_events(TOOL, code, events)


def run_mode(mode, name, arg):
    function, hot, _, _ = WORKLOADS[name]
    codes = () if mode == "plain" else outer_codes() + (hot if mode == "recursive" else ())
    set_events(codes, EVENTS)
    try:
        return layer(DEPTH - stack_depth() - 1, function, arg)
    finally:
        set_events(codes, 0)


def toggle_cost(code, count):
    """CPU time of `count` pairs of set_local_events (on, then off)."""
    start = time.process_time()
    for _ in range(count):
        sys.monitoring.set_local_events(TOOL, code, EVENTS)
        sys.monitoring.set_local_events(TOOL, code, 0)
    return time.process_time() - start


TOGGLE_CODES = {
    "add (4 instructions)": add.__code__,
    "ast.NodeVisitor.generic_visit": ast.NodeVisitor.generic_visit.__code__,
    "argparse _parse_known_args": _argparse_module.ArgumentParser._parse_known_args.__code__,
}


def code_units(code):
    return len(code.co_code) // 2


def setup(module):
    global EVENTS
    events = sys.monitoring.events
    EVENTS = events.PY_RETURN | events.PY_YIELD  # local; PY_UNWIND goes global (set_events)
    sys.monitoring.use_tool_id(TOOL, "heapscope-monitor-floor")
    for event in (events.PY_RETURN, events.PY_UNWIND, events.PY_YIELD):
        sys.monitoring.register_callback(TOOL, event, module.mark)


def child(args, module):
    """One run under callgrind: a workload (or set_local_events) at one size."""
    if args.child == "toggle":
        toggle_cost(TOGGLE_CODES[args.toggle_code], args.size)
        return
    mode, name = args.child.split(":")
    before = module.marks()
    run_mode(mode, name, args.size)
    print(json.dumps({"events": module.marks() - before}))


def callgrind(argv):
    env = dict(os.environ, PYTHONHASHSEED="0")
    done = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
                           os.path.abspath(__file__)] + argv, env=env, capture_output=True, text=True, check=True)
    instructions = int(re.search(r"Collected : (\d+)", done.stderr).group(1))
    out = done.stdout.strip()
    return instructions, (json.loads(out)["events"] if out else 0)


def instructions_table():
    print("\nInstructions (callgrind, PYTHONHASHSEED=0, difference of two loop lengths):\n")
    print("| workload | unit | plain | outer | recursive | events per unit (recursive) | instructions per event |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name, (_, _, _, (small, large)) in WORKLOADS.items():
        if name == "fib":
            units = (2 * fib(large + 1) - 1) - (2 * fib(small + 1) - 1)  # calls of fib(n): 2 F(n+1) - 1
            unit = "call"
        else:
            units, unit = large - small, "iteration"
        per, events = {}, {}
        for mode in ("plain", "outer", "recursive"):
            i_small, e_small = callgrind(["--child", f"{mode}:{name}", "--size", str(small)])
            i_large, e_large = callgrind(["--child", f"{mode}:{name}", "--size", str(large)])
            per[mode] = (i_large - i_small) / units
            events[mode] = e_large - e_small
        per_event = (per["recursive"] - per["plain"]) * units / events["recursive"] if events["recursive"] else 0
        print(f"| {name} | {unit} | {per['plain']:.0f} | {per['outer']:.0f} | {per['recursive']:.0f} | "
              f"{events['recursive'] / units:.2f} | {per_event:.0f} |" if events["recursive"] else
              f"| {name} | {unit} | {per['plain']:.0f} | {per['outer']:.0f} | {per['recursive']:.0f} | 0 | - |")
    print("\n| code object | code units | instructions per set_local_events (on + off, halved) |")
    print("| --- | ---: | ---: |")
    for label, code in TOGGLE_CODES.items():
        small, _ = callgrind(["--child", "toggle", "--toggle-code", label, "--size", "100"])
        large, _ = callgrind(["--child", "toggle", "--toggle-code", label, "--size", "300"])
        print(f"| {label} | {code_units(code)} | {(large - small) / 200 / 2:.0f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--instructions", action="store_true", help="also count instructions with callgrind")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--toggle-code", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if sys.version_info < (3, 12):
        sys.exit("sys.monitoring needs CPython 3.12+")
    sys.setrecursionlimit(10_000)
    with tempfile.TemporaryDirectory() as directory:
        module = build(directory)
        setup(module)
        if args.child:
            child(args, module)
            return
        import platform
        print(f"Python {platform.python_version()}, depth {DEPTH}, CPU time, median of {args.reps} "
              f"interleaved repeats\n")
        modes = ("plain", "outer", "recursive")
        times, events = {}, {}
        for rep in range(args.reps):
            order = modes[rep % 3:] + modes[:rep % 3]
            for name, (_, _, arg, _) in WORKLOADS.items():
                for mode in order:
                    before = module.marks()
                    times.setdefault((name, mode), []).append(run_mode(mode, name, arg))
                    events[(name, mode)] = module.marks() - before
        print("| workload | plain | outer / plain | recursive / plain | events (recursive) | ns per event |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for name in WORKLOADS:
            med = {mode: statistics.median(times[(name, mode)]) for mode in modes}
            count = events[(name, "recursive")]
            per_event = f"{(med['recursive'] - med['plain']) / count * 1e9:.0f}" if count else "-"
            print(f"| {name} | {med['plain']:.3f} s | {med['outer'] / med['plain']:.2f}x | "
                  f"{med['recursive'] / med['plain']:.2f}x | {count:,} | {per_event} |")
        print("\n| code object | code units | µs per set_local_events (on + off, halved) |")
        print("| --- | ---: | ---: |")
        for label, code in TOGGLE_CODES.items():
            samples = [toggle_cost(code, 2000) for _ in range(args.reps)]
            print(f"| {label} | {code_units(code)} | {statistics.median(samples) / 4000 * 1e6:.2f} |")
        if args.instructions:
            instructions_table()


if __name__ == "__main__":
    main()
