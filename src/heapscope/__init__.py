"""heapscope: a memory profiler for Python programs, with a C++ core.

Front doors onto one engine:

- ``heapscope.tracemalloc``: a drop-in replacement for the standard library's
  ``tracemalloc`` (snapshots, statistics, diffs), with deep stacks at low cost.
- ``heapscope.track`` / ``heapscope.untrack``: report blocks in custom domains,
  as ``PyTraceMalloc_Track``/``PyTraceMalloc_Untrack`` do from C.
"""

__version__ = "0.1.0"

__all__ = ["track", "untrack", "get_include"]


def __getattr__(name):
    # track/untrack are the engine's own functions (so that no frame of
    # heapscope's stands between the caller and the block), bound on first
    # use: the snapshot classes stay importable without the extension.
    if name in ("track", "untrack"):
        from heapscope import _heapscope

        function = getattr(_heapscope, name)
        globals()[name] = function
        return function
    raise AttributeError(f"module 'heapscope' has no attribute {name!r}")


def get_include():
    """The directory holding ``heapscope/heapscope.h``, for building extensions."""
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    installed = os.path.join(here, "include")
    if os.path.isdir(installed):
        return installed
    return os.path.join(here, "..", "..", "native", "include")  # a source checkout
