"""heapscope.FileReader: memray's names and shapes, memory over time,
snapshot_at, stats, and the progress bar."""

import copy
import datetime
import io
import pickle
import sys

import pytest

from heapscope import AllocatorType, FileFormat, FileReader, MemorySnapshot
from heapscope.reports import progress as progress_module
from heapscope.reports.progress import ProgressBar
from capture_helpers import run_script, write_script

# memray's AllocatorType (memray/_memray.pyx), names and values.
MEMRAY_ALLOCATORS = ["PYMALLOC_FREE", "PYMALLOC_MALLOC", "PYMALLOC_CALLOC", "PYMALLOC_REALLOC", "FREE", "MALLOC",
                     "REALLOC", "CALLOC", "POSIX_MEMALIGN", "ALIGNED_ALLOC", "MEMALIGN", "VALLOC", "PVALLOC", "MMAP",
                     "MUNMAP"]


def test_allocator_type_has_memrays_names_and_values():
    assert [(member.name, int(member)) for member in AllocatorType][:15] == \
        [(name, value) for value, name in enumerate(MEMRAY_ALLOCATORS, 1)]


def test_allocator_type_equals_memrays_for_every_name_memray_has():
    memray = pytest.importorskip("memray")

    for member in memray.AllocatorType:
        assert AllocatorType[member.name] == member.value, member.name
    assert set(AllocatorType.__members__) - set(memray.AllocatorType.__members__) == {"TRACK", "UNTRACK"}


def test_allocator_type_is_made_from_the_engines_table():
    from heapscope import _heapscope

    table = _heapscope.allocator_table()
    assert [entry.file_value for entry in table] == list(range(1, len(table) + 1))
    assert {entry.name: entry.public_value for entry in table} == \
        {member.name: member.value for member in AllocatorType}
    assert {entry.name for entry in table if entry.is_deallocator} == {"FREE", "MUNMAP", "PYMALLOC_FREE", "UNTRACK"}
    assert AllocatorType.__doc__ == "The allocation function behind a record (memray's names and values)."
    assert pickle.loads(pickle.dumps(AllocatorType.MMAP)) is AllocatorType.MMAP


PHASES = """
import sys, time
from heapscope import Tracker

with Tracker(sys.argv[1], memory_interval_ms=5):
    time.sleep(0.1)
    first = bytearray(8_000_000)      # @first
    time.sleep(0.3)
    second = bytearray(16_000_000)    # @second
    time.sleep(0.3)
    del first
    time.sleep(0.1)
print(time.time())
"""


@pytest.fixture(scope="module")
def phases(tmp_path_factory):
    directory = tmp_path_factory.mktemp("phases")
    script = directory / "phases.py"
    lines = write_script(script, PHASES)
    capture = directory / "phases.hscap"
    run_script(script, capture)
    return FileReader(capture), script, lines


def test_memory_snapshots_follow_the_heap(phases):
    reader, _, _ = phases
    snapshots = reader.get_memory_snapshots()
    assert len(snapshots) >= 20  # every 5 ms over 0.8 s, at least a fair share of them
    # memray's type and unit: an int of milliseconds since the epoch.
    assert all(isinstance(s, MemorySnapshot) and type(s.time) is int for s in snapshots)
    times = [s.time for s in snapshots]
    assert times == sorted(times)
    to_ms = lambda moment: int(moment.timestamp() * 1000)
    assert to_ms(reader.metadata.start_time) <= times[0] and times[-1] <= to_ms(reader.metadata.end_time) + 1
    heaps = [s.heap for s in snapshots]
    assert max(heaps) >= 24_000_000
    assert heaps[0] < 8_000_000 and heaps[-1] < max(heaps)  # before the first block; after the free
    assert all(s.rss > 0 for s in snapshots)


def test_snapshot_at_moments(phases):
    reader, script, lines = phases

    def held(snapshot):
        return {stat.traceback[0].lineno: stat.size for stat in snapshot.statistics("lineno")
                if stat.traceback[0].filename == str(script)}

    early = held(reader.snapshot_at(0.05))
    middle = reader.snapshot_at(0.6)
    late = held(reader.snapshot_at(reader.metadata.end_time))
    assert lines["first"] not in early
    assert held(middle)[lines["first"]] >= 8_000_000 and held(middle)[lines["second"]] >= 16_000_000
    assert lines["first"] not in late and late[lines["second"]] >= 16_000_000
    assert middle.time <= reader.metadata.start_time + datetime.timedelta(seconds=0.6)
    diff = {d.traceback[0].lineno: d.size_diff for d in reader.snapshot_at(reader.metadata.end_time)
            .compare_to(middle, "lineno") if d.traceback[0].filename == str(script)}
    assert diff[lines["first"]] <= -8_000_000
    with pytest.raises(TypeError):
        reader.snapshot_at("soon")


