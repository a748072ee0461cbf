"""The memray door behaves as memray's API: heapscope.Tracker, FileReader and
its records against ground truth (a C extension built here allocates known
sizes at known lines), and side by side with memray where memray runs.

The same script runs under either tool (its first argument names it); a
reader script run in another subprocess prints what the tool's FileReader
says as JSON. memray is only ever imported in subprocesses: its extension
and heapscope's both bring libunwind, and must not share a process here.
"""

import importlib.util
import json

import pytest

from capture_helpers import build_extension, run_script, write_script


def _need_memray():
    if importlib.util.find_spec("memray") is None:
        pytest.skip("memray is not installed")


@pytest.fixture(scope="module")
def extension_dir(tmp_path_factory):
    return build_extension(str(tmp_path_factory.mktemp("ext")))


# Prepended to every traced script: `Tracker` is the chosen tool's, and
# `FileFormat` too; `options` holds the Tracker keywords given as JSON in
# argv[3] (file_format by name).
PROLOGUE = """
import json, sys
tool, out = sys.argv[1], sys.argv[2]
options = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
if tool == "memray":
    import memray as _tool
else:
    import heapscope as _tool
Tracker, FileFormat = _tool.Tracker, _tool.FileFormat
if "file_format" in options:
    options["file_format"] = FileFormat[options["file_format"]]
"""

# Prints, as JSON, what a FileReader says about a capture: argv: tool,
# capture, then the queries to make.
READER = """
import json, sys
tool, capture = sys.argv[1], sys.argv[2]
queries = sys.argv[3:]
if tool == "memray":
    import memray
    reader = memray.FileReader(capture)
    allocator_name = lambda record: memray.AllocatorType(record.allocator).name
else:
    import heapscope
    reader = heapscope.FileReader(capture)
    allocator_name = lambda record: record.allocator.name


def row(record, deallocation=False):
    out = {"allocator": allocator_name(record), "size": record.size, "n": record.n_allocations,
           "thread_name": record.thread_name}
    if not deallocation:
        out["stack"] = [list(frame) for frame in record.stack_trace()]
        if "hybrid" in queries:
            out["hybrid"] = [list(frame) for frame in record.hybrid_stack_trace()]
    return out


result = {}
for query in queries:
    if query == "peak":
        result[query] = [row(r) for r in reader.get_high_watermark_allocation_records()]
    elif query == "peak_threads":
        result[query] = [row(r) for r in reader.get_high_watermark_allocation_records(merge_threads=False)]
    elif query == "leaks":
        result[query] = [row(r) for r in reader.get_leaked_allocation_records()]
    elif query == "records":
        result[query] = [row(r, allocator_name(r) in ("FREE", "MUNMAP", "PYMALLOC_FREE"))
                         for r in reader.get_allocation_records()]
    elif query == "metadata":
        m = reader.metadata
        result[query] = {"total_allocations": m.total_allocations, "peak_memory": m.peak_memory}
    elif query == "snapshots":
        result[query] = [[type(s.time).__name__, s.time, s.rss, s.heap] for s in reader.get_memory_snapshots()]
print(json.dumps(result))
"""


def capture(tmp_path, tool, body, *queries, options=None, extension_dir=None, name="script"):
    """Runs PROLOGUE + *body* (a script using `Tracker(out, **options)`)
    under *tool*, then READER on its capture; returns (what the reader
    printed, {marker: line} of the script, the script's path)."""
    script = tmp_path / f"{name}.py"  # one script for both tools: their stacks name the same file
    lines = write_script(script, PROLOGUE + body)
    out = tmp_path / f"{name}_{tool}.bin"
    extra = [extension_dir] if extension_dir else []
    run_script(script, tool, out, json.dumps(options or {}), extra_paths=extra)
    reader = tmp_path / "reader.py"
    if not reader.exists():
        write_script(reader, READER)
    return json.loads(run_script(reader, tool, out, *queries, extra_paths=extra).stdout), lines, script


