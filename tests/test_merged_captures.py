"""Several captures as one report (heapscope.reports.merge): one root frame
per process, each process's peak found in its own capture and summed, every
command (flamegraph, table, summary, transform) and heapscope merge.
Ground truth: blocks of known sizes at known lines in two processes."""

import json
import os
import re
import shutil

import pytest

from capture_helpers import build_extension, heapscope_cli, run_script, write_script

# Each process peaks while holding `first` and `second`, then frees them and keeps `kept`.
PROCESS = """
import sys
import hs_alloc
from heapscope import Tracker

hs_alloc.malloc(255, 16); hs_alloc.free(255)
first, second, kept = (int(arg) for arg in sys.argv[2:5])
with Tracker(sys.argv[1]):
    hs_alloc.malloc(1, first)      # @first
    hs_alloc.malloc(2, second)     # @second
    hs_alloc.free(1)
    hs_alloc.free(2)
    hs_alloc.malloc(3, kept)       # @kept
"""

SIZES = {"a": (1_000_003, 2_000_003, 500_003), "b": (4_000_007, 300_007, 700_007)}


@pytest.fixture(scope="module")
def captures(tmp_path_factory):
    directory = tmp_path_factory.mktemp("merged")
    extension = build_extension(str(directory))
    script = directory / "process.py"
    lines = write_script(script, PROCESS)
    pids = {}
    for name, sizes in SIZES.items():
        run_script(script, directory / f"{name}.bin", *sizes, extra_paths=[extension])
        from heapscope import FileReader

        with FileReader(directory / f"{name}.bin") as reader:
            pids[name] = reader.metadata.pid
    return directory, lines, pids


def collapsed(directory, *args):
    output = directory / "out.txt"
    result = heapscope_cli("transform", "--format", "collapsed", "-f", "-o", output, *args, cwd=directory)
    assert result.returncode == 0, result.stderr
    rows = {}
    for line in output.read_text().splitlines():
        stack, size = line.rsplit(" ", 1)
        frames = stack.split(";")
        if "process.py" in frames[-1]:
            rows[(frames[0], frames[-1])] = int(size)
    return rows


def expected_rows(lines, pids, names):
    """What a merged peak holds: each process's own peak (first and second), under its frame."""
    rows = {}
    for name in names:
        first, second, _kept = SIZES[name]
        rows[(f"[process] pid {pids[name]}: ", "first")] = first
        rows[(f"[process] pid {pids[name]}: ", "second")] = second
    return rows


def by_process(rows, lines):
    """{(process frame prefix up to ': ', marker): bytes} for comparison."""
    markers = {f"process.py:{line})": name for name, line in lines.items()}
    result = {}
    for (root, leaf), size in rows.items():
        marker = next(name for suffix, name in markers.items() if leaf.endswith(suffix))
        result[(root[:root.index(": ") + 2], marker)] = size
    return result


def test_each_process_is_a_root_frame_and_peaks_are_summed(captures):
    directory, lines, pids = captures
    rows = collapsed(directory, "a.bin", "b.bin")
    assert by_process(rows, lines) == expected_rows(lines, pids, "ab")
    root = next(root for root, _ in rows if str(pids["a"]) in root)
    # The command is cut at 120 characters (a long temporary path under xdist reaches that).
    assert re.fullmatch(rf"\[process\] pid {pids['a']}: \S*process\.py \S*a\.bin( 1000003 2000003 500003|.*\.\.\.) "
                        r"\(.+\) \(<process>:0\)", root), root


def test_merge_writes_one_file_that_reads_like_the_captures(captures):
    directory, lines, pids = captures
    merged = directory / "merged.hscap"
    result = heapscope_cli("merge", "a.bin", "b.bin", "-o", merged, cwd=directory)
    assert result.returncode == 0, result.stderr
    before = {path: os.path.getmtime(directory / path) for path in ("a.bin", "b.bin")}
    assert by_process(collapsed(directory, merged), lines) == expected_rows(lines, pids, "ab")
    assert {path: os.path.getmtime(directory / path) for path in before} == before  # the captures are untouched
    refused = heapscope_cli("merge", "a.bin", "-o", merged, cwd=directory)
    assert refused.returncode == 1 and "already exists" in refused.stderr
    not_a_capture = directory / "notes.txt"
    not_a_capture.write_text("hello")
    bad = heapscope_cli("merge", "a.bin", not_a_capture, "-o", directory / "other.hscap", cwd=directory)
    assert bad.returncode == 1 and bad.stderr.startswith("heapscope: error: ") and "notes.txt" in bad.stderr
    assert not (directory / "other.hscap").exists()


def test_a_parents_capture_brings_its_childrens(captures, tmp_path):
    directory, lines, pids = captures
    shutil.copy(directory / "a.bin", tmp_path / "parent.bin")
    shutil.copy(directory / "b.bin", tmp_path / f"parent.bin.{pids['b']}")
    shutil.copy(directory / "process.py", tmp_path / "process.py")
    assert by_process(collapsed(tmp_path, "parent.bin"), lines) == expected_rows(lines, pids, "ab")
    alone = collapsed(tmp_path, "parent.bin", "--no-children")
    assert not any(root.startswith("[process]") for root, _ in alone)  # one capture: no process frame
    assert sorted(alone.values()) == sorted(SIZES["a"][:2])


def test_summary_says_how_peaks_are_summed(captures):
    directory, lines, pids = captures
    result = heapscope_cli("summary", "a.bin", "b.bin", cwd=directory)
    assert result.returncode == 0, result.stderr
    assert "heapscope summary: 2 processes" in result.stdout
    assert "peaks are computed per process and summed" in result.stdout
    assert "summed over the processes: " in result.stdout
    assert "in 4 blocks" in result.stdout, result.stdout  # first and second, of each process


def test_flamegraph_and_table_pages_show_each_process(captures):
    directory, lines, pids = captures
    for command, extra in (("flamegraph", ["--temporal"]), ("flamegraph", []), ("table", [])):
        page = directory / f"{command}.html"
        result = heapscope_cli(command, "a.bin", "b.bin", "-f", "-o", page, *extra, cwd=directory)
        assert result.returncode == 0, result.stderr
        text = page.read_text()
        data = json.loads(re.search(r'<script type="application/json" id="heapscope-data">(.*?)</script>', text,
                                    re.S).group(1))
        process_frames = sorted(frame[0] for frame in data["frames"] if frame[1] == "<process>")
        assert [name.split(":")[0] for name in process_frames] == sorted(f"[process] pid {pids[n]}" for n in "ab")
        assert "peaks are computed per process and summed" in " ".join(data["header"])
        if extra:
            processes = data["timeline"]["processes"]
            assert sorted(p["name"].split(":")[0] for p in processes) == sorted(f"pid {pids[n]}" for n in "ab")
            assert all(p["t"] and len(p["t"]) == len(p["heap"]) for p in processes)
