"""heapscope's pytest plugin (heapscope.pytest_plugin, heapscope.pytest_limits).

Each run is a real pytest in a subprocess (pytester) on test files that
allocate known sizes: ``bytearray(n)`` holds a buffer of n + 1 bytes, the
only block such a test body makes that heapscope sees (without
--heapscope-trace-python-allocators, Python's small objects live in pymalloc
arenas made before the test). So peaks are exact to the byte, and the limits
are checked both with wide margins and at the exact edge.
"""

import importlib.metadata
import json
import os
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from heapscope.pytest_limits import parse_growth, parse_memory_string
from heapscope.pytest_plugin import _MAX_STEM_BYTES, _SUFFIXES, capture_stem

pytest_plugins = ["pytester"]

TIMEOUT = 120  # seconds, for each inner pytest run
MiB = 1024 * 1024
EXACT = 3 * MiB + 12345  # an odd size: bytearray(EXACT) holds EXACT + 1 bytes

try:
    import pytest_memray  # noqa: F401

    HAVE_PYTEST_MEMRAY = True
except ImportError:  # pragma: no cover - the test extra installs it
    HAVE_PYTEST_MEMRAY = False

try:
    import xdist  # noqa: F401

    HAVE_XDIST = True
except ImportError:  # pragma: no cover - the test extra installs it
    HAVE_XDIST = False


def _entry_point_installed():
    """The installed heapscope declares the pytest11 entry point (then pytest
    loads the plugin by itself; a checkout run from src/ with an older
    install loads it with -p)."""
    try:
        points = importlib.metadata.entry_points(group="pytest11")
    except TypeError:  # Python 3.9
        points = importlib.metadata.entry_points().get("pytest11", [])
    return any(point.name == "heapscope" and point.value == "heapscope.pytest_plugin" for point in points)


def heapscope_args():
    return [] if _entry_point_installed() else ["-p", "heapscope.pytest_plugin"]


def run_heapscope(pytester, *args):
    """pytest with heapscope's plugin (and pytest-memray's disabled)."""
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:memray", *heapscope_args(), *args,
                                         timeout=TIMEOUT)


def outcomes(pytester, result_file):
    """{test name: "passed" | "failed" | "error"} from a junit XML file."""
    tree = ET.parse(pytester.path / result_file)
    states = {}
    for case in tree.iter("testcase"):
        state = "passed"
        if case.find("failure") is not None:
            state = "failed"
        elif case.find("error") is not None:
            state = "error"
        states[case.get("name")] = state
    return states


def line_of(source, text):
    """The 1-based number of the line of *source* holding *text*."""
    return next(number for number, line in enumerate(source.splitlines(), 1) if text in line)


SIZES_HEAD = f"""
import threading
import pytest

MiB = 1024 * 1024
held = []


def allocate(n):
    return bytearray(n)  # allocate-line


def keep(n):
    held.append(bytearray(n))  # keep-line


def keep_elsewhere(n):
    held.append(bytearray(n))  # keep-elsewhere-line


def keep_in_thread(n):
    thread = threading.Thread(target=keep, args=(n,))
    thread.start()
    thread.join()
"""

MARGINS = SIZES_HEAD + """

@pytest.mark.limit_memory("8 MB")
def test_memory_under():
    allocate(8 * MiB - 64 * 1024)


@pytest.mark.limit_memory("8 MB")
def test_memory_over():
    allocate(8 * MiB + 64 * 1024)


@pytest.mark.limit_memory("8 MB")
def test_memory_peak_not_sum():
    for _ in range(4):
        allocate(6 * MiB)  # 24 MiB allocated, never more than 6 MiB at once


@pytest.mark.limit_leaks("1 MB")
def test_leak_under():
    keep(MiB - 64 * 1024)


@pytest.mark.limit_leaks("1 MB")
def test_leak_over():
    keep(MiB + 64 * 1024)


@pytest.mark.limit_leaks("1 MB")
def test_leak_one_location_adds_up():
    for _ in range(4):
        keep(512 * 1024)  # one stack: 2 MiB there


@pytest.mark.limit_leaks("1 MB")
def test_leak_spread_over_locations():
    keep(768 * 1024)
    keep_elsewhere(768 * 1024)  # 1.5 MiB in all, under 1 MiB at each location


@pytest.mark.limit_leaks("1 MB", filter_fn=lambda stack: not any(f.function == "keep" for f in stack.frames))
def test_leak_filtered_out():
    keep(2 * MiB)


@pytest.mark.limit_leaks("1 MB", filter_fn=lambda stack: not any(f.function == "keep" for f in stack.frames))
def test_leak_not_filtered():
    keep_elsewhere(2 * MiB)


@pytest.mark.limit_memory("4 MB", current_thread_only=True)
def test_memory_other_thread_ignored():
    keep_in_thread(8 * MiB)
    allocate(3 * MiB)


@pytest.mark.limit_memory("4 MB")
def test_memory_other_thread_counted():
    keep_in_thread(8 * MiB)


@pytest.mark.limit_leaks("1 MB", current_thread_only=True)
def test_leak_other_thread_ignored():
    keep_in_thread(4 * MiB)
"""

