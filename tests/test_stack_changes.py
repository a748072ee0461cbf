"""Stacks that change between two allocations, for the per-thread memory of
the last stack walk (native/src/stack/frame_walk.h) and the engine's cache
of the last stack: a frame at the address of one that returned is a new
call, and must never be taken for the old one.

Every allocation is a block of a distinct size made at a known line; the
tests assert the exact stack (file, line) of each, in the tracemalloc door
and in a capture.
"""

import os
import sys
import threading

import pytest

import allocators as A
from capture_helpers import marked_lines, run_script, write_script
from heapscope import FileReader

THIS_FILE = os.path.abspath(__file__)
with open(THIS_FILE) as _source:
    LINES = marked_lines(_source.read().split("\nCAPTURE_SCRIPT = ")[0])  # the script has markers of its own


def descend(depth, then, *args):
    if depth:
        return descend(depth - 1, then, *args)  # @descend
    return then(*args)  # @descend_bottom


def descend_other(depth, then, *args):
    if depth:
        return descend_other(depth - 1, then, *args)  # @descend_other
    return then(*args)  # @descend_other_bottom


def leak_in_a(size):
    A.leak_raw(size)  # @leak_a


def leak_in_b(size):
    A.leak_raw(size)  # @leak_b


def leak_twice(first, second):
    A.leak_raw(first)  # @leak_first
    A.leak_raw(second)  # @leak_second


def descend_lines(depth, bottom="descend_bottom", step="descend"):
    """Lines of descend(depth, ...)'s frames, innermost first."""
    return [LINES[bottom]] + [LINES[step]] * depth


def stack_of(snapshot, size):
    """The (filename, line) frames of the one trace of `size`, innermost first."""
    traces = [trace for trace in snapshot.traces if trace.size == size]
    assert len(traces) == 1, f"{len(traces)} traces of {size} bytes"
    return [(frame.filename, frame.lineno) for frame in reversed(traces[0].traceback)], traces[0].traceback


def ours(frames, count):
    """The innermost `count` frames, which must all be this file's lines."""
    assert all(filename == THIS_FILE for filename, _ in frames[:count]), frames[:count]
    return [line for _, line in frames[:count]]


def caller_line():
    return sys._getframe(1).f_lineno


@pytest.fixture
def tm(hs_tracemalloc):
    descend(3, leak_in_a, 1)  # 3.9: first calls allocate their frames; make them before tracing
    descend_other(3, leak_in_b, 1)
    hs_tracemalloc.start(512)
    yield hs_tracemalloc


def test_returning_and_calling_again_at_the_same_depth_through_another_function(tm):
    # The second stack reuses the first one's frame addresses from the bottom
    # up: only the middle frame differs, and the frames above it have the
    # same code at the same positions.
    descend(20, descend, 20, leak_in_a, 7001)
    line_a = caller_line() - 1
    descend(20, descend_other, 20, leak_in_a, 7002)
    line_b = caller_line() - 1
    descend(20, descend, 20, leak_in_b, 7003)
    line_c = caller_line() - 1
    snapshot = tm.take_snapshot()
    frames, traceback = stack_of(snapshot, 7001)
    assert ours(frames, 44) == [LINES["leak_a"]] + descend_lines(20) + descend_lines(20) + [line_a]
    frames, traceback_b = stack_of(snapshot, 7002)
    assert ours(frames, 44) == ([LINES["leak_a"]] + descend_lines(20, "descend_other_bottom", "descend_other")
                                + descend_lines(20) + [line_b])
    frames, traceback_c = stack_of(snapshot, 7003)
    assert ours(frames, 44) == [LINES["leak_b"]] + descend_lines(20) + descend_lines(20) + [line_c]
    assert traceback.total_nframe == traceback_b.total_nframe == traceback_c.total_nframe


def test_one_function_at_two_lines_then_deeper_then_shallower(tm):
    descend(30, leak_twice, 7101, 7102)
    line = caller_line() - 1
    descend(31, leak_twice, 7103, 7104)
    deeper = caller_line() - 1
    descend(29, leak_twice, 7105, 7106)
    shallower = caller_line() - 1
    snapshot = tm.take_snapshot()
    for size, depth, call_line, leak_line in ((7101, 30, line, "leak_first"), (7102, 30, line, "leak_second"),
                                              (7103, 31, deeper, "leak_first"), (7104, 31, deeper, "leak_second"),
                                              (7105, 29, shallower, "leak_first"),
                                              (7106, 29, shallower, "leak_second")):
        frames, _ = stack_of(snapshot, size)
        assert ours(frames, depth + 3) == [LINES[leak_line]] + descend_lines(depth) + [call_line], size


def generator(sizes):
    for size in sizes:
        A.leak_raw(size)  # @gen_leak
        yield


async def coroutine(sizes):
    for size in sizes:
        A.leak_raw(size)  # @coro_leak
        await Suspend()


class Suspend:
    def __await__(self):
        yield


def resume(driver):
    driver()  # @resume


def test_generators_and_coroutines_resumed_at_different_depths(tm):
    gen = generator([7201, 7202, 7203])
    coro = coroutine([7211, 7212, 7213])
    descend(10, resume, lambda: next(gen))
    descend(40, resume, lambda: coro.send(None))
    descend(40, resume, lambda: next(gen))
    descend(10, resume, lambda: coro.send(None))
    descend(25, resume, lambda: next(gen))
    descend(25, resume, lambda: coro.send(None))
    snapshot = tm.take_snapshot()
    gen_line = LINES["gen_leak"]
    coro_line = LINES["coro_leak"]
    for size, depth, leak_line in ((7201, 10, gen_line), (7211, 40, coro_line), (7202, 40, gen_line),
                                   (7212, 10, coro_line), (7203, 25, gen_line), (7213, 25, coro_line)):
        frames, _ = stack_of(snapshot, size)
        # leak line, the lambda, resume, descend x depth; the lambda's line is the call's
        assert ours(frames, 1) == [leak_line], size
        assert ours(frames, depth + 4)[2:] == [LINES["resume"]] + descend_lines(depth), size
    coro.close()


