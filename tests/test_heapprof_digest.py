"""heapscope.heapprof's reader against ground truth: a program that grows by
1 MiB every 100 ms at one line and frees the blocks at another, run under
heapprof in a subprocess. The digest's bytes per trace at every snapshot
must be exactly what the capture held at that moment (replayed the slow way
by heapscope.FileReader.snapshot_at) and what the program's own log of its
allocations says; plus the "other" bucket, traces, collapsed stacks, the
PNG plot, damaged and foreign files, a SIGKILLed run, and the command line."""

import importlib.util
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import warnings
import zlib

import pytest

import heapscope
import heapscope.heapprof as heapprof
from heapscope._sampling import parse_sampling
from capture_helpers import build_extension, python_env, run_script, write_script

MIB = 1 << 20
BLOCKS = 8

GROWTH = """
import json
import sys
import time
import hs_alloc
import heapscope.heapprof as heapprof

hs_alloc.malloc(255, 16); hs_alloc.free(255)   # warm-up: the first calls resolve their symbols
log = []


def grow(slot):
    hs_alloc.malloc(slot, 1 << 20)    # @alloc


def shrink(slot):
    hs_alloc.free(slot)               # @free


heapprof.start(sys.argv[1])
time.sleep(0.15)
for slot in range(8):
    before = time.time()
    grow(slot)                        # @call
    log.append((1, before, time.time()))
    time.sleep(0.1)
for slot in range(8):
    before = time.time()
    shrink(slot)
    log.append((-1, before, time.time()))
    time.sleep(0.1)
time.sleep(0.15)
heapprof.stop()
with open(sys.argv[2], "w") as out:
    json.dump(log, out)
"""


@pytest.fixture(scope="module")
def extension_dir(tmp_path_factory):
    return build_extension(str(tmp_path_factory.mktemp("ext")))


@pytest.fixture(scope="module")
def growth(extension_dir, tmp_path_factory):
    directory = tmp_path_factory.mktemp("growth")
    script = directory / "growth.py"
    lines = write_script(script, GROWTH)
    base = str(directory / "run")
    run_script(script, base, directory / "log.json", extra_paths=[extension_dir])
    with open(directory / "log.json") as source:
        log = json.load(source)
    heapprof.read(base, timeInterval=0.1, precision=0)  # the digest every test reuses
    return base, script, lines, log


def _alloc_trace(reader, script, lines):
    """The trace index of the growing line; None if no snapshot has it."""
    for snapshot in reader.snapshots():
        for index in snapshot.usage:
            trace = reader.trace(index)
            if trace and (trace[-1].filename, trace[-1].lineno) == (str(script), lines["alloc"]):
                return index
    return None


def test_every_snapshot_holds_exactly_what_the_capture_held(growth):
    base, script, lines, _log = growth
    reader = heapprof.read(base, timeInterval=0.1, precision=0)
    index = _alloc_trace(reader, script, lines)
    assert index is not None
    capture = heapscope.FileReader(base + ".hpd")
    start = capture.metadata.start_time.timestamp()
    last_record = max(record.time_ms for record in capture._file.memory_snapshots())
    snapshots = reader.snapshots()
    assert len(snapshots) >= 19  # 1.9 s of sleeps at 0.1 s
    assert [s.relativeTime for s in snapshots] == [round(0.1 * k, 10) for k in range(len(snapshots))]
    checked = 0
    for snapshot in snapshots:
        taken = reader.snapshotTakenAt(snapshot.relativeTime)
        assert snapshot.relativeTime <= taken <= snapshot.relativeTime + 0.1
        if round(taken * 1000) >= last_record:
            continue  # the stop writes a record that may share its millisecond with the last periodic one
        # The slow way: the whole heap replayed to that memory record (0.5 ms into it).
        slow = capture.snapshot_at(reader.initialTime() + taken + 0.0005 - start)
        held = sum(stat.size for stat in slow.statistics("lineno")
                   if stat.traceback[0].filename == str(script) and stat.traceback[0].lineno == lines["alloc"])
        assert snapshot.usage.get(index, 0) == held, snapshot.relativeTime
        assert held % MIB == 0
        checked += 1
    assert checked >= 15
    # Every block was live at some snapshot: the growth reaches 8 MiB and falls back to 0.
    assert max(s.usage.get(index, 0) for s in snapshots) == BLOCKS * MIB
    assert snapshots[-1].usage.get(index, 0) == 0
    assert heapprof.OTHER_TRACE not in snapshots[3].usage  # precision 0 merges nothing