MARGIN_EXPECTED = {
    "test_memory_under": "passed", "test_memory_over": "failed", "test_memory_peak_not_sum": "passed",
    "test_leak_under": "passed", "test_leak_over": "failed", "test_leak_one_location_adds_up": "failed",
    "test_leak_spread_over_locations": "passed", "test_leak_filtered_out": "passed",
    "test_leak_not_filtered": "failed", "test_memory_other_thread_ignored": "passed",
    "test_memory_other_thread_counted": "failed", "test_leak_other_thread_ignored": "passed",
}


# ---- sizes, names, growth


@pytest.mark.parametrize("text", [
    "24 MB", "24MB", "1.5KB", ".5 mb", "+2 gb", "100 B", "0 B", "3 tb", "1 PB", "10 kb and more", "5 MBfoo",
    "1 KBB", "  5 MB", "1. MB", "1e3 MB", "-1 MB", "MB", "", "1 XB", "1 MiB", "12", "1,5 MB", "٣ MB",
])
def test_sizes_are_read_as_pytest_memray_reads_them(text):
    from_memray = pytest.importorskip("pytest_memray.utils").parse_memory_string
    try:
        expected = from_memray(text)
    except ValueError as error:
        with pytest.raises(ValueError) as ours:
            parse_memory_string(text)
        assert str(ours.value) == str(error)
    else:
        value = parse_memory_string(text)
        assert value == expected and type(value) is type(expected)


def test_sizes_without_pytest_memray():
    assert parse_memory_string("24 MB") == 24 * MiB
    assert parse_memory_string("1.5kb") == 1536.0
    assert parse_memory_string("7 B") == 7.0
    for text in ("MB", "1 MiB", " 1 MB", "1 XB"):
        with pytest.raises(ValueError, match="Invalid memory size format"):
            parse_memory_string(text)
    with pytest.raises(TypeError):
        parse_memory_string(5)


def test_growth_forms():
    assert parse_growth("10%") == ("percent", 10.0)
    assert parse_growth(" 2.5 % ".strip()) == ("percent", 2.5)
    assert parse_growth("1 MB") == ("bytes", float(MiB))
    for text in ("-5%", "x%", "ten", "10"):
        with pytest.raises(ValueError, match="invalid growth"):
            parse_growth(text)


def test_capture_names_fit_and_stay_distinct():
    assert capture_stem("tests/test_a.py::test_b") == "tests-test_a.py-test_b"
    assert capture_stem("test_a.py::TestC::test_d[1-x]") == "test_a.py-TestC-test_d[1-x]"
    stems = {capture_stem(test_id) for test_id in ("t.py::f[a b]", "t.py::f[a_b]", "t.py::f[a?b]", "t.py::f[a*b]")}
    assert len(stems) == 4  # characters replaced: a digest of the id keeps them apart
    assert not capture_stem("../x.py::t").startswith(".")
    for test_id in ("t.py::f[" + "x" * 400 + "]", "t.py::f[" + "é" * 300 + "]", "t.py::f[" + "€/" * 200 + "]"):
        stem = capture_stem(test_id)
        assert len(stem.encode("utf-8")) <= _MAX_STEM_BYTES
        assert all(len((stem + suffix).encode("utf-8")) <= 255 for suffix in _SUFFIXES)
        assert stem != capture_stem(test_id[:-2] + "y]")


# ---- the markers


