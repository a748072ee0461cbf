"""heapscope.pools from Python: registration and release, class hooks, exact
counts under threads, detailed sources, the diff's semantics, bad arguments,
and pools as domains in heapscope.tracemalloc snapshots and captures.

Pools live as long as the process, so each test uses pools of its own name.
Tests that need a process whose pools are all fresh run in a subprocess."""

import gc
import inspect
import os
import sys
import threading

import pytest

from capture_helpers import heapscope_cli, run_script, write_script
from heapscope import pools

HERE = os.path.abspath(__file__)


class Thing:
    """Weak-referenceable, like most Python objects."""


def this_line():
    return inspect.currentframe().f_back.f_lineno


# -- registration and release ---------------------------------------------------------------------------------------


def test_an_id_is_released_by_its_handle_once():
    pool = pools.pool("t-id")
    handle = pool.track(41, size=1000, kind="buffer")
    assert (pool.count, pool.total_size) == (1, 1000)
    assert (handle.pool, handle.id, handle.size, handle.kind, handle.released) == ("t-id", 41, 1000, "buffer", False)
    assert handle.release() is True
    assert handle.release() is False  # a second release is harmless
    assert (pool.count, pool.total_size) == (0, 0)
    assert handle.released


def test_a_handle_is_a_context_manager():
    pool = pools.pool("t-with")
    with pool.track(7, size=64) as handle:
        assert pool.count == 1
    assert handle.released and pool.count == 0
    with pytest.raises(KeyError):
        with pool.track(8, size=64):
            raise KeyError("the body's exception goes through; the resource is released")
    assert pool.count == 0


def test_release_by_id_from_the_pool():
    pool = pools.pool("t-release-id")
    pool.track(5, size=10)
    assert pool.release(5) is True
    assert pool.release(5) is False
    assert pool.count == 0


def test_an_object_is_released_when_it_dies():
    pool = pools.pool("t-object")
    thing = Thing()
    pool.track(thing, size=300)  # the handle is dropped at once: the object's life decides
    assert (pool.count, pool.total_size) == (1, 300)
    assert pool.make_snapshot().resources[0].id == id(thing)
    del thing
    assert pool.count == 0


def test_an_object_in_a_reference_cycle_is_released_by_the_collector():
    pool = pools.pool("t-cycle")
    thing = Thing()
    thing.me = thing
    pool.track(thing, size=5)
    del thing
    assert pool.count == 1
    gc.collect()
    assert pool.count == 0


def test_releasing_an_object_early_then_its_death_releases_nothing_more():
    pool = pools.pool("t-early")
    thing = Thing()
    handle = pool.track(thing, size=5)
    handle.release()
    again = pool.track(thing, size=9)  # registered anew
    del handle
    assert pool.total_size == 9
    del thing
    assert pool.count == 0 and again.released


def test_tracking_an_alive_id_replaces_it_and_the_old_handle_leaves_it_alone():
    pool = pools.pool("t-replace")
    old = pool.track(3, size=100)
    new = pool.track(3, size=40)
    assert (pool.count, pool.total_size) == (1, 40)
    assert old.release() is True  # the handle's own release: nothing alive of it any more
    assert (pool.count, pool.total_size) == (1, 40)
    new.release()
    assert pool.count == 0


def test_size_may_be_a_callable_and_tracked_returns_the_object():
    pool = pools.pool("t-callable")
    data = bytearray(123)
    pool.track(Thing(), size=lambda obj: 1)  # dies at once
    kept = Thing()
    kept.payload = data
    assert pool.tracked(kept, size=lambda obj: len(obj.payload), kind="k") is kept
    assert (pool.count, pool.total_size) == (1, 123)


def test_pool_identity_and_naming():
    a = pools.pool("t-same")
    assert pools.pool("t-same") is a
    assert pools.Pool("t-same") == a and hash(pools.Pool("t-same")) == hash(a)
    assert pools.domain_names()[a.domain] == "t-same"
    assert pools.FIRST_DOMAIN <= a.domain < pools.FIRST_DOMAIN + pools.MAX_POOLS
    assert a in pools.all_pools()


# -- track_class ----------------------------------------------------------------------------------------------------


