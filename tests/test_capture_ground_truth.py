"""Captures against ground truth: blocks of known sizes, made by a C extension
built here (every hooked allocation function) and by NumPy, at known lines of
a script run under heapscope.Tracker in a subprocess. The peak, leak and
temporary reports must give exactly those sizes at exactly those lines."""

import importlib.util
import json

import pytest

from heapscope import AllocatorType, FileFormat, FileReader
from capture_helpers import build_extension, by_line, run_script, write_script

NATIVE = {"MALLOC", "CALLOC", "REALLOC", "POSIX_MEMALIGN", "ALIGNED_ALLOC", "MEMALIGN", "VALLOC", "MMAP"}

# Slots and sizes: every size is distinct, so that a block found at the wrong
# line cannot pass for the right one.
GROUND_TRUTH = """
import sys
import time
import hs_alloc
from heapscope import Tracker, FileFormat

hs_alloc.malloc(255, 16); hs_alloc.free(255)   # warm-up: the first calls resolve their symbols
fmt = FileFormat[sys.argv[2]]
with Tracker(sys.argv[1], file_format=fmt, native_traces=sys.argv[3] == "native"):
    time.sleep(0.05)  # so that snapshot_at(0.0) (the first memory record) comes before any block
    hs_alloc.malloc(1, 1_000_003)               # @malloc_leaked
    hs_alloc.calloc(2, 1_001, 997)              # @calloc_freed
    hs_alloc.posix_memalign(3, 64, 2_000_011)   # @posix_memalign
    hs_alloc.aligned_alloc(4, 4096, 409_600)    # @aligned_alloc
    hs_alloc.memalign(5, 256, 300_007)          # @memalign
    hs_alloc.valloc(6, 500_009)                 # @valloc
    hs_alloc.mmap(7, 3_145_728)                 # @mmap_unmapped
    hs_alloc.malloc(9, 100_003)                 # @realloc_source
    hs_alloc.realloc(9, 200_003)                # @realloc_target
    hs_alloc.free(2)                            # the peak was just before this line
    hs_alloc.free(7)
    hs_alloc.malloc(10, 123_457)                # @temporary
    hs_alloc.free(10)
    hs_alloc.malloc(11, 54_321)                 # @one_between
    hs_alloc.malloc(12, 11_111)                 # @kept_1
    hs_alloc.free(11)
    hs_alloc.malloc(13, 65_432)                 # @two_between
    hs_alloc.malloc(14, 22_222)                 # @kept_2
    hs_alloc.malloc(15, 33_333)                 # @kept_3
    hs_alloc.free(13)
    hs_alloc.free(3)
    time.sleep(0.05)  # and a memory record after the last block, before end_time
"""

AT_PEAK = {"malloc_leaked": (1_000_003, "MALLOC"), "calloc_freed": (1_001 * 997, "CALLOC"),
           "posix_memalign": (2_000_011, "POSIX_MEMALIGN"), "aligned_alloc": (409_600, "ALIGNED_ALLOC"),
           "memalign": (300_007, "MEMALIGN"), "valloc": (500_009, "VALLOC"), "mmap_unmapped": (3_145_728, "MMAP"),
           "realloc_target": (200_003, "REALLOC")}
LEAKED = {"malloc_leaked", "aligned_alloc", "memalign", "valloc", "realloc_target"}


@pytest.fixture(scope="module")
def extension_dir(tmp_path_factory):
    return build_extension(str(tmp_path_factory.mktemp("ext")))


@pytest.fixture(scope="module", params=["ALL_ALLOCATIONS", "AGGREGATED_ALLOCATIONS"])
def ground_truth(request, extension_dir, tmp_path_factory):
    directory = tmp_path_factory.mktemp("gt")
    script = directory / "ground_truth.py"
    lines = write_script(script, GROUND_TRUTH)
    capture = directory / "gt.hscap"
    run_script(script, capture, request.param, "python", extra_paths=[extension_dir])
    return FileReader(capture), script, lines, request.param


def _exact(totals, lines, expected):
    return {name: totals.get(lines[name], (0, 0))[0] for name in expected}


def test_peak_holds_exactly_the_blocks_live_at_the_high_water_mark(ground_truth):
    reader, script, lines, fmt = ground_truth
    assert reader.metadata.file_format is FileFormat[fmt]
    records = reader.get_high_watermark_allocation_records()
    for name, (size, allocator) in AT_PEAK.items():
        at_line = by_line(records, script, {allocator})
        assert at_line.get(lines[name]) == (size, 1), (name, at_line)
    native = by_line(records, script, NATIVE)
    # realloc moved the block: its first line holds nothing at the peak; the
    # temporary blocks came after the peak.
    for name in ("realloc_source", "temporary", "one_between", "two_between", "kept_1", "kept_2", "kept_3"):
        assert lines[name] not in native, name
    assert reader.metadata.peak_memory >= sum(size for size, _ in AT_PEAK.values())


