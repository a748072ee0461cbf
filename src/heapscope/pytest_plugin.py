"""heapscope's pytest plugin (registered through the ``pytest11`` entry point).

Inactive unless asked for:

* ``pytest --heapscope`` profiles every test (one capture per test body,
  heapscope's own allocations left out) and ends with the tests with the
  largest peaks and those that left memory behind;
* the ``limit_memory`` and ``limit_leaks`` markers (pytest-memray's names and
  semantics, ``heapscope.pytest_limits``) profile and check the tests that
  carry them, with or without ``--heapscope``, as pytest-memray does with
  ``--memray``;
* ``--heapscope-baseline FILE`` records every test's peak and, in a later run,
  fails the tests whose peak grew by more than ``--heapscope-max-growth``.

A failed check says why: the largest stacks with their sizes, and the path of
an HTML flame graph of the test. Under pytest-xdist each worker profiles its
own tests and sends its results to the controller (``workeroutput``), which
prints the report and writes the baseline. docs/pytest.md has the details.
"""

import hashlib
import json
import os
import shutil
import tempfile
import threading
from dataclasses import asdict, dataclass, field
from typing import List, Optional

import pytest

from heapscope.pytest_limits import LIMIT_MARKERS, parse_growth

__all__ = ["pytest_addoption", "pytest_configure"]

DEFAULT_MOST_ALLOCATIONS = 5
DEFAULT_STACKS = 5
DEFAULT_MAX_GROWTH = "10%"
_ROWS_IN_MESSAGE = 10  # stacks listed in a failure message
_UNSUPPORTED_MARKERS = ("limit_leaked_objects",)
# A capture's name and its flame graphs' names share one stem; the longest
# suffix must still fit in one path component (255 bytes on most systems).
_SUFFIXES = (".hscap", ".peak.html", ".leaks.html")
_MAX_STEM_BYTES = 255 - max(len(suffix) for suffix in _SUFFIXES)
_WRAPPER_FILE = os.path.normcase(os.path.abspath(__file__))
_PROBLEM_PROPERTY = "heapscope_problem"
_FLAMEGRAPH_PROPERTY = "heapscope_flamegraph"

_MARKER_LINES = {
    "limit_memory": "limit_memory(limit, current_thread_only=False): fail the test if the memory it holds at its "
                    "peak reaches the limit (heapscope; pytest-memray's marker)",
    "limit_leaks": "limit_leaks(location_limit, filter_fn=None, current_thread_only=False): fail the test if one "
                   "location still holds that much when the test ends (heapscope; pytest-memray's marker)",
    "limit_leaked_objects": "limit_leaked_objects(filter_fn=None): pytest-memray's marker (Python 3.13.3+); "
                            "heapscope cannot check it",
}


def _count(text, name, low):
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise pytest.UsageError(f"{name} must be a whole number, not {text!r}") from None
    if value < low:
        raise pytest.UsageError(f"{name} must be at least {low}, not {value}")
    return value


