"""What heapscope's pytest plugin checks (``heapscope.pytest_plugin``): the
``limit_memory`` and ``limit_leaks`` markers, with pytest-memray's names and
semantics, and the peak-growth gate against a baseline file.

The markers read one test's capture:

* ``limit_memory(limit, *, current_thread_only=False)``: the bytes held at
  the test's high-water mark (of every thread, or of the thread that ran the
  test) must stay *under* the limit: a peak equal to it fails, as in
  pytest-memray.
* ``limit_leaks(location_limit, *, filter_fn=None, current_thread_only=False)``:
  no location may still hold *location_limit* bytes or more when the test
  body returns. A location is one leaked-allocations record: one stack
  (Python and native frames) and one allocator. *filter_fn* receives each
  such location's :class:`Stack` (innermost frame first) and returns True to
  report it, False to let it pass.

Sizes are written as pytest-memray reads them (:func:`parse_memory_string`):
``"24 MB"``, ``"1.5KB"``, ``"100 B"``; K, M, G, T and P are powers of 1024.
"""

import json
import os
import re
from dataclasses import dataclass
from typing import Optional, Tuple

__all__ = ["parse_memory_string", "parse_growth", "Stack", "StackFrame", "LeaksFilterFunction", "CaptureFacts",
           "limit_memory", "limit_leaks", "Baseline", "BaselineError", "LIMIT_MARKERS"]

# pytest-memray's grammar: a number (optionally with "+", optionally with a
# fraction), optional spaces, then B or KB, MB, GB, TB, PB in any case. Only
# the start of the text has to match: whatever follows is ignored.
_SIZE = re.compile(r"\+?(\d*\.\d+|\d+)\s*([kmgtp]?b)", re.IGNORECASE)
_MULTIPLIERS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_memory_string(text):
    """The number of bytes *text* names, as a float, read as pytest-memray's
    ``parse_memory_string`` reads it. ValueError when it names none."""
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"Invalid memory size format: {text}")
    number, unit = match.groups()
    return float(number) * _MULTIPLIERS[unit[:-1].lower()]


def parse_growth(text):
    """``--heapscope-max-growth``: ``"10%"`` (a share of the recorded peak)
    or a size (``"1 MB"``). Returns ("percent", value) or ("bytes", value)."""
    stripped = str(text).strip()
    if stripped.endswith("%"):
        try:
            value = float(stripped[:-1])
        except ValueError:
            value = -1.0
        if not value >= 0:
            raise ValueError(f"invalid growth {text!r}: expected a percentage such as 10% or a size such as 1 MB")
        return ("percent", value)
    try:
        return ("bytes", parse_memory_string(stripped))
    except ValueError:
        raise ValueError(f"invalid growth {text!r}: expected a percentage such as 10% or a size such as "
                         f"1 MB") from None


def describe_growth(growth):
    kind, value = growth
    if kind == "percent":
        return f"{value:g}%"
    from heapscope.reports.text import format_bytes

    return format_bytes(value)


def allowed_growth(growth, previous):
    kind, value = growth
    return previous * value / 100 if kind == "percent" else value


@dataclass
class StackFrame:
    """One frame of a stack (pytest-memray's ``StackFrame``)."""

    function: str
    filename: str
    lineno: int


@dataclass
class Stack:
    """The stack of a leaked location (pytest-memray's ``Stack``): its frames,
    innermost first, native ones included."""

    frames: Tuple[StackFrame, ...]


try:
    from typing import Protocol
except ImportError:  # pragma: no cover - Python < 3.8
    Protocol = object


class LeaksFilterFunction(Protocol):
    """``filter_fn`` of ``limit_leaks``: True to report the location whose
    stack it is given, False to ignore it."""

    def __call__(self, stack: Stack) -> bool:
        ...


