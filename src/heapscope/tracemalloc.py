"""Drop-in replacement for the standard library's :mod:`tracemalloc`.

``import heapscope.tracemalloc as tracemalloc`` gives the documented
tracemalloc API -- the same functions, classes, defaults, reprs, sort orders,
filter rules and exceptions -- backed by heapscope's native engine
(``heapscope._heapscope``).  The snapshot classes are pure Python and also
work on raw trace lists, exactly like the stdlib's ``Snapshot(traces,
traceback_limit)`` constructor.

Differences from the stdlib (docs/tracemalloc.md gives every one with its
reason):

* ``Snapshot.dump()`` / ``Snapshot.load()`` use heapscope's binary snapshot
  format instead of pickle, so loading a file never runs code from it.  A bad
  file raises :class:`SnapshotFileError` (a ``ValueError`` subclass).
  Attributes set on a snapshot are stored when they are plain data (None,
  bool, int, float, str, bytes, and tuples, lists and dicts of these); dump()
  refuses any other with a TypeError naming it.
* ``Snapshot.load`` is a classmethod (the stdlib's is a staticmethod), so a
  subclass loads as itself.
* ``filter_traces([])`` always returns a list-backed copy; the stdlib raises
  AttributeError when the snapshot was built from a tuple of traces.
* On 3.9-3.12 an object reused from a free list keeps the traceback of its
  first allocation: only 3.13 tells another tracer of the reuse.
* Grouping and filtering are optimised for snapshots with millions of traces
  (work is done once per distinct stack, not once per trace); results,
  including sort order and exceptions, are identical to the stdlib's.
"""

import fnmatch as _fnmatch
import linecache   # public, like the stdlib's: tools patch tracemalloc.linecache.getline
import operator as _operator
import os as _os
import sys as _sys
from collections.abc import Iterable as _Iterable, Sequence as _Sequence
from functools import total_ordering as _total_ordering
from itertools import compress as _compress
from operator import itemgetter as _itemgetter

from ._sampling import describe_sampling as _describe_sampling, parse_sampling as _parse_sampling
from ._snapshot_file import (
    SnapshotFileError,
    read_snapshot as _read_snapshot,
    write_snapshot as _write_snapshot,
)

__all__ = [
    # functions
    "clear_traces", "get_object_traceback", "get_traceback_limit",
    "get_traced_memory", "get_tracemalloc_memory", "is_tracing",
    "reset_peak", "start", "stop", "take_snapshot",
    # classes
    "BaseFilter", "DomainFilter", "Filter", "Frame", "Snapshot",
    "Statistic", "StatisticDiff", "Trace", "Traceback",
    # heapscope extension
    "SnapshotFileError",
]

_MAX_NFRAME = 65535
_INT_MIN = -(1 << 31)
_INT_MAX = (1 << 31) - 1

# ---------------------------------------------------------------------------
# Native engine (imported on first use so the classes work without it)
# ---------------------------------------------------------------------------

_native_module = None


def _native():
    global _native_module
    if _native_module is None:
        from . import _heapscope
        _native_module = _heapscope
    return _native_module


def _as_c_int(value):
    """The stdlib's argument conversion (the C "i" format), with its messages."""
    if _sys.version_info < (3, 10):
        # 3.9's "i" format: floats get their own message, and others another.
        if isinstance(value, float):
            raise TypeError("integer argument expected, got float")
        try:
            return int(_operator.index(value))
        except TypeError:
            raise TypeError("an integer is required (got type %s)" % type(value).__name__) from None
    return int(_operator.index(value))   # int(): bool/IntEnum -> int


