"""Anchored stack walks (CPython 3.11+, on by default with Python's
allocators traced: native/src/stack/frame_walk.h, cpython/anchored_frames.h):
a walk stops at an anchor, a frame whose call its frame object identifies,
and takes the frames below it from the walk that armed it. Each test makes
the anchor leave the stack (a return, an exception; a generator frame, which
is never an anchor, yields) and then puts a different stack under the same
frame addresses; an anchor that did not fall would give the new allocations
the old stack. Each also checks that anchored walks did happen (else it
would prove nothing).

Every allocation is a block of a distinct size made at a known line. The
calls between two stacks allocate nothing (no *args tuples): an allocation
on the way down would walk the stack, miss the anchor and arm a new one,
which would hide a missed event.
"""

import os
import sys

import pytest

import allocators as A
from capture_helpers import marked_lines
from heapscope import _heapscope as native

pytestmark = pytest.mark.skipif(sys.version_info < (3, 11), reason="3.9 and 3.10 reuse frame objects (zombie frames)")

THIS_FILE = os.path.abspath(__file__)
with open(THIS_FILE) as _source:
    LINES = marked_lines(_source.read())


def descend(depth, then, arg):
    if depth:
        return descend(depth - 1, then, arg)  # @descend
    return then(arg)  # @descend_bottom


def descend_other(depth, then, arg):
    if depth:
        return descend_other(depth - 1, then, arg)  # @descend_other
    return then(arg)  # @descend_other_bottom


def leak_twice(sizes):
    A.leak_raw(sizes[0])  # @leak_first
    A.leak_raw(sizes[1])  # @leak_second


def leak_twice_then_raise(sizes):
    A.leak_raw(sizes[0])  # @raise_first
    A.leak_raw(sizes[1])  # @raise_second
    raise LookupError(sizes[0])


def lines_of(depth, bottom="descend_bottom", step="descend"):
    return [LINES[bottom]] + [LINES[step]] * depth


def stack_of(snapshot, size):
    traces = [trace for trace in snapshot.traces if trace.size == size]
    assert len(traces) == 1, f"{len(traces)} traces of {size} bytes"
    frames = [(frame.filename, frame.lineno) for frame in reversed(traces[0].traceback)]
    return frames, traces[0].traceback.total_nframe


def ours(frames, count):
    assert all(filename == THIS_FILE for filename, _ in frames[:count]), frames[:count]
    return [line for _, line in frames[:count]]


@pytest.fixture
def tm(hs_tracemalloc, monkeypatch):
    monkeypatch.delenv("HEAPSCOPE_FRAME_ANCHORS", raising=False)
    descend(3, leak_twice, (1, 2))  # the first calls of these functions allocate; not while tracing
    descend_other(3, leak_twice, (1, 2))
    hs_tracemalloc.start(512)
    yield hs_tracemalloc


def via(args):
    middle, inner = args  # inner: (20, leak_twice, sizes), built before the call
    return middle(20, descend, inner)  # @via


def middle_descend(depth, then, arg):
    # descend's frames and then `then(*arg)` without building a tuple
    if depth:
        return middle_descend(depth - 1, then, arg)  # @middle
    return then(arg[0], arg[1], arg[2])  # @middle_bottom


def middle_other(depth, then, arg):
    if depth:
        return middle_other(depth - 1, then, arg)  # @middle_other
    return then(arg[0], arg[1], arg[2])  # @middle_other_bottom


def test_a_returned_anchor_under_another_caller(tm):
    # main -> descend -> [descend | descend_other] x 20 -> descend x 20 -> leak:
    # the anchor is among the inner descend frames; it returns, and the same
    # addresses then hold frames whose callers (below) differ.
    rounds = [(middle_descend if i % 2 == 0 else middle_other, (20, leak_twice, (9000 + 10 * i, 9001 + 10 * i)))
              for i in range(6)]
    before = native._anchored_walks()
    for args in rounds:
        descend(10, via, args)  # @round_call
    snapshot = tm.take_snapshot()
    assert native._anchored_walks() > before
    for middle, (_, _, (size, _)) in rounds:
        middle_lines = (lines_of(20, "middle_bottom", "middle") if middle is middle_descend
                        else lines_of(20, "middle_other_bottom", "middle_other"))
        below = lines_of(20) + middle_lines + [LINES["via"]] + lines_of(10) + [LINES["round_call"]]
        for leak_size, line in ((size, "leak_first"), (size + 1, "leak_second")):
            frames, total = stack_of(snapshot, leak_size)
            assert ours(frames, len(below) + 1) == [LINES[line]] + below, leak_size
            assert total == len(frames)


def gen_body(sizes):
    i = 0
    while i < len(sizes):  # not a for loop: its iterator would be an allocation with the generator on top
        descend(2, leak_twice, sizes[i])  # @gen_call
        yield  # the generator's frame is the anchor (4 kept frames above it): it yields here
        i += 1


