"""``heapscope.FileReader``: read a capture file written by ``heapscope.Tracker``.

The names follow memray's ``FileReader`` (``metadata``,
``get_allocation_records``, ``get_high_watermark_allocation_records``,
``get_leaked_allocation_records``, ``get_temporary_allocation_records``,
``get_memory_snapshots``; records with ``size``, ``n_allocations``,
``allocator``, ``tid``, ``stack_trace()``, ``native_stack_trace()``,
``hybrid_stack_trace()``). New: ``snapshot_at(t)`` gives the heap at a moment
as a ``heapscope.tracemalloc.Snapshot``, and ``stats()``.

Every pass over the file is made by the C++ reader (``_heapscope.CaptureFile``),
which streams the file: a capture larger than memory can still be analysed.
Differences from memray, all deliberate:

* A file that is not a capture raises :class:`CaptureFileError` (a
  ``ValueError``), not OSError. A damaged file is read up to the damage;
  ``metadata.damage`` says what was wrong and where.
* ``allocator`` is an :class:`AllocatorType` (memray's names and values).
* Stack traces leave out heapscope's own frames (``heapscope run``'s, at the
  outer end of the main thread's stacks) also when *max_stacks* is given.
"""

import collections
import dataclasses
import datetime
import enum
import functools
import math
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from heapscope import _heapscope
from heapscope.reports.progress import ProgressBar
from heapscope.tracker import FileFormat

__all__ = ["FileReader", "AllocationRecord", "AllocatorType", "CaptureFileError", "Metadata", "MemorySnapshot",
           "CaptureStats", "TemporalAllocationRecord", "Interval", "dump_all_records", "SocketReader",
           "TrackedObjectRecord"]


class CaptureFileError(ValueError):
    """The file is not a heapscope capture, or is too damaged to read."""


# The engine's allocator table (native/src/model/allocator.h) is the one
# list: memray's names and values, then heapscope's own (TRACK, UNTRACK:
# blocks reported through a custom domain). Results cross the binding with
# these public values already.
_ALLOCATOR_TABLE = sorted(_heapscope.allocator_table(), key=lambda entry: entry.public_value)
AllocatorType = enum.IntEnum("AllocatorType", [(entry.name, entry.public_value) for entry in _ALLOCATOR_TABLE],
                             module=__name__, qualname="AllocatorType")
AllocatorType.__doc__ = "The allocation function behind a record (memray's names and values)."
_ALLOCATOR_OF = {kind.value: kind for kind in AllocatorType}
_DEALLOCATORS = frozenset(AllocatorType(entry.public_value) for entry in _ALLOCATOR_TABLE if entry.is_deallocator)

MemorySnapshot = collections.namedtuple("MemorySnapshot", "time rss heap")
MemorySnapshot.__doc__ = ("Memory at one moment: time (an int, milliseconds since the epoch, as memray's), "
                          "rss and heap (bytes).")

# (function, filename, lineno)
StackFrame = Tuple[str, str, int]


@dataclass
class Metadata:
    """What a capture says about its run (memray's attribute names), plus
    ``complete`` (the capture was ended by its Tracker) and ``damage`` (None,
    or what was wrong with the file and where reading stopped)."""

    start_time: datetime.datetime
    end_time: datetime.datetime
    total_allocations: int
    total_frames: int
    peak_memory: int
    command_line: str
    pid: int
    main_thread_id: int
    python_allocator: str
    has_native_traces: bool
    trace_python_allocators: bool
    file_format: FileFormat
    complete: bool = True
    damage: Optional[str] = None
    python_version: str = ""
    memory_interval_ms: int = 0
    # "exact", or how the capture was sampled ("poisson:524288",
    # "ranges:128=0.0001,8192=0.1"); sizes and counts are then unbiased
    # estimates (docs/sampling.md).
    sampling: str = "exact"
    # How the program ended, when ``heapscope run`` ran it: its exit code
    # (a clean stop), or the signal that killed it (written by the
    # supervising ``heapscope run`` after the program died). None if unknown.
    exit_code: Optional[int] = None
    exit_signal: Optional[int] = None

    @property
    def sampled(self):
        return self.sampling != "exact"


@dataclass
class CaptureStats:
    """Statistics over every allocation of a capture (``FileReader.stats()``).

    ``histogram`` holds ``(low, high, count)``: allocations of low <= size <=
    high bytes. Locations are ``(function, filename, lineno)``, the innermost
    frame of the program's stack.
    """

    total_allocations: int
    total_bytes: int
    peak_memory: int
    histogram: List[Tuple[int, int, int]]
    allocators: Dict[str, int]
    top_locations_by_bytes: List[Tuple[StackFrame, int]] = field(default_factory=list)
    top_locations_by_count: List[Tuple[StackFrame, int]] = field(default_factory=list)


def _check_max_stacks(max_stacks):
    if max_stacks is None:
        return None
    if isinstance(max_stacks, bool) or not isinstance(max_stacks, int):
        raise TypeError(f"max_stacks must be an int or None, not {type(max_stacks).__name__}")
    if max_stacks < 0:
        raise ValueError(f"max_stacks must be >= 0, got {max_stacks}")
    return max_stacks


