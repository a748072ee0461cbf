"""A Profile as the compact JSON document an HTML report embeds.

The page's script reads only this document (no server, no network). Shape,
version 1 (every list is flat where it can be, to keep large pages small):

``title``, ``source``, ``header`` (lines of text), ``sampled``, ``is_diff``,
``native`` (bool): as in the Profile.

``frames``: ``[function, filename, lineno, native(0/1), hidden(0/1)]`` per
frame; ``hidden`` marks import machinery and heapscope's own frames, which
the page's switch folds away.

``nodes``: the stack trie, flat ``[parent, frame, parent, frame, ...]``;
node *i* is at ``2*i``; node 0 is the root (parent -1, frame -1); a node's
stack is the frames from the root down to it (outermost first).

``threads``: ``[[id, name], ...]`` of the threads the samples name (id 0:
merged or unknown).

``allocators``: names the samples index.

``samples``: flat, ``STRIDE`` numbers each: ``node, thread index, allocator
index, bytes, blocks`` and, in a difference, ``before_bytes,
before_blocks`` (``sample_stride``: 5 or 7).

``timeline`` (or null): ``{"t": [seconds], "rss": [bytes], "heap": [bytes]}``;
merged captures add ``"processes": [{"name", "t", "heap"}, ...]``, each
process's heap on the same clock (the sums are ``rss`` and ``heap``).

``temporal`` (or null): the heap at each moment of the timeline, for the
temporal flame graph: ``{"t": [seconds], "heap": [bytes], "changes":
[[node, bytes, blocks, node, bytes, blocks, ...], ...]}`` where entry *k*
lists the stacks (trie nodes) whose live bytes changed since moment *k-1*
(their new values; 0 bytes: gone). The page replays them to show the heap
at a moment, or the moment of highest heap within a window.

``sources``: ``{filename: {lineno: text}}``, the source line of every
Python frame whose file is readable, for tooltips.
"""

import linecache

from heapscope.reports.model import is_import_machinery

VERSION = 1


class _Interner:
    """Dense ids for frames and trie nodes."""

    def __init__(self):
        self.frames = {}
        self.frame_rows = []
        self.nodes = {}  # (parent, frame id) -> node id
        self.node_pairs = [-1, -1]
        # Adapters share one tuple between the samples of a stack: its
        # node is found once (the profile keeps every stack alive meanwhile).
        self.stack_nodes = {}

    def frame(self, frame):
        index = self.frames.get(frame)
        if index is None:
            index = self.frames[frame] = len(self.frame_rows)
            self.frame_rows.append([frame.function, frame.filename, frame.lineno, int(frame.native),
                                    int(is_import_machinery(frame))])
        return index

    def node(self, stack):
        known = self.stack_nodes.get(id(stack))
        if known is not None:
            return known
        node = 0
        nodes, frames, frame = self.nodes, self.frames, self.frame
        for item in stack:
            index = frames.get(item)
            key = (node, frame(item) if index is None else index)
            child = nodes.get(key)
            if child is None:
                child = nodes[key] = len(self.node_pairs) // 2
                self.node_pairs += key
            node = child
        self.stack_nodes[id(stack)] = node
        return node


def _source_lines(frame_rows, limit_files=2000):
    sources = {}
    for function, filename, lineno, native, _hidden in frame_rows:
        if native or lineno <= 0 or filename.startswith("<"):
            continue
        if filename not in sources and len(sources) >= limit_files:
            continue
        text = linecache.getline(filename, lineno).strip()
        if text:
            sources.setdefault(filename, {})[str(lineno)] = text
    return sources


def page_data(profile, with_sources=True):
    """The document for *profile* (a dict, ready for ``json.dumps``)."""
    interner = _Interner()
    threads = {}
    allocators = {}
    stride = 7 if profile.is_diff else 5
    samples = []
    for sample in profile.samples:
        node = interner.node(sample.stack)
        thread = threads.setdefault(sample.thread, len(threads))
        allocator = allocators.setdefault(sample.allocator, len(allocators))
        samples += [node, thread, allocator, sample.bytes, sample.blocks]
        if profile.is_diff:
            samples += [sample.before_bytes, sample.before_blocks]
    timeline = None
    if profile.timeline is not None and len(profile.timeline):
        timeline = {"t": [round(t, 3) for t in profile.timeline.times], "rss": list(profile.timeline.rss),
                    "heap": list(profile.timeline.heap)}
        if profile.timeline.processes:
            timeline["processes"] = [{"name": name, "t": [round(t, 3) for t in line.times], "heap": list(line.heap)}
                                     for name, line in profile.timeline.processes]
    temporal = None
    if profile.temporal:
        stack_nodes = [interner.node(stack) for stack in profile.temporal_stacks]
        previous = {}
        changes = []
        for snapshot in profile.temporal:
            now = {stack_nodes[index]: value for index, value in snapshot.samples.items() if value[0] or value[1]}
            flat = []
            for node, (size, blocks) in now.items():
                if previous.get(node) != (size, blocks):
                    flat += [node, size, blocks]
            for node in previous.keys() - now.keys():
                flat += [node, 0, 0]
            changes.append(flat)
            previous = now
        temporal = {"t": [round(s.time, 3) for s in profile.temporal], "heap": [s.heap for s in profile.temporal],
                    "changes": changes}
    names = profile.threads
    return {
        "version": VERSION,
        "title": profile.title,
        "source": profile.source,
        "header": list(profile.header),
        "sampled": profile.sampled,
        "is_diff": profile.is_diff,
        "native": profile.native,
        "frames": interner.frame_rows,
        "nodes": interner.node_pairs,
        "threads": [[tid, names.get(tid, "merged threads" if tid == 0 else f"thread {tid}")] for tid in threads],
        "allocators": list(allocators),
        "sample_stride": stride,
        "samples": samples,
        "timeline": timeline,
        "temporal": temporal,
        "sources": _source_lines(interner.frame_rows) if with_sources else {},
    }
