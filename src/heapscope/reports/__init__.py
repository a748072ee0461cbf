"""Reports: the report model (``model``), adapters from every door
(``adapters``) and presenters (``presenters``: text, JSON, collapsed stacks,
pprof, speedscope, CSV, HTML, a Graphviz flow graph, a PNG time plot).

From Python, :func:`profile` turns any door's result into a Profile and
:func:`write_report` writes it in any format, e.g.::

    from heapscope import reports
    reports.write_report(heapscope.FileReader("run.hscap"), "peak.html")          # flame graph of the peak
    reports.write_report(reader, "over-time.html", kind="temporal")
    reports.write_report((snapshot_before, snapshot_after), "growth.html")       # differential flame graph
    reports.write_report(pools.make_snapshot(), "pools.html", kind="table")
    reports.write_report(reader, "peak.pb.gz", format="pprof")
    reports.write_report(reader, "peak.dot")                                      # flow graph (Graphviz)
    reports.write_report(reader, "over-time.png")                                 # time plot (matplotlib)
"""

import os

__all__ = ["profile", "write_report"]

# The format a file name implies, when none is given.
_SUFFIXES = ((".html", "html"), (".htm", "html"), (".pb.gz", "pprof"), (".pprof", "pprof"),
             (".speedscope.json", "speedscope"), (".json", "json"), (".csv", "csv"), (".txt", "collapsed"),
             (".folded", "collapsed"), (".collapsed", "collapsed"), (".dot", "dot"), (".gv", "dot"),
             (".png", "timeplot"))


def profile(source, which="peak", *, threshold=1, native=False, merge_threads=True, temporal=False):
    """A report-model Profile from any door's result:

    * a ``heapscope.FileReader`` (*which*: "peak", "leaks" or "temporary";
      *temporal*: with the heap over time);
    * a ``heapscope.tracemalloc.Snapshot``, or a (before, after) pair of
      them (a difference);
    * a ``heapscope.heapprof`` Reader's snapshot, as ``(reader, snapshot)``,
      or a Reader (every snapshot as the Profile's moments, the peak as
      its samples);
    * a ``heapscope.pools`` Snapshot or SnapshotDiff;
    * a Profile (returned as it is).
    """
    from heapscope.reports import adapters
    from heapscope.reports.model import Profile

    if isinstance(source, Profile):
        return source
    from heapscope.reader import FileReader

    if isinstance(source, FileReader):
        if temporal:
            return adapters.temporal_profile_from_capture(source, native=native, merge_threads=merge_threads)
        return adapters.profile_from_capture(source, which, threshold=threshold, native=native,
                                             merge_threads=merge_threads)
    from heapscope import pools
    from heapscope.tracemalloc import Snapshot

    if isinstance(source, Snapshot):
        return adapters.profile_from_snapshot(source)
    if isinstance(source, pools.Snapshot):
        return adapters.profile_from_pools_snapshot(source)
    if isinstance(source, pools.SnapshotDiff):
        return adapters.profile_from_pools_diff(source)
    from heapscope.heapprof.reader import Reader as HeapprofReader

    if isinstance(source, HeapprofReader):
        from heapscope.reports.adapters_heapprof import temporal_profile_from_heapprof

        return temporal_profile_from_heapprof(source)
    if isinstance(source, tuple) and len(source) == 2:
        first, second = source
        if isinstance(first, Snapshot) and isinstance(second, Snapshot):
            return adapters.profile_from_snapshot_diff(first, second)
        if isinstance(first, HeapprofReader):
            from heapscope.reports.adapters_heapprof import profile_from_heapprof_snapshot

            return profile_from_heapprof_snapshot(first, second)
    raise TypeError(f"cannot make a report from {type(source).__name__}: expected a FileReader, a "
                    f"heapscope.tracemalloc Snapshot or a pair of them, a heapprof Reader or (Reader, snapshot), a "
                    f"heapscope.pools Snapshot or SnapshotDiff, or a Profile")


def write_report(source, path, *, format=None, kind=None, which="peak", threshold=1, native=False,
                 inverted=False, split_threads=False):
    """Writes a report of *source* (anything :func:`profile` takes) to
    *path*. *format*: a presenter's name (``presenters.names()``), else
    implied by the file name (.html, .pb.gz, .speedscope.json, .json, .csv,
    .txt, .dot, .png). For HTML, *kind* is "flamegraph" (default),
    "temporal", "table" or "diff" (the default for a difference). Returns
    *path*."""
    from heapscope.reports import presenters

    path = os.fspath(path)
    if format is None:
        format = next((name for suffix, name in _SUFFIXES if path.endswith(suffix)), None)
        if format is None:
            raise ValueError(f"cannot tell the format from {path!r}: pass format= "
                             f"(one of {', '.join(presenters.names())})")
    data = profile(source, which, threshold=threshold, native=native, merge_threads=not split_threads,
                   temporal=kind == "temporal" or format == "timeplot")
    options = {}
    if format == "html":
        options = {"kind": kind or ("diff" if data.is_diff else "flamegraph"), "inverted": inverted,
                   "split_threads": split_threads}
    return presenters.write(data, format, path, **options)
