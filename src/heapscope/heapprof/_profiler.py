"""start / gatherStats / stop / isProfiling: heapprof's profiler, run by a
heapscope.Tracker.

Profiling writes ``filebase.hpm`` (metadata, _files.py) and ``filebase.hpd``:
a heapscope capture of every allocation, Python's allocators traced, so a
killed process leaves it readable up to its last 250 ms. Stats mode writes a
capture to a temporary file and prints its size distribution at stop.
"""

import atexit
import os
import sys
import tempfile
import threading
import time

import heapscope
from heapscope._sampling import describe_sampling, size_ranges
from heapscope.heapprof._files import HPC_MAGIC, write_metadata

#: heapprof's default: 1-127 bytes at 1 in 10,000, 128-8191 bytes at 1 in 10,
#: 8192 bytes and more always.
DEFAULT_SAMPLING_RATE = {128: 1e-4, 8192: 0.1}


def tracker_sampling(rates):
    """The Tracker's ``sampling=`` argument for heapprof's size ranges (a
    sorted list of (upper bound, probability)): the one place that decides
    how a heapprof capture is sampled. Each recorded block then carries the
    weight 1/p that makes its bytes an unbiased estimate (sample/sampler.h)."""
    return dict(rates)


class _Run:
    """The profiler that runs in this process."""

    def __init__(self, mode, tracker, pid, data_path, metadata_path=None, metadata=None):
        self.mode = mode  # "profile" or "stats"
        self.tracker = tracker
        self.pid = pid
        self.data_path = data_path
        self.metadata_path = metadata_path
        self.metadata = metadata


_lock = threading.RLock()
_run = None
_atexit_registered = False


def _check_rates(samplingRate):
    """heapprof's samplingRate as a sorted list of (upper bound, probability),
    checked as every door checks size ranges (heapscope._sampling.size_ranges):
    TypeError for a mapping of the wrong type, ValueError for repeated
    entries (keys equal as ints), bounds below 1, probabilities outside
    [0, 1] or an empty mapping."""
    return size_ranges(DEFAULT_SAMPLING_RATE if samplingRate is None else samplingRate, "samplingRate")


def _check_free():
    """RuntimeError if heapprof, a heapscope Tracker or heapscope.tracemalloc runs in this process."""
    from heapscope import _heapscope

    _heapscope.check_can_start("heapprof")


def _register_atexit():
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(stop)
        _atexit_registered = True


def _start_tracker(path, sampling=None):
    from heapscope.tracker import FileDestination, Tracker

    tracker = Tracker(destination=FileDestination(path, overwrite=True), trace_python_allocators=True,
                      sampling=sampling)
    tracker._door = "heapprof"  # the session owner tells heapprof's runs from a user's Tracker
    tracker.__enter__()
    return tracker


def start(filebase, samplingRate=None):
    """Start heapprof in profiling (normal) mode: see heapscope.heapprof."""
    global _run
    base = os.fspath(filebase)  # TypeError for anything but a path
    if not isinstance(base, str):
        base = os.fsdecode(base)
    rates = _check_rates(samplingRate)
    with _lock:
        _check_free()
        metadata_path, data_path = base + ".hpm", base + ".hpd"
        metadata = {
            "mode": "profile",
            "start_time": time.time(),
            "sampling_rate": [[bound, probability] for bound, probability in rates],
            "sampling_applied": describe_sampling(tracker_sampling(rates), "samplingRate"),
            "pid": os.getpid(),
            "command_line": " ".join(sys.argv),
            "python_version": sys.version.split()[0],
            "heapscope_version": heapscope.__version__,
            "data_file": os.path.basename(data_path),
            "stop_time": None,
        }
        write_metadata(metadata_path, metadata)
        _remove_our_digest(base + ".hpc")  # it describes an earlier run
        try:
            tracker = _start_tracker(data_path, tracker_sampling(rates))
        except BaseException:
            _remove_quietly(metadata_path)
            raise
        _run = _Run("profile", tracker, os.getpid(), data_path, metadata_path, metadata)
        _register_atexit()


def gatherStats():
    """Start heapprof in stats gathering mode: see heapscope.heapprof."""
    global _run
    with _lock:
        _check_free()
        fd, path = tempfile.mkstemp(prefix="heapprof-stats-", suffix=".hscap")
        os.close(fd)
        try:
            tracker = _start_tracker(path)
        except BaseException:
            _remove_quietly(path)
            raise
        _run = _Run("stats", tracker, os.getpid(), path)
        _register_atexit()


def stop():
    """Stop the profiler (implicitly called at exit). Does nothing if it is not running."""
    global _run
    with _lock:
        run, _run = _run, None
        if run is None or run.pid != os.getpid():
            return  # not running, or a forked child: the parent owns the files
        run.tracker.__exit__(None, None, None)
        if run.mode == "profile":
            run.metadata["stop_time"] = time.time()
            try:
                write_metadata(run.metadata_path, run.metadata)
            except OSError as error:  # the .hpm of the start is still there
                print(f"heapprof: could not update {run.metadata_path}: {error}", file=sys.stderr)
            return
        try:
            _print_stats(run.data_path)
        finally:
            _remove_quietly(run.data_path)


def isProfiling():
    """True while the profiler (either mode) runs in this process."""
    run = _run
    return run is not None and run.pid == os.getpid()


def _print_stats(path, stream=None):
    from heapscope import _heapscope
    from heapscope.reports.text import table

    stream = stream if stream is not None else sys.stderr
    stats = _heapscope.capture_size_histogram(path)
    total = stats["total_bytes"]
    rows = [(f"{bucket.low} - {bucket.high}", bucket.count, bucket.bytes,
             f"{100 * bucket.bytes / total:.1f}%" if total else "-")
            for bucket in stats["histogram"] if bucket.count]
    lines = ["-" * 43, "HEAP USAGE SUMMARY (allocations by size, bytes)",
             table(["Size", "Count", "Bytes", "Of bytes"], rows, align=["<", ">", ">", ">"]),
             f"{stats['total_allocations']} allocations, {stats['total_bytes']} bytes in all"]
    try:
        print("\n".join(lines), file=stream)
        stream.flush()
    except (OSError, ValueError):  # stderr closed at exit
        pass


def _remove_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def _remove_our_digest(path):
    """Removes a digest heapscope wrote at *path* (any other file is left alone)."""
    try:
        with open(path, "rb") as source:
            if source.read(len(HPC_MAGIC)) != HPC_MAGIC:
                return
    except OSError:
        return
    _remove_quietly(path)