def at_lines(rows, script, allocators=None, lines=None):
    """{line: (bytes, count)} of rows whose stack passes through *script*
    (at one of *lines* if given: memray makes blocks of its own at the
    `with` line)."""
    totals = {}
    for row in rows:
        if allocators is not None and row["allocator"] not in allocators:
            continue
        line = next((frame[2] for frame in row["stack"] if frame[1] == str(script)), None)
        if line is not None and (lines is None or line in lines.values()):
            size, count = totals.get(line, (0, 0))
            totals[line] = (size + row["size"], count + row["n"])
    return totals


# -- 4. the high-water mark is the last moment the maximum was reached ----------------------------------------------

TIES = """
import hs_alloc
hs_alloc.malloc(255, 16); hs_alloc.free(255)   # warm-up: the first calls resolve their symbols
with Tracker(out, **options):
    hs_alloc.malloc(1, 1_000_000)   # @first
    hs_alloc.free(1)
    hs_alloc.malloc(2, 400_000)     # @second_a
    hs_alloc.malloc(3, 600_000)     # @second_b
    hs_alloc.free(2)
    hs_alloc.free(3)
    hs_alloc.malloc(4, 100)         # @after
"""


@pytest.mark.parametrize("file_format", ["ALL_ALLOCATIONS", "AGGREGATED_ALLOCATIONS"])
def test_equal_maxima_report_the_last_one(tmp_path, extension_dir, file_format):
    result, lines, script = capture(tmp_path, "heapscope", TIES, "peak", "metadata",
                                    options={"file_format": file_format}, extension_dir=extension_dir)
    peak = at_lines(result["peak"], script, {"MALLOC"})
    # 1_000_000 twice: at `first`, then at second_a + second_b. The second counts.
    assert peak == {lines["second_a"]: (400_000, 1), lines["second_b"]: (600_000, 1)}
    assert result["metadata"]["peak_memory"] == 1_000_000


def test_equal_maxima_as_memray(tmp_path, extension_dir):
    _need_memray()
    peaks = {}
    for tool in ("memray", "heapscope"):
        result, lines, script = capture(tmp_path, tool, TIES, "peak", extension_dir=extension_dir)
        # (memray holds a block of its own, a few hundred bytes, made at the block's first line.)
        peaks[tool] = {line: total for line, total in at_lines(result["peak"], script, {"MALLOC"}, lines).items()
                       if total[0] >= 100_000}
    assert peaks["heapscope"] == peaks["memray"] == {lines["second_a"]: (400_000, 1),
                                                     lines["second_b"]: (600_000, 1)}


# -- 3. heapscope's own allocations never appear -------------------------------------------------------------------

EMPTY = """
with Tracker(out, **options):
    pass
"""


@pytest.mark.parametrize("options", [
    {},
    {"trace_python_allocators": True},
    {"trace_python_allocators": True, "native_traces": True},
    {"file_format": "AGGREGATED_ALLOCATIONS", "trace_python_allocators": True},
])
def test_an_empty_block_captures_nothing(tmp_path, options):
    aggregated = options.get("file_format") == "AGGREGATED_ALLOCATIONS"
    queries = ["peak", "leaks", "metadata"] + ([] if aggregated else ["records"])
    result, _, _ = capture(tmp_path, "heapscope", EMPTY, *queries, options=options)
    assert result["metadata"] == {"total_allocations": 0, "peak_memory": 0}
    assert result["peak"] == [] and result["leaks"] == []
    assert result.get("records", []) == []


# -- 1. records name functions plainly (co_name); heapscope's reports keep qualified names --------------------------

NAMES = """
import hs_alloc
class Holder:
    def method(self):
        hs_alloc.malloc(1, 111_111)                             # @method
        def inner():
            hs_alloc.malloc(2, 222_222)                         # @inner
        inner()
        (lambda: hs_alloc.malloc(3, 333_333))()                 # @lam
        list(hs_alloc.malloc(4, 444_444) for _ in range(1))     # @gen
with Tracker(out, **options):
    Holder().method()
"""

NAME_SIZES = {"method": 111_111, "inner": 222_222, "lam": 333_333, "gen": 444_444}


def innermost_names(rows):
    return {row["size"]: row["stack"][0][0] for row in rows if row["size"] in NAME_SIZES.values()}


