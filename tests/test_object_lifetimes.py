"""Tracker(track_object_lifetimes=True), get_surviving_objects() and
FileReader.get_object_lifetime_events(), memray's object tracking, against
ground truth: objects of known types made at known lines, some destroyed,
some alive at the end, and side by side with memray where memray tracks
objects (3.13.3+).

Each capture runs in a subprocess (the reference tracer is process-wide) and
prints what it found as JSON.
"""

import importlib.util
import json
import sys

import pytest

from capture_helpers import run_script, write_script

HAS_REF_TRACER = sys.version_info >= (3, 13)
needs_ref_tracer = pytest.mark.skipif(not HAS_REF_TRACER,
                                      reason="object lifetimes need PyRefTracer_SetTracer (Python 3.13+)")

# The traced script: argv: tool (heapscope or memray), capture path, Tracker
# options as JSON. Prints {"surviving": ..., "events": ...} as JSON.
SCRIPT = """
import gc, json, sys, threading
tool, out = sys.argv[1], sys.argv[2]
options = json.loads(sys.argv[3])
if tool == "memray":
    import memray as _tool
else:
    import heapscope as _tool
if "file_format" in options:
    options["file_format"] = _tool.FileFormat[options["file_format"]]


class Probe:
    def __init__(self, name):
        self.name = name


def make_probe(name):
    return Probe(name)  # @make


def in_thread(kept):
    kept.append(Probe("thread-0"))  # @thread


before = Probe("before")
doomed_before = Probe("doomed-before")
doomed_before_id = id(doomed_before)
kept = []
named = {}
freed_ids = {}
with _tool.Tracker(out, **options) as tracker:
    kept.append(Probe("kept-0"))  # @kept0
    temporary = Probe("freed-0")  # @freed0
    freed_ids["freed-0"] = id(temporary)
    del temporary
    kept.append(make_probe("kept-1"))  # @kept1
    named["list"] = [len(kept), 2, 3]  # @list
    named["dict"] = {"key": len(kept)}  # @dict
    named["str"] = "probe-" * len(kept)  # @str
    named["float"] = len(kept) + 0.25  # @float
    named["tuple"] = tuple(kept)  # @tuple
    worker = threading.Thread(target=in_thread, args=(kept,), name="probe-maker")
    worker.start()
    worker.join()
    del doomed_before
    gc.collect()

surviving = tracker.get_surviving_objects()
reader = _tool.FileReader(out)
events = []
for event in reader.get_object_lifetime_events():
    entry = {"address": event.address, "created": bool(event.is_created), "tid": event.tid}
    if event.is_created:
        entry["stack"] = [list(frame) for frame in event.stack_trace()]
        entry["thread_name"] = event.thread_name
        if options.get("native_traces"):
            entry["native"] = len(event.native_stack_trace())
            entry["hybrid"] = [list(frame) for frame in event.hybrid_stack_trace()]
    events.append(entry)
filtered = [event.address for event in reader.get_object_lifetime_events(included_objects=kept)]
print(json.dumps({
    "type": type(surviving).__name__,
    "probes": sorted(o.name for o in surviving if type(o) is Probe),
    "probe_ids": {o.name: id(o) for o in surviving if type(o) is Probe},
    "named_surviving": {name: any(o is value for o in surviving) for name, value in named.items()},
    "named_ids": {name: id(value) for name, value in named.items()},
    "before_surviving": any(o is before for o in surviving),
    "freed_ids": freed_ids,
    "doomed_before_id": doomed_before_id,
    "events": events,
    "filtered": filtered,
    "file": __file__,
}))
"""


def run_capture(tmp_path, tool, **options):
    script = tmp_path / f"lifetimes_{tool}.py"
    lines = write_script(script, SCRIPT)
    out = tmp_path / f"{tool}.bin"
    result = run_script(script, tool, out, json.dumps({"track_object_lifetimes": True, **options}))
    return json.loads(result.stdout.strip().splitlines()[-1]), lines


def creations_at(result, address):
    return [event for event in result["events"] if event["address"] == address and event["created"]]


def last_creation(result, address):
    found = creations_at(result, address)
    assert found, f"no creation event at {address:#x}"
    return found[-1]