def start(nframe=1, /, *, sampling=None):
    """Start tracing Python memory allocations, storing up to *nframe*
    frames per traceback (default 1).  Does nothing if already tracing.

    *sampling* is heapscope's addition (keyword only): None, the default,
    traces every allocation as the stdlib does; True samples allocations
    by bytes (Poisson, one sample per 64 KiB on average), an int sets that
    mean interval in bytes, and a mapping ``{size upper bound: probability}``
    samples by size range.  While sampling, snapshots, statistics and
    get_traced_memory() give unbiased estimates (docs/sampling.md)."""
    sampling_text = _describe_sampling(sampling)
    nframe = _as_c_int(nframe)
    if not _INT_MIN <= nframe <= _INT_MAX:
        # the stdlib converts with the C "i" format before range checking
        raise OverflowError("Python int too large to convert to C int")
    if not 1 <= nframe <= _MAX_NFRAME:
        raise ValueError("the number of frames must be in range [1; %d]"
                         % _MAX_NFRAME)
    _native().start(nframe, sampling_text)


def get_sampling():
    """heapscope's addition: the running session's sampling, in the form
    start() takes (None when exact or not tracing)."""
    return _parse_sampling(_native().get_sampling())


def stop():
    """Stop tracing Python memory allocations and clear the traces."""
    _native().stop()


def is_tracing():
    """Return True if memory allocations are being traced."""
    return _native().is_tracing()


def clear_traces():
    """Clear the traces of memory blocks allocated by Python."""
    _native().clear_traces()


def get_traceback_limit():
    """Return the maximum number of frames stored in a trace's traceback."""
    return _native().get_traceback_limit()


def get_traced_memory():
    """Return ``(current, peak)``: the current and peak size in bytes of
    the traced memory blocks."""
    memory = _native().get_traced_memory()
    return (memory.current, memory.peak)


def reset_peak():
    """Set the peak size of traced memory blocks to the current size."""
    _native().reset_peak()


def get_tracemalloc_memory():
    """Return the memory in bytes used to store the traces."""
    return _native().get_tracemalloc_memory()


def _get_traces():
    # private, like the stdlib's tracemalloc._get_traces: raw trace tuples
    return _native().get_traces()


def _get_object_traceback(obj):
    return _native().get_object_traceback(obj)


def get_object_traceback(obj):
    """Return the Traceback where *obj* was allocated, or None if it was
    not traced (or tracemalloc is not tracing)."""
    frames = _native().get_object_traceback(obj)
    if frames is None:
        return None
    return Traceback(frames)


def take_snapshot():
    """Take a Snapshot of the traces of memory blocks allocated by Python."""
    # Through the module's own functions, as the stdlib does: tests and tools
    # patch is_tracing, _get_traces and get_traceback_limit.
    if not is_tracing():
        raise RuntimeError("the tracemalloc module must be tracing memory "
                           "allocations to take a snapshot")
    traces = _get_traces()
    traceback_limit = get_traceback_limit()
    return Snapshot(traces, traceback_limit)


# ---------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def _format_size(size, sign):
    """Human-readable size, 3 to 5 significant characters plus a unit."""
    short = "%+.1f %s" if sign else "%.1f %s"
    wide = "%+.0f %s" if sign else "%.0f %s"
    biggest = _UNITS[-1]
    for unit in _UNITS:
        magnitude = abs(size)
        if magnitude < 100 and unit != "B":
            return short % (size, unit)
        if magnitude < 10 * 1024 or unit is biggest:
            return wide % (size, unit)
        size /= 1024


# ---------------------------------------------------------------------------
# Value classes
# ---------------------------------------------------------------------------

@_total_ordering
class Frame:
    """One frame of a traceback: a filename and a line number."""

    __slots__ = ("_frame",)

    def __init__(self, frame):
        # frame: (filename: str, lineno: int)
        self._frame = frame

    @property
    def filename(self):
        """Filename (str)."""
        return self._frame[0]

    @property
    def lineno(self):
        """Line number (int)."""
        return self._frame[1]

    def __eq__(self, other):
        if isinstance(other, Frame):
            return self._frame == other._frame
        return NotImplemented

    def __lt__(self, other):
        if isinstance(other, Frame):
            return self._frame < other._frame
        return NotImplemented

    def __hash__(self):
        return hash(self._frame)

    def __str__(self):
        return "%s:%s" % (self.filename, self.lineno)

    def __repr__(self):
        return "<Frame filename=%r lineno=%r>" % (self.filename, self.lineno)


