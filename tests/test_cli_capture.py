"""`heapscope run / summary / stats / tree / live`, run as a user runs them: subprocesses of `python -m heapscope`."""

import json
import os
import re
import socket
import subprocess
import sys

import pytest

from heapscope import FileReader
from capture_helpers import heapscope_cli, python_env, write_script

PROGRAM = """
import sys

def make(n):
    return bytearray(n)                      # @inner

def churn():
    for _ in range(200):
        scratch = bytearray(50_000)          # @temporary
        del scratch

kept = [make(1_000_000) for _ in range(3)]   # @outer
big = bytearray(4_000_000)                   # @big
del big
churn()
print("program output", sys.argv[1:])
sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
"""


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    directory = tmp_path_factory.mktemp("prog")
    script = directory / "prog.py"
    lines = write_script(script, PROGRAM)
    return script, lines


@pytest.fixture(scope="module")
def capture(program, tmp_path_factory):
    script, _ = program
    path = tmp_path_factory.mktemp("cap") / "prog.hscap"
    result = heapscope_cli("run", "-q", "-o", path, script)
    assert result.returncode == 0, result.stderr
    return path


def test_run_keeps_output_and_exit_code_and_says_where_the_capture_is(program, tmp_path):
    script, _ = program
    result = heapscope_cli("run", script, "5", cwd=tmp_path)
    assert result.returncode == 5
    assert result.stdout == "program output ['5']\n"   # the program's output, untouched
    made = [name for name in os.listdir(tmp_path) if name.endswith(".hscap")]
    assert len(made) == 1 and re.fullmatch(r"heapscope-prog\.py\.\d+\.hscap", made[0]), made
    assert made[0] in result.stderr and f"heapscope summary {made[0]}" in result.stderr
    assert FileReader(tmp_path / made[0]).metadata.complete
    quiet = heapscope_cli("run", "-q", "-o", tmp_path / "q.hscap", script)
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_run_refuses_an_existing_output_before_running(program, tmp_path):
    script, _ = program
    existing = tmp_path / "taken.hscap"
    existing.write_bytes(b"precious")
    result = heapscope_cli("run", "-o", existing, script)
    assert result.returncode == 1
    assert result.stdout == ""  # the program did not run
    assert result.stderr.startswith("heapscope: error:") and "already exists" in result.stderr
    assert result.stderr.count("\n") == 1
    assert existing.read_bytes() == b"precious"
    forced = heapscope_cli("run", "--force", "-q", "-o", existing, script)
    assert forced.returncode == 0 and FileReader(existing).metadata.complete


def test_run_module_and_code_forms(tmp_path):
    code = heapscope_cli("run", "-q", "-o", tmp_path / "c.hscap", "-c",
                         "import sys; kept = bytearray(3_000_000); print(sys.argv)", "a", "--flag")
    assert code.returncode == 0, code.stderr
    assert code.stdout == "['-c', 'a', '--flag']\n"
    module = heapscope_cli("run", "-o", tmp_path / "m.hscap", "-m", "json.tool", "--help")
    assert module.returncode == 0 and "usage:" in module.stdout
    default = heapscope_cli("run", "-c", "pass", cwd=tmp_path)
    assert re.search(r"heapscope-c\.\d+\.hscap", default.stderr)


