"""heapprof 1.0.2's Reader: a run read back. Its digest (live bytes by
stack every timeInterval seconds) is built by one C++ pass over
``filebase.hpd`` (``_heapscope.capture_timeline``) when makeDigest() is
called (heapprof.read() calls it the first time) and kept in
``filebase.hpc``.

Trace indices: 0 is the "other" bucket (stacks merged at a moment for
being under the precision fraction of that moment's total); ``trace(0)`` is
None, as in heapprof. Real traces are numbered from 1 in the order the
digest first meets them (the largest stack of the first snapshot first).
A trace whose blocks were made with no Python frame on the stack (a thread
that never ran Python code) is the empty trace ``[]``.
"""

import linecache
import math
import numbers
import os
import sys
import warnings
from typing import Dict, List, NamedTuple, Optional, Sequence, TextIO, Tuple, Union

from heapscope.heapprof._files import DamagedDigest, HeapprofFileError, read_digest, read_metadata, write_digest
from heapscope.heapprof.flow_graph import FlowGraph
from heapscope.heapprof.types import HeapTrace, RawTrace, RawTraceLine, Snapshot, TraceLine
from heapscope.reader import frame_tuples, is_launch_frame, program_frame_count
from heapscope.reports.progress import ProgressBar

OTHER_TRACE = 0


class DigestWarning(UserWarning):
    """A digest was found stale or damaged (and is not used), or could not
    be saved, or the capture it summarises was cut short or damaged."""


def _check_interval(timeInterval):
    if isinstance(timeInterval, bool) or not isinstance(timeInterval, numbers.Real):
        raise TypeError(f"timeInterval must be a number of seconds, not {type(timeInterval).__name__}")
    seconds = float(timeInterval)
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"timeInterval must be a positive number of seconds, got {timeInterval!r}")
    interval_ms = round(seconds * 1000)
    if interval_ms < 1:
        raise ValueError(f"timeInterval must be at least 0.001 s (the digest counts whole milliseconds), "
                         f"got {timeInterval!r}")
    return seconds, interval_ms


def _check_precision(precision):
    if isinstance(precision, bool) or not isinstance(precision, numbers.Real):
        raise TypeError(f"precision must be a fraction (float), not {type(precision).__name__}")
    value = float(precision)
    if not 0.0 <= value < 1.0:  # NaN fails too
        raise ValueError(f"precision must be in [0, 1), got {precision!r}")
    return value


def _source_stamp(path):
    info = os.stat(path)
    return {"size": info.st_size, "mtime_ns": info.st_mtime_ns}


def _capture_start(metadata):
    """The capture's time origin, in seconds since the epoch (memory records count from it)."""
    try:
        return int(metadata["capture_start_unix_ms"]) / 1000
    except (KeyError, ValueError):
        try:
            return float(metadata["start_time"])
        except (KeyError, ValueError):
            return None


def build_digest(data_path, interval_ms, time_interval, precision, fallback_start, progress=None):
    """The digest of *data_path* as a dict (what .hpc holds), one C++ pass."""
    from heapscope import _heapscope

    stamp = _source_stamp(data_path)
    try:
        raw = _heapscope.capture_timeline(data_path, interval_ms, precision, progress)
    except ValueError as error:
        raise HeapprofFileError(str(error) if str(error).startswith(data_path) else f"{data_path}: {error}") from None
    metadata = raw["metadata"]
    package = metadata.get("heapscope_package", "")
    prefix = package + os.sep if package else None
    launcher = metadata.get("heapscope_launcher") or None

    def is_internal(filename):
        return is_launch_frame(filename, prefix)

    # One trace index per distinct stack as shown (heapscope's launch frames
    # cut off, so stacks that differ only there are one).
    index_of_key, index_of_node, traces = {}, {}, []
    for node, stack in raw["stacks"].items():
        frames = frame_tuples(stack)
        kept = program_frame_count(frames, is_internal, launcher)
        shown = frames[:kept] or frames  # heapscope's own start-up blocks keep their frames
        index_of_node[node] = tuple(reversed(shown))
    snapshots = []
    for snapshot in raw["snapshots"]:
        usage = {}
        for stack in snapshot.stacks:
            key = index_of_node[stack.python_node]
            index = index_of_key.get(key)
            if index is None:
                traces.append([list(frame) for frame in key])
                index = index_of_key[key] = len(traces)
            usage[index] = usage.get(index, 0) + stack.value
        # The digest file's own form (what .hpc holds): positional lists.
        snapshots.append([snapshot.moment_ms, snapshot.record_ms,
                          sorted(usage.items(), key=lambda item: (-item[1], item[0])), snapshot.other, snapshot.total])
    start = _capture_start(metadata)
    return {
        "time_interval": time_interval,
        "interval_ms": interval_ms,
        "precision": precision,
        "initial_time": start if start is not None else fallback_start,
        "source": stamp,
        "complete": bool(raw["complete"]),
        "damage": raw["damage"],
        "records": raw["records"],
        "last_record_ms": raw["last_record_ms"],
        "sampling": metadata.get("sampling", "exact"),
        "traces": traces,
        "snapshots": snapshots,
    }


