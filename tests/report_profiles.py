"""Profiles with known contents for the report tests, and realistic ones for
the screenshots in docs/images (a small data pipeline with a leak in a cache,
three threads, native frames and import machinery)."""

import random

from heapscope.reports.model import Frame, Profile, Sample, TemporalSnapshot, Timeline, diff_profiles
from heapscope.reports.text import format_bytes

HOSTILE = "</script><img src=x onerror=alert(1)>"

MAIN = Frame("main", "/app/main.py", 5)
F = Frame("f", "/app/mod.py", 10)
G = Frame("g", "/app/mod.py", 20)


def ground_truth(f_file="/app/mod.py"):
    """main -> f holding 1,000,000 bytes in 2 blocks (thread 1), main -> g
    holding 250,000 in 3 (thread 2)."""
    f = Frame("f", f_file, 10)
    return Profile("Ground truth", [Sample((MAIN, f), 1_000_000, 2, 1, "MALLOC"),
                                    Sample((MAIN, G), 250_000, 3, 2, "PYMALLOC_MALLOC")],
                   source="ground-truth.hscap", header=["heapscope peak: python app/main.py"],
                   threads={1: "MainThread", 2: "worker"})


def hostile(is_diff=False):
    """Every name the page shows is an attempt to inject markup."""
    evil = Frame(HOSTILE, "<img src=y onerror=alert(2)>.py", 3)
    native = Frame("<svg onload=alert(3)>", "lib<b>x</b>.so", 0, True)
    samples = [Sample((MAIN, evil), 900_000, 3, 7, "<i>alloc</i>", 100, 1),
               Sample((MAIN, evil, native), 100_000, 1, 7, "MALLOC", 5, 1)]
    return Profile(HOSTILE, samples, source="<script>alert(4)</script>", header=[HOSTILE, "\u2028</script>"],
                   threads={7: "<img src=z onerror=alert(5)>"}, is_diff=is_diff,
                   timeline=Timeline([0.0, 1.0], [2_000_000, 3_000_000], [500_000, 1_000_000]),
                   temporal_stacks=[(MAIN, evil)],
                   temporal=[TemporalSnapshot(0.0, 500_000, {0: (500_000, 1)}),
                             TemporalSnapshot(1.0, 1_000_000, {0: (1_000_000, 4)})])


def temporal_ground_truth():
    """Moments 0..3 s: heap 0, f 1 MB, f 1 MB + g 250 kB, g alone."""
    profile = ground_truth()
    profile.timeline = Timeline([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0],
                                [8_000_000, 8_500_000, 9_000_000, 9_600_000, 9_800_000, 9_500_000, 9_000_000],
                                [0, 400_000, 1_000_000, 1_100_000, 1_250_000, 700_000, 250_000])
    profile.temporal_stacks = [(MAIN, F), (MAIN, G)]
    profile.temporal = [TemporalSnapshot(0.0, 0, {}),
                        TemporalSnapshot(1.0, 1_000_000, {0: (1_000_000, 2)}),
                        TemporalSnapshot(2.0, 1_250_000, {0: (1_000_000, 2), 1: (250_000, 3)}),
                        TemporalSnapshot(3.0, 250_000, {1: (250_000, 3)})]
    return profile


# ---- realistic profiles, for the screenshots

SITE = "/usr/lib/python3.12/site-packages"
APP = "/home/dev/shop"


def _py(function, path, line):
    return Frame(function, path, line)


def _native(function, library):
    return Frame(function, library, 0, True)


_LAUNCH = (_py("<module>", f"{SITE}/heapscope/__main__.py", 3), _py("main", f"{SITE}/heapscope/cli/run.py", 88),
           _py("run_path", "/usr/lib/python3.12/runpy.py", 286), _py("<module>", f"{APP}/app/main.py", 41),
           _py("main", f"{APP}/app/main.py", 33))
_IMPORT = (_py("_find_and_load", "<frozen importlib._bootstrap>", 1360),
           _py("_load_unlocked", "<frozen importlib._bootstrap>", 935),
           _py("exec_module", "<frozen importlib._bootstrap_external>", 995))
_RUN = _py("run", f"{APP}/app/pipeline.py", 57)
_THREAD = (_py("_bootstrap", "/usr/lib/python3.12/threading.py", 1030),
           _py("_bootstrap_inner", "/usr/lib/python3.12/threading.py", 1073),
           _py("run", "/usr/lib/python3.12/threading.py", 1010))
_PYMALLOC = (_native("_PyObject_Malloc", "libpython3.12.so.1.0"),)
_MALLOC = (_native("PyMem_RawMalloc", "libpython3.12.so.1.0"), _native("malloc", "libc.so.6"))