@_total_ordering
class Traceback(_Sequence):
    """Sequence of Frame instances, from the oldest frame to the most
    recent one."""

    __slots__ = ("_frames", "_total_nframe")

    def __init__(self, frames, total_nframe=None):
        # Raw frames come most recent first; the public order is oldest first.
        if type(frames) is tuple:
            self._frames = frames[::-1]
        else:
            self._frames = tuple(reversed(frames))
        self._total_nframe = total_nframe

    @property
    def total_nframe(self):
        """Number of frames in the original stack before truncation to the
        traceback limit, or None if unknown."""
        return self._total_nframe

    def __len__(self):
        return len(self._frames)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return tuple(map(Frame, self._frames[index]))
        return Frame(self._frames[index])

    def __contains__(self, frame):
        return frame._frame in self._frames

    def __eq__(self, other):
        if isinstance(other, Traceback):
            return self._frames == other._frames
        return NotImplemented

    def __lt__(self, other):
        if isinstance(other, Traceback):
            return self._frames < other._frames
        return NotImplemented

    def __hash__(self):
        return hash(self._frames)

    def __str__(self):
        return str(self[0])

    def __repr__(self):
        frames = tuple(map(Frame, self._frames))
        if self._total_nframe is None:
            return "<Traceback %s>" % (frames,)
        return "<Traceback %s total_nframe=%s>" % (frames, self._total_nframe)

    def format(self, limit=None, most_recent_first=False):
        """Return the traceback as a list of lines (without newlines), like
        the traceback module.  A positive *limit* keeps the *limit* most
        recent frames, a negative one keeps the ``abs(limit)`` oldest."""
        frames = self._frames
        if limit is not None:
            frames = frames[-limit:] if limit > 0 else frames[:limit]
        if most_recent_first:
            frames = frames[::-1]
        lines = []
        for frame in frames:
            filename = frame[0]
            lineno = frame[1]
            lines.append('  File "%s", line %s' % (filename, lineno))
            source = linecache.getline(filename, lineno).strip()
            if source:
                lines.append("    " + source)
        return lines


class Trace:
    """Trace of one memory block."""

    __slots__ = ("_trace",)

    def __init__(self, trace):
        # trace: (domain, size, frames, total_nframe), frames most recent
        # first; a sampled trace adds a fifth item, the number of blocks it
        # stands for, and its size is then an estimate (docs/sampling.md).
        self._trace = trace

    @property
    def domain(self):
        """Address space of the memory block (int)."""
        return self._trace[0]

    @property
    def size(self):
        """Size of the memory block in bytes (int)."""
        return self._trace[1]

    @property
    def traceback(self):
        """Traceback where the memory block was allocated."""
        return Traceback(*self._trace[2:4])

    def __eq__(self, other):
        if isinstance(other, Trace):
            return self._trace == other._trace
        return NotImplemented

    def __hash__(self):
        return hash(self._trace)

    def __str__(self):
        return "%s: %s" % (self.traceback, _format_size(self.size, False))

    def __repr__(self):
        return "<Trace domain=%s size=%s, traceback=%r>" % (
            self.domain, _format_size(self.size, False), self.traceback)


class _Traces(_Sequence):
    """Read-only view of a snapshot's raw traces as Trace objects."""

    def __init__(self, traces):
        self._traces = traces

    def __len__(self):
        return len(self._traces)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return tuple(map(Trace, self._traces[index]))
        return Trace(self._traces[index])

    def __contains__(self, trace):
        return trace._trace in self._traces

    def __eq__(self, other):
        if isinstance(other, _Traces):
            return self._traces == other._traces
        return NotImplemented

    __hash__ = None

    def __repr__(self):
        return "<Traces len=%s>" % len(self)