def test_markers_pass_under_and_fail_over_their_limits(pytester):
    pytester.makepyfile(test_margins=MARGINS)
    result = run_heapscope(pytester, "--junitxml=out.xml")
    assert outcomes(pytester, "out.xml") == MARGIN_EXPECTED, result.stdout.str()
    assert result.ret == 1
    # The markers work without --heapscope, as pytest-memray's do without --memray; no report then.
    assert "heapscope report" not in result.stdout.str()
    result.stdout.fnmatch_lines(["*MEMORY PROBLEMS*test_memory_over*"])
    # junit XML names the failure and its flame graph.
    case = next(case for case in ET.parse(pytester.path / "out.xml").iter("testcase")
                if case.get("name") == "test_memory_over")
    properties = {prop.get("name"): prop.get("value") for prop in case.iter("property")}
    assert properties["heapscope_problem"].startswith("Test was limited to 8.0 MiB but allocated 8.1 MiB")
    assert os.path.isfile(properties["heapscope_flamegraph"])


@pytest.mark.skipif(not HAVE_PYTEST_MEMRAY, reason="needs pytest-memray (pip install .[test])")
def test_same_outcomes_as_pytest_memray(pytester):
    """The marker suite runs unchanged under pytest-memray and heapscope, with the same outcome for every test."""
    pytester.makepyfile(test_margins=MARGINS)
    ours = run_heapscope(pytester, "--heapscope", "--junitxml=ours.xml")
    theirs = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:heapscope", "--memray",
                                           "--junitxml=theirs.xml", timeout=TIMEOUT)
    assert theirs.ret == 1, theirs.stdout.str()
    assert outcomes(pytester, "theirs.xml") == MARGIN_EXPECTED, theirs.stdout.str()
    assert outcomes(pytester, "ours.xml") == MARGIN_EXPECTED, ours.stdout.str()


EXACT_TESTS = SIZES_HEAD + f"""

@pytest.mark.limit_memory("{EXACT + 2} B")
def test_peak_one_byte_under():
    allocate({EXACT})


@pytest.mark.limit_memory("{EXACT + 1} B")
def test_peak_at_the_limit():
    allocate({EXACT})  # reaching the limit fails, as in pytest-memray


@pytest.mark.limit_leaks("{EXACT + 2} B")
def test_leak_one_byte_under():
    keep({EXACT})


@pytest.mark.limit_leaks("{EXACT + 1} B")
def test_leak_at_the_limit():
    keep({EXACT})


def test_unmarked():
    allocate({EXACT})
"""


def test_limits_are_exact_to_the_byte(pytester):
    pytester.makepyfile(test_exact=EXACT_TESTS)
    result = run_heapscope(pytester, "--heapscope", "--heapscope-baseline", "peaks.json", "--junitxml=out.xml")
    assert outcomes(pytester, "out.xml") == {
        "test_peak_one_byte_under": "passed", "test_peak_at_the_limit": "failed",
        "test_leak_one_byte_under": "passed", "test_leak_at_the_limit": "failed", "test_unmarked": "passed",
    }, result.stdout.str()
    peaks = json.loads((pytester.path / "peaks.json").read_text())["peaks"]
    assert peaks["test_exact.py::test_unmarked"] == EXACT + 1
    assert peaks["test_exact.py::test_peak_one_byte_under"] == EXACT + 1
    assert "test_exact.py::test_peak_at_the_limit" not in peaks  # a test that failed is not recorded