# (stack below the launch frames, bytes, blocks, thread, allocator)
_REALISTIC = [
    ((_RUN, _py("load_records", f"{APP}/ingest/loader.py", 72), _py("parse_row", f"{APP}/ingest/csv_reader.py", 31),
      _native("Reader_iternext", "_csv.cpython-312-x86_64-linux-gnu.so")) + _PYMALLOC, 14_200_000, 180_000, 1, "PYMALLOC_MALLOC"),
    ((_RUN, _py("load_records", f"{APP}/ingest/loader.py", 74), _py("to_record", f"{APP}/ingest/records.py", 18)),
     9_800_000, 120_000, 1, "PYMALLOC_MALLOC"),
    ((_RUN, _py("load_records", f"{APP}/ingest/loader.py", 79), _py("decode_json", f"{APP}/ingest/loader.py", 112),
      _py("loads", "/usr/lib/python3.12/json/__init__.py", 346), _py("decode", "/usr/lib/python3.12/json/decoder.py", 337),
      _py("raw_decode", "/usr/lib/python3.12/json/decoder.py", 353)) + _MALLOC, 6_300_000, 9_000, 1, "MALLOC"),
    ((_RUN, _py("build_features", f"{APP}/features/build.py", 40), _py("zeros_like", f"{SITE}/numpy/core/numeric.py", 139),
      _native("PyArray_NewLikeArray", "_multiarray_umath.cpython-312-x86_64-linux-gnu.so"),
      _native("PyDataMem_UserNEW", "_multiarray_umath.cpython-312-x86_64-linux-gnu.so"), _native("malloc", "libc.so.6")),
     24_000_000, 12, 1, "MALLOC"),
    ((_RUN, _py("build_features", f"{APP}/features/build.py", 44), _py("one_hot", f"{APP}/features/encode.py", 23)),
     7_500_000, 40_000, 1, "PYMALLOC_MALLOC"),
    ((_RUN, _py("score", f"{APP}/app/pipeline.py", 66), _py("remember", f"{APP}/cache/lru.py", 51),
      _py("__setitem__", f"{APP}/cache/lru.py", 29)) + _PYMALLOC, 11_000_000, 60_000, 1, "PYMALLOC_MALLOC"),
    ((_RUN, _py("score", f"{APP}/app/pipeline.py", 68), _py("predict", f"{APP}/model/linear.py", 90)),
     3_200_000, 2_000, 1, "PYMALLOC_MALLOC"),
    ((_py("render_report", f"{APP}/report/render.py", 12), _py("table_rows", f"{APP}/report/render.py", 48)),
     2_100_000, 30_000, 1, "PYMALLOC_MALLOC"),
    (_IMPORT + (_py("<module>", f"{SITE}/numpy/__init__.py", 130), _py("_load_umath", f"{SITE}/numpy/core/_multiarray_umath.py", 8))
     + _MALLOC, 4_400_000, 3_100, 1, "MALLOC"),
    (_IMPORT + (_py("<module>", f"{APP}/model/linear.py", 1),), 1_300_000, 9_500, 1, "PYMALLOC_MALLOC"),
]
_WORKERS = [
    (_THREAD + (_py("upload_loop", f"{APP}/app/upload.py", 22), _py("send_batch", f"{APP}/app/upload.py", 61),
                _py("compress", f"{APP}/app/upload.py", 80), _native("deflate", "libz.so.1")), 5_600_000, 40, 2, "MALLOC"),
    (_THREAD + (_py("upload_loop", f"{APP}/app/upload.py", 22), _py("serialise", f"{APP}/app/upload.py", 95)),
     2_900_000, 25_000, 2, "PYMALLOC_MALLOC"),
    (_THREAD + (_py("_worker", "/usr/lib/python3.12/concurrent/futures/thread.py", 92),
                _py("run", "/usr/lib/python3.12/concurrent/futures/thread.py", 58),
                _py("fetch_prices", f"{APP}/app/prices.py", 37), _py("read", "/usr/lib/python3.12/http/client.py", 495),
                _native("PyBytes_FromStringAndSize", "libpython3.12.so.1.0")), 4_100_000, 800, 3, "PYMALLOC_MALLOC"),
]
THREADS = {1: "MainThread", 2: "uploader", 3: "ThreadPoolExecutor-0_0"}
HEADER = ["heapscope peak: python -m app.main --input orders-2024.csv",
          "  capture   heapscope-app.main.4242.hscap (ALL_ALLOCATIONS, Python allocators traced{native})",
          "  ran       12.40 s from 2025-03-14 09:26:53, pid 4242",
          "  peak      {peak} of traced memory"]


