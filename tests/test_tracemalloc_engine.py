"""heapscope.tracemalloc end to end, against ground truth and the stdlib.

Blocks of known sizes are allocated at known lines through Python's own
allocators; the tests assert that exactly those sizes and counts are
attributed to exactly those lines, in every grouping.
"""

import gc
import os
import sys
import threading
import warnings
import tracemalloc as stdlib_tracemalloc

import pytest

import allocators as A

THIS_FILE = os.path.abspath(__file__)


def here():
    """The caller's line number."""
    return sys._getframe(1).f_lineno  # materialises the caller's frame object: see only_this_file


HERE_LINE = here.__code__.co_firstlineno + 2


def only_this_file(snapshot, tm):
    """The traces made by this file's test code (not by here()'s frame objects)."""
    return snapshot.filter_traces([tm.Filter(True, THIS_FILE), tm.Filter(False, THIS_FILE, HERE_LINE)])


def sizes_by_line(snapshot):
    return {stat.traceback[0].lineno: (stat.size, stat.count) for stat in snapshot.statistics("lineno")}


def test_exact_sizes_at_exact_lines_in_every_domain(hs_tracemalloc):
    tm = hs_tracemalloc
    # 3.9 allocates a function's frame at its first call, filed under the
    # caller's line: make those first calls before tracing.
    here()
    only_this_file(tm.Snapshot([], 1), tm)
    try:
        tm.take_snapshot()
    except RuntimeError:
        pass
    tm.start(8)
    line_raw = here() + 1
    A.leak_raw(1000)
    line_mem = here() + 1
    A.leak_mem(2000)
    line_obj = here() + 1
    A.leak_obj(300)                   # small: served by pymalloc
    line_big_obj = here() + 1
    A.leak_obj(100_000)               # large: pymalloc falls through to the raw domain
    line_loop = here() + 2
    for _ in range(5):
        A.leak_raw(777)
    snapshot = only_this_file(tm.take_snapshot(), tm)
    assert sizes_by_line(snapshot) == {
        line_raw: (1000, 1),
        line_mem: (2000, 1),
        line_obj: (300, 1),
        line_big_obj: (100_000, 1),   # seen once, not again by the nested raw call
        line_loop: (5 * 777, 5),
    }
    by_file = snapshot.statistics("filename")
    assert [(s.traceback[0].filename, s.size, s.count) for s in by_file] == [
        (THIS_FILE, 1000 + 2000 + 300 + 100_000 + 5 * 777, 9)]
    assert all(trace.domain == 0 for trace in snapshot.traces)


def test_traceback_grouping_names_every_frame(hs_tracemalloc):
    tm = hs_tracemalloc

    def inner():
        line = here() + 1
        A.leak_raw(4242)
        return line

    def outer():
        line = here() + 1
        return line, inner()

    outer()  # on 3.9-3.10, calls then reuse their frame objects instead of allocating them
    tm.start(16)
    outer_line, inner_line = outer()
    call_line = here() - 1
    snapshot = only_this_file(tm.take_snapshot(), tm)
    stats = snapshot.statistics("traceback")
    assert len(stats) == 1
    stat = stats[0]
    assert (stat.size, stat.count) == (4242, 1)
    frames = [(f.filename, f.lineno) for f in stat.traceback]
    # Traceback is oldest first; the innermost three frames are ours.
    assert frames[-3:] == [(THIS_FILE, call_line), (THIS_FILE, outer_line), (THIS_FILE, inner_line)]
    cumulative = {s.traceback[0].lineno: s.size for s in snapshot.statistics("lineno", cumulative=True)
                  if s.traceback[0].filename == THIS_FILE}
    assert cumulative == {call_line: 4242, outer_line: 4242, inner_line: 4242}


def test_traceback_limit_and_total_depth_at_depth_150(hs_tracemalloc):
    tm = hs_tracemalloc

    def recurse(n):
        if n == 0:
            A.leak_raw(5151)
            return sys._getframe().f_lineno
        return recurse(n - 1)

    base_depth = len(_stack())
    tm.start(64)
    recurse(150)
    assert tm.get_traceback_limit() == 64
    traces = [t for t in tm.take_snapshot().traces if t.size == 5151]
    assert len(traces) == 1
    traceback = traces[0].traceback
    assert len(traceback) == 64
    assert traceback.total_nframe == base_depth + 151  # this frame's callers, recurse x151
    assert all(frame.filename == THIS_FILE for frame in traceback)