def resume(gen):
    next(gen)  # @resume


def test_a_generator_anchor_that_yields_and_resumes_elsewhere(tm):
    # The generator's frame keeps its address (it lives in the generator);
    # resumed under another stack, it must not pass for the same call.
    rounds = [(9100 + 10 * i, 9101 + 10 * i) for i in range(6)]
    gen = gen_body(rounds)
    depths = [40, 10, 40, 25, 10, 40]
    before = native._anchored_walks()
    for depth in depths:
        descend(depth, resume, gen)  # @gen_resume
    snapshot = tm.take_snapshot()
    assert native._anchored_walks() > before
    for (first, second), depth in zip(rounds, depths):
        below = lines_of(2) + [LINES["gen_call"], LINES["resume"]] + lines_of(depth) + [LINES["gen_resume"]]
        for size, line in ((first, "leak_first"), (second, "leak_second")):
            frames, total = stack_of(snapshot, size)
            assert ours(frames, len(below) + 1) == [LINES[line]] + below, (size, depth)
            assert total == len(frames)


def raise_then_call_other(size):
    try:
        descend(30, leak_twice_then_raise, (size, size + 1))  # @raise_call
    except LookupError:
        descend_other(30, leak_twice, (size + 2, size + 3))  # @other_call


def test_an_anchor_unwound_by_an_exception(tm):
    # The anchor (a descend frame) leaves by an exception; descend_other's
    # frames then take its address, with other frames between it and the
    # catching frame. The traceback keeps the raising frames' objects alive
    # (they outlive their calls), until the handler ends.
    before = native._anchored_walks()
    for round_ in range(4):
        descend(15, raise_then_call_other, 9200 + 10 * round_)  # @unwind_round
    snapshot = tm.take_snapshot()
    assert native._anchored_walks() > before
    for round_ in range(4):
        size = 9200 + 10 * round_
        base = [LINES["unwind_round"]]
        common = lines_of(15) + base
        raised = lines_of(30) + [LINES["raise_call"]] + common
        other = lines_of(30, "descend_other_bottom", "descend_other") + [LINES["other_call"]] + common
        for leak_size, top, below in ((size, "raise_first", raised), (size + 1, "raise_second", raised),
                                      (size + 2, "leak_first", other), (size + 3, "leak_second", other)):
            frames, total = stack_of(snapshot, leak_size)
            assert ours(frames, len(below) + 1) == [LINES[top]] + below, leak_size
            assert total == len(frames)



def object_round(args):
    middle, sizes = args
    return middle(20, anchor_call, (4, descend, sizes))  # @object_via


def anchor_call(depth, then, sizes):
    sys._getframe()  # gives this call its frame object, the identity of the anchor it becomes
    return then(depth, leak_twice, sizes)  # @anchor_call


def test_a_later_call_at_the_anchors_address_that_gets_its_freed_frame_object(hs_tracemalloc, monkeypatch):
    # The anchor (anchor_call, 6 frames below the leaks) returns and its frame
    # object is freed; the next round's anchor_call, under other callers, sits
    # at its address and its new frame object most likely reuses the freed
    # block. Only the report of that free tells the calls apart. Sampled, so
    # that no walk between the two calls fells the anchor first: the 1 MiB
    # leaks are always sampled (interval 4 KiB), the frame objects rarely.
    # A sampled session has anchors only when asked: its frees go unhooked.
    monkeypatch.setenv("HEAPSCOPE_FRAME_ANCHORS", "1")
    rounds = [(middle_descend if i % 2 == 0 else middle_other, ((1 << 20) + 16 * i, (1 << 20) + 16 * i + 8))
              for i in range(12)]
    object_round((middle_descend, (1, 2)))  # first calls allocate; not while tracing
    object_round((middle_other, (1, 2)))
    hs_tracemalloc.start(512, sampling=4096)
    assert not native._frees_unhooked(2)  # the anchors hear of the object domain's frees
    before = native._anchored_walks()
    for args in rounds:
        descend(10, object_round, args)  # @object_round
    snapshot = hs_tracemalloc.take_snapshot()
    assert native._anchored_walks() > before
    for middle, (first, second) in rounds:
        middle_lines = (lines_of(20, "middle_bottom", "middle") if middle is middle_descend
                        else lines_of(20, "middle_other_bottom", "middle_other"))
        below = lines_of(4) + [LINES["anchor_call"]] + middle_lines + [LINES["object_via"]] + lines_of(10)
        below += [LINES["object_round"]]
        for size, line in ((first, "leak_first"), (second, "leak_second")):
            frames, total = stack_of(snapshot, size)
            assert ours(frames, len(below) + 1) == [LINES[line]] + below, size
            assert total == len(frames)
