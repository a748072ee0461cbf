"""heapprof 1.0.2's value types (``heapprof.types``): raw and dressed stack
traces, and a snapshot of the digest. Traces run outermost frame first."""

from typing import Dict, List, NamedTuple, Union

__all__ = ["RawTraceLine", "RawTrace", "TraceLine", "HeapTrace", "Snapshot"]


class RawTraceLine(NamedTuple):
    """One line of code in a stack trace: a file and a line number."""

    filename: str
    lineno: int

    def __str__(self) -> str:
        """``filename:lineno``, or the file name alone when there is no line number."""
        return f"{self.filename}:{self.lineno}" if self.lineno else self.filename

    @classmethod
    def parse(cls, value: Union["RawTraceLine", str]) -> "RawTraceLine":
        """*value* itself if it is a RawTraceLine, else ``"filename:lineno"``
        split at its last colon (ValueError if that is not a line number)."""
        if isinstance(value, RawTraceLine):
            return value
        filename, _, lineno = str(value).rpartition(":")
        if not filename:
            raise ValueError(f"expected 'filename:lineno', got {value!r}")
        return cls(filename, int(lineno))


# A raw stack trace, outermost frame first.
RawTrace = List[RawTraceLine]


class TraceLine(NamedTuple):
    """A RawTraceLine with the text of its line of code, read from the
    source file when the trace is asked for (so "" if the file is gone, and
    today's text if it changed since the run)."""

    filename: str
    lineno: int
    fileline: str


# A stack trace with its lines of code, outermost frame first.
HeapTrace = List[TraceLine]


class Snapshot(NamedTuple):
    """The live heap at one moment of the digest."""

    # Seconds since the capture started: a multiple of the digest's snapshotInterval().
    relativeTime: float
    # Trace index -> live bytes at that moment; index 0 is the "other" bucket.
    usage: Dict[int, int]

    def totalUsage(self) -> int:
        return sum(self.usage.values())