def test_records_give_plain_function_names(tmp_path, extension_dir):
    import sys

    from heapscope import FileReader
    from heapscope.reports.adapters import profile_from_capture

    result, lines, script = capture(tmp_path, "heapscope", NAMES, "peak", "records", extension_dir=extension_dir)
    expected = {111_111: "method", 222_222: "inner", 333_333: "<lambda>", 444_444: "<genexpr>"}
    assert innermost_names(result["peak"]) == expected
    assert innermost_names(r for r in result["records"] if "stack" in r) == expected
    # heapscope's own reports (flame graphs, tree, summary) keep the qualified names.
    qualified = sys.version_info >= (3, 11)
    with FileReader(tmp_path / "script_heapscope.bin") as reader:
        profile = profile_from_capture(reader, "peak")
        record = next(r for r in reader.get_high_watermark_allocation_records() if r.size == 222_222)
        assert record.stack_trace()[0][0] == "inner"
        assert record.qualified_stack_trace()[0][0] == ("Holder.method.<locals>.inner" if qualified else "inner")
        assert record.qualified_hybrid_stack_trace() == record.qualified_stack_trace()
    innermost = {sample.bytes: sample.stack[-1].function for sample in profile.samples}
    assert innermost[111_111] == ("Holder.method" if qualified else "method")
    assert innermost[444_444] == ("Holder.method.<locals>.<genexpr>" if qualified else "<genexpr>")


def test_function_names_as_memray(tmp_path, extension_dir):
    _need_memray()
    names = {}
    for tool in ("memray", "heapscope"):
        result, _, _ = capture(tmp_path, tool, NAMES, "peak", extension_dir=extension_dir)
        names[tool] = innermost_names(result["peak"])
    assert names["heapscope"] == names["memray"] and len(names["memray"]) == 4


# -- 6. MemorySnapshot.time: an int of milliseconds since the epoch --------------------------------------------------

SLEEPY = """
import time
with Tracker(out, **options):
    time.sleep(0.2)
    kept = bytearray(3_000_000)
    time.sleep(0.2)
"""


def test_memory_snapshot_times_as_memray(tmp_path):
    import time

    before_ms = int(time.time() * 1000)
    results = {}
    for tool in ("heapscope",) + (("memray",) if importlib.util.find_spec("memray") else ()):
        results[tool], _, _ = capture(tmp_path, tool, SLEEPY, "snapshots", options={"memory_interval_ms": 20})
    after_ms = int(time.time() * 1000)
    for tool, result in results.items():
        snapshots = result["snapshots"]
        assert len(snapshots) >= 5, tool
        assert {kind for kind, *_ in snapshots} == {"int"}, tool
        times = [when for _, when, _, _ in snapshots]
        assert times == sorted(times) and before_ms <= times[0] and times[-1] <= after_ms, tool
        assert times[-1] - times[0] >= 350, tool  # the run lasted 0.4 s
        assert max(heap for *_, heap in snapshots) >= 3_000_000, tool


# -- 2. the stack of the thread that entered the Tracker starts at the frame that entered it -------------------------

ROOTED = """
import threading
import hs_alloc
def leaf(slot, size):
    hs_alloc.malloc(slot, size)                    # @leaf
def inner():
    with Tracker(out, **options):
        leaf(1, 111_111)                           # @in_block
        worker = threading.Thread(target=leaf, args=(2, 222_222))
        worker.start()
        worker.join()
def outer():
    inner()                                        # @outer_call
outer()                                            # @module_call
"""


def _stacks_by_size(rows, key="stack"):
    return {row["size"]: [tuple(frame) for frame in row[key]] for row in rows if row["size"] in (111_111, 222_222)}


@pytest.mark.parametrize("file_format", ["ALL_ALLOCATIONS", "AGGREGATED_ALLOCATIONS"])
def test_stacks_start_at_the_frame_that_entered_the_tracker(tmp_path, extension_dir, file_format):
    result, lines, script = capture(tmp_path, "heapscope", ROOTED, "peak", "peak_threads", "hybrid",
                                    options={"file_format": file_format, "native_traces": True},
                                    extension_dir=extension_dir)
    for query in ("peak", "peak_threads"):
        stacks = _stacks_by_size(result[query])
        # The entering thread: from `inner` (which entered the Tracker) in; outer() and <module> are not there.
        assert stacks[111_111] == [("leaf", str(script), lines["leaf"]), ("inner", str(script), lines["in_block"])]
        # Another thread keeps its whole stack, down to threading's bootstrap.
        assert stacks[222_222][0] == ("leaf", str(script), lines["leaf"])
        assert [frame[0] for frame in stacks[222_222]][-1] == "_bootstrap"
        # The hybrid stack ends with the same frame: the native frames that ran its callers are cut too.
        hybrid = _stacks_by_size(result[query], "hybrid")
        assert hybrid[111_111][-1] == ("inner", str(script), lines["in_block"])
        functions = [frame[0] for frame in hybrid[111_111]]
        assert "hs_gt_malloc" in functions and functions.index("hs_gt_malloc") < functions.index("leaf")
        assert "_start" not in functions and "main" not in functions


