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
* ``get_memory_snapshots()`` gives ``time`` as a datetime.
* ``allocator`` is an :class:`AllocatorType` (memray's names and values).
* Stack traces leave out heapscope's own frames (``heapscope run``'s, at the
  outer end of the main thread's stacks) also when *max_stacks* is given.
"""

import collections
import dataclasses
import datetime
import enum
import functools
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from heapscope import _heapscope
from heapscope.reports.progress import ProgressBar
from heapscope.tracker import FileFormat

__all__ = ["FileReader", "AllocationRecord", "AllocatorType", "CaptureFileError", "Metadata", "MemorySnapshot",
           "CaptureStats"]


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
MemorySnapshot.__doc__ = "Memory at one moment: time (datetime), rss and heap (bytes)."

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


class AllocationRecord:
    """One allocation (from ``get_allocation_records``) or one location's
    total (from the high-water mark, leaks and temporary reports)."""

    __slots__ = ("_reader", "tid", "address", "size", "allocator", "n_allocations", "domain", "_python_node",
                 "_native_node")

    def __init__(self, reader, tid, address, size, allocator, n_allocations, domain, python_node, native_node):
        self._reader = reader
        self.tid = tid
        self.address = address
        self.size = size
        self.allocator = allocator
        self.n_allocations = n_allocations
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
    def thread_name(self):
        if self.tid == 0:
            return "merged thread"
        return self._reader._thread_name(self.tid)

    def _key(self):
        return (self.tid, self.address, self.size, int(self.allocator), self.n_allocations, self.domain,
                self._python_node, self._native_node)

    def __eq__(self, other):
        if isinstance(other, AllocationRecord):
            return self._key() == other._key()
        return NotImplemented

    def __hash__(self):
        return hash(self._key())

    def _check_allocation(self):
        if self.allocator in _DEALLOCATORS:
            raise NotImplementedError("Stack traces for deallocations aren't captured.")

    def stack_trace(self, max_stacks=None):
        """The Python stack, innermost frame first: [(function, filename, lineno)]."""
        self._check_allocation()
        return self._reader._python_stack(self._python_node)[:_check_max_stacks(max_stacks)]

    def native_stack_trace(self, max_stacks=None):
        """The native stack (needs native_traces), innermost first; [] without it."""
        self._check_allocation()
        return self._reader._native_stack(self._native_node)[:_check_max_stacks(max_stacks)]

    def hybrid_stack_trace(self, max_stacks=None):
        """Native and Python frames merged into one stack, innermost first:
        each interpreter frame evaluating Python code is replaced by the
        Python frames it ran. Without native traces: the Python stack."""
        self._check_allocation()
        return self._reader._hybrid_stack(self._python_node, self._native_node)[:_check_max_stacks(max_stacks)]

    def __repr__(self):
        return (f"AllocationRecord<tid={self.tid:#x}, address={self.address:#x}, size={self.size}, "
                f"allocator={self.allocator.name}, allocations={self.n_allocations}>")


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
    try:
        return float(text)
    except (TypeError, ValueError):
        return default


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


class FileReader:
    """Reads a capture file.

    Args:
        file_name: the capture (str or path-like).
        report_progress: show a progress bar on stderr during long passes.

    Raises:
        OSError: the file cannot be opened.
        CaptureFileError: it is not a heapscope capture (a ValueError).
    """

    def __init__(self, file_name, *, report_progress=False):
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
        self._python_stacks = {}
        self._native_stacks = {}
        self._hybrid_stacks = {}
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

    def _is_internal(self, filename):
        return is_launch_frame(filename, self._internal_prefix)

    def _full_python_stack(self, node):
        return frame_tuples(self._file.python_stack(node)) if node else []

    def _python_stack(self, node):
        stack = self._python_stacks.get(node)
        if stack is None:
            full = self._full_python_stack(node)
            kept = program_frame_count(full, self._is_internal, self._launcher)
            stack = self._python_stacks[node] = full[:kept]
        return stack

    def _native_stack(self, node):
        stack = self._native_stacks.get(node)
        if stack is None:
            stack = frame_tuples(self._file.native_stack(node)) if node else []
            self._native_stacks[node] = stack
        return stack

    def _hybrid_stack(self, python_node, native_node):
        key = (python_node, native_node)
        stack = self._hybrid_stacks.get(key)
        if stack is not None:
            return stack
        if not native_node:
            stack = self._python_stack(python_node)
        else:
            stack = frame_tuples(self._file.hybrid_stack(python_node, native_node))
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
        self._hybrid_stacks[key] = stack
        return stack

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
        self._time_base = engine_start_ms / 1000 if engine_start_ms else start
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

    def get_memory_snapshots(self):
        """Resident set size and traced heap at each memory interval:
        [MemorySnapshot(time: datetime, rss, heap)]."""
        self._ensure_open()
        base = _datetime(self._time_base)
        return [MemorySnapshot(_later(base, record.time_ms), record.rss, record.heap)
                for record in self._file.memory_snapshots()]

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
