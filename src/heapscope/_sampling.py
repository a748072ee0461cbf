"""The ``sampling=`` argument every front door takes, checked once.

Forms (docs/sampling.md):

- ``None`` or ``False``: exact, every allocation is recorded;
- ``True``: Poisson byte sampling at the default mean interval
  (:data:`DEFAULT_SAMPLING_INTERVAL`, 64 KiB);
- an int *n*: Poisson byte sampling, one mark every *n* bytes on average;
- a mapping ``{size upper bound: probability}``: heapprof's size ranges.
  Each key is the exclusive upper bound of its range; sizes at or above the
  largest key are always recorded.

Each is turned into the engine's text form ("exact", "poisson:524288",
"ranges:128=0.0001,8192=0.1"), which the engine parses and range-checks
(ValueError), and which captures keep in their metadata.
"""

from collections.abc import Mapping as _Mapping
import numbers as _numbers
import operator as _operator

try:
    from heapscope._heapscope import DEFAULT_SAMPLING_INTERVAL  # the engine's
except ImportError:  # snapshots and reports still work without the engine
    DEFAULT_SAMPLING_INTERVAL = 64 * 1024  # tests/test_sampling.py checks it equals the engine's

MAX_SAMPLING_INTERVAL = 1 << 31


def _integer(value):
    if isinstance(value, bool) or not hasattr(type(value), "__index__"):
        return None
    return _operator.index(value)


def describe_sampling(sampling, argument="sampling"):
    """Return the engine's text form of *sampling*; TypeError or ValueError
    (naming *argument*) when it is not one of the accepted forms."""
    if sampling is None or sampling is False:
        return "exact"
    if sampling is True:
        return "poisson:%d" % DEFAULT_SAMPLING_INTERVAL
    interval = _integer(sampling)
    if interval is not None:
        if not 1 <= interval <= MAX_SAMPLING_INTERVAL:
            raise ValueError("%s: the mean sampling interval must be in range "
                             "[1; %d] bytes, not %d"
                             % (argument, MAX_SAMPLING_INTERVAL, interval))
        return "poisson:%d" % interval
    if isinstance(sampling, _Mapping):
        return "ranges:" + ",".join(
            "%d=%r" % (bound, probability)
            for bound, probability in size_ranges(sampling, argument))
    raise TypeError("%s must be None, a bool, an int (the mean sampling "
                    "interval in bytes) or a mapping {size upper bound: "
                    "probability}, not %s" % (argument, type(sampling).__name__))


def size_ranges(mapping, argument="samplingRate"):
    """Check a ``{size upper bound: probability}`` mapping; return its
    ranges as sorted ``(bound, probability)`` pairs.  TypeError for keys
    that are not ints or values that are not real numbers; ValueError for
    repeated bounds (keys equal as ints, such as ``128`` and ``True``-like
    int subclasses), bounds below 1, or probabilities outside [0, 1]."""
    if not isinstance(mapping, _Mapping):
        raise TypeError("%s must be a mapping {size upper bound: probability}, "
                        "not %s" % (argument, type(mapping).__name__))
    ranges = {}
    for key, value in mapping.items():
        bound = _integer(key)
        if bound is None:
            raise TypeError("%s: a size upper bound must be an int, not %s"
                            % (argument, type(key).__name__))
        if isinstance(value, bool) or not isinstance(value, _numbers.Real):
            raise TypeError("%s: the probability for %d bytes must be a real "
                            "number, not %s"
                            % (argument, bound, type(value).__name__))
        if bound in ranges:
            raise ValueError("%s: the size upper bound %d is given twice"
                             % (argument, bound))
        if bound < 1:
            raise ValueError("%s: a size upper bound must be at least 1 byte, "
                             "not %d" % (argument, bound))
        probability = float(value)
        if not 0.0 <= probability <= 1.0:
            raise ValueError("%s: the probability for sizes below %d bytes must "
                             "be in range [0; 1], not %r"
                             % (argument, bound, value))
        ranges[bound] = probability
    if not ranges:
        raise ValueError("%s: give at least one size range" % argument)
    return sorted(ranges.items())


def parse_sampling(text):
    """The inverse of :func:`describe_sampling`, for readers: return None
    (exact), an int (Poisson mean interval) or a dict of size ranges."""
    if not text or text == "exact":
        return None
    mode, _, rest = text.partition(":")
    if mode == "poisson":
        return int(rest)
    if mode == "ranges":
        ranges = {}
        for item in rest.split(","):
            bound, _, probability = item.partition("=")
            ranges[int(bound)] = float(probability)
        return ranges
    raise ValueError("unknown sampling description %r" % (text,))
