"""Every input that once made a reader fail (bench/fuzz/corpus/*/regression-*)
goes through the fuzzing harness's own target again: a reader may refuse
it only with its documented errors."""

import importlib.util
import pathlib

import pytest

FUZZ = pathlib.Path(__file__).resolve().parent.parent / "bench" / "fuzz"
REGRESSIONS = sorted(FUZZ.glob("corpus/*/regression-*"))


def _harness():
    spec = importlib.util.spec_from_file_location("fuzz_readers", FUZZ / "fuzz_readers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_corpus_has_regressions():
    assert {path.parent.name for path in REGRESSIONS} >= {"capture", "live"}


@pytest.mark.parametrize("path", REGRESSIONS, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_regression_input_is_refused_cleanly(path, tmp_path):
    target = getattr(_harness(), f"fuzz_{path.parent.name}")
    target(path.read_bytes(), str(tmp_path))