def test_failure_messages_show_stacks_and_a_flame_graph(pytester):
    source = pytester.makepyfile(test_margins=MARGINS).read_text()
    path = pytester.path / "test_margins.py"
    result = run_heapscope(pytester, "-k", "test_memory_over or test_leak_over or test_leak_not_filtered")
    output = result.stdout.str()
    result.stdout.fnmatch_lines([
        "*_ test_memory_over _*",
        f"Test was limited to 8.0 MiB but allocated 8.1 MiB (memory held at its peak, all threads)",
        "Largest stacks at the peak:",
        "    - 8.1 MiB in 1 block allocated here:",
        f"        allocate at {path}:{line_of(source, 'allocate-line')}",
        f"        test_memory_over at {path}:{line_of(source, 'allocate(8 * MiB + 64 * 1024)')}",
        "Flame graph of the peak: *test_margins.py-test_memory_over.peak.html",
    ])
    result.stdout.fnmatch_lines([
        "*_ test_leak_over _*",
        "Test was allowed to leak 1.0 MiB per location but at least one location leaked more",
        "Locations still holding 1.0 MiB or more when the test ended:",
        "    - 1.1 MiB in 1 block allocated here:",
        f"        keep at {path}:{line_of(source, 'keep-line')}",
        f"        test_leak_over at {path}:{line_of(source, 'keep(MiB + 64 * 1024)')}",
        "Flame graph of the memory still held at the end: *test_margins.py-test_leak_over.leaks.html",
    ])
    # Only the stacks under the test: no frame of pytest, pluggy or heapscope's wrapper.
    failures = output.split("= FAILURES =")[1].split("short test summary")[0]
    assert "pluggy" not in failures and "_pytest" not in failures and "pytest_plugin" not in failures
    # Once each: with CI set, pytest repeats whole messages in its short summary.
    pages = list(dict.fromkeys(re.findall(r"Flame graph of [^:]*: (\S+\.html)", output)))
    assert len(pages) == 3
    for page, test in zip(pages, ("test_memory_over", "test_leak_over", "test_leak_not_filtered")):
        assert os.path.isfile(page), page
        assert Path(page).name == f"test_margins.py-{test}.{'peak' if test == 'test_memory_over' else 'leaks'}.html"
        html = Path(page).read_text(encoding="utf-8")
        assert html.startswith("<!DOCTYPE html>")
        assert f'"{test}"' in html and ('"allocate"' in html or '"keep' in html)
        assert f"test_margins.py::{test}" in html  # the page's title names the test


def test_filter_fn_receives_a_stack_of_frames(pytester):
    pytester.makepyfile(test_filter=SIZES_HEAD + """
import json
from heapscope.pytest_limits import Stack, StackFrame

seen = []


def record(stack):
    seen.append({"stack": type(stack) is Stack,
                 "frames": [(type(f) is StackFrame, f.function, f.filename, f.lineno) for f in stack.frames]})
    with open("seen.json", "w") as out:
        json.dump(seen, out)
    return True


@pytest.mark.limit_leaks("1 MB", filter_fn=record)
def test_leaks():
    keep(2 * MiB)
""")
    result = run_heapscope(pytester)
    assert result.ret == 1
    seen = json.loads((pytester.path / "seen.json").read_text())
    assert len(seen) == 1  # called once, for the one location over the limit
    assert seen[0]["stack"] is True
    frames = seen[0]["frames"]
    assert all(is_frame for is_frame, *_ in frames)
    functions = [function for _, function, _, _ in frames]
    # Innermost first, native frames included (pytest-memray's hybrid stack).
    assert functions.index("keep") < functions.index("test_leaks")
    assert any(not filename.endswith(".py") for _, _, filename, _ in frames)


def test_marker_mistakes_fail_the_test(pytester):
    pytester.makepyfile(test_mistakes="""
import pytest


@pytest.mark.limit_memory("1 XB")
def test_bad_size():
    pass


@pytest.mark.limit_memory("1 MB", bogus=True)
def test_bad_argument():
    pass


@pytest.mark.limit_memory("1 MB")
@pytest.mark.limit_leaks("1 MB")
def test_two_markers():
    pass


@pytest.mark.limit_leaks("1 B", filter_fn=lambda stack: 1 / 0)
def test_filter_raises():
    global kept
    kept = bytearray(100)
""")
    result = run_heapscope(pytester, "--junitxml=out.xml")
    assert set(outcomes(pytester, "out.xml").values()) == {"failed"}
    result.stdout.fnmatch_lines(["*ValueError: Invalid memory size format: 1 XB*"])
    result.stdout.fnmatch_lines(["*limit_memory*unexpected keyword argument 'bogus'*"])
    result.stdout.fnmatch_lines(["*Only one heapscope marker*"])
    result.stdout.fnmatch_lines(["heapscope could not check limit_leaks: ZeroDivisionError: division by zero"])


