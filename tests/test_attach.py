"""heapscope attach / detach against real running programs (docs/attach.md).

Each target is a real Python program, started here, that allocates known
sizes at known lines; it is steered through files in its directory and says
where it is on stdout. Every child is killed in teardown.
"""

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from capture_helpers import by_line, heapscope_cli, python_env, write_script

pytestmark = pytest.mark.timeout(180)

LOOP_SIZE = 250_000
KEPT_BEFORE = 3_000_000
FREED_DURING = 5_000_000

TARGET = """
    import os, sys, time
    here = sys.argv[1]
    def exists(name):
        return os.path.exists(os.path.join(here, name))
    held_before = bytearray(3_000_000)   # @kept_before: alive before the attach, never freed
    freed_during = bytearray(5_000_000)  # @freed_during: alive before the attach, freed during the capture
    blocks = []
    print("ready", flush=True)
    while not exists("free"):
        blocks.append(bytearray(250_000))  # @loop
        if len(blocks) > 3:
            del blocks[0]
        time.sleep(0.002)
    freed_during = None
    for _ in range(5):  # five more, all after the attach: the last three stay
        blocks.append(bytearray(250_000))  # @after
        if len(blocks) > 3:
            del blocks[0]
    print("paused", flush=True)
    while not exists("stop"):
        time.sleep(0.005)
    import threading  # imported here first: threading's main thread must still be this one
    main = threading.main_thread()
    print("main", main is threading.current_thread() and main.native_id == os.getpid(), flush=True)
    print("done", flush=True)
"""


class Target:
    """A running target program; ``tell(name)`` makes the file it waits for."""

    def __init__(self, directory, source=TARGET, python=(sys.executable,)):
        self.directory = directory
        self.script = directory / "target.py"
        self.lines = write_script(self.script, source)
        self.process = subprocess.Popen([*python, str(self.script), str(directory)], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, env=python_env(), cwd=directory)
        self.expect("ready")

    @property
    def pid(self):
        return self.process.pid

    def expect(self, word):
        line = self.process.stdout.readline().strip()
        assert line == word, f"expected {word!r}, got {line!r}; stderr: {self.process.stderr.read()}"

    def tell(self, name):
        (self.directory / name).write_text("")

    def running(self):
        return self.process.poll() is None

    def finish(self):
        """Lets it end; its exit code, and what it wrote on stderr."""
        self.tell("stop")
        if "main.native_id" in self.script.read_text():
            self.expect("main True")
        self.expect("done")
        code = self.process.wait(timeout=60)
        return code, self.process.stderr.read()

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.process.stdout.close()
        self.process.stderr.close()


@pytest.fixture
def targets(tmp_path):
    """Starts targets (each in a directory of its own); kills them all at the end."""
    started = []

    def start(source=TARGET, python=(sys.executable,)):
        directory = tmp_path / f"target{len(started)}"
        directory.mkdir()
        started.append(Target(directory, source, python))
        return started[-1]

    yield start
    for target in started:
        target.kill()


@pytest.fixture(scope="module", autouse=True)
def ptrace_permitted():
    """Skips the module where this machine forbids tracing one's own
    processes (the only reason these tests may skip: gdb itself is
    installed by scripts/setup.sh)."""
    gdb = shutil.which("gdb")
    if gdb is None:
        yield  # the tests then check heapscope's own message
        return
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        probe = subprocess.run([gdb, "-batch", "-nx", "-p", str(sleeper.pid)], capture_output=True, text=True,
                               timeout=60)
    finally:
        sleeper.kill()
        sleeper.wait()
    if "ptrace: Operation not permitted" in probe.stdout + probe.stderr:
        pytest.skip("this machine does not permit ptrace of one's own processes (kernel.yama.ptrace_scope or "
                    "no CAP_SYS_PTRACE): heapscope attach cannot work here")
    yield


def attach(*args, cwd=None):
    return heapscope_cli("attach", *args, cwd=cwd, timeout=150)