class CaptureFacts:
    """One test's capture, read once for every check and report: the
    locations at the high-water mark and at the end (heapscope's own blocks
    left out), per thread when a check asks for it."""

    def __init__(self, path, test_os_thread, wrapper_file, show_native=False):
        from heapscope.reader import FileReader

        self.path = path
        self.reader = FileReader(path)
        self.test_os_thread = test_os_thread
        self.wrapper_file = wrapper_file
        # Native frames are recorded for limit_leaks' filter_fn; they are
        # shown only when asked for (--heapscope-native).
        self.show_native = bool(show_native) and self.reader.metadata.has_native_traces
        self._records = {}

    def close(self):
        self.reader.close()

    def test_thread(self):
        """The capture's id of the thread that ran the test body (None if unseen)."""
        for tid, (os_tid, _name) in self.reader.threads().items():
            if os_tid == self.test_os_thread:
                return tid
        return None

    def records(self, which, current_thread_only=False):
        """The records of "peak" or "leaks", largest first."""
        key = (which, bool(current_thread_only))
        if key not in self._records:
            reader = self.reader
            read = (reader.get_high_watermark_allocation_records if which == "peak"
                    else reader.get_leaked_allocation_records)
            rows = [record for record in read(merge_threads=not current_thread_only)
                    if not reader.is_heapscope_own(record.stack_id)]
            if current_thread_only:
                thread = self.test_thread()
                rows = [record for record in rows if record.tid == thread]
            rows.sort(key=lambda record: -record.size)
            self._records[key] = rows
        return self._records[key]

    def total(self, which, current_thread_only=False):
        return sum(record.size for record in self.records(which, current_thread_only))

    def blocks(self, which):
        return sum(record.n_allocations for record in self.records(which))

    def stack(self, record):
        """The record's frames, innermost first, native ones too when the
        capture has them (what filter_fn is given)."""
        if self.reader.metadata.has_native_traces:
            return record.hybrid_stack_trace()
        return record.stack_trace()

    def test_frames(self, record):
        """The record's frames as shown (native ones if asked for), up to the
        test function: the frames of pytest and of heapscope's wrapper
        around the test are cut."""
        stack = record.hybrid_stack_trace() if self.show_native else record.stack_trace()
        for index, frame in enumerate(stack):
            if _same_file(frame[1], self.wrapper_file):
                return stack[:index] or stack
        return stack

    def top_location(self, which):
        """(size, innermost frame) of the largest location, or None."""
        rows = self.records(which)
        if not rows:
            return None
        frames = self.test_frames(rows[0])
        return rows[0].size, (frames[0] if frames else ("<unknown>", "<unknown>", 0))


def _same_file(filename, wrapper_file):
    return os.path.normcase(os.path.abspath(filename)) == wrapper_file if filename.endswith(".py") else False


def describe_frame(frame):
    from heapscope.reports.text import safe_text

    function, filename, lineno = frame[:3]
    return f"{safe_text(function)} ({safe_text(filename)}:{lineno})" if lineno else \
        f"{safe_text(function)} ({safe_text(filename)})"


def stacks_text(facts, records, frames_shown, rows_shown):
    """The largest *records* as text: each one's size and its innermost frames."""
    from heapscope.reports.text import format_bytes, safe_text

    lines = []
    for record in records[:rows_shown]:
        blocks = record.n_allocations
        lines.append(f"    - {format_bytes(record.size)} in {blocks} block{'' if blocks == 1 else 's'} "
                     f"allocated here:")
        frames = facts.test_frames(record)
        for function, filename, lineno in frames[:frames_shown]:
            where = f"{safe_text(filename)}:{lineno}" if lineno else safe_text(filename)
            lines.append(f"        {safe_text(function)} at {where}")
        if len(frames) > frames_shown:
            lines.append(f"        ... {len(frames) - frames_shown} more frames")
    if len(records) > rows_shown:
        rest = records[rows_shown:]
        lines.append(f"    ...and {len(rest)} more, holding {format_bytes(sum(record.size for record in rest))}")
    return lines


@dataclass
class Problem:
    """A failed check: the first line of its message, the text that follows
    (the stacks), and which view of the capture its flame graph shows."""

    headline: str
    details: list
    view: str  # "peak" or "leaks"
    current_thread_only: bool = False


def limit_memory(limit, *, current_thread_only=False, _facts, _frames, _rows):
    """Fail when the test's peak reaches *limit* (pytest-memray's
    ``limit_memory``)."""
    from heapscope.reports.text import format_bytes

    maximum = parse_memory_string(limit)
    total = _facts.total("peak", current_thread_only)
    if total < maximum:
        return None
    which = "the test's thread" if current_thread_only else "all threads"
    headline = (f"Test was limited to {format_bytes(maximum)} but allocated {format_bytes(total)} "
                f"(memory held at its peak, {which})")
    details = ["Largest stacks at the peak:"] + stacks_text(_facts, _facts.records("peak", current_thread_only),
                                                            _frames, _rows)
    return Problem(headline, details, "peak", current_thread_only)