@needs_ref_tracer
def test_surviving_objects_and_their_stacks(tmp_path):
    result, lines = run_capture(tmp_path, "heapscope")
    file = result["file"]
    assert result["type"] == "tuple"
    # Exactly the Probes made inside the block and alive at its end: not the
    # one made before it, not the one freed inside it.
    assert result["probes"] == ["kept-0", "kept-1", "thread-0"]
    assert not result["before_surviving"]
    # Every other kind of object made inside and kept: free-list reuse included (list, dict, float, tuple).
    assert result["named_surviving"] == {"list": True, "dict": True, "str": True, "float": True, "tuple": True}

    # Each surviving object's creation event has the stack that made it.
    ids = result["probe_ids"]
    kept0 = last_creation(result, ids["kept-0"])["stack"]
    kept1 = last_creation(result, ids["kept-1"])["stack"]
    thread0 = last_creation(result, ids["thread-0"])
    # An object is made before its __init__ runs: the innermost frame is the line that called the class.
    assert kept0 == [["<module>", file, lines["kept0"]]]
    assert kept1 == [["make_probe", file, lines["make"]], ["<module>", file, lines["kept1"]]]
    assert thread0["stack"][0] == ["in_thread", file, lines["thread"]]
    assert thread0["thread_name"] == "probe-maker"
    main_tid = last_creation(result, ids["kept-0"])["tid"]
    assert thread0["tid"] != main_tid
    for name, marker in [("list", "list"), ("dict", "dict"), ("str", "str"), ("float", "float"),
                         ("tuple", "tuple")]:
        assert last_creation(result, result["named_ids"][name])["stack"] == [["<module>", file, lines[marker]]], name

    # included_objects: only events at those objects' addresses.
    assert set(result["filtered"]) <= {ids["kept-0"], ids["kept-1"], ids["thread-0"]}
    assert {ids["kept-0"], ids["kept-1"], ids["thread-0"]} <= set(result["filtered"])


@needs_ref_tracer
def test_destroyed_objects_have_a_destruction_event(tmp_path):
    result, lines = run_capture(tmp_path, "heapscope")
    file = result["file"]
    freed = result["freed_ids"]["freed-0"]
    at_freed = [event for event in result["events"] if event["address"] == freed]
    made = [i for i, event in enumerate(at_freed)
            if event["created"] and event["stack"] == [["<module>", file, lines["freed0"]]]]
    assert len(made) == 1
    # The next event at that address is its destruction (the block may be reused afterwards).
    assert at_freed[made[0] + 1]["created"] is False
    # A surviving object has no destruction after its last creation.
    for name, address in result["probe_ids"].items():
        at = [event for event in result["events"] if event["address"] == address]
        assert at[-1]["created"], name
    # An object made before the Tracker and destroyed inside it has no event
    # there (heapscope writes the destructions of the objects it saw made):
    # the first event at its address, if any, is a creation.
    at_doomed = [event for event in result["events"] if event["address"] == result["doomed_before_id"]]
    assert not at_doomed or at_doomed[0]["created"]


@needs_ref_tracer
def test_aggregated_capture_keeps_the_surviving_objects(tmp_path):
    result, lines = run_capture(tmp_path, "heapscope", file_format="AGGREGATED_ALLOCATIONS")
    file = result["file"]
    assert result["probes"] == ["kept-0", "kept-1", "thread-0"]
    assert all(event["created"] for event in result["events"])
    addresses = [event["address"] for event in result["events"]]
    assert len(addresses) == len(set(addresses))
    ids = result["probe_ids"]
    # Each with the stack that made it (memray's aggregated file keeps none).
    assert last_creation(result, ids["kept-0"])["stack"] == [["<module>", file, lines["kept0"]]]
    assert last_creation(result, ids["kept-1"])["stack"][0] == ["make_probe", file, lines["make"]]
    # The freed object is not there.
    assert not any(event["stack"] == [["<module>", file, lines["freed0"]]] for event in result["events"])


@needs_ref_tracer
def test_native_stacks_of_created_objects(tmp_path):
    result, lines = run_capture(tmp_path, "heapscope", native_traces=True)
    file = result["file"]
    kept0 = last_creation(result, result["probe_ids"]["kept-0"])
    assert kept0["stack"] == [["<module>", file, lines["kept0"]]]
    assert kept0["native"] > 0
    assert ["<module>", file, lines["kept0"]] in kept0["hybrid"]


@needs_ref_tracer
def test_an_empty_block_reports_no_objects(tmp_path):
    script = tmp_path / "empty.py"
    write_script(script, """
        import json, sys
        import heapscope
        with heapscope.Tracker(sys.argv[1], track_object_lifetimes=True) as tracker:
            pass
        events = list(heapscope.FileReader(sys.argv[1]).get_object_lifetime_events())
        print(json.dumps([len(tracker.get_surviving_objects()), len(events)]))
    """)
    result = run_script(script, tmp_path / "empty.bin")
    # heapscope's own objects (made entering and leaving the Tracker) are not the program's.
    assert json.loads(result.stdout) == [0, 0]


