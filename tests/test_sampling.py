"""Sampling on every door: estimates against ground truth, with tolerances
taken from the variance the sampler states (native/src/sample/sampler.h).

A program allocates bytearrays of known sizes at known lines and keeps them.
Each bytearray is two blocks (its object and its buffer), so the truth per
line is known exactly, block by block, and so is the standard deviation of
each estimate:  Var(bytes) = sum s^2 (1-p)/p,  Var(count) = sum (1-p)/p,
plus at most 1/4 per record for the randomised rounding. Every comparison
allows 4 standard deviations; the seeds are fixed, so a run is repeatable.
"""
import json
import math
import os
import subprocess
import sys

import pytest

import heapscope
import heapscope.tracemalloc as htm
from capture_helpers import python_env, write_script

DEFAULT = heapscope._sampling.DEFAULT_SAMPLING_INTERVAL

# Lines of the ground-truth program: (marker, smallest, largest size, MiB held).
# Sizes are log-uniform in [smallest, largest), from a seeded generator.
LINES = [("tiny", 16, 512, 24), ("small", 512, 8192, 40), ("medium", 8192, 262144, 64),
         ("large", 262144, 8 << 20, 128)]

PROGRAM = """
    import json, math, os, random, sys, time
    import heapscope, heapscope.tracemalloc as tm
    door, sampling, scale, out = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    if isinstance(sampling, dict):
        sampling = {int(k): v for k, v in sampling.items()}
    plan = json.loads(sys.argv[5])
    rng = random.Random(2026)
    sizes = {name: [] for name, *_ in plan}
    for name, low, high, mib in plan:
        total = 0
        while total < mib * scale * 2**20:
            n = int(math.exp(rng.uniform(math.log(low), math.log(high))))
            sizes[name].append(n)
            total += n
    keep = {name: [None] * len(s) for name, s in sizes.items()}
    object_size = sys.getsizeof(bytearray())

    def allocate():
        for i, n in enumerate(sizes["tiny"]): keep["tiny"][i] = bytearray(n)  # @tiny
        for i, n in enumerate(sizes["small"]): keep["small"][i] = bytearray(n)  # @small
        for i, n in enumerate(sizes["medium"]): keep["medium"][i] = bytearray(n)  # @medium
        for i, n in enumerate(sizes["large"]): keep["large"][i] = bytearray(n)  # @large

    result = {"object_size": object_size, "sizes": sizes}
    if door == "tracemalloc":
        tm.start(1, sampling=sampling)
        allocate()
        snapshot = tm.take_snapshot()
        result["sampling"] = tm.get_sampling()
        result["traced"] = tm.get_traced_memory()[0]
        tm.stop()
        result["lines"] = {s.traceback[0].lineno: [s.size, s.count] for s in snapshot.statistics("lineno")
                           if s.traceback[0].filename == __file__}
    else:
        aggregated = door.startswith("aggregated:")
        file_format = heapscope.FileFormat.AGGREGATED_ALLOCATIONS if aggregated else heapscope.FileFormat.ALL_ALLOCATIONS
        with heapscope.Tracker(door.partition("aggregated:")[2] if aggregated else door, trace_python_allocators=True,
                               sampling=sampling, file_format=file_format):
            allocate()
            time.sleep(0.05)  # a memory record after the last block: snapshot_at(end) sees them all
    json.dump(result, open(out, "w"))
"""