def test_limit_leaked_objects_is_refused(pytester):
    pytester.makepyfile(test_objects="""
import pytest


@pytest.mark.limit_leaked_objects()
def test_objects():
    pass
""")
    result = run_heapscope(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*heapscope cannot check the limit_leaked_objects marker*"])


# ---- the report, the captures, the options


REPORT_TESTS = """
import pytest

MiB = 1024 * 1024
held = []


@pytest.mark.parametrize("mib", [1, 2, 3, 4])
def test_size(mib):
    buffer = bytearray(mib * MiB)


def test_leaks():
    held.append(bytearray(3 * MiB // 2))


def test_nothing():
    pass
"""


def test_summary_lists_the_largest_peaks_and_the_leaks(pytester):
    pytester.makepyfile(test_report=REPORT_TESTS)
    result = run_heapscope(pytester, "--heapscope", "--most-allocations", "2")
    assert result.ret == 0, result.stdout.str()
    output = result.stdout.str()
    report = output.split("heapscope report")[1]
    result.stdout.fnmatch_lines([
        "*= heapscope report =*",
        "6 tests profiled.",
        "",
        "Largest peaks (memory held at the high-water mark of the test):",
        "*peak*blocks*test*largest location",
        "*",
        "4.0 MiB*1*test_report.py::test_size[[]4[]]*4.0 MiB in test_size (test_report.py:*)",
        "3.0 MiB*1*test_report.py::test_size[[]3[]]*",
        "",
        "Memory still held when the test ended (1 of 6 tests):",
        "*leaked*blocks*test*",
        "*",
        "1.5 MiB*1*test_report.py::test_leaks*1.5 MiB in test_leaks (test_report.py:*)",
    ])
    assert "test_size[2]" not in report and "test_size[1]" not in report  # --most-allocations 2

    everything = run_heapscope(pytester, "--heapscope", "--heapscope-most-allocations", "0")
    report = everything.stdout.str().split("heapscope report")[1]
    assert all(f"test_size[{mib}]" in report for mib in (1, 2, 3, 4))
    assert "test_nothing" in report

    hidden = run_heapscope(pytester, "--heapscope", "--hide-heapscope-summary")
    assert hidden.ret == 0 and "heapscope report" not in hidden.stdout.str()


def test_ini_options(pytester):
    pytester.makepyfile(test_report=REPORT_TESTS)
    pytester.makeini("[pytest]\nheapscope = true\nheapscope_most_allocations = 1\n")
    result = run_heapscope(pytester)
    assert result.ret == 0
    report = result.stdout.str().split("heapscope report")[1]
    assert "test_size[4]" in report and "test_size[3]" not in report


def test_bin_path_keeps_each_capture(pytester):
    from heapscope import FileReader

    pytester.makepyfile(test_kept="""
import pytest


@pytest.mark.parametrize("name", ["a/b", "x" * 300])
def test_named(name):
    buffer = bytearray(100000)


def test_plain():
    buffer = bytearray(200000)
""")
    result = run_heapscope(pytester, "--heapscope", "--heapscope-bin-path", "captures")
    assert result.ret == 0, result.stdout.str()
    kept = sorted(os.listdir(pytester.path / "captures"))
    assert len(kept) == 3 and all(name.endswith(".hscap") and len(name.encode()) <= 255 for name in kept)
    assert "test_kept.py-test_plain.hscap" in kept
    result.stdout.fnmatch_lines([f"Kept 3 captures in {pytester.path / 'captures'}*"])
    with FileReader(pytester.path / "captures" / "test_kept.py-test_plain.hscap") as reader:
        assert sum(record.size for record in reader.get_high_watermark_allocation_records()) >= 200001
        assert reader.metadata.sampling == "exact"


def test_sampling_option(pytester):
    from heapscope import FileReader

    pytester.makepyfile(test_sampled="def test_one():\n    buffer = bytearray(1 << 20)\n")
    for option, expected in (("--heapscope-sample=4096", "poisson:4096"), ("--heapscope-sample=8KB", "poisson:8192")):
        result = run_heapscope(pytester, "--heapscope", "--heapscope-bin-path", "captures", option)
        assert result.ret == 0, result.stdout.str() + result.stderr.str()
        with FileReader(pytester.path / "captures" / "test_sampled.py-test_one.hscap") as reader:
            assert reader.metadata.sampling == expected
    bare = run_heapscope(pytester, "--heapscope", "--heapscope-bin-path", "captures", "--heapscope-sample")
    assert bare.ret == 0
    with FileReader(pytester.path / "captures" / "test_sampled.py-test_one.hscap") as reader:
        assert reader.metadata.sampling == "poisson:65536"
    wrong = run_heapscope(pytester, "--heapscope-sample", "test_sampled.py")
    assert wrong.ret == pytest.ExitCode.USAGE_ERROR
    wrong.stderr.fnmatch_lines(["*--heapscope-sample=BYTES*"])


# ---- the baseline gate


GROWTH_TESTS = """
import json
import pathlib

SIZES = json.loads(pathlib.Path(__file__).with_name("sizes.json").read_text())


def test_a():
    buffer = bytearray(SIZES["a"])


def test_b():
    buffer = bytearray(SIZES["b"])


def test_c():
    buffer = bytearray(SIZES["c"])
"""


def test_baseline_gate_fails_exactly_the_test_that_grew(pytester):
    tests = pytester.makepyfile(test_growth=GROWTH_TESTS)
    sizes = pytester.path / "sizes.json"
    sizes.write_text(json.dumps({"a": 1 * MiB, "b": 2 * MiB, "c": 3 * MiB}))
    first = run_heapscope(pytester, "--heapscope-baseline", "base.json")
    assert first.ret == 0, first.stdout.str()
    first.stdout.fnmatch_lines([f"Recorded the peak of 3 tests in the baseline {pytester.path / 'base.json'}"])
    document = json.loads((pytester.path / "base.json").read_text())
    assert document["peaks"] == {"test_growth.py::test_a": MiB + 1, "test_growth.py::test_b": 2 * MiB + 1,
                                 "test_growth.py::test_c": 3 * MiB + 1}

    # b grows by 20%, a by 5% (under the default 10%), and a new test d comes.
    grown_b = int(2 * MiB * 1.2)
    sizes.write_text(json.dumps({"a": int(MiB * 1.05), "b": grown_b, "c": 3 * MiB, "d": 512}))
    tests.write_text(tests.read_text() + '\n\ndef test_d():\n    buffer = bytearray(SIZES["d"])\n')
    second = run_heapscope(pytester, "--heapscope-baseline", "base.json", "--junitxml=out.xml")
    assert outcomes(pytester, "out.xml") == {"test_a": "passed", "test_b": "failed", "test_c": "passed",
                                             "test_d": "passed"}
    second.stdout.fnmatch_lines([
        "*_ test_b _*",
        f"Test's peak grew from 2.0 MiB to 2.4 MiB (+409.6 KiB, +20.0%), more than the 10% allowed: previous "
        f"peak {2 * MiB + 1} B, new peak {grown_b + 1} B (baseline {pytester.path / 'base.json'})",
        "Largest stacks at the peak:",
        "    - 2.4 MiB in 1 block allocated here:",
        f"        test_b at {tests}:*",
        "Flame graph of the peak: *test_growth.py-test_b.peak.html",
    ])
    second.stdout.fnmatch_lines(["Recorded the peak of 1 test in the baseline *"])
    peaks = json.loads((pytester.path / "base.json").read_text())["peaks"]
    # Recorded peaks stay (no creeping by 10% a run); the new test is added.
    assert peaks == {**document["peaks"], "test_growth.py::test_d": 513}

    # A size as the allowed growth.
    assert run_heapscope(pytester, "--heapscope-baseline", "base.json", "--heapscope-max-growth", "1 MB").ret == 0
    over = run_heapscope(pytester, "--heapscope-baseline", "base.json", "--heapscope-max-growth=400KB",
                         "--junitxml=out.xml")
    assert over.ret == 1 and outcomes(pytester, "out.xml")["test_b"] == "failed"
    # --heapscope-update-baseline records every peak again.
    assert run_heapscope(pytester, "--heapscope-baseline", "base.json", "--heapscope-update-baseline").ret == 0
    assert json.loads((pytester.path / "base.json").read_text())["peaks"]["test_growth.py::test_b"] == grown_b + 1
    assert run_heapscope(pytester, "--heapscope-baseline", "base.json").ret == 0


def test_baseline_recorded_with_other_settings_is_refused(pytester):
    pytester.makepyfile(test_one="def test_one():\n    pass\n")
    assert run_heapscope(pytester, "--heapscope-baseline", "base.json").ret == 0
    result = run_heapscope(pytester, "--heapscope-baseline", "base.json", "--heapscope-trace-python-allocators")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*was recorded with sampling=exact, trace_python_allocators=False*"])
    (pytester.path / "bad.json").write_text("[1, 2]")
    result = run_heapscope(pytester, "--heapscope-baseline", "bad.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*is not a heapscope pytest baseline*"])