def test_attach_records_the_program_from_the_moment_of_attaching(targets, tmp_path):
    from heapscope import FileReader

    target = targets()
    capture = tmp_path / "attached.hscap"
    attached = attach(target.pid, "-o", capture)
    assert attached.returncode == 0, attached.stderr
    assert f"attached to process {target.pid}: writing {capture}" in attached.stderr
    target.tell("free")
    target.expect("paused")
    detached = heapscope_cli("detach", target.pid)
    assert detached.returncode == 0, detached.stderr
    assert f"detached from process {target.pid}: wrote {capture} (" in detached.stderr
    assert target.running()  # detach leaves it running...
    code, stderr = target.finish()
    assert code == 0  # ...and it ends normally, with nothing of heapscope's on its stderr
    assert stderr == ""

    with FileReader(capture) as reader:
        assert reader.metadata.pid == target.pid
        records = [record for record in reader.get_allocation_records()
                   if record.allocator.name not in ("FREE", "MUNMAP")]
        made = by_line(records, target.script)
        leaks = by_line(reader.get_leaked_allocation_records(), target.script)
    # The five allocations after the attach, each of the right size (a
    # bytearray's buffer has one byte more), and the loop's before them.
    after_size, after_count = made[target.lines["after"]]
    assert (after_size, after_count) == (5 * (LOOP_SIZE + 1), 5)
    loop_size, loop_count = made.get(target.lines["loop"], (0, 0))
    assert loop_size == loop_count * (LOOP_SIZE + 1)
    # Blocks alive before the attach are not the capture's: neither the one
    # kept nor the one freed meanwhile (its free is ignored).
    assert target.lines["kept_before"] not in made and target.lines["freed_during"] not in made
    assert all(record.size not in (KEPT_BEFORE + 1, FREED_DURING + 1) for record in records)
    # Held at the end: exactly the three blocks of the list.
    assert leaks == {target.lines["after"]: (3 * (LOOP_SIZE + 1), 3)}
    # Nothing of heapscope's own machinery (its thread in the target) is counted.
    assert all(frame[1] == str(target.script) or "<heapscope" not in frame[1]
               for record in records for frame in record.stack_trace())


def test_the_capture_ends_when_the_program_exits(targets, tmp_path):
    from heapscope import FileReader

    target = targets()
    capture = tmp_path / "until-exit.hscap"
    attached = attach(target.pid, "-o", capture, "--aggregate")
    assert attached.returncode == 0, attached.stderr
    target.tell("free")
    target.expect("paused")
    assert target.finish() == (0, "")
    with FileReader(capture) as reader:
        assert reader.metadata.complete
        leaks = by_line(reader.get_leaked_allocation_records(), target.script)
    assert leaks[target.lines["after"]] == (3 * (LOOP_SIZE + 1), 3)


def test_duration_ends_the_capture_by_itself(targets, tmp_path):
    from heapscope import FileReader

    target = targets()
    capture = tmp_path / "short.hscap"
    attached = attach(target.pid, "-o", capture, "--duration", "0.2")
    assert attached.returncode == 0, attached.stderr
    assert "ends in 0.2 s" in attached.stderr
    deadline = time.monotonic() + 60
    while True:  # the capture's thread in the process ends it and stops listening
        if heapscope_cli("detach", target.pid).returncode == 1:
            break
        assert time.monotonic() < deadline, "the capture did not end by itself"
        time.sleep(0.2)
    target.tell("free")
    target.expect("paused")
    assert target.finish() == (0, "")
    with FileReader(capture) as reader:
        assert reader.metadata.complete
        made = by_line([record for record in reader.get_allocation_records()
                        if record.allocator.name not in ("FREE", "MUNMAP")], target.script)
    assert target.lines["after"] not in made  # made after the capture ended


def test_attach_through_paths_that_are_not_ascii_under_the_c_locale(targets, request):
    """The agent's path and the bootstrap (which names the channel's socket,
    under TMPDIR) reach the program byte for byte, whatever charset gdb
    decodes with."""
    from heapscope import FileReader

    target = targets()
    # Short: the channel's socket path must fit in 107 bytes.
    odd = tempfile.mkdtemp(prefix="hs-josé-目录-")
    request.addfinalizer(lambda: shutil.rmtree(odd, ignore_errors=True))
    capture = os.path.join(odd, "attached.hscap")
    env = {**python_env(), "TMPDIR": odd, "LANG": "C", "LC_ALL": "C"}
    attached = subprocess.run([sys.executable, "-m", "heapscope", "attach", str(target.pid), "-o", capture],
                              capture_output=True, text=True, env=env, timeout=150)
    assert attached.returncode == 0, attached.stderr
    assert heapscope_cli("detach", target.pid).returncode == 0
    target.tell("free")
    target.expect("paused")
    assert target.finish() == (0, "")
    with FileReader(capture) as reader:
        assert reader.metadata.complete