class Statistic:
    """Statistic on memory allocations: total size and number of blocks
    allocated at one traceback."""

    __slots__ = ("traceback", "size", "count")

    def __init__(self, traceback, size, count):
        self.traceback = traceback
        self.size = size
        self.count = count

    def __eq__(self, other):
        if isinstance(other, Statistic):
            return (self.traceback == other.traceback
                    and self.size == other.size
                    and self.count == other.count)
        return NotImplemented

    def __hash__(self):
        return hash((self.traceback, self.size, self.count))

    def __str__(self):
        text = "%s: size=%s, count=%i" % (
            self.traceback, _format_size(self.size, False), self.count)
        if self.count:
            text += ", average=%s" % _format_size(self.size / self.count,
                                                  False)
        return text

    def __repr__(self):
        return "<Statistic traceback=%r size=%i count=%i>" % (
            self.traceback, self.size, self.count)

    def _sort_key(self):
        return (self.size, self.count, self.traceback)


class StatisticDiff:
    """Difference of a Statistic between an old and a new Snapshot."""

    __slots__ = ("traceback", "size", "size_diff", "count", "count_diff")

    def __init__(self, traceback, size, size_diff, count, count_diff):
        self.traceback = traceback
        self.size = size
        self.size_diff = size_diff
        self.count = count
        self.count_diff = count_diff

    def __eq__(self, other):
        if isinstance(other, StatisticDiff):
            return (self.traceback == other.traceback
                    and self.size == other.size
                    and self.size_diff == other.size_diff
                    and self.count == other.count
                    and self.count_diff == other.count_diff)
        return NotImplemented

    def __hash__(self):
        return hash((self.traceback, self.size, self.size_diff,
                     self.count, self.count_diff))

    def __str__(self):
        text = "%s: size=%s (%s), count=%i (%+i)" % (
            self.traceback, _format_size(self.size, False),
            _format_size(self.size_diff, True), self.count, self.count_diff)
        if self.count:
            text += ", average=%s" % _format_size(self.size / self.count,
                                                  False)
        return text

    def __repr__(self):
        return "<StatisticDiff traceback=%r size=%i (%+i) count=%i (%+i)>" % (
            self.traceback, self.size, self.size_diff,
            self.count, self.count_diff)

    def _sort_key(self):
        return (abs(self.size_diff), self.size,
                abs(self.count_diff), self.count, self.traceback)


# ---------------------------------------------------------------------------
# Filters
# ---------------------------------------------------------------------------

def _normalize_filename(filename):
    # normcase, and "foo.pyc" is reported as "foo.py"
    filename = _os.path.normcase(filename)
    return filename[:-1] if filename.endswith(".pyc") else filename


class BaseFilter:
    """Base class of Filter and DomainFilter.  A subclass implements
    ``_match(trace)`` on a raw trace tuple and returns whether the trace is
    kept (for exclusive filters: False means the trace is dropped)."""

    def __init__(self, inclusive):
        self.inclusive = inclusive

    def _match(self, trace):
        raise NotImplementedError


class Filter(BaseFilter):
    """Filter traces by filename pattern (fnmatch), line number, and
    optionally domain."""

    def __init__(self, inclusive, filename_pattern,
                 lineno=None, all_frames=False, domain=None):
        super().__init__(inclusive)
        self._filename_pattern = _normalize_filename(filename_pattern)
        self.lineno = lineno
        self.all_frames = all_frames
        self.domain = domain

    @property
    def filename_pattern(self):
        """Filename pattern of the filter (read-only)."""
        return self._filename_pattern

    def _match_frame_impl(self, filename, lineno):
        # True when the frame matches, ignoring inclusive/exclusive
        if not _fnmatch.fnmatch(_normalize_filename(filename),
                                self._filename_pattern):
            return False
        return self.lineno is None or lineno == self.lineno

    def _match_frame(self, filename, lineno):
        return self._match_frame_impl(filename, lineno) ^ (not self.inclusive)

    def _match_traceback(self, traceback):
        if not self.all_frames:
            filename, lineno = traceback[0]
            return self._match_frame(filename, lineno)
        for filename, lineno in traceback:
            if self._match_frame_impl(filename, lineno):
                return self.inclusive
        return not self.inclusive

    def _match(self, trace):
        domain, frames = trace[0], trace[2]  # a sampled trace has a fifth item
        keep = self._match_traceback(frames)
        if self.domain is None:
            return keep
        if self.inclusive:
            return keep and domain == self.domain
        return keep or domain != self.domain