def _usable_stderr():
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _status(text):
    """A line of makeDigest(verbose=True) on stderr (nothing if stderr is closed)."""
    try:
        print(text, file=sys.stderr, flush=True)
    except (AttributeError, OSError, ValueError):
        pass


class Reader:
    """A heapprof run read back: ``Reader(filebase)`` reads filebase.hpm and
    the digest filebase.hpc if there is one (hasDigest()); makeDigest()
    builds it from filebase.hpd. A context manager: ``close()`` at the end.

    A digest that no longer matches ``filebase.hpd`` (its size or
    modification time changed: stale) or is damaged is not used, with a
    :class:`DigestWarning`. A file at ``filebase.hpc`` that is not a
    heapscope digest, or a newer one, is refused (HeapprofFileError) and
    never overwritten.
    """

    def __init__(self, filebase: str) -> None:
        base = os.fspath(filebase)
        if not isinstance(base, str):
            base = os.fsdecode(base)
        self.filebase = base
        self._hpm = read_metadata(base + ".hpm")
        self._closed = False
        self._unload()
        self._open_digest()

    # -- the digest ------------------------------------------------------------------------------------------------

    def hasDigest(self) -> bool:
        """True if this Reader has a digest; if not, makeDigest() builds one."""
        return self._digest is not None

    def makeDigest(self, timeInterval: float = 60, precision: float = 0.01, verbose: bool = False) -> None:
        """Builds the digest from filebase.hpd and saves it as filebase.hpc,
        replacing the one this Reader had, if any.

        Args:
            timeInterval: seconds between successive snapshots (> 0; counted
                in whole milliseconds).
            precision: at each snapshot, the smallest stacks adding up to at
                most this fraction of that moment's total go into the "other"
                bucket (trace index 0). In [0, 1); 0 merges nothing.
            verbose: status lines and a progress bar on stderr.

        If the pass is interrupted (Ctrl-C) or fails, the Reader is left with
        no digest and filebase.hpc as it was.
        """
        self._check_open()
        time_interval, interval_ms = _check_interval(timeInterval)
        precision = _check_precision(precision)
        data_path, digest_path = self.filebase + ".hpd", self.filebase + ".hpc"
        _refuse_foreign_digest(digest_path)
        self._unload()
        if verbose:
            _status(f"Digesting {data_path}: {_size_text(data_path)}")
        with ProgressBar(f"Digesting {os.path.basename(data_path)}", enabled=verbose and _usable_stderr()) as bar:
            digest = build_digest(data_path, interval_ms, time_interval, precision,
                                  float(self._hpm["start_time"]), bar)
        if digest["damage"]:
            warnings.warn(f"{data_path} is damaged ({digest['damage']}); the digest covers the part before the "
                          f"damage", DigestWarning, stacklevel=2)
        try:
            write_digest(digest_path, digest)
            saved = f"written to {digest_path}"
        except OSError as error:
            warnings.warn(f"could not save the digest to {digest_path} ({error.strerror or error}); "
                          f"it is kept in memory only", DigestWarning, stacklevel=2)
            saved = "kept in memory"
        self._load(digest)
        if verbose:
            _status(f"Digest of {data_path}: {len(self._snapshots)} snapshots {time_interval:g} s apart, "
                    f"{len(digest['traces'])} traces; {saved}")

    def _open_digest(self):
        digest_path, data_path = self.filebase + ".hpc", self.filebase + ".hpd"
        try:
            digest = read_digest(digest_path)
        except FileNotFoundError:
            return
        except DamagedDigest as damage:
            warnings.warn(f"{damage}; not used (makeDigest() builds it again)", DigestWarning, stacklevel=3)
            return
        if os.path.exists(data_path) and _source_stamp(data_path) != digest["source"]:
            warnings.warn(f"{digest_path} is stale ({data_path} changed since it was made); not used "
                          f"(makeDigest() builds it again)", DigestWarning, stacklevel=3)
            return
        self._load(digest)

    def _load(self, digest):
        self._digest = digest
        self._snapshots = [
            Snapshot(moment_ms / 1000, {**dict((int(i), int(s)) for i, s in usage),
                                        **({OTHER_TRACE: int(other)} if other else {})})
            for moment_ms, _record_ms, usage, other, _total in digest["snapshots"]
        ]

    def _unload(self):
        self._digest = None
        self._snapshots: List[Snapshot] = []
        self._traces: Dict[int, HeapTrace] = {}
        self._raw: Dict[int, Tuple[RawTraceLine, ...]] = {}

    def _check_open(self):
        if self._closed:
            raise ValueError(f"the Reader of {self.filebase} is closed")

    def _require_digest(self):
        """heapprof's accessors of the digest fail with an AssertionError before it exists; so do these."""
        self._check_open()
        if self._digest is None:
            raise AssertionError(f"{self.filebase} has no digest yet: call makeDigest() first "
                                 f"(heapprof.read() does)")
        return self._digest

    def close(self) -> None:
        """Closes the Reader: it is not usable afterwards."""
        self._closed = True
        self._unload()

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    # -- heapprof's high-level API ---------------------------------------------------------------------------------

    def initialTime(self) -> float:
        """When the capture started, in seconds since the epoch: relativeTime
        0. (Before a digest exists: when start() was called, a few
        milliseconds earlier.)"""
        self._check_open()
        if self._digest is not None:
            return float(self._digest["initial_time"])
        return float(self._hpm["start_time"])

    def finalTime(self) -> float:
        """The time of the last snapshot, in seconds since the epoch."""
        return self.initialTime() + self.elapsedTime()

    def elapsedTime(self) -> float:
        """Seconds from the start to the last snapshot (0 if there is none)."""
        self._require_digest()
        return self._snapshots[-1].relativeTime if self._snapshots else 0.0

    def samplingRate(self) -> Dict[int, float]:
        """The samplingRate given to start(): {size upper bound: probability}."""
        self._check_open()
        return dict(self._hpm["sampling_rate"])

    def snapshotInterval(self) -> float:
        """Seconds between snapshots: the timeInterval the digest was built with."""
        return float(self._require_digest()["time_interval"])

    def _frames(self, traceindex):
        """Trace *traceindex* as (function, filename, lineno) frames, outermost
        first; None for "other", an unknown index, or no digest."""
        if isinstance(traceindex, bool) or not isinstance(traceindex, numbers.Integral):
            raise TypeError(f"traceindex must be an int, not {type(traceindex).__name__}")
        self._check_open()
        traces = self._digest["traces"] if self._digest is not None else ()
        index = int(traceindex)
        return traces[index - 1] if 1 <= index <= len(traces) else None

    def trace(self, traceindex: int) -> Optional[HeapTrace]:
        """The stack of a trace index, outermost frame first, each line with
        its source text; None for the "other" bucket (0), an index the
        digest does not have, and before a digest exists."""
        frames = self._frames(traceindex)
        if frames is None:
            return None
        trace = self._traces.get(int(traceindex))
        if trace is None:
            trace = self._traces[int(traceindex)] = [
                TraceLine(filename, lineno, linecache.getline(filename, lineno).strip() if lineno > 0 else "")
                for _function, filename, lineno in frames]
        return list(trace)

    def rawTrace(self, traceindex: int) -> Optional[RawTrace]:
        """Like trace(), without the source text (so cheaper)."""
        raw = self._raw_trace(traceindex)
        return None if raw is None else list(raw)

    def _raw_trace(self, traceindex):
        """rawTrace as a tuple, made once per index (flow graphs and time plots ask for every trace of every
        snapshot)."""
        raw = self._raw.get(traceindex) if type(traceindex) is int else None
        if raw is None:
            frames = self._frames(traceindex)
            if frames is None:
                return None
            raw = self._raw[int(traceindex)] = tuple(RawTraceLine(filename, lineno)
                                                     for _function, filename, lineno in frames)
        return raw

    def snapshots(self) -> Sequence[Snapshot]:
        """Every snapshot, at relativeTime 0, snapshotInterval(), 2 x snapshotInterval(), ..."""
        self._require_digest()
        return list(self._snapshots)

    def snapshotAt(self, relativeTime: float) -> Snapshot:
        """The snapshot at or before *relativeTime* (seconds since the
        start), clamped to the first and the last."""
        return self._snapshots[self._index_at(relativeTime)]

    def _index_at(self, relativeTime):
        digest = self._require_digest()
        if isinstance(relativeTime, bool) or not isinstance(relativeTime, numbers.Real):
            raise TypeError(f"relativeTime must be a number of seconds, not {type(relativeTime).__name__}")
        if math.isnan(relativeTime):
            raise ValueError("relativeTime must be a number of seconds, not NaN")
        if not self._snapshots:
            raise IndexError(f"the digest of {self.filebase}.hpd has no snapshot (the capture ended before its "
                             f"first memory record)")
        if relativeTime <= 0:
            return 0
        if math.isinf(relativeTime):
            return len(self._snapshots) - 1
        # Whole milliseconds, so that 0.3 / 0.1 is moment 3, not 2.999...
        index = math.floor(relativeTime * 1000 + 1e-6) // int(digest["interval_ms"])
        return min(index, len(self._snapshots) - 1)

    def fastGetUsage(self, snapshot: Snapshot, lines: Tuple[RawTraceLine, ...],
                     cumulative: bool = True) -> Tuple[Tuple[int, ...], int]:
        """The bytes of *snapshot* at each of *lines* (RawTraceLines, or
        ``"filename:lineno"``), and its total: ``((bytes at lines[0], ...),
        total)``. *cumulative*: the traces that contain the line (it or
        what it called allocated them); else only those that end at it. The
        "other" bucket counts in the total only."""
        from heapscope.reports.timeplot import usage_at_lines

        lines = tuple(RawTraceLine.parse(line) for line in lines)
        return usage_at_lines(((self._raw_trace(index), size) for index, size in snapshot.usage.items()), lines,
                              bool(cumulative))

    # -- time plots ------------------------------------------------------------------------------------------------

    class TimePlot(NamedTuple):
        """timePlot()'s data: lists parallel to ``times``, except ``labels``, parallel to ``lines``."""

        times: List[float]  # seconds since the start
        totalUsage: List[int]  # total bytes at each time
        lines: List[List[int]]  # per requested line: its cumulative bytes at each time
        labels: List[str]

        def pyplot(self, scale: int = 1 << 20) -> None:
            """Shows the plot with matplotlib's pyplot: the total over time;
            with lines, also each line's bytes and its share of the total.
            Byte counts are divided by *scale* (1 << 20: MiB)."""
            from heapscope.reports.timeplot import show_time_plot

            show_time_plot(self.times, self.totalUsage, self.lines, self.labels, scale)

    def timePlot(self, lines: Optional[Dict[str, Union[str, RawTraceLine]]] = None) -> "Reader.TimePlot":
        """The total bytes over time and, for *lines* ({label: RawTraceLine or
        ``"filename:lineno"``}), the cumulative bytes at each line (see
        fastGetUsage), labels sorted. ``.pyplot()`` draws it."""
        lines = lines or {}
        labels = sorted(lines)
        wanted = tuple(RawTraceLine.parse(lines[label]) for label in labels)
        times, totals, values = [], [], [[] for _ in labels]
        for snapshot in self.snapshots():
            usage, total = self.fastGetUsage(snapshot, wanted)
            times.append(snapshot.relativeTime)
            totals.append(total)
            for column, value in zip(values, usage):
                column.append(value)
        return self.TimePlot(times, totals, values, labels)

    # -- flow graphs -----------------------------------------------------------------------------------------------

    def flowGraph(self, snapshot: Snapshot) -> FlowGraph:
        """*snapshot*'s FlowGraph: per line of code its local and cumulative
        bytes, and the bytes along each call (see FlowGraph)."""
        from heapscope.reports.flowgraph import flow_graph

        return FlowGraph(*flow_graph((self._raw_trace(index), size) for index, size in snapshot.usage.items()))

    def flowGraphAt(self, relativeTime: float) -> FlowGraph:
        return self.flowGraph(self.snapshotAt(relativeTime))

    def compareFlowGraphs(self, dotFile: str, *relativeTimes: float, **kwargs) -> None:
        """Writes to *dotFile* one Graphviz graph of the flow graphs at
        *relativeTimes* side by side (FlowGraph.compare, which takes the
        keyword arguments)."""
        FlowGraph.compare(dotFile, *(self.flowGraphAt(t) for t in relativeTimes), **kwargs)

    # -- flame graphs ----------------------------------------------------------------------------------------------

    def flameGraph(self, snapshot: Snapshot, output: TextIO) -> None:
        """Writes *snapshot* to *output* as collapsed stacks (Brendan Gregg's
        format, for flamegraph.pl and speedscope.app): one line per trace,
        its frames ``filename:lineno`` outermost first joined by ``;``, a
        space and its bytes; the "other" bucket last as ``OTHER``; blocks
        with no Python frame as ``[no Python frame]``. ``%``, ``;`` and line
        breaks in file names are %-escaped. (heapscope's collapsed writer,
        heapscope.reports.exports, on the snapshot's Profile.)"""
        from heapscope.reports.exports import collapsed_text

        profile, options = self._collapsed(snapshot)
        output.write(collapsed_text(profile, **options))

    def flameGraphAt(self, relativeTime: float, output: TextIO) -> None:
        self.flameGraph(self.snapshotAt(relativeTime), output)

    def writeFlameGraph(self, filename: str, when: Union[float, Snapshot]) -> None:
        """flameGraph of *when* (a Snapshot, or a relativeTime) written to *filename* (UTF-8)."""
        from heapscope.reports.exports import write_collapsed

        snapshot = when if isinstance(when, Snapshot) else self.snapshotAt(when)
        profile, options = self._collapsed(snapshot)
        write_collapsed(profile, filename, **options)

    def _collapsed(self, snapshot):
        """*snapshot*'s Profile, and the collapsed writer's options that give heapprof's format."""
        from heapscope.reports.adapters_heapprof import HEAPPROF_COLLAPSED, profile_from_heapprof_snapshot

        self._require_digest()
        return profile_from_heapprof_snapshot(self, snapshot), HEAPPROF_COLLAPSED

    # -- heapscope's additions -------------------------------------------------------------------------------------

    def snapshotTakenAt(self, relativeTime: float) -> float:
        """The capture time (seconds since the start) of the memory record
        the snapshot at *relativeTime* was taken at: the first one at or
        after its moment, at most one memory interval (10 ms) later."""
        return self._digest["snapshots"][self._index_at(relativeTime)][1] / 1000

    @property
    def dataComplete(self) -> bool:
        """The capture was stopped cleanly (False: the process was killed, or the file is damaged)."""
        return bool(self._require_digest()["complete"])

    @property
    def dataDamage(self) -> Optional[str]:
        """What was wrong with filebase.hpd and where reading stopped, or None."""
        return self._require_digest()["damage"]

    def samplingApplied(self) -> str:
        """How the capture was sampled: "exact", or the engine's description of its sampling."""
        self._check_open()
        if self._digest is not None:
            return str(self._digest["sampling"])
        return str(self._hpm.get("sampling_applied", "exact"))

    def writeTimePlot(self, path, lines: Optional[Dict[str, Union[str, RawTraceLine]]] = None, top: int = 5,
                      scale: float = 1 << 20) -> None:
        """A PNG of timePlot(): the total over time, and the cumulative bytes
        at *lines* ({label: RawTraceLine or "filename:lineno"}) or, without
        lines, at the *top* traces that peak highest (0: the total only),
        with their shares of the total. heapscope.reports' time plot
        presenter on the run's Profile over time; needs matplotlib."""
        from heapscope.reports import presenters
        from heapscope.reports.adapters_heapprof import temporal_profile_from_heapprof

        self._require_digest()
        wanted = {label: tuple(RawTraceLine.parse(line)) for label, line in (lines or {}).items()}
        presenters.write(temporal_profile_from_heapprof(self), "timeplot", os.fspath(path), lines=wanted, top=top,
                         scale=scale)


def _size_text(path):
    from heapscope.reports.text import format_bytes

    try:
        return format_bytes(os.path.getsize(path))
    except OSError:
        return "cannot be read"


def _refuse_foreign_digest(path):
    """HeapprofFileError if *path* holds something other than a heapscope digest (it is never overwritten)."""
    from heapscope.heapprof._files import HPC_MAGIC

    try:
        with open(path, "rb") as source:
            head = source.read(len(HPC_MAGIC))
    except OSError:
        return
    if head and not HPC_MAGIC.startswith(head):
        raise HeapprofFileError(f"{path}: not a heapscope digest; move it away to make one")