def test_track_class_registers_every_instance_until_it_dies():
    pool = pools.pool("t-class")

    class Image:
        def __init__(self, width, height):
            self.width, self.height = width, height

    pool.track_class(Image, size=lambda image: image.width * image.height * 3)
    images = [Image(10, 10), Image(2, 5)]
    snapshot = pool.make_snapshot()
    assert (snapshot.count, snapshot.total_size) == (2, 330)
    assert {r.kind for r in snapshot.resources} == {Image.__qualname__}
    assert images[0].width == 10  # the class's own __init__ ran
    del images
    assert pool.count == 0
    pool.untrack_class(Image)
    Image(1, 1)
    assert "__init__" in Image.__dict__ and pool.count == 0


def test_track_class_with_slots_and_without_weak_references():
    pool = pools.pool("t-slots")
    deleted = []

    class Slotted:
        __slots__ = ("n",)

        def __init__(self, n):
            self.n = n

        def __del__(self):
            deleted.append(self.n)

    pool.track_class(Slotted, size=lambda s: s.n, kind="slotted")
    a, b = Slotted(4), Slotted(6)
    assert (pool.count, pool.total_size) == (2, 10)
    del a
    assert (pool.count, pool.total_size) == (1, 6)
    assert deleted == [4]  # the class's own __del__ still runs
    pool.untrack_class(Slotted)
    del b
    assert deleted == [4, 6]
    assert pool.count == 1  # made while tracked, released by the hook that is gone: kept
    assert "__del__" in Slotted.__dict__


def test_track_class_with_a_weakref_slot_and_without_init():
    pool = pools.pool("t-slots-weak")

    class Plain:
        __slots__ = ("__weakref__",)

    class WithNew:
        def __new__(cls, value):
            return super().__new__(cls)

    pool.track_class(Plain, size=8)
    pool.track_class(WithNew, size=16)
    kept = [Plain(), WithNew(3)]  # object.__init__ would refuse WithNew's argument
    assert (pool.count, pool.total_size) == (2, 24)
    del kept
    assert pool.count == 0
    pool.untrack_class(Plain)
    pool.untrack_class(WithNew)
    assert "__init__" not in Plain.__dict__ and "__init__" not in WithNew.__dict__


def test_track_class_counts_subclasses_that_use_its_init():
    pool = pools.pool("t-sub")

    class Base:
        def __init__(self):
            self.ready = True

    class Child(Base):
        pass

    pool.track_class(Base, size=1)
    kept = [Base(), Child()]
    assert pool.count == 2
    assert {r.kind for r in pool.make_snapshot().resources} == {"test_track_class_counts_subclasses_that_use_its_init.<locals>.Base"}
    del kept
    pool.untrack_class(Base)


def test_track_class_refuses_what_it_cannot_hook():
    pool = pools.pool("t-class-errors")
    with pytest.raises(TypeError, match="cannot track every instance of builtins.dict: it is a built-in"):
        pool.track_class(dict, size=1)
    numpy = pytest.importorskip("numpy")
    with pytest.raises(TypeError, match=r"numpy\.ndarray.*pool\.track\(obj, size=\.\.\.\)"):
        pool.track_class(numpy.ndarray, size=lambda a: a.nbytes)
    with pytest.raises(TypeError, match="takes a class, not int"):
        pool.track_class(3, size=1)
    with pytest.raises(TypeError, match="size must be an int or a callable"):
        pool.track_class(Thing, size="big")
    with pytest.raises(ValueError, match="size must be >= 0"):
        pool.track_class(Thing, size=-1)
    with pytest.raises(TypeError, match="kind must be a str or None, not int"):
        pool.track_class(Thing, size=1, kind=5)

    class Once:
        pass

    pool.track_class(Once, size=1)
    with pytest.raises(ValueError, match="already tracked by pool 't-class-errors'"):
        pool.track_class(Once, size=1)
    pool.untrack_class(Once)
    with pytest.raises(ValueError, match="not tracked"):
        pool.untrack_class(Once)


def test_track_class_size_callable_errors_surface_at_construction():
    pool = pools.pool("t-class-size")

    class Bad:
        pass

    pool.track_class(Bad, size=lambda obj: "many")
    with pytest.raises(TypeError, match="the size callable for a .*Bad returned str, not an int"):
        Bad()
    pool.untrack_class(Bad)
    assert pool.count == 0


# -- threads --------------------------------------------------------------------------------------------------------