def _stack():
    frame, frames = sys._getframe(1), []
    while frame:
        frames.append(frame)
        frame = frame.f_back
    return frames


COMPARISON_WORKLOAD = """
import sys, json
# Import both tools whichever runs, so that CPython's free lists (which decide
# which objects reach the allocator at all) start in the same state.
import tracemalloc, heapscope.tracemalloc, heapscope._heapscope
module = sys.modules[sys.argv[1]]

def workload():
    keep = []
    for i in range(300):
        keep.append({"i": i, "s": str(i) * (i % 7), "l": list(range(i % 13))})
        keep.append(bytearray(i * 3))
        keep.append(("t", i))
    return keep

# Warm up every call made while tracing: on 3.9-3.10 a call's frame object
# is then reused, not allocated, in both runs.
workload()
try:
    module.take_snapshot()
except RuntimeError:
    pass
module.start(4)
result = workload()
snapshot = module.take_snapshot().filter_traces([module.Filter(True, __file__)])
print(json.dumps(sorted((s.traceback[0].lineno, s.size, s.count) for s in snapshot.statistics("lineno"))))
"""


def test_agrees_with_the_stdlib_on_the_same_code(tmp_path):
    # Each tool runs in a fresh interpreter: free lists left over by an
    # earlier run would change which objects reach the allocator.
    import json
    import subprocess

    script = tmp_path / "workload.py"
    script.write_text(COMPARISON_WORKLOAD)

    def measure(module_name):
        out = subprocess.run([sys.executable, str(script), module_name], check=True, capture_output=True,
                             text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}).stdout
        return json.loads(out)

    expected = measure("tracemalloc")
    got = measure("heapscope.tracemalloc")
    assert got == expected
    assert sum(size for _, size, _ in got) > 50_000


def test_frees_reallocs_and_traced_memory_are_exact(hs_tracemalloc):
    tm = hs_tracemalloc
    tm.start(1)
    tm.clear_traces()
    current0, _ = tm.get_traced_memory()
    block = A.raw_malloc(10_000)
    grown = A.raw_realloc(block, 30_000)
    after_realloc, peak = tm.get_traced_memory()
    # The calls' result ints and tuples are small objects: allow for them.
    assert 30_000 <= after_realloc - current0 < 30_000 + 512
    assert [t.size for t in tm.take_snapshot().traces if t.size in (10_000, 30_000)] == [30_000]
    before_free, _ = tm.get_traced_memory()  # after the snapshot, whose objects come and go
    A.raw_free(grown)
    after_free, peak2 = tm.get_traced_memory()
    assert abs((before_free - after_free) - 30_000) < 512
    assert peak2 >= peak >= after_realloc
    assert not [t for t in tm.take_snapshot().traces if t.size == 30_000]
    tm.reset_peak()
    current, peak = tm.get_traced_memory()  # one call: both read at one instant
    assert peak == current


def test_raw_allocations_without_the_gil_are_attributed(hs_tracemalloc):
    # The thread reads its own frames without the GIL; the code objects were
    # pinned by the GIL-holding allocations made on the way here.
    tm = hs_tracemalloc
    tm.start(4)
    line = here() + 2
    for _ in range(4):
        A.leak_raw_nogil(6161)
    traces = [t for t in tm.take_snapshot().traces if t.size == 6161]
    assert [(t.traceback[-1].filename, t.traceback[-1].lineno) for t in traces] == [(THIS_FILE, line)] * 4
    assert tm.get_traced_memory()[0] >= 4 * 6161