def test_leaks_are_the_blocks_never_freed(ground_truth):
    reader, script, lines, _ = ground_truth
    native = by_line(reader.get_leaked_allocation_records(), script, NATIVE)
    expected = {lines[name]: (AT_PEAK[name][0], 1) for name in LEAKED}
    assert {line: total for line, total in native.items() if line in expected} == expected
    for name in ("calloc_freed", "mmap_unmapped", "posix_memalign", "temporary", "realloc_source", "one_between",
                 "two_between"):
        assert lines[name] not in native, name
    for name, size in (("kept_1", 11_111), ("kept_2", 22_222), ("kept_3", 33_333)):
        assert native.get(lines[name]) == (size, 1), name


def test_temporary_allocations_need_every_event(ground_truth):
    reader, script, lines, fmt = ground_truth
    if fmt == "AGGREGATED_ALLOCATIONS":
        with pytest.raises(NotImplementedError, match="pre-aggregated"):
            reader.get_temporary_allocation_records()
        with pytest.raises(NotImplementedError):
            next(iter(reader.get_allocation_records()))
        with pytest.raises(NotImplementedError):
            reader.stats()
        return
    # memray's definition: at most `threshold` other allocations between a
    # block's allocation and its free (0: freed at once).
    one = by_line(reader.get_temporary_allocation_records(), script, {"MALLOC"})
    assert one.get(lines["temporary"]) == (123_457, 1)
    assert one.get(lines["one_between"]) == (54_321, 1)
    assert lines["two_between"] not in one
    two = by_line(reader.get_temporary_allocation_records(threshold=2), script, {"MALLOC"})
    assert two.get(lines["temporary"]) == (123_457, 1)
    assert two.get(lines["one_between"]) == (54_321, 1)
    assert two.get(lines["two_between"]) == (65_432, 1)
    for name in ("kept_1", "kept_2", "kept_3", "malloc_leaked", "posix_memalign"):
        assert lines[name] not in one and lines[name] not in two, name
    with pytest.raises(ValueError):
        reader.get_temporary_allocation_records(threshold=-1)
    zero = by_line(reader.get_temporary_allocation_records(threshold=0), script, {"MALLOC"})
    assert zero.get(lines["temporary"]) == (123_457, 1) and lines["one_between"] not in zero


def test_every_event_in_order_with_its_allocator(ground_truth):
    reader, script, lines, fmt = ground_truth
    if fmt == "AGGREGATED_ALLOCATIONS":
        return
    events = []
    for record in reader.get_allocation_records():
        if record.allocator.name in ("FREE", "MUNMAP"):
            with pytest.raises(NotImplementedError):
                record.stack_trace()
            events.append((record.allocator.name, record.size, None))
        elif record.allocator.name in NATIVE:
            assert record.n_allocations == 1
            stack = record.stack_trace()
            events.append((record.allocator.name, record.size, stack[0][2] if stack else None))
    expected = {(size, kind) for size, kind in AT_PEAK.values()}
    mine = [line for kind, size, line in events if (size, kind) in expected]
    assert mine == sorted(lines[name] for name in AT_PEAK)  # in program order, each once
    frees = [event for event in events if event[0] == "MUNMAP"]
    assert ("MUNMAP", 3_145_728, None) in frees


def test_records_have_memrays_shape(ground_truth):
    reader, script, lines, _ = ground_truth
    record = next(r for r in reader.get_high_watermark_allocation_records()
                  if r.allocator is AllocatorType.MALLOC and r.size == 1_000_003)
    assert isinstance(record.allocator, AllocatorType)
    assert record.tid == 0 and record.thread_name == "merged thread"
    stack = record.stack_trace()
    assert stack[0] == ("<module>", str(script), lines["malloc_leaked"])
    assert len(stack) == 1  # nothing of heapscope's or of the interpreter's start-up
    assert record.stack_trace(max_stacks=0) == []
    assert record.native_stack_trace() == []  # not recorded
    assert record.hybrid_stack_trace() == stack
    unmerged = [r for r in reader.get_high_watermark_allocation_records(merge_threads=False)
                if r.size == 1_000_003]
    assert len(unmerged) == 1 and unmerged[0].tid == reader.metadata.main_thread_id != 0


