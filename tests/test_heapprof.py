"""heapscope.heapprof's profiler API: start(), gatherStats(), stop(),
isProfiling(), with every error heapprof's API page states, and the
implicit stop at exit."""

import collections.abc
import json
import math
import os
import sys
import tempfile

import pytest

import heapscope.heapprof as heapprof
from capture_helpers import build_extension, run_script, write_script


@pytest.fixture
def profiler():
    """heapscope.heapprof, guaranteed stopped after the test."""
    yield heapprof
    heapprof.stop()


@pytest.fixture(scope="module")
def extension_dir(tmp_path_factory):
    return build_extension(str(tmp_path_factory.mktemp("ext")))


class TwiceMapping(collections.abc.Mapping):
    """A mapping that lists one key twice: heapprof's "repeated entries"."""

    def __init__(self, items):
        self._items = items

    def __getitem__(self, key):
        for k, v in self._items:
            if k == key:
                return v
        raise KeyError(key)

    def __iter__(self):
        return iter([k for k, _ in self._items])

    def __len__(self):
        return len(self._items)

    def items(self):
        return list(self._items)


class ByteCount:
    """An integer-like key (operator.index) that hashes apart from the int it stands for."""

    def __init__(self, value):
        self.value = value

    def __index__(self):
        return self.value

    def __repr__(self):
        return f"ByteCount({self.value})"


# -- start(): the errors, raised before anything starts or is written ------------------------------------------

@pytest.mark.parametrize("rates", [
    [(128, 0.1)],                 # not a mapping
    "128:0.1",
    {"128": 0.1},                 # key not a byte count
    {128.5: 0.1},
    {True: 0.1},
    {None: 0.1},
    {128: "0.1"},                 # probability not a number
    {128: None},
    {128: True},
    {128: 1j},
])
def test_start_refuses_a_sampling_rate_of_the_wrong_type(profiler, tmp_path, rates):
    with pytest.raises(TypeError, match="samplingRate"):
        profiler.start(str(tmp_path / "run"), rates)
    assert not profiler.isProfiling()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("rates, message", [
    (TwiceMapping([(128, 0.1), (128, 0.2)]), "128 is given twice"),
    ({128: 0.1, ByteCount(128): 0.2}, "128 is given twice"),
    ({ByteCount(64): 0.1, ByteCount(64): 0.5}, "64 is given twice"),
    ({0: 0.1}, "at least 1 byte"),
    ({-8: 0.1}, "at least 1 byte"),
    ({128: -0.1}, r"in range \[0; 1\]"),
    ({128: 1.5}, r"in range \[0; 1\]"),
    ({128: math.nan}, r"in range \[0; 1\]"),
    ({}, "at least one size range"),
])
def test_start_refuses_repeated_entries_and_values_out_of_range(profiler, tmp_path, rates, message):
    with pytest.raises(ValueError, match=message):
        profiler.start(str(tmp_path / "run"), rates)
    assert not profiler.isProfiling()
    assert os.listdir(tmp_path) == []


def test_start_refuses_a_filebase_that_is_not_a_path(profiler):
    with pytest.raises(TypeError):
        profiler.start(None)
    with pytest.raises(TypeError):
        profiler.start(42)
    assert not profiler.isProfiling()


def test_start_twice_is_a_runtime_error(profiler, tmp_path):
    profiler.start(str(tmp_path / "first"))
    with pytest.raises(RuntimeError, match="already running"):
        profiler.start(str(tmp_path / "second"))
    with pytest.raises(RuntimeError, match="already running"):
        profiler.gatherStats()
    assert not os.path.exists(tmp_path / "second.hpm")
    assert profiler.isProfiling()
    profiler.stop()
    assert not profiler.isProfiling()


