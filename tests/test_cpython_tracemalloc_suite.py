"""CPython's own Lib/test/test_tracemalloc.py, run against heapscope.tracemalloc.

The running interpreter's copy of the file is used (so each interpreter the
test command covers checks its own version of the suite), with
``sys.modules["tracemalloc"]`` set to heapscope's module, in a subprocess
(cpython_tracemalloc_runner.py). Each of its test cases is one test here and
must pass. Left out: TestCommandLine (it tests the interpreter's
``-X tracemalloc`` switch, which starts the stdlib's module, not this one),
and the exceptions in ``EXCEPTIONS``, each with its reason (docs/tracemalloc.md).
"""

import ast
import json
import os
import subprocess
import sys
import sysconfig

import pytest

SUITE = os.path.join(sysconfig.get_paths()["stdlib"], "test", "test_tracemalloc.py")
RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpython_tracemalloc_runner.py")
LEFT_OUT_CLASSES = {"TestCommandLine"}
SUBPROCESS_TIMEOUT = 240

# CPython's test id -> why heapscope cannot pass it on this interpreter.
EXCEPTIONS = {}
if sys.version_info < (3, 13):
    # An object taken from a free list (list, tuple, float, dict...) never
    # reaches an allocator; _Py_NewReference tells only the stdlib's own
    # tracemalloc (_PyTraceMalloc_NewReference, when its own tracing flag is
    # set). 3.13's PyRefTracer is the first way for another tracer to see it.
    EXCEPTIONS["TestTracemallocEnabled.test_new_reference"] = (
        "CPython %d.%d tells no tracer but its own tracemalloc that an object was reused from a free list "
        "(3.13+: PyRefTracer); docs/tracemalloc.md" % sys.version_info[:2])

# Skips the suite makes by itself that only say what this interpreter lacks.
ENVIRONMENT_SKIPS = ("need _testcapi", "need os.fork()", "requires working os.fork()")


def _suite_cases():
    if not os.path.exists(SUITE):
        return []
    with open(SUITE, encoding="utf-8") as source:
        tree = ast.parse(source.read(), SUITE)
    cases = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name.startswith("Test") and node.name not in LEFT_OUT_CLASSES:
            cases += ["%s.%s" % (node.name, item.name) for item in node.body
                      if isinstance(item, ast.FunctionDef) and item.name.startswith("test_")]
    return cases


CASES = _suite_cases()


@pytest.fixture(scope="module")
def suite_results(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("cpython_tracemalloc")
    result_file = workdir / "results.json"
    skips = ["%s=%s" % item for item in EXCEPTIONS.items()]
    proc = subprocess.run([sys.executable, RUNNER, SUITE, str(result_file), *skips], cwd=str(workdir),
                          capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 0 and result_file.exists(), proc.stdout + proc.stderr
    return json.loads(result_file.read_text())


@pytest.mark.skipif(not CASES, reason="this interpreter has no Lib/test/test_tracemalloc.py")
@pytest.mark.parametrize("case", CASES or ["none"])
def test_cpython_case(case, suite_results):
    assert case in suite_results, "the suite did not run %s (ran: %s)" % (case, sorted(suite_results))
    outcome, detail = suite_results[case]
    if case in EXCEPTIONS:
        assert outcome == "skipped"
        pytest.skip(EXCEPTIONS[case])
    if outcome == "skipped" and detail.startswith(ENVIRONMENT_SKIPS):
        pytest.skip("CPython's suite: " + detail)
    assert outcome == "passed", "%s: %s\n%s" % (case, outcome, detail)


def test_every_case_is_accounted_for(suite_results):
    # The runner ran what the file holds: no class or test was lost on the way.
    if not CASES:
        pytest.skip("this interpreter has no Lib/test/test_tracemalloc.py")
    assert sorted(suite_results) == sorted(CASES)
