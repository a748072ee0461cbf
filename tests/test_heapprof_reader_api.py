"""heapscope.heapprof's Reader with heapprof 1.0.2's API, used the way code
written for heapprof uses it: a program profiled by heapscope.heapprof
allocates known sizes at known lines (every allocation recorded), and the
run is read back with ``with heapprof.Reader(filebase) as reader:``. The
digest's life (hasDigest, makeDigest, close), rawTrace, fastGetUsage,
timePlot (data, pyplot, PNG), flow graphs (checked by hand and drawn by
Graphviz's ``dot``) and flame graphs (read back, and drawn by flamegraph.pl)."""

import io
import json
import os
import re
import shutil
import struct
import subprocess
from xml.etree import ElementTree

import pytest

import heapscope
import heapscope.heapprof as heapprof
from heapscope.heapprof import FlowGraph, RawTraceLine, Snapshot, TraceLine
from heapscope.reports.flowgraph import dot_text, flow_graph
from capture_helpers import build_extension, run_script, write_script

MIB = 1 << 20

# Three states, each held for 0.3 s: A (3 MiB through left), B (+ 1 MiB
# through right, + 2 MiB at own), C (left's block freed).
PROGRAM = """
import sys
import time
import hs_alloc
import heapscope.heapprof as heapprof

hs_alloc.malloc(255, 16); hs_alloc.free(255)   # warm-up: the first calls resolve their symbols


def leaf(slot, size):
    hs_alloc.malloc(slot, size)        # @leaf


def left(slot):
    leaf(slot, 3 << 20)                # @left


def right(slot):
    leaf(slot, 1 << 20)                # @right


def own(slot):
    hs_alloc.malloc(slot, 2 << 20)     # @own


# Warm-up: on 3.9 a function's first call allocates its frame (filed under
# the caller's line); later calls reuse it.
for warm in (left, right, own):
    warm(254)
    hs_alloc.free(254)

heapprof.start(sys.argv[1], {1: 1.0})  # every allocation recorded: exact bytes
time.sleep(0.1)
left(1)                                # @call_left
time.sleep(0.3)
right(2)                               # @call_right
own(3)                                 # @call_own
time.sleep(0.3)
hs_alloc.free(1)
time.sleep(0.3)
heapprof.stop()
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("api")
    extension = build_extension(str(tmp_path_factory.mktemp("ext")))
    script = directory / "program.py"
    lines = write_script(script, PROGRAM)
    base = str(directory / "run")
    run_script(script, base, extra_paths=[extension])
    return base, str(script), lines


def _fresh_copy(run, directory):
    """The run's .hpm and .hpd under a new name, without a digest."""
    base = str(directory / "copy")
    for suffix in (".hpm", ".hpd"):
        shutil.copyfile(run[0] + suffix, base + suffix)
    return base


@pytest.fixture(scope="module")
def digest(run):
    heapprof.read(run[0], timeInterval=0.05, precision=0)
    return run


def _line(run, name):
    return RawTraceLine(run[1], run[2][name])