def _sample_argument(text):
    """``--heapscope-sample=BYTES``: the mean sampling interval, a number of
    bytes or a size such as 64KB."""
    import argparse

    from heapscope._sampling import MAX_SAMPLING_INTERVAL
    from heapscope.pytest_limits import parse_memory_string

    try:
        value = int(text) if str(text).isdigit() else int(parse_memory_string(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a mean sampling interval in bytes (write it as --heapscope-sample=BYTES), got {text!r}"
        ) from None
    if not 1 <= value <= MAX_SAMPLING_INTERVAL:
        raise argparse.ArgumentTypeError(f"the mean sampling interval must be in 1..{MAX_SAMPLING_INTERVAL} bytes, "
                                         f"got {value}")
    return value


def _memray_plugin_expected(pluginmanager):
    """True when pytest-memray is (or is about to be) loaded: it owns
    ``--most-allocations`` then."""
    import importlib.util

    if pluginmanager.has_plugin("memray"):
        return True
    if pluginmanager.is_blocked("memray") or os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        return False
    return importlib.util.find_spec("pytest_memray") is not None


def pytest_addoption(parser, pluginmanager):
    from heapscope._sampling import DEFAULT_SAMPLING_INTERVAL

    group = parser.getgroup("heapscope", "heapscope memory profiling (docs/pytest.md)")
    group.addoption("--heapscope", action="store_true", default=None,
                    help="profile every test with heapscope and report the largest peaks and leaks at the end")
    group.addoption("--heapscope-bin-path", metavar="DIR", default=None,
                    help="keep each test's capture (and the flame graphs of failing tests) in DIR, named after "
                         "the test id (default: a temporary directory, removed at the end)")
    most = ["--heapscope-most-allocations"]
    if not _memray_plugin_expected(pluginmanager):
        most.append("--most-allocations")  # pytest-memray's name, when pytest-memray does not hold it
    group.addoption(*most, dest="heapscope_most_allocations", metavar="N", default=None,
                    help=f"show the N tests with the largest peaks and leaks (0: all; default "
                         f"{DEFAULT_MOST_ALLOCATIONS})")
    group.addoption("--heapscope-stacks", metavar="N", default=None,
                    help=f"frames shown per stack in a failure message (default {DEFAULT_STACKS})")
    group.addoption("--heapscope-native", action="store_true", default=None,
                    help="record native (C/C++) frames too; failure messages and flame graphs show them")
    group.addoption("--heapscope-trace-python-allocators", action="store_true", default=None,
                    help="record every block of Python's own allocator (pymalloc), not only its arenas")
    group.addoption("--heapscope-sample", nargs="?", const=DEFAULT_SAMPLING_INTERVAL, default=None,
                    type=_sample_argument, metavar="BYTES",
                    help=f"record a Poisson sample of the allocations, one per BYTES allocated on average "
                         f"(default {DEFAULT_SAMPLING_INTERVAL}; give a value as --heapscope-sample=BYTES); "
                         f"sizes become unbiased estimates")
    group.addoption("--hide-heapscope-summary", action="store_true", default=None,
                    help="do not print heapscope's report at the end")
    group.addoption("--heapscope-baseline", metavar="FILE", default=None,
                    help="record every test's peak in FILE (JSON); tests already in it fail if their peak grew "
                         "by more than --heapscope-max-growth. Profiles every test, as --heapscope does")
    group.addoption("--heapscope-max-growth", metavar="GROWTH", default=None,
                    help=f"how much a test's peak may grow over the baseline: a percentage (10%%) or a size "
                         f"(1 MB) (default {DEFAULT_MAX_GROWTH.replace('%', '%%')})")
    group.addoption("--heapscope-update-baseline", action="store_true", default=None,
                    help="record every test's peak in the baseline again instead of checking it")

    parser.addini("heapscope", "profile every test with heapscope (as --heapscope)", type="bool")
    parser.addini("hide_heapscope_summary", "do not print heapscope's report at the end", type="bool")
    parser.addini("heapscope_most_allocations", "show the N tests with the largest peaks and leaks (0: all)")
    parser.addini("heapscope_stacks", "frames shown per stack in a failure message")
    parser.addini("heapscope_native", "record native frames too (as --heapscope-native)", type="bool")
    parser.addini("heapscope_trace_python_allocators", "record every block of pymalloc", type="bool")
    parser.addini("heapscope_max_growth", "how much a test's peak may grow over the baseline (10% or 1 MB)")


def _value_or_ini(config, name, ini_name=None):
    value = config.getoption(name, None)
    if value is not None:
        return value
    try:
        value = config.getini(ini_name or name)
    except (KeyError, ValueError):
        return None
    return value if value not in ("", []) else None


def pytest_configure(config):
    for line in _MARKER_LINES.values():
        config.addinivalue_line("markers", line)
    config.pluginmanager.register(Manager(config), "heapscope_manager")


def capture_stem(test_id):
    """A file name stem for a test: the test id with "::" and path
    separators as "-", characters outside [alnum . _ - [ ] = + , @] as "_"
    (then a digest of the id keeps distinct ids apart), at most
    _MAX_STEM_BYTES bytes of UTF-8 (the tail replaced by a digest)."""
    name = test_id.replace("::", "-").replace("/", "-").replace(os.sep, "-")
    safe = "".join(ch if ch.isalnum() or ch in "-_.[]=+,@" else "_" for ch in name)
    if safe.startswith("."):
        safe = "_" + safe[1:]
    digest = hashlib.sha256(test_id.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    if safe != name:
        safe = f"{safe}-{digest}"
    encoded = safe.encode("utf-8", "surrogatepass")
    if len(encoded) > _MAX_STEM_BYTES:
        keep = _MAX_STEM_BYTES - len(digest) - 1
        safe = encoded[:keep].decode("utf-8", "ignore") + "-" + digest
    return safe


@dataclass
class TestResult:
    """What the report says about one test (JSON-able: it crosses from
    xdist workers to the controller)."""

    test: str
    peak: int
    peak_blocks: int
    peak_top: Optional[list]  # [bytes, "function (file:line)"] of the largest location
    leaked: int
    leaked_blocks: int
    leak_top: Optional[list]
    capture: Optional[str] = None
    flamegraphs: List[str] = field(default_factory=list)


@dataclass
class _Run:
    """One test body under a Tracker."""

    path: str
    markers: list
    os_thread: Optional[int] = None
    started: bool = False


_RUN = pytest.StashKey()


class Manager:
    """The plugin's state for one session (one per xdist worker, and one on
    the controller, which runs no test)."""

    def __init__(self, config):
        self.config = config
        self.is_worker = hasattr(config, "workerinput")
        self.memray_loaded = config.pluginmanager.has_plugin("memray")
        baseline_path = config.getoption("heapscope_baseline", None)
        self.active = bool(_value_or_ini(config, "heapscope")) or baseline_path is not None
        if self.active and self.memray_loaded:
            raise pytest.UsageError("heapscope and pytest-memray cannot both profile this run: disable "
                                    "pytest-memray with -p no:memray (heapscope reads its markers)")
        # The markers are pytest-memray's: when it is loaded and heapscope was
        # not asked for, they are its own to check.
        self.handles_markers = self.active or not self.memray_loaded
        self.native = bool(_value_or_ini(config, "heapscope_native"))
        self.trace_python_allocators = bool(_value_or_ini(config, "heapscope_trace_python_allocators"))
        self.sampling = config.getoption("heapscope_sample", None)
        most = _value_or_ini(config, "heapscope_most_allocations")
        self.most = DEFAULT_MOST_ALLOCATIONS if most is None else _count(most, "--most-allocations", 0)
        stacks = _value_or_ini(config, "heapscope_stacks")
        self.stacks = DEFAULT_STACKS if stacks is None else _count(stacks, "--heapscope-stacks", 1)
        self.hide_summary = bool(_value_or_ini(config, "hide_heapscope_summary"))
        growth_text = _value_or_ini(config, "heapscope_max_growth") or DEFAULT_MAX_GROWTH
        try:
            self.growth = parse_growth(growth_text)
        except ValueError as error:
            raise pytest.UsageError(f"--heapscope-max-growth: {error}") from None
        self.baseline = None
        if baseline_path is not None:
            from heapscope.pytest_limits import Baseline, BaselineError

            try:
                self.baseline = Baseline(baseline_path, self._baseline_settings(),
                                         update=bool(config.getoption("heapscope_update_baseline", None)))
            except BaselineError as error:
                raise pytest.UsageError(str(error)) from None
        bin_path = config.getoption("heapscope_bin_path", None)
        self.bin_path = None
        if bin_path is not None:
            self.bin_path = os.path.abspath(bin_path)
            try:
                os.makedirs(self.bin_path, exist_ok=True)
            except OSError as error:
                raise pytest.UsageError(f"--heapscope-bin-path: cannot create {self.bin_path}: "
                                        f"{error.strerror or error}") from None
            if not os.path.isdir(self.bin_path) or not os.access(self.bin_path, os.W_OK):
                raise pytest.UsageError(f"--heapscope-bin-path: {self.bin_path} is not a writable directory")
        self._capture_dir = None  # a temporary directory, when captures are not kept
        self._report_dir = None  # where flame graphs go without a bin path: kept, named in messages
        self.results = {}
        self.report_dirs = set()
        self.baseline_recorded = {}  # from the workers, on the controller
        self.baseline_saved = None

    def _baseline_settings(self):
        # What changes the peaks measured (native frames do not).
        return {"trace_python_allocators": self.trace_python_allocators,
                "sampling": self.sampling if self.sampling else "exact"}

    # -- where files go -------------------------------------------------------------------------------------

    def _directory(self, attribute, prefix):
        """The bin path, or a temporary directory made on first use."""
        if self.bin_path is not None:
            return self.bin_path
        if getattr(self, attribute) is None:
            setattr(self, attribute, tempfile.mkdtemp(prefix=prefix))
        return getattr(self, attribute)

    def _capture_path(self, test_id):
        return os.path.join(self._directory("_capture_dir", "heapscope-pytest-captures-"),
                            capture_stem(test_id) + ".hscap")

    def _report_path(self, capture_path, view):
        stem = os.path.basename(capture_path)[:-len(".hscap")]
        directory = self._directory("_report_dir", "heapscope-pytest-")
        self.report_dirs.add(directory)
        return os.path.join(directory, f"{stem}.{view}.html")

    # -- running a test -------------------------------------------------------------------------------------

    def _limit_markers(self, item):
        if not self.handles_markers:
            return []
        return [marker for marker in item.iter_markers() if marker.name in LIMIT_MARKERS]

    @pytest.hookimpl
    def pytest_collection_modifyitems(self, config, items):
        if not self.handles_markers:
            return
        for item in items:
            if any(marker.name in _UNSUPPORTED_MARKERS for marker in item.iter_markers()):
                raise pytest.UsageError(
                    f"{item.nodeid}: heapscope cannot check the limit_leaked_objects marker (pytest-memray's, "
                    f"which needs memray on Python 3.13.3+): run this test with pytest-memray")

    @pytest.hookimpl(wrapper=True)
    def pytest_pyfunc_call(self, pyfuncitem):
        __tracebackhide__ = True  # a marker's mistake is shown as the test's error, without this frame
        markers = self._limit_markers(pyfuncitem)
        if not markers and not self.active:
            return (yield)
        if len({marker.name for marker in markers}) > 1:
            raise ValueError("Only one heapscope marker (limit_memory or limit_leaks) can be applied to each test")
        for marker in markers:
            _check_marker_arguments(marker)
        from heapscope.tracker import FileDestination, FileFormat, Tracker

        leaks = any(marker.name == "limit_leaks" for marker in markers)
        run = _Run(self._capture_path(pyfuncitem.nodeid), markers)
        # limit_leaks needs every pymalloc block (an arena that outlives the
        # test is no leak) and native frames for filter_fn, as in pytest-memray.
        tracker = Tracker(destination=FileDestination(run.path, overwrite=True),
                          native_traces=self.native or leaks,
                          trace_python_allocators=self.trace_python_allocators or leaks,
                          file_format=FileFormat.AGGREGATED_ALLOCATIONS, sampling=self.sampling)
        function = pyfuncitem.obj
        pyfuncitem.stash[_RUN] = run
        pyfuncitem.obj = _profiled(function, tracker, run)
        try:
            return (yield)
        finally:
            pyfuncitem.obj = function  # as it was, for plugins that call the test again

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item, call):
        report = yield
        if call.when != "call":
            return report
        run = item.stash.get(_RUN, None)
        if run is None:
            return report
        del item.stash[_RUN]
        if not run.started or not os.path.exists(run.path):
            return report
        try:
            self._examine(item, run, report)
        except Exception as error:  # a capture heapscope cannot read: said, never an INTERNALERROR
            message = f"heapscope could not read this test's capture {run.path}: {type(error).__name__}: {error}"
            if report.passed and (run.markers or self.baseline is not None):
                report.outcome = "failed"
                report.longrepr = message
            else:
                item.warn(pytest.PytestWarning(message))
        finally:
            if self.bin_path is None:
                from heapscope.tracker import _remove_quietly

                _remove_quietly(run.path)
        return report

    def _examine(self, item, run, report):
        from heapscope.pytest_limits import CaptureFacts, growth_problem, marker_call

        facts = CaptureFacts(run.path, run.os_thread, _WRAPPER_FILE, show_native=self.native)
        try:
            result = TestResult(
                test=item.nodeid, peak=facts.total("peak"), peak_blocks=facts.blocks("peak"),
                peak_top=self._top(facts, "peak"), leaked=facts.total("leaks"), leaked_blocks=facts.blocks("leaks"),
                leak_top=self._top(facts, "leaks"), capture=run.path if self.bin_path is not None else None)
            problems = []
            if report.passed:
                for marker in run.markers:
                    try:
                        problem = marker_call(marker, facts, self.stacks, _ROWS_IN_MESSAGE)
                    except Exception as error:  # a filter_fn that raised, most likely
                        from heapscope.pytest_limits import Problem

                        problem = Problem(f"heapscope could not check {marker.name}: "
                                          f"{type(error).__name__}: {error}", [], "peak")
                    if problem is not None:
                        problems.append(problem)
                if self.baseline is not None:
                    problem = growth_problem(item.nodeid, self.baseline.previous(item.nodeid), result.peak,
                                             self.growth, self.baseline.path)
                    if problem is not None:
                        problems.append(problem)
                    elif not problems:
                        self.baseline.record(item.nodeid, result.peak)
            if problems:
                self._fail(item, report, facts, problems, result)
            self.results[item.nodeid] = result
        finally:
            facts.close()

    def _top(self, facts, which):
        top = facts.top_location(which)
        if top is None:
            return None
        size, frame = top
        return [size, _describe(frame, self.config.rootpath)]

    def _fail(self, item, report, facts, problems, result):
        from heapscope.pytest_limits import stacks_text

        lines = []
        pages = {}
        properties = []
        for problem in problems:
            if problem.view not in pages:
                pages[problem.view] = self._flamegraph(facts, problem, result.test)
            lines.append(problem.headline)
            details = problem.details or (["Largest stacks at the peak:"]
                                          + stacks_text(facts, facts.records("peak"), self.stacks,
                                                        _ROWS_IN_MESSAGE))
            lines += details
        for view, page in pages.items():
            what = "the peak" if view == "peak" else "the memory still held at the end"
            lines.append(f"Flame graph of {what}: {page}")
            result.flamegraphs.append(page)
            properties.append((_FLAMEGRAPH_PROPERTY, page))
        report.outcome = "failed"
        report.longrepr = "\n".join(lines)
        properties.append((_PROBLEM_PROPERTY, problems[0].headline))
        # The call report's status letter reads them; junit XML, the item's (its teardown report's).
        report.user_properties.extend(properties)
        item.user_properties.extend(properties)

    def _flamegraph(self, facts, problem, test_id):
        from heapscope.reports import adapters, presenters

        reader = facts.reader
        split = problem.current_thread_only
        profile = adapters.profile_from_capture(reader, problem.view, native=facts.show_native,
                                                merge_threads=not split)
        if split:
            thread = facts.test_thread()
            profile.samples = [sample for sample in profile.samples if sample.thread == thread]
        for sample in profile.samples:
            sample.stack = _test_stack(sample.stack)
        path = self._report_path(facts.path, problem.view)
        title = f"{test_id}: {adapters.CAPTURE_VIEWS[problem.view].lower()}"
        presenters.write(profile, "html", path, kind="flamegraph", title=title)
        return path

    @pytest.hookimpl(tryfirst=True)
    def pytest_report_teststatus(self, report, config):
        if report.when == "call" and report.failed and any(
                prop[0] == _PROBLEM_PROPERTY for prop in getattr(report, "user_properties", ())):
            return "failed", "M", "MEMORY PROBLEMS"
        return None

    # -- the end ----------------------------------------------------------------------------------------------

    @pytest.hookimpl
    def pytest_sessionfinish(self, session, exitstatus):
        if self.is_worker:
            self.config.workeroutput["heapscope"] = json.dumps({
                "results": [asdict(result) for result in self.results.values()],
                "baseline": self.baseline.recorded if self.baseline is not None else {},
                "report_dirs": sorted(self.report_dirs)})
            return
        if self.baseline is not None:
            self.baseline.recorded.update(self.baseline_recorded)
            try:
                self.baseline_saved = self.baseline.save()
            except OSError as error:
                self.baseline_saved = error

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error):
        """xdist: a worker is done; its results join the controller's."""
        output = getattr(node, "workeroutput", None) or {}
        if "heapscope" not in output:
            return
        data = json.loads(output["heapscope"])
        for entry in data["results"]:
            self.results[entry["test"]] = TestResult(**entry)
        self.baseline_recorded.update(data["baseline"])
        self.report_dirs.update(data["report_dirs"])

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter, exitstatus, config):
        if not self.active or self.hide_summary or self.is_worker:
            return
        write = terminalreporter.write_line
        terminalreporter.write_sep("=", "heapscope report")
        for line in summary_lines(list(self.results.values()), self.most):
            write(line)
        if self.bin_path is not None:
            kept = sum(1 for result in self.results.values() if result.capture)
            write(f"Kept {kept} capture{'' if kept == 1 else 's'} in {self.bin_path} "
                  f"(heapscope flamegraph FILE, heapscope summary FILE)")
        for directory in sorted(self.report_dirs):
            if directory != self.bin_path:
                write(f"Flame graphs of the tests that failed a memory check: {directory}")
        if self.baseline is not None:
            if isinstance(self.baseline_saved, OSError):
                write(f"heapscope: could not write the baseline {self.baseline.path}: {self.baseline_saved}")
            elif self.baseline_saved:
                write(f"Recorded the peak of {self.baseline_saved} test{'' if self.baseline_saved == 1 else 's'} "
                      f"in the baseline {self.baseline.path}")

    @pytest.hookimpl
    def pytest_unconfigure(self, config):
        if self._capture_dir is not None:
            shutil.rmtree(self._capture_dir, ignore_errors=True)
            self._capture_dir = None