def raise_after_leak(size):
    A.leak_raw(size)  # @leak_then_raise
    raise LookupError(size)


def catch_at(depth, size):
    try:
        descend(depth, raise_after_leak, size)  # @catch_call
    except LookupError:
        A.leak_raw(size + 1)  # @after_catch


def test_exceptions_unwinding_through_the_frames_of_the_last_stack(tm):
    descend(15, catch_at, 30, 7301)
    line = caller_line() - 1
    snapshot = tm.take_snapshot()
    frames, _ = stack_of(snapshot, 7301)
    assert ours(frames, 50) == ([LINES["leak_then_raise"]] + descend_lines(30) + [LINES["catch_call"]]
                                + descend_lines(15) + [line])
    frames, _ = stack_of(snapshot, 7302)
    assert ours(frames, 18) == [LINES["after_catch"]] + descend_lines(15) + [line]


def test_threads_keep_their_own_stacks(tm):
    barrier = threading.Barrier(2)

    def worker(depth, first_size):
        for round_ in range(20):
            barrier.wait()
            descend(depth + round_ % 3, leak_in_a, first_size + round_)  # @thread_call

    threads = [threading.Thread(target=worker, args=(depth, size)) for depth, size in ((12, 7400), (45, 7500))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    snapshot = tm.take_snapshot()
    for depth, first_size in ((12, 7400), (45, 7500)):
        for round_ in range(20):
            frames, _ = stack_of(snapshot, first_size + round_)
            d = depth + round_ % 3
            assert ours(frames, d + 3) == [LINES["leak_a"]] + descend_lines(d) + [LINES["thread_call"]]


def test_a_limit_below_the_depth_keeps_the_innermost_frames(hs_tracemalloc):
    tm = hs_tracemalloc
    descend(3, leak_in_a, 1)
    tm.start(16)
    for depth, size in ((100, 7601), (101, 7602), (99, 7603), (100, 7604)):
        descend(depth, leak_in_a if size % 2 else leak_in_b, size)
    snapshot = tm.take_snapshot()
    totals = set()
    for depth, size in ((100, 7601), (101, 7602), (99, 7603), (100, 7604)):
        frames, traceback = stack_of(snapshot, size)
        assert len(frames) == 16
        assert ours(frames, 16) == [LINES["leak_a" if size % 2 else "leak_b"]] + descend_lines(depth)[:15]
        totals.add(traceback.total_nframe - depth)
    assert len(totals) == 1  # the depth counts every frame, beyond the limit too


CAPTURE_SCRIPT = """
import sys
from heapscope import Tracker
import allocators as A

def descend(depth, then, *args):
    if depth:
        return descend(depth - 1, then, *args)  # @descend
    return then(*args)  # @descend_bottom

def descend_other(depth, then, *args):
    if depth:
        return descend_other(depth - 1, then, *args)  # @descend_other
    return then(*args)  # @descend_other_bottom

def leak(size):
    A.leak_raw(size)  # @leak

def generator():
    A.leak_raw(8103)  # @gen_first
    yield
    A.leak_raw(8104)  # @gen_second
    yield

def resume(gen):
    next(gen)  # @resume

with Tracker(sys.argv[1], trace_python_allocators=True):
    descend(60, descend, 60, leak, 8101)  # @first
    descend(60, descend_other, 60, leak, 8102)  # @second
    gen = generator()
    descend(70, resume, gen)  # @gen_deep
    descend(5, resume, gen)  # @gen_shallow
"""


def test_a_capture_sees_the_same_stack_changes(tmp_path):
    script = tmp_path / "stacks.py"
    lines = write_script(script, CAPTURE_SCRIPT)
    capture = tmp_path / "stacks.hscap"
    run_script(script, capture, extra_paths=[os.path.dirname(THIS_FILE)])
    stacks = {}
    for record in FileReader(capture).get_allocation_records():
        if record.size in (8101, 8102, 8103, 8104):
            stacks[record.size] = [(function, line) for function, filename, line in record.stack_trace()
                                   if filename == str(script)]

    def down(depth, function, bottom, step):
        return [(function, lines[bottom])] + [(function, lines[step])] * depth

    assert stacks[8101] == ([("leak", lines["leak"])] + down(60, "descend", "descend_bottom", "descend")
                            + down(60, "descend", "descend_bottom", "descend") + [("<module>", lines["first"])])
    assert stacks[8102] == ([("leak", lines["leak"])]
                            + down(60, "descend_other", "descend_other_bottom", "descend_other")
                            + down(60, "descend", "descend_bottom", "descend") + [("<module>", lines["second"])])
    assert stacks[8103] == ([("generator", lines["gen_first"]), ("resume", lines["resume"])]
                            + down(70, "descend", "descend_bottom", "descend") + [("<module>", lines["gen_deep"])])
    assert stacks[8104] == ([("generator", lines["gen_second"]), ("resume", lines["resume"])]
                            + down(5, "descend", "descend_bottom", "descend") + [("<module>", lines["gen_shallow"])])