def test_exact_counts_and_sizes_while_eight_threads_create_and_release():
    pool = pools.pool("t-threads")
    per_thread = 3000
    barrier = threading.Barrier(8)
    kept = [[] for _ in range(8)]
    errors = []

    def work(t):
        try:
            barrier.wait()
            for i in range(per_thread):
                thing = Thing()
                size = (t * per_thread + i) % 101 + 1
                handle = pool.track(thing, size=size, kind=f"k{t % 3}")
                if i % 4 == 0:
                    kept[t].append(thing)  # alive at the end
                elif i % 4 == 1:
                    handle.release()
                else:
                    with pool.track((t << 32) | i, size=size):
                        pass
                # otherwise `thing` dies with the next iteration
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    expected_count = 8 * len(range(0, per_thread, 4))
    expected_size = sum((t * per_thread + i) % 101 + 1 for t in range(8) for i in range(0, per_thread, 4))
    snapshot = pool.make_snapshot()
    assert (pool.count, pool.total_size) == (expected_count, expected_size)
    assert (snapshot.count, snapshot.total_size) == (expected_count, expected_size)
    assert sorted(r.id for r in snapshot.resources) == sorted(id(thing) for group in kept for thing in group)
    del kept[:]
    assert (pool.count, pool.total_size) == (0, 0)


# -- detailed profiling ---------------------------------------------------------------------------------------------


def test_without_details_a_resource_has_no_source():
    pool = pools.pool("t-plain")
    handle = pool.track(1, size=1)
    (resource,) = pool.make_snapshot().resources
    assert resource.source is None
    assert resource.created <= __import__("time").time()
    handle.release()


def make_in_a_function(pool, size):
    return pool.track(Thing(), size=size), this_line()


def test_detailed_sources_name_the_line_function_and_callers():
    pool = pools.pool("t-detailed")
    with _no_warning():
        pool.enable_detailed_profiling()
    assert pool.detailed_profiling
    thing = Thing()
    pool.track(thing, size=10); line = this_line()  # noqa: E702
    (resource,) = pool.make_snapshot().resources
    source = resource.source
    assert source.python[0] == (HERE, line, "test_detailed_sources_name_the_line_function_and_callers", False)
    assert source.native == () and source.frames == source.python
    assert source[0].filename == HERE and len(source) == len(source.python) > 1
    assert source.format()[-1] == f'  File "{HERE}", line {line}, in test_detailed_sources_name_the_line_function_and_callers'
    pool.disable_detailed_profiling()
    pool.track(thing, size=11)  # replaced, now without details
    (resource,) = pool.make_snapshot().resources
    assert resource.source is None and resource.size == 11


def test_detailed_source_from_a_class_hook_is_the_constructing_line():
    pool = pools.pool("t-detailed-class")
    pool.enable_detailed_profiling()

    class Made:
        def __init__(self):
            self.x = 1

    pool.track_class(Made, size=1)
    made = Made(); line = this_line()  # noqa: E702
    (resource,) = pool.make_snapshot().resources
    assert resource.source[0][:3] == (HERE, line, "test_detailed_source_from_a_class_hook_is_the_constructing_line")
    del made
    pool.untrack_class(Made)


class _no_warning:
    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings(record=True)
        self.caught = self._catch.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._catch.__exit__(*exc)
        assert not self.caught, [str(w.message) for w in self.caught]


def test_enabling_details_late_warns_and_earlier_resources_have_no_source():
    pool = pools.pool("t-late")
    early = pool.track(1, size=1)
    with pytest.warns(RuntimeWarning, match="while 1 resource of pool 't-late' already exist: those have no source"):
        pool.enable_detailed_profiling()
    late = pool.track(2, size=2)
    sources = {r.id: r.source for r in pool.make_snapshot().resources}
    assert sources[1] is None and sources[2] is not None
    early.release()
    late.release()
    with _no_warning():  # nothing alive: nothing lacks details
        pool.enable_detailed_profiling()


