"""The report model and its adapters: ground truth from each door, and the
commands built on them (heapscope diff and its CI gate)."""

import json
import os
import subprocess
import sys

import pytest

from capture_helpers import heapscope_cli, marked_lines, run_script, write_script
from heapscope.reports.model import Frame, Profile, Sample, diff_profiles
from heapscope.reports.page_data import page_data

MAIN = Frame("main", "app.py", 1)
F = Frame("f", "app.py", 10)
G = Frame("g", "app.py", 20)
H = Frame("h", "lib.py", 5)


def small_profile():
    return Profile("test", [
        Sample((MAIN, F), 1_000_000, 2, thread=1, allocator="MALLOC"),
        Sample((MAIN, G), 250_000, 1, thread=2, allocator="PYMALLOC_MALLOC"),
        Sample((MAIN, G, H), 4_000, 4, thread=1, allocator="MALLOC"),
        Sample((H,), 16, 1, thread=2, allocator="MALLOC"),
    ], threads={1: "main", 2: "worker"})


def test_call_tree_sums_each_branch_exactly():
    root = small_profile().call_tree()
    assert (root.bytes, root.blocks) == (1_254_016, 8)
    main = root.children[MAIN]
    assert (main.bytes, main.blocks) == (1_254_000, 7)
    assert (main.children[F].bytes, main.children[G].bytes) == (1_000_000, 254_000)
    assert main.children[G].children[H].bytes == 4_000
    assert [node.frame for node in main.ordered_children()] == [F, G]
    assert root.children[H].bytes == 16


def test_call_tree_per_thread_inverted_and_hidden_frames():
    profile = small_profile()
    worker = profile.call_tree(thread=2)
    assert worker.bytes == 250_016 and set(worker.children) == {MAIN, H}
    inverted = profile.call_tree(inverted=True)
    assert inverted.children[H].bytes == 4_016
    assert inverted.children[H].children[G].children[MAIN].bytes == 4_000
    hidden = profile.call_tree(hide=lambda frame: frame == MAIN)
    assert hidden.children[F].bytes == 1_000_000 and MAIN not in hidden.children


def test_locations_group_by_innermost_frame():
    rows = small_profile().locations()
    assert [(row.frame, row.bytes, row.blocks) for row in rows] == [
        (F, 1_000_000, 2), (G, 250_000, 1), (H, 4_016, 5)]
    by_thread = small_profile().locations(by_thread=True)
    assert [(row.frame, row.thread, row.bytes) for row in by_thread if row.frame == H] == [(H, 1, 4_000), (H, 2, 16)]


def test_diff_keeps_both_sides():
    before = Profile("a", [Sample((MAIN, F), 100, 1), Sample((MAIN, G), 50, 1)], source="a")
    after = Profile("b", [Sample((MAIN, F), 300, 3), Sample((MAIN, H), 7, 1)], source="b")
    diff = diff_profiles(before, after)
    assert diff.is_diff and (diff.total_before_bytes, diff.total_bytes) == (150, 307)
    rows = {row.frame: (row.before_bytes, row.bytes) for row in diff.locations()}
    assert rows == {F: (100, 300), G: (50, 0), H: (0, 7)}


def test_page_data_names_every_sample_exactly():
    document = page_data(small_profile(), with_sources=False)
    frames, nodes, stride = document["frames"], document["nodes"], document["sample_stride"]
    threads = dict(document["threads"])

    def stack(node):
        out = []
        while node > 0:
            out.append(frames[nodes[2 * node + 1]][0])
            node = nodes[2 * node]
        return tuple(reversed(out))

    got = set()
    samples = document["samples"]
    for i in range(0, len(samples), stride):
        node, thread, allocator, size, blocks = samples[i:i + 5]
        got.add((stack(node), document["threads"][thread][0], document["allocators"][allocator], size, blocks))
    assert got == {(("main", "f"), 1, "MALLOC", 1_000_000, 2), (("main", "g"), 2, "PYMALLOC_MALLOC", 250_000, 1),
                   (("main", "g", "h"), 1, "MALLOC", 4_000, 4), (("h",), 2, "MALLOC", 16, 1)}
    assert threads == {1: "main", 2: "worker"}
    json.dumps(document)


GROUND_TRUTH = """
import sys, time
from heapscope import Tracker
keep = []
# pymalloc maps a 1 MiB arena when its arenas are full, and that mmap belongs to
# whichever line made the small object: f's bytearray header could take one
# (seen on 3.10). Small objects made and freed here leave an empty arena that
# pymalloc keeps (3.9+) for what the tracked lines make.
warm = [object() for _ in range(100_000)]
del warm
def f():
    keep.append(bytearray(1_000_000))   # @f
def g():
    keep.append(bytearray(250_000))     # @g
with Tracker(sys.argv[1]):
    for _ in range(int(sys.argv[2])):
        f()
        time.sleep(0.02)
    g()
    time.sleep(0.05)
    keep.clear()
"""


@pytest.fixture(scope="module")
def captures(tmp_path_factory):
    directory = tmp_path_factory.mktemp("captures")
    script = directory / "truth.py"
    lines = write_script(script, GROUND_TRUTH)
    small, large = directory / "small.hscap", directory / "large.hscap"
    run_script(script, small, 2)
    run_script(script, large, 3)
    return {"script": str(script), "lines": lines, "small": str(small), "large": str(large)}