def test_snapshot_at_gives_a_tracemalloc_snapshot(ground_truth):
    reader, script, lines, fmt = ground_truth
    if fmt == "AGGREGATED_ALLOCATIONS":
        with pytest.raises(NotImplementedError):
            reader.snapshot_at(0.0)
        return
    end = reader.snapshot_at(reader.metadata.end_time)
    start = reader.snapshot_at(0.0)
    by_lineno = {stat.traceback[0].lineno: stat.size for stat in end.statistics("lineno")
                 if stat.traceback[0].filename == str(script)}
    for name in LEAKED:
        assert by_lineno.get(lines[name], 0) >= AT_PEAK[name][0], name
    assert lines["calloc_freed"] not in by_lineno
    diff = {d.traceback[0].lineno: d.size_diff for d in end.compare_to(start, "lineno")
            if d.traceback[0].filename == str(script)}
    assert diff[lines["malloc_leaked"]] >= 1_000_003
    with pytest.raises(ValueError):
        reader.snapshot_at(-1.0)


NUMPY_SCRIPT = """
import sys
import numpy as np
from heapscope import Tracker

with Tracker(sys.argv[1]):
    zeros = np.zeros(1_000_000, dtype=np.uint8)      # @zeros
    ones = np.ones((500, 1000), dtype=np.float64)    # @ones
    tmp = np.empty(777_777, dtype=np.uint8)          # @freed
    del tmp
print(zeros.nbytes, ones.nbytes)
"""


def test_numpy_arrays_are_attributed_to_their_lines(tmp_path):
    pytest.importorskip("numpy")
    script = tmp_path / "arrays.py"
    lines = write_script(script, NUMPY_SCRIPT)
    capture = tmp_path / "np.hscap"
    zeros_bytes, ones_bytes = map(int, run_script(script, capture).stdout.split())
    reader = FileReader(capture)
    # The data buffer, plus the few bytes NumPy mallocs beside it for an
    # array's shape and strides (memray sees the same, see below).
    def holds(totals, line, nbytes):
        return nbytes <= totals[line][0] < nbytes + 256

    peak = by_line(reader.get_high_watermark_allocation_records(), script, NATIVE)
    assert holds(peak, lines["zeros"], zeros_bytes) and holds(peak, lines["ones"], ones_bytes)
    leaks = by_line(reader.get_leaked_allocation_records(), script, NATIVE)
    assert holds(leaks, lines["zeros"], zeros_bytes) and holds(leaks, lines["ones"], ones_bytes)
    assert leaks.get(lines["freed"], (0, 0))[0] < 256  # its buffer was freed (NumPy may keep a few bytes)
    assert holds(peak, lines["freed"], 777_777)      # still held at the peak


PYTHON_ALLOCATORS_SCRIPT = """
import sys
from heapscope import Tracker

with Tracker(sys.argv[1], trace_python_allocators=sys.argv[2] == "yes"):
    data = bytes(100_000)            # @bytes
    buffer = bytearray(200_000)      # @bytearray
    small = bytes(300)               # @small
    end = None                       # 3.9 runs the with-exit at the block's last line
print(sys.getsizeof(data), sys.getsizeof(buffer), sys.getsizeof(small))
"""


def test_python_allocators_traced_block_by_block(tmp_path):
    script = tmp_path / "pyalloc.py"
    lines = write_script(script, PYTHON_ALLOCATORS_SCRIPT)
    capture = tmp_path / "py.hscap"
    sizes = list(map(int, run_script(script, capture, "yes").stdout.split()))
    reader = FileReader(capture)
    assert reader.metadata.trace_python_allocators
    pymalloc = by_line(reader.get_leaked_allocation_records(), script,
                       {"PYMALLOC_MALLOC", "PYMALLOC_CALLOC", "PYMALLOC_REALLOC"})
    assert pymalloc[lines["bytes"]][0] == sizes[0]
    assert pymalloc[lines["bytearray"]][0] == sizes[1]
    assert pymalloc[lines["small"]][0] == sizes[2]   # a pymalloc block: seen only with this option
    # Without the option, only what reaches the system allocator is seen.
    plain = tmp_path / "plain.hscap"
    run_script(script, plain, "no")
    seen = by_line(FileReader(plain).get_leaked_allocation_records(), script)
    assert lines["small"] not in seen
    assert not any(r.allocator.name.startswith("PYMALLOC")
                   for r in FileReader(plain).get_leaked_allocation_records())