class DomainFilter(BaseFilter):
    """Filter traces of memory blocks by their address space (domain)."""

    def __init__(self, inclusive, domain):
        super().__init__(inclusive)
        self._domain = domain

    @property
    def domain(self):
        """Domain of the filter (read-only)."""
        return self._domain

    def _match(self, trace):
        domain = trace[0]
        return (domain == self.domain) ^ (not self.inclusive)


def _compile_filter(flt):
    """Return ``keep(domain, frames)`` equivalent (in truth value) to
    ``flt._match((domain, size, frames, total_nframe))`` for an exact Filter
    or DomainFilter, with per-filename memoisation.  The filter's attributes
    are read once, up front."""
    inclusive = bool(flt.inclusive)
    if type(flt) is DomainFilter:
        wanted = flt.domain

        def keep_domain(domain, frames):
            return (domain == wanted) == inclusive
        return keep_domain

    pattern = flt._filename_pattern
    want_lineno = flt.lineno
    all_frames = flt.all_frames
    want_domain = flt.domain
    name_memo = {}

    def frame_hit(filename, lineno):
        hit = name_memo.get(filename)
        if hit is None:
            hit = name_memo[filename] = _fnmatch.fnmatch(
                _normalize_filename(filename), pattern)
        return hit and (want_lineno is None or lineno == want_lineno)

    def keep(domain, frames):
        if all_frames:
            hit = False
            for filename, lineno in frames:
                if frame_hit(filename, lineno):
                    hit = True
                    break
        else:
            filename, lineno = frames[0]
            hit = frame_hit(filename, lineno)
        result = bool(hit) == inclusive
        if want_domain is None:
            return result
        if inclusive:
            return result and domain == want_domain
        return result or domain != want_domain
    return keep


# ---------------------------------------------------------------------------
# Grouping
# ---------------------------------------------------------------------------

_get_domain = _itemgetter(0)
_get_frames = _itemgetter(2)
_KEY_TYPES = ("traceback", "filename", "lineno")


def _check_key_type(key_type, cumulative):
    if key_type not in _KEY_TYPES:
        raise ValueError("unknown key_type: %r" % (key_type,))
    if cumulative and key_type not in ("lineno", "filename"):
        raise ValueError("cumulative mode cannot by used with key type %r"
                         % key_type)


def _sum_by_stack(traces):
    """Collapse raw traces by frames object: return an iterable of
    ``[frames, total_size, count]``, in order of first appearance.

    The native engine (like the stdlib) shares one tuple per distinct stack,
    so grouping by identity touches each trace once without hashing its
    frames; equal stacks held in distinct tuples are merged later, by value,
    once per distinct object."""
    by_id = {}
    get = by_id.get
    if traces and len(traces[0]) > 4:
        # Sampled: each trace stands for trace[4] blocks.
        for trace in traces:
            frames = trace[2]
            entry = get(id(frames))
            if entry is None:
                by_id[id(frames)] = [frames, trace[1], trace[4]]
            else:
                entry[1] += trace[1]
                entry[2] += trace[4]
        return by_id.values()
    for trace in traces:
        frames = trace[2]
        entry = get(id(frames))
        if entry is None:
            by_id[id(frames)] = [frames, trace[1], 1]
        else:
            entry[1] += trace[1]
            entry[2] += 1
    return by_id.values()


