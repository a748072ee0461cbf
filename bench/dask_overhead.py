"""What profiling a Dask cluster costs (issue 18), in one run on one
LocalCluster(n_workers=2, processes=True, threads_per_worker=1):

1. Many small tasks (``--tasks`` of them, each building a list of 2,000
   small objects), wall time of submit-to-gather, side by side: no
   profiler, ``heapscope.dask.profile(sample=True)`` (the default),
   ``profile(sample=False)`` and memray's ``memray_workers(report_args=False)``
   (raw captures fetched, as heapscope's are). Repeats are interleaved;
   medians are shown with the ratio to no profiler. The time a profiler
   needs after the block (stopping, gathering, merging) is shown apart.
2. Gather and merge: each worker allocates ``--gib`` GiB, as a real
   workload would leave it in its capture: blocks of seeded random sizes
   (``--block`` MIN-MAX bytes, 1-16 KiB by default), made at ``--stacks`` distinct call paths (2 to 7 frames deep
   from 48 functions), a quarter of them kept until the block ends (every
   allocation recorded, sample=False). Shown: each capture's size, and the
   time the block's exit takes to stop both Trackers, bring both captures
   back over Dask's comms and write them and the merged file (median of
   ``--gather-reps``). ``--gather-only``: part 2 alone.

    python bench/dask_overhead.py [--tasks 4000] [--reps 5] [--gib 1] [--stacks 400] [--gather-reps 3]
    python bench/dask_overhead.py --gather-only [--gib 1] [--block 1024-16384] [--trace-python-allocators]

The machine is shared and noisy: read ratios, not absolute times, and
compare runs made side by side.
"""

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time


def small_task(number):
    values = [(number, i, str(i)) for i in range(2000)]
    return len(values)


_FUNCTIONS = 48
_STACK_SOURCE = "".join(f"""
def level_{i}(path, depth, size):
    if depth == len(path):
        return bytearray(size)
    return LEVELS[path[depth]](path, depth + 1, size)
""" for i in range(_FUNCTIONS))


def churn(gib, stacks, seed, smallest=1024, largest=16384):
    """Allocates `gib` GiB in blocks of `smallest`-`largest` bytes at
    `stacks` distinct call paths; keeps a quarter of the blocks on the worker (freed by `release`)
    and frees the rest. Returns (allocations, bytes kept)."""
    import random

    from distributed import get_worker

    namespace = {}
    exec(compile(_STACK_SOURCE, "<bench-stacks>", "exec"), namespace)
    levels = [namespace[f"level_{i}"] for i in range(_FUNCTIONS)]
    namespace["LEVELS"] = levels
    random_ = random.Random(seed)
    paths = set()
    while len(paths) < stacks:
        paths.add(tuple(random_.randrange(_FUNCTIONS) for _ in range(random_.randint(2, 7))))
    paths = sorted(paths)
    kept, made, total = [], 0, int(gib * (1 << 30))
    while total > 0:
        size = random_.randint(smallest, largest)
        path = paths[random_.randrange(len(paths))]
        block = levels[path[0]](path, 1, size)
        if random_.random() < 0.25:
            kept.append(block)
        made += 1
        total -= size
    get_worker().heapscope_bench_kept = kept
    return made, sum(map(len, kept))


def release(dask_worker):
    dask_worker.__dict__.pop("heapscope_bench_kept", None)


