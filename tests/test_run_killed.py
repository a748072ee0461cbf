"""How a program run by ``heapscope run`` ended, when it was killed (issue 14):
``heapscope run`` waits for it, notes the signal in the capture, and
``heapscope summary`` says so. The real thing: the kernel's OOM killer, in a
memory cgroup the test makes when the machine lets it."""

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from heapscope import FileReader
from capture_helpers import by_line, heapscope_cli, python_env, write_script

GROWS = """
import os, sys
kept = []
while True:
    kept.append(b"\\x01" * (1 << 20))   # @grow  (written: resident, not just reserved)
    if len(kept) == int(sys.argv[1]):
        os.kill(os.getpid(), int(sys.argv[2]))
"""


def run_heapscope(*args, preexec_fn=None, timeout=180):
    return subprocess.run([sys.executable, "-m", "heapscope", "run", *map(str, args)], capture_output=True,
                          text=True, env=python_env(), timeout=timeout, preexec_fn=preexec_fn)


def check_killed_capture(capture, script, line, signal_name, at_least_mib):
    reader = FileReader(capture)
    metadata = reader.metadata
    assert not metadata.complete and metadata.damage is None
    assert metadata.exit_signal == getattr(signal, signal_name)
    assert metadata.exit_code is None
    peak = by_line(reader.get_high_watermark_allocation_records(), script)
    grown, count = peak[line]
    assert count >= at_least_mib and grown >= at_least_mib << 20
    assert max(peak.values()) == peak[line]  # the growing line is the top one
    summary = heapscope_cli("summary", capture)
    assert summary.returncode == 0, summary.stderr
    assert f"{script}:{line}" in summary.stdout
    assert summary.stderr.startswith("heapscope: warning:")
    assert f"the program was killed by {signal_name}" in summary.stderr


@pytest.mark.parametrize("signal_name", ["SIGKILL", "SIGTERM"])
def test_heapscope_run_notes_the_signal_that_killed_the_program(tmp_path, signal_name):
    script = tmp_path / "grows.py"
    lines = write_script(script, GROWS)
    capture = tmp_path / "grows.hscap"
    number = getattr(signal, signal_name)
    result = run_heapscope("-o", capture, script, 20, int(number))  # (str() of a Signals is its name before 3.11)
    assert result.returncode == -number  # heapscope run dies the way the program did
    assert f"heapscope: the program was killed by {signal_name}; {capture} holds what it recorded" in result.stderr
    check_killed_capture(capture, script, lines["grow"], signal_name, 20)


def test_a_program_that_ends_normally_has_its_exit_code_in_the_capture(tmp_path):
    capture = tmp_path / "exit.hscap"
    result = run_heapscope("-o", capture, "-c", "import sys; sys.exit(3)")
    assert result.returncode == 3
    metadata = FileReader(capture).metadata
    assert metadata.complete and metadata.exit_code == 3 and metadata.exit_signal is None


