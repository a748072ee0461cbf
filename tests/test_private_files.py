"""Files that name the user's code are private (issue 14): captures (a forked
child's too), heapprof's files and digests, and snapshot files are created
with mode 0600, whatever the umask, and a file they replace becomes 0600."""

import os
import stat
import subprocess
import sys

import pytest

import heapscope
import heapscope.heapprof as heapprof
import heapscope.tracemalloc as tracemalloc
from capture_helpers import python_env, write_script


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def open_umask():
    """The most permissive umask: 0600 must come from heapscope, not from it."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def test_a_capture_is_0600_and_so_is_a_capture_it_replaces(tmp_path, open_umask):
    path = tmp_path / "new.hscap"
    with heapscope.Tracker(path):
        kept = [bytearray(100) for _ in range(10)]
    assert mode(path) == 0o600
    old = tmp_path / "old.hscap"
    old.write_bytes(b"an older capture")
    os.chmod(old, 0o644)
    with heapscope.Tracker(destination=heapscope.FileDestination(old, overwrite=True)):
        kept.append(bytearray(100))
    assert mode(old) == 0o600


def test_heapscope_run_and_a_forked_childs_capture_are_0600(tmp_path):
    script = tmp_path / "forks.py"
    write_script(script, """
        import os
        pid = os.fork()
        if pid == 0:
            data = [bytearray(1000) for _ in range(10)]
            os._exit(0)
        os.waitpid(pid, 0)
        print(pid)
    """)
    capture = tmp_path / "run.hscap"
    result = subprocess.run([sys.executable, "-m", "heapscope", "run", "--follow-fork", "-o", str(capture),
                             str(script)], capture_output=True, text=True, env=python_env(), timeout=120,
                            preexec_fn=lambda: os.umask(0))
    assert result.returncode == 0, result.stderr
    child = int(result.stdout.split()[-1])
    assert mode(capture) == 0o600
    assert mode(f"{capture}.{child}") == 0o600


def test_heapprof_files_and_digest_are_0600(tmp_path, open_umask):
    base = str(tmp_path / "run")
    heapprof.start(base)
    kept = [bytearray(1000) for _ in range(100)]
    heapprof.stop()
    heapprof.read(base, timeInterval=0.1, precision=0)  # writes the digest
    made = sorted(name for name in os.listdir(tmp_path) if name.startswith("run."))
    assert {".hpm", ".hpd", ".hpc"} <= {os.path.splitext(name)[1] for name in made}, made
    for name in made:
        assert mode(tmp_path / name) == 0o600, name
    del kept


def test_a_snapshot_file_is_0600_and_so_is_one_it_replaces(tmp_path, open_umask):
    tracemalloc.start()
    try:
        kept = [bytearray(100) for _ in range(10)]
        snapshot = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    path = tmp_path / "snap.bin"
    snapshot.dump(str(path))
    assert mode(path) == 0o600
    os.chmod(path, 0o664)
    snapshot.dump(str(path))
    assert mode(path) == 0o600
    assert len(tracemalloc.Snapshot.load(str(path)).traces) == len(snapshot.traces)
    del kept