def test_capture_adapter_gives_exact_bytes_at_their_lines(captures):
    import heapscope
    from heapscope.reports.adapters import profile_from_capture, temporal_profile_from_capture

    with heapscope.FileReader(captures["large"]) as reader:
        profile = profile_from_capture(reader)
        rows = {(row.frame.function, row.frame.lineno): (row.bytes, row.blocks)
                for row in profile.locations() if row.frame.filename == captures["script"]}
        # bytearray(n) holds n + 1 bytes
        assert rows[("f", captures["lines"]["f"])] == (3 * 1_000_001, 3)
        assert rows[("g", captures["lines"]["g"])] == (250_001, 1)
        leaks = profile_from_capture(reader, "leaks")
        assert not [row for row in leaks.locations() if row.frame.filename == captures["script"]]
        temporal = temporal_profile_from_capture(reader)
        assert temporal.timeline is not None and len(temporal.timeline) >= 3
        highest = max(temporal.temporal, key=lambda snapshot: snapshot.heap)
        by_function = {}
        for index, (size, _blocks) in highest.samples.items():
            by_function[temporal.temporal_stacks[index][-1].function] = size
        assert by_function["f"] == 3 * 1_000_001 and by_function["g"] == 250_001
        # From Python, as the page's drag does: the highest heap within a window.
        from heapscope.reports.adapters import profile_at_moment

        window = profile_at_moment(temporal, 0.0, temporal.timeline.times[-1])
        rows = {row.frame.function: row.bytes for row in window.locations()}
        assert rows["f"] == 3 * 1_000_001 and rows["g"] == 250_001
        early = profile_at_moment(temporal, temporal.temporal[0].time)
        assert sum(s.bytes for s in early.samples if s.stack[-1].function == "f") <= 1_000_001
        with pytest.raises(ValueError, match="no moment"):
            profile_at_moment(temporal, 1e6, 2e6)


def test_diff_prints_the_growth_and_gates_on_it(captures, tmp_path):
    out = tmp_path / "d.html"
    result = heapscope_cli("diff", captures["small"], captures["large"], "--no-html", "--fail-on-growth", "2MB")
    assert result.returncode == 0, result.stderr
    assert "+976.6 KiB" in result.stdout  # f: one more bytearray(1_000_000)
    assert "f" in result.stdout and f"truth.py:{captures['lines']['f']}" in result.stdout
    failed = heapscope_cli("diff", captures["small"], captures["large"], "--no-html", "--fail-on-growth", "500KB")
    assert failed.returncode == 1
    assert "more than the 488.3 KiB allowed by --fail-on-growth" in failed.stderr
    shrink = heapscope_cli("diff", captures["large"], captures["small"], "--no-html", "--fail-on-growth", "0")
    assert shrink.returncode == 0 and "-976.6 KiB" in shrink.stdout
    bad = heapscope_cli("diff", captures["small"], captures["large"], "--fail-on-growth", "lots", "-o", out)
    assert bad.returncode == 2 and "expected a size such as" in bad.stderr


def test_diff_of_two_tracemalloc_snapshot_files(tmp_path):
    script = tmp_path / "snap.py"
    write_script(script, """
        import sys
        import heapscope.tracemalloc as tracemalloc
        tracemalloc.start(5)
        keep = []
        first = tracemalloc.take_snapshot()
        keep.append(bytearray(700_000))   # @grow
        second = tracemalloc.take_snapshot()
        first.dump(sys.argv[1]); second.dump(sys.argv[2])
    """)
    lines = marked_lines(script.read_text())
    run_script(script, tmp_path / "a.snap", tmp_path / "b.snap")
    result = heapscope_cli("diff", tmp_path / "a.snap", tmp_path / "b.snap", "--no-html")
    assert result.returncode == 0, result.stderr
    grow = [line for line in result.stdout.splitlines() if f"snap.py:{lines['grow']}" in line]
    assert grow and "+683." in grow[0], result.stdout  # bytearray(700_000) and the list's growth


def test_diff_refuses_what_is_neither_capture_nor_snapshot(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a capture at all")
    result = heapscope_cli("diff", junk, junk, "--no-html")
    assert result.returncode == 1
    assert "neither a heapscope capture nor a heapscope.tracemalloc snapshot" in result.stderr
    missing = heapscope_cli("diff", tmp_path / "nope", junk, "--no-html")
    assert missing.returncode == 1 and "cannot read" in missing.stderr


def test_pools_snapshot_and_diff_adapters():
    from heapscope import pools
    from heapscope.reports.adapters import profile_from_pools_diff, profile_from_pools_snapshot

    class Image:
        pass

    pool = pools.pool("report-model-images")
    before = pools.make_snapshot()
    images = [Image() for _ in range(3)]
    for image in images:
        pool.track(image, size=40_000, kind="rgb8")
    after = pools.make_snapshot()
    profile = profile_from_pools_snapshot(after)
    mine = [s for s in profile.samples if s.allocator == "report-model-images/rgb8"]
    assert sum(s.bytes for s in mine) == 120_000 and sum(s.blocks for s in mine) == 3
    diff = profile_from_pools_diff(pools.diff(first_snapshot=before, second_snapshot=after))
    assert diff.is_diff and diff.total_bytes - diff.total_before_bytes >= 120_000
    del images
