"""heapscope: a memory profiler for Python programs, with a C++ core.

Front doors onto one engine:

- ``heapscope.tracemalloc``: a drop-in replacement for the standard library's
  ``tracemalloc`` (snapshots, statistics, diffs), with deep stacks at low cost.
- ``heapscope.track`` / ``heapscope.untrack``: report blocks in custom domains,
  as ``PyTraceMalloc_Track``/``PyTraceMalloc_Untrack`` do from C.
"""

__version__ = "0.1.0"

__all__ = ["track", "untrack", "get_include"]


def _native_function(name):
    from heapscope import _heapscope

    return getattr(_heapscope, name)


# Bound straight to the engine, so that no frame of heapscope's own stands
# between the caller and the block it reports.
track = _native_function("track")
untrack = _native_function("untrack")


def get_include():
    """The directory holding ``heapscope/heapscope.h``, for building extensions."""
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    installed = os.path.join(here, "include")
    if os.path.isdir(installed):
        return installed
    return os.path.join(here, "..", "..", "native", "include")  # a source checkout