def test_stack_start_as_memray(tmp_path, extension_dir):
    _need_memray()
    stacks = {}
    for tool in ("memray", "heapscope"):
        result, lines, script = capture(tmp_path, tool, ROOTED, "peak", "hybrid", options={"native_traces": True},
                                        extension_dir=extension_dir)
        stacks[tool] = _stacks_by_size(result["peak"])
        hybrid = _stacks_by_size(result["peak"], "hybrid")
        assert hybrid[111_111][-1] == ("inner", str(script), lines["in_block"]), tool
    assert stacks["heapscope"] == stacks["memray"]


# -- 5. munmap releases exactly the pages it covers --------------------------------------------------------------------

UNMAPS = """
import os
import hs_alloc
P = os.sysconf("SC_PAGESIZE")
p1, p2, p3, p4, p5, p7, p9, p15, p16 = (n * P for n in (1, 2, 3, 4, 5, 7, 9, 15, 16))  # no int made in the block
with Tracker(out, **options):
    hs_alloc.mmap(1, p16)                 # @first
    hs_alloc.munmap(1, 0, p3)             # its start: 13 pages left
    hs_alloc.munmap(1, p15, p1)           # its end: 12 pages left
    hs_alloc.munmap(1, p7, p2)            # a hole: 10 pages, in two pieces
    hs_alloc.mmap(2, p9)                  # @second
    hs_alloc.mmap_at(3, 2, p4, p5)        # @third: over second's last 5 pages (MAP_FIXED); second keeps 4
    hs_alloc.munmap(2, p3, p3)            # across two mappings: second's last page, third's first two
print(P)
"""


def _mapped(rows, script, lines):
    found = at_lines(rows, script, {"MMAP"}, lines)
    return {name: found.get(lines[name]) for name in ("first", "second", "third")}


@pytest.mark.parametrize("file_format", ["ALL_ALLOCATIONS", "AGGREGATED_ALLOCATIONS"])
def test_munmap_releases_exactly_the_pages_unmapped(tmp_path, extension_dir, file_format):
    import os

    P = os.sysconf("SC_PAGESIZE")
    queries = ["peak", "leaks", "metadata"] + (["records"] if file_format == "ALL_ALLOCATIONS" else [])
    result, lines, script = capture(tmp_path, "heapscope", UNMAPS, *queries, options={"file_format": file_format},
                                    extension_dir=extension_dir)
    # Each piece of a mapping is a block, as memray counts them.
    assert _mapped(result["leaks"], script, lines) == {"first": (10 * P, 2), "second": (3 * P, 1),
                                                       "third": (3 * P, 1)}
    # The heap reached 19 pages twice (second made; third made over part of it): the later moment counts.
    assert _mapped(result["peak"], script, lines) == {"first": (10 * P, 2), "second": (4 * P, 1),
                                                      "third": (5 * P, 1)}
    assert result["metadata"]["peak_memory"] >= 19 * P
    if file_format == "ALL_ALLOCATIONS":
        # One MUNMAP record per piece released, with the bytes it released.
        # (pymalloc's arenas, 1 MiB, are not among them: the block makes no Python object.)
        unmapped = [row["size"] for row in result["records"] if row["allocator"] == "MUNMAP" and row["size"] < 64 * P]
        assert unmapped == [3 * P, P, 2 * P, 5 * P, P, 2 * P]


# -- 7. thread names follow renames made after a thread's first allocation -------------------------------------------