def test_module_level_detailed_profiling_in_a_fresh_process(tmp_path):
    lines = write_script(tmp_path / "fresh.py", """
        import warnings
        from heapscope import pools
        warnings.simplefilter("error")
        pools.enable_detailed_profiling()          # nothing exists yet: no warning
        a = pools.pool("a").track(1, size=3)       # @a
        b = pools.pool("b").track(2, size=4)       # @b
        snap = pools.make_snapshot()
        print(sorted((r.pool, r.size, r.source[0].lineno) for r in snap.resources), snap.count, snap.total_size)
        warnings.simplefilter("always")
        with warnings.catch_warnings(record=True) as caught:
            pools.enable_detailed_profiling()      # already on: the live ones have sources, no warning
        print(len(caught))
        pools.disable_detailed_profiling()
        c = pools.pool("c").track(3, size=5)       # no source
        with warnings.catch_warnings(record=True) as caught:
            pools.enable_detailed_profiling()
        print(len(caught), caught[0].category.__name__, caught[0].lineno)   # @warned
    """)
    out = run_script(tmp_path / "fresh.py").stdout.split("\n")
    assert out[0] == f"[('a', 3, {lines['a']}), ('b', 4, {lines['b']})] 2 7"
    assert out[1] == "0"
    assert out[2] == f"1 RuntimeWarning {lines['warned'] - 1}"


# -- diff -----------------------------------------------------------------------------------------------------------


def test_diff_semantics():
    pool = pools.pool("t-diff")
    stays = pool.track(1, size=10)
    goes = pool.track(2, size=20)
    replaced = pool.track(3, size=30)
    first = pool.make_snapshot()
    goes.release()
    pool.track(3, size=35)   # the same id again: another resource
    comes = pool.track(4, size=40)
    second = pool.make_snapshot()
    result = pools.diff(first_snapshot=first, second_snapshot=second)
    assert sorted((r.id, r.size) for r in result.new) == [(3, 35), (4, 40)]
    assert sorted((r.id, r.size) for r in result.released) == [(2, 20), (3, 30)]
    assert result.size_diff == (10 + 35 + 40) - (10 + 20 + 30)
    assert result.count_diff == 0
    assert result
    nothing = pool.diff(first_snapshot=second, second_snapshot=pool.make_snapshot())
    assert (nothing.new, nothing.released, nothing.size_diff, nothing.count_diff) == ([], [], 0, 0)
    assert not nothing
    for handle in (stays, replaced, comes):
        handle.release()
    pool.release(3)


def test_checking_that_an_operation_leaks_nothing_is_one_line():
    pool = pools.pool("t-leak-check")
    pool.enable_detailed_profiling()
    leaked = []

    def operation(leak):
        thing = Thing()
        pool.track(thing, size=99)
        if leak:
            leaked.append(thing)

    before = pool.make_snapshot()
    operation(False)
    assert not pools.diff(first_snapshot=before, second_snapshot=pool.make_snapshot()).new
    operation(True)
    new = pools.diff(first_snapshot=before, second_snapshot=pool.make_snapshot()).new
    made_line = inspect.getsourcelines(operation)[1] + 2
    # Qualified names where the code object has one (3.11+).
    function = operation.__code__.co_qualname if sys.version_info >= (3, 11) else "operation"
    assert [(r.size, r.source[0].lineno, r.source[0].function) for r in new] == [(99, made_line, function)]
    result = pools.diff(first_snapshot=before, second_snapshot=pool.make_snapshot())
    assert result.new_by_line() == [((HERE, made_line), 1, 99)]


def test_diff_arguments_are_keyword_only_snapshots():
    snapshot = pools.make_snapshot()
    with pytest.raises(TypeError):
        pools.diff(snapshot, snapshot)
    with pytest.raises(TypeError, match="first_snapshot must be a heapscope.pools.Snapshot, not dict"):
        pools.diff(first_snapshot={}, second_snapshot=snapshot)
    with pytest.raises(TypeError, match="second_snapshot must be"):
        pools.Pool.diff(first_snapshot=snapshot, second_snapshot=None)


def test_module_snapshot_spans_every_pool():
    a, b = pools.pool("t-span-a"), pools.pool("t-span-b")
    ha, hb = a.track(1, size=5, kind="x"), b.track(1, size=6)
    by_pool = pools.make_snapshot().by_pool()
    assert by_pool["t-span-a"] == (1, 5) and by_pool["t-span-b"] == (1, 6)
    ha.release()
    hb.release()


