"""heapprof's Reader: the digest of a run (live bytes by stack every
timeInterval seconds), built by one C++ pass over ``filebase.hpd``
(``_heapscope.capture_timeline``) the first time it is read and kept in
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
from typing import Dict, List, NamedTuple, Optional, TextIO, Tuple

from heapscope.heapprof._files import DamagedDigest, HeapprofFileError, read_digest, read_metadata, write_digest
from heapscope.reader import frame_tuples, is_launch_frame, program_frame_count
from heapscope.reports.progress import ProgressBar

OTHER_TRACE = 0


class DigestWarning(UserWarning):
    """A digest was found stale or damaged and built again, or could not be
    saved, or the capture it summarises was cut short or damaged."""


class TraceLine(NamedTuple):
    """One frame of a trace: heapprof's fields, and the function's name."""

    filename: str
    lineno: int
    fileline: str  # the source line, stripped ("" if it cannot be read)
    function: str = ""


HeapTrace = List[TraceLine]  # outermost frame first, as heapprof's


class Snapshot(NamedTuple):
    """The live heap at one moment of the digest."""

    relativeTime: float  # seconds since the capture started (a multiple of snapshotInterval())
    usage: Dict[int, int]  # trace index -> live bytes; OTHER_TRACE (0) holds the merged stacks

    def totalUsage(self) -> int:
        return sum(self.usage.values())


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


class Reader:
    """A heapprof run read back (heapscope.heapprof.read() makes one).

    The digest is built the first time (*timeInterval*, *precision* apply
    then only) and kept in ``filebase.hpc``. An existing digest is used as
    it is, unless it no longer matches ``filebase.hpd`` (size or
    modification time changed: stale) or is damaged: then it is built again
    with the arguments given, with a :class:`DigestWarning`. A file at
    ``filebase.hpc`` that is not a heapscope digest, or a newer one, is
    never overwritten: HeapprofFileError.
    """

    def __init__(self, filebase, timeInterval=60, precision=0.01):
        base = os.fspath(filebase)
        if not isinstance(base, str):
            base = os.fsdecode(base)
        time_interval, interval_ms = _check_interval(timeInterval)
        precision = _check_precision(precision)
        self.filebase = base
        self._hpm = read_metadata(base + ".hpm")
        data_path, digest_path = base + ".hpd", base + ".hpc"
        digest = None
        try:
            digest = read_digest(digest_path)
        except FileNotFoundError:
            pass
        except DamagedDigest as damage:
            warnings.warn(f"{damage}; building it again", DigestWarning, stacklevel=3)
        if digest is not None and os.path.exists(data_path) and _source_stamp(data_path) != digest["source"]:
            warnings.warn(f"{digest_path} is stale ({data_path} changed since it was made); building it again "
                          f"with timeInterval={timeInterval!r}, precision={precision!r}", DigestWarning,
                          stacklevel=3)
            digest = None
        if digest is None:
            digest = self._build(data_path, digest_path, interval_ms, time_interval, precision)
        self._digest = digest
        self._traces: Dict[int, HeapTrace] = {}
        self._snapshots = [
            Snapshot(moment_ms / 1000, {**dict((int(i), int(s)) for i, s in usage),
                                        **({OTHER_TRACE: int(other)} if other else {})})
            for moment_ms, _record_ms, usage, other, _total in digest["snapshots"]
        ]

    def _build(self, data_path, digest_path, interval_ms, time_interval, precision):
        label = f"Building the digest of {os.path.basename(data_path)}"
        try:
            enabled = sys.stderr is not None and sys.stderr.isatty()
        except (AttributeError, ValueError):
            enabled = False
        with ProgressBar(label, enabled=enabled) as bar:
            digest = build_digest(data_path, interval_ms, time_interval, precision,
                                  float(self._hpm["start_time"]), bar)
        if digest["damage"]:
            warnings.warn(f"{data_path} is damaged ({digest['damage']}); the digest covers the part before the "
                          f"damage", DigestWarning, stacklevel=4)
        try:
            write_digest(digest_path, digest)
        except OSError as error:
            warnings.warn(f"could not save the digest to {digest_path} ({error.strerror or error}); "
                          f"it is kept in memory only", DigestWarning, stacklevel=4)
        return digest

    # -- heapprof's names ------------------------------------------------------------------------------------------

    def initialTime(self) -> float:
        """When the capture started, in seconds since the epoch (relativeTime 0)."""
        return float(self._digest["initial_time"])

    def elapsedTime(self) -> float:
        """Seconds from the start to the last snapshot (0 if there is none)."""
        return self._snapshots[-1].relativeTime if self._snapshots else 0.0

    def finalTime(self) -> float:
        """The time of the last snapshot, in seconds since the epoch."""
        return self.initialTime() + self.elapsedTime()

    def samplingRate(self) -> Dict[int, float]:
        """The samplingRate given to start(): {size upper bound: probability}."""
        return dict(self._hpm["sampling_rate"])

    def snapshotInterval(self) -> float:
        """Seconds between snapshots: the timeInterval the digest was built with."""
        return float(self._digest["time_interval"])

    def trace(self, traceindex: int) -> Optional[HeapTrace]:
        """The stack of a trace index, outermost frame first; None for the
        "other" bucket (0) and for an index the digest does not have."""
        if isinstance(traceindex, bool) or not isinstance(traceindex, numbers.Integral):
            raise TypeError(f"traceindex must be an int, not {type(traceindex).__name__}")
        index = int(traceindex)
        cached = self._traces.get(index)
        if cached is not None:
            return list(cached)
        traces = self._digest["traces"]
        if not 1 <= index <= len(traces):
            return None
        trace = [TraceLine(filename, lineno, linecache.getline(filename, lineno).strip() if lineno > 0 else "",
                           function)
                 for function, filename, lineno in traces[index - 1]]
        self._traces[index] = trace
        return list(trace)

    def snapshots(self) -> List[Snapshot]:
        """Every snapshot, at relativeTime 0, snapshotInterval(), 2 x snapshotInterval(), ..."""
        return list(self._snapshots)

    def snapshotAt(self, relativeTime: float) -> Snapshot:
        """The snapshot at or before *relativeTime* (seconds since the
        start), clamped to the first and the last."""
        return self._snapshots[self._index_at(relativeTime)]

    def _index_at(self, relativeTime):
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
        index = math.floor(relativeTime * 1000 + 1e-6) // int(self._digest["interval_ms"])
        return min(index, len(self._snapshots) - 1)

    def plotTotalUsage(self, scale: float = 1 << 20) -> Tuple[List[float], List[float]]:
        """(times, totals): seconds since the start and total live bytes
        divided by *scale* (1 << 20: MiB), ready for matplotlib's plot()."""
        scale = _check_scale(scale)
        return ([s.relativeTime for s in self._snapshots], [s.totalUsage() / scale for s in self._snapshots])

    def asCollapsedStack(self, snapshot: Snapshot, output: TextIO) -> None:
        """Writes *snapshot* in the collapsed-stack format of flame graphs
        (speedscope, flamegraph.pl): one line per trace, its frames
        ``filename:lineno`` outermost first joined by ``;``, a space and its
        bytes; the "other" bucket as ``OTHER``, blocks with no Python frame as
        ``[no Python frame]``. Characters that would break a line (``;``,
        line breaks, ``%``) in a file name are %-escaped. (heapscope's
        collapsed writer, ``heapscope.reports.exports``, on the snapshot's
        Profile.)"""
        if not isinstance(snapshot, Snapshot):
            raise TypeError(f"snapshot must be a heapprof Snapshot, not {type(snapshot).__name__}")
        from heapscope.reports.exports import collapsed_text

        profile, options = self._collapsed(snapshot)
        output.write(collapsed_text(profile, **options))

    def writeCollapsedStack(self, relativeTime: float, filename) -> None:
        """asCollapsedStack of snapshotAt(relativeTime), written to *filename*."""
        from heapscope.reports.exports import write_collapsed

        profile, options = self._collapsed(self.snapshotAt(relativeTime))
        write_collapsed(profile, filename, **options)

    def _collapsed(self, snapshot):
        """*snapshot*'s Profile, and the collapsed writer's options that give heapprof's format."""
        from heapscope.reports.adapters_heapprof import HEAPPROF_COLLAPSED, profile_from_heapprof_snapshot

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
        return bool(self._digest["complete"])

    @property
    def dataDamage(self) -> Optional[str]:
        """What was wrong with filebase.hpd and where reading stopped, or None."""
        return self._digest["damage"]

    def samplingApplied(self) -> str:
        """How the capture was sampled: "exact", or the engine's description of its sampling."""
        return str(self._digest["sampling"])

    def topTraces(self, top: int = 5) -> List[int]:
        """The *top* trace indices by their largest bytes at any snapshot, largest first ("other" excluded)."""
        top = _check_top(top)
        peaks: Dict[int, int] = {}
        for snapshot in self._snapshots:
            for index, size in snapshot.usage.items():
                if index != OTHER_TRACE and size > peaks.get(index, 0):
                    peaks[index] = size
        return [index for index, _ in sorted(peaks.items(), key=lambda item: (-item[1], item[0]))[:top]]

    def writeTimePlot(self, path, top: int = 5, scale: float = 1 << 20) -> None:
        """A PNG of live bytes over time, stacked: the *top* traces (topTraces)
        and everything else (the "other" bucket and the remaining traces),
        so the upper edge is the total. Needs matplotlib (heapscope[plots])."""
        top = _check_top(top)
        scale = _check_scale(scale)
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError:
            raise ImportError("writeTimePlot needs matplotlib: pip install 'heapscope[plots]'") from None
        chosen = self.topTraces(top)
        times = [s.relativeTime for s in self._snapshots]
        series = [[s.usage.get(index, 0) / scale for s in self._snapshots] for index in chosen]
        rest = [(s.totalUsage() - sum(s.usage.get(index, 0) for index in chosen)) / scale for s in self._snapshots]
        labels = [_plot_label(self.trace(index)) for index in chosen] + ["everything else"]
        figure = Figure(figsize=(10, 5.5), dpi=100)
        FigureCanvasAgg(figure)
        axes = figure.add_subplot(1, 1, 1)
        if times:
            axes.stackplot(times, *series, rest, labels=labels)
            axes.legend(loc="upper left", fontsize="small")
        axes.set_xlabel("seconds since the start")
        axes.set_ylabel(f"live bytes / {_scale_name(scale)}")
        axes.set_title(_plot_text(f"Live heap by stack: {os.path.basename(self.filebase)}"))
        axes.margins(x=0)
        figure.tight_layout()
        figure.savefig(os.fspath(path), format="png")


def _check_scale(scale):
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be a number, not {type(scale).__name__}")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    return float(scale)


def _check_top(top):
    if isinstance(top, bool) or not isinstance(top, numbers.Integral):
        raise TypeError(f"top must be an int, not {type(top).__name__}")
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    return int(top)


def _scale_name(scale):
    return {1: "bytes", 1 << 10: "KiB", 1 << 20: "MiB", 1 << 30: "GiB"}.get(int(scale), f"{scale:g} bytes")


def _plot_text(text):
    """*text* shown literally by matplotlib: `$` would start mathematics, control characters are escaped."""
    from heapscope.reports.text import safe_text

    return safe_text(text).replace("$", r"\$")


def _plot_label(trace):
    if not trace:
        return "[no Python frame]"
    inner = trace[-1]
    label = f"{inner.function or '?'} ({os.path.basename(inner.filename)}:{inner.lineno})"
    if len(label) > 70:
        label = label[:67] + "..."
    return _plot_text(label)
