"""heapscope: a memory profiler for Python programs, with a C++ core.

Front doors onto one engine:

- ``heapscope.tracemalloc``: a drop-in replacement for the standard library's
  ``tracemalloc`` (snapshots, statistics, diffs), with deep stacks at low cost.
- ``heapscope.track`` / ``heapscope.untrack``: report blocks in custom domains,
  as ``PyTraceMalloc_Track``/``PyTraceMalloc_Untrack`` do from C.
"""

__version__ = "0.1.0"

__all__ = ["track", "untrack", "get_include"]


def track(domain, address, size):
    """Record a block of ``size`` bytes at ``address`` in the numbered ``domain``.

    The block is attributed to the calling Python stack. Returns 0, or -2 if
    heapscope is not tracing (the values PyTraceMalloc_Track returns).
    """
    from heapscope import _heapscope

    return _heapscope.track(_check_uint("domain", domain, 32), _check_uint("address", address, 64),
                            _check_uint("size", size, 64))


def untrack(domain, address):
    """Forget the block at ``address`` in ``domain``. Returns 0, or -2 if not tracing."""
    from heapscope import _heapscope

    return _heapscope.untrack(_check_uint("domain", domain, 32), _check_uint("address", address, 64))


def get_include():
    """The directory holding ``heapscope/heapscope.h``, for building extensions."""
    import os

    return os.path.join(os.path.dirname(__file__), "include")


def _check_uint(name, value, bits):
    import operator

    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, not {type(value).__name__}") from None
    if not 0 <= number < (1 << bits):
        raise ValueError(f"{name} must be in range [0; {(1 << bits) - 1}], got {number}")
    return number
