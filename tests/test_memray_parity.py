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

from capture_helpers import build_extension, marked_lines, run_script, write_script


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


def side_by_side(tmp_path, body, queries, extract, **options):
    """{tool: extract(what the tool's reader says for *queries*, marked
    lines, script)} for memray and heapscope running *body*."""
    _need_memray()
    found = {}
    for tool in ("memray", "heapscope"):
        result, lines, script = capture(tmp_path, tool, body, *queries, **options)
        found[tool] = extract(result, lines, script)
    return found


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
    # (memray holds a block of its own, a few hundred bytes, made at the block's first line.)
    peaks = side_by_side(tmp_path, TIES, ["peak"], lambda result, lines, script: {
        line: total for line, total in at_lines(result["peak"], script, {"MALLOC"}, lines).items()
        if total[0] >= 100_000}, extension_dir=extension_dir)
    lines = marked_lines((PROLOGUE + TIES).lstrip("\n"))  # as write_script numbers them
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
    names = side_by_side(tmp_path, NAMES, ["peak"], lambda result, lines, script: innermost_names(result["peak"]),
                         extension_dir=extension_dir)
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
    def stacks_and_end(result, lines, script):
        # The hybrid stack ends with the frame that entered the Tracker, in both.
        assert _stacks_by_size(result["peak"], "hybrid")[111_111][-1] == ("inner", str(script), lines["in_block"])
        return _stacks_by_size(result["peak"])

    stacks = side_by_side(tmp_path, ROOTED, ["peak", "hybrid"], stacks_and_end, options={"native_traces": True},
                          extension_dir=extension_dir)
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
    names = side_by_side(tmp_path, RENAMES, ["peak_threads"],
                         lambda result, lines, script: _names(result["peak_threads"]), extension_dir=extension_dir)
    # memray sees renames by threading and by prctl; it misses pthread_setname_np (its thread keeps
    # the threading name it started with), which heapscope follows.
    missed = {100_030, 200_030, 100_040, 200_040}
    # memray's own block at the block's first line is counted with 100_001 there on some versions
    # (then no row has that size), not on others (3.13): that row is compared apart.
    assert {size: name for size, name in names["memray"].items() if size not in missed | {100_001}} == \
        {size: name for size, name in names["heapscope"].items() if size not in missed | {100_001}}
    assert names["memray"].get(100_001, "MainRenamed") == names["heapscope"][100_001] == "MainRenamed"
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


# -- 9. memray's API that heapscope lacked: max_memory_records, temporal records, dump_all_records --------------------

MANY_SNAPSHOTS = """
import time
import hs_alloc
with Tracker(out, memory_interval_ms=2):
    hs_alloc.malloc(1, 100_000)
    time.sleep(1.0)  # ~500 intervals; a loaded machine's writer thread may take far fewer
"""