def _check_marker_arguments(marker):
    """The marker's arguments as its function takes them, and its size
    readable: a mistake fails the test before it runs, naming the marker."""
    import inspect

    from heapscope.pytest_limits import parse_memory_string

    __tracebackhide__ = True
    function = LIMIT_MARKERS[marker.name]
    try:
        bound = inspect.signature(function).bind(*marker.args, **marker.kwargs, _facts=None, _frames=0, _rows=0)
    except TypeError as error:
        raise TypeError(f"@pytest.mark.{marker.name}: {error}") from None
    parse_memory_string(next(iter(bound.arguments.values())))


def _profiled(function, tracker, run):
    """*function* run under *tracker*: a coroutine function stays one."""
    import functools
    import inspect

    def enter():
        run.os_thread = threading.get_native_id()
        tracker.__enter__()
        run.started = True

    if inspect.iscoroutinefunction(function):
        @functools.wraps(function)
        async def profiled_coroutine(*args, **kwargs):
            enter()
            try:
                return await function(*args, **kwargs)
            finally:
                tracker.__exit__(None, None, None)

        return profiled_coroutine

    @functools.wraps(function)
    def profiled(*args, **kwargs):
        enter()
        try:
            return function(*args, **kwargs)
        finally:
            tracker.__exit__(None, None, None)

    return profiled


