"""Adapters: each door's results as report-model Profiles.

* a capture (``heapscope.FileReader``): the peak, the leaks, temporary
  allocations, the heap at a moment, and memory over time with the heap at
  each memory record (the temporal flame graph);
* a ``heapscope.tracemalloc`` Snapshot, and the difference of two;
* a ``heapscope.pools`` Snapshot, and a pools diff.

(heapprof's digest snapshots: ``heapscope.reports.adapters_heapprof``.)

The rules of which frames belong to the program and how rows group live in
the reader (C++ passes group by stack) and in the model; adapters only
translate names.
"""

import os

from heapscope.reports.model import UNKNOWN_FRAME, Frame, Profile, Sample, TemporalSnapshot, Timeline, diff_profiles

__all__ = ["CAPTURE_VIEWS", "profile_from_capture", "temporal_profile_from_capture", "profile_at_moment",
           "profile_from_snapshot",
           "profile_from_snapshot_diff", "profile_from_pools_snapshot", "profile_from_pools_diff", "load_profile"]

# What a capture's flame graph, table or export can show.
CAPTURE_VIEWS = {
    "peak": "Memory held at the high-water mark",
    "leaks": "Memory still held when tracking stopped",
    "temporary": "Temporary allocations",
}


def _frames_of(stack, native, known=None):
    """Model frames, outermost first, from a reader's innermost-first stack
    of (function, filename, lineno). *known*: a dict from those tuples to the
    frames already made for one profile. Hybrid stacks run ~150 frames deep
    and share most of them, and telling a native frame from a Python one
    costs more than the lookup (a 3-second program's flame graph: 12 s to 6 s)."""
    if not stack:
        return (UNKNOWN_FRAME,)
    if not native:
        return tuple(Frame(function, filename, lineno) for function, filename, lineno in reversed(stack))
    if known is None:
        known = {}
    frames = []
    for raw in reversed(stack):
        frame = known.get(raw)
        if frame is None:
            function, filename, lineno = raw
            frame = known[raw] = Frame(function, filename, lineno, not _is_python_frame(filename))
        frames.append(frame)
    return tuple(frames)


def _is_python_frame(filename):
    return str(filename).endswith(".py") or str(filename).startswith("<")


def _capture_header(reader):
    from heapscope.reports.capture_text import header_lines

    return [line.strip() for line in header_lines("report", reader.path, reader.metadata)[1:]]


def _records(reader, which, threshold, merge_threads):
    if which == "peak":
        return reader.get_high_watermark_allocation_records(merge_threads=merge_threads)
    if which == "leaks":
        return reader.get_leaked_allocation_records(merge_threads=merge_threads)
    if which == "temporary":
        return reader.get_temporary_allocation_records(merge_threads=merge_threads, threshold=threshold)
    raise ValueError(f"which must be one of {', '.join(CAPTURE_VIEWS)}, not {which!r}")


def profile_from_capture(reader, which="peak", *, threshold=1, native=False, merge_threads=True):
    """The peak, the leaks or the temporary allocations of a capture as a
    Profile. *native*: hybrid stacks (native and Python frames) when the
    capture has native traces. Blocks heapscope itself made are left out."""
    hybrid = bool(native) and reader.metadata.has_native_traces
    stacks = {}
    known_frames = {}
    samples = []
    for record in _records(reader, which, threshold, merge_threads):
        if reader.is_heapscope_own(record.stack_id):
            continue
        key = (record.stack_id, record.native_stack_id)
        stack = stacks.get(key)
        if stack is None:
            # Qualified names (Class.method) in heapscope's reports; records give memray's plain ones.
            raw = record.qualified_hybrid_stack_trace() if hybrid else record.qualified_stack_trace()
            if not raw and record.native_stack_id:
                # No Python frame: where in C it was.
                stack = _frames_of(record.native_stack_trace(), True, known_frames)
            else:
                stack = _frames_of(raw, hybrid, known_frames)
            stacks[key] = stack
        samples.append(Sample(stack, record.size, record.n_allocations, record.tid, record.allocator.name,
                              record.domain))
    title = CAPTURE_VIEWS[which]
    if which == "temporary":
        title += f" (at most {threshold} other allocation{'' if threshold == 1 else 's'} before their free)"
    threads = {} if merge_threads else {tid: name for tid, (_os_tid, name) in reader.threads().items()}
    metadata = reader.metadata
    return Profile(title=title, samples=samples, source=reader.path, header=_capture_header(reader),
                   threads=threads, domains=reader.pool_names, sampled=metadata.sampled, native=hybrid,
                   timeline=_timeline(reader), start_time=metadata.start_time.timestamp())


