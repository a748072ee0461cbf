"""heapprof 1.0.2's FlowGraph: the heap at one moment as a directed graph
of lines of code (``Reader.flowGraph`` makes one), written for Graphviz.

The definitions (heapscope.reports.flowgraph computes and draws them):

* ``nodeLocalUsage[line]``: the bytes of the traces that end at *line*
  (what it allocated itself); they add up to the total over all lines;
* ``nodeCumulativeUsage[line]``: the bytes of the traces that contain
  *line* (what it and everything it called allocated), each trace once;
* ``edgeUsage[(a, b)]``: the bytes of the traces in which *b* directly
  follows *a*; so for any line, what flows in is its local bytes plus what
  flows out;
* ``totalUsage``: every byte of the snapshot, the "other" bucket included.

``dot -Tsvg -o graph.svg graph.dot`` draws the file. Each box lists its
lines of code (a chain of calls that allocate almost nothing themselves is
one box) and, per moment, ``local / cumulative = share%``, coloured from
blue to red by that share; edges are labelled with their bytes.
"""

from typing import Dict, NamedTuple, TextIO, Tuple

from heapscope.heapprof.types import RawTraceLine

__all__ = ["FlowGraph"]


class FlowGraph(NamedTuple):
    """The heap at one moment as a graph of lines of code (see the module's doc)."""

    nodeLocalUsage: Dict[RawTraceLine, int]
    nodeCumulativeUsage: Dict[RawTraceLine, int]
    edgeUsage: Dict[Tuple[RawTraceLine, RawTraceLine], int]
    totalUsage: int

    def asDotFile(self, dotFile: TextIO, minNodeFraction: float = 0.01, minEdgeFraction: float = 0.05,
                  collapseNodes: bool = True, sizeNodesBasedOnLocalUsage: bool = True) -> None:
        """Writes the graph to *dotFile* (a text stream) in Graphviz's dot language.

        Args:
            minNodeFraction: lines whose cumulative bytes are under this
                fraction of the total are left out.
            minEdgeFraction: calls carrying under this fraction of their
                caller's cumulative bytes are left out.
            collapseNodes: a line that allocates (almost) nothing itself and
                leads to one line only, which nothing else leads to, shares
                that line's box.
            sizeNodesBasedOnLocalUsage: a box's font grows with the share of
                the total its lines allocate themselves.

        Raises:
            ValueError: a fraction outside [0, 1].
        """
        dotFile.write(_dot([self], minNodeFraction, minEdgeFraction, collapseNodes, sizeNodesBasedOnLocalUsage))

    def writeDotFile(self, filename: str, **kwargs) -> None:
        """asDotFile into the file *filename* (UTF-8); asDotFile's keyword arguments."""
        self.compare(filename, self, **kwargs)

    @classmethod
    def compare(cls, dotFileName: str, *usageGraphs: "FlowGraph", minNodeFraction: float = 0.01,
                minEdgeFraction: float = 0.05, collapseNodes: bool = True,
                sizeNodesBasedOnLocalUsage: bool = True) -> None:
        """Writes *usageGraphs* (usually the same run at several moments) as
        one dot graph to the file *dotFileName*: each box shows one
        ``local / cumulative = share%`` cell per graph, in order, and each
        edge its bytes per graph (``a / b / c``). A line kept in any graph
        is drawn. The other arguments are asDotFile's."""
        text = _dot(usageGraphs, minNodeFraction, minEdgeFraction, collapseNodes, sizeNodesBasedOnLocalUsage)
        with open(dotFileName, "w", encoding="utf-8") as output:  # opened once the arguments are found good
            output.write(text)


def _dot(graphs, min_node_fraction, min_edge_fraction, collapse_nodes, size_nodes):
    from heapscope.reports.flowgraph import dot_text

    return dot_text(graphs, min_node_fraction=min_node_fraction, min_edge_fraction=min_edge_fraction,
                    collapse_nodes=collapse_nodes, size_nodes_by_local_usage=size_nodes)