def run_program(tmp_path, door, sampling, scale=1.0, seed=1, plan=LINES, env=None):
    script = tmp_path / "truth.py"
    marks = write_script(script, PROGRAM)
    out = tmp_path / "result.json"
    env = dict(python_env(), HEAPSCOPE_SAMPLING_SEED=str(seed), **(env or {}))
    proc = subprocess.run([sys.executable, str(script), door, json.dumps(sampling), str(scale), str(out),
                           json.dumps(plan)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return script, marks, json.load(open(out))


def probability(sampling, size):
    if sampling is None:
        return 1.0
    if isinstance(sampling, dict):
        for bound, p in sorted((int(k), v) for k, v in sampling.items()):
            if size < bound:
                return p
        return 1.0
    interval = DEFAULT if sampling is True else sampling
    return -math.expm1(-(size + 1) / interval)


def truth(result, sampling):
    """{marker: (bytes, blocks, sd_bytes, sd_blocks)} from the block sizes."""
    out = {}
    for name, sizes in result["sizes"].items():
        blocks = [result["object_size"]] * len(sizes) + [n + 1 for n in sizes]
        var_b = var_c = 0.0
        for s in blocks:
            p = probability(sampling, s)
            var_b += s * s * (1 - p) / p + 0.25 * p
            var_c += (1 - p) / p + 0.25 * p
        out[name] = (sum(blocks), len(blocks), math.sqrt(var_b), math.sqrt(var_c))
    return out


def check_lines(estimates, marks, result, sampling, sigmas=4.0):
    expected = truth(result, sampling)
    total_true = sum(v[0] for v in expected.values())
    total_est = 0
    for name, (true_bytes, true_count, sd_bytes, sd_count) in expected.items():
        est_bytes, est_count = estimates.get(marks[name], (0, 0))
        total_est += est_bytes
        assert abs(est_bytes - true_bytes) <= sigmas * sd_bytes + 1, (name, est_bytes, true_bytes, sd_bytes)
        assert abs(est_count - true_count) <= sigmas * sd_count + 1, (name, est_count, true_count, sd_count)
    return total_est, total_true, expected


# --- arguments ------------------------------------------------------------------------------------------


class DuplicatingMapping(dict):
    """A mapping whose items repeat a bound, as a custom Mapping may."""
    def items(self):
        return [(128, 0.5), (128, 0.25)]


@pytest.mark.parametrize("value, error, words", [
    ("sometimes", TypeError, "sampling must be None, a bool, an int"),
    (1.5, TypeError, "sampling must be None"),
    ([128], TypeError, "sampling must be None"),
    (0, ValueError, "mean sampling interval must be in range"),
    (-4096, ValueError, "mean sampling interval must be in range"),
    (2**40, ValueError, "mean sampling interval must be in range"),
    ({128: 1.5}, ValueError, "must be in range [0; 1]"),
    ({128: -0.1}, ValueError, "must be in range [0; 1]"),
    ({0: 0.5}, ValueError, "at least 1 byte"),
    ({128: "often"}, TypeError, "must be a real number"),
    ({128.5: 0.1}, TypeError, "upper bound must be an int"),
    ({}, ValueError, "at least one size range"),
    ({128: 1e-12}, ValueError, "0 or in range [1e-09; 1]"),
    (DuplicatingMapping({128: 0.5}), ValueError, "given twice"),
])
def test_bad_sampling_arguments_are_refused_before_anything_starts(tmp_path, value, error, words):
    with pytest.raises(error) as info:
        htm.start(1, sampling=value)
    assert words in str(info.value)
    assert not htm.is_tracing()
    path = tmp_path / "never.hscap"
    with pytest.raises(error) as info:
        with heapscope.Tracker(path, sampling=value):
            pass
    assert words in str(info.value)
    assert not path.exists()


def test_the_default_interval_is_the_engines():
    from heapscope import _heapscope

    assert heapscope._sampling.DEFAULT_SAMPLING_INTERVAL == _heapscope.DEFAULT_SAMPLING_INTERVAL == 65536


def test_the_door_stays_exact_unless_asked():
    htm.start(1)
    try:
        assert htm.get_sampling() is None
        data = [bytearray(100) for _ in range(1000)]  # noqa: F841
        snapshot = htm.take_snapshot()
    finally:
        htm.stop()
    assert all(len(trace._trace) == 4 for trace in snapshot.traces)  # raw traces, no weights
    htm.start(1, sampling=65536)
    try:
        assert htm.get_sampling() == 65536
    finally:
        htm.stop()
    htm.start(1, sampling={128: 1e-4, 8192: 0.1})
    try:
        assert htm.get_sampling() == {128: 1e-4, 8192: 0.1}
    finally:
        htm.stop()


# --- estimates against the truth ------------------------------------------------------------------------


@pytest.mark.parametrize("sampling, seed", [(65536, 1), (65536, 2), (True, 3), ({128: 1e-4, 8192: 0.1}, 4),
                                            ({100: 0.3, 5000: 0.77}, 5)])
def test_tracemalloc_door_estimates_converge(tmp_path, sampling, seed):
    script, marks, result = run_program(tmp_path, "tracemalloc", sampling, scale=0.25, seed=seed)
    estimates = {int(line): tuple(v) for line, v in result["lines"].items()}
    total_est, total_true, expected = check_lines(estimates, marks, result, sampling)
    # get_traced_memory() is the same estimate, with everything else the
    # program holds (a few hundred KiB of lists and module state).
    assert abs(result["traced"] - total_est) <= 4 * math.sqrt(sum(v[2] ** 2 for v in expected.values())) + 2**20


def test_exact_mode_is_exact(tmp_path):
    script, marks, result = run_program(tmp_path, "tracemalloc", None, scale=0.05)
    estimates = {int(line): tuple(v) for line, v in result["lines"].items()}
    for name, (true_bytes, true_count, _, _) in truth(result, None).items():
        assert estimates[marks[name]] == (true_bytes, true_count)


def capture_by_line(path, script, marks):
    reader = heapscope.FileReader(path)
    lines = {}
    for record in reader.get_leaked_allocation_records(merge_threads=True):
        frame = next((f for f in record.stack_trace() if f[1] == str(script)), None)
        if frame is None:
            continue
        size, count = lines.get(frame[2], (0, 0))
        lines[frame[2]] = (size + record.size, count + record.n_allocations)
    return reader, lines


@pytest.mark.parametrize("sampling, seed", [(65536, 7), ({128: 1e-4, 8192: 0.1}, 8)])
def test_aggregated_capture_estimates_converge(tmp_path, sampling, seed):
    path = tmp_path / "sampled.hscap"
    script, marks, result = run_program(tmp_path, "aggregated:" + str(path), sampling, scale=0.25, seed=seed)
    reader, lines = capture_by_line(path, script, marks)
    assert reader.is_aggregated and reader.metadata.sampled
    check_lines(lines, marks, result, sampling)


@pytest.mark.parametrize("sampling, seed", [(65536, 7), ({128: 1e-4, 8192: 0.1}, 8)])
def test_sampled_capture_estimates_converge(tmp_path, sampling, seed):
    path = tmp_path / "sampled.hscap"
    script, marks, result = run_program(tmp_path, str(path), sampling, scale=0.25, seed=seed)
    reader, lines = capture_by_line(path, script, marks)
    kind = "poisson:%d" % sampling if isinstance(sampling, int) else "ranges:128=0.0001,8192=0.10000000000000001"
    assert reader.metadata.sampling == kind
    check_lines(lines, marks, result, sampling)
    # The heap at the end, as a tracemalloc snapshot, gives the same estimates.
    snapshot = reader.snapshot_at(reader.metadata.end_time)
    at_end = {s.traceback[0].lineno: (s.size, s.count) for s in snapshot.statistics("lineno")
              if s.traceback[0].filename == str(script)}
    check_lines(at_end, marks, result, sampling)
    # Far fewer events than blocks: that is the point.
    blocks = sum(2 * len(s) for s in result["sizes"].values())
    assert reader.metadata.total_allocations >= blocks * 0.5  # estimated count, not events
    events = sum(1 for _ in reader.get_allocation_records())
    assert events < blocks / 4


def test_sampled_capture_estimates_converge_when_python_allocates_with_malloc(tmp_path):
    """With PYTHONMALLOC=malloc the object domain calls malloc, whose hook
    samples too: the object hook must not count the same bytes first (its
    unguarded path is only for pymalloc), or every small block would be
    picked twice as often."""
    path = tmp_path / "sampled.hscap"
    script, marks, result = run_program(tmp_path, str(path), 65536, scale=0.25, seed=9, env={"PYTHONMALLOC": "malloc"})
    reader, lines = capture_by_line(path, script, marks)
    check_lines(lines, marks, result, 65536)


def test_sampled_capture_leaves_pymallocs_arenas_out(tmp_path):
    """A sampled capture of Python's allocators traces pymalloc's blocks, not
    the arenas it maps for them, though the sampled hooks pass most blocks
    over without their guard: the arena allocator is guarded instead."""
    path = tmp_path / "sampled.hscap"
    script = tmp_path / "arenas.py"
    lines = write_script(script, f"""
        import heapscope
        keep = []
        with heapscope.Tracker({str(path)!r}, trace_python_allocators=True, sampling=True):
            for i in range(400_000):
                keep.append((i, str(i)))  # @tuples
    """)
    proc = subprocess.run([sys.executable, str(script)], env=python_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    reader, by_line = capture_by_line(path, script, lines)
    # ~46 MiB of tuples, strs and the list, estimated (sd ~2.5 MiB); the ~46
    # arenas that hold them would add as much again, as exact records.
    assert 30 << 20 < by_line[lines["tuples"]][0] < 80 << 20
    mapped = [(record.size, record.stack_trace()[:1]) for record in reader.get_allocation_records()
              if record.allocator.name == "MMAP"]
    assert mapped == []


# 512 MiB: four lines of 128 MiB, sizes log-uniform over ranges that start
# small and reach into blocks larger than the interval, as a real heap's do.
BIG_PLAN = [("tiny", 256, 8 << 20, 128), ("small", 512, 4 << 20, 128), ("medium", 1024, 16 << 20, 128),
            ("large", 64, 8 << 20, 128)]


def test_the_512_mib_program_at_the_default_interval(tmp_path):
    """The issue's accuracy test: 512 MiB in blocks of mixed sizes at four
    lines. At the default interval the total is within 1% and each line
    within 5% -- and each within 4 of its standard deviations, which are
    far smaller (about 0.1% to 0.25% a line here: docs/sampling.md)."""
    path = tmp_path / "big.hscap"
    script, marks, result = run_program(tmp_path, str(path), True, seed=11, plan=BIG_PLAN)
    reader, lines = capture_by_line(path, script, marks)
    total_est, total_true, expected = check_lines(lines, marks, result, True)
    assert total_true >= 512 * 2**20
    assert abs(total_est - total_true) <= 0.01 * total_true, (total_est, total_true)
    for name, (true_bytes, *_rest) in expected.items():
        est = lines[marks[name]][0]
        assert abs(est - true_bytes) <= 0.05 * true_bytes, (name, est, true_bytes)


# --- the command line ------------------------------------------------------------------------------------


def test_run_sample_flag_and_summary(tmp_path):
    script = tmp_path / "prog.py"
    write_script(script, """
        data = [bytearray(4000) for _ in range(20000)]  # @line
        print("done")
    """)
    out = tmp_path / "prog.hscap"
    env = python_env()
    proc = subprocess.run([sys.executable, "-m", "heapscope", "run", "-q", "-o", str(out), "--sample", str(script)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "done\n"
    assert heapscope.FileReader(out).metadata.sampling == "poisson:%d" % DEFAULT
    summary = subprocess.run([sys.executable, "-m", "heapscope", "summary", str(out)], env=env,
                             capture_output=True, text=True, timeout=120)
    assert summary.returncode == 0, summary.stderr
    assert "sampled" in summary.stdout and "estimates" in summary.stdout
    out2 = tmp_path / "prog2.hscap"
    proc = subprocess.run([sys.executable, "-m", "heapscope", "run", "--sample", "8192", "-q", "-o", str(out2),
                           str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert heapscope.FileReader(out2).metadata.sampling == "poisson:8192"
    bad = subprocess.run([sys.executable, "-m", "heapscope", "run", "--sample", "0", str(script)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "mean sampling interval" in bad.stderr
    # The program's own --sample is the program's.
    (tmp_path / "echo.py").write_text("import sys; print(sys.argv[1:])\n")
    own = subprocess.run([sys.executable, "-m", "heapscope", "run", "-q", "-f", "-o", str(tmp_path / "e.hscap"),
                          str(tmp_path / "echo.py"), "--sample", "x"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert own.returncode == 0 and own.stdout == "['--sample', 'x']\n", own.stderr


def test_bare_sample_flag_never_eats_the_program():
    from heapscope.cli import build_parser
    from heapscope.cli._program import bare_sample_flags

    run = next(a for a in build_parser()._actions if hasattr(a, "choices") and a.choices and "run" in a.choices)
    parser = run.choices["run"]
    default = "--sample=%d" % DEFAULT
    assert bare_sample_flags(["--sample", "prog.py"], parser) == [default, "prog.py"]
    assert bare_sample_flags(["--sample", "4096", "prog.py"], parser) == ["--sample", "4096", "prog.py"]
    assert bare_sample_flags(["-o", "out", "--sample", "-m", "mod"], parser) == ["-o", "out", default, "-m", "mod"]
    assert bare_sample_flags(["--sample"], parser) == [default]
    assert bare_sample_flags(["prog.py", "--sample", "x"], parser) == ["prog.py", "--sample", "x"]
    assert bare_sample_flags(["-o", "--sample", "prog.py"], parser) == ["-o", "--sample", "prog.py"]


def test_sampled_snapshot_dump_keeps_the_weights(tmp_path):
    htm.start(1, sampling={4096: 0.25})
    try:
        data = [bytearray(100) for _ in range(4000)]  # noqa: F841
        snapshot = htm.take_snapshot()
    finally:
        htm.stop()
    path = tmp_path / "sampled.hsnap"
    snapshot.dump(str(path))
    loaded = htm.Snapshot.load(str(path))
    assert loaded.traces._traces == snapshot.traces._traces
    assert [(s.size, s.count) for s in loaded.statistics("lineno")] == \
        [(s.size, s.count) for s in snapshot.statistics("lineno")]
    assert any(len(t) == 5 and t[4] >= 4 for t in loaded.traces._traces)


def test_top_sample_flag(tmp_path):
    script = tmp_path / "prog.py"
    marks = write_script(script, """
        data = [bytearray(40000) for _ in range(2000)]  # @line
    """)
    proc = subprocess.run([sys.executable, "-m", "heapscope", "top", "--limit", "3", "--sample", str(script)],
                          env=python_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "unbiased estimates" in proc.stdout
    # About 80 MB at the line: far more than the interval, so the estimate is close.
    line = next(text for text in proc.stdout.splitlines() if f"prog.py:{marks['line']}" in text)
    assert "MiB" in line


# --- regressions from review ------------------------------------------------------------------------------


def test_a_new_session_does_not_inherit_the_last_sessions_counter():
    """A thread's mark distance drawn for a 2 GiB interval must not carry
    into a 4 KiB session: it would record nothing for 2 GiB."""
    htm.start(1, sampling=1 << 31)
    htm.stop()
    htm.start(1, sampling=4096)
    try:
        data = [bytes(100) for _ in range(200000)]  # noqa: F841  about 26.6 MB
        current, _ = htm.get_traced_memory()
    finally:
        htm.stop()
    truth = 200000 * sys.getsizeof(bytes(100))
    assert abs(current - truth) < 0.1 * truth, (current, truth)


def test_taking_a_snapshot_does_not_count_heapscopes_probe():
    htm.start(1, sampling=1 << 31)
    try:
        htm.take_snapshot()
        current, peak = htm.get_traced_memory()
    finally:
        htm.stop()
    assert peak < 1 << 20, peak  # the 8-byte probe once weighed 2 GiB * 8/9


def test_filter_subclasses_work_on_sampled_snapshots():
    class Everything(htm.Filter):
        pass

    htm.start(1, sampling=4096)
    try:
        data = [bytearray(100) for _ in range(20000)]  # noqa: F841
        snapshot = htm.take_snapshot()
    finally:
        htm.stop()
    assert len(snapshot.filter_traces([Everything(True, "*")]).traces) == len(snapshot.traces)
    assert len(snapshot.filter_traces([htm.DomainFilter(True, 0)]).traces) > 0


def test_fork_child_capture_says_it_is_sampled_and_totals_are_estimates(tmp_path):
    script = tmp_path / "fork.py"
    out = tmp_path / "fk.hscap"
    write_script(script, f"""
        import os, heapscope
        tracker = heapscope.Tracker({str(out)!r}, trace_python_allocators=True, sampling=4096, follow_fork=True)
        with tracker:
            data = [bytes(100) for _ in range(50000)]
            pid = os.fork()
            if pid == 0:
                more = [bytes(200) for _ in range(50000)]
                os._exit(0)
            os.waitpid(pid, 0)
        print(tracker.totals["allocations"])
    """)
    proc = subprocess.run([sys.executable, str(script)], env=python_env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    # Blocks, not records: about 50,000 made in the parent (and a few thousand more).
    assert 30000 < int(proc.stdout) < 200000, proc.stdout
    children = [p for p in tmp_path.iterdir() if p.name.startswith("fk.hscap.")]
    assert len(children) == 1
    child = heapscope.FileReader(children[0])
    assert child.metadata.sampling == "poisson:4096"