def test_snapshots_follow_the_programs_own_log(growth):
    """Each snapshot against the program's log of when each block was made
    and freed: where no event is within 30 ms of the snapshot's moment (so
    the order is certain), the bytes at the line are exactly the blocks live."""
    base, script, lines, log = growth
    reader = heapprof.read(base)  # the digest made by the test above is reused, whatever the arguments
    assert reader.snapshotInterval() == 0.1
    index = _alloc_trace(reader, script, lines)
    margin = 0.03
    checked = 0
    for snapshot in reader.snapshots():
        moment = reader.initialTime() + reader.snapshotTakenAt(snapshot.relativeTime)
        if any(before - margin < moment < after + margin for _, before, after in log):
            continue
        live = sum(change for change, _before, after in log if after < moment)
        assert snapshot.usage.get(index, 0) == live * MIB, snapshot.relativeTime
        checked += 1
    if checked < 3:
        pytest.skip("the machine was too busy: fewer than 3 snapshots far enough from every event")


def test_traces_name_the_frames_outermost_first(growth):
    base, script, lines, _log = growth
    reader = heapprof.read(base)
    index = _alloc_trace(reader, script, lines)
    trace = reader.trace(index)
    assert [(line.filename, line.lineno) for line in trace] == [(str(script), lines["call"]),
                                                                (str(script), lines["alloc"])]
    assert trace[-1].fileline == "hs_alloc.malloc(slot, 1 << 20)    # @alloc"
    assert reader.rawTrace(index) == [heapprof.RawTraceLine(line.filename, line.lineno) for line in trace]
    assert [function for function, _, _ in reader._frames(index)] == ["<module>", "grow"]  # the reports' names
    assert reader.trace(heapprof.OTHER_TRACE) is None
    assert reader.trace(10 ** 6) is None
    with pytest.raises(TypeError):
        reader.trace("1")


def test_times_and_the_total_usage_curve(growth):
    base, _script, _lines, _log = growth
    reader = heapprof.read(base)
    snapshots = reader.snapshots()
    metadata = json.loads(open(base + ".hpm").read())
    assert abs(reader.initialTime() - metadata["start_time"]) < 5  # the engine starts just after the .hpm is written
    assert reader.elapsedTime() == snapshots[-1].relativeTime
    assert reader.finalTime() == reader.initialTime() + reader.elapsedTime()
    plot = reader.timePlot()
    assert plot.times == [s.relativeTime for s in snapshots]
    assert plot.totalUsage == [s.totalUsage() for s in snapshots]
    assert reader.snapshotAt(0.3) is not None and reader.snapshotAt(0.3).relativeTime == 0.3
    assert reader.snapshotAt(0.349).relativeTime == 0.3
    assert reader.snapshotAt(-5).relativeTime == 0.0
    assert reader.snapshotAt(1e9).relativeTime == snapshots[-1].relativeTime
    with pytest.raises(ValueError):
        reader.snapshotAt(float("nan"))


def test_collapsed_stacks(growth, tmp_path):
    base, script, lines, _log = growth
    reader = heapprof.read(base)
    index = _alloc_trace(reader, script, lines)
    peak = max(reader.snapshots(), key=lambda s: s.usage.get(index, 0))
    out = io.StringIO()
    reader.flameGraph(peak, out)
    text = out.getvalue()
    assert f"{script}:{lines['call']};{script}:{lines['alloc']} {BLOCKS * MIB}\n" in text
    total = 0
    for line in text.splitlines():
        frames, size = line.rsplit(" ", 1)
        assert frames
        total += int(size)
    assert total == peak.totalUsage()
    path = tmp_path / "collapsed.txt"
    reader.writeFlameGraph(str(path), peak.relativeTime)
    assert path.read_text() == text