def test_start_refuses_while_stats_are_gathered(profiler, tmp_path):
    profiler.gatherStats()
    with pytest.raises(RuntimeError, match="already running"):
        profiler.start(str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run.hpm")


def test_start_refuses_while_a_tracker_runs(profiler, tmp_path):
    import heapscope

    with heapscope.Tracker(str(tmp_path / "other.hscap")):
        with pytest.raises(RuntimeError, match="Tracker is active"):
            profiler.start(str(tmp_path / "run"))
        with pytest.raises(RuntimeError, match="Tracker is active"):
            profiler.gatherStats()
    assert not os.path.exists(tmp_path / "run.hpm")
    assert not profiler.isProfiling()


def test_start_refuses_while_heapscope_tracemalloc_traces(profiler, hs_tracemalloc, tmp_path):
    hs_tracemalloc.start()
    with pytest.raises(RuntimeError, match="cannot start heapprof: heapscope.tracemalloc is active in this process"):
        profiler.start(str(tmp_path / "run"))
    hs_tracemalloc.stop()
    profiler.start(str(tmp_path / "run"))
    assert profiler.isProfiling()


def test_accepted_sampling_rates_are_kept_in_the_metadata(profiler, tmp_path):
    profiler.start(str(tmp_path / "run"), {4096: 0.5, 64: 1, 1 << 20: 0})
    profiler.stop()
    document = json.loads((tmp_path / "run.hpm").read_text())
    assert document["sampling_rate"] == [[64, 1.0], [4096, 0.5], [1 << 20, 0.0]]
    assert document["format"] == "heapscope.heapprof metadata" and document["version"] == 1
    assert document["mode"] == "profile" and document["pid"] == os.getpid()
    assert document["sampling_applied"] == "ranges:64=1.0,4096=0.5,1048576=0.0"
    assert document["stop_time"] >= document["start_time"]
    assert heapprof.read(str(tmp_path / "run")).samplingRate() == {64: 1.0, 4096: 0.5, 1 << 20: 0.0}


def test_default_sampling_rate_is_heapprofs(profiler, tmp_path):
    assert heapprof.DEFAULT_SAMPLING_RATE == {128: 1e-4, 8192: 0.1}
    profiler.start(tmp_path / "run")  # a path-like filebase
    profiler.stop()
    assert heapprof.read(tmp_path / "run").samplingRate() == {128: 1e-4, 8192: 0.1}


# -- isProfiling, stop ---------------------------------------------------------------------------------------------

def test_is_profiling_through_start_and_stop(profiler, tmp_path):
    assert not profiler.isProfiling()
    profiler.stop()  # not running: nothing happens
    profiler.start(str(tmp_path / "run"))
    assert profiler.isProfiling()
    assert os.path.exists(tmp_path / "run.hpm") and os.path.exists(tmp_path / "run.hpd")
    profiler.stop()
    assert not profiler.isProfiling()
    profiler.stop()
    # It can start again, over the same files.
    profiler.start(str(tmp_path / "run"))
    assert profiler.isProfiling()
    profiler.stop()
    assert heapprof.read(str(tmp_path / "run"), timeInterval=0.01).dataComplete


EXIT_WITHOUT_STOP = """
import sys
import tempfile
import time
import hs_alloc
import heapscope.heapprof as heapprof

hs_alloc.malloc(255, 16); hs_alloc.free(255)
heapprof.start(sys.argv[1])
time.sleep(0.05)
hs_alloc.malloc(1, 3_000_017)     # @kept
time.sleep(0.05)
print(heapprof.isProfiling())
# no stop(): the interpreter's exit stops it
"""


def test_exit_stops_the_profiler_and_leaves_readable_files(tmp_path, extension_dir):
    script = tmp_path / "no_stop.py"
    lines = write_script(script, EXIT_WITHOUT_STOP)
    result = run_script(script, tmp_path / "run", extra_paths=[extension_dir])
    assert result.stdout.strip() == "True"
    document = json.loads((tmp_path / "run.hpm").read_text())
    assert document["stop_time"] is not None
    reader = heapprof.read(str(tmp_path / "run"), timeInterval=0.01, precision=0)
    assert reader.dataComplete and reader.dataDamage is None
    last = reader.snapshots()[-1]
    at_line = {tuple((f.filename, f.lineno) for f in reader.trace(i))[-1]: size
               for i, size in last.usage.items() if i != heapprof.OTHER_TRACE and reader.trace(i)}
    assert at_line[(str(script), lines["kept"])] == 3_000_017


# -- gatherStats ---------------------------------------------------------------------------------------------------

STATS = """
import sys
import tempfile
import hs_alloc
import heapscope.heapprof as heapprof

hs_alloc.malloc(255, 16); hs_alloc.free(255)
heapprof.gatherStats()
print("profiling", heapprof.isProfiling())
for slot in range(7):
    hs_alloc.malloc(slot, 40_000_000 + slot)    # 7 blocks between 32 MiB and 64 MiB
    hs_alloc.free(slot)
hs_alloc.malloc(10, 200_000_000)                # 1 block between 128 MiB and 256 MiB
if sys.argv[1] == "stop":
    heapprof.stop()
    print("profiling", heapprof.isProfiling())
"""


@pytest.mark.parametrize("how", ["stop", "exit"])
def test_gather_stats_prints_the_size_distribution_at_stop(tmp_path, extension_dir, how):
    script = tmp_path / "stats.py"
    write_script(script, STATS)
    before = set(os.listdir(tempfile.gettempdir()))
    result = run_script(script, how, extra_paths=[extension_dir])
    assert result.stdout.split("\n")[0] == "profiling True"
    if how == "stop":
        assert result.stdout.split("\n")[1] == "profiling False"
    assert "HEAP USAGE SUMMARY" in result.stderr
    rows = {}
    for line in result.stderr.splitlines():
        parts = line.split()
        if len(parts) == 6 and parts[1] == "-":
            rows[(int(parts[0]), int(parts[2]))] = (int(parts[3]), int(parts[4]))
    # Exactly the blocks made at those sizes: nothing else in the interpreter is that large.
    assert rows[(1 << 25, (1 << 26) - 1)] == (7, sum(40_000_000 + slot for slot in range(7)))
    assert rows[(1 << 27, (1 << 28) - 1)] == (1, 200_000_000)
    # The temporary capture is gone.
    after = set(os.listdir(tempfile.gettempdir()))
    assert not [name for name in after - before if name.startswith("heapprof-stats-")]


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")  # the writer's thread
def test_stop_in_a_forked_child_leaves_the_parents_files_alone(profiler, tmp_path):
    profiler.start(str(tmp_path / "run"))
    pid = os.fork()
    if pid == 0:  # the child: its stop() must neither finish the capture nor rewrite the .hpm
        code = 0 if not heapprof.isProfiling() else 1
        heapprof.stop()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert json.loads((tmp_path / "run.hpm").read_text())["stop_time"] is None
    assert profiler.isProfiling()
    profiler.stop()
    assert json.loads((tmp_path / "run.hpm").read_text())["stop_time"] is not None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))