def test_errors_follow_memray(tmp_path):
    script = tmp_path / "errors.py"
    write_script(script, """
        import json, sys
        import heapscope
        out = {}
        with heapscope.Tracker(sys.argv[1]) as plain:
            pass
        try:
            plain.get_surviving_objects()
        except RuntimeError as error:
            out["not_enabled"] = str(error)
        try:
            heapscope.FileReader(sys.argv[1]).get_object_lifetime_events()
        except RuntimeError as error:
            out["not_in_file"] = str(error)
        try:
            tracker = heapscope.Tracker(sys.argv[2], track_object_lifetimes=True)
        except RuntimeError as error:
            out["unsupported"] = str(error)
        else:
            try:
                tracker.get_surviving_objects()
            except RuntimeError as error:
                out["not_started"] = str(error)
            with tracker:
                try:
                    tracker.get_surviving_objects()
                except RuntimeError as error:
                    out["not_finished"] = str(error)
        try:
            heapscope.Tracker(sys.argv[2], track_object_lifetimes="yes")
        except TypeError as error:
            out["type"] = str(error)
        print(json.dumps(out))
    """)
    out = json.loads(run_script(script, tmp_path / "plain.bin", tmp_path / "lifetimes.bin").stdout)
    assert out["not_enabled"] == "track_object_lifetimes=True was not provided at Tracker construction"
    assert out["not_in_file"] == ("Object lifetime events are not available in this capture file. "
                                  "The file was not generated with track_object_lifetimes=True.")
    assert out["type"] == "track_object_lifetimes must be a bool, not str"
    if HAS_REF_TRACER:
        assert "unsupported" not in out
        assert out["not_started"] == out["not_finished"] == "Tracking was never started or has not finished yet or failed."
    else:
        version = ".".join(map(str, sys.version_info[:3]))
        assert out["unsupported"].startswith("track_object_lifetimes needs Python 3.13 or later")
        assert out["unsupported"].endswith(f"Current version: {version}")


def _memray_tracks_objects():
    return importlib.util.find_spec("memray") is not None and sys.version_info >= (3, 13, 3)


@pytest.mark.skipif(not _memray_tracks_objects(),
                    reason="memray tracks objects on Python 3.13.3+ only, with memray installed")
@pytest.mark.parametrize("file_format", ["ALL_ALLOCATIONS", "AGGREGATED_ALLOCATIONS"])
def test_side_by_side_with_memray(tmp_path, file_format):
    heapscope_result, lines = run_capture(tmp_path, "heapscope", file_format=file_format)
    memray_result, _ = run_capture(tmp_path, "memray", file_format=file_format)
    for result in (heapscope_result, memray_result):
        assert result["type"] == "tuple"
        assert result["probes"] == ["kept-0", "kept-1", "thread-0"]
        assert result["named_surviving"] == {"list": True, "dict": True, "str": True, "float": True,
                                             "tuple": True}
        assert not result["before_surviving"]
    if file_format == "ALL_ALLOCATIONS":
        for result in (heapscope_result, memray_result):
            stack = last_creation(result, result["probe_ids"]["kept-1"])["stack"]
            assert stack[:2] == [["make_probe", result["file"], lines["make"]],
                                 ["<module>", result["file"], lines["kept1"]]]


@needs_ref_tracer
def test_only_live_objects_are_returned_under_churn(tmp_path):
    # CPython 3.13.0-3.13.2 do not report the objects the interpreter loop
    # destroys itself (gh-130382): heapscope forgets those when their memory
    # is freed, or finds them dead on a free list. Every object handed back
    # must be alive, and each kept one found exactly once.
    script = tmp_path / "churn.py"
    write_script(script, """
        import gc, json, sys
        import heapscope

        class Node:
            def __init__(self, value):
                self.value = value

        kept = []
        with heapscope.Tracker(sys.argv[1], track_object_lifetimes=True) as tracker:
            for i in range(20000):
                temporary = [i, float(i) + 0.5, (i, str(i)), {"i": i}, Node(i), "x" * (i % 50)]
                if i % 1000 == 0:
                    kept.append(temporary)
                del temporary
            gc.collect()  # clears the free lists: their dead objects' memory is freed
            for i in range(5000):
                value = float(i) * 1.5  # floats reused from a free list the loop refills
        surviving = tracker.get_surviving_objects()
        ids = [id(o) for o in surviving]
        # Each kept object, found once.
        wanted = [o for batch in kept for o in batch if type(o) in (list, float, tuple, dict, Node)]
        found = {id(o) for o in surviving}
        events = list(heapscope.FileReader(sys.argv[1]).get_object_lifetime_events())
        alive = {}
        for event in events:
            if event.is_created:
                assert event.address not in alive, "made twice without a destruction between"
                alive[event.address] = True
            else:
                assert alive.pop(event.address, None), "destroyed without being made"
        print(json.dumps({
            "unique": len(ids) == len(set(ids)),
            "all_alive": all(sys.getrefcount(o) > 1 and type(o).__name__ for o in surviving),
            "kept_found": all(id(o) in found for o in wanted),
            "kept_batches": sum(1 for o in surviving if type(o) is list and len(o) == 6),
            "events_alive_match": set(alive) == set(ids),
        }))
    """)
    result = json.loads(run_script(script, tmp_path / "churn.bin").stdout)
    assert result == {"unique": True, "all_alive": True, "kept_found": True, "kept_batches": 20,
                      "events_alive_match": True}