def test_metadata_and_records(phases):
    reader, script, lines = phases
    metadata = reader.metadata
    assert metadata.file_format is FileFormat.ALL_ALLOCATIONS and metadata.complete
    assert metadata.peak_memory >= 24_000_000
    assert metadata.total_allocations == sum(1 for r in reader.get_allocation_records()
                                             if r.allocator.name not in ("FREE", "MUNMAP", "PYMALLOC_FREE"))
    peak = reader.get_high_watermark_allocation_records()
    again = reader.get_high_watermark_allocation_records()
    assert peak == again and len({hash(r) for r in peak}) == len(peak)
    record = max(peak, key=lambda r: r.size)
    assert record.stack_trace()[0] == ("<module>", str(script), lines["second"])
    for bad in (-1, 1.5, "2"):
        with pytest.raises((TypeError, ValueError)):
            record.stack_trace(max_stacks=bad)
    assert "allocator=MALLOC" in repr(record)
    os_tid, name = reader.threads()[reader.metadata.main_thread_id]
    assert os_tid == reader.metadata.pid and isinstance(name, str)  # the main thread's id is the process's


def test_stats_count_every_allocation(phases):
    reader, script, lines = phases
    stats = reader.stats(top=3)
    assert stats.total_allocations == reader.metadata.total_allocations
    assert sum(count for _, _, count in stats.histogram) == stats.total_allocations
    assert sum(stats.allocators.values()) == stats.total_allocations
    assert all(low <= high for low, high, _ in stats.histogram)
    top = stats.top_locations_by_bytes
    # Only two lines of the program allocate (heapscope's own blocks are left out).
    assert [location for location, _ in top] == [("<module>", str(script), lines["second"]),
                                                 ("<module>", str(script), lines["first"])]
    assert top[0][1] == 16_000_001 and top[1][1] == 8_000_001  # bytearray(n) mallocs n + 1
    with pytest.raises(ValueError):
        reader.stats(top=0)


def test_a_closed_reader_refuses_work(phases, tmp_path):
    reader, _, _ = phases
    with FileReader(reader.path) as other:
        assert not other.closed
    assert other.closed
    with pytest.raises(ValueError, match="closed"):
        other.get_leaked_allocation_records()


def test_progress_bar_draws_and_erases(monkeypatch):
    monkeypatch.setattr(progress_module, "_DELAY_S", 0.0)
    monkeypatch.setattr(progress_module, "_REFRESH_S", 0.0)
    out = io.StringIO()
    with ProgressBar("Reading", stream=out) as bar:
        bar(0, 200)
        bar(100, 200)
        bar(200, 200)
    text = out.getvalue()
    assert " 50.0%" in text and "100.0%" in text and text.endswith("\r")
    silent = io.StringIO()
    with ProgressBar("Reading", stream=silent, enabled=False) as bar:
        bar(1, 2)
    assert silent.getvalue() == ""


def test_progress_bar_waits_before_showing(monkeypatch):
    out = io.StringIO()
    bar = ProgressBar("Reading", stream=out)   # a short pass shows nothing
    bar(1, 2)
    bar.close()
    assert out.getvalue() == ""


def test_report_progress_shows_a_bar_on_long_passes(tmp_path, monkeypatch):
    monkeypatch.setattr(progress_module, "_DELAY_S", 0.0)
    script = tmp_path / "many.py"
    write_script(script, """
        import sys
        from heapscope import Tracker
        with Tracker(sys.argv[1], trace_python_allocators=True):
            kept = [bytearray(100 + i % 1000) for i in range(300_000)]
    """)
    capture = tmp_path / "many.hscap"
    run_script(script, capture)
    captured = io.StringIO()
    monkeypatch.setattr(sys, "stderr", captured)
    reader = FileReader(capture, report_progress=True)
    reader.get_high_watermark_allocation_records()
    reader.get_temporary_allocation_records()
    assert "%" in captured.getvalue()
    quiet = io.StringIO()
    monkeypatch.setattr(sys, "stderr", quiet)
    FileReader(capture).get_temporary_allocation_records()
    assert quiet.getvalue() == ""