class _StackRecord:
    """What every record shares: its thread, allocator, domain and stacks."""

    __slots__ = ()

    def __init__(self, reader, tid, allocator, domain, python_node, native_node):
        self._reader = reader
        self.tid = tid
        self.allocator = allocator
        self.domain = domain
        self._python_node = python_node
        self._native_node = native_node

    @property
    def stack_id(self):
        return self._python_node

    @property
    def native_stack_id(self):
        return self._native_node

    @property
    def native_segment_generation(self):
        """memray's: which loaded objects a native stack resolves against.
        heapscope resolves each native frame against the objects loaded when
        it was recorded: always 0."""
        return 0

    @property
    def thread_name(self):
        """The thread's name (its latest, renames included); "merged thread" for tid 0."""
        if self.tid == 0:
            return "merged thread"
        return self._reader._thread_name(self.tid)

    def __eq__(self, other):
        # Records of one kind are equal when they say the same (_key()).
        if type(other) is type(self):
            return self._key() == other._key()
        return NotImplemented

    def __hash__(self):
        return hash(self._key())

    def _check_allocation(self):
        if self.allocator in _DEALLOCATORS:
            raise NotImplementedError("Stack traces for deallocations aren't captured.")

    def stack_trace(self, max_stacks=None):
        """The Python stack, innermost frame first: [(function, filename,
        lineno)], each function by its plain name (the code object's
        co_name), as memray gives it."""
        self._check_allocation()
        return self._reader._python_stack(self._python_node, plain=True)[:_check_max_stacks(max_stacks)]

    def native_stack_trace(self, max_stacks=None):
        """The native stack (needs native_traces), innermost first; [] without it."""
        self._check_allocation()
        return self._reader._native_stack(self._native_node)[:_check_max_stacks(max_stacks)]

    def hybrid_stack_trace(self, max_stacks=None):
        """Native and Python frames merged into one stack, innermost first:
        each interpreter frame evaluating Python code is replaced by the
        Python frames it ran (by their plain names, as in stack_trace).
        Without native traces: the Python stack."""
        self._check_allocation()
        return self._reader._hybrid_stack(self._python_node, self._native_node,
                                          plain=True)[:_check_max_stacks(max_stacks)]

    def qualified_stack_trace(self, max_stacks=None):
        """stack_trace() with each Python function by its qualified name
        (co_qualname on Python 3.11+: ``Class.method``,
        ``outer.<locals>.inner``; the plain name before 3.11). heapscope's
        own reports use these. Not in memray."""
        self._check_allocation()
        return self._reader._python_stack(self._python_node)[:_check_max_stacks(max_stacks)]

    def qualified_hybrid_stack_trace(self, max_stacks=None):
        """hybrid_stack_trace() with qualified Python function names. Not in memray."""
        self._check_allocation()
        return self._reader._hybrid_stack(self._python_node, self._native_node)[:_check_max_stacks(max_stacks)]


class AllocationRecord(_StackRecord):
    """One allocation (from ``get_allocation_records``) or one location's
    total (from the high-water mark, leaks and temporary reports)."""

    __slots__ = ("_reader", "tid", "address", "size", "allocator", "n_allocations", "domain", "_python_node",
                 "_native_node")

    def __init__(self, reader, tid, address, size, allocator, n_allocations, domain, python_node, native_node):
        super().__init__(reader, tid, allocator, domain, python_node, native_node)
        self.address = address
        self.size = size
        self.n_allocations = n_allocations

    def _key(self):
        return (self.tid, self.address, self.size, int(self.allocator), self.n_allocations, self.domain,
                self._python_node, self._native_node)

    def __repr__(self):
        return (f"AllocationRecord<tid={self.tid:#x}, address={self.address:#x}, size={self.size}, "
                f"allocator={self.allocator.name}, allocations={self.n_allocations}>")


class TrackedObjectRecord(_StackRecord):
    """One object lifetime event (``FileReader.get_object_lifetime_events``),
    memray's: the Python object at ``address`` was made (``is_created``) or
    destroyed, by thread ``tid``. A creation has the stacks that made it; a
    destruction has none (its stack methods raise NotImplementedError, as a
    deallocation's do)."""

    __slots__ = ("_reader", "tid", "address", "is_created", "allocator", "domain", "_python_node", "_native_node")

    def __init__(self, reader, tid, address, is_created, python_node, native_node):
        super().__init__(reader, tid, None, 0, python_node, native_node)
        self.address = address
        self.is_created = is_created

    def _check_allocation(self):
        if not self.is_created:
            raise NotImplementedError("Stack traces for deallocations aren't captured.")

    def _key(self):
        return (self.tid, self.address, self.is_created, self._python_node, self._native_node)

    def __repr__(self):
        return (f"TrackedObjectRecord<tid={self.tid:#x}, address={self.address:#x}, "
                f"is_created={self.is_created}, stack_id={self.stack_id}>")


