"""Captures that did not end well: killed processes, damaged and foreign files,
fork, threads, programs that raise or exit."""

import importlib.util
import signal
import subprocess
import sys
import time

import pytest

from heapscope import CaptureFileError, FileFormat, FileReader
from capture_helpers import build_extension, by_line, heapscope_cli, python_env, run_script, write_script


@pytest.fixture(scope="module")
def extension_dir(tmp_path_factory):
    return build_extension(str(tmp_path_factory.mktemp("ext")))


KILLED = """
import sys, time
import hs_alloc
from heapscope import Tracker, FileFormat

tracker = Tracker(sys.argv[1], file_format=FileFormat[sys.argv[2]])
tracker.__enter__()
hs_alloc.malloc(1, 4_000_037)     # @big
hs_alloc.malloc(2, 1_000_039)     # @freed
hs_alloc.free(2)
print("ready", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("fmt", ["ALL_ALLOCATIONS", "AGGREGATED_ALLOCATIONS"])
def test_sigkill_leaves_a_readable_capture(tmp_path, extension_dir, fmt):
    script = tmp_path / "killed.py"
    lines = write_script(script, KILLED)
    capture = tmp_path / "killed.hscap"
    process = subprocess.Popen([sys.executable, str(script), str(capture), fmt], stdout=subprocess.PIPE, text=True,
                               env=python_env(extension_dir))
    try:
        assert process.stdout.readline() == "ready\n"
        time.sleep(1.5)  # a checkpoint (aggregated) is taken at least every second
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    reader = FileReader(capture)
    assert not reader.metadata.complete
    assert reader.metadata.file_format is FileFormat[fmt]
    peak = by_line(reader.get_high_watermark_allocation_records(), script, {"MALLOC"})
    assert peak[lines["big"]] == (4_000_037, 1)
    assert peak[lines["freed"]] == (1_000_039, 1)
    leaks = by_line(reader.get_leaked_allocation_records(), script, {"MALLOC"})
    assert leaks[lines["big"]] == (4_000_037, 1)
    assert lines["freed"] not in leaks
    assert reader.metadata.end_time >= reader.metadata.start_time
    assert reader.metadata.damage is None  # a cut at a chunk boundary is not damage
    # The command line reports it, warns that it is unfinished, and does not fail.
    result = heapscope_cli("summary", capture)
    assert result.returncode == 0, result.stderr
    assert f"{script}:{lines['big']}" in result.stdout
    assert result.stderr.startswith("heapscope: warning:") and "was not finished" in result.stderr
    assert result.stderr.count("\n") == 1


@pytest.fixture(scope="module")
def good_capture(tmp_path_factory):
    directory = tmp_path_factory.mktemp("good")
    script = directory / "many.py"
    write_script(script, """
        import sys
        from heapscope import Tracker
        with Tracker(sys.argv[1], trace_python_allocators=True):
            # Enough events for several chunks: damage in one leaves the others.
            kept = [bytearray(100 + i % 1000) for i in range(300_000)]   # @kept
    """)
    capture = directory / "good.hscap"
    run_script(script, capture)
    return capture


def _damaged_copy(tmp_path, source, name, edit):
    data = bytearray(source.read_bytes())
    edit(data)
    path = tmp_path / name
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("name, edit", [
    ("truncated.hscap", lambda data: data.__delitem__(slice(len(data) * 2 // 3, None))),
    ("flipped.hscap", lambda data: data.__setitem__(len(data) * 2 // 3, data[len(data) * 2 // 3] ^ 0xFF)),
])
def test_damaged_file_is_read_up_to_the_damage(tmp_path, good_capture, name, edit):
    damaged = _damaged_copy(tmp_path, good_capture, name, edit)
    reader = FileReader(damaged)
    assert reader.metadata.damage  # says what and where
    assert not reader.metadata.complete
    complete = FileReader(good_capture).metadata
    assert complete.damage is None and complete.complete
    # What was read before the damage is reported.
    records = reader.get_high_watermark_allocation_records()
    assert records and sum(r.size for r in records) > 0
    result = heapscope_cli("summary", damaged)
    assert result.returncode == 2
    warnings = [line for line in result.stderr.splitlines() if line]
    assert len(warnings) == 1 and warnings[0].startswith("heapscope: warning:") and "damaged" in warnings[0]
    assert "heapscope summary:" in result.stdout


def _foreign_files(tmp_path, good_capture):
    files = {
        "empty": b"",
        "text": b"hello, this is not a capture\n" * 10,
        "header only, cut": good_capture.read_bytes()[:5],
        "memray capture": None,
        "tracemalloc snapshot": None,
    }
    paths = {}
    for label, content in files.items():
        path = tmp_path / (label.replace(" ", "_").replace(",", "") + ".bin")
        if label == "tracemalloc snapshot":
            import heapscope.tracemalloc as tm
            tm.Snapshot([], 1).dump(str(path))
        elif label == "memray capture":
            if importlib.util.find_spec("memray") is None:  # not imported here: see test_same_peak_per_line_as_memray
                continue
            script = tmp_path / "memray_run.py"
            write_script(script, "import sys, memray\nwith memray.Tracker(sys.argv[1]):\n    x = bytearray(10_000)\n")
            run_script(script, path)
        else:
            path.write_bytes(content)
        paths[label] = path
    return paths


def test_foreign_and_empty_files_give_one_clear_error(tmp_path, good_capture):
    for label, path in _foreign_files(tmp_path, good_capture).items():
        with pytest.raises(CaptureFileError) as caught:
            FileReader(path)
        assert isinstance(caught.value, ValueError)
        assert "\n" not in str(caught.value) and str(path) in str(caught.value), label
        for command in ("summary", "stats", "tree"):
            result = heapscope_cli(command, path)
            assert result.returncode == 1, (label, command, result.stderr)
            assert result.stderr.count("\n") == 1 and result.stderr.startswith("heapscope: error:"), \
                (label, command, result.stderr)
            assert result.stdout == ""
    missing = heapscope_cli("summary", tmp_path / "nope.hscap")
    assert missing.returncode == 1 and missing.stderr.startswith("heapscope: error: cannot read")
    with pytest.raises(OSError, match="Could not open file"):
        FileReader(tmp_path / "nope.hscap")
    directory = heapscope_cli("stats", tmp_path)
    assert directory.returncode == 1 and directory.stderr.count("\n") == 1


FORK = """
import os, sys
import hs_alloc
from heapscope import Tracker

