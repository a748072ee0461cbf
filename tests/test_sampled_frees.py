"""A sampled session's frees (issue 17): the mem and object domains' frees
reach pymalloc with no hook between, and still no freed block stays in the
traces (native/src/hooks/pymem_hooks.cpp, moved_out_of_pools)."""

import os
import sys
import sysconfig

import pytest

from capture_helpers import marked_lines
from heapscope import _heapscope as native

with open(__file__) as _source:
    LINES = marked_lines(_source.read())


# The unhooked frees need pymalloc itself below the hooks: not under a debug
# build, -X dev, PYTHONMALLOC, the stdlib's tracemalloc, nor free threading.
PYMALLOC_BELOW = not (os.environ.get("PYTHONMALLOC") or os.environ.get("PYTHONTRACEMALLOC") or sys.flags.dev_mode
                      or hasattr(sys, "gettotalrefcount") or sysconfig.get_config_var("Py_GIL_DISABLED"))


@pytest.mark.skipif(not PYMALLOC_BELOW, reason="the unhooked frees need pymalloc below the hooks")
def test_sampled_frees_reach_pymalloc_unhooked_yet_every_freed_pick_is_forgotten(hs_tracemalloc):
    """While sampling, the mem and object domains' frees go straight to
    pymalloc, no hook called: a block the sampler picks from pymalloc's pools
    moves to raw memory first, whose frees pymalloc passes on to the raw
    domain's hook. Picked at an interval of 64 bytes, nearly every block
    moves; none of those freed may stay in the traces, whether it went by a
    free (strs, list items) or by a realloc (lists and bytearrays growing)."""
    hs_tracemalloc.start(1, sampling=64)
    assert [native._frees_unhooked(domain) for domain in (0, 1, 2)] == [False, True, True]
    blocks_before = sys.getallocatedblocks()
    gone, grown, buffers, zeroed = [], [], [], []
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
    for i in range(5_000):
        zeroed.append(bytes(i % 400))  # @gone_bytes: calloc
    del gone, grown, buffers, zeroed, items, buffer  # the last list and bytearray too
    # A moved block is counted when made and uncounted when freed: CPython's
    # count of blocks comes back (free lists keep a few).
    assert abs(sys.getallocatedblocks() - blocks_before) < 1_000
    kept = ["%d-%s" % (i, "y" * (i % 300)) for i in range(20_000)]  # @kept_strs
    snapshot = hs_tracemalloc.take_snapshot()
    by_line = {stat.traceback[0].lineno: stat.size for stat in snapshot.statistics("lineno")
               if stat.traceback[0].filename == __file__}
    for name in ("gone_strs", "gone_lists", "gone_bytearrays", "gone_bytes"):
        assert by_line.get(LINES[name], 0) == 0, name
    true_kept = sum(sys.getsizeof(text) for text in kept)
    assert 0.8 * true_kept < by_line[LINES["kept_strs"]] < 1.25 * true_kept
