"""A kill loses nothing that was recorded (issue 14): SIGKILL at random moments,
in both formats, and multiprocessing Pool.terminate() of follow_fork children.

The programs keep a side channel that cannot lose data and never claims more
than was recorded: after each allocation *returns* (the capture has recorded
it inside the allocator call), one ``os.write`` appends a line to an
O_APPEND file. A kill between the allocation and the line leaves the capture
one allocation ahead of the log, never behind. A line cut by the kill (no
newline) does not count.
"""

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from heapscope import FileFormat, FileReader
from capture_helpers import build_extension, by_line, python_env, write_script


@pytest.fixture(scope="module")
def extension_dir(tmp_path_factory):
    return build_extension(str(tmp_path_factory.mktemp("ext")))


LOGGED = """
import os, sys, time
import hs_alloc
from heapscope import Tracker, FileFormat

log = os.open(sys.argv[2], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
tracker = Tracker(sys.argv[1], file_format=FileFormat[sys.argv[3]], trace_python_allocators=True,
                  checkpoint_interval_ms=int(sys.argv[4]))
tracker.__enter__()
print("ready", flush=True)
for i in range(200_000):
    hs_alloc.malloc(i % 256, 1000 + 8 * (i % 97))    # @logged  (the block before in its slot is leaked)
    os.write(log, b"%d %d\\n" % (i, time.time_ns()))
    noise = [str(j) * 3 for j in range(40)]           # Python's allocations between: chunks fill and turn over
time.sleep(60)
"""


def size_of(i):
    return 1000 + 8 * (i % 97)


def read_log(path):
    """[(index, time_ns)] of the whole lines of the side channel."""
    with open(path, "rb") as log:
        data = log.read()
    whole = data[:data.rfind(b"\n") + 1]
    entries = [tuple(map(int, line.split())) for line in whole.splitlines()]
    assert [index for index, _ in entries] == list(range(len(entries)))
    return entries


def killed_run(tmp_path, script, extension_dir, fmt, run, delay, checkpoint_ms=1000):
    capture = tmp_path / f"run{run}.hscap"
    log = tmp_path / f"run{run}.log"
    process = subprocess.Popen([sys.executable, str(script), str(capture), str(log), fmt, str(checkpoint_ms)],
                               stdout=subprocess.PIPE, text=True, env=python_env(extension_dir))
    try:
        assert process.stdout.readline() == "ready\n"
        time.sleep(delay)
    finally:
        killed_at = time.time_ns()
        process.send_signal(signal.SIGKILL)
        process.wait()
        process.stdout.close()
    assert process.returncode == -signal.SIGKILL
    return capture, read_log(log), killed_at


def recorded_at_line(capture, script, line):
    """(bytes, count) of the blocks the capture holds at *line*, and whether it was damaged."""
    reader = FileReader(capture)
    assert not reader.metadata.complete
    leaks = by_line(reader.get_leaked_allocation_records(), script, {"MALLOC"})
    return leaks.get(line, (0, 0)), reader.metadata.damage


def test_sigkill_at_random_moments_loses_no_logged_allocation(tmp_path, extension_dir):
    script = tmp_path / "logged.py"
    lines = write_script(script, LOGGED)
    rng = random.Random(14)
    for run in range(50):
        delay = rng.uniform(0.0, 0.25)
        capture, logged, _ = killed_run(tmp_path, script, extension_dir, "ALL_ALLOCATIONS", run, delay)
        (size, count), damage = recorded_at_line(capture, script, lines["logged"])
        assert damage is None, f"run {run}: {damage}"
        # Every logged allocation is there (one more if the kill fell between
        # an allocation and its line), and the bytes are exactly theirs.
        assert len(logged) <= count <= len(logged) + 1, f"run {run} (after {delay:.3f} s)"
        assert size == sum(size_of(i) for i in range(count))
        os.unlink(capture)


def test_sigkill_of_an_aggregated_capture_loses_at_most_one_checkpoint_interval(tmp_path, extension_dir):
    script = tmp_path / "logged.py"
    lines = write_script(script, LOGGED)
    interval_ms = 100
    rng = random.Random(41)
    for run in range(8):
        delay = rng.uniform(0.45, 0.8)
        capture, logged, killed_at = killed_run(tmp_path, script, extension_dir, "AGGREGATED_ALLOCATIONS", run,
                                                delay, checkpoint_ms=interval_ms)
        (size, count), damage = recorded_at_line(capture, script, lines["logged"])
        assert damage is None
        assert FileReader(capture).metadata.file_format is FileFormat.AGGREGATED_ALLOCATIONS
        # What was logged an interval before the kill (and 300 ms for the
        # scheduler of a busy 2-core machine) is in the last checkpoint.
        cutoff = killed_at - (interval_ms + 300) * 1_000_000
        old_enough = sum(1 for _, at in logged if at <= cutoff)
        assert old_enough <= count <= len(logged) + 1, f"run {run} (after {delay:.3f} s)"
        assert size == sum(size_of(i) for i in range(count))


POOL = """
import multiprocessing, os, sys, time
import hs_alloc
from heapscope import Tracker

log = os.open(sys.argv[2], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

def work(n):
    for i in range(50):
        hs_alloc.malloc(i, 100_003 + 1000 * n + i)   # @worker
    os.write(log, b"%d %d\\n" % (os.getpid(), n))
    time.sleep(60)

if __name__ == "__main__":
    with Tracker(sys.argv[1], follow_fork=True):
        pool = multiprocessing.get_context("fork").Pool(2)
        pool.map_async(work, range(2))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with open(sys.argv[2]) as done:
                if done.read().count("\\n") == 2:
                    break
            time.sleep(0.02)
        pool.terminate()   # SIGTERM to the workers: they die in their sleep
        pool.join()
    print("done", flush=True)
"""


def test_pool_terminate_of_follow_fork_workers_leaves_their_allocations(tmp_path, extension_dir):
    script = tmp_path / "pool.py"
    lines = write_script(script, POOL)
    capture = tmp_path / "pool.hscap"
    log = tmp_path / "pool.log"
    result = subprocess.run([sys.executable, str(script), str(capture), str(log)], capture_output=True, text=True,
                            env=python_env(extension_dir), timeout=120)
    assert result.returncode == 0, result.stderr
    workers = [tuple(map(int, line.split())) for line in log.read_text().splitlines()]
    assert len(workers) == 2
    for pid, n in workers:
        reader = FileReader(f"{capture}.{pid}")
        assert not reader.metadata.complete  # terminated, not finished
        assert reader.metadata.damage is None
        held = by_line(reader.get_leaked_allocation_records(), script, {"MALLOC"})
        assert held[lines["worker"]] == (sum(100_003 + 1000 * n + i for i in range(50)), 50)
    assert FileReader(capture).metadata.complete


def test_os_exit_inside_the_block_keeps_every_allocation(tmp_path, extension_dir):
    script = tmp_path / "exits.py"
    lines = write_script(script, """
        import os, sys
        import hs_alloc
        from heapscope import Tracker

        tracker = Tracker(sys.argv[1])
        tracker.__enter__()
        for i in range(200):
            hs_alloc.malloc(i, 5000 + i)   # @held
        os._exit(0)                        # no __exit__, no interpreter shutdown
    """)
    capture = tmp_path / "exits.hscap"
    result = subprocess.run([sys.executable, str(script), str(capture)], env=python_env(extension_dir), timeout=120)
    assert result.returncode == 0
    (size, count), damage = recorded_at_line(capture, script, lines["held"])
    assert damage is None
    assert (size, count) == (sum(5000 + i for i in range(200)), 200)
