"""What profiling a Dask cluster costs (issue 18), in one run on one
LocalCluster(n_workers=2, processes=True, threads_per_worker=1):

1. Many small tasks (``--tasks`` of them, each building a list of 2,000
   small objects), wall time of submit-to-gather, side by side: no
   profiler, ``heapscope.dask.profile(sample=True)`` (the default),
   ``profile(sample=False)`` and memray's ``memray_workers(report_args=False)``
   (raw captures fetched, as heapscope's are). Repeats are interleaved;
   medians are shown with the ratio to no profiler. The time a profiler
   needs after the block (stopping, gathering, merging) is shown apart.
2. Gather and merge: each worker allocates and frees ``--gib`` GiB in 4 KiB
   blocks (every allocation recorded, sample=False); the time the block's
   exit takes to stop both Trackers, bring both captures back over Dask's
   comms and write them and the merged file.

    python bench/dask_overhead.py [--tasks 4000] [--reps 5] [--gib 1]

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


def churn(gib):
    """Allocates and frees `gib` GiB in 4 KiB blocks."""
    block = 4096
    for _ in range(int(gib * (1 << 30) // block)):
        data = bytearray(block)
        del data
    return gib


def workload(client, tasks):
    futures = client.map(small_task, range(tasks), pure=False)
    return sum(client.gather(futures))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=4000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--gib", type=float, default=1.0)
    options = parser.parse_args()

    from distributed import Client, LocalCluster

    import heapscope.dask

    try:
        from distributed.diagnostics.memray import memray_workers
    except ImportError:
        memray_workers = None

    work = tempfile.mkdtemp(prefix="heapscope-dask-bench-")
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        workload(client, 200)  # warm: imports, connections
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

        gathers = []
        for _ in range(max(1, options.reps // 2)):
            workers = sorted(client.scheduler_info()["workers"])
            with heapscope.dask.profile(client, output=os.path.join(work, "big"), sample=False) as result:
                client.gather([client.submit(churn, options.gib, pure=False, workers=[address])
                               for address in workers])
                exit_started = time.perf_counter()
            gathers.append(time.perf_counter() - exit_started)
            sizes = [os.path.getsize(path) for path in result.captures.values()]
        print(f"gather + merge, 2 workers x {options.gib:g} GiB in 4 KiB blocks (every allocation): "
              f"median {statistics.median(gathers):.2f} s of {len(gathers)}; captures "
              f"{', '.join(f'{size / 1024:.1f} KiB' for size in sizes)}")


if __name__ == "__main__":
    main()