def limit_leaks(location_limit, *, filter_fn=None, current_thread_only=False, _facts, _frames, _rows):
    """Fail when a location still holds *location_limit* or more when the
    test body returns (pytest-memray's ``limit_leaks``)."""
    from heapscope.reports.text import format_bytes

    maximum = parse_memory_string(location_limit)
    offending = []
    for record in _facts.records("leaks", current_thread_only):
        if record.size < maximum:
            continue
        if filter_fn is not None:
            stack = Stack(tuple(StackFrame(function, filename, lineno)
                                for function, filename, lineno in _facts.stack(record)))
            if not filter_fn(stack):
                continue
        offending.append(record)
    if not offending:
        return None
    headline = (f"Test was allowed to leak {format_bytes(maximum)} per location but at least one location "
                f"leaked more")
    details = [f"Locations still holding {format_bytes(maximum)} or more when the test ended:"]
    details += stacks_text(_facts, offending, max(_frames, 5), _rows)
    return Problem(headline, details, "leaks", current_thread_only)


LIMIT_MARKERS = {"limit_memory": limit_memory, "limit_leaks": limit_leaks}


class BaselineError(ValueError):
    """The baseline file cannot be read, or was recorded with other settings."""


class Baseline:
    """The recorded peak of every test: a JSON file ``{"format":
    "heapscope-pytest-baseline", "version": 1, "settings": {...}, "peaks":
    {test id: bytes}}``. Recorded peaks stay as they are; tests not in the
    file are added (or every test that ran is recorded again, with
    *update*)."""

    FORMAT = "heapscope-pytest-baseline"

    def __init__(self, path, settings, update=False):
        self.path = os.path.abspath(path)
        self.settings = settings
        self.update = update
        self.peaks = {}
        self.recorded = {}  # what this run adds to the file
        try:
            with open(self.path, encoding="utf-8") as source:
                document = json.load(source)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as error:
            raise BaselineError(f"cannot read the baseline {self.path}: {error}") from None
        if not isinstance(document, dict) or document.get("format") != self.FORMAT \
                or not isinstance(document.get("peaks"), dict):
            raise BaselineError(f"{self.path} is not a heapscope pytest baseline")
        recorded_with = document.get("settings", {})
        if recorded_with != settings and not update:
            raise BaselineError(f"the baseline {self.path} was recorded with {_settings_text(recorded_with)}, "
                                f"this run uses {_settings_text(settings)}: peaks would not compare (run "
                                f"with the same options, or pass --heapscope-update-baseline)")
        self.peaks = {str(test): int(peak) for test, peak in document["peaks"].items()}

    def previous(self, test_id):
        return None if self.update else self.peaks.get(test_id)

    def record(self, test_id, peak):
        if self.update or test_id not in self.peaks:
            self.recorded[test_id] = int(peak)

    def save(self):
        """Writes the file (atomically) if this run changed it; returns the
        number of tests recorded."""
        if not self.recorded and os.path.exists(self.path):
            return 0
        peaks = dict(self.peaks)
        peaks.update(self.recorded)
        document = {"format": self.FORMAT, "version": 1, "settings": self.settings,
                    "peaks": dict(sorted(peaks.items()))}
        directory = os.path.dirname(self.path)
        os.makedirs(directory, exist_ok=True)
        temporary = f"{self.path}.{os.getpid()}.tmp"
        with open(temporary, "w", encoding="utf-8") as out:
            json.dump(document, out, indent=1)
            out.write("\n")
        os.replace(temporary, self.path)
        return len(self.recorded)


def _settings_text(settings):
    if not isinstance(settings, dict) or not settings:
        return "unknown settings"
    return ", ".join(f"{key}={value}" for key, value in sorted(settings.items()))


def growth_problem(test_id, previous, peak, growth, baseline_path):
    """The gate: a Problem when *peak* exceeds *previous* by more than *growth*."""
    from heapscope.reports.text import format_bytes

    if previous is None or peak - previous <= allowed_growth(growth, previous):
        return None
    share = f", +{100 * (peak - previous) / previous:.1f}%" if previous else ""
    headline = (f"Test's peak grew from {format_bytes(previous)} to {format_bytes(peak)} "
                f"(+{format_bytes(peak - previous)}{share}), more than the {describe_growth(growth)} allowed: "
                f"previous peak {previous} B, new peak {peak} B (baseline {baseline_path})")
    return Problem(headline, [], "peak")


def marker_call(marker, facts, frames, rows) -> Optional[Problem]:
    """Evaluates one limit marker against a capture."""
    function = LIMIT_MARKERS[marker.name]
    return function(*marker.args, **marker.kwargs, _facts=facts, _frames=frames, _rows=rows)