def _test_stack(stack):
    """A model stack (outermost first) cut to the frames inside heapscope's
    wrapper of the test: pytest's frames and the wrapper's go."""
    for index in range(len(stack) - 1, -1, -1):
        frame = stack[index]
        if not frame.native and os.path.normcase(os.path.abspath(frame.filename)) == _WRAPPER_FILE:
            return stack[index + 1:] or stack
    return stack


def _describe(frame, rootpath):
    from heapscope.pytest_limits import describe_frame

    function, filename, lineno = frame
    try:
        relative = os.path.relpath(filename, rootpath)
        if not relative.startswith(".."):
            filename = relative
    except ValueError:
        pass
    return describe_frame((function, filename, lineno))


def summary_lines(results, most):
    """The end report: the tests with the largest peaks, then those that
    still held memory when they ended, *most* of each (0: all)."""
    from heapscope.reports.text import format_bytes, safe_text, table

    if not results:
        return ["No test was profiled."]
    count = most or len(results)
    lines = [f"{len(results)} test{'' if len(results) == 1 else 's'} profiled.", "",
             "Largest peaks (memory held at the high-water mark of the test):"]
    by_peak = sorted(results, key=lambda result: (-result.peak, result.test))[:count]
    cells = [[format_bytes(result.peak), result.peak_blocks, safe_text(result.test), _top_text(result.peak_top)]
             for result in by_peak]
    lines += table(["peak", "blocks", "test", "largest location"], cells, [">", ">", "<", "<"]).split("\n")
    leaking = [result for result in results if result.leaked > 0]
    lines.append("")
    if not leaking:
        lines.append("No test left memory allocated when it ended.")
        return lines
    by_leak = sorted(leaking, key=lambda result: (-result.leaked, result.test))[:count]
    lines.append(f"Memory still held when the test ended ({len(leaking)} of {len(results)} tests):")
    cells = [[format_bytes(result.leaked), result.leaked_blocks, safe_text(result.test), _top_text(result.leak_top)]
             for result in by_leak]
    lines += table(["leaked", "blocks", "test", "largest location"], cells, [">", ">", "<", "<"]).split("\n")
    return lines


def _top_text(top):
    if not top:
        return ""
    from heapscope.reports.text import format_bytes

    return f"{format_bytes(top[0])} in {top[1]}"