@pytest.mark.parametrize("args, message", [
    (["run"], "nothing to run"),
    (["run", "no_such_script.py"], "cannot open script"),
    (["run", "--live-port", "0", "-c", "pass"], "expected a port number"),
    (["run", "--live-port", "7000", "--aggregate", "-c", "pass"], "--live-port cannot be combined"),
    (["summary"], "the following arguments are required"),
    (["summary", "x", "-n", "0"], "expected a number >= 1"),
    (["tree", "x", "--leaks", "--temporary"], "not allowed with"),
    (["tree", "x", "--threshold", "3"], "--threshold goes with --temporary"),
    (["live", "70000"], "expected a port number"),
])
def test_bad_arguments_get_one_clear_error(args, message):
    result = heapscope_cli(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_summary_shows_the_top_locations_at_the_peak(program, capture):
    script, lines = program
    result = heapscope_cli("summary", capture)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith(f"heapscope summary: {script}")
    for label in ("capture", "ran", "peak", "totals", "shown"):
        assert re.search(rf"^  {label}\s", out, re.M), label
    rows = [line for line in out.splitlines() if f"{script}:" in line]
    # At the peak: the 4 MB block (big), then the three 1 MB blocks made in make().
    assert rows[0].split()[:2] == ["<module>", f"{script}:{lines['big']}"]
    assert rows[1].split()[:2] == ["make", f"{script}:{lines['inner']}"]
    assert re.search(r"\b3\s*$", rows[1])  # three blocks
    limited = heapscope_cli("summary", "-n", "1", capture).stdout
    assert len([line for line in limited.splitlines() if f"{script}:" in line]) == 1
    assert "more locations" in limited
    leaks = heapscope_cli("summary", "--leaks", capture).stdout
    leak_rows = [line for line in leaks.splitlines() if f"{script}:" in line]
    assert leak_rows[0].split()[:2] == ["make", f"{script}:{lines['inner']}"]
    assert f"{script}:{lines['big']}" not in leaks   # freed before the end


def test_stats_text_and_json(program, capture):
    script, lines = program
    text = heapscope_cli("stats", capture)
    assert text.returncode == 0, text.stderr
    for heading in ("Allocation sizes:", "Allocations by function:", "locations by bytes allocated",
                    "locations by number of allocations"):
        assert heading in text.stdout
    result = heapscope_cli("stats", "--json", "-n", "3", capture)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["total_num_allocations"] == sum(b["count"] for b in document["allocation_size_histogram"])
    assert document["total_num_allocations"] == sum(document["allocator_type_distribution"].values())
    assert document["total_bytes_allocated"] >= 200 * 50_000 + 4_000_000 + 3_000_000
    assert len(document["top_allocations_by_size"]) == 3
    top = document["top_allocations_by_size"][0]
    # 200 x 50 kB freed again: the most bytes allocated in total, though never at the peak.
    assert top["location"] == {"function": "churn", "filename": str(script), "lineno": lines["temporary"]}
    assert top["size"] >= 200 * 50_000
    assert document["metadata"]["file_format"] == "ALL_ALLOCATIONS"


def test_tree_of_peak_leaks_and_temporary(program, capture):
    script, lines = program
    result = heapscope_cli("tree", capture)
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert out[0].startswith("Memory held at the high-water mark:")
    outer = next(i for i, line in enumerate(out) if line.endswith(f"{script}:{lines['outer']}"))
    inner = next(i for i, line in enumerate(out) if line.endswith(f"make  {script}:{lines['inner']}"))
    assert outer < inner and out[inner].index("make") > out[outer].index("<module>")  # nested under it
    assert any(ch in result.stdout for ch in "\u251c\u2514")
    temporary = heapscope_cli("tree", "--temporary", capture)
    assert temporary.returncode == 0, temporary.stderr
    assert f"churn  {script}:{lines['temporary']}" in temporary.stdout
    leaks = heapscope_cli("tree", "--leaks", capture)
    assert f"{script}:{lines['big']}" not in leaks.stdout and f"{script}:{lines['inner']}" in leaks.stdout


def test_aggregated_capture_reports_and_refusals(program, tmp_path):
    script, lines = program
    path = tmp_path / "agg.hscap"
    assert heapscope_cli("run", "-q", "--aggregate", "-o", path, script).returncode == 0
    summary = heapscope_cli("summary", path)
    assert summary.returncode == 0 and f"{script}:{lines['big']}" in summary.stdout
    assert "AGGREGATED_ALLOCATIONS" in summary.stdout
    for args in (["stats", path], ["tree", "--temporary", path]):
        refused = heapscope_cli(*args)
        assert refused.returncode == 1
        assert refused.stderr.startswith("heapscope: error:") and refused.stderr.count("\n") == 1
        assert "pre-aggregated" in refused.stderr


def test_names_with_control_characters_are_escaped(tmp_path):
    evil = tmp_path / "evil\x1b[2J.py"
    evil.write_text("import sys\n\nkept = bytearray(3_000_000)\n")
    path = tmp_path / "evil.hscap"
    assert heapscope_cli("run", "-q", "-o", path, evil).returncode == 0
    for command in ("summary", "tree"):
        result = heapscope_cli(command, path)
        assert result.returncode == 0, result.stderr
        assert "\x1b" not in result.stdout and "evil\\x1b[2J.py:3" in result.stdout


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_live_follows_a_running_program(tmp_path):
    script = tmp_path / "slow.py"
    lines = write_script(script, """
        import time
        kept = []
        for i in range(3):
            kept.append(bytearray(2_000_000))   # @grow
            time.sleep(0.4)
    """)
    port = _free_port()
    tracked = subprocess.Popen([sys.executable, "-m", "heapscope", "run", "--live-port", str(port), str(script)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=python_env())
    try:
        viewer = heapscope_cli("live", port, timeout=60)
        assert viewer.returncode == 0, viewer.stderr
        assert tracked.wait(timeout=60) == 0
    finally:
        tracked.kill()
        tracked.wait()
    tables = viewer.stdout.split("heapscope live:")
    assert len(tables) >= 2  # one table a second, and the last one
    assert "the program ended" in tables[-1]
    row = next(line for line in tables[-1].splitlines() if f"{script}:{lines['grow']}" in line)
    assert "5.7 MiB" in row and row.rstrip().endswith("3")
    assert "\x1b[" not in viewer.stdout  # not a terminal: no screen redraws


def test_live_with_nothing_to_connect_to():
    result = heapscope_cli("live", _free_port())
    assert result.returncode == 1
    assert result.stderr.startswith("heapscope: error: nothing is serving") and result.stderr.count("\n") == 1


def test_follow_fork_from_the_command_line(tmp_path):
    script = tmp_path / "forks.py"
    write_script(script, """
        import os
        pid = os.fork()
        if pid == 0:
            kept = bytearray(3_000_000)
        else:
            os.waitpid(pid, 0)
            print(pid)
    """)
    path = tmp_path / "forks.hscap"
    result = heapscope_cli("run", "--follow-fork", "-o", path, script)
    assert result.returncode == 0, result.stderr
    child = int(result.stdout.split()[-1])
    assert (tmp_path / f"forks.hscap.{child}").exists()
    assert FileReader(tmp_path / f"forks.hscap.{child}").metadata.pid == child
    assert result.stderr.count("heapscope: wrote") == 1  # the child says nothing


def test_the_console_scripts_frame_is_left_out_with_heapscopes_own(tmp_path):
    # What pip's `heapscope` console script does: its frame is the outermost
    # of every stack, outside heapscope's package.
    launcher = tmp_path / "heapscope"
    launcher.write_text("import sys\nfrom heapscope.cli import main\nsys.exit(main())\n")
    script = tmp_path / "hold.py"
    script.write_text("kept = bytearray(3_000_000)\n")
    capture = tmp_path / "hold.hscap"
    env = python_env()
    ran = subprocess.run([sys.executable, str(launcher), "run", "-q", "-o", str(capture), str(script)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert ran.returncode == 0, ran.stderr
    tree = subprocess.run([sys.executable, str(launcher), "tree", "--leaks", str(capture)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert tree.returncode == 0, tree.stderr
    first_branch = [line for line in tree.stdout.splitlines() if "%" in line][0]
    assert f"{script}:1" in first_branch        # the program's line is the root of the tree
    assert str(launcher) not in tree.stdout
    assert "cli/run.py" not in tree.stdout and "_program.py" not in tree.stdout
