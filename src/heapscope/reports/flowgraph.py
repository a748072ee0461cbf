"""Flow graphs (heapprof's view of a heap): one node per line of code (or
frame) on the stacks, one edge per call between two of them, drawn by
Graphviz from the ``dot`` text this module writes.

For stacks with bytes (outermost frame first), a flow graph holds:

* the **local** bytes of a node: those of the stacks that end at it (what
  that line allocated itself);
* the **cumulative** bytes of a node: those of the stacks that contain it
  (what it allocated and everything it called did), each stack counted
  once even if the line repeats (recursion);
* the bytes of an **edge** A -> B: those of the stacks in which B directly
  follows A; so what flows into a node is its local bytes plus what flows
  out of it;
* the total bytes (stacks with no frame count here only).

:func:`flow_graph` computes one; :func:`dot_text` draws one or several
(the same program at several moments, side by side in each box);
:func:`flowgraph_dot` is the presenter, a Profile's (or a difference's
before and after) flow graph.
"""

import colorsys
import html
import math
import numbers

__all__ = ["flow_graph", "dot_text", "flowgraph_dot"]

ROOT_LABEL = "Program Root"
_COLLAPSE_LOCAL_FRACTION = 0.01  # a node allocating less than this share of its cumulative bytes may be merged
_MIN_FONT, _MAX_FONT = 14, 48
_BLUE_HUE, _RED_HUE = 0.6, 1.0   # a box's colour: its share of the total, blue (none) to red (all)
_BLACK_EDGE_FRACTION = 0.5       # an edge carrying this share of its source's bytes is drawn black


def flow_graph(weighted_stacks):
    """``(local, cumulative, edges, total)`` of *weighted_stacks*, pairs of
    (stack, bytes): a stack is a sequence of hashable nodes, outermost
    first, or None (no stack: counted in the total only). ``edges`` maps
    (caller, callee) pairs."""
    local, cumulative, edges = {}, {}, {}
    total = 0
    for stack, size in weighted_stacks:
        total += size
        if not stack:
            continue
        stack = tuple(stack)
        for node in dict.fromkeys(stack):  # each stack once per node, in order
            cumulative[node] = cumulative.get(node, 0) + size
        for edge in dict.fromkeys(zip(stack, stack[1:])):
            edges[edge] = edges.get(edge, 0) + size
        local[stack[-1]] = local.get(stack[-1], 0) + size
    return local, cumulative, edges, total