def test_precision_keeps_traces_whole(growth, tmp_path):
    base, script, lines, _log = growth
    # A second digest of the same run, with a coarse precision, beside the first.
    for suffix in (".hpm", ".hpd"):
        os.link(base + suffix, str(tmp_path / "copy") + suffix)
    exact = heapprof.read(base)
    merged = heapprof.read(str(tmp_path / "copy"), timeInterval=0.1, precision=0.5)
    assert exact.snapshotInterval() == merged.snapshotInterval() == 0.1
    index = _alloc_trace(exact, script, lines)
    merged_index = _alloc_trace(merged, script, lines)
    for e, m in zip(exact.snapshots(), merged.snapshots()):
        assert m.totalUsage() == e.totalUsage()
        assert m.usage.get(heapprof.OTHER_TRACE, 0) <= 0.5 * m.totalUsage()
        # The growing line dominates once it holds a block: it is never merged.
        if e.usage.get(index, 0) > m.totalUsage() / 2:
            assert m.usage[merged_index] == e.usage[index]
        # Kept traces keep their exact bytes.
        for i, size in m.usage.items():
            if i != heapprof.OTHER_TRACE:
                frames = merged.trace(i)
                twin = [j for j in e.usage if exact.trace(j) == frames]
                assert twin and e.usage[twin[0]] == size


PRECISION = """
import sys
import time
import hs_alloc
import heapscope.heapprof as heapprof

hs_alloc.malloc(255, 16); hs_alloc.free(255)
heapprof.start(sys.argv[1], {1: 1.0})   # every allocation recorded: exact bytes
time.sleep(0.05)
hs_alloc.malloc(1, 4 << 20)             # @large
hs_alloc.malloc(2, 30_011)              # @medium
hs_alloc.malloc(3, 20_011)              # @small
time.sleep(0.1)
heapprof.stop()
"""


def test_precision_merges_small_stacks_into_other(tmp_path, extension_dir):
    script = tmp_path / "precision.py"
    lines = write_script(script, PRECISION)
    base = str(tmp_path / "run")
    run_script(script, base, extra_paths=[extension_dir])
    for suffix in (".hpm", ".hpd"):
        os.link(base + suffix, base + "_merged" + suffix)

    def by_line(reader, snapshot):
        return {reader.trace(i)[-1].lineno: size for i, size in snapshot.usage.items()
                if i != heapprof.OTHER_TRACE and reader.trace(i) and reader.trace(i)[-1].filename == str(script)}

    exact = heapprof.read(base, timeInterval=0.05, precision=0)
    last = exact.snapshots()[-1]
    assert heapprof.OTHER_TRACE not in last.usage
    assert by_line(exact, last) == {lines["large"]: 4 << 20, lines["medium"]: 30_011, lines["small"]: 20_011}

    merged = heapprof.read(base + "_merged", timeInterval=0.05, precision=0.02)
    last = merged.snapshots()[-1]
    assert last.totalUsage() == exact.snapshots()[-1].totalUsage()
    # 2% of a bit over 4 MiB is over 83,000 bytes: the two small lines (50,022 bytes) go, the large one stays.
    assert by_line(merged, last) == {lines["large"]: 4 << 20}
    other = last.usage[heapprof.OTHER_TRACE]
    assert 50_022 <= other <= 0.02 * last.totalUsage()
    out = io.StringIO()
    merged.flameGraph(last, out)
    assert out.getvalue().endswith(f"OTHER {other}\n")


def test_time_plot_is_a_png(growth, tmp_path):
    pytest.importorskip("matplotlib")
    base, _script, _lines, _log = growth
    reader = heapprof.read(base)
    path = tmp_path / "plot.png"
    reader.writeTimePlot(str(path), top=3)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1000, 800)
    assert data[-8:-4] == b"IEND"
    for bad in ({"top": -1}, {"scale": 0}):
        with pytest.raises(ValueError):
            reader.writeTimePlot(str(path), **bad)