def test_native_traces_name_the_c_functions(tmp_path, extension_dir):
    script = tmp_path / "native.py"
    lines = write_script(script, GROUND_TRUTH)
    capture = tmp_path / "native.hscap"
    run_script(script, capture, "ALL_ALLOCATIONS", "native", extra_paths=[extension_dir])
    reader = FileReader(capture)
    assert reader.metadata.has_native_traces
    records = reader.get_high_watermark_allocation_records()
    expected = {"malloc_leaked": "hs_gt_malloc", "calloc_freed": "hs_gt_calloc",
                "posix_memalign": "hs_gt_posix_memalign", "mmap_unmapped": "hs_gt_mmap",
                "realloc_target": "hs_gt_realloc"}
    for name, function in expected.items():
        size, allocator = AT_PEAK[name]
        record = next(r for r in records if r.size == size and r.allocator.name == allocator)
        native = [frame[0] for frame in record.native_stack_trace()]
        assert function in native[:4], (name, native[:8])
        hybrid = record.hybrid_stack_trace()
        names = [frame[0] for frame in hybrid]
        assert function in names, hybrid[:8]
        python_at = hybrid.index(("<module>", str(script), lines[name]))
        assert names.index(function) < python_at  # the C function is inside the Python line's call
        assert record.native_stack_trace(max_stacks=2) == record.native_stack_trace()[:2]


SIDE_BY_SIDE = """
import sys
import hs_alloc

def workload():
    import numpy as np
    hs_alloc.malloc(1, 1_000_003)                  # @a
    hs_alloc.calloc(2, 1000, 2_001)                # @b
    # No comprehension: memray 1.20 on 3.9 reports a <listcomp> frame's line as 0.
    arrays = [np.ones(250_000), np.ones(250_000), np.ones(250_000), np.ones(250_000)]  # @c
    hs_alloc.valloc(3, 700_001)                    # @d
    hs_alloc.free(2)
    del arrays[0]
    hs_alloc.malloc(4, 3_000_017)                  # @e
    return arrays

tool, out = sys.argv[1], sys.argv[2]
import numpy                                       # imported before tracking, by both tools
if tool == "memray":
    import memray
    tracker = memray.Tracker(out)
else:
    import heapscope
    tracker = heapscope.Tracker(out)
with tracker:
    kept = workload()
"""


PEAK_PER_LINE = """
import json, sys
tool, capture, filename = sys.argv[1:4]
if tool == "memray":
    import memray
    records = memray.FileReader(capture).get_high_watermark_allocation_records()
    name = lambda r: memray.AllocatorType(r.allocator).name
else:
    import heapscope
    records = heapscope.FileReader(capture).get_high_watermark_allocation_records()
    name = lambda r: r.allocator.name
per_line = {}
for record in records:
    line = next((frame[2] for frame in record.stack_trace() if frame[1] == filename), None)
    if line is not None:
        key = f"{line} {name(record)}"
        per_line[key] = per_line.get(key, 0) + record.size
print(json.dumps(per_line))
"""


def test_same_peak_per_line_as_memray(tmp_path, extension_dir):
    # memray is only ever imported in subprocesses: its extension and
    # heapscope's both bring libunwind, and must not share a process here.
    if importlib.util.find_spec("memray") is None:
        pytest.skip("memray is not installed")
    pytest.importorskip("numpy")
    script = tmp_path / "side.py"
    lines = write_script(script, SIDE_BY_SIDE)
    reader_script = tmp_path / "peak_per_line.py"
    write_script(reader_script, PEAK_PER_LINE)
    peaks = {}
    for tool in ("memray", "heapscope"):
        out = tmp_path / f"{tool}.bin"
        run_script(script, tool, out, extra_paths=[extension_dir])
        per_line = json.loads(run_script(reader_script, tool, out, script).stdout)
        # pymalloc arenas (MMAP) depend on each tool's own Python objects.
        peaks[tool] = {int(key.split()[0]): size for key, size in per_line.items()
                       if key.split()[1] in NATIVE - {"MMAP"} and int(key.split()[0]) in lines.values()}
    assert peaks["heapscope"] == peaks["memray"]
    assert peaks["heapscope"][lines["a"]] == 1_000_003
    # The peak came before b was freed and before e was made.
    assert peaks["heapscope"][lines["b"]] == 1000 * 2_001
    assert 4 * 250_000 * 8 <= peaks["heapscope"][lines["c"]] < 4 * 250_000 * 8 + 1024
    assert lines["e"] not in peaks["heapscope"]