def test_max_memory_records_keeps_every_nth_snapshot(tmp_path, extension_dir):
    from heapscope import FileReader

    capture(tmp_path, "heapscope", MANY_SNAPSHOTS, "metadata", extension_dir=extension_dir)
    path = tmp_path / "script_heapscope.bin"
    every = FileReader(path).get_memory_snapshots()
    assert len(every) > 25  # more than max_memory_records below: a stride above 1
    few = FileReader(path, max_memory_records=25).get_memory_snapshots()
    stride = -(-len(every) // 25)  # memray's: ceil(records / max_memory_records)
    assert few == every[::stride] and len(few) <= 25
    assert FileReader(path, max_memory_records=len(every)).get_memory_snapshots() == every
    for bad, error in ((0, ValueError), (-3, ValueError), (2.5, TypeError), (True, TypeError)):
        with pytest.raises(error):
            FileReader(path, max_memory_records=bad)


# Memory records between the phases are the snapshots; blocks outlive some of
# them, mappings are cut in pieces, one location allocates in several phases.
TEMPORAL = """
import os, time
import hs_alloc
P = os.sysconf("SC_PAGESIZE")
p2, p8 = 2 * P, 8 * P
def phase():
    time.sleep(0.03)
with Tracker(out, memory_interval_ms=5):
    hs_alloc.malloc(1, 100_000)          # @a
    hs_alloc.mmap(2, p8)                 # @m
    phase()
    hs_alloc.malloc(3, 300_000)          # @b
    hs_alloc.free(1)
    hs_alloc.munmap(2, p2, p2)           # a hole: two pieces
    phase()
    hs_alloc.malloc(4, 50_000)           # @c
    hs_alloc.free(4)
    hs_alloc.malloc(5, 70_000)           # @d
    phase()
    hs_alloc.free(3)
    hs_alloc.munmap(2, 0, p2)
    phase()
    hs_alloc.malloc(6, 30_000)           # @e
"""

# Feeds the events and memory records `heapscope parse` printed to memray's
# own aggregators (its test harnesses), and prints what they make of them.
MEMRAY_TEMPORAL = """
import json, re, sys
from memray._memray import (AllocationLifetimeAggregatorTestHarness, AllocatorType,
                            HighWaterMarkAggregatorTestHarness)
harnesses = [HighWaterMarkAggregatorTestHarness(), AllocationLifetimeAggregatorTestHarness()]
for line in open(sys.argv[1]):
    kind = line.split(" ", 1)[0]
    if kind == "MEMORY":
        for harness in harnesses:
            harness.capture_snapshot()
    elif kind in ("ALLOCATION", "DEALLOCATION"):
        fields = dict(re.findall(r"(\\w+)=(\\S+)", line))
        for harness in harnesses:
            harness.add_allocation(tid=1, address=int(fields["address"], 16), size=int(fields["size"]),
                                   allocator=AllocatorType[fields["allocator"]], native_frame_id=0,
                                   frame_index=int(fields.get("python_node", 0)), native_segment_generation=0)
def dump(records):
    return {f"{r.stack_id} {AllocatorType(r.allocator).name}":
            [[i.allocated_before_snapshot, i.deallocated_before_snapshot, i.n_allocations, i.n_bytes]
             for i in r.intervals] for r in records}
print(json.dumps({"high_water_marks": harnesses[0].high_water_mark_bytes_by_snapshot(),
                  "hwm": dump(harnesses[0].get_temporal_allocations()),
                  "lifetimes": dump(harnesses[1].get_allocations())}))
"""


def _temporal_dump(records):
    return {f"{r.stack_id} {r.allocator.name}":
            [[i.allocated_before_snapshot, i.deallocated_before_snapshot, i.n_allocations, i.n_bytes]
             for i in r.intervals] for r in records}


def test_temporal_records_as_memrays_aggregators(tmp_path, extension_dir):
    """The same events and snapshots through memray's aggregators and heapscope's."""
    _need_memray()
    import io

    from heapscope import FileReader
    from heapscope.reader import dump_all_records

    _, lines, script = capture(tmp_path, "heapscope", TEMPORAL, "metadata", extension_dir=extension_dir)
    path = tmp_path / "script_heapscope.bin"
    text = io.StringIO()
    dump_all_records(path, out=text)
    events = tmp_path / "events.txt"
    events.write_text(text.getvalue())
    helper = tmp_path / "memray_temporal.py"
    write_script(helper, MEMRAY_TEMPORAL)
    memray = json.loads(run_script(helper, events).stdout)

    reader = FileReader(path)
    lifetimes = reader.get_temporal_allocation_records()
    records, high_water_marks = reader.get_temporal_high_water_mark_allocation_records()
    assert _temporal_dump(lifetimes) == memray["lifetimes"]
    assert _temporal_dump(records) == memray["hwm"]
    # memray's last entry is the last peak the heap fell from: a rise at the very end (e) is missed there.
    assert high_water_marks[:-1] == memray["high_water_marks"][:-1]
    assert high_water_marks[-1] >= memray["high_water_marks"][-1]
    assert len(high_water_marks) == len(reader.get_memory_snapshots()) + 1


def test_temporal_records_against_ground_truth(tmp_path, extension_dir):
    from heapscope import FileReader
    from heapscope.reader import Interval, TemporalAllocationRecord

    _, lines, script = capture(tmp_path, "heapscope", TEMPORAL, "metadata", extension_dir=extension_dir)
    reader = FileReader(tmp_path / "script_heapscope.bin")

    def at_line(records, name, allocator):
        for record in records:
            stack = record.stack_trace()
            if record.allocator.name == allocator and stack and stack[0][2] == lines[name]:
                return record
        return None

    lifetimes = reader.get_temporal_allocation_records()
    assert all(isinstance(r, TemporalAllocationRecord) and r.tid == 0 for r in lifetimes)
    a, b, c, d, e = (at_line(lifetimes, name, "MALLOC") for name in "abcde")
    assert c is None  # made and freed between the same two snapshots
    (freed_a,) = a.intervals
    (freed_b,) = b.intervals
    assert isinstance(freed_a, Interval) and freed_a.n_allocations == 1 and freed_a.n_bytes == 100_000
    assert freed_a.allocated_before_snapshot < freed_a.deallocated_before_snapshot
    assert freed_a.deallocated_before_snapshot <= freed_b.allocated_before_snapshot + 1
    assert freed_b.deallocated_before_snapshot is not None and d.intervals[0].deallocated_before_snapshot is None
    assert [(i.n_allocations, i.n_bytes) for i in e.intervals] == [(1, 30_000)]
    mapping = at_line(lifetimes, "m", "MMAP")
    P = next(i.n_bytes for i in mapping.intervals if i.deallocated_before_snapshot is None) // 4
    # The hole and the first piece were freed (no block counted until the last piece goes); 4 pages leak, once.
    assert sorted((i.n_allocations, i.n_bytes) for i in mapping.intervals) == [(0, 2 * P), (0, 2 * P), (1, 4 * P)]

    records, marks = reader.get_temporal_high_water_mark_allocation_records(merge_threads=False)
    assert all(r.tid != 0 for r in records)
    mapping = at_line(records, "m", "MMAP")
    shares = [(i.n_allocations, i.n_bytes) for i in mapping.intervals]
    assert shares[0] == (1, 8 * P) and (2, 6 * P) in shares and shares[-1] == (1, 4 * P)  # the hole: two pieces
    assert mapping.intervals[-1].deallocated_before_snapshot is None
    assert max(marks) >= 300_000 + 70_000 + 6 * P
    with pytest.raises(ValueError, match="closed"):
        closed = FileReader(tmp_path / "script_heapscope.bin")
        closed.close()
        closed.get_temporal_allocation_records()


def test_temporal_records_need_every_event(tmp_path, extension_dir):
    from heapscope import FileReader

    capture(tmp_path, "heapscope", TIES, "metadata", options={"file_format": "AGGREGATED_ALLOCATIONS"},
            extension_dir=extension_dir)
    reader = FileReader(tmp_path / "script_heapscope.bin")
    with pytest.raises(NotImplementedError, match="pre-aggregated"):
        reader.get_temporal_allocation_records()
    with pytest.raises(NotImplementedError, match="pre-aggregated"):
        reader.get_temporal_high_water_mark_allocation_records()


def test_dump_all_records_and_heapscope_parse(tmp_path, extension_dir):
    import io
    import re
    import subprocess
    import sys

    import heapscope
    from heapscope import FileReader
    from capture_helpers import heapscope_cli

    _, lines, script = capture(tmp_path, "heapscope", TIES, "metadata", extension_dir=extension_dir)
    path = tmp_path / "script_heapscope.bin"
    text = io.StringIO()
    heapscope.dump_all_records(path, out=text)
    dumped = text.getvalue().splitlines()
    assert dumped[0].startswith("HEADER version=") and "file_format=ALL_ALLOCATIONS" in dumped[0]
    kinds = {line.split(" ", 1)[0] for line in dumped}
    assert {"METADATA", "THREAD", "CODE", "PYTHON_NODE", "ALLOCATION", "DEALLOCATION", "MEMORY"} <= kinds
    sizes = [int(re.search(r" size=(\d+)", line).group(1)) for line in dumped
             if line.startswith("ALLOCATION") and "allocator=MALLOC" in line]
    assert [size for size in sizes if size >= 100] == [1_000_000, 400_000, 600_000, 100]
    # Each ALLOCATION line is one of metadata.total_allocations (item 10: frees are not counted).
    assert sum(1 for line in dumped if line.startswith("ALLOCATION")) == FileReader(path).metadata.total_allocations
    cli = heapscope_cli("parse", path)
    assert cli.returncode == 0 and cli.stdout.splitlines() == dumped
    with pytest.raises(OSError):
        heapscope.dump_all_records(tmp_path / "missing.bin")
    (tmp_path / "not_a_capture").write_text("hello")
    assert heapscope_cli("parse", tmp_path / "not_a_capture").returncode == 1


# -- 10. metadata.total_allocations: allocations (blocks made), frees not counted, the same everywhere -----------------

COUNTED = """
import json, os
import hs_alloc
P = os.sysconf("SC_PAGESIZE")
p4 = 4 * P
with Tracker(out, **options) as tracker:
    for i in range(50):
        hs_alloc.malloc(1, 1000 + i)
        hs_alloc.realloc(1, 3000 + i)
        hs_alloc.free(1)
    hs_alloc.mmap(2, p4)
    hs_alloc.munmap(2, P, P)
    kept = [bytes(1000 + i) for i in range(100)]
print(json.dumps(tracker.totals))
"""


@pytest.mark.parametrize("options", [{"trace_python_allocators": True}, {"file_format": "AGGREGATED_ALLOCATIONS"}])
def test_total_allocations_means_one_thing(tmp_path, extension_dir, options):
    from heapscope import FileReader
    from heapscope.reader import _DEALLOCATORS

    script = tmp_path / "counted.py"
    write_script(script, PROLOGUE + COUNTED)
    path = tmp_path / "counted.bin"
    totals = json.loads(run_script(script, "heapscope", path, json.dumps(options),
                                   extra_paths=[extension_dir]).stdout)
    reader = FileReader(path)
    total = reader.metadata.total_allocations
    assert total == totals["allocations"] >= 150  # the Tracker's count, as written
    if reader.is_aggregated:
        return
    made = sum(r.n_allocations for r in reader.get_allocation_records() if r.allocator not in _DEALLOCATORS)
    freed = sum(1 for r in reader.get_allocation_records() if r.allocator in _DEALLOCATORS)
    assert total == made == reader.stats().total_allocations
    assert freed == totals["deallocations"] > 100  # memray's total_allocations would count these too


# -- 9. SocketReader: a live capture read from Python ------------------------------------------------------------------

SERVED = """
import sys, time
import hs_alloc
from heapscope import SocketDestination, Tracker
with Tracker(destination=SocketDestination(server_port=int(sys.argv[1]))):
    hs_alloc.malloc(1, 1_234_567)              # @held
    hs_alloc.malloc(2, 7_654_321)              # @freed
    hs_alloc.free(2)
    sys.stdin.readline()                       # until the test says so
"""


def test_socket_reader_follows_a_live_capture(tmp_path, extension_dir):
    import socket
    import subprocess
    import sys
    import time

    from heapscope import SocketReader
    from capture_helpers import python_env

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = tmp_path / "served.py"
    lines = write_script(script, SERVED)
    program = subprocess.Popen([sys.executable, str(script), str(port)], stdin=subprocess.PIPE, text=True,
                               env=python_env(extension_dir))
    try:
        with SocketReader(port=port) as reader:
            assert reader.pid == program.pid and str(script) in reader.command_line
            assert reader.has_native_traces is False
            deadline = time.monotonic() + 60
            while True:
                held = {r.stack_trace()[0][2]: r.size for r in reader.get_current_snapshot(merge_threads=True)
                        if r.allocator.name == "MALLOC" and r.stack_trace()}
                if held.get(lines["held"]) == 1_234_567:
                    break
                assert time.monotonic() < deadline, held
                time.sleep(0.05)
            assert lines["freed"] not in held
            assert reader.is_active
            with pytest.raises(ValueError, match="more than once"):
                reader.__enter__()
            unmerged = [r for r in reader.get_current_snapshot(merge_threads=False) if r.size == 1_234_567]
            assert len(unmerged) == 1 and unmerged[0].tid != 0 and unmerged[0].thread_name == "MainThread"
            program.stdin.write("\n")
            program.stdin.flush()
            assert program.wait(timeout=60) == 0
            deadline = time.monotonic() + 30
            while reader.is_active:
                assert time.monotonic() < deadline
                time.sleep(0.05)
    finally:
        program.kill()
        program.wait()


# -- greenlets: each allocation has the stack of the greenlet that made it -------------------------------------------

GREENLETS = """
import greenlet
import hs_alloc

def worker(slot, size):
    hs_alloc.malloc(slot, size)                  # @first
    main.switch()
    hs_alloc.malloc(slot + 1, size + 1)          # @second

def body():
    one, two = greenlet.greenlet(worker), greenlet.greenlet(worker)
    one.switch(10, 111_111)
    two.switch(20, 222_222)
    hs_alloc.malloc(30, 444_444)                 # @between
    one.switch()
    two.switch()

main = greenlet.getcurrent()
with Tracker(out, **options):
    body()                                       # @body
"""


def _greenlet_stacks(result, lines, script):
    # hs_alloc's blocks (MALLOC): not a pymalloc arena that the greenlets' creation may map (256 KiB MMAP on 3.9).
    return sorted((row["size"], tuple(tuple(frame) for frame in row["stack"])) for row in result["leaks"]
                  if row["size"] > 100_000 and row["allocator"] == "MALLOC")


def test_greenlets_have_their_own_stacks(tmp_path, extension_dir):
    pytest.importorskip("greenlet")
    result, lines, script = capture(tmp_path, "heapscope", GREENLETS, "leaks", extension_dir=extension_dir)
    # heapscope reads the running greenlet's frames at each allocation: no switch to follow.
    s = str(script)
    assert _greenlet_stacks(result, lines, script) == [
        (111_111 + 222_222, (("worker", s, lines["first"]),)),
        (111_112 + 222_223, (("worker", s, lines["second"]),)),
        (444_444, (("body", s, lines["between"]), ("<module>", s, lines["body"])))]


def test_greenlets_as_memray(tmp_path, extension_dir):
    pytest.importorskip("greenlet")
    stacks = side_by_side(tmp_path, GREENLETS, ["leaks"], _greenlet_stacks, extension_dir=extension_dir)
    assert stacks["heapscope"] == stacks["memray"] and len(stacks["memray"]) == 3