# -- read(): arguments ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, error", [
    ({"timeInterval": 0}, ValueError), ({"timeInterval": -1}, ValueError),
    ({"timeInterval": float("nan")}, ValueError), ({"timeInterval": float("inf")}, ValueError),
    ({"timeInterval": 0.0001}, ValueError), ({"timeInterval": "1"}, TypeError), ({"timeInterval": True}, TypeError),
    ({"precision": 1}, ValueError), ({"precision": -0.01}, ValueError), ({"precision": float("nan")}, ValueError),
    ({"precision": "0"}, TypeError),
])
def test_read_checks_its_arguments(growth, kwargs, error):
    with pytest.raises(error, match="timeInterval|precision"):
        heapprof.read(growth[0], **kwargs)


# -- damaged, truncated and foreign files --------------------------------------------------------------------------

def _copy_run(growth, directory, digest=False):
    base = str(directory / "run")
    for suffix in (".hpm", ".hpd") + ((".hpc",) if digest else ()):
        with open(growth[0] + suffix, "rb") as source, open(base + suffix, "wb") as out:
            out.write(source.read())
    return base


def test_missing_files(growth, tmp_path):
    with pytest.raises(FileNotFoundError):
        heapprof.read(str(tmp_path / "nothing"))
    base = _copy_run(growth, tmp_path)
    os.unlink(base + ".hpd")
    with pytest.raises(FileNotFoundError):
        heapprof.read(base)


@pytest.mark.parametrize("content, message", [
    (b"", "not a heapprof metadata file"),
    (b"hello world\n", "not a heapprof metadata file"),
    (b'{"format": "something else", "version": 1}', "not a heapprof metadata file"),
    (b'{"format": "heapscope.heapprof metadata", "version": 1, "start_t', "damaged"),
    (b'{"format": "heapscope.heapprof metadata", "version": 1}', "damaged"),
    (b'{"format": "heapscope.heapprof metadata", "version": 7, "start_time": 1, "sampling_rate": []}',
     "version 7 is newer"),
])
def test_bad_metadata_files(growth, tmp_path, content, message):
    base = _copy_run(growth, tmp_path)
    with open(base + ".hpm", "wb") as out:
        out.write(content)
    with pytest.raises(heapprof.HeapprofFileError, match=message):
        heapprof.read(base)


def test_a_foreign_data_file(growth, tmp_path):
    base = _copy_run(growth, tmp_path)
    with open(base + ".hpd", "wb") as out:
        out.write(b"PK\x03\x04 not a capture at all" * 10)
    with pytest.raises(heapprof.HeapprofFileError, match="not a heapscope capture"):
        heapprof.read(base)
    assert isinstance(heapprof.HeapprofFileError("x"), ValueError)