def test_allocations_without_any_python_frame_get_the_stdlibs_unknown_frame(hs_tracemalloc):
    # A thread starting or ending allocates with no Python frame on its stack
    # (3.9 and 3.10 do, at least). The stdlib reports ('<unknown>', 0) with
    # total_nframe 1 then, never an empty traceback, and filters rely on it.
    from heapscope import _heapscope

    tm = hs_tracemalloc
    tm.start(3)
    for _ in range(5):
        thread = threading.Thread(target=lambda: None)
        thread.start()
        thread.join()
    raw = _heapscope.get_traces()
    assert raw and all(frames and total >= 1 for _, _, frames, total in raw)
    for frames in (frames for _, _, frames, _ in raw if frames[0] == ("<unknown>", 0)):
        assert frames == (("<unknown>", 0),)
    tm.take_snapshot().filter_traces([tm.Filter(True, "*")]).statistics("filename")


def test_threads_allocating_at_once(hs_tracemalloc):
    tm = hs_tracemalloc
    tm.start(8)
    per_thread = 2000
    barrier = threading.Barrier(4)
    lines = {}

    def worker(index):
        barrier.wait()
        size = 100 + index
        lines[index] = here() + 2
        for _ in range(per_thread):
            A.leak_raw(size)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = sizes_by_line(only_this_file(tm.take_snapshot(), tm))
    line = lines[0]
    assert all(value == line for value in lines.values())
    assert stats[line] == (sum((100 + i) * per_thread for i in range(4)), 4 * per_thread)


def test_get_object_traceback_names_the_creating_line(hs_tracemalloc):
    tm = hs_tracemalloc
    class Tracked:
        pass

    tm.start(5)
    line = here() + 1
    obj = bytearray(100)
    # A GC object with a managed dict: its block starts before the object.
    # (The 3.11 stdlib misses this one and returns None.)
    gc_obj = Tracked()
    gc_line = here() - 1
    traceback = tm.get_object_traceback(obj)
    assert traceback is not None
    assert (traceback[-1].filename, traceback[-1].lineno) == (THIS_FILE, line)
    assert tm.get_object_traceback(gc_obj)[-1].lineno == gc_line
    assert tm.get_object_traceback(42) is None  # a static small int was never allocated
    tm.stop()
    assert tm.get_object_traceback(obj) is None


def test_objects_made_while_a_frame_is_set_up_are_filed_under_the_caller(hs_tracemalloc):
    # 3.11+ make a function's cells in its prologue, before its first line
    # runs: like the stdlib, heapscope leaves out such an incomplete frame
    # (3.9 and 3.10 make them before the frame is entered).
    tm = hs_tracemalloc
    tm.start(8)

    def outer(x):
        def inner():
            return x
        return inner

    line = here() + 1
    cell = outer(0).__closure__[0]
    traceback = tm.get_object_traceback(cell)
    assert (traceback[-1].filename, traceback[-1].lineno) == (THIS_FILE, line)
    assert traceback[-2].filename != THIS_FILE     # the test's caller, pytest
    # Nor is it counted: what was made at that line has this test's depth.
    depth = len(frames_from_the_caller())
    made_here = [t for t in tm.take_snapshot().traces
                 if (t.traceback[-1].filename, t.traceback[-1].lineno) == (THIS_FILE, line)]
    assert made_here and {t.traceback.total_nframe for t in made_here} == {depth}


def frames_from_the_caller():
    frames = []
    frame = sys._getframe(1)
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    return frames


@pytest.mark.skipif(sys.version_info < (3, 13), reason="only 3.13+ report an object taken from a free list "
                    "(PyRefTracer_CREATE); docs/tracemalloc.md says why 3.9-3.12 cannot")
def test_an_object_reused_from_a_free_list_gets_the_stack_that_reused_it(hs_tracemalloc):
    tm = hs_tracemalloc
    tm.start(1)
    gc.collect()                  # empties the free lists
    obj = [], 1.5 * len(sys.argv)
    first_line = here() - 1
    assert tm.get_object_traceback(obj[0])[-1].lineno == first_line
    obj = None                    # the list and the float go back to their free lists
    obj = [], 2.5 * len(sys.argv)
    line = here() - 1
    assert tm.get_object_traceback(obj[0])[-1].lineno == line
    assert tm.get_object_traceback(obj[1])[-1].lineno == line
    current, _ = tm.get_traced_memory()
    for _ in range(1000):         # reuse changes what is filed where, not the counters
        obj = [], 2.5 * len(sys.argv)
    obj = None
    assert abs(tm.get_traced_memory()[0] - current) < 4096


