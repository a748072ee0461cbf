"""``heapscope.heapprof``: heapprof's API (humu's heap profiler) on heapscope's engine.

::

    import heapscope.heapprof as heapprof

    heapprof.start("/tmp/run")          # writes /tmp/run.hpm and /tmp/run.hpd
    run_the_program()
    heapprof.stop()                     # also implicit at exit

    reader = heapprof.read("/tmp/run", timeInterval=1)   # builds /tmp/run.hpc once
    for snapshot in reader.snapshots():
        print(snapshot.relativeTime, snapshot.totalUsage())
    reader.writeCollapsedStack(10, "/tmp/run-at-10s.txt")   # for speedscope
    reader.writeTimePlot("/tmp/run.png", top=5)             # matplotlib

The names, arguments, defaults and errors are heapprof's. Underneath,
``filebase.hpd`` is a heapscope capture (``heapscope.FileReader`` reads it
too) and the digest is one C++ pass over it. docs/heapprof.md has the file
formats and the differences from heapprof.
"""

from heapscope.heapprof._files import HeapprofFileError
from heapscope.heapprof._profiler import DEFAULT_SAMPLING_RATE, gatherStats, isProfiling, start, stop
from heapscope.heapprof.reader import OTHER_TRACE, DigestWarning, HeapTrace, Reader, Snapshot, TraceLine

__all__ = ["start", "gatherStats", "stop", "isProfiling", "read", "Reader", "Snapshot", "TraceLine", "HeapTrace",
           "DEFAULT_SAMPLING_RATE", "OTHER_TRACE", "HeapprofFileError", "DigestWarning"]


def read(filebase, timeInterval=60, precision=0.01):
    """Open a reader, and create a digest for it if needed.

    Args:
        filebase: the name given to start(): reads filebase.hpm and
            filebase.hpd, and filebase.hpc (the digest) when it exists.
        timeInterval: seconds between successive snapshots of the digest
            (> 0; counted in whole milliseconds).
        precision: at each snapshot, the smallest stacks adding up to at most
            this fraction of that moment's total go into the "other" bucket
            (trace index 0). In [0, 1); 0 merges nothing.

    timeInterval and precision apply only when the digest is created. A
    digest that is stale (filebase.hpd changed since) or damaged is built
    again with the arguments given, with a DigestWarning.

    Raises:
        TypeError, ValueError: a bad timeInterval or precision.
        OSError (FileNotFoundError): filebase.hpm, or filebase.hpd when there
            is no digest yet, cannot be read.
        HeapprofFileError (a ValueError): a file that is not what its name
            says, or was written by a newer heapscope.
    """
    return Reader(filebase, timeInterval, precision)