def live_view(target):
    """``heapscope attach PID --live``, once it shows its first table."""
    viewer = subprocess.Popen([sys.executable, "-m", "heapscope", "attach", str(target.pid), "--live"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=python_env())
    first = viewer.stdout.readline()
    if not first.startswith("heapscope live:"):
        viewer.kill()
        pytest.fail(f"no live view: {first}{viewer.stderr.read()}")
    return viewer


def test_attach_live_streams_to_the_viewer(targets):
    target = targets()
    viewer = live_view(target)
    try:
        target.tell("free")
        target.expect("paused")
        code, stderr = target.finish()
        assert (code, stderr) == (0, "")
        assert viewer.wait(timeout=60) == 0
        shown = viewer.stdout.read()
    finally:
        if viewer.poll() is None:
            viewer.kill()
        viewer.wait()
    last = shown.split("heapscope live:")[-1]
    assert "the program ended" in last
    row = next(line for line in last.splitlines() if f"{target.script}:{target.lines['after']}" in line)
    assert row.rstrip().endswith(" 3")  # the three blocks still held


def test_a_process_that_is_not_python_is_left_alone():
    sleeper = subprocess.Popen(["sleep", "120"])
    try:
        result = attach(sleeper.pid)
        assert result.returncode == 1
        assert f"process {sleeper.pid} (" in result.stderr and "is not a CPython process" in result.stderr
        assert result.stderr.startswith("heapscope: error:") and result.stderr.count("\n") == 1
        assert sleeper.poll() is None
        with open(f"/proc/{sleeper.pid}/status") as status:
            state = next(line for line in status if line.startswith("State:"))
        assert state.split()[1] == "S"  # not left stopped
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_python_without_heapscope_is_told_and_left_running(targets, tmp_path):
    # -I -S: no site-packages and no PYTHONPATH, as a program in a venv without heapscope.
    target = targets(python=(sys.executable, "-I", "-S"))
    result = attach(target.pid, "-o", tmp_path / "never.hscap")
    assert result.returncode == 1
    assert "heapscope cannot be imported in the process" in result.stderr
    assert sys.executable in result.stderr or os.path.abspath(sys.executable) in result.stderr  # (3.9: as given)
    assert not (tmp_path / "never.hscap").exists()
    target.tell("free")
    target.expect("paused")
    assert target.finish() == (0, "")


def test_a_second_attach_is_refused(targets, tmp_path):
    target = targets()
    assert attach(target.pid, "-o", tmp_path / "first.hscap").returncode == 0
    again = attach(target.pid, "-o", tmp_path / "second.hscap")
    assert again.returncode == 1
    assert "already being profiled by heapscope attach" in again.stderr
    assert f"heapscope detach {target.pid}" in again.stderr
    assert not (tmp_path / "second.hscap").exists()
    assert heapscope_cli("detach", target.pid).returncode == 0
    target.tell("free")
    target.expect("paused")
    assert target.finish() == (0, "")


OWN_TRACKER = """
    import os, sys, time
    import heapscope
    here = sys.argv[1]
    with heapscope.Tracker(os.path.join(here, "own.hscap")):
        print("ready", flush=True)
        while not os.path.exists(os.path.join(here, "free")):
            time.sleep(0.005)
        kept = [bytearray(100_000) for _ in range(4)]  # @own
    print("paused", flush=True)
    while not os.path.exists(os.path.join(here, "stop")):
        time.sleep(0.005)
    print("done", flush=True)
"""


def test_a_program_profiling_itself_is_refused_and_its_capture_untouched(targets, tmp_path):
    from heapscope import FileReader

    target = targets(OWN_TRACKER)
    result = attach(target.pid, "-o", tmp_path / "never.hscap")
    assert result.returncode == 1
    assert "already being profiled: No more than one Tracker" in result.stderr
    target.tell("free")
    target.expect("paused")
    assert target.finish() == (0, "")
    with FileReader(target.directory / "own.hscap") as reader:
        records = [record for record in reader.get_allocation_records()
                   if record.allocator.name not in ("FREE", "MUNMAP")]
        # The program's own allocations only: none from heapscope attach's thread.
        assert by_line(records, target.script)[target.lines["own"]] == (4 * 100_001, 4)
        assert all("<heapscope" not in frame[1] for record in records for frame in record.stack_trace())
        assert all(record.stack_trace() for record in records if record.size > 1000)


def test_refusals_before_touching_anything(tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait()
    result = attach(gone.pid)
    assert result.returncode == 1 and f"no process has the id {gone.pid}" in result.stderr
    result = heapscope_cli("detach", os.getpid())
    assert result.returncode == 1
    assert f"no capture started by heapscope attach runs in process {os.getpid()}" in result.stderr
    result = attach("not-a-pid")
    assert result.returncode == 2 and "expected a process id" in result.stderr
    result = attach(os.getpid(), "--live", "-o", tmp_path / "x")
    assert result.returncode == 2 and "--live cannot be combined with -o" in result.stderr
    existing = tmp_path / "exists.hscap"
    existing.write_text("")
    result = attach(os.getpid(), "-o", existing)
    assert result.returncode == 1 and "already exists: use --force" in result.stderr


def test_gdb_missing_is_said_plainly(targets, tmp_path):
    target = targets()
    bare = tmp_path / "bin"
    bare.mkdir()
    env = {**python_env(), "PATH": str(bare)}
    result = subprocess.run([sys.executable, "-m", "heapscope", "attach", str(target.pid), "-o",
                             str(tmp_path / "x.hscap")], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 1
    assert "gdb is not installed" in result.stderr and "apt-get install gdb" in result.stderr
    target.tell("free")
    target.expect("paused")
    assert target.finish() == (0, "")


def test_ptrace_refusal_says_what_to_change():
    from heapscope.cli._capture import CommandError
    from heapscope.cli.attach import _check_gdb_output

    # gdb's own words when the kernel refuses PTRACE_ATTACH (root cannot be refused here).
    with pytest.raises(CommandError) as refused:
        _check_gdb_output(12345, "ptrace: Operation not permitted.\nHEAPSCOPE: attached\n")
    message = str(refused.value)
    assert message.startswith("not permitted to trace process 12345: ")
    assert "kernel.yama.ptrace_scope" in message or "CAP_SYS_PTRACE" in message


def test_a_process_another_debugger_traces_is_refused(tmp_path):
    sleeper = subprocess.Popen(["sleep", "120"])
    said = tmp_path / "said.txt"
    try:
        # heapscope attach, run from inside a gdb session that holds the process
        # (gdb's own Python must not see this one's PYTHONPATH).
        command = (f"env PYTHONPATH={shlex.quote(python_env()['PYTHONPATH'])} {shlex.quote(sys.executable)} "
                   f"-m heapscope attach {sleeper.pid} > {shlex.quote(str(said))} 2>&1")
        gdb_env = {name: value for name, value in os.environ.items() if not name.startswith("PYTHON")}
        subprocess.run(["gdb", "-batch", "-nx", "-p", str(sleeper.pid), "-ex", f"shell {command}", "-ex", "detach"],
                       capture_output=True, env=gdb_env, timeout=120)
        assert f"process {sleeper.pid} is already traced by process" in said.read_text()
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


def test_leaving_the_live_view_ends_the_capture(targets, tmp_path):
    target = targets()
    viewer = live_view(target)
    try:
        viewer.terminate()  # as a closed terminal or a kill: the view ends as with Ctrl-C
        assert viewer.wait(timeout=60) == 130
        assert f"heapscope: the capture in process {target.pid} ended" in viewer.stderr.read()
    finally:
        if viewer.poll() is None:
            viewer.kill()
        viewer.wait()
        viewer.stdout.close()
        viewer.stderr.close()
    # The process is free to be profiled again, and still runs as before.
    again = attach(target.pid, "-o", tmp_path / "again.hscap")
    assert again.returncode == 0, again.stderr
    assert heapscope_cli("detach", target.pid).returncode == 0
    target.tell("free")
    target.expect("paused")
    assert target.finish() == (0, "")