def test_metadata_needs_no_pass_until_a_total_is_read(tmp_path):
    import dataclasses

    from heapscope import _heapscope
    from heapscope.reader import Metadata

    script = tmp_path / "small.py"
    write_script(script, """
        import sys
        from heapscope import Tracker
        with Tracker(sys.argv[1]):
            kept = [bytearray(1000) for _ in range(100)]
    """)
    capture = tmp_path / "small.hscap"
    run_script(script, capture)

    # The engine's metadata is what the capture wrote at its start: no pass.
    calls = []
    native = _heapscope.CaptureFile(capture, progress=lambda done, total: calls.append(done))
    raw = native.metadata
    assert raw["command_line"].endswith(str(capture)) and raw["file_format"] == "ALL_ALLOCATIONS"
    assert "end_time" not in raw and calls == []
    totals = native.totals()
    assert calls and totals.complete and totals.damage is None and totals.total_allocations >= 100
    assert "end_time" in native.metadata  # written at the end: known after the pass

    # FileReader's: the totals are computed (one pass) when one is first read.
    reader = FileReader(capture)
    assert reader.metadata.pid > 0 and reader.metadata.file_format == FileFormat.ALL_ALLOCATIONS
    assert reader._whole.totals is None
    eager = FileReader(capture)
    eager.get_high_watermark_allocation_records()
    assert eager.metadata.peak_memory == reader.metadata.peak_memory >= 100_000
    assert reader._whole.totals is not None
    assert eager.metadata == reader.metadata
    # Otherwise a Metadata: equal to, shown, pickled and replaced as one.
    closed = FileReader(capture)
    closed.close()  # the totals can still be read
    plain = Metadata(**{f.name: getattr(closed.metadata, f.name) for f in dataclasses.fields(Metadata)})
    assert plain == reader.metadata and reader.metadata == plain
    assert repr(reader.metadata) == repr(plain) and repr(plain).startswith("Metadata(")
    assert pickle.loads(pickle.dumps(reader.metadata)) == plain
    assert dataclasses.replace(reader.metadata, pid=1).pid == 1
    assert dataclasses.asdict(reader.metadata) == dataclasses.asdict(plain)
    assert copy.copy(reader.metadata) == plain and type(copy.deepcopy(reader.metadata)) is Metadata


def test_the_engine_hands_out_named_rows(tmp_path):
    from heapscope import _heapscope

    script = tmp_path / "rows.py"
    write_script(script, """
        import sys
        from heapscope import Tracker
        with Tracker(sys.argv[1], memory_interval_ms=1):
            kept = [bytearray(5000) for _ in range(10)]
    """)
    capture = tmp_path / "rows.hscap"
    run_script(script, capture)
    native = _heapscope.CaptureFile(capture)
    rows = native.high_watermark()
    assert rows and all(isinstance(row, _heapscope.LocationRow) for row in rows)
    row = rows[0]
    assert AllocatorType(row.allocator) in AllocatorType and row.size >= 50_000 and row.count >= 10
    events = list(native.records())
    assert all(isinstance(event, _heapscope.EventRow) for event in events)
    assert {AllocatorType(event.allocator) for event in events} >= {AllocatorType.MALLOC}
    memory = native.memory_snapshots()
    assert memory and isinstance(memory[-1], _heapscope.MemoryRecord) and memory[-1].rss > 0
    threads = native.threads()
    assert all(isinstance(info, _heapscope.ThreadInfo) for info in threads.values())
    frames = native.python_stack(row.python_node)
    assert frames and isinstance(frames[0], _heapscope.StackFrame) and not frames[0].is_native
    assert any(frame.filename == str(script) for frame in frames)
    at = native.blocks_at(memory[-1].time_ms)
    assert isinstance(at, _heapscope.BlocksAt) and all(isinstance(b, _heapscope.LiveBlock) for b in at.blocks)
    stats = native.stats()
    assert all(isinstance(bucket, _heapscope.SizeBucket) for bucket in stats["histogram"])
    assert all(isinstance(stack, _heapscope.StackTotal) for stack in stats["top_by_bytes"])
