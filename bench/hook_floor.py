"""Issue 17: what the hook floor is made of, in instructions per allocation.

Runs `x = [i, i]` at depth 5 (bench/depth.py's loop) under
`valgrind --tool=callgrind` for two loop lengths and takes the difference, so
interpreter start-up, imports and the tool's set-up and tear-down cancel out:
what is left is the cost of one iteration (one list object and its item
array made and freed: two allocations and two frees). Instruction counts are
exact and do not depend on the machine's load. Every thread is counted (a
capture's background thread compresses and writes what the hooks encoded);
the main thread's share is shown apart.

Modes:
- plain: no tool;
- idle-hooks: heapscope's hooks on every Python allocator and recording
  nothing: a sampled capture (`Tracker(os.devnull,
  trace_python_allocators=True, sampling=2**31)`) whose mean interval of
  2 GiB picks no block of these (the hooks then cost the re-entrancy guard,
  the sampler's subtraction and, per free, one probe of the address filter);
- capture: `Tracker(os.devnull, trace_python_allocators=True)`, exact;
- door64: `heapscope.tracemalloc.start(64)`;
- memray: `memray.Tracker(file)`, its default (pymalloc's arenas, not its blocks);
- memray-pyalloc: `memray.Tracker(file, trace_python_allocators=True)`.

    python bench/hook_floor.py [--modes ...] [--short 10000] [--long 40000] [--top 12]

Build heapscope with its symbols to see its own functions by name:
`pip install --no-build-isolation -C install.strip=false -C cmake.define.HEAPSCOPE_NOSTRIP=ON .`
(the counts are the same: only the symbol table differs).

Prints the table of instructions per iteration and, per mode, the functions
with the most instructions per iteration, inclusive and self (callgrind_annotate,
the short run's counts subtracted from the long run's). PYTHONHASHSEED=0.
"""

import argparse
import glob
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
MODES = ["plain", "idle-hooks", "capture", "door64", "memray", "memray-pyalloc"]
DEPTH = 5


def run_child(mode, n):
    """The measured process: `n` iterations at depth 5 under `mode`."""
    sys.path.insert(0, HERE)
    import depth  # bench/depth.py: the same loop and depth as the Depth section

    if mode == "plain":
        depth.timed(n, DEPTH)
    elif mode in ("idle-hooks", "capture"):
        import heapscope
        sampling = 2 ** 31 if mode == "idle-hooks" else None
        with heapscope.Tracker(os.devnull, trace_python_allocators=True, sampling=sampling):
            depth.timed(n, DEPTH)
    elif mode == "door64":
        import heapscope.tracemalloc as door
        door.start(64)
        depth.timed(n, DEPTH)
        door.stop()
    elif mode in ("memray", "memray-pyalloc"):
        import memray
        path = os.path.join(tempfile.mkdtemp(prefix="hook_floor_"), "capture.bin")
        try:
            with memray.Tracker(path, trace_python_allocators=mode == "memray-pyalloc"):
                depth.timed(n, DEPTH)
        finally:
            shutil.rmtree(os.path.dirname(path), ignore_errors=True)
    else:
        raise ValueError(f"unknown mode {mode!r}")


_COUNT = re.compile(r"^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(.*?)\s*$")


def short_name(name):
    """A function's name without its object file, source file, clone suffix
    and parameter list (callgrind_annotate's "file:function [object]")."""
    name = re.sub(r"\s+\[[^\]]*\]$", "", name)  # the object file
    name = name.split(":", 1)[1] if ":" in name and not name.startswith("0x") else name  # the source file
    name = re.sub(r"\s*\[clone [^\]]*\]", "", name).replace("(anonymous namespace)::", "")
    if name.endswith(")"):  # the parameter list: the last balanced (...)
        depth = 0
        for i in range(len(name) - 1, -1, -1):
            depth += {")": 1, "(": -1}.get(name[i], 0)
            if depth == 0:
                name = name[:i]
                break
    return re.sub(r"^(?:[\w:<>*&, ]+\s)?(?=[\w:~]+(?:<.*>)?$)", "", name)  # the return type