def _group(traces, key_type, cumulative):
    """Group raw traces: return ``{key: [size, count]}`` and a function
    turning a key into raw frames (most recent first) for Traceback()."""
    groups = {}
    get = groups.get
    stacks = _sum_by_stack(traces)
    if not cumulative:
        if key_type == "traceback":
            for frames, size, count in stacks:
                entry = get(frames)
                if entry is None:
                    groups[frames] = [size, count]
                else:
                    entry[0] += size
                    entry[1] += count
            return groups, None
        if key_type == "lineno":
            for frames, size, count in stacks:
                key = frames[:1]
                entry = get(key)
                if entry is None:
                    groups[key] = [size, count]
                else:
                    entry[0] += size
                    entry[1] += count
            return groups, None
        for frames, size, count in stacks:   # "filename"
            key = frames[0][0]
            entry = get(key)
            if entry is None:
                groups[key] = [size, count]
            else:
                entry[0] += size
                entry[1] += count
        return groups, _filename_frames

    # cumulative: every frame of the stack counts (repeated frames count
    # once per occurrence, like the stdlib)
    by_filename = key_type == "filename"
    for frames, size, count in stacks:
        for frame in frames:
            key = frame[0] if by_filename else frame
            entry = get(key)
            if entry is None:
                groups[key] = [size, count]
            else:
                entry[0] += size
                entry[1] += count
    return groups, (_filename_frames if by_filename else _single_frame)


def _filename_frames(filename):
    return ((filename, 0),)


def _single_frame(frame):
    return (frame,)


def _statistic_sort_key(stat):
    return (stat.size, stat.count, stat.traceback._frames)


def _diff_sort_key(stat):
    return (abs(stat.size_diff), stat.size, abs(stat.count_diff), stat.count,
            stat.traceback._frames)


def _grouped_statistics(traces, key_type, cumulative):
    groups, to_frames = _group(traces, key_type, cumulative)
    if to_frames is None:
        return [Statistic(Traceback(key), size, count)
                for key, (size, count) in groups.items()]
    return [Statistic(Traceback(to_frames(key)), size, count)
            for key, (size, count) in groups.items()]


# ---------------------------------------------------------------------------
# Snapshot
# ---------------------------------------------------------------------------

