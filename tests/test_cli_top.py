"""`heapscope top`, run the way a user runs it: a subprocess of `python -m heapscope`."""

import os
import re
import subprocess
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")


def heapscope(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "heapscope", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_reports_the_line_that_holds_the_memory(tmp_path):
    script = tmp_path / "hold.py"
    script.write_text("kept = []\n"
                      "for i in range(1000):\n"
                      "    kept.append(bytearray(1000))\n"
                      "print('done')\n")
    result = heapscope("top", "--limit", "3", str(script))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("done\n")  # the program's own output comes first, unchanged
    first = [line for line in result.stdout.splitlines() if line.startswith("#1")][0]
    assert first.endswith(f"{script}:3")
    size = re.search(r"#1\s+([\d.]+) (B|KiB|MiB)", first)
    assert size, first
    size_bytes = float(size.group(1)) * {"B": 1, "KiB": 1024, "MiB": 1024 ** 2}[size.group(2)]
    assert 0.95 * 1000 * 1000 <= size_bytes <= 1000 * 1100  # 1000 x (1000 bytes + object header)


def test_keeps_the_programs_exit_code_and_reports_after_an_exception(tmp_path):
    script = tmp_path / "boom.py"
    script.write_text("data = [bytearray(50_000) for _ in range(4)]\n"
                      "raise ValueError('boom')\n")
    result = heapscope("top", str(script))
    assert result.returncode == 1
    assert "ValueError: boom" in result.stderr
    assert f"{script}:1" in result.stdout   # the report was still made
    exiting = heapscope("top", "-c", "import sys; sys.exit(7)")
    assert exiting.returncode == 7


def test_module_and_code_forms_pass_their_arguments():
    result = heapscope("top", "-c", "import sys; print(sys.argv)", "a", "--flag")
    assert result.returncode == 0
    assert result.stdout.splitlines()[0] == "['-c', 'a', '--flag']"
    module = heapscope("top", "--limit", "1", "-m", "json.tool", "--help")
    assert module.returncode == 0
    assert "usage:" in module.stdout and "heapscope top:" in module.stdout


def test_group_by_traceback_shows_the_stack(tmp_path):
    script = tmp_path / "stack.py"
    script.write_text("def inner():\n"
                      "    return bytearray(200_000)\n"
                      "def outer():\n"
                      "    return inner()\n"
                      "kept = outer()\n")
    result = heapscope("top", "--group-by", "traceback", "--limit", "1", str(script))
    assert result.returncode == 0, result.stderr
    block = result.stdout.split("#1:")[1]
    positions = [block.index(f'line {n}') for n in (2, 4, 5)]
    assert positions == sorted(positions)  # most recent frame first


def test_names_with_control_characters_are_escaped(tmp_path):
    # A file name is user data: an escape sequence in it must not reach the terminal raw.
    evil = tmp_path / "evil\x1b[2J.py"
    evil.write_text("kept = bytearray(300_000)\n")
    result = heapscope("top", "--limit", "2", str(evil))
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout
    assert "evil\\x1b[2J.py:1" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["top"], "nothing to run"),
    (["top", "no_such_script.py"], "cannot open script"),
    (["top", "--nframe", "0", "-c", "pass"], "expected a number >= 1"),
    (["top", "--nframe", "x", "-c", "pass"], "expected a whole number"),
    (["top", "--group-by", "traceback", "--cumulative", "-c", "pass"], "--cumulative works with"),
    (["nosuchcommand"], "invalid choice"),
])
def test_bad_arguments_get_one_clear_error(args, message):
    result = heapscope(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_the_example_runs():
    result = heapscope("top", "--limit", "2", os.path.join(EXAMPLES, "leaky_cache.py"))
    assert result.returncode == 0, result.stderr
    assert "leaky_cache.py:22" in result.stdout  # the cache line holds the leak


def test_report_reaches_the_terminal_whatever_the_program_does_to_stdout():
    closed = heapscope("top", "--limit", "1", "-c", "import sys; x = bytearray(100_000); sys.stdout.close()")
    assert closed.returncode == 0, closed.stderr
    assert "heapscope top:" in closed.stdout
    replaced = heapscope("top", "--limit", "1", "-c", "import sys, io; sys.stdout = io.StringIO()")
    assert replaced.returncode == 0 and "heapscope top:" in replaced.stdout


def test_a_closed_pipe_keeps_the_programs_exit_code(tmp_path):
    script = tmp_path / "exit3.py"
    script.write_text("kept = [bytearray(i) for i in range(3000)]\nimport sys; sys.exit(3)\n")
    pipeline = (f"{sys.executable} -m heapscope top --limit 3000 {script} | head -c 1 >/dev/null; "
                "echo ${PIPESTATUS[0]}")
    result = subprocess.run(["bash", "-c", pipeline], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "3", result.stderr


def test_waits_for_non_daemon_threads_and_keeps_main_for_atexit(tmp_path):
    script = tmp_path / "late.py"
    script.write_text(
        "import atexit, pickle, threading, time\n"
        "class K: pass\n"
        "atexit.register(lambda: print('atexit pickled', len(pickle.dumps(K())) > 0))\n"
        "late = []\n"
        "def worker():\n"
        "    time.sleep(0.3)\n"
        "    late.append(bytearray(3_000_000))\n"
        "threading.Thread(target=worker).start()\n")
    result = heapscope("top", "--limit", "1", str(script))
    assert result.returncode == 0, result.stderr
    assert f"{script}:7" in result.stdout          # the thread's block is in the report
    assert "atexit pickled True" in result.stdout   # __main__ is still the program's


def test_script_globals_are_those_python_gives(tmp_path):
    script = tmp_path / "where.py"
    script.write_text("import os\nprint(os.path.isabs(__file__), __name__, __cached__)\n")
    result = heapscope("top", "where.py", cwd=str(tmp_path))
    assert result.stdout.splitlines()[0] == "True __main__ None"


def test_cumulative_shows_only_the_programs_frames_and_true_shares(tmp_path):
    script = tmp_path / "cumulative.py"
    script.write_text("def make():\n"
                      "    return bytearray(2_000_000)\n"
                      "kept = make()\n")
    result = heapscope("top", "--cumulative", "--limit", "5", str(script))
    assert result.returncode == 0, result.stderr
    assert "heapscope" not in result.stdout.split("heapscope top:")[1].split("\n", 3)[3]
    assert "runpy" not in result.stdout
    shares = [float(s) for s in re.findall(r"([\d.]+)%", result.stdout)]
    assert shares and all(share <= 100.0 for share in shares)
    assert max(shares) > 90  # both program lines hold (almost) all of it


def test_program_tracebacks_start_in_the_program_and_sigint_kills(tmp_path):
    failing = heapscope("top", "-c", "def f():\n    raise RuntimeError('x')\nf()")
    assert failing.returncode == 1
    assert "_program.py" not in failing.stderr and "RuntimeError: x" in failing.stderr
    interrupted = heapscope("top", "-c", "raise KeyboardInterrupt")
    assert interrupted.returncode == -2   # died by SIGINT, as python would
    assert "heapscope top:" in interrupted.stdout
