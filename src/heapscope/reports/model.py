"""The report model: what every door produces and every presenter consumes.

A :class:`Profile` is a set of stack samples: each :class:`Sample` is a
stack (outermost frame first), the bytes and blocks held there, the thread
and the allocator. Every view is made from samples:

* the call tree (:meth:`Profile.call_tree`): frames -> bytes, blocks and
  children, per thread or merged, top-down or inverted;
* the location table (:meth:`Profile.locations`): grouped by innermost frame;
* the memory timeline (:class:`Timeline`): time, resident size, heap.

Adapters (``heapscope.reports.adapters``) make Profiles from a capture, a
tracemalloc snapshot or a pair of them, a heapprof digest snapshot and a
pools snapshot or diff. Presenters (``heapscope.reports.presenters``) turn a
Profile into text, JSON, collapsed stacks, pprof, speedscope, CSV, HTML,
a Graphviz flow graph or a PNG time plot.

A difference of two profiles is a Profile whose samples carry
``before_bytes``/``before_blocks`` as well (:func:`diff_profiles`).
"""

from dataclasses import dataclass, field
from typing import Dict, List, NamedTuple, Optional, Tuple

__all__ = ["Frame", "Sample", "Profile", "CallNode", "LocationRow", "Timeline", "TemporalSnapshot",
           "UNKNOWN_FRAME", "diff_profiles", "is_import_machinery"]


class Frame(NamedTuple):
    """One frame: a Python function at a line, or a native function. A tuple,
    so that hashing and comparing the frames of large profiles is C's work."""

    function: str
    filename: str
    lineno: int
    native: bool = False

    @property
    def is_native(self):
        return self.native

    def __str__(self):
        """As a traceback line: ``  File "app.py", line 10, in f``."""
        return f'  File "{self.filename}", line {self.lineno}, in {self.function}'

    def describe(self):
        """``function (file:line)``, or ``function`` for a native frame without a line."""
        if self.native and not self.lineno:
            return f"{self.function} ({self.filename})" if self.filename else self.function
        return f"{self.function} ({self.filename}:{self.lineno})"


UNKNOWN_FRAME = Frame("<unknown>", "<unknown>", 0)

# Frames of Python's import system and of heapscope itself: the flame graph's
# "hide import machinery" switch folds them away.
_IMPORT_FILES = ("<frozen importlib._bootstrap>", "<frozen importlib._bootstrap_external>", "<frozen zipimport>")


def is_import_machinery(frame):
    """True for a frame of the import system (importlib's bootstrap) or of
    heapscope's own package."""
    filename = frame.filename
    if filename in _IMPORT_FILES or filename.endswith(("importlib/_bootstrap.py",
                                                        "importlib/_bootstrap_external.py")):
        return True
    return "/heapscope/" in filename.replace("\\", "/") and not frame.native


@dataclass
class Sample:
    """Bytes and blocks held at one stack (outermost frame first)."""

    stack: Tuple[Frame, ...]
    bytes: int
    blocks: int
    thread: int = 0  # 0: threads merged, or unknown
    allocator: str = ""  # "MALLOC", "PYMALLOC_MALLOC", ...; "" when the door does not say
    domain: int = 0  # the tracemalloc domain (custom domains, resource pools); 0 for Python's and malloc
    before_bytes: int = 0  # a difference: the bytes of the first profile
    before_blocks: int = 0


@dataclass
class CallNode:
    """A node of the call tree; the root's frame is None."""

    frame: Optional[Frame]
    bytes: int = 0
    blocks: int = 0
    before_bytes: int = 0
    before_blocks: int = 0
    children: Dict[Frame, "CallNode"] = field(default_factory=dict)

    def child(self, frame):
        node = self.children.get(frame)
        if node is None:
            node = self.children[frame] = CallNode(frame)
        return node

    def ordered_children(self):
        """Largest first; ties by frame, so every run prints the same."""
        return sorted(self.children.values(),
                      key=lambda n: (-max(n.bytes, n.before_bytes), -n.blocks, _frame_key(n.frame)))


def _frame_key(frame):
    return (frame.function, frame.filename, frame.lineno, frame.native)


@dataclass
class LocationRow:
    """Bytes and blocks whose innermost frame is ``frame``."""

    frame: Frame
    bytes: int
    blocks: int
    thread: int = 0
    allocator: str = ""
    before_bytes: int = 0
    before_blocks: int = 0


@dataclass
class Timeline:
    """Memory over time: parallel lists, times in seconds since the start."""

    times: List[float] = field(default_factory=list)
    rss: List[int] = field(default_factory=list)
    heap: List[int] = field(default_factory=list)
    # Merged captures (heapscope.reports.merge): each process's own timeline,
    # [(process name, Timeline)], on the same clock; this one is their sum.
    processes: List[Tuple[str, "Timeline"]] = field(default_factory=list)

    def __len__(self):
        return len(self.times)