def _fraction(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if not 0 <= value <= 1:  # NaN fails too
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return float(value)


def _share(part, whole):
    return part / whole if whole else 0.0


class _Box:
    """A node as drawn: its nodes (several when a chain is merged) and, per
    graph, [local, cumulative] bytes."""

    def __init__(self, nodes, sizes):
        self.nodes = nodes
        self.sizes = sizes


def dot_text(graphs, *, min_node_fraction=0.01, min_edge_fraction=0.05, collapse_nodes=True,
             size_nodes_by_local_usage=True, node_label=str):
    """Graphviz text of *graphs* (``(local, cumulative, edges, total)``
    tuples, e.g. :func:`flow_graph`'s; several: the same program at several
    moments), each box showing per graph ``local / cumulative = share%``.

    * Nodes whose cumulative bytes are under *min_node_fraction* of their
      graph's total in every graph are left out, and edges carrying under
      *min_edge_fraction* of their source's cumulative bytes in every graph.
    * When more than one node is left with no caller, a "Program Root" box
      (cumulative: the total) calls them.
    * *collapse_nodes*: a node that allocates (almost) nothing itself and
      calls one node only, which nobody else calls, is drawn in one box with
      it (a chain of calls is one box).
    * *size_nodes_by_local_usage*: a box's font grows with the share of the
      total it allocates itself.
    * Box colours go from blue to red with the box's share of the total;
      edges from grey to black with the share of their source's bytes.

    *node_label* names a node (``str``: ``filename:lineno`` for heapprof's
    RawTraceLine)."""
    min_node = _fraction(min_node_fraction, "minNodeFraction")
    min_edge = _fraction(min_edge_fraction, "minEdgeFraction")
    graphs = [tuple(graph) for graph in graphs]
    count = len(graphs)

    boxes = {}
    for index, (local, cumulative, _edges, _total) in enumerate(graphs):
        for node, size in cumulative.items():
            box = boxes.get(node)
            if box is None:
                box = boxes[node] = _Box([node], [[0, 0] for _ in range(count)])
            box.sizes[index] = [local.get(node, 0), size]
    boxes = {node: box for node, box in boxes.items()
             if any(size[1] >= min_node * graph[3] for size, graph in zip(box.sizes, graphs))}

    # Edges that carry enough in at least one graph, with their bytes in every graph.
    edges = {}
    for graph in graphs:
        for (source, target), size in graph[2].items():
            if source == target or source not in boxes or target not in boxes or (source, target) in edges:
                continue
            sizes = [other[2].get((source, target), 0) for other in graphs]
            if any(_share(s, box_size[1]) >= min_edge if box_size[1] else s > 0
                   for s, box_size in zip(sizes, boxes[source].sizes)):
                edges[(source, target)] = sizes

    callers = {node: [] for node in boxes}
    callees = {node: [] for node in boxes}
    for source, target in edges:
        callees[source].append(target)
        callers[target].append(source)

    roots = [node for node in boxes if not callers[node]]
    if len(roots) > 1:
        root = object()  # a key no stack can hold
        boxes = {root: _Box([root], [[0, graph[3]] for graph in graphs]), **boxes}
        callers[root], callees[root] = [], list(roots)
        for node in roots:
            edges[(root, node)] = [size[1] for size in boxes[node].sizes]
            callers[node].append(root)
    else:
        root = None

    # Chains of calls drawn as one box: each merged node points at its caller's box.
    merged_into = {}

    def head(node):
        while node in merged_into:
            node = merged_into[node]
        return node

    if collapse_nodes:
        for node, box in boxes.items():
            if max(_share(local, cumulative) for local, cumulative in box.sizes) >= _COLLAPSE_LOCAL_FRACTION:
                continue
            if len(callees[node]) == 1 and len(callers[callees[node][0]]) == 1 and head(node) != callees[node][0]:
                merged_into[callees[node][0]] = node  # (not when that would close a loop of calls)

    drawn = {}
    for node, box in boxes.items():
        if node in merged_into:
            continue
        nodes, sizes = [node], [list(size) for size in box.sizes]
        follow = node
        while len(callees[follow]) == 1 and merged_into.get(callees[follow][0]) == follow:
            follow = callees[follow][0]
            nodes.append(follow)
            for size, other in zip(sizes, boxes[follow].sizes):
                size[0] += other[0]  # cumulative bytes already hold the callee's
        drawn[node] = _Box(nodes, sizes)
    box_edges = {}
    for (source, target), sizes in edges.items():
        key = (head(source), head(target))
        if key[0] != key[1]:
            previous = box_edges.get(key)
            box_edges[key] = sizes if previous is None else [max(a, b) for a, b in zip(previous, sizes)]

    ids = {node: ("root" if node is root else f"n{number}") for number, node in enumerate(drawn)}
    totals = [graph[3] for graph in graphs]
    lines = ["digraph heapscope_flow {", "  node [shape=none margin=0]"]
    for node, box in drawn.items():
        font = _MIN_FONT
        if size_nodes_by_local_usage:
            share = max((_share(size[0], total) for size, total in zip(box.sizes, totals)), default=0.0)
            font = round(_MIN_FONT + (_MAX_FONT - _MIN_FONT) * share)
        names = [ROOT_LABEL if each is root else node_label(each) for each in box.nodes]
        lines.append(f"  {ids[node]} [fontsize={font} label={_box_label(names, box.sizes, totals)}]")
    for (source, target), sizes in box_edges.items():
        share = max(_share(size, box_size[1]) for size, box_size in zip(sizes, drawn[source].sizes))
        lines.append(f'  {ids[source]} -> {ids[target]} [color="{_edge_colour(share, min_edge)}" '
                     f'penwidth={1 + 3 * min(share, 1):.2f} label="{" / ".join(_bytes(s) for s in sizes)}"]')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _bytes(size):
    from heapscope.reports.text import format_bytes

    return format_bytes(size)


def _box_label(names, sizes, totals):
    """A Graphviz HTML-like label: the node's lines of code, then one cell per graph."""
    from heapscope.reports.exports import _clean
    from heapscope.reports.text import safe_text

    span = max(len(sizes), 1)
    rows = [f'<tr><td colspan="{span}" bgcolor="white">{html.escape(safe_text(_clean(name)), quote=False)}</td></tr>'
            for name in names]
    cells = []
    for (local, cumulative), total in zip(sizes, totals):
        share = _share(cumulative, total)
        cells.append(f'<td bgcolor="{_box_colour(share)}">{_bytes(local)} / {_bytes(cumulative)} = '
                     f'{math.floor(100 * share + 1e-9)}%</td>')
    if cells:
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return '<<table border="1" cellborder="0" cellspacing="0" cellpadding="4">' + "".join(rows) + "</table>>"


def _box_colour(share):
    hue = _BLUE_HUE + (_RED_HUE - _BLUE_HUE) * min(max(share, 0.0), 1.0)
    red, green, blue = colorsys.hsv_to_rgb(hue % 1.0, 0.6, 0.95)
    return "#" + "".join(f"{round(255 * channel):02x}" for channel in (red, green, blue))


def _edge_colour(share, min_edge):
    """Light grey at the threshold (or under it: the Program Root's edges), black from _BLACK_EDGE_FRACTION up."""
    black_from = max(min_edge, _BLACK_EDGE_FRACTION)
    level = 0 if share >= black_from else round(192 * (black_from - max(share, min_edge)) / (black_from - min_edge))
    return f"#{level:02x}{level:02x}{level:02x}"


def flowgraph_dot(profile, *, min_node_fraction=0.01, min_edge_fraction=0.05, collapse_nodes=True,
                  size_nodes_by_local_usage=True):
    """The presenter: *profile*'s flow graph as Graphviz text (:func:`dot_text`),
    nodes being its frames; a difference draws its before and after side by side."""
    sides = ("before_bytes", "bytes") if profile.is_diff else ("bytes",)
    graphs = [flow_graph((sample.stack, getattr(sample, side)) for sample in profile.samples) for side in sides]
    return dot_text(graphs, min_node_fraction=min_node_fraction, min_edge_fraction=min_edge_fraction,
                    collapse_nodes=collapse_nodes, size_nodes_by_local_usage=size_nodes_by_local_usage,
                    node_label=lambda frame: frame.describe())