def _timeline(reader):
    snapshots = reader.get_memory_snapshots()
    if not snapshots:
        return None
    start_ms = reader.metadata.start_time.timestamp() * 1000
    return Timeline(times=[max((s.time - start_ms) / 1000, 0.0) for s in snapshots],
                    rss=[s.rss for s in snapshots], heap=[s.heap for s in snapshots])


# A temporal page holds at most this many moments: a long run is shown at a
# coarser interval than its memory records, which keeps the page small.
MAX_TEMPORAL_MOMENTS = 600
# At each moment, the smallest stacks that together hold at most this share
# of the heap are shown as one frame (their bytes still count): a page of a
# long run stays small and quick, and totals stay exact.
TEMPORAL_PRECISION = 0.001
# ... and at most this many stacks a moment, the largest (the rest merged too).
MAX_TEMPORAL_STACKS = 300
SMALL_STACKS_FRAME = Frame("(smaller stacks, merged)", "", 0)


def temporal_profile_from_capture(reader, *, native=False, merge_threads=True, progress=None):
    """The peak Profile of a capture with its timeline and the live heap by
    Python stack at regular moments (one C++ pass, heapprof's digest), for
    the temporal flame graph (memray's ``flamegraph --temporal``). Moments
    are the capture's memory interval apart, or coarser for a long run (at
    most MAX_TEMPORAL_MOMENTS)."""
    from heapscope import _heapscope

    profile = profile_from_capture(reader, "peak", native=native, merge_threads=merge_threads)
    timeline = profile.timeline
    if reader.is_aggregated or timeline is None or not len(timeline):
        return profile  # no events to replay: the peak and the timeline only
    duration_ms = max(int(timeline.times[-1] * 1000), 1)
    interval_ms = max(reader.metadata.memory_interval_ms or 10, -(-duration_ms // MAX_TEMPORAL_MOMENTS))
    digest = _heapscope.capture_timeline(reader.path, interval_ms, TEMPORAL_PRECISION, progress,
                                         max_stacks=MAX_TEMPORAL_STACKS)
    stack_index = {}
    stacks = [(SMALL_STACKS_FRAME,)]
    snapshots = []
    for snapshot in digest["snapshots"]:
        per_stack = {0: (snapshot.other, 0)} if snapshot.other else {}
        for kept in snapshot.stacks:
            index = stack_index.get(kept.python_node)
            if index is None:
                index = stack_index[kept.python_node] = len(stacks)
                stacks.append(_frames_of(reader._python_stack(kept.python_node), False))
            per_stack[index] = (kept.value, 0)  # the digest counts bytes only
        snapshots.append(TemporalSnapshot(snapshot.moment_ms / 1000, snapshot.total, per_stack))
    profile.temporal_stacks = stacks
    profile.temporal = snapshots
    return profile


def profile_at_moment(temporal, start, end=None):
    """From a temporal Profile (temporal_profile_from_capture): the heap at
    the moment nearest *start* (seconds since the capture started) or, with
    *end*, at the moment of highest heap within [start, end] -- the flame
    graph page's click and drag, from Python. Bytes only (the digest counts
    no blocks). ValueError if the profile has no moments, or none in the window."""
    moments = temporal.temporal
    if not moments:
        raise ValueError("the profile holds no heap over time (make it with temporal_profile_from_capture)")
    if end is None:
        chosen = min(moments, key=lambda moment: abs(moment.time - start))
        title = f"The heap at {chosen.time:.3f} s"
    else:
        inside = [moment for moment in moments if start <= moment.time <= end]
        if not inside:
            raise ValueError(f"no moment of the capture lies within {start:g} s - {end:g} s")
        chosen = max(inside, key=lambda moment: moment.heap)
        title = f"The heap at {chosen.time:.3f} s, the highest within {start:g} s - {end:g} s"
    samples = [Sample(temporal.temporal_stacks[index], size, blocks)
               for index, (size, blocks) in chosen.samples.items() if size]
    return Profile(title=title, samples=samples, source=temporal.source, header=list(temporal.header),
                   sampled=temporal.sampled)


def _tracemalloc_stack(frames):
    """Model frames, outermost first, from tracemalloc's innermost-first
    (filename, lineno) pairs; tracemalloc knows no function names, so each
    frame is named by its file and line."""
    if not frames:
        return (UNKNOWN_FRAME,)
    return tuple(Frame(f"{os.path.basename(filename)}:{lineno}", filename, lineno)
                 for filename, lineno in reversed(frames))


def profile_from_snapshot(snapshot, title="Memory traced by tracemalloc", source=""):
    """A ``heapscope.tracemalloc.Snapshot`` (or a snapshot from
    ``FileReader.snapshot_at``) as a Profile: one sample per distinct
    traceback and domain."""
    groups = {}
    for trace in snapshot.traces._traces:
        key = (trace[2], trace[0])
        size, count = groups.get(key, (0, 0))
        groups[key] = (size + trace[1], count + (trace[4] if len(trace) > 4 else 1))
    stacks = {}
    samples = []
    for (frames, domain), (size, count) in groups.items():
        stack = stacks.get(frames)
        if stack is None:
            stack = stacks[frames] = _tracemalloc_stack(frames)
        samples.append(Sample(stack, size, count, 0, "", domain))
    sampled = any(len(trace) > 4 for trace in snapshot.traces._traces[:1])
    return Profile(title=title, samples=samples, source=source, sampled=sampled)


def profile_from_snapshot_diff(before, after, before_source="before", after_source="after"):
    """The difference of two tracemalloc snapshots as a diff Profile."""
    return diff_profiles(profile_from_snapshot(before, source=before_source),
                         profile_from_snapshot(after, source=after_source))


def _pool_stack(resource):
    source = resource.source
    if source is None or not len(source):
        return (Frame(f"<{resource.pool}: no source>", "", 0),)
    return tuple(Frame(frame.function, frame.filename, frame.lineno, bool(frame.is_native))
                 for frame in reversed(source.frames))


def profile_from_pools_snapshot(snapshot, title="Resources alive in pools", resources=None):
    """A ``heapscope.pools`` Snapshot as a Profile: one sample per pool, kind
    and source; the allocator column holds the pool name (and kind)."""
    groups = {}
    for resource in (snapshot.resources if resources is None else resources):
        label = resource.pool if resource.kind is None else f"{resource.pool}/{resource.kind}"
        key = (_pool_stack(resource), label)
        size, count = groups.get(key, (0, 0))
        groups[key] = (size + resource.size, count + 1)
    samples = [Sample(stack, size, count, 0, label) for (stack, label), (size, count) in groups.items()]
    return Profile(title=title, samples=samples, source="heapscope.pools")


def profile_from_pools_diff(pools_diff):
    """A ``heapscope.pools`` SnapshotDiff as a diff Profile: the new
    resources on the after side, the released ones on the before side."""
    after = profile_from_pools_snapshot(None, resources=pools_diff.new)
    before = profile_from_pools_snapshot(None, resources=pools_diff.released)
    after.source, before.source = "new resources", "released resources"
    return diff_profiles(before, after, title="Resources made and released between two pools snapshots")


def load_profile(path, which="peak", *, threshold=1, native=False, merge_threads=True):
    """A Profile from a file: a capture, or a tracemalloc snapshot written by
    ``Snapshot.dump``. Raises ValueError (CaptureFileError,
    SnapshotFileError) for anything else, naming the file."""
    from heapscope.reader import CaptureFileError, FileReader
    from heapscope.tracemalloc import Snapshot, SnapshotFileError

    try:
        reader = FileReader(path)
    except CaptureFileError as capture_error:
        try:
            snapshot = Snapshot.load(path)
        except SnapshotFileError:
            raise ValueError(f"{path}: neither a heapscope capture nor a heapscope.tracemalloc snapshot "
                             f"({capture_error})") from None
        return profile_from_snapshot(snapshot, source=os.fspath(path))
    with reader:
        return profile_from_capture(reader, which, threshold=threshold, native=native, merge_threads=merge_threads)