class Snapshot:
    """Snapshot of the traces of memory blocks allocated by Python."""

    def __init__(self, traces, traceback_limit):
        # traces: raw (domain, size, frames, total_nframe) tuples
        self.traces = _Traces(traces)
        self.traceback_limit = traceback_limit

    def dump(self, filename):
        """Write the snapshot to *filename* in heapscope's binary snapshot
        format (not pickle), with the attributes set on it when they are
        plain data (None, bool, int, float, str, bytes, and tuples, lists
        and dicts of these); any other attribute raises TypeError naming it."""
        attributes = {name: value for name, value in vars(self).items()
                      if name not in _SNAPSHOT_STATE}
        _write_snapshot(filename, self.traces._traces, self.traceback_limit,
                        attributes)

    @classmethod
    def load(cls, filename):
        """Load a snapshot written by :meth:`dump`, with its attributes.
        Raise SnapshotFileError (a ValueError) if the file is not a valid
        heapscope snapshot."""
        traces, traceback_limit, attributes = _read_snapshot(filename)
        snapshot = cls(traces, traceback_limit)
        vars(snapshot).update(attributes)
        return snapshot

    def filter_traces(self, filters):
        """Return a new Snapshot with the traces that pass *filters*, a list
        of Filter/DomainFilter instances.  A trace is kept if it matches at
        least one inclusive filter (when there is any) and no exclusive
        filter.  An empty list returns a copy of all traces."""
        if not isinstance(filters, _Iterable):
            raise TypeError("filters must be a list of filters, not %s"
                            % type(filters).__name__)
        traces = self.traces._traces
        if not filters:
            return Snapshot(list(traces), self.traceback_limit)
        include = []
        exclude = []
        for flt in filters:
            (include if flt.inclusive else exclude).append(flt)
        if all(type(f) is Filter or type(f) is DomainFilter
               for f in include + exclude):
            kept = self._fast_filter(traces, include, exclude)
        else:
            kept = [trace for trace in traces
                    if _keep_trace(include, exclude, trace)]
        return Snapshot(kept, self.traceback_limit)

    @staticmethod
    def _fast_filter(traces, include, exclude):
        # Decide once per distinct key -- (domain, frames object), or just
        # one of them when no filter looks at the other -- then select the
        # traces with C-level iteration.
        filters = include + exclude
        use_domain = any(type(f) is DomainFilter or f.domain is not None
                         for f in filters)
        use_frames = any(type(f) is Filter for f in filters)
        include = [_compile_filter(f) for f in include]
        exclude = [_compile_filter(f) for f in exclude]
        if use_frames:
            frames_col = list(map(_get_frames, traces))
            ids = list(map(id, frames_col))
            frames_of = dict(zip(ids, frames_col)).__getitem__
            del frames_col
            domain = None            # no filter reads it
            if use_domain:
                domains = list(map(_get_domain, traces))
                distinct = dict.fromkeys(domains)
                if len(distinct) == 1:   # typical: every trace in domain 0
                    domain, = distinct
                    use_domain = False
                else:
                    ids = list(zip(domains, ids))
                del domains, distinct
            keys = ids
            del ids
        else:
            keys = list(map(_get_domain, traces))
        decisions = dict.fromkeys(keys)
        for key in decisions:
            if use_frames:
                if use_domain:
                    domain = key[0]
                    frames = frames_of(key[1])
                else:
                    frames = frames_of(key)
            else:
                domain = key
                frames = None        # no filter reads them
            keep = True
            if include:
                keep = False
                for match in include:
                    if match(domain, frames):
                        keep = True
                        break
            if keep:
                for match in exclude:
                    if not match(domain, frames):
                        keep = False
                        break
            decisions[key] = keep
        return list(_compress(traces, map(decisions.__getitem__, keys)))

    def _group_by(self, key_type, cumulative):
        # stdlib-compatible private helper: {Traceback: Statistic}
        _check_key_type(key_type, cumulative)
        return {stat.traceback: stat for stat in
                _grouped_statistics(self.traces._traces, key_type,
                                    cumulative)}

    def statistics(self, key_type, cumulative=False):
        """Return a list of Statistic grouped by *key_type* ('filename',
        'lineno' or 'traceback'), biggest first.  With *cumulative*, every
        frame of a traceback counts, not only the most recent one."""
        _check_key_type(key_type, cumulative)
        stats = _grouped_statistics(self.traces._traces, key_type, cumulative)
        stats.sort(key=_statistic_sort_key, reverse=True)
        return stats

    def compare_to(self, old_snapshot, key_type, cumulative=False):
        """Return a list of StatisticDiff between *old_snapshot* and this
        snapshot, grouped by *key_type*, biggest difference first."""
        _check_key_type(key_type, cumulative)
        new_groups, to_frames = _group(self.traces._traces, key_type,
                                       cumulative)
        old_groups, _ = _group(old_snapshot.traces._traces, key_type,
                               cumulative)
        diffs = []
        append = diffs.append
        pop_old = old_groups.pop
        for key, (size, count) in new_groups.items():
            frames = key if to_frames is None else to_frames(key)
            old = pop_old(key, None)
            if old is None:
                append(StatisticDiff(Traceback(frames), size, size,
                                     count, count))
            else:
                append(StatisticDiff(Traceback(frames), size, size - old[0],
                                     count, count - old[1]))
        for key, (size, count) in old_groups.items():
            frames = key if to_frames is None else to_frames(key)
            append(StatisticDiff(Traceback(frames), 0, -size, 0, -count))
        diffs.sort(key=_diff_sort_key, reverse=True)
        return diffs


# What dump() stores in its own columns; every other attribute is stored as data.
_SNAPSHOT_STATE = ("traces", "traceback_limit")


def _keep_trace(include, exclude, trace):
    # generic path (any BaseFilter subclass): the documented rules verbatim
    if include and not any(flt._match(trace) for flt in include):
        return False
    if exclude and any(not flt._match(trace) for flt in exclude):
        return False
    return True
