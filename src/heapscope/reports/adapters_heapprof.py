"""Adapter: a snapshot of heapprof's digest (``heapscope.heapprof``) as a
report-model Profile.

One sample per trace, in heapprof's order (largest first, ties by trace
index), bytes only (the digest does not count blocks); the "other" bucket
(stacks merged for being under the precision fraction, and indices the
digest does not know) last, as one sample at :data:`OTHER_FRAME`; blocks
made with no Python frame on the stack at :data:`NO_PYTHON_FRAME`.
"""

from heapscope.heapprof.reader import OTHER_TRACE
from heapscope.reports.model import Frame, Profile, Sample

__all__ = ["OTHER_FRAME", "NO_PYTHON_FRAME", "HEAPPROF_COLLAPSED", "profile_from_heapprof_snapshot",
           "heapprof_frame_name"]

OTHER_FRAME = Frame("OTHER", "", 0)
NO_PYTHON_FRAME = Frame("[no Python frame]", "", 0)
_BUCKETS = (OTHER_FRAME, NO_PYTHON_FRAME)


def profile_from_heapprof_snapshot(reader, snapshot):
    """*snapshot* (a ``heapprof.Snapshot`` of *reader*, a ``heapprof.Reader``) as a Profile."""
    samples = []
    other = 0
    for index, size in sorted(snapshot.usage.items(), key=lambda item: (-item[1], item[0])):
        trace = reader.trace(index) if index != OTHER_TRACE else None
        if trace is None:
            other += size
            continue
        stack = tuple(Frame(line.function, line.filename, line.lineno) for line in trace) or (NO_PYTHON_FRAME,)
        samples.append(Sample(stack, size, 0))
    if other:
        samples.append(Sample((OTHER_FRAME,), other, 0))
    sampling = reader.samplingApplied()
    return Profile(title=f"Live heap at {snapshot.relativeTime:g} s", samples=samples,
                   source=reader.filebase + ".hpd", header=[f"sampling: {sampling}"],
                   sampled=sampling != "exact")


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