def annotate(path, inclusive):
    """{function: instructions} from callgrind_annotate's function table for
    one output file. Clones of one function are merged: their self counts
    add up, their inclusive counts (a wrapper includes its clone) do not."""
    out = subprocess.run(["callgrind_annotate", f"--inclusive={'yes' if inclusive else 'no'}", "--auto=no",
                          "--threshold=100", path], check=True, capture_output=True, text=True).stdout
    counts = {}
    lines = iter(out.splitlines())
    for line in lines:
        if line.rstrip().endswith("file:function"):
            next(lines, None)  # the rule under the header
            break
    for line in lines:
        match = _COUNT.match(line)
        if not match:
            break  # the blank line after the table
        name, count = short_name(match.group(2)), int(match.group(1).replace(",", ""))
        counts[name] = max(counts.get(name, 0), count) if inclusive else counts.get(name, 0) + count
    return counts


def totals(path):
    """Instructions of one output file (its `summary:`/`totals:` line)."""
    with open(path) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def callgrind(mode, n, workdir):
    """Runs the child under callgrind; the output files, the main thread's first."""
    prefix = os.path.join(workdir, f"{mode}-{n}")
    env = dict(os.environ, PYTHONHASHSEED="0")
    subprocess.run(["valgrind", "--tool=callgrind", "--separate-threads=yes",
                    f"--callgrind-out-file={prefix}.%p", sys.executable, os.path.abspath(__file__),
                    "--child", mode, "--n", str(n)], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # One file per thread (<prefix>.<pid>-<thread>); the one without a thread is empty.
    files = sorted(glob.glob(prefix + ".*-*"), key=lambda p: int(p.rsplit("-", 1)[1]))
    if not files:
        raise RuntimeError(f"callgrind wrote nothing for {mode}")
    return files


def measure(mode, short, long, workdir):
    runs = {n: callgrind(mode, n, workdir) for n in (short, long)}
    iters = long - short
    per = {}
    for key, pick in (("main", lambda fs: fs[:1]), ("all", lambda fs: fs)):
        per[key] = (sum(totals(p) for p in pick(runs[long])) - sum(totals(p) for p in pick(runs[short]))) / iters
    functions = {}
    for inclusive in (True, False):
        diff = {}
        for n, sign in ((long, 1), (short, -1)):
            for path in runs[n]:  # every thread: a function's cost wherever it ran
                for name, count in annotate(path, inclusive).items():
                    diff[name] = diff.get(name, 0) + sign * count
        functions[inclusive] = {name: count / iters for name, count in diff.items()}
    return per, functions


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", nargs="+", default=MODES, choices=MODES)
    parser.add_argument("--short", type=int, default=10_000)
    parser.add_argument("--long", type=int, default=40_000)
    parser.add_argument("--top", type=int, default=12, help="functions listed per mode and kind")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args.child, args.n)
        return
    if not shutil.which("valgrind") or not shutil.which("callgrind_annotate"):
        sys.exit("hook_floor: needs valgrind (apt-get install valgrind)")
    if args.long <= args.short:
        sys.exit("hook_floor: --long must be greater than --short")
    workdir = tempfile.mkdtemp(prefix="hook_floor_")
    results = {}
    try:
        for mode in args.modes:
            print(f"{mode}...", file=sys.stderr)
            results[mode] = measure(mode, args.short, args.long, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"Python {platform.python_version()}, `x = [i, i]` at depth {DEPTH}, instructions per iteration "
          f"(callgrind, {args.long} minus {args.short} iterations, PYTHONHASHSEED=0)\n")
    plain = results.get("plain", (None,))[0]
    print("| mode | all threads | main thread | over plain (all threads) | vs plain |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for mode, (per, _) in results.items():
        over = f"{per['all'] - plain['all']:,.0f}" if plain else "-"
        ratio = f"{per['all'] / plain['all']:.2f}x" if plain else "-"
        print(f"| {mode} | {per['all']:,.0f} | {per['main']:,.0f} | {over} | {ratio} |")
    for mode, (per, functions) in results.items():
        total = per["all"]
        for inclusive in (True, False):
            kind = "inclusive" if inclusive else "self"
            print(f"\n{mode}, {kind} (instructions per iteration, share of {total:,.0f}):\n")
            # Inclusive: the callers of the loop itself (and recursion's
            # doubled counts) hold all of it and say nothing: left out.
            ranked = sorted(((name, count) for name, count in functions[inclusive].items()
                             if not inclusive or count < 0.97 * per["main"]), key=lambda item: -item[1])[:args.top]
            for name, count in ranked:
                print(f"    {count:9,.1f}  {100 * count / total:5.1f}%  {name}")


if __name__ == "__main__":
    main()
