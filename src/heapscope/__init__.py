"""heapscope: a memory profiler for Python programs, with a C++ core.

Front doors onto one engine:

- ``heapscope.tracemalloc``: a drop-in replacement for the standard library's
  ``tracemalloc`` (snapshots, statistics, diffs), with deep stacks at low cost.
- ``heapscope.track`` / ``heapscope.untrack``: report blocks in custom domains,
  as ``PyTraceMalloc_Track``/``PyTraceMalloc_Untrack`` do from C.
- ``heapscope.Tracker`` and ``heapscope.FileReader``: capture files (every
  allocation, native ones too) and the reports made from them, with memray's
  names.
- ``heapscope.label("name")``: a context manager and decorator putting a named
  frame at the root of every stack allocated under it (``heapscope.labels``).
- ``%load_ext heapscope`` in IPython or Jupyter: the ``%%heapscope_flamegraph``
  and ``%%heapscope_top`` cell magics (``heapscope.ipython``).
"""

__version__ = "0.1.0"

__all__ = ["track", "untrack", "get_include",
           "Tracker", "FileDestination", "SocketDestination", "FileFormat",
           "FileReader", "AllocationRecord", "AllocatorType", "CaptureFileError", "Metadata", "MemorySnapshot",
           "dump_all_records", "SocketReader", "label"]

# Imported on first use, so that `import heapscope` stays light.
_LAZY = {
    "Tracker": "heapscope.tracker", "FileDestination": "heapscope.tracker",
    "SocketDestination": "heapscope.tracker", "FileFormat": "heapscope.tracker",
    "FileReader": "heapscope.reader", "AllocationRecord": "heapscope.reader",
    "AllocatorType": "heapscope.reader", "CaptureFileError": "heapscope.reader",
    "Metadata": "heapscope.reader", "MemorySnapshot": "heapscope.reader",
    "dump_all_records": "heapscope.reader", "SocketReader": "heapscope.reader",
    "label": "heapscope.labels",
}


def __getattr__(name):
    # track/untrack are the engine's own functions (so that no frame of
    # heapscope's stands between the caller and the block), bound on first
    # use: the snapshot classes stay importable without the extension.
    if name in ("track", "untrack"):
        from heapscope import _heapscope

        function = getattr(_heapscope, name)
        globals()[name] = function
        return function
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'heapscope' has no attribute {name!r}")


def load_ipython_extension(ipython):
    """``%load_ext heapscope``: registers the cell magics of ``heapscope.ipython``
    (imported only now, so that ``import heapscope`` stays light)."""
    from heapscope.ipython import load_ipython_extension as load

    load(ipython)


def get_include():
    """The directory holding ``heapscope/heapscope.h``, for building extensions."""
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    installed = os.path.join(here, "include")
    if os.path.isdir(installed):
        return installed
    return os.path.join(here, "..", "..", "native", "include")  # a source checkout
