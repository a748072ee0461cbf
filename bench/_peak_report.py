"""Time the peak-memory report from a capture file, with the tool that wrote it.

    python bench/_peak_report.py memray|heapscope CAPTURE

The timed span is what `memray summary` / `heapscope summary` need: open the
file, compute the records at the high-water mark (threads merged), and
resolve each record's Python stack. Prints one JSON line:
{"report_s": ..., "report_records": ..., "total_allocations": ...}.
"""
import json
import sys
import time


def main(tool, path):
    if tool == "memray":
        import memray as module
    else:
        import heapscope as module
    t0 = time.perf_counter()
    reader = module.FileReader(path)
    records = list(reader.get_high_watermark_allocation_records(merge_threads=True))
    frames = sum(len(record.stack_trace()) for record in records)
    elapsed = time.perf_counter() - t0
    print(json.dumps({"report_s": elapsed, "report_records": len(records), "report_frames": frames,
                      "total_allocations": reader.metadata.total_allocations,
                      "peak_memory": reader.metadata.peak_memory}))


if __name__ == "__main__":
    main(*sys.argv[1:])
