"""Per-line accuracy of a sampled capture against an exact one, for one workload.

    python bench/_accuracy.py WORKLOAD.py SAMPLING SEED...

Runs the workload once exactly and once per seed with ``sampling=SAMPLING``
(an int mean interval, or "true"), each in this process under
heapscope.Tracker with Python allocators traced, and compares the bytes
held at the high-water mark per source line (the innermost frame in the
workload's file, all threads merged). The lines holding the top 90% of the
exact peak are "the lines that matter"; the result is the largest relative
error among them, per seed, as JSON on the last stdout line.
"""
import importlib.util
import json
import os
import sys
import tempfile

import heapscope


def peak_by_line(path, workload_file):
    reader = heapscope.FileReader(path)
    lines = {}
    for record in reader.get_high_watermark_allocation_records(merge_threads=True):
        frame = next((f for f in record.stack_trace() if f[1] == workload_file), None)
        if frame is not None:
            lines[frame[2]] = lines.get(frame[2], 0) + record.size
    return lines, reader.metadata.peak_memory


def capture(workload, sampling, path):
    with heapscope.Tracker(path, trace_python_allocators=True, sampling=sampling):
        kept = workload.main()
    del kept


def main(argv):
    workload_path, sampling_text, seeds = argv[0], argv[1], argv[2:]
    sampling = True if sampling_text == "true" else int(sampling_text)
    spec = importlib.util.spec_from_file_location("bench_workload", workload_path)
    workload = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(workload)
    workload_file = os.path.abspath(workload_path)
    with tempfile.TemporaryDirectory(prefix="heapscope-accuracy-") as scratch:
        exact_path = os.path.join(scratch, "exact.hscap")
        capture(workload, None, exact_path)
        exact, exact_peak = peak_by_line(exact_path, workload_file)
        total = sum(exact.values())
        ranked = sorted(exact.items(), key=lambda item: -item[1])
        top, held = [], 0
        for line, size in ranked:
            if held >= 0.9 * total:
                break
            top.append(line)
            held += size
        runs = []
        for seed in seeds:
            os.environ["HEAPSCOPE_SAMPLING_SEED"] = seed
            path = os.path.join(scratch, f"sampled-{seed}.hscap")
            capture(workload, sampling, path)
            sampled, sampled_peak = peak_by_line(path, workload_file)
            errors = {line: abs(sampled.get(line, 0) - exact[line]) / exact[line] for line in top}
            runs.append({"seed": int(seed), "max_line_error": max(errors.values()) if errors else 0.0,
                         "peak_error": abs(sampled_peak - exact_peak) / exact_peak if exact_peak else 0.0})
    print(json.dumps({"lines_for_90pct": len(top), "exact_peak_bytes": exact_peak,
                      "bytes_at_those_lines": held, "runs": runs}))


if __name__ == "__main__":
    main(sys.argv[1:])
