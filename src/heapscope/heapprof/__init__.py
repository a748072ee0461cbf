"""``heapscope.heapprof``: heapprof 1.0.2's API (humu's heap profiler) on heapscope's engine.

::

    import heapscope.heapprof as heapprof

    heapprof.start("/tmp/run")          # writes /tmp/run.hpm and /tmp/run.hpd
    run_the_program()
    heapprof.stop()                     # also implicit at exit

    with heapprof.read("/tmp/run", timeInterval=1) as reader:   # builds /tmp/run.hpc once
        for snapshot in reader.snapshots():
            print(snapshot.relativeTime, snapshot.totalUsage())
        reader.writeFlameGraph("/tmp/run-at-10s.txt", 10)       # collapsed stacks: flamegraph.pl, speedscope
        reader.compareFlowGraphs("/tmp/run.dot", 5, 10)         # Graphviz: dot -Tsvg -O /tmp/run.dot
        reader.timePlot({"load": "app.py:12"}).pyplot()         # matplotlib

The names, arguments, defaults and errors are heapprof 1.0.2's. Underneath,
``filebase.hpd`` is a heapscope capture (``heapscope.FileReader`` reads it
too) and the digest is one C++ pass over it. docs/heapprof.md has the file
formats and the differences from heapprof.
"""

from heapscope.heapprof._files import HeapprofFileError
from heapscope.heapprof._profiler import DEFAULT_SAMPLING_RATE, gatherStats, isProfiling, start, stop
from heapscope.heapprof.flow_graph import FlowGraph
from heapscope.heapprof.reader import OTHER_TRACE, DigestWarning, Reader, _check_interval, _check_precision
from heapscope.heapprof.types import HeapTrace, RawTrace, RawTraceLine, Snapshot, TraceLine

__all__ = ["start", "gatherStats", "stop", "isProfiling", "read", "Reader", "FlowGraph", "Snapshot", "TraceLine",
           "HeapTrace", "RawTraceLine", "RawTrace", "DEFAULT_SAMPLING_RATE", "OTHER_TRACE", "HeapprofFileError",
           "DigestWarning"]


def read(filebase, timeInterval=60, precision=0.01):
    """Open a reader, and create a digest for it if needed.

    Args:
        filebase: the name given to start(): reads filebase.hpm, and
            filebase.hpc (the digest) when it exists, else builds it from
            filebase.hpd (makeDigest, verbose: status lines on stderr).
        timeInterval: seconds between successive snapshots of the digest
            (> 0; counted in whole milliseconds).
        precision: at each snapshot, the smallest stacks adding up to at most
            this fraction of that moment's total go into the "other" bucket
            (trace index 0). In [0, 1); 0 merges nothing.

    timeInterval and precision apply only when the digest is created. A
    digest that is stale (filebase.hpd changed since) or damaged is built
    again with the arguments given, with a DigestWarning.

    Raises:
        TypeError, ValueError: a bad timeInterval or precision (checked
            even when the digest exists).
        OSError (FileNotFoundError): filebase.hpm, or filebase.hpd when there
            is no digest yet, cannot be read.
        HeapprofFileError (a ValueError): a file that is not what its name
            says, or was written by a newer heapscope.
    """
    _check_interval(timeInterval)
    _check_precision(precision)
    reader = Reader(filebase)
    if not reader.hasDigest():
        reader.makeDigest(timeInterval=timeInterval, precision=precision, verbose=True)
    return reader