def workload(client, tasks):
    futures = client.map(small_task, range(tasks), pure=False)
    return sum(client.gather(futures))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=4000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--stacks", type=int, default=400)
    parser.add_argument("--gather-reps", type=int, default=3)
    parser.add_argument("--gather-only", action="store_true", help="part 2 alone")
    parser.add_argument("--block", default="1024-16384", help="part 2's block sizes: MIN-MAX bytes")
    parser.add_argument("--trace-python-allocators", action="store_true",
                        help="part 2 records pymalloc's blocks too (those of 512 bytes or less)")
    options = parser.parse_args()
    try:
        options.smallest, options.largest = map(int, options.block.split("-"))
    except ValueError:
        parser.error(f"--block takes MIN-MAX bytes, like 1024-16384, not {options.block!r}")
    if not 1 <= options.smallest <= options.largest:
        parser.error(f"--block: MIN must be at least 1 and at most MAX: {options.block!r}")

    from distributed import Client, LocalCluster

    try:
        from distributed.diagnostics.memray import memray_workers
    except ImportError:
        memray_workers = None

    work = tempfile.mkdtemp(prefix="heapscope-dask-bench-")
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        workload(client, 200)  # warm: imports, connections
        if not options.gather_only:
            small_tasks(client, options, work, memray_workers)
        gather_and_merge(client, options, work)


def small_tasks(client, options, work, memray_workers):
    import heapscope.dask

    modes = {
        "none": lambda: contextlib.nullcontext(),
        "heapscope sampled": lambda: heapscope.dask.profile(client, output=os.path.join(work, "s")),
        "heapscope exact": lambda: heapscope.dask.profile(client, output=os.path.join(work, "e"), sample=False),
    }
    if memray_workers is not None:
        modes["memray_workers"] = lambda: memray_workers(os.path.join(work, "m"), report_args=False)
    inside = {mode: [] for mode in modes}
    after = {mode: [] for mode in modes}
    for _ in range(options.reps):
        for mode, make in modes.items():
            context = make()
            context.__enter__()
            started = time.perf_counter()
            workload(client, options.tasks)
            done = time.perf_counter()
            context.__exit__(None, None, None)
            inside[mode].append(done - started)
            after[mode].append(time.perf_counter() - done)
            print(f"  ({mode}: {inside[mode][-1]:.3f} s, then {after[mode][-1]:.3f} s)", file=sys.stderr,
                  flush=True)
    base = statistics.median(inside["none"])
    print(f"{options.tasks} small tasks on 2 workers, median of {options.reps} interleaved runs "
          f"(Python {sys.version.split()[0]}):")
    print(f"  {'mode':<18} {'workload s':>10} {'ratio':>6} {'stop+gather s':>14}")
    for mode in modes:
        median = statistics.median(inside[mode])
        print(f"  {mode:<18} {median:>10.3f} {median / base:>6.2f} {statistics.median(after[mode]):>14.3f}")


def gather_and_merge(client, options, work):
    import heapscope.dask

    gathers, sizes = [], []
    for _ in range(options.gather_reps):
        workers = sorted(client.scheduler_info()["workers"])
        with heapscope.dask.profile(client, output=os.path.join(work, "big"), sample=False,
                                    trace_python_allocators=options.trace_python_allocators) as result:
            made = client.gather([client.submit(churn, options.gib, options.stacks, seed, options.smallest,
                                                options.largest, pure=False, workers=[address])
                                  for seed, address in enumerate(workers)])
            exit_started = time.perf_counter()
        gathers.append(time.perf_counter() - exit_started)
        client.run(release)
        sizes.append([os.path.getsize(path) for path in result.captures.values()])
        merged = os.path.getsize(result.path)
        print(f"  (gather + merge {gathers[-1]:.2f} s; captures "
              f"{', '.join(f'{size / (1 << 20):.1f} MiB' for size in sizes[-1])}, merged {merged / (1 << 20):.1f} MiB)",
              file=sys.stderr, flush=True)
    print(f"gather + merge, 2 workers x {options.gib:g} GiB in {options.block} B blocks at {options.stacks} call paths, "
          f"a quarter kept ({', '.join(f'{n:,} allocations, {kept / (1 << 20):.0f} MiB kept' for n, kept in made)}; "
          f"every allocation recorded): median {statistics.median(gathers):.2f} s of {len(gathers)} "
          f"(each: {', '.join(f'{g:.2f}' for g in gathers)} s); captures "
          f"{', '.join(f'{size / (1 << 20):.1f} MiB' for size in sizes[-1])}, merged {merged / (1 << 20):.1f} MiB")


if __name__ == "__main__":
    main()
