"""Runs CPython's own Lib/test/test_tracemalloc.py against heapscope.tracemalloc.

Usage: python cpython_tracemalloc_runner.py SUITE_FILE RESULT_JSON [SKIP_ID=REASON ...]

Installs heapscope's module as ``sys.modules["tracemalloc"]`` before anything
imports the stdlib's (test.support does), loads SUITE_FILE (the running
interpreter's own copy), leaves out TestCommandLine (it tests the
interpreter's ``-X tracemalloc`` switch, not the module) and each SKIP_ID
(``Class.test_name``, skipped with REASON), runs the rest with unittest and
writes ``{test id: [outcome, detail]}`` to RESULT_JSON. Outcomes: passed,
failed, error, skipped, expected failure, unexpected success.
"""

import importlib.util
import json
import sys
import unittest

if __name__ == "__main__" and "--stdlib" in sys.argv:
    # A check of the runner itself: the stdlib's module against its own tests.
    sys.argv.remove("--stdlib")
    import tracemalloc as module_under_test
else:
    import heapscope.tracemalloc as module_under_test

    sys.modules["tracemalloc"] = module_under_test

LEFT_OUT_CLASSES = {"TestCommandLine"}


class RecordingResult(unittest.TextTestResult):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.outcomes = {}

    @staticmethod
    def _name(test):
        return "%s.%s" % (type(test).__name__, test._testMethodName)

    def addSuccess(self, test):
        super().addSuccess(test)
        self.outcomes[self._name(test)] = ["passed", ""]

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self.outcomes[self._name(test)] = ["failed", self.failures[-1][1]]

    def addError(self, test, err):
        super().addError(test, err)
        name = self._name(test) if isinstance(test, unittest.TestCase) else str(test)
        self.outcomes[name] = ["error", self.errors[-1][1]]

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self.outcomes[self._name(test)] = ["skipped", reason]

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self.outcomes[self._name(test)] = ["expected failure", ""]

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self.outcomes[self._name(test)] = ["unexpected success", ""]


def _tests(suite):
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from _tests(item)
        else:
            yield item


# CPython runs the file under regrtest, whose frames sit under every test;
# test_snapshot counts on it ("total_nframe > 10" of an arbitrary trace).
REGRTEST_DEPTH = 20


def _below_frames(depth, function, *args):
    if depth == 0:
        return function(*args)
    return _below_frames(depth - 1, function, *args)


def main():
    suite_file, result_file = sys.argv[1:3]
    skips = dict(arg.split("=", 1) for arg in sys.argv[3:])
    spec = importlib.util.spec_from_file_location("test_tracemalloc", suite_file)
    module = importlib.util.module_from_spec(spec)
    sys.modules["test_tracemalloc"] = module
    spec.loader.exec_module(module)
    assert module.tracemalloc is module_under_test

    selected = unittest.TestSuite()
    for test in _tests(unittest.defaultTestLoader.loadTestsFromModule(module)):
        if type(test).__name__ in LEFT_OUT_CLASSES:
            continue
        name = "%s.%s" % (type(test).__name__, test._testMethodName)
        if name in skips:
            method = getattr(type(test), test._testMethodName)
            setattr(type(test), test._testMethodName, unittest.skip(skips[name])(method))
        selected.addTest(test)

    runner = unittest.TextTestRunner(stream=sys.stderr, verbosity=2, resultclass=RecordingResult)
    result = _below_frames(REGRTEST_DEPTH, runner.run, selected)
    with open(result_file, "w") as out:
        json.dump(result.outcomes, out, indent=1)


if __name__ == "__main__":
    main()
