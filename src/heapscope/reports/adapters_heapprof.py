"""Adapter: heapprof's digest (``heapscope.heapprof``) as report-model Profiles.

* :func:`profile_from_heapprof_snapshot`: one snapshot. One sample per
  trace, in heapprof's order (largest first, ties by trace index), bytes
  only (the digest does not count blocks); the "other" bucket (stacks
  merged for being under the precision fraction, and indices the digest
  does not know) last, as one sample at :data:`OTHER_FRAME`; blocks made
  with no Python frame on the stack at :data:`NO_PYTHON_FRAME`.
* :func:`temporal_profile_from_heapprof`: the whole run, every snapshot
  as a moment of ``Profile.temporal`` (the time plot presenter draws it),
  the "other" bucket in each moment's total only; its samples are the
  snapshot with the most bytes.
"""

import os

from heapscope.heapprof.reader import OTHER_TRACE
from heapscope.reports.model import Frame, Profile, Sample, TemporalSnapshot

__all__ = ["OTHER_FRAME", "NO_PYTHON_FRAME", "HEAPPROF_COLLAPSED", "profile_from_heapprof_snapshot",
           "temporal_profile_from_heapprof", "heapprof_frame_name"]

OTHER_FRAME = Frame("OTHER", "", 0)
NO_PYTHON_FRAME = Frame("[no Python frame]", "", 0)
_BUCKETS = (OTHER_FRAME, NO_PYTHON_FRAME)


def _stack(reader, index):
    """Trace *index*'s model frames, outermost first; None for the "other" bucket."""
    frames = reader._frames(index) if index != OTHER_TRACE else None
    if frames is None:
        return None
    return tuple(Frame(function, filename, lineno) for function, filename, lineno in frames) or (NO_PYTHON_FRAME,)


def _profile(reader, title, samples):
    sampling = reader.samplingApplied()
    return Profile(title=title, samples=samples, source=reader.filebase + ".hpd", header=[f"sampling: {sampling}"],
                   sampled=sampling != "exact")


def profile_from_heapprof_snapshot(reader, snapshot):
    """*snapshot* (a ``heapprof.Snapshot`` of *reader*, a ``heapprof.Reader``) as a Profile."""
    samples = []
    other = 0
    for index, size in sorted(snapshot.usage.items(), key=lambda item: (-item[1], item[0])):
        stack = _stack(reader, index)
        if stack is None:
            other += size
        else:
            samples.append(Sample(stack, size, 0))
    if other:
        samples.append(Sample((OTHER_FRAME,), other, 0))
    return _profile(reader, f"Live heap at {snapshot.relativeTime:g} s", samples)


def temporal_profile_from_heapprof(reader):
    """Every snapshot of *reader*'s digest as the moments of a Profile (see the module's doc)."""
    snapshots = reader.snapshots()
    stacks, position = [], {}
    moments = []
    for snapshot in snapshots:
        samples = {}
        for index, size in snapshot.usage.items():
            stack = _stack(reader, index)
            if stack is None:
                continue  # the "other" bucket counts in the moment's total only
            slot = position.get(stack)
            if slot is None:
                slot = position[stack] = len(stacks)
                stacks.append(stack)
            before, _ = samples.get(slot, (0, 0))
            samples[slot] = (before + size, 0)
        moments.append(TemporalSnapshot(snapshot.relativeTime, snapshot.totalUsage(), samples))
    peak = max(snapshots, key=lambda snapshot: snapshot.totalUsage(), default=None)
    profile = profile_from_heapprof_snapshot(reader, peak) if peak is not None else _profile(reader, "", [])
    profile.title = f"Live heap over time: {os.path.basename(reader.filebase)}"
    profile.temporal_stacks, profile.temporal = stacks, moments
    return profile


def heapprof_frame_name(frame):
    """heapprof's name of a frame in collapsed stacks: ``filename:lineno``;
    ``OTHER`` and ``[no Python frame]`` for the buckets."""
    if frame in _BUCKETS:
        return frame.function
    return f"{frame.filename}:{frame.lineno}"


# The options of heapscope.reports.exports' collapsed writer that give
# heapprof's collapsed stacks: frames as filename:lineno, in the Profile's
# (heapprof's) order.
HEAPPROF_COLLAPSED = {"frame_name": heapprof_frame_name, "sort": False}