# ---- pytest-xdist


@pytest.mark.skipif(not HAVE_XDIST, reason="needs pytest-xdist (pip install .[test])")
def test_xdist_workers_results_are_merged(pytester):
    pytester.makepyfile(test_report=REPORT_TESTS, test_margins=MARGINS)
    result = run_heapscope(pytester, "-n", "2", "--heapscope", "--most-allocations", "0", "-v",
                           "--heapscope-baseline", "base.json", "--junitxml=out.xml")
    output = result.stdout.str()
    assert "[gw0]" in output and "[gw1]" in output
    states = outcomes(pytester, "out.xml")
    assert {name: states[name] for name in MARGIN_EXPECTED} == MARGIN_EXPECTED
    report = output.split("= heapscope report =")[1]
    assert f"{6 + len(MARGIN_EXPECTED)} tests profiled." in report
    peaks = report.split("Memory still held")[0]
    sizes = [f"test_report.py::test_size[{mib}]" for mib in (4, 3, 2, 1)]
    positions = [peaks.index(name) for name in sizes]
    assert positions == sorted(positions)  # largest first, from both workers
    assert "test_report.py::test_leaks" in report.split("Memory still held")[1]
    # The baseline, written once by the controller, holds the passing tests of both workers.
    recorded = json.loads((pytester.path / "base.json").read_text())["peaks"]
    passed = [name for name, state in states.items() if state == "passed"]
    assert len(recorded) == len(passed) == 6 + 7
    assert recorded["test_report.py::test_size[4]"] == 4 * MiB + 1
    # Once each: with CI set, pytest repeats whole messages in its short summary.
    pages = list(dict.fromkeys(re.findall(r"Flame graph of [^:]*: (\S+\.html)", output)))
    assert len(pages) == 5 and all(os.path.isfile(page) for page in pages)