class Interval:
    """Blocks of one location over snapshots (memray's Interval): made
    before snapshot ``allocated_before_snapshot``, gone before snapshot
    ``deallocated_before_snapshot`` (None: never), ``n_allocations`` blocks
    of ``n_bytes`` in all."""

    __slots__ = ("allocated_before_snapshot", "deallocated_before_snapshot", "n_allocations", "n_bytes")

    def __init__(self, allocated_before_snapshot, deallocated_before_snapshot, n_allocations, n_bytes):
        self.allocated_before_snapshot = allocated_before_snapshot
        self.deallocated_before_snapshot = deallocated_before_snapshot
        self.n_allocations = n_allocations
        self.n_bytes = n_bytes

    def _key(self):
        return (self.allocated_before_snapshot, self.deallocated_before_snapshot, self.n_allocations, self.n_bytes)

    def __eq__(self, other):
        if type(other) is not Interval:
            return NotImplemented
        return self._key() == other._key()

    __hash__ = None  # mutable, as memray's

    def __repr__(self):
        return (f"Interval(allocated_before_snapshot={self.allocated_before_snapshot}, "
                f"deallocated_before_snapshot={self.deallocated_before_snapshot}, "
                f"n_allocations={self.n_allocations}, n_bytes={self.n_bytes})")


class TemporalAllocationRecord(_StackRecord):
    """One location (stack, allocator, thread unless merged) and its blocks
    over time: ``intervals``, a list of Interval (memray's
    TemporalAllocationRecord)."""

    __slots__ = ("_reader", "tid", "allocator", "domain", "_python_node", "_native_node", "intervals")

    def __init__(self, reader, tid, allocator, domain, python_node, native_node, intervals):
        super().__init__(reader, tid, allocator, domain, python_node, native_node)
        self.intervals = intervals

    def _key(self):
        return (self.tid, int(self.allocator), self.domain, self._python_node, self._native_node)

    def __eq__(self, other):
        if type(other) is not TemporalAllocationRecord:
            return NotImplemented
        return self._key() == other._key() and self.intervals == other.intervals

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        return (f"TemporalAllocationRecord<tid={self.tid:#x}, allocator={self.allocator.name}, "
                f"stack_id={self._python_node}, intervals={len(self.intervals)}>")


def _datetime(seconds):
    # A damaged capture may state any time: past what datetime holds, the
    # nearest it does, rather than an OverflowError.
    try:
        return datetime.datetime.fromtimestamp(seconds).astimezone()
    except (OverflowError, OSError, ValueError):
        limit = datetime.datetime.max if seconds > 0 else datetime.datetime.min + datetime.timedelta(days=1)
        return limit.replace(tzinfo=datetime.timezone.utc)


def _later(moment, milliseconds):
    """*moment* plus *milliseconds*, or datetime's largest moment past it."""
    try:
        return moment + datetime.timedelta(milliseconds=milliseconds)
    except OverflowError:
        return datetime.datetime.max.replace(tzinfo=moment.tzinfo)


def _to_int(text, default=0):
    try:
        return int(text)
    except (TypeError, ValueError):
        return default


def _to_float(text, default=0.0):
    # A damaged capture may say "inf" or "nan": no time is that.
    try:
        value = float(text)
    except (TypeError, ValueError):
        return default
    return value if math.isfinite(value) else default


def is_launch_frame(filename, internal_prefix):
    """heapscope's own frames (those under *internal_prefix*, the package
    directory a capture names, or None) and the runpy frames that started it."""
    if internal_prefix is None:
        return False
    return filename.startswith(internal_prefix) or filename == "<frozen runpy>" \
        or os.path.basename(filename) == "runpy.py"


def program_frame_count(stack, is_internal, launcher):
    """How many frames of *stack* (innermost first) are the program's: the
    ones inside the frames that launched it under ``heapscope run``, which are
    heapscope's own (and runpy's) and, outermost, the `heapscope` console
    script *launcher* (a path, or None)."""
    kept = len(stack)
    while kept and launcher and os.path.realpath(stack[kept - 1][1]) == launcher:
        kept -= 1
    if kept < len(stack) and not (kept and is_internal(stack[kept - 1][1])):
        kept = len(stack)  # not followed by heapscope's frames: the program's own
    while kept and is_internal(stack[kept - 1][1]):
        kept -= 1
    return kept


def frame_tuples(frames):
    """The engine's StackFrame rows as memray's (function, filename, lineno) tuples."""
    return [(frame.function, frame.filename, frame.lineno) for frame in frames]


def plain_function_name(qualified):
    """A Python function's plain name (its code object's co_name) from the
    qualified one a capture records (co_qualname on 3.11+): the part after
    the last dot. ``Class.method`` gives ``method``, ``f.<locals>.<lambda>``
    ``<lambda>``; a name without dots is its own plain name."""
    return qualified.rpartition(".")[2] or qualified


def _plain_frames(frames, python=None):
    """*frames* with the Python ones (all, or those flagged in *python*) named plainly."""
    if python is None:
        return [(plain_function_name(function), filename, lineno) for function, filename, lineno in frames]
    return [(plain_function_name(frame[0]), frame[1], frame[2]) if is_python else frame
            for frame, is_python in zip(frames, python)]


class _WholeCapture:
    """What only a pass over the whole capture tells: its ReadTotals, its
    metadata with the entries written after the start (end_time, pools made
    during the run), its memory records and threads. Read the first time it
    is asked for (the engine keeps that pass, the summary, for the reports),
    with the progress bar; holds the native file until then, so that the
    metadata of a reader closed meanwhile can still be completed."""

    def __init__(self, file, bar):
        self._file = file
        self._bar = bar
        self.totals = self.metadata = self.memory = self.threads = None

    def read(self):
        if self._file is None:
            return self
        file = self._file
        self._bar.restart("Reading capture")
        with self._bar as progress:
            self.totals = file.totals(progress=progress)
        self.metadata = dict(file.metadata)
        self.memory = file.memory_snapshots()
        self.threads = file.threads()
        self._file = self._bar = None
        return self


