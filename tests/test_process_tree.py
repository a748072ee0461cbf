"""Whole process trees (heapscope run --follow-fork / --follow-exec):
multiprocessing's spawn and forkserver children and subprocesses running the
same Python write their own captures beside the parent's, and a report of
the parent's file merges them, each under its process's frame. Ground truth:
bytearrays of known sizes (n + 1 bytes each) made in each process."""

import re

import pytest

from capture_helpers import heapscope_cli, write_script

PROGRAM = """
import multiprocessing
import subprocess
import sys

def child(size):
    data = bytearray(size)            # @child
    return len(data)

if __name__ == "__main__":
    kept = bytearray(1_100_000)       # @parent
    for method, size in (("spawn", 2_200_000), ("forkserver", 3_300_000)):
        with multiprocessing.get_context(method).Pool(1) as pool:
            assert pool.apply(child, (size,)) == size
    subprocess.run([sys.executable, "-c", "data = bytearray(4_400_000)"], check=True)
"""


KNOWN = (1_100_001, 2_200_001, 3_300_001, 4_400_001)


def peak_rows(directory, capture):
    """{size: process frame} of the program's known blocks (KNOWN) in the merged peak."""
    output = directory / "collapsed.txt"
    result = heapscope_cli("transform", "--format", "collapsed", "-f", "-o", output, capture, cwd=directory)
    assert result.returncode == 0, result.stderr
    rows = {}
    for line in output.read_text().splitlines():
        stack, size = line.rsplit(" ", 1)
        if int(size) in KNOWN:
            rows[int(size)] = stack.split(";")[0]
    return rows


@pytest.mark.parametrize("follow_exec", [False, True])
def test_children_write_captures_that_the_parents_report_merges(tmp_path, follow_exec):
    write_script(tmp_path / "program.py", PROGRAM)
    flags = ["--follow-fork"] + (["--follow-exec"] if follow_exec else [])
    result = heapscope_cli("run", "-o", "cap.bin", *flags, "program.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    children = sorted(path.name for path in tmp_path.glob("cap.bin.*"))
    # spawn's worker, the forkserver, the worker it forked (under the forkserver's name), and the subprocess.
    assert len(children) == (4 if follow_exec else 3), children
    assert any(re.fullmatch(r"cap\.bin\.\d+\.\d+", name) for name in children), children
    rows = peak_rows(tmp_path, "cap.bin")
    parent = rows.pop(1_100_001)
    assert parent.startswith("[process] pid ") and "program.py" in parent
    assert "multiprocessing.spawn" in rows.pop(2_200_001)
    forkserver_child = rows.pop(3_300_001)
    assert "multiprocessing.forkserver" in forkserver_child
    if follow_exec:
        subprocess_frame = rows.pop(4_400_001)
        assert "-c data = bytearray(4_400_000)" in subprocess_frame and "child of " in subprocess_frame
    assert rows == {}
    # --no-children: the parent alone.
    alone = heapscope_cli("transform", "--format", "collapsed", "-f", "-o", tmp_path / "alone.txt", "cap.bin",
                          "--no-children", cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr
    sizes = [int(line.rsplit(" ", 1)[1]) for line in (tmp_path / "alone.txt").read_text().splitlines()]
    assert 1_100_001 in sizes and 2_200_001 not in sizes
