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