RENAMES = """
import threading
import hs_alloc

def target(how, slot, allocated, go_on):
    hs_alloc.malloc(slot, 100_000 + slot)            # the first allocation: under the first name
    if how == "python":
        threading.current_thread().name = "renamed-python"
    elif how == "prctl":
        hs_alloc.rename(0, 0)
    elif how == "setname":
        hs_alloc.rename(1, 0)
    allocated.set()
    go_on.wait()
    hs_alloc.malloc(slot + 1, 200_000 + slot)

with Tracker(out, **options):
    hs_alloc.malloc(1, 100_001)
    for slot, how in ((10, "python"), (20, "prctl"), (30, "setname"), (40, "other"), (50, "none")):
        allocated, go_on = threading.Event(), threading.Event()
        worker = threading.Thread(target=target, args=(how, slot, allocated, go_on), name="orig-" + how)
        worker.start()
        allocated.wait()
        if how == "other":
            hs_alloc.rename(2, worker.ident)             # from this thread
        go_on.set()
        worker.join()
    threading.current_thread().name = "MainRenamed"
    hs_alloc.malloc(2, 100_002)
"""

RENAMED = {100_010: "renamed-python", 200_010: "renamed-python", 100_020: "renamed-prctl",
           200_020: "renamed-prctl", 100_030: "renamed-pth", 200_030: "renamed-pth",
           100_040: "renamed-other", 200_040: "renamed-other", 100_050: "orig-none", 200_050: "orig-none",
           100_001: "MainRenamed", 100_002: "MainRenamed"}


def _names(rows):
    return {row["size"]: row["thread_name"] for row in rows if row["size"] in RENAMED}


def test_thread_names_follow_renames(tmp_path, extension_dir):
    result, _, _ = capture(tmp_path, "heapscope", RENAMES, "peak_threads", extension_dir=extension_dir)
    assert _names(result["peak_threads"]) == RENAMED


def test_thread_names_as_memray(tmp_path, extension_dir):
    _need_memray()
    names = {}
    for tool in ("memray", "heapscope"):
        result, _, _ = capture(tmp_path, tool, RENAMES, "peak_threads", extension_dir=extension_dir)
        names[tool] = _names(result["peak_threads"])
    # memray sees renames by threading and by prctl; it misses pthread_setname_np (its thread keeps
    # the threading name it started with), which heapscope follows.
    missed = {100_030, 200_030, 100_040, 200_040}
    # (memray's own block at the block's first line is counted with 100_001 there.)
    assert {size: name for size, name in names["memray"].items() if size not in missed} == \
        {size: name for size, name in names["heapscope"].items() if size not in missed | {100_001}}
    assert {names["memray"][size] for size in missed} == {"orig-setname", "orig-other"}


# -- 8. native stacks are kept whole, as memray keeps them -------------------------------------------------------------

DEEP = """
import hs_alloc
hs_alloc.malloc(255, 16); hs_alloc.free(255)
with Tracker(out, native_traces=True):
    hs_alloc.deep(1, 300, 123_457)
"""

NATIVE_READER = """
import json, sys
tool, capture = sys.argv[1], sys.argv[2]
if tool == "memray":
    import memray as module
else:
    import heapscope as module
record = next(r for r in module.FileReader(capture).get_high_watermark_allocation_records() if r.size == 123_457)
print(json.dumps([frame[0] for frame in record.native_stack_trace()]))
"""


def test_native_stacks_are_not_cut(tmp_path, extension_dir):
    tools = ("heapscope",) + (("memray",) if importlib.util.find_spec("memray") else ())
    script = tmp_path / "deep.py"
    write_script(script, PROLOGUE + DEEP)
    reader = tmp_path / "native_reader.py"
    write_script(reader, NATIVE_READER)
    frames = {}
    for tool in tools:
        out = tmp_path / f"deep_{tool}.bin"
        run_script(script, tool, out, extra_paths=[extension_dir])
        frames[tool] = json.loads(run_script(reader, tool, out).stdout)
    functions = frames["heapscope"]
    assert functions.count("hs_gt_deep") == 301  # depth 300 .. 0
    assert "hs_gt_malloc" in functions[:3] and "_start" in functions[-3:]
    if "memray" in frames:
        assert frames["memray"].count("hs_gt_deep") == 301