with Tracker(sys.argv[1], follow_fork=sys.argv[2] == "follow"):
    hs_alloc.malloc(1, 1_100_003)          # @parent_before
    pid = os.fork()
    if pid == 0:
        hs_alloc.malloc(2, 2_200_007)      # @child
        hs_alloc.free(1)                   # the child's copy of the parent's block
        sys.exit(0)                        # leaves the with block: the child's capture ends
    os.waitpid(pid, 0)
    hs_alloc.malloc(3, 3_300_001)          # @parent_after
    end = None                             # 3.9 runs the with-exit at the block's last line
print(pid)
"""


@pytest.mark.parametrize("follow", [False, True])
def test_fork_with_and_without_follow_fork(tmp_path, extension_dir, follow):
    script = tmp_path / "fork.py"
    lines = write_script(script, FORK)
    capture = tmp_path / "fork.hscap"
    child_pid = int(run_script(script, capture, "follow" if follow else "no",
                               extra_paths=[extension_dir]).stdout.split()[-1])
    parent = by_line(FileReader(capture).get_leaked_allocation_records(), script, {"MALLOC"})
    assert parent[lines["parent_before"]] == (1_100_003, 1)   # the child's free is not the parent's
    assert parent[lines["parent_after"]] == (3_300_001, 1)
    assert lines["child"] not in parent
    child_capture = tmp_path / f"fork.hscap.{child_pid}"
    if not follow:
        assert not child_capture.exists()
        return
    reader = FileReader(child_capture)
    assert reader.metadata.pid == child_pid and reader.metadata.complete
    child = by_line(reader.get_leaked_allocation_records(), script, {"MALLOC"})
    assert child[lines["child"]] == (2_200_007, 1)
    assert lines["parent_before"] not in child           # freed in the child
    assert lines["parent_after"] not in child


THREADS = """
import sys, threading
import hs_alloc
from heapscope import Tracker

SIZES = [1_000_003, 2_000_003, 3_000_017, 4_000_037]
barrier = threading.Barrier(4)

def work(index):
    barrier.wait()
    hs_alloc.malloc(10 + index, SIZES[index])   # @thread_alloc

with Tracker(sys.argv[1]):
    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
print(*(t.native_id for t in threads))
"""


def test_four_threads_with_exact_per_thread_sizes(tmp_path, extension_dir):
    script = tmp_path / "threads.py"
    lines = write_script(script, THREADS)
    capture = tmp_path / "threads.hscap"
    native_ids = list(map(int, run_script(script, capture, extra_paths=[extension_dir]).stdout.split()))
    reader = FileReader(capture)
    sizes = {1_000_003, 2_000_003, 3_000_017, 4_000_037}
    per_thread = {}
    for record in reader.get_leaked_allocation_records(merge_threads=False):
        if record.allocator.name == "MALLOC" and record.size in sizes:
            assert record.stack_trace()[0][2] == lines["thread_alloc"]
            assert record.stack_trace()[0][0] == "work"
            per_thread[record.tid] = record.size
    assert sorted(per_thread.values()) == sorted(sizes)            # one thread each, exact sizes
    assert 0 not in per_thread and len(per_thread) == 4
    threads = reader.threads()
    assert sorted(threads[tid][0] for tid in per_thread) == sorted(native_ids)
    merged = by_line(reader.get_leaked_allocation_records(), script, {"MALLOC"})
    assert merged[lines["thread_alloc"]] == (sum(sizes), 4)


@pytest.mark.parametrize("ending, code", [("raise ValueError('boom')", 1), ("sys.exit(3)", 3)])
def test_capture_written_when_the_program_raises_or_exits(tmp_path, ending, code):
    script = tmp_path / "ending.py"
    lines = write_script(script, f"""
        import sys
        kept = bytearray(5_000_000)   # @kept
        {ending}
    """)
    capture = tmp_path / "ending.hscap"
    result = heapscope_cli("run", "-o", capture, script)
    assert result.returncode == code, result.stderr
    if code == 1:
        assert "ValueError: boom" in result.stderr
    reader = FileReader(capture)
    assert reader.metadata.complete
    leaks = by_line(reader.get_leaked_allocation_records(), script)
    assert leaks[lines["kept"]][0] >= 5_000_000


def test_tracker_exit_after_exception_in_the_block(tmp_path):
    script = tmp_path / "inside.py"
    write_script(script, """
        import sys
        from heapscope import Tracker
        try:
            with Tracker(sys.argv[1]):
                kept = bytearray(2_000_000)
                raise KeyError("inside")
        except KeyError as e:
            print("caught", e)
    """)
    capture = tmp_path / "inside.hscap"
    assert run_script(script, capture).stdout.strip() == "caught 'inside'"
    assert FileReader(capture).metadata.complete