# The Metadata fields that need the whole capture read.
_PASS_FIELDS = ("end_time", "total_allocations", "total_frames", "peak_memory", "main_thread_id", "complete",
                "damage", "exit_code", "exit_signal")


def _pass_fields(whole, start, time_base):
    """The _PASS_FIELDS of a capture's Metadata, from *whole* (a _WholeCapture)."""
    whole.read()
    raw = whole.metadata
    last_record = time_base + (whole.memory[-1].time_ms / 1000 if whole.memory else 0)
    # The end: when the Tracker stopped, or its last record if that is
    # later (the stop writes one) or if the run never stopped its capture.
    end = max(_to_float(raw.get("end_time"), start) if "end_time" in raw else start, last_record)
    main_native = _to_int(raw.get("main_thread_native_id"))
    main_thread = 0
    if main_native:
        for thread, info in whole.threads.items():
            if info.os_tid == main_native:
                main_thread = thread
                break
    totals = whole.totals
    return {"end_time": _datetime(end), "total_allocations": totals.total_allocations,
            "total_frames": totals.total_frames, "peak_memory": totals.peak_memory, "main_thread_id": main_thread,
            "complete": totals.complete, "damage": totals.damage,
            "exit_code": _to_int(raw["exit_code"]) if "exit_code" in raw else None,
            "exit_signal": _to_int(raw["exit_signal"]) if "exit_signal" in raw else None}


def _deferred_field(name):
    def get(self):
        values = self.__dict__
        if name not in values:
            values.update(values["_pass_fields"]())
            del values["_pass_fields"]
        return values[name]

    def set(self, value):
        self.__dict__[name] = value

    return property(get, set)


class _CaptureMetadata(Metadata):
    """A FileReader's Metadata. The fields a capture states at its start are
    set at once; the _PASS_FIELDS are computed, by one pass over the file,
    the first time one of them is read. Otherwise a Metadata: equal to one
    with the same values, and shown, copied and pickled as one."""

    @classmethod
    def _deferred(cls, pass_fields, **known):
        self = cls.__new__(cls)
        self.__dict__.update(known, _pass_fields=pass_fields)
        return self

    def _values(self):
        return tuple(getattr(self, f.name) for f in dataclasses.fields(Metadata))

    def _plain(self):
        return Metadata(*self._values())

    def __eq__(self, other):
        if not isinstance(other, Metadata):
            return NotImplemented
        return self._plain() == (other._plain() if isinstance(other, _CaptureMetadata) else other)

    __hash__ = None  # as Metadata's (a mutable dataclass)

    def __repr__(self):
        return repr(self._plain())

    def __reduce__(self):
        return (Metadata, self._values())


for _name in _PASS_FIELDS:
    setattr(_CaptureMetadata, _name, _deferred_field(_name))
del _name


class _StackResolver:
    """Stacks as records give them, from a native capture reader (a
    CaptureFile or a CaptureStream: _stack_source()): the program's frames
    (heapscope's launch frames left out), cached per node, with qualified
    or plain function names. Needs _internal_prefix, _launcher and the
    three caches set."""

    def _is_internal(self, filename):
        return is_launch_frame(filename, self._internal_prefix)

    def _full_python_stack(self, node):
        return frame_tuples(self._stack_source().python_stack(node)) if node else []

    def _python_stack(self, node, plain=False):
        """The program's Python frames of *node*, innermost first, with
        qualified function names (plain ones, co_name, with *plain*)."""
        stacks = self._python_stacks.get(node)
        if stacks is None:
            full = self._full_python_stack(node)
            kept = full[:program_frame_count(full, self._is_internal, self._launcher)]
            stacks = self._python_stacks[node] = (kept, _plain_frames(kept))
        return stacks[plain]

    def _native_stack(self, node):
        stack = self._native_stacks.get(node)
        if stack is None:
            stack = frame_tuples(self._stack_source().native_stack(node)) if node else []
            self._native_stacks[node] = stack
        return stack

    def _hybrid_stack(self, python_node, native_node, plain=False):
        key = (python_node, native_node)
        stacks = self._hybrid_stacks.get(key)
        if stacks is not None:
            return stacks[plain]
        if not native_node:
            stacks = self._hybrid_stacks[key] = (self._python_stack(python_node),
                                                 self._python_stack(python_node, plain=True))
            return stacks[plain]
        frames = self._stack_source().hybrid_stack(python_node, native_node)
        stack = frame_tuples(frames)
        python = [not frame.is_native for frame in frames]
        full = self._full_python_stack(python_node)
        kept = len(self._python_stack(python_node))
        if kept < len(full):
            # Cut as the Python stack is cut: after the outermost Python
            # frame kept (what lies beyond is heapscope's and the
            # interpreter's start-up), or before the first Python frame.
            seen = 0
            for index, frame in enumerate(stack):
                if seen < len(full) and frame == full[seen]:
                    if seen == kept:
                        stack = stack[:index]
                        break
                    seen += 1
                    if seen == kept:
                        stack = stack[:index + 1]
                        break
        stacks = self._hybrid_stacks[key] = (stack, _plain_frames(stack, python))
        return stacks[plain]