def _states(reader, run):
    """{"A"|"B"|"C": a snapshot well inside that state} (the middle one of its run of snapshots)."""
    leaf, own = _line(run, "leaf"), _line(run, "own")
    seen = {}
    for snapshot in reader.snapshots():
        (at_leaf, at_own), _total = reader.fastGetUsage(snapshot, (leaf, own), cumulative=False)
        state = {(3 * MIB, 0): "A", (4 * MIB, 2 * MIB): "B", (1 * MIB, 2 * MIB): "C"}.get((at_leaf, at_own))
        if state:
            seen.setdefault(state, []).append(snapshot)
    assert sorted(seen) == ["A", "B", "C"], {key: len(value) for key, value in seen.items()}
    assert max(s.relativeTime for s in seen["A"]) < min(s.relativeTime for s in seen["B"])
    assert max(s.relativeTime for s in seen["B"]) < min(s.relativeTime for s in seen["C"])
    return {state: snapshots[len(snapshots) // 2] for state, snapshots in seen.items()}


# -- the digest's life ---------------------------------------------------------------------------------------------

def test_before_a_digest_the_time_accessors_fail_as_heapprofs_do(run, tmp_path, capsys):
    base = _fresh_copy(run, tmp_path)
    with heapprof.Reader(base) as reader:
        assert not reader.hasDigest()
        assert reader.samplingRate() == {1: 1.0}
        assert reader.initialTime() == json.loads(open(base + ".hpm").read())["start_time"]
        for call in (reader.elapsedTime, reader.finalTime, reader.snapshotInterval, reader.snapshots,
                     lambda: reader.snapshotAt(0), lambda: reader.flowGraphAt(0), lambda: reader.timePlot(),
                     lambda: reader.flameGraphAt(0, io.StringIO()), lambda: reader.compareFlowGraphs(
                         str(tmp_path / "x.dot"), 0)):
            with pytest.raises(AssertionError, match="no digest"):
                call()
        assert reader.trace(1) is None and reader.rawTrace(1) is None  # no trace index is known yet
        assert not os.path.exists(base + ".hpc")

        reader.makeDigest(timeInterval=0.05, precision=0)  # quiet
        assert capsys.readouterr().err == ""
        assert reader.hasDigest() and reader.snapshotInterval() == 0.05
        assert reader.elapsedTime() == reader.snapshots()[-1].relativeTime
        assert reader.finalTime() == reader.initialTime() + reader.elapsedTime()
        assert len(reader.snapshots()) >= 18  # 1 s of sleeps at 0.05 s
        assert reader.snapshotAt(0.1).relativeTime == 0.1 and reader.snapshotAt(0.149).relativeTime == 0.1
    with pytest.raises(ValueError, match="closed"):
        reader.snapshots()
    with pytest.raises(ValueError, match="closed"):
        reader.trace(1)

    # A new Reader finds the digest; makeDigest replaces it, whatever it was.
    with heapprof.Reader(base) as reader:
        assert reader.hasDigest() and reader.snapshotInterval() == 0.05
        reader.makeDigest(timeInterval=0.2, precision=0.5, verbose=True)
        err = capsys.readouterr().err
        assert f"Digesting {base}.hpd" in err and f"written to {base}.hpc" in err
        assert reader.snapshotInterval() == 0.2
    with heapprof.Reader(base) as reader:
        assert reader.snapshotInterval() == 0.2
        with pytest.raises(ValueError, match="precision"):
            reader.makeDigest(precision=1)
        assert reader.hasDigest()  # the arguments are checked first


def test_read_makes_the_digest_verbosely_once(run, tmp_path, capsys):
    base = _fresh_copy(run, tmp_path)
    with heapprof.read(base, timeInterval=0.1) as reader:
        assert reader.hasDigest() and reader.snapshotInterval() == 0.1
    assert "Digesting" in capsys.readouterr().err
    with heapprof.read(base, timeInterval=0.5) as reader:  # exists: the arguments do not apply
        assert reader.snapshotInterval() == 0.1
    assert capsys.readouterr().err == ""


def test_an_interrupted_digest_leaves_no_digest_and_the_old_file(run, tmp_path, monkeypatch):
    base = _fresh_copy(run, tmp_path)
    heapprof.read(base, timeInterval=0.1).close()
    before = open(base + ".hpc", "rb").read()

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr("heapscope.heapprof.reader.build_digest", interrupted)
    reader = heapprof.Reader(base)
    with pytest.raises(KeyboardInterrupt):
        reader.makeDigest(timeInterval=0.05)
    assert not reader.hasDigest()
    assert open(base + ".hpc", "rb").read() == before


def test_make_digest_refuses_to_overwrite_a_foreign_file(run, tmp_path):
    base = _fresh_copy(run, tmp_path)
    reader = heapprof.Reader(base)
    with open(base + ".hpc", "wb") as out:
        out.write(b"my notes")
    with pytest.raises(heapprof.HeapprofFileError, match="not a heapscope digest"):
        reader.makeDigest()
    assert open(base + ".hpc", "rb").read() == b"my notes"


# -- traces, raw traces and usage ------------------------------------------------------------------------------

def test_traces_and_raw_traces(digest):
    base, script, lines = digest
    with heapprof.Reader(base) as reader:
        states = _states(reader, digest)
        by_trace = {tuple(reader.rawTrace(index)): size for index, size in states["B"].usage.items()
                    if index != heapprof.OTHER_TRACE}
        left = (_line(digest, "call_left"), _line(digest, "left"), _line(digest, "leaf"))
        right = (_line(digest, "call_right"), _line(digest, "right"), _line(digest, "leaf"))
        own = (_line(digest, "call_own"), _line(digest, "own"))
        assert (by_trace[left], by_trace[right], by_trace[own]) == (3 * MIB, 1 * MIB, 2 * MIB)
        index = next(i for i in states["B"].usage if i and tuple(reader.rawTrace(i)) == left)
        trace = reader.trace(index)
        assert all(type(line) is TraceLine for line in trace) and TraceLine._fields == ("filename", "lineno",
                                                                                       "fileline")
        assert [(line.filename, line.lineno) for line in trace] == list(left)
        assert trace[-1].fileline == "hs_alloc.malloc(slot, size)        # @leaf"
        assert reader.rawTrace(heapprof.OTHER_TRACE) is None and reader.trace(heapprof.OTHER_TRACE) is None
        assert reader.rawTrace(10 ** 6) is None
        with pytest.raises(TypeError):
            reader.rawTrace(True)
        assert str(left[-1]) == f"{script}:{lines['leaf']}" and RawTraceLine.parse(str(left[-1])) == left[-1]
        assert str(RawTraceLine("<frozen x>", 0)) == "<frozen x>"


def test_fast_get_usage(digest):
    base, _script, _lines = digest
    with heapprof.Reader(base) as reader:
        states = _states(reader, digest)
        wanted = (_line(digest, "leaf"), _line(digest, "left"), _line(digest, "own"), _line(digest, "call_left"))
        b = states["B"]
        assert reader.fastGetUsage(b, wanted) == ((4 * MIB, 3 * MIB, 2 * MIB, 3 * MIB), b.totalUsage())
        assert reader.fastGetUsage(b, wanted, cumulative=False) == ((4 * MIB, 0, 2 * MIB, 0), b.totalUsage())
        assert reader.fastGetUsage(states["C"], wanted)[0] == (1 * MIB, 0, 2 * MIB, 0)
        text = tuple(str(line) for line in wanted)  # "filename:lineno" works too
        assert reader.fastGetUsage(b, text) == reader.fastGetUsage(b, wanted)
        # The "other" bucket counts in the total only.
        assert reader.fastGetUsage(Snapshot(0, {heapprof.OTHER_TRACE: 7}), wanted) == ((0, 0, 0, 0), 7)


# -- time plots ------------------------------------------------------------------------------------------------

def test_time_plot_data(digest):
    base, _script, _lines = digest
    with heapprof.Reader(base) as reader:
        plot = reader.timePlot({"own": _line(digest, "own"), "leaf": str(_line(digest, "leaf"))})
        assert isinstance(plot, heapprof.Reader.TimePlot) and plot.labels == ["leaf", "own"]
        snapshots = reader.snapshots()
        assert plot.times == [s.relativeTime for s in snapshots]
        assert plot.totalUsage == [s.totalUsage() for s in snapshots]
        for snapshot, leaf, own in zip(snapshots, *plot.lines):
            assert (leaf, own) == reader.fastGetUsage(snapshot, (_line(digest, "leaf"), _line(digest, "own")))[0]
        assert max(plot.lines[0]) == 4 * MIB and max(plot.lines[1]) == 2 * MIB
        bare = reader.timePlot()
        assert bare.lines == [] and bare.labels == [] and bare.totalUsage == plot.totalUsage
        with pytest.raises(ValueError):
            reader.timePlot({"bad": "no line number"})


def test_time_plot_pyplot_draws_three_panels(digest, monkeypatch):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    shown = []
    monkeypatch.setattr(plt, "show", lambda *args, **kwargs: shown.append(plt.gcf()))
    with heapprof.Reader(digest[0]) as reader:
        plot = reader.timePlot({"leaf": _line(digest, "leaf")})
        plot.pyplot(scale=1 << 10)
        total, raw, share = shown[0].axes
        assert list(total.lines[0].get_ydata()) == [t / 1024 for t in plot.totalUsage]
        assert list(raw.lines[0].get_ydata()) == [v / 1024 for v in plot.lines[0]]
        assert list(share.lines[0].get_ydata()) == [v / t if t else 0.0  # the heap may be empty at 0 s
                                                    for v, t in zip(plot.lines[0], plot.totalUsage)]
        assert raw.get_legend().get_texts()[0].get_text() == "leaf"
        reader.timePlot().pyplot()
        assert len(shown[1].axes) == 1
        assert list(shown[1].axes[0].lines[0].get_ydata()) == [t / MIB for t in plot.totalUsage]
    for figure in shown:
        plt.close(figure)


def _png_size(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and data[-8:-4] == b"IEND"
    return struct.unpack(">II", data[16:24])


def test_time_plot_png_through_the_reports_presenter(digest, tmp_path):
    pytest.importorskip("matplotlib")
    with heapprof.Reader(digest[0]) as reader:
        reader.writeTimePlot(tmp_path / "lines.png", {"leaf": str(_line(digest, "leaf"))})
        assert _png_size((tmp_path / "lines.png").read_bytes()) == (1000, 800)
        reader.writeTimePlot(str(tmp_path / "total.png"), top=0)
        assert _png_size((tmp_path / "total.png").read_bytes()) == (1000, 500)
        from heapscope import reports

        whole = reports.profile(reader)  # the whole run as a Profile: every snapshot a moment, the peak as samples
        assert [moment.time for moment in whole.temporal] == [s.relativeTime for s in reader.snapshots()]
        assert [moment.heap for moment in whole.temporal] == [s.totalUsage() for s in reader.snapshots()]
        assert whole.total_bytes == max(s.totalUsage() for s in reader.snapshots())
        reports.write_report(reader, tmp_path / "reader.png")
        assert _png_size((tmp_path / "reader.png").read_bytes()) == (1000, 800)
        # The same presenter on a capture that is not heapprof's: its heap over time by stack.

        with heapscope.FileReader(digest[0] + ".hpd") as capture:
            reports.write_report(capture, tmp_path / "capture.png")
        assert _png_size((tmp_path / "capture.png").read_bytes()) == (1000, 800)


# -- flow graphs -----------------------------------------------------------------------------------------------

def test_flow_graph_values(digest):
    with heapprof.Reader(digest[0]) as reader:
        states = _states(reader, digest)
        graph = reader.flowGraph(states["B"])
        assert isinstance(graph, FlowGraph) and graph == reader.flowGraphAt(states["B"].relativeTime)
        leaf, left, right, own = (_line(digest, name) for name in ("leaf", "left", "right", "own"))
        call_left = _line(digest, "call_left")
        assert graph.totalUsage == states["B"].totalUsage()
        assert (graph.nodeLocalUsage[leaf], graph.nodeLocalUsage[own]) == (4 * MIB, 2 * MIB)
        assert left not in graph.nodeLocalUsage
        assert [graph.nodeCumulativeUsage[line] for line in (leaf, left, right, own, call_left)] == [
            4 * MIB, 3 * MIB, 1 * MIB, 2 * MIB, 3 * MIB]
        assert graph.edgeUsage[(left, leaf)] == 3 * MIB and graph.edgeUsage[(right, leaf)] == 1 * MIB
        assert graph.edgeUsage[(call_left, left)] == 3 * MIB
        assert sum(graph.nodeLocalUsage.values()) <= graph.totalUsage


def test_flow_graph_of_heapprofs_example():
    """The example of heapprof's FlowGraph docstring: stacks AD=16, ACD=17,
    ACE=19, AC=21, BC=3, BCD=7."""
    a, b, c, d, e = (RawTraceLine("x.py", n) for n in range(1, 6))
    stacks = [((a, d), 16), ((a, c, d), 17), ((a, c, e), 19), ((a, c), 21), ((b, c), 3), ((b, c, d), 7), (None, 5)]
    graph = FlowGraph(*flow_graph(stacks))
    assert graph.totalUsage == 88
    assert graph.nodeLocalUsage == {d: 40, e: 19, c: 24}
    assert graph.nodeCumulativeUsage == {a: 73, b: 10, c: 67, d: 40, e: 19}
    assert graph.edgeUsage == {(a, d): 16, (a, c): 57, (c, d): 24, (c, e): 19, (b, c): 10}
    # Recursion: a trace counts once per line.
    twice = FlowGraph(*flow_graph([((a, b, a, b), 8)]))
    assert twice.nodeCumulativeUsage == {a: 8, b: 8} and twice.edgeUsage == {(a, b): 8, (b, a): 8}

    boxes, edges = _parse_dot(dot_text([graph]))
    assert sorted(boxes.values(), key=lambda box: box[0]) == [
        (["Program Root"], ["0 B / 88 B = 100%"]), (["x.py:1"], ["0 B / 73 B = 82%"]),
        (["x.py:2"], ["0 B / 10 B = 11%"]), (["x.py:3"], ["24 B / 67 B = 76%"]), (["x.py:4"], ["40 B / 40 B = 45%"]),
        (["x.py:5"], ["19 B / 19 B = 21%"])]
    named = {(boxes[src][0][0], boxes[dst][0][0]): label for src, dst, label in edges}
    assert named == {("Program Root", "x.py:1"): "73 B", ("Program Root", "x.py:2"): "10 B",
                     ("x.py:1", "x.py:4"): "16 B", ("x.py:1", "x.py:3"): "57 B", ("x.py:3", "x.py:4"): "24 B",
                     ("x.py:3", "x.py:5"): "19 B", ("x.py:2", "x.py:3"): "10 B"}
    # Thresholds: B (10 of 88) under 20% goes, and A -> D (16 of A's 73) under 25%: A is the only root, and
    # calls C alone, which nothing else calls: A and C share a box (C's local bytes, A's cumulative ones).
    boxes, edges = _parse_dot(dot_text([graph], min_node_fraction=0.2, min_edge_fraction=0.25))
    assert sorted(boxes.values()) == [(["x.py:1", "x.py:3"], ["24 B / 73 B = 82%"]),
                                      (["x.py:4"], ["40 B / 40 B = 45%"]), (["x.py:5"], ["19 B / 19 B = 21%"])]
    assert sorted((boxes[src][0][-1], boxes[dst][0][-1], label) for src, dst, label in edges) == [
        ("x.py:3", "x.py:4", "24 B"), ("x.py:3", "x.py:5", "19 B")]
    # C -> E (19 of C's 67) under 30% goes too: E has no caller left, and a Program Root calls A and E.
    boxes, edges = _parse_dot(dot_text([graph], min_node_fraction=0.2, min_edge_fraction=0.3))
    assert sorted((boxes[src][0][-1], boxes[dst][0][-1]) for src, dst, _ in edges) == [
        ("Program Root", "x.py:3"), ("Program Root", "x.py:5"), ("x.py:3", "x.py:4")]
    for fraction in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="minNodeFraction"):
            graph.asDotFile(io.StringIO(), minNodeFraction=fraction)
    with pytest.raises(TypeError, match="minEdgeFraction"):
        graph.asDotFile(io.StringIO(), minEdgeFraction="0.1")


def test_a_chain_of_calls_is_one_box_unless_asked_not_to():
    a, b, c, d = (RawTraceLine("y.py", n) for n in range(1, 5))
    graph = FlowGraph(*flow_graph([((a, b, c), 60), ((a, b, d), 40)]))
    boxes, edges = _parse_dot(dot_text([graph]))
    assert sorted(box[0] for box in boxes.values()) == [["y.py:1", "y.py:2"], ["y.py:3"], ["y.py:4"]]
    assert len(edges) == 2
    boxes, _ = _parse_dot(dot_text([graph], collapse_nodes=False))
    assert len(boxes) == 4


_NODE = re.compile(r"^  (\w+) \[fontsize=(\d+) label=<(.*)>\]$")
_EDGE = re.compile(r'^  (\w+) -> (\w+) \[color="#[0-9a-f]{6}" penwidth=[\d.]+ label="([^"]*)"\]$')


def _parse_dot(text):
    """({node id: ([lines of code], [size cells])}, [(source, target, label)]) of dot_text's output."""
    lines = text.splitlines()
    assert lines[0] == "digraph heapscope_flow {" and lines[-1] == "}"
    boxes, edges = {}, []
    for line in lines[2:-1]:
        node, edge = _NODE.match(line), _EDGE.match(line)
        assert node or edge, line
        if node:
            cells = re.findall(r"<td[^>]*>(.*?)</td>", node.group(3))
            names = [cell for cell in cells if " / " not in cell]
            boxes[node.group(1)] = (names, [cell for cell in cells if " / " in cell])
        else:
            edges.append(edge.groups())
    return boxes, edges


def _dot_svg(path):
    """*path* drawn by Graphviz: the SVG's text elements."""
    dot = shutil.which("dot")
    if dot is None:
        pytest.skip("Graphviz's dot is not installed (apt-get install graphviz; scripts/setup.sh does as root)")
    result = subprocess.run([dot, "-Tsvg", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr, result.stderr
    root = ElementTree.fromstring(result.stdout)
    return [element.text for element in root.iter("{http://www.w3.org/2000/svg}text")]


def test_compare_flow_graphs_drawn_by_dot(digest, tmp_path):
    with heapprof.Reader(digest[0]) as reader:
        states = _states(reader, digest)
        path = tmp_path / "compare.dot"
        reader.compareFlowGraphs(str(path), states["B"].relativeTime, states["C"].relativeTime)
        boxes, edges = _parse_dot(path.read_text())
        leaf = str(_line(digest, "leaf"))
        (names, cells), = [box for box in boxes.values() if box[0][-1] == leaf]
        total_b, total_c = states["B"].totalUsage(), states["C"].totalUsage()
        assert [cell.split(" = ")[0] for cell in cells] == ["4.0 MiB / 4.0 MiB", "1.0 MiB / 1.0 MiB"]
        assert cells[0].endswith(f"= {int(100 * 4 * MIB / total_b)}%")
        # <module> calling left() and left() calling leaf() are one box (a chain that allocates nothing).
        chain = [box[0] for box in boxes.values() if str(_line(digest, "left")) in box[0]]
        assert chain == [[str(_line(digest, "call_left")), str(_line(digest, "left"))]]
        assert ("3.0 MiB / 0 B" in [label for _, _, label in edges])  # left's block is gone at C
        texts = _dot_svg(path)
        assert leaf in texts and "Program Root" in texts
        assert any(text.startswith("4.0 MiB / 4.0 MiB") for text in texts)

        single = tmp_path / "single.dot"
        reader.flowGraphAt(states["B"].relativeTime).writeDotFile(str(single), minNodeFraction=0.2)
        boxes, _ = _parse_dot(single.read_text())
        assert all(len(cells) == 1 for _, cells in boxes.values())
        assert not any(str(_line(digest, "right")) in names for names, _ in boxes.values())  # 1 MiB < 20%
        assert leaf in _dot_svg(single)
        assert total_c < total_b


def test_hostile_file_names_reach_dot_as_text(tmp_path):
    odd = RawTraceLine('a<b>&"c\x01\n\udcff.py', 3)
    other = RawTraceLine("ok.py", 1)
    graph = FlowGraph(*flow_graph([((other, odd), 100), ((RawTraceLine("z.py", 2),), 50)]))
    path = tmp_path / "odd.dot"
    FlowGraph.compare(str(path), graph, graph, collapseNodes=False)
    texts = _dot_svg(path)
    assert 'a<b>&"c\\x01\\n\\udcff.py:3' in texts
    FlowGraph.compare(str(tmp_path / "none.dot"))  # no graph: an empty one
    assert _dot_svg(tmp_path / "none.dot") == []
    with pytest.raises(ValueError):
        FlowGraph.compare(str(tmp_path / "bad.dot"), graph, minEdgeFraction=2)
    assert not os.path.exists(tmp_path / "bad.dot")


def test_the_dot_presenter_draws_any_profile(digest, tmp_path):
    from heapscope import reports

    with heapscope.FileReader(digest[0] + ".hpd") as capture:
        path = reports.write_report(capture, tmp_path / "peak.dot")
    texts = _dot_svg(path)
    assert any(text.startswith(f"leaf ({digest[1]}:{digest[2]['leaf']})") for text in texts), texts
    assert any(text.startswith("4.0 MiB / 4.0 MiB") for text in texts)


# -- flame graphs ----------------------------------------------------------------------------------------------

def test_flame_graphs_read_back(digest, tmp_path):
    base, script, lines = digest
    with heapprof.Reader(base) as reader:
        states = _states(reader, digest)
        b = states["B"]
        out = io.StringIO()
        reader.flameGraph(b, out)
        text = out.getvalue()
        expected = {f"{script}:{lines['call_left']};{script}:{lines['left']};{script}:{lines['leaf']}": 3 * MIB,
                    f"{script}:{lines['call_right']};{script}:{lines['right']};{script}:{lines['leaf']}": 1 * MIB,
                    f"{script}:{lines['call_own']};{script}:{lines['own']}": 2 * MIB}
        read_back = {}
        for line in text.splitlines():
            stack, size = line.rsplit(" ", 1)
            assert stack not in read_back
            read_back[stack] = int(size)
        assert {stack: read_back[stack] for stack in expected} == expected
        assert sum(read_back.values()) == b.totalUsage()
        assert list(read_back.values()) == sorted(read_back.values(), reverse=True) or "OTHER" in read_back

        at = io.StringIO()
        reader.flameGraphAt(b.relativeTime, at)
        assert at.getvalue() == text
        reader.writeFlameGraph(str(tmp_path / "by-time.txt"), b.relativeTime)
        reader.writeFlameGraph(str(tmp_path / "by-snapshot.txt"), b)
        assert (tmp_path / "by-time.txt").read_text() == (tmp_path / "by-snapshot.txt").read_text() == text

        from test_exports import flamegraph_titles, run_flamegraph

        boxes = dict(flamegraph_titles(run_flamegraph(tmp_path / "by-time.txt")))
        assert boxes["all"] == b.totalUsage()
        assert boxes[f"{script}:{lines['leaf']}"] in (3 * MIB, 1 * MIB)  # one box per call site
        assert boxes[f"{script}:{lines['own']}"] == 2 * MIB


def test_the_package_exports_heapprofs_names():
    for name in ("Reader", "DEFAULT_SAMPLING_RATE", "FlowGraph", "HeapTrace", "RawTrace", "RawTraceLine", "Snapshot",
                 "TraceLine", "start", "stop", "gatherStats", "isProfiling", "read"):
        assert name in heapprof.__all__ and hasattr(heapprof, name)
    assert heapprof.DEFAULT_SAMPLING_RATE == {128: 1e-4, 8192: 0.1}
    assert RawTraceLine._fields == ("filename", "lineno") and Snapshot._fields == ("relativeTime", "usage")
    assert FlowGraph._fields == ("nodeLocalUsage", "nodeCumulativeUsage", "edgeUsage", "totalUsage")
    assert heapprof.Reader.TimePlot._fields == ("times", "totalUsage", "lines", "labels")
    for gone in ("asCollapsedStack", "writeCollapsedStack", "plotTotalUsage", "topTraces"):
        assert not hasattr(heapprof.Reader, gone)
