"""What Tracker(track_object_lifetimes=True) costs, side by side in one run.

    python bench/run_object_lifetimes.py [--reps 5] [--workloads alloc_heavy json_roundtrip]

Modes: plain Python; a heapscope capture (the default options); the same
capture with track_object_lifetimes (Python 3.13+); and memray's, where
memray tracks objects (3.13.3+). Each run is a fresh process timing
tracker start + workload + stop; the repeats are interleaved (mode after
mode, then again) and the medians compared. The machine may be shared and
noisy: read ratios, not absolute times.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

RUN = r"""
import importlib, json, os, sys, time
sys.path.insert(0, {workloads!r})
workload = importlib.import_module({workload!r})
mode, out = {mode!r}, {out!r}
if mode == "plain":
    begin = time.perf_counter(); workload.main(); elapsed = time.perf_counter() - begin
else:
    tool = importlib.import_module("memray" if mode.startswith("memray") else "heapscope")
    options = {{"track_object_lifetimes": True}} if mode.endswith("lifetimes") else {{}}
    begin = time.perf_counter()
    with tool.Tracker(out, **options):
        workload.main()
    elapsed = time.perf_counter() - begin
print(json.dumps({{"seconds": elapsed, "bytes": os.path.getsize(out) if mode != "plain" else 0}}))
"""


def run(workload, mode, directory):
    out = os.path.join(directory, f"{workload}-{mode}.bin")
    if os.path.exists(out):
        os.unlink(out)
    code = RUN.format(workloads=os.path.join(HERE, "workloads"), workload=workload, mode=mode, out=out)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1:]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--workloads", nargs="+", default=["alloc_heavy", "json_roundtrip"])
    args = parser.parse_args()
    modes = ["plain", "heapscope"]
    if sys.version_info >= (3, 13):
        modes.append("heapscope-lifetimes")
    if sys.version_info >= (3, 13, 3):
        try:
            import memray  # noqa: F401
            modes += ["memray", "memray-lifetimes"]
        except ImportError:
            pass
    print(f"Python {sys.version.split()[0]}, {args.reps} interleaved repeats, medians (a shared, noisy machine)")
    with tempfile.TemporaryDirectory() as directory:
        for workload in args.workloads:
            runs = {mode: [] for mode in modes}
            for _ in range(args.reps):
                for mode in modes:
                    runs[mode].append(run(workload, mode, directory))
            plain = statistics.median(r["seconds"] for r in runs["plain"] if "error" not in r)
            for mode in modes:
                ok = [r for r in runs[mode] if "error" not in r]
                if not ok:
                    print(f"{workload:16} {mode:22} failed: {runs[mode][0]['error']}")
                    continue
                seconds = statistics.median(r["seconds"] for r in ok)
                size = statistics.median(r["bytes"] for r in ok)
                print(f"{workload:16} {mode:22} {seconds:7.3f} s  x{seconds / plain:5.2f}  {size / 1e6:8.1f} MB")


if __name__ == "__main__":
    main()