@dataclass
class TemporalSnapshot:
    """The live heap at one moment of a timeline: bytes and blocks per stack.
    ``samples`` index into :attr:`Profile.temporal_stacks`."""

    time: float
    heap: int
    samples: Dict[int, Tuple[int, int]]  # stack index -> (bytes, blocks)


@dataclass
class Profile:
    """Stack samples and what is known about where they came from.

    ``title`` says what the bytes are ("Memory held at the high-water mark");
    ``source`` names the input (a capture's path); ``header`` holds lines
    that describe the run (command, peak, sampling); ``threads`` maps thread
    ids to names; ``sampled`` says bytes and blocks are estimates.
    ``timeline`` (optional) is memory over time, and ``temporal`` (optional)
    the heap at each moment of it, for the temporal flame graph.
    """

    title: str
    samples: List[Sample]
    source: str = ""
    header: List[str] = field(default_factory=list)
    threads: Dict[int, str] = field(default_factory=dict)
    domains: Dict[int, str] = field(default_factory=dict)  # names of custom domains (resource pools)
    sampled: bool = False
    is_diff: bool = False
    native: bool = False  # the stacks hold native frames
    timeline: Optional[Timeline] = None
    temporal_stacks: List[Tuple[Frame, ...]] = field(default_factory=list)
    temporal: List[TemporalSnapshot] = field(default_factory=list)
    start_time: Optional[float] = None  # when the run started (seconds since the epoch), if known

    @property
    def total_bytes(self):
        return sum(sample.bytes for sample in self.samples)

    @property
    def total_blocks(self):
        return sum(sample.blocks for sample in self.samples)

    @property
    def total_before_bytes(self):
        return sum(sample.before_bytes for sample in self.samples)

    def call_tree(self, thread=None, inverted=False, hide=None):
        """The call tree of the samples (of one thread if given). Inverted:
        innermost frame at the root (who allocates, then who calls them).
        *hide*: a predicate on frames to leave out (their children move up)."""
        root = CallNode(None)
        for sample in self.samples:
            if thread is not None and sample.thread != thread:
                continue
            stack = sample.stack or (UNKNOWN_FRAME,)
            if hide is not None:
                stack = tuple(frame for frame in stack if not hide(frame)) or (UNKNOWN_FRAME,)
            if inverted:
                stack = tuple(reversed(stack))
            node = root
            _add(node, sample)
            for frame in stack:
                node = node.child(frame)
                _add(node, sample)
        return root

    def locations(self, by_thread=False, by_allocator=False):
        """Rows grouped by innermost frame (and thread, allocator if asked),
        largest first."""
        groups = {}
        for sample in self.samples:
            frame = sample.stack[-1] if sample.stack else UNKNOWN_FRAME
            key = (frame, sample.thread if by_thread else 0, sample.allocator if by_allocator else "")
            row = groups.get(key)
            if row is None:
                row = groups[key] = LocationRow(frame, 0, 0, key[1], key[2])
            row.bytes += sample.bytes
            row.blocks += sample.blocks
            row.before_bytes += sample.before_bytes
            row.before_blocks += sample.before_blocks
        return sorted(groups.values(), key=lambda r: (-max(r.bytes, r.before_bytes), -r.blocks,
                                                      _frame_key(r.frame), r.thread, r.allocator))


def _add(node, sample):
    node.bytes += sample.bytes
    node.blocks += sample.blocks
    node.before_bytes += sample.before_bytes
    node.before_blocks += sample.before_blocks


def diff_profiles(before, after, title=None):
    """The difference of two profiles: one sample per (stack, thread,
    allocator) holding the after-side in ``bytes``/``blocks`` and the
    before-side in ``before_bytes``/``before_blocks``."""
    merged = {}
    for side, profile in ((0, before), (1, after)):
        for sample in profile.samples:
            key = (sample.stack, sample.thread, sample.allocator, sample.domain)
            entry = merged.get(key)
            if entry is None:
                entry = merged[key] = Sample(sample.stack, 0, 0, sample.thread, sample.allocator, sample.domain)
            if side:
                entry.bytes += sample.bytes
                entry.blocks += sample.blocks
            else:
                entry.before_bytes += sample.bytes
                entry.before_blocks += sample.blocks
    threads = {**before.threads, **after.threads}
    return Profile(
        title=title or f"Change from {before.source or 'before'} to {after.source or 'after'}",
        samples=list(merged.values()),
        source=f"{before.source} -> {after.source}",
        header=[f"before: {before.source}", f"after:  {after.source}"],
        threads=threads,
        domains={**before.domains, **after.domains},
        sampled=before.sampled or after.sampled,
        is_diff=True,
        native=before.native or after.native,
    )