# ---- living with pytest-memray


@pytest.mark.skipif(not HAVE_PYTEST_MEMRAY, reason="needs pytest-memray (pip install .[test])")
def test_pytest_memray_and_heapscope_together(pytester):
    pytester.makepyfile(test_margins=MARGINS)
    both = pytester.runpytest_subprocess("-p", "no:cacheprovider", *heapscope_args(), "--heapscope",
                                         timeout=TIMEOUT)
    assert both.ret == pytest.ExitCode.USAGE_ERROR
    both.stderr.fnmatch_lines(["*heapscope and pytest-memray cannot both profile this run*-p no:memray*"])
    # Without --heapscope, the markers are pytest-memray's: heapscope leaves them alone.
    theirs = pytester.runpytest_subprocess("-p", "no:cacheprovider", *heapscope_args(), "--junitxml=out.xml",
                                           timeout=TIMEOUT)
    assert outcomes(pytester, "out.xml") == MARGIN_EXPECTED
    theirs.stdout.fnmatch_lines(["*Test was limited to 8.0MiB but allocated 8.1MiB*"])  # pytest-memray's words
    assert "Flame graph of the peak" not in theirs.stdout.str()


def test_help_lists_the_options(pytester):
    result = run_heapscope(pytester, "--help")
    # 3.13's argparse writes an option's value once, after its last alias:
    # "--heapscope-most-allocations, --most-allocations=N".
    assert re.search(r"--heapscope-most-allocations(=N|, --most-allocations=N)", result.stdout.str())
    for option in ("--heapscope", "--heapscope-bin-path=DIR",
                   "--heapscope-native", "--heapscope-trace-python-allocators", "--heapscope-sample=[BYTES]",
                   "--heapscope-baseline=FILE", "--heapscope-max-growth=GROWTH", "--heapscope-update-baseline",
                   "--hide-heapscope-summary", "--heapscope-stacks=N"):
        assert option in result.stdout.str(), option
    # pytest-memray's --most-allocations too, while pytest-memray (blocked here) does not hold it.
    assert "--most-allocations=N" in result.stdout.str()
    markers = run_heapscope(pytester, "--markers").stdout.str()
    assert "limit_memory(limit, current_thread_only=False)" in markers
    assert "limit_leaks(location_limit, filter_fn=None, current_thread_only=False)" in markers


def test_entry_point_is_declared():
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    if not pyproject.exists():
        pytest.skip("not run from a checkout")
    if sys.version_info >= (3, 11):
        import tomllib

        document = tomllib.loads(pyproject.read_text())
        assert document["project"]["entry-points"]["pytest11"] == {"heapscope": "heapscope.pytest_plugin"}
    else:
        assert 'heapscope = "heapscope.pytest_plugin"' in pyproject.read_text()