def test_a_truncated_data_file_is_read_up_to_the_cut(growth, tmp_path):
    base = _copy_run(growth, tmp_path)
    whole = heapprof.read(growth[0])
    size = os.path.getsize(base + ".hpd")
    with open(base + ".hpd", "r+b") as out:
        out.truncate(size * 2 // 3)
    with pytest.warns(heapprof.DigestWarning, match="is damaged"):
        cut = heapprof.read(base, timeInterval=0.1, precision=0)
    assert cut.dataDamage is not None and not cut.dataComplete
    assert 0 < len(cut.snapshots()) <= len(whole.snapshots())
    for a, b in zip(cut.snapshots()[:-1], whole.snapshots()):
        assert a.totalUsage() == b.totalUsage()


def test_a_foreign_digest_is_refused_and_left_alone(growth, tmp_path):
    base = _copy_run(growth, tmp_path)
    with open(base + ".hpc", "wb") as out:
        out.write(b"my own notes, not a digest")
    with pytest.raises(heapprof.HeapprofFileError, match="not a heapscope digest"):
        heapprof.read(base)
    assert open(base + ".hpc", "rb").read() == b"my own notes, not a digest"


def test_a_newer_digest_is_refused(growth, tmp_path):
    base = _copy_run(growth, tmp_path, digest=True)
    data = bytearray(open(base + ".hpc", "rb").read())
    data[16:20] = struct.pack("<I", 99)
    open(base + ".hpc", "wb").write(bytes(data))
    with pytest.raises(heapprof.HeapprofFileError, match="version 99 is newer"):
        heapprof.read(base)


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "header"])
def test_a_damaged_digest_is_built_again(growth, tmp_path, damage):
    base = _copy_run(growth, tmp_path, digest=True)
    data = bytearray(open(base + ".hpc", "rb").read())
    if damage == "flip":
        data[len(data) // 2] ^= 0x40
    elif damage == "truncate":
        del data[len(data) - 10:]
    elif damage == "empty":
        data = bytearray()
    else:
        del data[20:]
    open(base + ".hpc", "wb").write(bytes(data))
    with pytest.warns(heapprof.DigestWarning, match="damaged digest"):
        reader = heapprof.read(base, timeInterval=0.2, precision=0)
    assert reader.snapshotInterval() == 0.2  # built again, with the arguments given
    original = heapprof.read(growth[0])
    assert reader.snapshotAt(0.4).totalUsage() == original.snapshotAt(0.4).totalUsage()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert heapprof.read(base).snapshotInterval() == 0.2  # and saved whole


def test_a_stale_digest_is_built_again_and_a_fresh_one_reused(growth, tmp_path):
    base = _copy_run(growth, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = heapprof.read(base, timeInterval=0.5)
        stamp = os.stat(base + ".hpc").st_mtime_ns
        again = heapprof.read(base, timeInterval=0.1, precision=0.3)  # fresh: the arguments do not apply
    assert first.snapshotInterval() == again.snapshotInterval() == 0.5
    assert os.stat(base + ".hpc").st_mtime_ns == stamp
    info = os.stat(base + ".hpd")
    os.utime(base + ".hpd", ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000_000))
    with pytest.warns(heapprof.DigestWarning, match="stale"):
        rebuilt = heapprof.read(base, timeInterval=0.1)
    assert rebuilt.snapshotInterval() == 0.1


def test_a_digest_without_its_capture_still_reads(growth, tmp_path):
    base = _copy_run(growth, tmp_path, digest=True)
    os.unlink(base + ".hpd")
    reader = heapprof.read(base)
    assert len(reader.snapshots()) == len(heapprof.read(growth[0]).snapshots())


# -- a killed run --------------------------------------------------------------------------------------------------

KILLED = """
import sys
import time
import hs_alloc
import heapscope.heapprof as heapprof

hs_alloc.malloc(255, 16); hs_alloc.free(255)
heapprof.start(sys.argv[1])
for slot in range(5):
    hs_alloc.malloc(slot, 2_000_003)    # @alloc
print("ready", flush=True)
time.sleep(60)
"""


def test_read_a_run_killed_by_sigkill(tmp_path, extension_dir):
    script = tmp_path / "killed.py"
    lines = write_script(script, KILLED)
    base = str(tmp_path / "run")
    process = subprocess.Popen([sys.executable, str(script), base], stdout=subprocess.PIPE, text=True,
                               env=python_env(extension_dir))
    try:
        assert process.stdout.readline().strip() == "ready"
        # Wait until the writer (it flushes every 250 ms) has put the blocks and a memory record after them on disk.
        deadline = time.monotonic() + 30
        while True:
            try:
                capture = heapscope.FileReader(base + ".hpd")
                held = sum(r.size for r in capture.get_leaked_allocation_records()
                           if r.stack_trace() and r.stack_trace()[0][2] == lines["alloc"])
                memory = capture.get_memory_snapshots()
                # The blocks, and a memory record written after them (its heap counts them), are on disk.
                if held == 5 * 2_000_003 and memory and memory[-1].heap >= held:
                    break
            except ValueError:
                pass
            assert time.monotonic() < deadline, "the capture never showed the blocks"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert json.loads(open(base + ".hpm").read())["stop_time"] is None
    reader = heapprof.read(base, timeInterval=0.01, precision=0)
    assert not reader.dataComplete
    index = _alloc_trace(reader, script, lines)
    assert reader.snapshots()[-1].usage[index] == 5 * 2_000_003


# -- the command line ----------------------------------------------------------------------------------------------

CLI_PROGRAM = """
import sys, time
import hs_alloc
hs_alloc.malloc(255, 16); hs_alloc.free(255)
hs_alloc.malloc(1, 90_000_001)       # @big
time.sleep(0.05)  # a memory record (every 10 ms) after the block: snapshots land on them
print("args", sys.argv[1:])
sys.exit(3)
"""


def _cli(*args, cwd=None, extra_paths=()):
    return subprocess.run([sys.executable, "-m", "heapscope.heapprof", *map(str, args)], capture_output=True,
                          text=True, env=python_env(*extra_paths), cwd=cwd, timeout=120)


def test_command_line_profile_and_stats(tmp_path, extension_dir):
    script = tmp_path / "prog $^$ with space;semi.py"  # unescaped, `$^$` is bad mathematics to matplotlib
    lines = write_script(script, CLI_PROGRAM)
    base = tmp_path / "cli"
    result = _cli("-o", base, script, "--flag", "x", extra_paths=[extension_dir])
    assert result.returncode == 3, result.stderr
    assert result.stdout == "args ['--flag', 'x']\n"
    reader = heapprof.read(str(base), timeInterval=0.01, precision=0)
    index = _alloc_trace(reader, script, {"alloc": lines["big"]})
    trace = reader.trace(index)
    assert [(t.filename, t.lineno) for t in trace] == [(str(script), lines["big"])]  # launch frames cut off
    out = io.StringIO()
    reader.flameGraph(reader.snapshots()[-1], out)
    escaped = str(script).replace(";", "%3B")
    assert f"{escaped}:{lines['big']} 90000001\n" in out.getvalue()
    if importlib.util.find_spec("matplotlib"):
        reader.writeTimePlot(str(tmp_path / "cli.png"), top=2)  # the label names the script: drawn as text
        assert (tmp_path / "cli.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    stats = _cli("-m", "stats", script, extra_paths=[extension_dir])
    assert stats.returncode == 3
    assert "HEAP USAGE SUMMARY" in stats.stderr
    assert any(line.split()[:5] == ["67108864", "-", "134217727", "1", "90000001"] for line in stats.stderr.splitlines())

    bad = _cli("--sample", "[1, 2]", script)
    assert bad.returncode == 2 and "expected a dict" in bad.stderr
    bad = _cli("--sample", "{128: 2.0}", "-o", tmp_path / "bad", script)
    assert bad.returncode == 2 and "in range [0; 1]" in bad.stderr
    assert not os.path.exists(tmp_path / "bad.hpm")
    missing = _cli(tmp_path / "nope.py")
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_a_digest_is_small_and_versioned(growth):
    data = open(growth[0] + ".hpc", "rb").read()
    magic, version, crc, length = struct.unpack("<16sIIQ", data[:32])
    assert magic == b"HEAPSCOPE-DIGEST" and version == 1
    assert length == len(data) - 32 and crc == zlib.crc32(data[32:])
    digest = json.loads(zlib.decompress(data[32:]))
    assert digest["interval_ms"] == 100 and digest["precision"] == 0


# -- heapprof's default size ranges: estimates ---------------------------------------------------------------------

SAMPLED = """
import sys
import time
import heapscope.heapprof as heapprof

HEADER = sys.getsizeof(b"")               # a bytes object of n bytes is one block of n + HEADER bytes
heapprof.start(sys.argv[1])               # heapprof's default rates: {128: 1e-4, 8192: 0.1}
medium = [None] * 20000
large = [None] * 50
for i in range(20000):
    medium[i] = bytes(1000 - HEADER)      # @medium: 1000-byte blocks, each recorded with p = 0.1
for i in range(50):
    large[i] = bytes(100_000 - HEADER)    # @large: 100,000-byte blocks, always recorded
time.sleep(0.12)
heapprof.stop()
"""


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_default_rates_give_unbiased_estimates_within_their_stated_error(tmp_path, seed):
    """Each recorded 1000-byte block stands for 1/p = 10 blocks (Horvitz-Thompson,
    sample/sampler.h), so the line's estimate B^ of B = 20,000 x 1000 bytes has
    Var(B^) = n s^2 (1 - p) / p = 20,000 x 1000^2 x 9 = 1.8e11, a standard error
    of 424,264 bytes (2.1%); about 2,000 blocks are recorded, so B^ is close to
    normal. The test allows 4 standard errors (a false alarm about once in
    16,000 runs; the seed is fixed, so a run is reproducible). Blocks of 8192
    bytes or more are always recorded: exact."""
    script = tmp_path / "sampled.py"
    lines = write_script(script, SAMPLED)
    base = str(tmp_path / "run")
    result = subprocess.run([sys.executable, str(script), base], capture_output=True, text=True, timeout=120,
                            env={**python_env(), "HEAPSCOPE_SAMPLING_SEED": str(seed)})
    assert result.returncode == 0, result.stderr
    reader = heapprof.read(base, timeInterval=0.05, precision=0)
    assert parse_sampling(reader.samplingApplied()) == {128: 1e-4, 8192: 0.1}
    last = reader.snapshots()[-1]
    by_line = {}
    for index, size in last.usage.items():
        trace = reader.trace(index)
        if index != heapprof.OTHER_TRACE and trace and trace[-1].filename == str(script):
            by_line[trace[-1].lineno] = by_line.get(trace[-1].lineno, 0) + size
    assert by_line[lines["large"]] == 50 * 100_000
    standard_error = (20_000 * 1000 ** 2 * (1 - 0.1) / 0.1) ** 0.5
    assert abs(by_line[lines["medium"]] - 20_000 * 1000) <= 4 * standard_error, by_line[lines["medium"]]
    # The digest holds the capture's own estimates: the same as heapscope.FileReader finds for that line.
    capture = heapscope.FileReader(base + ".hpd")
    leaked = sum(r.size for r in capture.get_leaked_allocation_records()
                 if r.stack_trace() and r.stack_trace()[0][1:] == (str(script), lines["medium"]))
    assert leaked == by_line[lines["medium"]]


# -- the pass itself -----------------------------------------------------------------------------------------------

def test_the_digest_pass_reports_progress_and_stops_on_an_exception(growth, tmp_path):
    from heapscope import _heapscope

    calls = []
    raw = _heapscope.capture_timeline(growth[0] + ".hpd", 100, 0.0, lambda done, total: calls.append((done, total)))
    assert calls and calls[-1][0] == calls[-1][1] == os.path.getsize(growth[0] + ".hpd")
    assert len(raw["snapshots"]) == len(heapprof.read(growth[0]).snapshots())

    def stop(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _heapscope.capture_timeline(growth[0] + ".hpd", 100, 0.0, stop)
    with pytest.raises(ValueError, match="interval_ms"):
        _heapscope.capture_timeline(growth[0] + ".hpd", 0, 0.0)
    with pytest.raises(ValueError, match="precision"):
        _heapscope.capture_timeline(growth[0] + ".hpd", 10, 1.0)


def test_an_aggregated_capture_cannot_be_digested(tmp_path):
    base = str(tmp_path / "run")
    with heapscope.Tracker(base + ".hpd", file_format=heapscope.FileFormat.AGGREGATED_ALLOCATIONS):
        pass
    with open(base + ".hpm", "w") as out:
        json.dump({"format": "heapscope.heapprof metadata", "version": 1, "start_time": 0, "sampling_rate": []}, out)
    with pytest.raises(heapprof.HeapprofFileError, match="aggregated"):
        heapprof.read(base)