def test_custom_domains_from_python(hs_tracemalloc):
    import heapscope

    tm = hs_tracemalloc
    assert heapscope.track(7, 0x1000, 64) == -2  # not tracing: the stdlib's answer
    tm.start(3)
    line = here() + 1
    assert heapscope.track(7, 0x1000, 4096) == 0
    assert heapscope.track(8, 0x1000, 10) == 0   # same address, other domain
    snapshot = tm.take_snapshot()
    mine = snapshot.filter_traces([tm.DomainFilter(True, 7)])
    assert [(t.domain, t.size, t.traceback[-1].lineno) for t in mine.traces] == [(7, 4096, line)]
    assert heapscope.untrack(7, 0x1000) == 0
    assert heapscope.untrack(7, 0x1000) == 0  # unknown block: not an error
    domains = {t.domain for t in tm.take_snapshot().traces}
    assert 7 not in domains and 8 in domains
    with pytest.raises(TypeError, match="domain must be an int"):
        heapscope.track("7", 0, 1)
    with pytest.raises(ValueError, match="domain must be in range"):
        heapscope.track(-1, 0, 1)
    with pytest.raises(ValueError, match="address must be in range"):
        heapscope.track(1, 1 << 64, 1)
    with pytest.raises(TypeError):
        heapscope.untrack(1)


def test_numpy_calls_to_the_stdlib_track_api_reach_heapscope(hs_tracemalloc):
    np = pytest.importorskip("numpy")
    tm = hs_tracemalloc
    tm.start(4)
    line = here() + 1
    array = np.ones(1_000_000, dtype=np.float64)
    numpy_domain = 389047
    traces = [t for t in tm.take_snapshot().traces if t.domain == numpy_domain]
    assert [t.size for t in traces] == [8_000_000]
    # np.ones is Python code: our line is the caller of its frame.
    assert (THIS_FILE, line) in [(f.filename, f.lineno) for f in traces[0].traceback]
    del array
    assert not [t for t in tm.take_snapshot().traces if t.domain == numpy_domain]


def test_clear_traces_keeps_tracing(hs_tracemalloc):
    tm = hs_tracemalloc
    tm.start(2)
    A.leak_raw(9191)
    tm.clear_traces()
    assert tm.is_tracing()
    assert not [t for t in tm.take_snapshot().traces if t.size == 9191]
    line = here() + 1
    A.leak_raw(9292)
    assert [t.traceback[-1].lineno for t in tm.take_snapshot().traces if t.size == 9292] == [line]


def test_stop_forgets_and_start_twice_is_a_no_op(hs_tracemalloc):
    tm = hs_tracemalloc
    tm.start(3)
    tm.start(10)
    assert tm.get_traceback_limit() == 3
    tm.stop()
    assert not tm.is_tracing()
    assert tm.get_traced_memory() == (0, 0)
    with pytest.raises(RuntimeError, match="must be tracing"):
        tm.take_snapshot()
    tm.start(6)
    assert tm.get_traceback_limit() == 6


@pytest.mark.parametrize("bad, error", [(0, ValueError), (65536, ValueError), (-1, ValueError),
                                        ("1", TypeError), (1.0, TypeError), (None, TypeError)])
def test_start_rejects_what_the_stdlib_rejects(hs_tracemalloc, bad, error):
    with pytest.raises(error) as ours:
        hs_tracemalloc.start(bad)
    with pytest.raises(error) as theirs:
        stdlib_tracemalloc.start(bad)
    assert str(ours.value) == str(theirs.value)
    assert not hs_tracemalloc.is_tracing()


def test_runs_beside_the_stdlib_module(hs_tracemalloc):
    tm = hs_tracemalloc
    stdlib_tracemalloc.start(2)
    try:
        tm.start(2)
        line = here() + 1
        A.leak_raw(12_345)
        for module in (tm, stdlib_tracemalloc):
            found = [t.traceback[-1].lineno for t in module.take_snapshot().traces if t.size == 12_345]
            assert found == [line], module
        tm.stop()
        line = here() + 1
        A.leak_raw(12_346)
        assert [t.size for t in stdlib_tracemalloc.take_snapshot().traces if t.size == 12_346] == [12_346]
    finally:
        stdlib_tracemalloc.stop()