def test_signals_sent_to_heapscope_run_reach_the_program(tmp_path):
    capture = tmp_path / "term.hscap"
    process = subprocess.Popen([sys.executable, "-m", "heapscope", "run", "-o", str(capture), "-c",
                                "import signal, sys, time\n"
                                "signal.signal(signal.SIGTERM, lambda *a: sys.exit(7))\n"
                                "print('ready', flush=True)\n"
                                "time.sleep(60)"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=python_env())
    try:
        assert process.stdout.readline() == "ready\n"
        process.send_signal(signal.SIGTERM)  # to heapscope run, not to the program
        assert process.wait(timeout=60) == 7
    finally:
        process.kill()
        process.communicate()
    assert FileReader(capture).metadata.exit_code == 7


# --- the OOM killer ---------------------------------------------------------------------------------------------------

def _read(path):
    with open(path) as f:
        return f.read()


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def _own_cgroup(kind):
    """This process's cgroup path for hierarchy *kind* ("" for v2, "memory" for v1)."""
    for line in _read("/proc/self/cgroup").splitlines():
        _, controllers, path = line.split(":", 2)
        if (kind == "" and controllers == "") or kind in controllers.split(","):
            return path
    return None


def make_memory_cgroup(limit_bytes):
    """A new memory cgroup limited to *limit_bytes* (no swap), under this
    process's own: (directory, its procs file). Skips the test, saying why,
    when the machine does not allow one. cgroup v2 first; the v1 memory
    controller when v2 has none (hybrid hierarchies)."""
    reasons = []
    name = f"heapscope-oom-{uuid.uuid4().hex[:8]}"
    for v2_root in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        if not os.path.exists(os.path.join(v2_root, "cgroup.controllers")):
            continue
        own = _own_cgroup("")
        parent = os.path.join(v2_root, (own or "/").lstrip("/"))
        if "memory" not in _read(os.path.join(v2_root, "cgroup.controllers")).split():
            reasons.append(f"cgroup v2 at {v2_root} has no memory controller")
            continue
        try:
            if "memory" not in _read(os.path.join(parent, "cgroup.subtree_control")).split():
                _write(os.path.join(parent, "cgroup.subtree_control"), "+memory")
            directory = os.path.join(parent, name)
            os.mkdir(directory)
        except OSError as error:
            reasons.append(f"cannot make a cgroup v2 with memory under {parent}: {error.strerror}")
            continue
        try:
            _write(os.path.join(directory, "memory.max"), str(limit_bytes))
            if os.path.exists(os.path.join(directory, "memory.swap.max")):
                _write(os.path.join(directory, "memory.swap.max"), "0")
        except OSError as error:
            os.rmdir(directory)
            reasons.append(f"cannot set memory.max in {directory}: {error.strerror}")
            continue
        return directory, os.path.join(directory, "cgroup.procs")
    v1_root = "/sys/fs/cgroup/memory"
    own = _own_cgroup("memory")
    if own is not None and os.path.exists(os.path.join(v1_root, "memory.limit_in_bytes")):
        parent = os.path.join(v1_root, own.lstrip("/"))
        directory = os.path.join(parent, name)
        try:
            os.mkdir(directory)
        except OSError as error:
            reasons.append(f"cannot make a v1 memory cgroup under {parent}: {error.strerror}")
        else:
            try:
                _write(os.path.join(directory, "memory.limit_in_bytes"), str(limit_bytes))
                if os.path.exists(os.path.join(directory, "memory.memsw.limit_in_bytes")):
                    _write(os.path.join(directory, "memory.memsw.limit_in_bytes"), str(limit_bytes))
                return directory, os.path.join(directory, "cgroup.procs")
            except OSError as error:
                os.rmdir(directory)
                reasons.append(f"cannot set memory.limit_in_bytes in {directory}: {error.strerror}")
    else:
        reasons.append("no v1 memory controller either")
    pytest.skip("no memory cgroup can be made here: " + "; ".join(reasons))


def remove_cgroup(directory):
    for _ in range(100):
        try:
            os.rmdir(directory)
            return
        except OSError:
            time.sleep(0.05)  # the killed processes are still leaving it


def test_the_oom_killer_ends_the_program_and_the_capture_shows_the_growing_line(tmp_path):
    limit = 256 << 20
    directory, procs = make_memory_cgroup(limit)
    try:
        script = tmp_path / "grows.py"
        lines = write_script(script, GROWS)
        capture = tmp_path / "oom.hscap"
        result = run_heapscope("-o", capture, script, 10_000, 0,  # grows until the kernel ends it
                               preexec_fn=lambda: _write(procs, str(os.getpid())))
    finally:
        remove_cgroup(directory)
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert "heapscope: the program was killed by SIGKILL" in result.stderr
    # Most of the limit was the growing line's when the kernel killed it.
    check_killed_capture(capture, script, lines["grow"], "SIGKILL", (limit >> 20) // 2)