class FileReader(_StackResolver):
    """Reads a capture file.

    Args:
        file_name: the capture (str or path-like).
        report_progress: show a progress bar on stderr during long passes.
        max_memory_records: the most memory snapshots get_memory_snapshots()
            gives (memray's argument and default): a capture with more gives
            every n-th, and the temporal records count snapshots the same way.

    Raises:
        OSError: the file cannot be opened.
        CaptureFileError: it is not a heapscope capture (a ValueError).
    """

    def __init__(self, file_name, *, report_progress=False, max_memory_records=10000):
        if isinstance(max_memory_records, bool) or not isinstance(max_memory_records, int):
            raise TypeError(f"max_memory_records must be an int, not {type(max_memory_records).__name__}")
        if max_memory_records < 1:
            raise ValueError(f"max_memory_records must be at least 1, got {max_memory_records}")
        self._max_memory_records = max_memory_records
        self._path = os.fspath(file_name)
        self._report_progress = bool(report_progress)
        # One bar for every pass; the engine also uses it for the passes a
        # stack query may start (it calls back into Python).
        self._bar = ProgressBar("Reading capture", enabled=self._report_progress)
        with self._progress("Reading capture") as progress:
            try:
                self._file = _heapscope.CaptureFile(self._path, progress=progress)
            except OSError as error:
                clear = type(error)(f"Could not open file {self._path}: {error.strerror or error}")
                clear.errno = error.errno
                raise clear from None
            except ValueError as error:
                message = _one_line(error)
                if not message.startswith(self._path):
                    message = f"{self._path}: {message}"
                raise CaptureFileError(message) from None
        raw = dict(self._file.metadata)  # what the capture wrote at its start: no pass over it
        self._python_stacks = {}  # node: (qualified, plain)
        self._native_stacks = {}
        self._hybrid_stacks = {}  # (python node, native node): (qualified, plain)
        self._closed = False
        package = raw.get("heapscope_package", "")
        self._internal_prefix = package + os.sep if package else None
        self._launcher = raw.get("heapscope_launcher") or None
        self._whole = _WholeCapture(self._file, self._bar)
        self._metadata = self._build_metadata(raw)

    # -- plumbing -----------------------------------------------------------------------------------------------

    def _progress(self, label):
        self._bar.restart(label)
        return self._bar

    def _stack_source(self):
        return self._file

    def _ensure_open(self):
        if self._closed:
            raise ValueError("Operation on a closed FileReader")

    def close(self):
        self._closed = True
        self._file = None

    @property
    def closed(self):
        return self._closed

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _allocator(self, value):
        kind = _ALLOCATOR_OF.get(value)
        if kind is None:
            raise CaptureFileError(f"{self._path}: unknown allocator ({value})")
        return kind

    def _thread_name(self, tid):
        info = self._whole.read().threads.get(tid)  # threads are announced all along the capture
        return info.name if info is not None else ""

    def is_heapscope_own(self, python_node):
        """True for a block that heapscope itself made: its stack is
        heapscope's frames alone (``heapscope run`` before or after the
        program), or its innermost frame is heapscope's (Tracker.__enter__
        and __exit__). Reports leave these out; the records keep them."""
        if not python_node or self._internal_prefix is None:
            return False
        full = self._full_python_stack(python_node)
        return bool(full) and (not self._python_stack(python_node) or full[0][1].startswith(self._internal_prefix))

    def location(self, python_node, native_node=0):
        """The innermost frame of the program's stack, (function, filename,
        lineno); the innermost native frame when no Python frame is known."""
        python = self._python_stack(python_node)
        if python:
            return python[0]
        native = self._native_stack(native_node) if native_node else []
        if native:
            return native[0]
        return ("<unknown>", "<unknown>", 0)

    def _build_metadata(self, raw):
        """The Metadata from what the capture wrote at its start; the fields
        that need the whole capture read (_PASS_FIELDS) follow when first read."""
        start = _to_float(raw.get("start_time"))
        # Memory records count from the engine's own start, a moment after
        # the Tracker's start_time.
        engine_start_ms = _to_int(raw.get("capture_start_unix_ms"))
        self._time_base_ms = engine_start_ms or int(start * 1000)
        self._time_base = self._time_base_ms / 1000
        try:
            file_format = FileFormat[str(raw.get("file_format", self._file.file_format))]
        except KeyError:
            file_format = FileFormat.ALL_ALLOCATIONS
        return _CaptureMetadata._deferred(
            functools.partial(_pass_fields, self._whole, start, self._time_base),
            start_time=_datetime(start),
            command_line=str(raw.get("command_line", "")),
            pid=_to_int(raw.get("pid")),
            python_allocator=str(raw.get("python_allocator", "unknown")),
            has_native_traces=bool(raw.get("has_native_traces", self._file.native_traces)),
            trace_python_allocators=bool(self._file.trace_python_allocators),
            file_format=file_format,
            python_version=str(raw.get("python_version", "")),
            memory_interval_ms=_to_int(raw.get("memory_interval_ms")),
            sampling=str(raw.get("sampling", "exact")),
        )

    # -- the public API -----------------------------------------------------------------------------------------

    @property
    def metadata(self):
        """The capture's Metadata. What the capture wrote at its start is read
        when the reader is made; the totals (total_allocations, peak_memory,
        end_time, complete, ...) take a pass over the whole file, made when
        the first of them is read (once: the reports share it)."""
        return self._metadata

    @property
    def path(self):
        return self._path

    @property
    def start_metadata(self):
        """Every entry the capture wrote at its start, as text: a dict of the
        Metadata's sources and any others (``host``, ``parent_pid``,
        ``dask_worker_name``, ``dask_worker_address``, ...)."""
        return {str(key): str(value) for key, value in self._file.metadata.items()}

    @property
    def is_aggregated(self):
        return self._metadata.file_format == FileFormat.AGGREGATED_ALLOCATIONS

    @property
    def pool_names(self):
        """{domain: name} of the resource pools (heapscope.pools) named in the
        capture: each pool's resources are blocks in its own domain."""
        names = {}
        # Pools made during the run are named where they were made: the whole capture is read.
        for key, value in self._whole.read().metadata.items():
            if key.startswith("pool."):
                try:
                    names[int(key[5:])] = str(value)
                except ValueError:
                    continue
        return names

    def _location_records(self, rows):
        allocator = self._allocator
        return [AllocationRecord(self, row.thread, 0, row.size, allocator(row.allocator), row.count, row.domain,
                                 row.python_node, row.native_node)
                for row in rows]

    def get_high_watermark_allocation_records(self, merge_threads=True):
        """Per location (stack, allocator, thread unless merged): the blocks
        outstanding when the heap was at its highest."""
        self._ensure_open()
        with self._progress("Finding the high-water mark") as progress:
            rows = self._file.high_watermark(merge_threads=bool(merge_threads), progress=progress)
        return self._location_records(rows)

    def get_leaked_allocation_records(self, merge_threads=True):
        """Per location: the blocks still outstanding when tracking stopped
        (or, for an unfinished capture, at the last event or checkpoint)."""
        self._ensure_open()
        with self._progress("Finding leaks") as progress:
            rows = self._file.leaks(merge_threads=bool(merge_threads), progress=progress)
        return self._location_records(rows)

    def get_temporary_allocation_records(self, merge_threads=True, threshold=1):
        """Per location: the temporary blocks, as memray defines them: freed
        by the thread that made them with at most *threshold* other
        allocations of that thread in between (0: freed before its next one)."""
        self._ensure_open()
        if isinstance(threshold, bool) or not isinstance(threshold, int):
            raise TypeError(f"threshold must be an int, not {type(threshold).__name__}")
        if threshold < 0:
            raise ValueError(f"threshold must be >= 0, got {threshold}")
        if self.is_aggregated:
            raise NotImplementedError("Can't find temporary allocations using a pre-aggregated capture file.")
        with self._progress("Finding temporary allocations") as progress:
            rows = self._file.temporary(threshold=threshold, merge_threads=bool(merge_threads), progress=progress)
        return self._location_records(rows)

    def _temporal(self, high_water_marks, merge_threads):
        self._ensure_open()
        if self.is_aggregated:
            raise NotImplementedError("Can't get allocation history using a pre-aggregated capture file.")
        with self._progress("Processing allocation records") as progress:
            rows, marks = self._file.temporal(high_water_marks=high_water_marks, merge_threads=bool(merge_threads),
                                              stride=self._memory_stride(), progress=progress)
        records = []
        allocator = self._allocator
        for row in rows:  # by location, then time
            key = (row.thread, row.allocator, row.domain, row.python_node, row.native_node)
            if not records or records[-1][0] != key:
                records.append((key, TemporalAllocationRecord(self, row.thread, allocator(row.allocator), row.domain,
                                                              row.python_node, row.native_node, [])))
            records[-1][1].intervals.append(Interval(row.allocated_before, row.deallocated_before, row.count,
                                                     row.size))
        return [record for _, record in records], list(marks)

    def get_temporal_allocation_records(self, merge_threads=True):
        """Per location, its blocks' lifetimes in snapshots (memray's):
        TemporalAllocationRecords whose intervals say how many blocks (and
        bytes) made before snapshot *a* were freed before snapshot *d* (None:
        never freed). Snapshots are the memory records get_memory_snapshots()
        gives. Blocks made and freed between the same two snapshots are left
        out. A mapping counts once, when its last piece goes."""
        return self._temporal(False, merge_threads)[0]

    def get_temporal_high_water_mark_allocation_records(self, merge_threads=True):
        """The heap's high-water mark between each two snapshots, and each
        location's share of them (memray's): (records, high_water_marks).
        ``high_water_marks[i]`` is the highest the heap was between snapshots
        i - 1 and i (the last: after the last snapshot); a record's interval
        [a, d) holds its share of the high-water marks of intervals a to
        d - 1, and index len(high_water_marks) stands for the end of the
        capture (what was leaked)."""
        return self._temporal(True, merge_threads)

    def get_allocation_records(self):
        """Every allocation and deallocation event, in order (an iterator that
        streams the file)."""
        self._ensure_open()
        if self.is_aggregated:
            raise NotImplementedError("Can't get all allocations from a pre-aggregated capture file.")
        allocator = self._allocator
        progress = self._progress("Reading allocations")
        try:
            for event in self._file.records(progress=progress):
                yield AllocationRecord(self, event.thread, event.address, event.size, allocator(event.allocator),
                                       event.count, event.domain, event.python_node, event.native_node)
        finally:
            progress.close()

    def get_object_lifetime_events(self, included_objects=None):
        """The Python objects made, and destroyed, while the capture ran with
        ``track_object_lifetimes=True`` (memray's): TrackedObjectRecords in
        order, an iterator that streams the file. With *included_objects*
        (e.g. ``Tracker.get_surviving_objects()``), only the events at
        those objects' addresses. An aggregated capture holds the objects
        alive at its end only, each as a creation.

        Raises:
            RuntimeError: the capture was not made with track_object_lifetimes=True.
        """
        self._ensure_open()
        if dict(self._file.metadata).get("track_object_lifetimes") != "1":
            raise RuntimeError("Object lifetime events are not available in this capture file. "
                               "The file was not generated with track_object_lifetimes=True.")
        addresses = None if included_objects is None else {id(obj) for obj in included_objects}
        return self._object_events(addresses)

    def _object_events(self, addresses):
        progress = self._progress("Reading object lifetimes")
        try:
            for row in self._file.objects(progress=progress):
                if addresses is None or row.address in addresses:
                    yield TrackedObjectRecord(self, row.thread, row.address, row.created, row.python_node,
                                              row.native_node)
        finally:
            progress.close()

    def _memory_stride(self):
        """Every how many memory records a snapshot is taken (memray's
        stride): 1 unless there are more than max_memory_records."""
        count = len(self._whole.read().memory)
        return -(-count // self._max_memory_records) if count > self._max_memory_records else 1

    def get_memory_snapshots(self):
        """Resident set size and traced heap at each memory interval, as
        memray gives them: [MemorySnapshot(time, rss, heap)], ``time`` an int
        of milliseconds since the epoch. At most max_memory_records: with
        more records, every n-th (the first always)."""
        self._ensure_open()
        base = self._time_base_ms
        return [MemorySnapshot(base + record.time_ms, record.rss, record.heap)
                for record in self._whole.read().memory[::self._memory_stride()]]

    def snapshot_at(self, t):
        """The heap as it stood at *t* (seconds since the capture started, or a
        datetime), as a ``heapscope.tracemalloc.Snapshot``: statistics() and
        compare_to() work on it. The snapshot's ``time`` attribute is the
        moment used (the last memory record at or before *t*). Blocks that
        heapscope itself made are left out, as ``heapscope top`` does."""
        from heapscope.tracemalloc import Snapshot

        self._ensure_open()
        if self.is_aggregated:
            raise NotImplementedError("Can't take a snapshot at a moment from a pre-aggregated capture file.")
        start = self._metadata.start_time
        if isinstance(t, datetime.datetime):
            if t.tzinfo is None:
                t = t.astimezone()
            seconds = (t - start).total_seconds()
        elif isinstance(t, (int, float)) and not isinstance(t, bool):
            seconds = float(t)
        else:
            raise TypeError(f"t must be seconds since the start (a number) or a datetime, not {type(t).__name__}")
        if not seconds >= 0:
            raise ValueError(f"t must not be before the capture started ({seconds:.3f} s)")
        # The engine's records count from its own start, a moment after start_time.
        engine_ms = max(int((start.timestamp() + seconds - self._time_base) * 1000), 0)
        live = self._file.blocks_at(engine_ms)
        frames_of = {}
        traces = []
        deepest = 1
        sampled = self._metadata.sampled
        for block in live.blocks:
            python_node = block.python_node
            entry = frames_of.get(python_node)
            if entry is None:
                if self.is_heapscope_own(python_node):
                    frames_of[python_node] = entry = ()  # heapscope's own blocks are not the program's
                    continue
                stack = self._python_stack(python_node)
                frames = tuple((filename, lineno) for _function, filename, lineno in stack) or (("<unknown>", 0),)
                entry = frames_of[python_node] = (frames, len(frames))
                deepest = max(deepest, len(frames))
            elif not entry:
                continue
            # A sampled block stands for `count` blocks (the fifth item of a
            # sampled trace, as heapscope.tracemalloc makes them).
            traces.append((block.domain, block.size, entry[0], entry[1], block.count) if sampled
                          else (block.domain, block.size, entry[0], entry[1]))
        snapshot = Snapshot(traces, deepest)
        snapshot.time = _later(_datetime(self._time_base), live.used_ms)
        return snapshot

    def stats(self, top=5):
        """Size histogram, counts per allocator function, and the *top*
        locations by bytes and by count allocated (every allocation counts,
        freed or not)."""
        self._ensure_open()
        if isinstance(top, bool) or not isinstance(top, int) or top < 1:
            raise ValueError(f"top must be an int >= 1, got {top!r}")
        if self.is_aggregated:
            raise NotImplementedError("Can't compute statistics from a pre-aggregated capture file.")
        with self._progress("Computing statistics") as progress:
            # Every stack, so that stacks ending at one line add up before ranking.
            raw = self._file.stats(top=1 << 30, progress=progress)
        by_bytes = collections.Counter()
        by_count = collections.Counter()
        for counter, stacks in ((by_bytes, raw["top_by_bytes"]), (by_count, raw["top_by_count"])):
            for stack in stacks:
                if not self.is_heapscope_own(stack.python_node):
                    counter[self.location(stack.python_node, stack.native_node)] += stack.value
        return CaptureStats(
            total_allocations=raw["total_allocations"],
            total_bytes=raw["total_bytes"],
            peak_memory=raw["peak_memory"],
            histogram=[(bucket.low, bucket.high, bucket.count) for bucket in raw["histogram"]],
            allocators=dict(raw["allocators"]),
            top_locations_by_bytes=_ranked(by_bytes, top),
            top_locations_by_count=_ranked(by_count, top),
        )

    def threads(self):
        """{tid: (os thread id, name)} for every thread seen."""
        self._ensure_open()
        return {tid: (info.os_tid, info.name) for tid, info in self._whole.read().threads.items()}


def _ranked(counter, top):
    return sorted(counter.items(), key=lambda item: (-item[1], item[0]))[:top]


def _one_line(error):
    text = str(error).strip() or type(error).__name__
    return " ".join(text.split())


class SocketReader(_StackResolver):
    """Reads a capture while its program runs (memray's SocketReader): the
    program serves it with ``Tracker(destination=SocketDestination(port))``
    (or ``heapscope run --live-port PORT``), and this connects to it::

        with heapscope.SocketReader(port=9000) as reader:
            while reader.is_active:
                records = list(reader.get_current_snapshot(merge_threads=True))

    ``__enter__`` connects (trying again until the program listens: Ctrl-C
    stops it) and waits for the capture's metadata; a thread then reads the
    capture as it arrives. One reader at a time, entered once at a time.
    """

    _CONNECT_RETRY_S = 0.1

    def __init__(self, port, address="127.0.0.1"):
        if isinstance(port, bool) or not isinstance(port, int):
            raise TypeError(f"port must be an int, not {type(port).__name__}")
        self._port = port
        self._address = address
        self._stream = None
        self._connection = None
        self._thread = None
        self._metadata = {}
        self._python_stacks, self._native_stacks, self._hybrid_stacks = {}, {}, {}
        self._internal_prefix = self._launcher = None

    def _stack_source(self):
        return self._stream

    def __enter__(self):
        import socket
        import threading
        import time

        if self._thread is not None:
            raise ValueError("Can not enter the context of a SocketReader object more than once, at the same time.")
        from heapscope.tracker import LIVE_HELLO

        while True:
            try:
                connection = socket.create_connection((self._address, self._port))
                break
            except ConnectionRefusedError:
                time.sleep(self._CONNECT_RETRY_S)
        self._stream = _heapscope.CaptureStream()
        self._python_stacks, self._native_stacks, self._hybrid_stacks = {}, {}, {}
        try:
            connection.sendall(LIVE_HELLO)  # a capture's port streams only to a client that greets it
            while "pid" not in self._stream.metadata:  # the opening chunk: what the program says of itself
                data = connection.recv(1 << 16)
                if not data:
                    raise OSError(f"the capture on {self._address}:{self._port} ended before its start")
                self._stream.feed(data)
        except BaseException:
            connection.close()
            raise
        self._metadata = dict(self._stream.metadata)
        package = self._metadata.get("heapscope_package", "")
        self._internal_prefix = package + os.sep if package else None
        self._launcher = self._metadata.get("heapscope_launcher") or None
        self._connection = connection
        self._thread = threading.Thread(target=self._receive, name="heapscope-socket-reader", daemon=True)
        self._thread.start()
        return self

    def _receive(self):
        import socket

        try:
            while True:
                data = self._connection.recv(1 << 16)
                if not data:
                    return
                self._stream.feed(data)
                if self._stream.ended or self._stream.damage is not None:
                    return
        except (OSError, socket.timeout):
            return

    def __exit__(self, exc_type, exc_value, traceback):
        import socket

        connection, thread = self._connection, self._thread
        if connection is not None:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            connection.close()
        if thread is not None:
            thread.join()
        self._connection = self._thread = None
        return False

    @property
    def is_active(self):
        """True while the capture is still arriving."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def command_line(self):
        return self._metadata.get("command_line") if self._metadata else None

    @property
    def pid(self):
        return _to_int(self._metadata["pid"]) if self._metadata else None

    @property
    def has_native_traces(self):
        return self._metadata.get("native_traces") == "1"

    def _thread_name(self, tid):
        info = self._stream.threads().get(tid) if self._stream is not None else None
        return info.name if info is not None else ""

    def get_current_snapshot(self, *, merge_threads):
        """The blocks outstanding now, per location (stack, allocator, thread
        unless merged), as records (AllocationRecord, memray's)."""
        if self._stream is None:
            return
        for row in self._stream.live(merge_threads=bool(merge_threads)):
            yield AllocationRecord(self, row.thread, 0, row.size, AllocatorType(row.allocator), row.count,
                                   row.domain, row.python_node, row.native_node)


def dump_all_records(file_name, out=None):
    """Prints every record of a capture, as the file holds it (memray's
    dump_all_records; ``heapscope parse``): the file header, then one line
    per record, ``TYPE name=value ...``. *out*: a text stream (sys.stdout)."""
    import sys

    path = os.fspath(file_name)
    if not os.path.exists(path):
        raise OSError(f"No such file: {path}")
    with FileReader(path) as reader:  # CaptureFileError for a file that is not a capture
        write_records(reader, sys.stdout if out is None else out)


def write_records(reader, out):
    """dump_all_records for an open FileReader."""
    reader._ensure_open()
    print(reader._file.header_line, file=out)
    for line in reader._file.dump():
        print(line, file=out)