# -- bad arguments --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("call, error, message", [
    (lambda p: p.track(1, size=-1), ValueError, r"size must be in range \[0; 2\*\*64 - 1\], not -1"),
    (lambda p: p.track(1, size=2 ** 64), ValueError, "size must be in range"),
    (lambda p: p.track(1, size=1.5), TypeError, "size must be an int or a callable returning one, not float"),
    (lambda p: p.track(1, size=True), TypeError, "not bool"),
    (lambda p: p.track(1, size=None), TypeError, "not NoneType"),
    (lambda p: p.track(1, size=1, kind=3), TypeError, "kind must be a str or None, not int"),
    (lambda p: p.track(1, size=1, kind=""), ValueError, "kind must not be empty"),
    (lambda p: p.track(-5, size=1), ValueError, "the resource id must be in range"),
    (lambda p: p.track([], size=1), TypeError, "cannot tell when a list object dies"),
    (lambda p: p.track(None, size=1), TypeError, "cannot tell when a NoneType object dies"),
    (lambda p: p.track(True, size=1), TypeError, "cannot tell when a bool object dies"),
    (lambda p: p.track(Thing(), size=lambda o: "x"), TypeError, "returned str, not an int"),
    (lambda p: p.track(Thing(), size=lambda o: -3), ValueError, "the size of a Thing must be in range"),
    (lambda p: p.tracked(5, size=1), TypeError, "tracked\\(\\) takes an object"),
    (lambda p: p.release("x"), TypeError, "the resource id must be an int, not str"),
    (lambda p: p.track(1), TypeError, "incompatible function arguments"),
])
def test_bad_arguments_raise_clear_errors(call, error, message):
    pool = pools.pool("t-bad")
    with pytest.raises(error, match=message):
        call(pool)
    assert pool.count == 0


@pytest.mark.parametrize("name, error, message", [
    ("", ValueError, "must not be empty"),
    ("a\0b", ValueError, "must not contain NUL"),
    ("x" * 1025, ValueError, "at most 1024 bytes"),
    (3, TypeError, "a pool's name must be a str, not int"),
    (None, TypeError, "not NoneType"),
])
def test_bad_pool_names(name, error, message):
    with pytest.raises(error, match=message):
        pools.pool(name)
    with pytest.raises(error, match=message):
        pools.Pool(name)


def test_an_exception_in_the_size_callable_propagates_and_registers_nothing():
    pool = pools.pool("t-raise")

    def boom(obj):
        raise OSError("cannot measure")

    with pytest.raises(OSError, match="cannot measure"):
        pool.track(Thing(), size=boom)
    assert pool.count == 0


# -- pools as domains -----------------------------------------------------------------------------------------------


def test_pool_resources_are_blocks_of_their_domain_in_tracemalloc_snapshots(hs_tracemalloc):
    pool = pools.pool("t-domain")
    hs_tracemalloc.start(4)
    handle = pool.track(0x1234, size=12345); line = this_line()  # noqa: E702
    traces = [t for t in hs_tracemalloc.take_snapshot().traces if t.domain == pool.domain]
    assert [(t.size, t.traceback[-1].filename, t.traceback[-1].lineno) for t in traces] == [(12345, HERE, line)]
    handle.release()
    assert not [t for t in hs_tracemalloc.take_snapshot().traces if t.domain == pool.domain]


def test_pool_resources_stay_exact_while_the_door_samples(hs_tracemalloc):
    pool = pools.pool("t-sampled")
    hs_tracemalloc.start(2, sampling=True)  # one sample per 64 KiB on average
    handles = [pool.track(0x10000 + i, size=10 + i % 7) for i in range(1000)]
    traces = [t for t in hs_tracemalloc.take_snapshot().traces if t.domain == pool.domain]
    assert (len(traces), sum(t.size for t in traces)) == (1000, sum(10 + i % 7 for i in range(1000)))
    for handle in handles:
        handle.release()
    assert not [t for t in hs_tracemalloc.take_snapshot().traces if t.domain == pool.domain]