def test_own_memory_is_reported_and_smaller_than_the_stdlib(hs_tracemalloc):
    tm = hs_tracemalloc

    def workload():
        return [{"k": [i, str(i)]} for i in range(50_000)]

    memories = {}
    for name, module in (("stdlib", stdlib_tracemalloc), ("heapscope", tm)):
        module.start(16)
        keep = workload()
        memories[name] = module.get_tracemalloc_memory()
        module.stop()
        del keep
    assert 0 < memories["heapscope"] <= memories["stdlib"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_child_keeps_tracing_with_its_own_table(hs_tracemalloc):
    tm = hs_tracemalloc
    tm.start(4)
    A.leak_raw(11_111)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report what it sees, then leave without running pytest's teardown
        try:
            line = here() + 1
            A.leak_raw(22_222)
            traces = tm.take_snapshot().traces
            inherited = len([t for t in traces if t.size == 11_111])
            own = [t.traceback[-1].lineno for t in traces if t.size == 22_222]
            os.write(write_end, f"{tm.is_tracing()} {inherited} {own == [line]}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        report = pipe.read()
    os.waitpid(pid, 0)
    assert report == "True 1 True"
    assert not [t for t in tm.take_snapshot().traces if t.size == 22_222]
    assert len([t for t in tm.take_snapshot().traces if t.size == 11_111]) == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded, use of fork:DeprecationWarning")
def test_fork_while_another_thread_is_inside_the_engine(hs_tracemalloc):
    # End to end: children forked while another thread allocates without the
    # GIL keep tracing. (Whether a child can inherit the engine lock held is
    # timing-dependent here; native/tests/test_engine.cpp forces that case.)
    import time

    tm = hs_tracemalloc
    tm.start(2)
    stop = threading.Event()

    def churn():
        while not stop.is_set():
            for _ in range(200):
                A.raw_free_nogil(A.raw_malloc_nogil(64))

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        for _ in range(40):
            pid = os.fork()
            if pid == 0:
                A.leak_raw(4321)
                found = [t.size for t in tm.take_snapshot().traces if t.size == 4321]
                os._exit(0 if found == [4321] else 1)
            deadline = time.monotonic() + 20
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                if time.monotonic() > deadline:
                    os.kill(pid, 9)
                    os.waitpid(pid, 0)
                    pytest.fail("the child hung: the engine lock was inherited held")
                time.sleep(0.005)
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    finally:
        stop.set()
        thread.join()


def test_engine_also_knows_function_names(hs_tracemalloc):
    from heapscope import _heapscope

    class Holder:
        def make(self):
            A.leak_raw(7373)

    tm = hs_tracemalloc
    tm.start(4)
    Holder().make()
    traces = [t for t in _heapscope.get_traces(functions=True) if t[1] == 7373]
    assert len(traces) == 1
    innermost, caller = traces[0][2][:2]
    # Qualified names where the interpreter keeps them (3.11+).
    expected = "Holder.make" if sys.version_info >= (3, 11) else "make"
    assert innermost[0] == THIS_FILE and innermost[2].endswith(expected)
    assert caller[2] == "test_engine_also_knows_function_names"


def test_a_snapshot_warns_when_another_tool_unhooked_heapscope(hs_tracemalloc):
    tm = hs_tracemalloc
    stdlib_tracemalloc.start(1)
    tm.start(2)                  # wraps the stdlib's hooks
    stdlib_tracemalloc.stop()    # restores the allocators the stdlib found: heapscope's hooks are gone
    with pytest.warns(RuntimeWarning, match="replaced by another tool"):
        tm.take_snapshot()
    tm.stop()
    tm.start(2)                  # installs afresh on the current chain
    line = here() + 1
    A.leak_raw(8585)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        traces = tm.take_snapshot().traces
    assert [t.traceback[-1].lineno for t in traces if t.size == 8585] == [line]
