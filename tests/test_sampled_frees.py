"""A sampled session's frees (issue 17): the mem and object domains' frees
reach pymalloc with no hook between, and still no freed block stays in the
traces (native/src/hooks/pymem_hooks.cpp, moved_out_of_pools)."""

import os
import sys

import pytest

from capture_helpers import marked_lines
from heapscope import _heapscope as native

with open(__file__) as _source:
    LINES = marked_lines(_source.read())


@pytest.mark.skipif(bool(os.environ.get("PYTHONMALLOC")), reason="the unhooked frees need pymalloc below the hooks")
def test_sampled_frees_reach_pymalloc_unhooked_yet_every_freed_pick_is_forgotten(hs_tracemalloc):
    """While sampling, the mem and object domains' frees go straight to
    pymalloc, no hook called: a block the sampler picks from pymalloc's pools
    moves to raw memory first, whose frees pymalloc passes on to the raw
    domain's hook. Picked at an interval of 64 bytes, nearly every block
    moves; none of those freed may stay in the traces, whether it went by a
    free (strs, list items) or by a realloc (lists and bytearrays growing)."""
    hs_tracemalloc.start(1, sampling=64)
    assert [native._frees_unhooked(domain) for domain in (0, 1, 2)] == [False, True, True]
    gone, grown, buffers = [], [], []
    for i in range(20_000):
        gone.append("%d-%s" % (i, "x" * (i % 300)))  # @gone_strs
    for i in range(2_000):
        items = []
        for j in range(40):
            items.append(j)  # @gone_lists
        grown.append(items)
    for i in range(2_000):
        buffer = bytearray()
        for j in range(30):
            buffer += b"01234567"  # @gone_bytearrays
        buffers.append(buffer)
    kept = ["%d-%s" % (i, "y" * (i % 300)) for i in range(20_000)]  # @kept_strs
    del gone, grown, buffers, items, buffer  # the last list and bytearray too
    snapshot = hs_tracemalloc.take_snapshot()
    by_line = {stat.traceback[0].lineno: stat.size for stat in snapshot.statistics("lineno")
               if stat.traceback[0].filename == __file__}
    for name in ("gone_strs", "gone_lists", "gone_bytearrays"):
        assert by_line.get(LINES[name], 0) == 0, name
    true_kept = sum(sys.getsizeof(text) for text in kept)
    assert 0.8 * true_kept < by_line[LINES["kept_strs"]] < 1.25 * true_kept