def test_pools_in_a_capture_at_the_peak_and_at_the_end(tmp_path):
    lines = write_script(tmp_path / "prog.py", """
        import heapscope
        from heapscope import pools
        early = pools.pool("early pool")
        class Image:
            pass
        kept = []
        with heapscope.Tracker(__import__("sys").argv[1]):
            for size in (1000, 2000, 3000):
                image = Image()
                early.track(image, size=size)     # @early
                kept.append(image)
            del image
            late = pools.pool("late <pool>")      # made during the capture
            handle = late.track(77, size=50000)   # @late
            handle.release()
            kept.pop()
    """)
    capture = tmp_path / "prog.hscap"
    run_script(tmp_path / "prog.py", capture)
    import heapscope

    reader = heapscope.FileReader(str(capture))
    names = reader.pool_names
    early_domain = next(d for d, n in names.items() if n == "early pool")
    late_domain = next(d for d, n in names.items() if n == "late <pool>")

    def pool_totals(records):
        totals = {}
        for record in records:
            if record.domain in (early_domain, late_domain):
                size, count = totals.get(record.domain, (0, 0))
                totals[record.domain] = (size + record.size, count + record.n_allocations)
        return totals

    assert pool_totals(reader.get_leaked_allocation_records()) == {early_domain: (3000, 2)}
    assert pool_totals(reader.get_high_watermark_allocation_records()) == {early_domain: (6000, 3),
                                                                          late_domain: (50000, 1)}
    late_records = [r for r in reader.get_high_watermark_allocation_records() if r.domain == late_domain]
    assert late_records[0].stack_trace()[0][1:] == (str(tmp_path / "prog.py"), lines["late"])
    summary = heapscope_cli("summary", capture)
    assert summary.returncode == 0, summary.stderr
    assert f"pool      late <pool> (domain {late_domain}): 48.8 KiB in 1 resources" in summary.stdout
    leaks = heapscope_cli("summary", "--leaks", capture).stdout
    assert f"pool      early pool (domain {early_domain}): 2.9 KiB in 2 resources" in leaks
    assert "late <pool>" not in leaks


def test_a_forked_childs_capture_names_the_pools_and_holds_its_resources(tmp_path):
    lines = write_script(tmp_path / "fork.py", """
        import os, sys
        from heapscope import Tracker, pools
        before = pools.pool("before fork")
        with Tracker(sys.argv[1], follow_fork=True):
            during = pools.pool("made during")      # named in a Metadata record mid-file
            during.track(1, size=111)
            pid = os.fork()
            if pid == 0:
                before.track(2, size=2222)          # @child
                sys.exit(0)
            os.waitpid(pid, 0)
            end = None
        print(pid)
    """)
    capture = tmp_path / "fork.hscap"
    child_pid = int(run_script(tmp_path / "fork.py", capture).stdout.split()[-1])
    import heapscope

    child = heapscope.FileReader(str(tmp_path / f"fork.hscap.{child_pid}"))
    names = child.pool_names
    assert sorted(names.values()) == ["before fork", "made during"]
    by_name = {names[r.domain]: (r.size, r.stack_trace()[0][2]) for r in child.get_leaked_allocation_records()
               if r.domain in names and r.size == 2222}
    assert by_name == {"before fork": (2222, lines["child"])}


# -- regressions from review ------------------------------------------------------------------------------------


def test_many_kinds_cost_linear_memory():
    import resource

    pool = pools.pool("t-kinds")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    handles = [pool.track(i, size=1, kind=f"kind-{i}") for i in range(3000)]
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert pool.count == 3000
    assert {h.kind for h in handles[:3]} == {"kind-0", "kind-1", "kind-2"}
    for handle in handles:
        handle.release()
    # Copy-on-write tables kept every copy: 330 MB for 3000 kinds. Now a few MiB.
    assert grown_kib < 32 * 1024, grown_kib


def test_kind_with_nul_is_refused():
    with pytest.raises(ValueError, match="NUL"):
        pools.pool("t-nul").track(1, size=1, kind="a\0b")


def test_a_class_is_tracked_by_one_pool_at_a_time():
    class Thing:
        pass

    first, second = pools.pool("t-one-a"), pools.pool("t-one-b")
    first.track_class(Thing, size=lambda obj: 8)
    try:
        with pytest.raises(ValueError, match="already tracked by pool 't-one-a'"):
            second.track_class(Thing, size=lambda obj: 8)
    finally:
        first.untrack_class(Thing)
    second.track_class(Thing, size=lambda obj: 8)
    second.untrack_class(Thing)


def test_pool_names_from_c_that_are_not_utf8_are_shown_not_refused():
    import ctypes

    from heapscope import _heapscope

    library = ctypes.CDLL(_heapscope.__file__)
    get = library.heapscope_pool_get_v1
    get.restype = ctypes.c_void_p
    get.argtypes = [ctypes.c_char_p]
    assert get(b"Bilder-\xe4")
    names = pools.domain_names()  # used to raise: nanobind could not convert
    assert "Bilder-\ufffd" in names.values()
    pools.make_snapshot()