def _spread(stack, size, blocks, thread, allocator, rng, parts=2):
    """One stack becomes a few (different lines in the innermost Python
    frame), so the graph has texture."""
    samples = []
    for index in range(parts):
        share = size // parts + (size % parts if index == 0 else 0)
        last_python = max(i for i, frame in enumerate(stack) if not frame.native)
        frame = stack[last_python]
        varied = stack[:last_python] + (Frame(frame.function, frame.filename, frame.lineno + 3 * index),) + \
            stack[last_python + 1:]
        samples.append(Sample(varied, int(share * rng.uniform(0.6, 1.4)), max(blocks // parts, 1), thread, allocator))
    return samples


def realistic(scale=1.0, seed=7, leak=1.0, native=True):
    """A peak profile of a small data pipeline; *leak* scales the cache;
    without *native*, the stacks hold Python frames only."""
    rng = random.Random(seed)
    samples = []
    for stack, size, blocks, thread, allocator in _REALISTIC:
        if any("cache/lru.py" in frame.filename for frame in stack):
            size, blocks = int(size * leak), int(blocks * leak)
        samples += _spread(_LAUNCH + stack, int(size * scale), blocks, thread, allocator, rng)
    for stack, size, blocks, thread, allocator in _WORKERS:
        samples += _spread(stack, int(size * scale), blocks, thread, allocator, rng)
    if not native:
        samples = [Sample(tuple(f for f in s.stack if not f.native), s.bytes, s.blocks, s.thread, s.allocator)
                   for s in samples]
    profile = Profile("Memory held at the high-water mark", samples, source=f"{APP}/heapscope-app.main.4242.hscap",
                      threads=dict(THREADS), native=native)
    profile.header = [line.format(native=", native traces" if native else "", peak=format_bytes(profile.total_bytes))
                      for line in HEADER]
    return profile


def realistic_temporal():
    """The realistic profile with 12 s of memory over time: ingestion fills
    the heap, features peak at ~7 s, the cache keeps growing."""
    profile = realistic()
    stacks = sorted({sample.stack for sample in profile.samples}, key=lambda s: [f.describe() for f in s])
    index = {stack: i for i, stack in enumerate(stacks)}
    final = {}
    for sample in profile.samples:
        final[index[sample.stack]] = (sample.bytes, sample.blocks)

    def phase(stack):
        names = " ".join(frame.filename for frame in stack)
        if "loader" in names or "csv_reader" in names or "records" in names:
            return (0.5, 4.0, 9.0)  # rises, then freed after 9 s
        if "features" in names:
            return (5.0, 7.0, 8.0)
        if "cache" in names:
            return (2.0, 12.0, 99.0)
        if "importlib" in names:
            return (0.0, 0.4, 99.0)
        return (1.0, 3.0, 99.0)

    times = [round(0.1 * i, 1) for i in range(125)]
    snapshots, heap_at = [], {}
    for t in times:
        held = {}
        for stack, i in index.items():
            start, full, end = phase(stack)
            size, blocks = final[i]
            if t < start or t >= end:
                continue
            fraction = min(1.0, (t - start) / max(full - start, 0.1))
            if fraction > 0:
                held[i] = (int(size * fraction), max(int(blocks * fraction), 1))
        heap_at[t] = sum(size for size, _ in held.values())
        if abs(t * 2 - round(t * 2)) < 1e-9:  # a snapshot every 0.5 s
            snapshots.append(TemporalSnapshot(t, heap_at[t], held))
    rss = [int(38_000_000 + heap_at[t] * 1.12 + 900_000 * t) for t in times]
    profile.timeline = Timeline(times, rss, [heap_at[t] for t in times])
    profile.temporal_stacks = stacks
    profile.temporal = snapshots
    return profile


def realistic_diff():
    """Before: a run whose cache stayed small; after: the cache leaked, the
    CSV reader got leaner, one-hot encoding grew, the report rendering is
    gone and a warm-up step is new."""
    before = realistic(leak=0.25, native=False)
    before.source = f"{APP}/heapscope-v1.hscap"
    after = realistic(leak=1.8, native=False)
    after.source = f"{APP}/heapscope-v2.hscap"
    factors = {"csv_reader": 0.45, "encode.py": 1.3, "linear.py": 0.8, "render.py": 0.0}
    samples = []
    for sample in after.samples:
        factor = next((f for name, f in factors.items() if any(name in fr.filename for fr in sample.stack)), 1.0)
        if factor:
            samples.append(Sample(sample.stack, int(sample.bytes * factor), int(sample.blocks * factor) or 1,
                                  sample.thread, sample.allocator))
    warm_up = _LAUNCH + (_RUN, _py("warm_up", f"{APP}/app/pipeline.py", 50), _py("preload", f"{APP}/cache/lru.py", 70))
    samples.append(Sample(warm_up, 3_600_000, 20_000, 1, "PYMALLOC_MALLOC"))
    after.samples = samples
    return diff_profiles(before, after)
