"""What the capture journal (issue 14) costs end to end: one workload
(bench/workloads/alloc_heavy.py, Python's allocators traced, about 14 million
allocations) captured with the journal (HEAPSCOPE_JOURNAL=1, the default)
and without it (0: chunks written as they fill and every 250 ms), runs
interleaved; wall time of the Tracker block and the process's CPU time.

    python bench/run_journal.py [--reps 4]

The writer alone, without Python: build/unit/heapscope_unit_tests
--gtest_also_run_disabled_tests --gtest_filter='*WriterBench*'.
"""

import argparse
import os
import resource
import subprocess
import sys
import tempfile

WORKLOADS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "workloads")
SCRIPT = r'''
import sys, time
sys.path.insert(0, sys.argv[2])
import alloc_heavy, heapscope
t = time.perf_counter()
with heapscope.Tracker(destination=heapscope.FileDestination(sys.argv[1], overwrite=True),
                       trace_python_allocators=True) as tracker:
    alloc_heavy.main()
print(time.perf_counter() - t, tracker.totals["allocations"], tracker.totals["bytes_written"])
'''


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=4)
    reps = parser.parse_args().reps
    results = {"1": [], "0": []}
    with tempfile.TemporaryDirectory() as work:
        for _ in range(reps):
            for journal in ("0", "1"):
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                out = subprocess.run([sys.executable, "-c", SCRIPT, os.path.join(work, "c.hscap"), WORKLOADS],
                                     capture_output=True, text=True, check=True,
                                     env={**os.environ, "HEAPSCOPE_JOURNAL": journal}).stdout.split()
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
                results[journal].append((float(out[0]), cpu, int(out[1]), int(out[2])))
    for journal, runs in results.items():
        walls = sorted(r[0] for r in runs)
        cpus = sorted(r[1] for r in runs)
        print(f"{'journal   ' if journal == '1' else 'no journal'}: wall min {walls[0]:.3f} s, median "
              f"{walls[len(walls) // 2]:.3f} s; CPU min {cpus[0]:.3f} s, median {cpus[len(cpus) // 2]:.3f} s; "
              f"{runs[0][2]:,} allocations; file {runs[0][3]:,} bytes")


if __name__ == "__main__":
    main()
