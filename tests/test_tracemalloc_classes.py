"""Side-by-side tests: heapscope.tracemalloc against the stdlib tracemalloc.

The snapshot classes are fed the same raw traces as the stdlib classes (the
``Snapshot(raw_traces, traceback_limit)`` constructor) and every observable
result is compared: values, reprs, str(), sort orders, filter decisions and
exceptions.  The module-level functions are tested against a fake native
engine; end-to-end tests against ``heapscope._heapscope`` are guarded by
importorskip.
"""

import gc
import inspect
import os
import pathlib
import pickle
import random
import struct
import sys
import tracemalloc as T
import types
import zlib
from collections.abc import Sequence

import pytest

import heapscope.tracemalloc as H
from heapscope import _snapshot_file

MODULES = pytest.mark.parametrize("mod", [T, H], ids=["stdlib", "heapscope"])

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

FILES = [
    "a.py", "b.py", "pkg/c.py", "pkg/sub/d.pyc", "pkg/sub/d.py", "/abs/e.py",
    "\u00fcn\u00ef.py", "<frozen importlib._bootstrap>", "<unknown>",
    "f[1].py", "x.PYC", "B.py",
]


def random_raw(seed, n=300, max_depth=6, share=True, domains=(0, 0, 0, 1, 7),
               allow_none_nframe=True):
    """Raw traces (domain, size, frames, total_nframe), frames most recent
    first.  Sizes are drawn from a small set so that ties are frequent.  With
    share=False, equal stacks are distinct tuple objects."""
    rng = random.Random(seed)
    stacks = []
    for _ in range(max(1, n // 6)):
        depth = rng.randint(1, max_depth)
        stack = tuple((rng.choice(FILES), rng.choice((0, 1, 2, 3, 10, 42)))
                      for _ in range(depth))
        if depth >= 2 and rng.random() < 0.2:      # recursion: repeated frame
            stack = stack + (stack[0],)
        stacks.append(stack)
    traces = []
    for _ in range(n):
        stack = rng.choice(stacks)
        if not share:
            stack = tuple(tuple(list(frame)) for frame in stack)
        nframe = len(stack) + rng.choice((0, 0, 3))
        if allow_none_nframe and rng.random() < 0.1:
            nframe = None
        traces.append((rng.choice(domains),
                       rng.choice((0, 8, 16, 16, 32, 512, 4096, 10 ** 6)),
                       stack, nframe))
    return traces


FIXED_RAW = [
    (0, 10, (("a.py", 1), ("b.py", 2)), 2),
    (0, 30, (("a.py", 1), ("b.py", 2)), 2),
    (1, 5, (("c.py", 3),), 1),
    (0, 7, (("a.py", 2), ("a.py", 1)), 5),
    (0, 7, (("b.py", 9),), None),
    (2, 10, (("pkg/sub/d.pyc", 4), ("a.py", 1), ("a.py", 1)), 3),
]


def tb_frames(tb):
    return tuple((frame.filename, frame.lineno) for frame in tb)


def safe_str(obj):
    try:
        return str(obj)
    except Exception as exc:  # e.g. str() of an empty Traceback
        return "<%s: %s>" % (type(exc).__name__, exc)


def canon(obj):
    """Implementation-independent description of a tracemalloc object."""
    name = type(obj).__name__
    if name == "Traceback":
        return (name, tb_frames(obj), obj.total_nframe, repr(obj),
                safe_str(obj))
    if name == "Statistic":
        return (name, canon(obj.traceback), obj.size, obj.count, repr(obj),
                safe_str(obj))
    if name == "StatisticDiff":
        return (name, canon(obj.traceback), obj.size, obj.size_diff,
                obj.count, obj.count_diff, repr(obj), safe_str(obj))
    if name == "Trace":
        return (name, obj.domain, obj.size, canon(obj.traceback), repr(obj),
                safe_str(obj))
    if name == "Frame":
        return (name, obj.filename, obj.lineno, repr(obj), safe_str(obj))
    if isinstance(obj, (list, tuple)):
        return [canon(item) for item in obj]
    raise AssertionError("unexpected object %r" % (obj,))


def outcome(func, *args, **kwargs):
    """(True, result) or (False, (exception type name, message))."""
    try:
        return True, func(*args, **kwargs)
    except Exception as exc:
        return False, (type(exc).__name__, str(exc))


def assert_same_outcome(func_t, func_h, convert=canon):
    ok_t, res_t = outcome(func_t)
    ok_h, res_h = outcome(func_h)
    assert ok_t == ok_h, (res_t, res_h)
    if ok_t:
        assert convert(res_h) == convert(res_t)
    else:
        assert res_h == res_t
    return ok_t, res_t


# ---------------------------------------------------------------------------
# Module surface
# ---------------------------------------------------------------------------

DOCUMENTED_FUNCTIONS = [
    "start", "stop", "is_tracing", "clear_traces", "get_traceback_limit",
    "get_traced_memory", "reset_peak", "get_tracemalloc_memory",
    "get_object_traceback", "take_snapshot",
]
DOCUMENTED_CLASSES = [
    "Snapshot", "Filter", "DomainFilter", "BaseFilter", "Statistic",
    "StatisticDiff", "Trace", "Traceback", "Frame",
]


def test_all_lists_documented_api():
    assert sorted(H.__all__) == sorted(DOCUMENTED_FUNCTIONS + DOCUMENTED_CLASSES
                                       + ["SnapshotFileError"])
    for name in H.__all__:
        assert hasattr(H, name), name


def test_every_public_stdlib_name_exists():
    helpers = {"Sequence", "Iterable", "total_ordering"}   # stdlib's imports
    public = {name for name in dir(T) if not name.startswith("__")
              and not inspect.ismodule(getattr(T, name))} - helpers
    public -= {"_compare_grouped_stats"}     # private helper, no equivalent
    missing = sorted(name for name in public if not hasattr(H, name))
    assert missing == []


def test_star_import_exports_only_api():
    namespace = {}
    exec("from heapscope.tracemalloc import *", namespace)
    namespace.pop("__builtins__")
    assert sorted(namespace) == sorted(H.__all__)


@pytest.mark.parametrize("name", DOCUMENTED_FUNCTIONS + DOCUMENTED_CLASSES)
def test_signatures_match_stdlib(name):
    ours = inspect.signature(getattr(H, name))
    if name == "start":  # heapscope's one addition: a keyword the stdlib lacks
        extra = ours.parameters["sampling"]
        assert extra.kind == inspect.Parameter.KEYWORD_ONLY and extra.default is None
        ours = ours.replace(parameters=[p for p in ours.parameters.values() if p.name != "sampling"])
    assert str(ours) == str(inspect.signature(getattr(T, name)))
    assert inspect.isclass(getattr(H, name)) == inspect.isclass(getattr(T, name))


@pytest.mark.parametrize("cls, method", [
    ("Snapshot", "statistics"), ("Snapshot", "compare_to"),
    ("Snapshot", "filter_traces"), ("Snapshot", "dump"), ("Snapshot", "load"),
    ("Traceback", "format"),
])
def test_method_signatures_match_stdlib(cls, method):
    assert (str(inspect.signature(getattr(getattr(H, cls), method)))
            == str(inspect.signature(getattr(getattr(T, cls), method))))


def test_start_is_positional_only():
    params = list(inspect.signature(H.start).parameters.values())
    assert [p.kind for p in params] == [inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.KEYWORD_ONLY]
    assert params[0].default == 1


def test_class_hierarchy():
    assert issubclass(H.Traceback, Sequence)
    assert issubclass(H.Filter, H.BaseFilter)
    assert issubclass(H.DomainFilter, H.BaseFilter)
    assert issubclass(H.SnapshotFileError, ValueError)
    assert H.SnapshotFileError is _snapshot_file.SnapshotFileError
    for name in ("Frame", "Traceback", "Trace", "Statistic", "StatisticDiff"):
        assert getattr(H, name).__slots__ == getattr(T, name).__slots__


@pytest.mark.parametrize("name, args", [
    ("Frame", (("a.py", 1),)),
    ("Traceback", ((("a.py", 1),),)),
    ("Trace", ((0, 1, (("a.py", 1),), 1),)),
    ("Statistic", (None, 1, 1)),
    ("StatisticDiff", (None, 1, 1, 1, 1)),
])
def test_slotted_instances_have_no_dict(name, args):
    obj = getattr(H, name)(*args)
    with pytest.raises(AttributeError):
        obj.__dict__
    with pytest.raises(AttributeError):
        obj.unexpected_attribute = 1


# ---------------------------------------------------------------------------
# _format_size (observable through str() of Statistic/StatisticDiff/Trace)
# ---------------------------------------------------------------------------

SIZES = sorted({0, 1, 99, 100, 101, 999, 1000, 1023, 1024, 1025, 10239, 10240,
                10241, 102399, 102400, 102451, 1048575, 1048576, 10 ** 7,
                10485759, 10485760, 2 ** 30, 2 ** 40, 2 ** 45, 2 ** 50, 2 ** 60,
                123456789, 99 * 1024 + 1000, 100 * 1024 - 1, 5.5, 1023.5})
SIZES += [-s for s in SIZES if s]


@pytest.mark.parametrize("sign", [False, True])
def test_format_size_matches_stdlib(sign):
    for size in SIZES:
        assert H._format_size(size, sign) == T._format_size(size, sign), size


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("count", [0, 1, 3])
def test_statistic_str_repr_match_stdlib(size, count):
    tb_t = T.Traceback((("x.py", 5), ("y.py", 6)), 4)
    tb_h = H.Traceback((("x.py", 5), ("y.py", 6)), 4)
    st_t, st_h = T.Statistic(tb_t, size, count), H.Statistic(tb_h, size, count)
    assert str(st_h) == str(st_t)
    assert repr(st_h) == repr(st_t)
    for diff in (0, size, -size, 7):
        d_t = T.StatisticDiff(tb_t, size, diff, count, -count)
        d_h = H.StatisticDiff(tb_h, size, diff, count, -count)
        assert str(d_h) == str(d_t)
        assert repr(d_h) == repr(d_t)


def test_known_strings():
    # pin a few exact strings so a shared bug in both cannot hide
    tb = H.Traceback((("x.py", 5),))
    assert str(H.Statistic(tb, 10240, 2)) == \
        "x.py:5: size=10.0 KiB, count=2, average=5120 B"
    assert str(H.StatisticDiff(tb, 0, -2048, 0, -3)) == \
        "x.py:5: size=0 B (-2048 B), count=0 (-3)"
    assert repr(H.Trace((1, 5000, (("x.py", 5),), 1))) == (
        "<Trace domain=1 size=5000 B, traceback=<Traceback "
        "(<Frame filename='x.py' lineno=5>,) total_nframe=1>>")


# ---------------------------------------------------------------------------
# Frame
# ---------------------------------------------------------------------------

FRAMES = [("a.py", 1), ("a.py", 2), ("b.py", 1), ("a.py", 1), ("", 0),
          ("\u00fcn\u00ef.py", 7), ("a'b\".py", 3)]


@MODULES
def test_frame_attributes(mod):
    frame = mod.Frame(("a.py", 12))
    assert frame.filename == "a.py"
    assert frame.lineno == 12
    with pytest.raises(AttributeError):
        frame.filename = "b.py"
    with pytest.raises(AttributeError):
        frame.lineno = 3


def test_frame_repr_str_eq_hash_order():
    for x in FRAMES:
        fx_t, fx_h = T.Frame(x), H.Frame(x)
        assert repr(fx_h) == repr(fx_t)
        assert str(fx_h) == str(fx_t)
        assert hash(fx_h) == hash(fx_t)
        for y in FRAMES:
            fy_t, fy_h = T.Frame(y), H.Frame(y)
            for op in ("__eq__", "__ne__", "__lt__", "__le__", "__gt__",
                       "__ge__"):
                assert (getattr(fx_h, op)(fy_h) == getattr(fx_t, op)(fy_t)), \
                    (x, op, y)
    assert sorted(map(H.Frame, FRAMES)) == sorted(map(H.Frame, FRAMES),
                                                  key=lambda f: f._frame)
    assert H.Frame(("a.py", 1)) == H.Frame(("a.py", 1))
    assert H.Frame(("a.py", 1)) != H.Frame(("a.py", 2))
    assert H.Frame(("a.py", 1)) < H.Frame(("a.py", 2))


@pytest.mark.parametrize("expr", [
    "F(('a', 1)) < 1", "F(('a', 1)) <= 'x'", "F(('a', 1)) > None",
    "F(('a', 1)) >= 2.0",
])
def test_frame_foreign_comparison_errors(expr):
    assert_same_outcome(lambda: eval(expr, {"F": T.Frame}),
                        lambda: eval(expr, {"F": H.Frame}), convert=repr)


def test_frame_not_equal_to_other_types():
    frame = H.Frame(("a.py", 1))
    assert frame != ("a.py", 1)
    assert frame != T.Frame(("a.py", 1))
    assert not frame == ("a.py", 1)


# ---------------------------------------------------------------------------
# Traceback
# ---------------------------------------------------------------------------

TB_RAW = [
    (),
    (("a.py", 1),),
    (("a.py", 1), ("b.py", 2)),
    (("b.py", 2), ("a.py", 1)),
    (("a.py", 1), ("a.py", 1), ("c.py", 9)),
    (("c.py", 9), ("b.py", 2), ("a.py", 1), ("z.py", 0)),
]


@pytest.mark.parametrize("raw", TB_RAW)
@pytest.mark.parametrize("total_nframe", [None, 0, 4, 100])
def test_traceback_basics(raw, total_nframe):
    tb_t, tb_h = T.Traceback(raw, total_nframe), H.Traceback(raw, total_nframe)
    assert canon(tb_h) == canon(tb_t)
    assert len(tb_h) == len(tb_t) == len(raw)
    assert tb_h.total_nframe == total_nframe
    # oldest frame first: the reverse of the raw order
    assert tb_frames(tb_h) == tuple(reversed(raw))
    assert hash(tb_h) == hash(tb_t)
    assert canon(list(reversed(tb_h))) == canon(list(reversed(tb_t)))
    assert canon(list(iter(tb_h))) == canon(list(iter(tb_t)))
    for index in range(-len(raw) - 2, len(raw) + 2):
        assert_same_outcome(lambda: tb_t[index], lambda: tb_h[index])
    for sl in (slice(None), slice(1, None), slice(None, -1), slice(None, None, -1),
               slice(5, 1, -2), slice(0, 0)):
        res_t, res_h = tb_t[sl], tb_h[sl]
        assert type(res_h) is tuple and type(res_t) is tuple
        assert canon(res_h) == canon(res_t)
    for frame in set(raw) | {("nope.py", 1)}:
        assert (H.Frame(frame) in tb_h) == (T.Frame(frame) in tb_t)
        assert tb_h.count(H.Frame(frame)) == tb_t.count(T.Frame(frame))
        assert_same_outcome(lambda: tb_t.index(T.Frame(frame)),
                            lambda: tb_h.index(H.Frame(frame)), convert=repr)


def test_traceback_repr_exact():
    tb = H.Traceback((("b.py", 2), ("a.py", 1)), 7)
    assert repr(tb) == ("<Traceback (<Frame filename='a.py' lineno=1>, "
                        "<Frame filename='b.py' lineno=2>) total_nframe=7>")
    assert repr(H.Traceback((("a.py", 1),))) == \
        "<Traceback (<Frame filename='a.py' lineno=1>,)>"
    assert repr(H.Traceback(())) == "<Traceback ()>"
    # str() is the *oldest* frame, as in the stdlib
    assert str(tb) == "a.py:1"


def test_traceback_empty_str_raises_like_stdlib():
    assert_same_outcome(lambda: str(T.Traceback(())),
                        lambda: str(H.Traceback(())), convert=repr)
    ok, _ = outcome(str, H.Traceback(()))
    assert not ok


@pytest.mark.parametrize("index", ["x", 1.0, None])
def test_traceback_bad_index(index):
    raw = (("a.py", 1),)
    assert_same_outcome(lambda: T.Traceback(raw)[index],
                        lambda: H.Traceback(raw)[index], convert=repr)


def test_traceback_contains_non_frame():
    raw = (("a.py", 1),)
    assert_same_outcome(lambda: ("a.py", 1) in T.Traceback(raw),
                        lambda: ("a.py", 1) in H.Traceback(raw), convert=repr)


def test_traceback_equality_ignores_total_nframe():
    assert H.Traceback((("a.py", 1),), 1) == H.Traceback((("a.py", 1),), 99)
    assert hash(H.Traceback((("a.py", 1),), 1)) == \
        hash(H.Traceback((("a.py", 1),)))
    assert H.Traceback((("a.py", 1),)) != H.Traceback((("a.py", 2),))


def test_traceback_ordering_matches_stdlib():
    tbs_t = [T.Traceback(raw) for raw in TB_RAW]
    tbs_h = [H.Traceback(raw) for raw in TB_RAW]
    for i in range(len(TB_RAW)):
        for j in range(len(TB_RAW)):
            for op in ("__eq__", "__ne__", "__lt__", "__le__", "__gt__",
                       "__ge__"):
                assert (getattr(tbs_h[i], op)(tbs_h[j])
                        == getattr(tbs_t[i], op)(tbs_t[j])), (i, op, j)
    assert [tb_frames(tb) for tb in sorted(tbs_h)] == \
        [tb_frames(tb) for tb in sorted(tbs_t)]
    assert_same_outcome(lambda: tbs_t[1] < ("a.py", 1),
                        lambda: tbs_h[1] < ("a.py", 1), convert=repr)
    assert tbs_h[1] != tbs_t[1]     # different classes never compare equal


def test_traceback_accepts_list_frames():
    raw = [("a.py", 1), ("b.py", 2)]
    assert canon(H.Traceback(raw)) == canon(T.Traceback(raw))


@pytest.fixture
def source_file(tmp_path):
    path = tmp_path / "src_mod.py"
    path.write_text("first = 1\n\n    indented = 3   \nfour = 4\nlast = 5\n")
    return str(path)


FORMAT_ARGS = [dict(), dict(limit=None), dict(most_recent_first=True)]
FORMAT_ARGS += [dict(limit=n) for n in (-5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5)]
FORMAT_ARGS += [dict(limit=n, most_recent_first=True) for n in (-2, 0, 1, 2, 9)]
FORMAT_ARGS += [dict(limit=True)]


@pytest.mark.parametrize("kwargs", FORMAT_ARGS, ids=repr)
def test_traceback_format(source_file, kwargs):
    raw = ((source_file, 5), (source_file, 2), ("missing_file.py", 1),
           (source_file, 3), (source_file, 1), (source_file, 99))
    lines_t = T.Traceback(raw, 10).format(**kwargs)
    lines_h = H.Traceback(raw, 10).format(**kwargs)
    assert lines_h == lines_t
    if kwargs.get("limit") == 0:
        assert lines_h == []


def test_traceback_format_content(source_file):
    raw = ((source_file, 3), (source_file, 1))     # most recent first
    assert H.Traceback(raw).format() == [
        '  File "%s", line 1' % source_file, "    first = 1",
        '  File "%s", line 3' % source_file, "    indented = 3",
    ]
    assert H.Traceback(raw).format(1, most_recent_first=True) == [
        '  File "%s", line 3' % source_file, "    indented = 3",
    ]


@pytest.mark.parametrize("limit", ["2", 1.5])
def test_traceback_format_bad_limit(limit):
    raw = (("a.py", 1),)
    assert_same_outcome(lambda: T.Traceback(raw).format(limit),
                        lambda: H.Traceback(raw).format(limit), convert=repr)


# ---------------------------------------------------------------------------
# Trace and the traces sequence
# ---------------------------------------------------------------------------

TRACE_RAW = [
    (0, 10, (("a.py", 1),), 1),
    (0, 10, (("a.py", 1),), None),
    (3, 123456, (("b.py", 2), ("a.py", 1)), 9),
    (0, 0, (), 0),
    (1, 10, (("a.py", 1),)),        # 3-tuple: Traceback without total_nframe
]


@pytest.mark.parametrize("raw", TRACE_RAW)
def test_trace(raw):
    tr_t, tr_h = T.Trace(raw), H.Trace(raw)
    assert tr_h.domain == tr_t.domain == raw[0]
    assert tr_h.size == tr_t.size == raw[1]
    assert canon(tr_h.traceback) == canon(tr_t.traceback)
    assert repr(tr_h) == repr(tr_t)
    assert safe_str(tr_h) == safe_str(tr_t)
    assert hash(tr_h) == hash(tr_t)
    for other in TRACE_RAW:
        assert (H.Trace(raw) == H.Trace(other)) == (tr_t == T.Trace(other))
        assert (H.Trace(raw) != H.Trace(other)) == (tr_t != T.Trace(other))
    with pytest.raises(AttributeError):
        tr_h.size = 3


def test_trace_is_not_orderable():
    raw = TRACE_RAW[0]
    assert_same_outcome(lambda: T.Trace(raw) < T.Trace(raw),
                        lambda: H.Trace(raw) < H.Trace(raw), convert=repr)
    ok, _ = outcome(lambda: H.Trace(raw) < H.Trace(raw))
    assert not ok


def test_traces_sequence():
    raw = list(FIXED_RAW)
    tr_t, tr_h = T.Snapshot(raw, 5).traces, H.Snapshot(raw, 5).traces
    assert repr(tr_h) == repr(tr_t) == "<Traces len=%d>" % len(raw)
    assert type(tr_h).__name__ == type(tr_t).__name__
    assert isinstance(tr_h, Sequence)
    assert len(tr_h) == len(raw)
    assert canon(list(tr_h)) == canon(list(tr_t))
    for index in (0, 3, -1, -len(raw), len(raw), -len(raw) - 1):
        assert_same_outcome(lambda: tr_t[index], lambda: tr_h[index])
    for sl in (slice(None), slice(1, 3), slice(None, None, -2)):
        assert type(tr_h[sl]) is tuple
        assert canon(tr_h[sl]) == canon(tr_t[sl])
    assert H.Trace(raw[2]) in tr_h
    assert H.Trace((9, 9, (("zz.py", 1),), 1)) not in tr_h
    assert_same_outcome(lambda: 5 in tr_t, lambda: 5 in tr_h, convert=repr)
    assert tr_h == H.Snapshot(list(raw), 1).traces
    assert tr_h != H.Snapshot(raw[:-1], 1).traces
    assert tr_h != tr_t
    assert_same_outcome(lambda: hash(tr_t), lambda: hash(tr_h), convert=repr)
    assert tr_h.index(H.Trace(raw[3])) == 3


# ---------------------------------------------------------------------------
# Statistic / StatisticDiff objects
# ---------------------------------------------------------------------------

def test_statistic_eq_hash():
    tb = H.Traceback((("a.py", 1),))
    stat = H.Statistic(tb, 10, 2)
    assert stat == H.Statistic(H.Traceback((("a.py", 1),)), 10, 2)
    assert stat != H.Statistic(tb, 11, 2)
    assert stat != H.Statistic(tb, 10, 3)
    assert stat != H.Statistic(H.Traceback((("a.py", 2),)), 10, 2)
    assert hash(stat) == hash(T.Statistic(T.Traceback((("a.py", 1),)), 10, 2))
    assert stat != T.Statistic(T.Traceback((("a.py", 1),)), 10, 2)
    stat.size = 99
    assert stat.size == 99 and repr(stat).endswith("size=99 count=2>")

    diff = H.StatisticDiff(tb, 10, 5, 2, 1)
    assert diff == H.StatisticDiff(tb, 10, 5, 2, 1)
    for i in range(4):
        args = [10, 5, 2, 1]
        args[i] += 1
        assert diff != H.StatisticDiff(tb, *args)
    assert hash(diff) == hash(T.StatisticDiff(T.Traceback((("a.py", 1),)),
                                              10, 5, 2, 1))


@pytest.mark.parametrize("cls", ["Statistic", "StatisticDiff"])
def test_statistics_are_not_orderable(cls):
    n = 3 if cls == "Statistic" else 5
    make_t = lambda: getattr(T, cls)(T.Traceback((("a", 1),)), *[1] * (n - 1))
    make_h = lambda: getattr(H, cls)(H.Traceback((("a", 1),)), *[1] * (n - 1))
    assert_same_outcome(lambda: make_t() < make_t(), lambda: make_h() < make_h(),
                        convert=repr)
    assert not outcome(lambda: make_h() < make_h())[0]


# ---------------------------------------------------------------------------
# Snapshot.statistics / compare_to
# ---------------------------------------------------------------------------

KEY_MODES = [("traceback", False), ("lineno", False), ("filename", False),
             ("lineno", True), ("filename", True)]


@pytest.mark.parametrize("key_type, cumulative", KEY_MODES)
def test_statistics_fixed(key_type, cumulative):
    got = H.Snapshot(FIXED_RAW, 5).statistics(key_type, cumulative)
    want = T.Snapshot(FIXED_RAW, 5).statistics(key_type, cumulative)
    assert canon(got) == canon(want)
    assert all(type(s) is H.Statistic and type(s.traceback) is H.Traceback
               for s in got)


def test_statistics_known_values():
    stats = H.Snapshot(FIXED_RAW, 5).statistics("lineno")
    assert [(str(s.traceback), s.size, s.count) for s in stats] == [
        ("a.py:1", 40, 2), ("pkg/sub/d.pyc:4", 10, 1), ("b.py:9", 7, 1),
        ("a.py:2", 7, 1), ("c.py:3", 5, 1)]
    # cumulative counts a repeated (recursive) frame once per occurrence
    cum = {str(s.traceback): (s.size, s.count) for s in
           H.Snapshot(FIXED_RAW, 5).statistics("lineno", cumulative=True)}
    assert cum["a.py:1"] == (10 + 30 + 7 + 10 + 10, 5)
    fn = {str(s.traceback): (s.size, s.count) for s in
          H.Snapshot(FIXED_RAW, 5).statistics("filename", cumulative=True)}
    assert fn["a.py:0"] == (10 + 30 + 7 + 7 + 10 + 10, 6)


@pytest.mark.parametrize("seed", range(25))
@pytest.mark.parametrize("share", [True, False])
def test_statistics_random(seed, share):
    raw = random_raw(seed, share=share)
    snap_t, snap_h = T.Snapshot(raw, 7), H.Snapshot(raw, 7)
    for key_type, cumulative in KEY_MODES:
        got = snap_h.statistics(key_type, cumulative)
        want = snap_t.statistics(key_type, cumulative)
        assert canon(got) == canon(want), (key_type, cumulative)


def test_statistics_sort_ties():
    # same size and count everywhere: order decided by traceback, descending
    raw = [(0, 16, ((fn, ln),), 1) for fn in ("b.py", "a.py", "c.py")
           for ln in (3, 1, 2)]
    raw += [(0, 16, (("a.py", 1), ("z.py", 1)), 2)]
    raw += [(0, 16, (("a.py", 1), ("b.py", 0)), 2)]
    for key_type, cumulative in KEY_MODES:
        got = H.Snapshot(raw, 5).statistics(key_type, cumulative)
        want = T.Snapshot(raw, 5).statistics(key_type, cumulative)
        assert canon(got) == canon(want)
    order = [str(s.traceback) for s in H.Snapshot(raw, 5).statistics("lineno")]
    assert order[0] == "a.py:1"   # 3 traces, bigger
    assert order[1:] == ["c.py:3", "c.py:2", "c.py:1", "b.py:3", "b.py:2",
                         "b.py:1", "a.py:3", "a.py:2"]


def test_statistics_empty_snapshot():
    for key_type, cumulative in KEY_MODES:
        assert H.Snapshot([], 1).statistics(key_type, cumulative) == []


def test_statistics_empty_frames_like_stdlib():
    raw = [(0, 5, (), 0), (0, 6, (("a.py", 1),), 1)]
    for key_type, cumulative in KEY_MODES:
        assert_same_outcome(
            lambda: T.Snapshot(raw, 1).statistics(key_type, cumulative),
            lambda: H.Snapshot(raw, 1).statistics(key_type, cumulative))
    # filename needs a frame; the other keys accept an empty traceback
    assert not outcome(H.Snapshot(raw, 1).statistics, "filename")[0]
    assert outcome(H.Snapshot(raw, 1).statistics, "lineno")[0]


BAD_KEYS = [("foo", False), ("", False), (None, False), (1, False),
            ("Lineno", False), ("traceback", True), ("traceback", 1),
            ("traceback", "yes"), ("foo", True), (b"lineno", False)]


@pytest.mark.parametrize("key_type, cumulative", BAD_KEYS)
def test_statistics_errors(key_type, cumulative):
    ok, err = assert_same_outcome(
        lambda: T.Snapshot(FIXED_RAW, 1).statistics(key_type, cumulative),
        lambda: H.Snapshot(FIXED_RAW, 1).statistics(key_type, cumulative))
    assert not ok and err[0] == "ValueError"


@pytest.mark.parametrize("key_type, cumulative", BAD_KEYS)
def test_compare_to_errors(key_type, cumulative):
    ok, err = assert_same_outcome(
        lambda: T.Snapshot(FIXED_RAW, 1).compare_to(
            T.Snapshot([], 1), key_type, cumulative),
        lambda: H.Snapshot(FIXED_RAW, 1).compare_to(
            H.Snapshot([], 1), key_type, cumulative))
    assert not ok and err[0] == "ValueError"


def test_error_messages_exact():
    snap = H.Snapshot(FIXED_RAW, 1)
    with pytest.raises(ValueError, match=r"^unknown key_type: 'foo'$"):
        snap.statistics("foo")
    with pytest.raises(ValueError, match=r"^cumulative mode cannot by used "
                                         r"with key type 'traceback'$"):
        snap.statistics("traceback", cumulative=True)


@pytest.mark.parametrize("key_type, cumulative", KEY_MODES)
def test_compare_to_fixed(key_type, cumulative):
    old = FIXED_RAW[:2] + [(0, 99, (("old_only.py", 1),), 1)]
    got = H.Snapshot(FIXED_RAW, 5).compare_to(H.Snapshot(old, 5), key_type,
                                              cumulative)
    want = T.Snapshot(FIXED_RAW, 5).compare_to(T.Snapshot(old, 5), key_type,
                                               cumulative)
    assert canon(got) == canon(want)
    assert all(type(s) is H.StatisticDiff for s in got)
    gone = [s for s in got if "old_only.py" in str(s.traceback)]
    assert len(gone) == 1
    assert (gone[0].size, gone[0].size_diff, gone[0].count,
            gone[0].count_diff) == (0, -99, 0, -1)


@pytest.mark.parametrize("seed", range(25))
def test_compare_to_random(seed):
    new = random_raw(seed)
    old = random_raw(seed + 1000, share=bool(seed % 2))
    old += new[: len(new) // 3]          # overlap: some groups in both
    for key_type, cumulative in KEY_MODES:
        got = H.Snapshot(new, 5).compare_to(H.Snapshot(old, 5), key_type,
                                            cumulative)
        want = T.Snapshot(new, 5).compare_to(T.Snapshot(old, 5), key_type,
                                             cumulative)
        assert canon(got) == canon(want), (key_type, cumulative)


def test_compare_to_self_and_empty():
    raw = random_raw(3)
    for key_type, cumulative in KEY_MODES:
        snap = H.Snapshot(raw, 5)
        same = snap.compare_to(snap, key_type, cumulative)
        assert same and all(s.size_diff == 0 and s.count_diff == 0
                            for s in same)
        grown = snap.compare_to(H.Snapshot([], 5), key_type, cumulative)
        assert canon(grown) == canon(T.Snapshot(raw, 5).compare_to(
            T.Snapshot([], 5), key_type, cumulative))
        assert all(s.size_diff == s.size for s in grown)
        shrunk = H.Snapshot([], 5).compare_to(snap, key_type, cumulative)
        assert all(s.size == 0 and s.size_diff <= 0 for s in shrunk)


def test_group_by_private_helper_matches_stdlib():
    for key_type, cumulative in KEY_MODES:
        got = H.Snapshot(FIXED_RAW, 1)._group_by(key_type, cumulative)
        want = T.Snapshot(FIXED_RAW, 1)._group_by(key_type, cumulative)
        assert [canon(k) for k in got] == [canon(k) for k in want]
        assert canon(list(got.values())) == canon(list(want.values()))


def test_snapshot_attributes():
    raw = list(FIXED_RAW)
    snap = H.Snapshot(raw, 42)
    assert snap.traceback_limit == 42
    assert snap.traces._traces is raw      # no copy, like the stdlib
    snap.traceback_limit = 3
    assert snap.traceback_limit == 3


# ---------------------------------------------------------------------------
# Filters
# ---------------------------------------------------------------------------

PATTERNS = ["*", "*.py", "a.py", "b*", "?.py", "[ab].py", "[!a].py", "pkg/*",
            "pkg/sub/d.py", "pkg/sub/d.pyc", "*.pyc", "x.PYC", "*.PY", "x.py",
            "f[[]1].py", "", "\u00fcn\u00ef.py", "<*>", "*/d.py", "B.py"]


@MODULES
def test_filter_attributes(mod):
    flt = mod.Filter(True, "x.pyc")
    assert flt.inclusive is True
    assert flt.filename_pattern == "x.py"
    assert flt.lineno is None and flt.all_frames is False and flt.domain is None
    with pytest.raises(AttributeError):
        flt.filename_pattern = "y"
    flt.lineno, flt.all_frames, flt.domain, flt.inclusive = 3, True, 2, False
    assert (flt.lineno, flt.all_frames, flt.domain, flt.inclusive) == \
        (3, True, 2, False)
    dflt = mod.DomainFilter(False, 5)
    assert dflt.inclusive is False and dflt.domain == 5
    with pytest.raises(AttributeError):
        dflt.domain = 6
    dflt.inclusive = True
    assert dflt.inclusive is True
    assert mod.BaseFilter(True).inclusive is True
    with pytest.raises(NotImplementedError):
        mod.BaseFilter(True)._match(FIXED_RAW[0])


@pytest.mark.parametrize("pattern", PATTERNS + [
    "a.PYC", "dir/x.pyc", "x.pyco", ".pyc", "x.pyc.pyc", pathlib.Path("p.pyc"),
    pathlib.PurePosixPath("q/r.py")])
def test_filter_pattern_normalisation(pattern):
    assert (H.Filter(True, pattern).filename_pattern
            == T.Filter(True, pattern).filename_pattern)


def test_filter_pattern_normalisation_exact():
    assert H.Filter(True, "x.pyc").filename_pattern == "x.py"
    assert H.Filter(True, "x.pyc.pyc").filename_pattern == "x.pyc.py"
    assert H.Filter(True, pathlib.Path("p.pyc")).filename_pattern == "p.py"


@pytest.mark.parametrize("pattern", [123, None, b"x.pyc", 1.5, ["a"]])
def test_filter_bad_pattern(pattern):
    ok, _ = assert_same_outcome(lambda: T.Filter(True, pattern),
                                lambda: H.Filter(True, pattern),
                                convert=lambda f: f.filename_pattern)
    assert not ok


def filter_spec_build(mod, spec):
    kind, args, kwargs = spec
    return getattr(mod, kind)(*args, **kwargs)


def random_filter_spec(rng):
    if rng.random() < 0.25:
        return ("DomainFilter", (rng.choice((True, False, 1, 0)),
                                 rng.choice((0, 1, 7, 3))), {})
    kwargs = {}
    if rng.random() < 0.4:
        kwargs["lineno"] = rng.choice((0, 1, 2, 3, 10, 42, None))
    if rng.random() < 0.5:
        kwargs["all_frames"] = rng.choice((True, False, 1, 0))
    if rng.random() < 0.3:
        kwargs["domain"] = rng.choice((0, 1, 7, None))
    return ("Filter", (rng.choice((True, False)), rng.choice(PATTERNS)), kwargs)


def filtered(mod, raw, specs, limit=5):
    snap = mod.Snapshot(raw, limit)
    result = snap.filter_traces([filter_spec_build(mod, s) for s in specs])
    assert type(result) is mod.Snapshot
    assert result.traceback_limit == limit
    return result.traces._traces


SINGLE_FILTERS = []
for _pattern in PATTERNS:
    for _inclusive in (True, False):
        SINGLE_FILTERS.append(("Filter", (_inclusive, _pattern), {}))
        SINGLE_FILTERS.append(("Filter", (_inclusive, _pattern),
                               {"all_frames": True}))
for _inclusive in (True, False):
    for _kwargs in ({"lineno": 1}, {"lineno": 0}, {"lineno": 1, "all_frames": True},
                    {"domain": 1}, {"domain": 0, "all_frames": True},
                    {"domain": 7, "lineno": 2}):
        SINGLE_FILTERS.append(("Filter", (_inclusive, "*.py"), _kwargs))
        SINGLE_FILTERS.append(("Filter", (_inclusive, "a.py"), _kwargs))
    for _domain in (0, 1, 7, 99):
        SINGLE_FILTERS.append(("DomainFilter", (_inclusive, _domain), {}))


@pytest.mark.parametrize("spec", SINGLE_FILTERS, ids=repr)
def test_filter_single(spec):
    raw = random_raw(11, n=200)
    got = filtered(H, raw, [spec])
    assert got == filtered(T, raw, [spec])


@pytest.mark.parametrize("seed", range(60))
def test_filter_random_combinations(seed):
    rng = random.Random(seed)
    raw = random_raw(seed, n=150, share=bool(seed % 3))
    specs = [random_filter_spec(rng) for _ in range(rng.randint(1, 4))]
    got = filtered(H, raw, specs)
    want = filtered(T, raw, specs)
    assert got == want, specs


def test_filter_semantics_known_values():
    raw = FIXED_RAW
    # inclusive: keep traces whose most recent frame matches
    assert filtered(H, raw, [("Filter", (True, "a.py"), {})]) == \
        [raw[0], raw[1], raw[3]]
    # all_frames: any frame may match
    assert filtered(H, raw, [("Filter", (True, "a.py"),
                              {"all_frames": True})]) == \
        [raw[0], raw[1], raw[3], raw[5]]
    # exclusive with all_frames drops a trace if any frame matches
    assert filtered(H, raw, [("Filter", (False, "a.py"),
                              {"all_frames": True})]) == [raw[2], raw[4]]
    # ".pyc" in a frame filename is normalised to ".py"
    assert filtered(H, raw, [("Filter", (True, "pkg/sub/d.py"), {})]) == \
        [raw[5]]
    # exclusive Filter restricted to a domain keeps the other domains
    assert filtered(H, raw, [("Filter", (False, "*"), {"domain": 0})]) == \
        [raw[2], raw[5]]
    # an inclusive filter OR another, then exclusive filters AND-ed
    assert filtered(H, raw, [("DomainFilter", (True, 1), {}),
                             ("Filter", (True, "b.py"), {}),
                             ("Filter", (False, "b.py"), {"lineno": 9})]) == \
        [raw[2]]


def test_filter_empty_list_copies():
    raw = list(FIXED_RAW)
    for mod in (T, H):
        snap = mod.Snapshot(raw, 3)
        copy = snap.filter_traces([])
        assert copy is not snap
        assert copy.traces._traces == raw
        assert copy.traces._traces is not raw
        assert copy.traceback_limit == 3


def test_filter_empty_list_on_tuple_traces():
    # stdlib: AttributeError (tuple has no .copy()); heapscope returns a list
    snap = H.Snapshot(tuple(FIXED_RAW), 3)
    assert snap.filter_traces([]).traces._traces == list(FIXED_RAW)
    assert snap.filter_traces([H.Filter(True, "*")]).traces._traces == \
        list(FIXED_RAW)


@pytest.mark.parametrize("filters", [None, 5, H.Filter(True, "a.py"), 1.5])
def test_filter_traces_not_iterable(filters):
    t_filters = T.Filter(True, "a.py") if isinstance(filters, H.Filter) \
        else filters
    ok, err = assert_same_outcome(
        lambda: T.Snapshot(FIXED_RAW, 1).filter_traces(t_filters),
        lambda: H.Snapshot(FIXED_RAW, 1).filter_traces(filters),
        convert=lambda s: s.traces._traces)
    assert not ok and err[0] == "TypeError"
    assert "filters must be a list of filters, not" in err[1]


def test_filter_traces_accepts_any_iterable():
    specs = [("Filter", (True, "a.py"), {}), ("DomainFilter", (False, 1), {})]
    want = filtered(T, FIXED_RAW, specs)
    for wrap in (tuple, iter, lambda x: (f for f in x), set):
        flts = wrap([filter_spec_build(H, s) for s in specs])
        got = H.Snapshot(FIXED_RAW, 1).filter_traces(flts).traces._traces
        assert got == want
    # a string is iterable: its characters have no .inclusive
    assert_same_outcome(lambda: T.Snapshot(FIXED_RAW, 1).filter_traces("ab"),
                        lambda: H.Snapshot(FIXED_RAW, 1).filter_traces("ab"),
                        convert=lambda s: s.traces._traces)


def test_filter_traces_non_filter_items():
    for items in ([1], [None], [object()]):
        assert_same_outcome(
            lambda: T.Snapshot(FIXED_RAW, 1).filter_traces(items),
            lambda: H.Snapshot(FIXED_RAW, 1).filter_traces(items),
            convert=lambda s: s.traces._traces)


def test_filter_empty_frames_errors_like_stdlib():
    raw = [(0, 5, (), 0), (1, 6, (("a.py", 1),), 1)]
    for specs in ([("Filter", (True, "a.py"), {})],
                  [("Filter", (False, "a.py"), {})],
                  [("Filter", (True, "a.py"), {"all_frames": True})],
                  [("DomainFilter", (True, 1), {}),
                   ("Filter", (False, "a.py"), {})],
                  [("DomainFilter", (True, 0), {}),
                   ("Filter", (False, "a.py"), {})]):
        assert_same_outcome(lambda: filtered(T, raw, specs),
                            lambda: filtered(H, raw, specs), convert=list)


def test_filter_mutated_attributes_are_honoured():
    raw = list(FIXED_RAW)
    pairs = []
    for mod in (T, H):
        flt = mod.Filter(True, "a.py")
        flt.lineno = 1
        flt.all_frames = True
        flt.domain = 0
        flt.inclusive = False
        pairs.append(mod.Snapshot(raw, 1).filter_traces([flt]).traces._traces)
    assert pairs[0] == pairs[1]
    assert pairs[1] == [raw[2], raw[4], raw[5]]


def make_custom_filter(mod):
    class SizeFilter(mod.BaseFilter):
        def __init__(self, inclusive, min_size):
            super().__init__(inclusive)
            self.min_size = min_size

        def _match(self, trace):
            return (trace[1] >= self.min_size) == bool(self.inclusive)
    return SizeFilter


@pytest.mark.parametrize("seed", range(10))
def test_custom_base_filter_subclass(seed):
    rng = random.Random(seed)
    raw = random_raw(seed, n=150)
    specs = [random_filter_spec(rng) for _ in range(rng.randint(0, 3))]
    results = []
    for mod in (T, H):
        flts = [filter_spec_build(mod, s) for s in specs]
        flts.insert(rng.randint(0, len(flts)),
                    make_custom_filter(mod)(seed % 2 == 0, 512))
        results.append(mod.Snapshot(raw, 1).filter_traces(flts).traces._traces)
    assert results[0] == results[1]


def test_filter_subclass_overriding_match():
    class Everything(H.Filter):
        def _match(self, trace):
            return True

    raw = list(FIXED_RAW)
    assert H.Snapshot(raw, 1).filter_traces(
        [Everything(True, "no-such-file")]).traces._traces == raw
    assert H.Snapshot(raw, 1).filter_traces(
        [H.Filter(True, "no-such-file")]).traces._traces == []


def test_filter_stdlib_filters_on_heapscope_snapshot():
    # the raw trace format is the same, so stdlib filters work too
    raw = random_raw(8, n=100)
    specs = [("Filter", (True, "*.py"), {"lineno": 1}),
             ("DomainFilter", (False, 7), {})]
    got = H.Snapshot(raw, 1).filter_traces(
        [filter_spec_build(T, s) for s in specs]).traces._traces
    assert got == filtered(T, raw, specs)


@pytest.mark.parametrize("method", ["_match", "_match_traceback"])
def test_filter_private_match_methods(method):
    raw = random_raw(2, n=60)
    for spec in SINGLE_FILTERS[::3]:
        if spec[0] == "DomainFilter" and method != "_match":
            continue
        flt_t, flt_h = filter_spec_build(T, spec), filter_spec_build(H, spec)
        for trace in raw:
            arg = trace if method == "_match" else trace[2]
            assert (bool(getattr(flt_h, method)(arg))
                    == bool(getattr(flt_t, method)(arg))), (spec, trace)


def test_filter_large_snapshot_identity_cache():
    # many traces, few stacks, several domains: exercises the cached path;
    # equal-but-distinct stack tuples must be decided independently
    raw = random_raw(21, n=5000, share=True) + random_raw(21, n=500,
                                                          share=False)
    for specs in ([("Filter", (True, "*.py"), {"lineno": 2, "domain": 1})],
                  [("Filter", (False, "pkg/*"), {"all_frames": True}),
                   ("DomainFilter", (False, 0), {})],
                  [("DomainFilter", (True, 7), {})]):
        assert filtered(H, raw, specs) == filtered(T, raw, specs)


def test_filter_single_domain_snapshot():
    raw = random_raw(4, n=300, domains=(3,))
    for specs in ([("Filter", (True, "a.py"), {"domain": 3})],
                  [("Filter", (True, "a.py"), {"domain": 4})],
                  [("Filter", (False, "a.py"), {"domain": 4})],
                  [("DomainFilter", (False, 3), {}),
                   ("Filter", (True, "*"), {})]):
        assert filtered(H, raw, specs) == filtered(T, raw, specs)


# ---------------------------------------------------------------------------
# Real tracebacks captured by the stdlib tracemalloc
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stdlib_snapshot():
    if T.is_tracing():
        pytest.skip("stdlib tracemalloc already tracing")
    T.start(8)
    try:
        junk = [bytearray(100 + i) for i in range(200)]
        junk += [str(i) * 10 for i in range(300)]
        junk += [{"k%d" % i: i} for i in range(50)]
        snapshot = T.take_snapshot()
    finally:
        T.stop()
    del junk
    assert len(snapshot.traces) > 100
    return snapshot


def test_real_traces_statistics(stdlib_snapshot):
    raw = stdlib_snapshot.traces._traces
    snap = H.Snapshot(raw, stdlib_snapshot.traceback_limit)
    for key_type, cumulative in KEY_MODES:
        assert canon(snap.statistics(key_type, cumulative)) == \
            canon(stdlib_snapshot.statistics(key_type, cumulative))


def test_real_traces_filter_and_format(stdlib_snapshot):
    raw = stdlib_snapshot.traces._traces
    specs = [("Filter", (False, "<frozen importlib._bootstrap>"), {}),
             ("Filter", (False, "<unknown>"), {}),
             ("Filter", (True, __file__), {"all_frames": True})]
    got = filtered(H, raw, specs, stdlib_snapshot.traceback_limit)
    assert got and got == filtered(T, raw, specs,
                                   stdlib_snapshot.traceback_limit)
    for trace in raw[:50]:
        tb_t, tb_h = T.Trace(trace).traceback, H.Trace(trace).traceback
        assert tb_h.format() == tb_t.format()
        assert tb_h.format(2, most_recent_first=True) == \
            tb_t.format(2, most_recent_first=True)


def test_real_traces_compare_and_roundtrip(stdlib_snapshot, tmp_path):
    raw = stdlib_snapshot.traces._traces
    snap = H.Snapshot(raw, stdlib_snapshot.traceback_limit)
    path = tmp_path / "real.hsnap"
    snap.dump(path)
    loaded = H.Snapshot.load(path)
    assert loaded.traces._traces == raw
    assert loaded.traceback_limit == stdlib_snapshot.traceback_limit
    half = T.Snapshot(raw[::2], 8)
    assert canon(loaded.compare_to(H.Snapshot(raw[::2], 8), "lineno")) == \
        canon(stdlib_snapshot.compare_to(half, "lineno"))


# ---------------------------------------------------------------------------
# Module functions, against a fake native engine
# ---------------------------------------------------------------------------

class FakeNative:
    def __init__(self):
        self.calls = []
        self.tracing = False
        self.limit = 1
        self.traces = []
        self.object_frames = None

    def start(self, nframe, sampling="exact"):
        self.calls.append(("start", nframe))
        self.sampling = sampling
        if not self.tracing:
            self.tracing = True
            self.limit = nframe

    def stop(self):
        self.calls.append(("stop",))
        self.tracing = False

    def is_tracing(self):
        return self.tracing

    def clear_traces(self):
        self.calls.append(("clear_traces",))

    def get_traceback_limit(self):
        return self.limit

    def get_traced_memory(self):
        return types.SimpleNamespace(current=123, peak=456)  # as the engine's TracedMemory

    def reset_peak(self):
        self.calls.append(("reset_peak",))

    def get_tracemalloc_memory(self):
        return 789

    def get_traces(self):
        return self.traces

    def get_object_traceback(self, obj):
        return self.object_frames


@pytest.fixture
def fake(monkeypatch):
    engine = FakeNative()
    monkeypatch.setattr(H, "_native_module", engine)
    return engine


class Index:
    def __init__(self, value):
        self.value = value

    def __index__(self):
        return self.value


@pytest.mark.parametrize("nframe", [0, -1, 65536, 2 ** 31 - 1, 2 ** 31,
                                    -2 ** 31, -2 ** 31 - 1, 2 ** 100, False,
                                    Index(0), Index(2 ** 40)])
def test_start_invalid_int_like_stdlib(fake, nframe):
    if T.is_tracing():
        pytest.skip("stdlib tracemalloc already tracing")
    ok_t, err_t = outcome(T.start, nframe)
    if ok_t:                              # pragma: no cover - must not happen
        T.stop()
    ok_h, err_h = outcome(H.start, nframe)
    assert not ok_t and not ok_h
    assert err_h == err_t
    assert fake.calls == []


@pytest.mark.parametrize("nframe", [1.0, "1", None, 1.5, [1], b"1"])
def test_start_non_int_like_stdlib(fake, nframe):
    if T.is_tracing():
        pytest.skip("stdlib tracemalloc already tracing")
    ok_t, err_t = outcome(T.start, nframe)
    ok_h, err_h = outcome(H.start, nframe)
    assert not ok_t and not ok_h
    assert err_h[0] == err_t[0] == "TypeError"
    if sys.version_info >= (3, 10):    # 3.9's "i" converter words it differently
        assert err_h == err_t
    assert fake.calls == []


def test_start_range_message(fake):
    with pytest.raises(ValueError, match=r"^the number of frames must be in "
                                         r"range \[1; 65535\]$"):
        H.start(0)


@pytest.mark.parametrize("nframe, passed", [
    ((), 1), ((1,), 1), ((65535,), 65535), ((True,), 1), ((Index(25),), 25)])
def test_start_valid(fake, nframe, passed):
    H.start(*nframe)
    assert fake.calls == [("start", passed)]
    assert type(fake.calls[0][1]) is int
    assert H.is_tracing() is True
    assert H.get_traceback_limit() == passed


def test_start_keyword_rejected(fake):
    # both reject the keyword; the wording differs (builtin vs Python def)
    with pytest.raises(TypeError):
        T.start(nframe=2)
    with pytest.raises(TypeError):
        H.start(nframe=2)
    assert fake.calls == []


def test_start_validates_even_while_tracing(fake):
    H.start(3)
    with pytest.raises(ValueError):
        H.start(0)
    H.start(5)    # no-op in the engine, like the stdlib
    assert H.get_traceback_limit() == 3


def test_simple_functions_delegate(fake):
    assert H.is_tracing() is False
    assert H.get_traced_memory() == (123, 456)
    assert H.get_tracemalloc_memory() == 789
    H.clear_traces()
    H.reset_peak()
    H.stop()
    assert fake.calls == [("clear_traces",), ("reset_peak",), ("stop",)]


def test_take_snapshot_requires_tracing(fake):
    with pytest.raises(RuntimeError) as info:
        H.take_snapshot()
    assert str(info.value) == ("the tracemalloc module must be tracing "
                               "memory allocations to take a snapshot")
    if not T.is_tracing():
        assert_same_outcome(T.take_snapshot, H.take_snapshot, convert=repr)


def test_take_snapshot(fake):
    fake.traces = list(FIXED_RAW)
    H.start(9)
    snap = H.take_snapshot()
    assert type(snap) is H.Snapshot
    assert snap.traceback_limit == 9
    assert snap.traces._traces == list(FIXED_RAW)
    assert canon(snap.statistics("lineno")) == \
        canon(T.Snapshot(FIXED_RAW, 9).statistics("lineno"))
    assert H._get_traces() == list(FIXED_RAW)


def test_take_snapshot_goes_through_the_module_functions(monkeypatch):
    # As the stdlib's does (CPython's test_create_snapshot patches these): no
    # engine is tracing here, the patched functions alone make the snapshot.
    raw = list(FIXED_RAW)
    monkeypatch.setattr(H, "is_tracing", lambda: True)
    monkeypatch.setattr(H, "get_traceback_limit", lambda: 5)
    monkeypatch.setattr(H, "_get_traces", lambda: raw)
    snap = H.take_snapshot()
    assert snap.traceback_limit == 5 and snap.traces._traces == raw
    monkeypatch.setattr(H, "is_tracing", lambda: False)
    with pytest.raises(RuntimeError, match="must be tracing"):
        H.take_snapshot()


def test_format_reads_source_through_tracemalloc_linecache(monkeypatch):
    # The stdlib's module imports linecache, and tools patch
    # tracemalloc.linecache.getline to supply the source lines.
    import linecache
    assert H.linecache is linecache
    monkeypatch.setattr(H.linecache, "getline", lambda filename, lineno: "  line %d of %s  " % (lineno, filename))
    assert H.Traceback((("x.py", 3),)).format() == ['  File "x.py", line 3', "    line 3 of x.py"]


def test_get_object_traceback(fake):
    assert H.get_object_traceback(object()) is None
    fake.object_frames = (("b.py", 2), ("a.py", 1))
    tb = H.get_object_traceback(obj=object())
    assert type(tb) is H.Traceback
    assert tb.total_nframe is None
    assert canon(tb) == canon(T.Traceback(fake.object_frames))
    assert H._get_object_traceback(None) == fake.object_frames


def test_module_works_without_native_engine(tmp_path):
    # heapscope._heapscope made unimportable (and the package __init__, which
    # is not ours, bypassed): heapscope.tracemalloc and its classes still
    # work, and only the tracing functions fail (with ImportError)
    import subprocess
    package_dir = os.path.dirname(os.path.abspath(H.__file__))
    code = "\n".join([
        "import sys, types",
        "pkg = types.ModuleType('heapscope')",
        "pkg.__path__ = [%r]" % package_dir,
        "sys.modules['heapscope'] = pkg",
        "sys.modules['heapscope._heapscope'] = None",
        "import heapscope.tracemalloc as H",
        "s = H.Snapshot([(0, 8, (('a.py', 1),), 1)], 1)",
        "assert str(s.statistics('lineno')[0]).startswith('a.py:1: size=8 B')",
        "s.dump(sys.argv[1]); assert H.Snapshot.load(sys.argv[1]).traces[0].size == 8",
        "try:",
        "    H.is_tracing()",
        "except ImportError:",
        "    print('import-error')",
    ])
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "s")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "import-error"


# ---------------------------------------------------------------------------
# dump / load
# ---------------------------------------------------------------------------

def roundtrip(tmp_path, raw, limit, name="snap.hsnap"):
    path = tmp_path / name
    H.Snapshot(raw, limit).dump(str(path))
    return path, H.Snapshot.load(str(path))


@pytest.mark.parametrize("seed", range(8))
def test_roundtrip_random(tmp_path, seed):
    raw = random_raw(seed, n=400, share=bool(seed % 2))
    path, loaded = roundtrip(tmp_path, raw, 17)
    assert type(loaded) is H.Snapshot
    assert loaded.traces._traces == raw
    assert [type(t) for t in loaded.traces._traces] == [tuple] * len(raw)
    assert loaded.traceback_limit == 17
    for key_type, cumulative in KEY_MODES:
        assert canon(loaded.statistics(key_type, cumulative)) == \
            canon(T.Snapshot(raw, 17).statistics(key_type, cumulative))


def test_roundtrip_edge_values(tmp_path):
    weird = "\udcff\ud800\udc00 \u00e9\U0001f600\x00\n\"'.py"
    raw = [
        (0, 0, (("", 0),), None),
        (2 ** 32 - 1, 2 ** 63 - 1, ((weird, -1), ("a.py", 2 ** 31)), 0),
        (-5, -7, (("a.py", 1),), -(2 ** 63) + 1),
        (1, 1, (), 65535),
        (0, 10, (("a.py", 1), ("a.py", 1), ("a.py", 1)), 3),
        (0, 10, (("a.py", 1),), None),
    ]
    for limit in (1, 0, -3, 65535, 2 ** 62, None):
        _, loaded = roundtrip(tmp_path, raw, limit)
        assert loaded.traces._traces == raw
        assert loaded.traceback_limit == limit
        assert [t[3] for t in loaded.traces._traces] == [t[3] for t in raw]


def test_roundtrip_empty(tmp_path):
    _, loaded = roundtrip(tmp_path, [], 1)
    assert loaded.traces._traces == [] and loaded.traceback_limit == 1


def test_roundtrip_shares_identical_stacks(tmp_path):
    stack = (("a.py", 1), ("b.py", 2))
    raw = [(0, i, tuple(list(stack)), 2) for i in range(50)]
    _, loaded = roundtrip(tmp_path, raw, 1)
    frames = {id(t[2]) for t in loaded.traces._traces}
    assert len(frames) == 1


def test_dump_deduplicates(tmp_path):
    stack = tuple(("/some/long/path/module_%d.py" % i, i) for i in range(30))
    small, _ = roundtrip(tmp_path, [(0, 1, stack, 30)], 30, "one.hsnap")
    big, loaded = roundtrip(tmp_path, [(0, 1, stack, 30)] * 20000, 30,
                            "many.hsnap")
    assert len(loaded.traces) == 20000
    # 20000 traces cost a few bytes each, not another copy of the stack
    assert os.path.getsize(big) - os.path.getsize(small) < 20000 * 4


def test_dump_accepts_pathlike_and_str(tmp_path):
    raw = list(FIXED_RAW)
    H.Snapshot(raw, 2).dump(tmp_path / "p.hsnap")
    assert H.Snapshot.load(tmp_path / "p.hsnap").traces._traces == raw
    H.Snapshot(raw, 2).dump(str(tmp_path / "s.hsnap"))
    assert H.Snapshot.load(str(tmp_path / "s.hsnap")).traces._traces == raw
    assert H.Snapshot(raw, 2).load(tmp_path / "p.hsnap").traceback_limit == 2


PLAIN_ATTRIBUTES = {
    "test_attr": "new",
    "nothing": None, "yes": True, "no": False,
    "small": -7, "huge": -(2 ** 200), "zero": 0, "ratio": 0.25, "nan_free": float("inf"),
    "text": "\u00fcn\u00ef \udcff", "blob": b"\x00\xff", "empty": "",
    "nested": {"k": [1, (2.5, b"x", None)], 3: {"deep": ((),)}, (1, "a"): [], None: True},
    "items": [[], {}, ()],
}


def test_dump_keeps_plain_data_attributes(tmp_path):
    # The stdlib pickles the whole snapshot, so attributes set on it survive
    # dump/load (CPython's test_snapshot_save_attr); heapscope stores plain
    # data in its own format.
    snap = H.Snapshot(list(FIXED_RAW), 3)
    vars(snap).update(PLAIN_ATTRIBUTES)
    snap.dump(tmp_path / "attrs.hsnap")
    loaded = H.Snapshot.load(tmp_path / "attrs.hsnap")
    assert loaded.traces._traces == list(FIXED_RAW) and loaded.traceback_limit == 3
    extra = {name: value for name, value in vars(loaded).items() if name not in ("traces", "traceback_limit")}
    assert extra == PLAIN_ATTRIBUTES
    assert list(extra) == list(PLAIN_ATTRIBUTES)       # in their order
    assert repr(extra) == repr(PLAIN_ATTRIBUTES)        # types too: tuples stay tuples, True stays True
    data = (tmp_path / "attrs.hsnap").read_bytes()
    assert struct.unpack_from("<HH", data, 19) == (3, 4)   # version 3, attributes flag


def test_dump_without_attributes_stays_version_1(tmp_path):
    # Files without attributes stay readable by heapscope versions before 3.
    H.Snapshot(list(FIXED_RAW), 3).dump(tmp_path / "plain.hsnap")
    assert struct.unpack_from("<HH", (tmp_path / "plain.hsnap").read_bytes(), 19) == (1, 0)


def test_sampled_snapshot_with_attributes(tmp_path):
    raw = [(0, 640, (("a.py", 1),), 1, 10), (0, 64, (("b.py", 2),), 1, 1)]
    snap = H.Snapshot(raw, 1)
    snap.label = "sampled"
    snap.dump(tmp_path / "s.hsnap")
    loaded = H.Snapshot.load(tmp_path / "s.hsnap")
    assert loaded.traces._traces == raw and loaded.label == "sampled"
    assert struct.unpack_from("<HH", (tmp_path / "s.hsnap").read_bytes(), 19) == (3, 6)


class _Custom:
    pass


@pytest.mark.parametrize("value, where, type_name", [
    ({1, 2}, "'bad'", "set"),
    (_Custom(), "'bad'", "_Custom"),
    ([1, (2, frozenset())], "'bad'[1][1]", "frozenset"),
    ({"x": {"y": bytearray(b"z")}}, "'bad'['x']['y']", "bytearray"),
    ({_Custom(): 1}, "'bad' (a key)", "_Custom"),
    (inspect.Parameter.POSITIONAL_ONLY, "'bad'", "_ParameterKind"),   # an IntEnum is no plain int
    (range(3), "'bad'", "range"),
])
def test_dump_refuses_other_attribute_types(tmp_path, value, where, type_name):
    snap = H.Snapshot(list(FIXED_RAW), 3)
    snap.good = 1
    snap.bad = value
    with pytest.raises(TypeError) as info:
        snap.dump(tmp_path / "bad.hsnap")
    message = str(info.value)
    assert "attribute %s is a %s" % (where, type_name) in message, message
    assert "None, bool, int, float, str, bytes" in message
    assert not (tmp_path / "bad.hsnap").exists()


def test_dump_refuses_a_container_holding_itself(tmp_path):
    snap = H.Snapshot([], 1)
    snap.loop = []
    snap.loop.append(snap.loop)
    with pytest.raises(ValueError, match="'loop'.*more than 100 deep"):
        snap.dump(tmp_path / "loop.hsnap")
    assert not (tmp_path / "loop.hsnap").exists()


def _with_attribute_block(block, flags=4, version=3):
    """A version 3 file of GOOD_PARTS whose attributes block is *block*."""
    data = build_file(**GOOD_PARTS)
    body = struct.pack("<Q", len(block)) + block + zlib.decompress(data[87:])
    header = bytearray(data[:83])
    struct.pack_into("<HH", header, 19, version, flags)
    struct.pack_into("<QI", header, 71, len(body), zlib.crc32(body))
    header = bytes(header)
    return header + struct.pack("<I", zlib.crc32(header)) + zlib.compress(body)


def test_attribute_block_as_documented_loads(tmp_path):
    block = (struct.pack("<I", 2) + struct.pack("<I", 1) + b"a" + b"l" + struct.pack("<I", 3)
             + b"N" + b"i" + struct.pack("<I", 2) + (-300).to_bytes(2, "little", signed=True)
             + b"s" + struct.pack("<I", 2) + b"hi"
             + struct.pack("<I", 1) + b"b" + b"d" + struct.pack("<I", 1) + b"T" + b"f" + struct.pack("<d", 1.5))
    path = tmp_path / "doc.hsnap"
    path.write_bytes(_with_attribute_block(block))
    loaded = H.Snapshot.load(path)
    assert (loaded.a, loaded.b) == ([None, -300, "hi"], {True: 1.5})
    assert len(loaded.traces) == len(GOOD_PARTS["traces"])


@pytest.mark.parametrize("block", [
    b"",                                                       # no count
    struct.pack("<I", 1),                                      # count, no attribute
    struct.pack("<I", 1) + struct.pack("<I", 1) + b"a" + b"?",                 # unknown tag
    struct.pack("<I", 1) + struct.pack("<I", 1) + b"a" + b"N" + b"N",          # trailing bytes
    struct.pack("<I", 1) + struct.pack("<I", 1) + b"a" + b"s" + struct.pack("<I", 9) + b"x",
    struct.pack("<I", 1) + struct.pack("<I", 1) + b"a" + b"s" + struct.pack("<I", 1) + b"\xff",
    struct.pack("<I", 1) + struct.pack("<I", 1) + b"a" + b"l" + struct.pack("<I", 2 ** 31),
    struct.pack("<I", 1) + struct.pack("<I", 1) + b"a" + b"d" + struct.pack("<I", 1)
    + b"l" + struct.pack("<I", 0) + b"N",                                        # unhashable key
    struct.pack("<I", 1) + struct.pack("<I", 1) + b"a" + (b"l" + struct.pack("<I", 1)) * 150 + b"N",
])
def test_load_bad_attribute_block(tmp_path, block):
    path = tmp_path / "attrs.hsnap"
    path.write_bytes(_with_attribute_block(block))
    assert_load_fails(path, "corrupted", "attributes")


def test_load_attribute_size_past_the_body(tmp_path):
    data = bytearray(_with_attribute_block(struct.pack("<I", 0)))
    body = bytearray(zlib.decompress(bytes(data[87:])))
    struct.pack_into("<Q", body, 0, 2 ** 40)
    header = bytearray(data[:83])
    struct.pack_into("<I", header, 79, zlib.crc32(body))
    header = bytes(header)
    path = tmp_path / "size.hsnap"
    path.write_bytes(header + struct.pack("<I", zlib.crc32(header)) + zlib.compress(bytes(body)))
    assert_load_fails(path, "corrupted", "attributes")


def test_load_subclass(tmp_path):
    class MySnapshot(H.Snapshot):
        pass
    H.Snapshot(list(FIXED_RAW), 2).dump(tmp_path / "x")
    assert type(MySnapshot.load(tmp_path / "x")) is MySnapshot


def test_file_layout_matches_docs(tmp_path):
    path, _ = roundtrip(tmp_path, list(FIXED_RAW), 5)
    data = path.read_bytes()
    assert data.startswith(b"HEAPSCOPE-SNAPSHOT\n")
    assert not data.startswith(b"\x80")        # not a pickle
    version, flags, limit = struct.unpack_from("<HHq", data, 19)
    counts = struct.unpack_from("<6Q", data, 31)
    body_crc, header_crc = struct.unpack_from("<II", data, 79)
    assert (version, flags, limit) == (1, 0, 5)
    assert header_crc == zlib.crc32(data[:83])
    body = zlib.decompress(data[87:])
    assert len(body) == counts[5]
    assert zlib.crc32(body) == body_crc
    n_strings, n_frames, n_tracebacks, n_refs, n_traces, _ = counts
    assert n_traces == len(FIXED_RAW)
    assert n_strings == len({f[0] for t in FIXED_RAW for f in t[2]})
    assert n_frames == len({f for t in FIXED_RAW for f in t[2]})
    assert n_tracebacks == len({t[2] for t in FIXED_RAW})
    assert n_refs == sum(len(tb) for tb in {t[2] for t in FIXED_RAW})
    # the trace columns are at the end: domain, size, traceback, nframe
    tail = body[len(body) - 28 * n_traces:]
    domains = struct.unpack_from("<%dq" % n_traces, tail)
    sizes = struct.unpack_from("<%dq" % n_traces, tail, 8 * n_traces)
    nframes = struct.unpack_from("<%dq" % n_traces, tail, 20 * n_traces)
    assert list(domains) == [t[0] for t in FIXED_RAW]
    assert list(sizes) == [t[1] for t in FIXED_RAW]
    assert [None if n == -2 ** 63 else n for n in nframes] == \
        [t[3] for t in FIXED_RAW]


def test_writer_docstring_documents_layout():
    doc = _snapshot_file.write_snapshot.__doc__
    for word in ("magic", "version", "traceback_limit", "string_data",
                 "tb_frames", "trace_nframe", "header_crc32", "zlib"):
        assert word in doc


@pytest.mark.parametrize("raw, exc", [
    ([(0, 1, (("a.py", 1),))], TypeError),                       # 3 fields
    ([(0, 1, (("a.py", 1),), 1, 5)], TypeError),                 # 5 fields
    ([(0, 1.5, (("a.py", 1),), 1)], TypeError),                  # float size
    ([(0, 2 ** 64, (("a.py", 1),), 1)], ValueError),             # too big
    ([("0", 1, (("a.py", 1),), 1)], TypeError),                  # str domain
    ([(0, 1, [("a.py", 1)], 1)], TypeError),                     # list frames
    ([(0, 1, (["a.py", 1],), 1)], TypeError),                    # list frame
    ([(0, 1, ((b"a.py", 1),), 1)], TypeError),                   # bytes name
    ([(0, 1, (("a.py", 1, 2),), 1)], TypeError),                 # 3-tuple frame
    ([(0, 1, (("a.py", "1"),), 1)], TypeError),                  # str lineno
    ([(0, 1, (("a.py", 2 ** 70),), 1)], TypeError),              # huge lineno
    ([(0, 1, (("a.py", 1),), -(2 ** 63))], ValueError),          # sentinel
    ([(0, 1, (("a.py", 1),), 1.0)], TypeError),                  # float nframe
    ([5], TypeError),                                            # not a tuple
])
def test_dump_rejects_bad_traces(tmp_path, raw, exc):
    path = tmp_path / "bad.hsnap"
    good = [(0, 1, (("ok.py", 1),), 1)] * 3
    with pytest.raises(exc) as info:
        H.Snapshot(good + raw, 1).dump(path)
    assert "cannot dump snapshot" in str(info.value)
    assert not path.exists()


@pytest.mark.parametrize("limit, exc", [("5", TypeError), (1.5, TypeError),
                                        (2 ** 64, ValueError)])
def test_dump_rejects_bad_limit(tmp_path, limit, exc):
    with pytest.raises(exc):
        H.Snapshot([], limit).dump(tmp_path / "bad.hsnap")
    assert not (tmp_path / "bad.hsnap").exists()


def test_dump_overwrites(tmp_path):
    path = tmp_path / "x.hsnap"
    path.write_bytes(b"old content" * 1000)
    H.Snapshot(list(FIXED_RAW), 1).dump(path)
    assert H.Snapshot.load(path).traces._traces == list(FIXED_RAW)


# --- bad files --------------------------------------------------------------

def assert_load_fails(path, *words):
    with pytest.raises(H.SnapshotFileError) as info:
        H.Snapshot.load(path)
    message = str(info.value)
    assert str(path) in message
    for word in words:
        assert word in message, message
    assert info.value.filename == str(path)
    assert isinstance(info.value, ValueError)
    return info.value


@pytest.fixture
def good_file(tmp_path):
    raw = random_raw(99, n=40, max_depth=4)
    path, _ = roundtrip(tmp_path, raw, 4, "good.hsnap")
    return path, path.read_bytes(), raw


def test_load_empty_file(tmp_path):
    path = tmp_path / "empty.hsnap"
    path.write_bytes(b"")
    assert_load_fails(path, "empty")


@pytest.mark.parametrize("content", [
    b"hello world\n", b"\x00" * 200, b"HEAPSCOPE-SNAPSHOX\n" + b"\x00" * 100,
    b"heapscope-snapshot\n" + b"\x00" * 100, b"PK\x03\x04" + b"\x00" * 100,
    "\u00e9\u00e8".encode("utf-16"),
])
def test_load_foreign_file(tmp_path, content):
    path = tmp_path / "foreign.bin"
    path.write_bytes(content)
    assert_load_fails(path, "not a heapscope snapshot")


def test_load_stdlib_pickle_is_refused_without_running_it(tmp_path):
    path = tmp_path / "stdlib.pickle"
    T.Snapshot(list(FIXED_RAW), 3).dump(str(path))
    assert_load_fails(path, "not a heapscope snapshot", "pickle")

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))
    evil = tmp_path / "evil.pickle"
    evil.write_bytes(pickle.dumps(Evil(), protocol=pickle.HIGHEST_PROTOCOL))
    assert_load_fails(evil, "pickle")
    assert not marker.exists()


def test_load_missing_file_is_oserror(tmp_path):
    with pytest.raises(FileNotFoundError):
        H.Snapshot.load(tmp_path / "nope.hsnap")


def test_load_truncated_at_every_offset(good_file, tmp_path):
    path, data, _ = good_file
    bad = tmp_path / "truncated.hsnap"
    for size in range(len(data)):
        bad.write_bytes(data[:size])
        err = assert_load_fails(bad)
        if size == 0:
            assert "empty" in err.problem
        else:
            assert "truncated" in err.problem, (size, err.problem)


def test_load_trailing_garbage(good_file, tmp_path):
    path, data, _ = good_file
    bad = tmp_path / "trailing.hsnap"
    for extra in (b"\x00", b"garbage", data):
        bad.write_bytes(data + extra)
        assert_load_fails(bad, "corrupted")


def test_load_every_byte_flipped(good_file, tmp_path):
    path, data, _ = good_file
    bad = tmp_path / "flipped.hsnap"
    for offset in range(len(data)):
        corrupted = bytearray(data)
        corrupted[offset] ^= 0xFF
        bad.write_bytes(bytes(corrupted))
        assert_load_fails(bad)


def test_load_every_bit_flipped_never_misreads(good_file, tmp_path):
    # Any single-bit flip is reported, except a few inside the deflate stream
    # that decode to the very same body (deflate has redundant bits; the
    # adler32 and body CRC prove the data is intact): never wrong data.
    path, data, raw = good_file
    bad = tmp_path / "bit.hsnap"
    harmless = []
    for offset in range(len(data)):
        for bit in range(8):
            corrupted = bytearray(data)
            corrupted[offset] ^= 1 << bit
            bad.write_bytes(bytes(corrupted))
            try:
                loaded = H.Snapshot.load(bad)
            except H.SnapshotFileError:
                continue
            assert loaded.traces._traces == raw
            assert loaded.traceback_limit == 4
            harmless.append(offset)
    header_size = 87
    assert all(offset >= header_size + 2 for offset in harmless)
    assert len(harmless) < len(data)      # nearly all flips are detected


def patch_header(data, version=None, flags=None, limit=None):
    data = bytearray(data)
    if version is not None:
        struct.pack_into("<H", data, 19, version)
    if flags is not None:
        struct.pack_into("<H", data, 21, flags)
    if limit is not None:
        struct.pack_into("<q", data, 23, limit)
    struct.pack_into("<I", data, 83, zlib.crc32(bytes(data[:83])))
    return bytes(data)


@pytest.mark.parametrize("fix_crc", [True, False])
def test_load_newer_version(good_file, tmp_path, fix_crc):
    path, data, _ = good_file
    bad = tmp_path / "v2.hsnap"
    for version in (4, 5, 0xFFFF):
        new = patch_header(data, version=version) if fix_crc else \
            data[:19] + struct.pack("<H", version) + data[21:]
        bad.write_bytes(new)
        err = assert_load_fails(bad, "newer", "version %d" % version)
        assert "upgrade heapscope" in err.problem
    # even a bare newer header (the rest of the layout may have changed)
    bad.write_bytes(data[:19] + struct.pack("<H", 3))
    assert_load_fails(bad, "newer")


def test_load_version_zero(good_file, tmp_path):
    path, data, _ = good_file
    bad = tmp_path / "v0.hsnap"
    bad.write_bytes(patch_header(data, version=0))
    assert_load_fails(bad, "corrupted", "version 0")


def test_load_unknown_flags(good_file, tmp_path):
    path, data, _ = good_file
    bad = tmp_path / "flags.hsnap"
    bad.write_bytes(patch_header(data, flags=0x8))
    assert_load_fails(bad, "corrupted", "flags")


def test_load_header_crc_catches_limit_change(good_file, tmp_path):
    path, data, _ = good_file
    corrupted = bytearray(data)
    struct.pack_into("<q", corrupted, 23, 5)
    bad = tmp_path / "limit.hsnap"
    bad.write_bytes(bytes(corrupted))
    assert_load_fails(bad, "corrupted", "checksum")
    bad.write_bytes(patch_header(data, limit=5))      # a valid edit loads
    assert H.Snapshot.load(bad).traceback_limit == 5


def build_file(strings, frames, tracebacks, traces, limit=1, flags=0,
               version=1, counts=None, body_size=None, body_suffix=b"",
               stream_suffix=b"", string_bytes=None):
    """Independent writer following the documented layout, with knobs to
    produce files whose checksums are valid but whose content is not."""
    if string_bytes is None:
        string_bytes = [s.encode("utf-8", "surrogatepass") for s in strings]
    body = b"".join([
        struct.pack("<%dI" % len(string_bytes), *map(len, string_bytes)),
        b"".join(string_bytes),
        struct.pack("<%dI" % len(frames), *[f[0] for f in frames]),
        struct.pack("<%dq" % len(frames), *[f[1] for f in frames]),
        struct.pack("<%dI" % len(tracebacks), *map(len, tracebacks)),
        struct.pack("<%dI" % sum(map(len, tracebacks)),
                    *[i for tb in tracebacks for i in tb]),
        struct.pack("<%dq" % len(traces), *[t[0] for t in traces]),
        struct.pack("<%dq" % len(traces), *[t[1] for t in traces]),
        struct.pack("<%dI" % len(traces), *[t[2] for t in traces]),
        struct.pack("<%dq" % len(traces),
                    *[-2 ** 63 if t[3] is None else t[3] for t in traces]),
    ]) + body_suffix
    if counts is None:
        counts = (len(string_bytes), len(frames), len(tracebacks),
                  sum(map(len, tracebacks)), len(traces))
    if body_size is None:
        body_size = len(body)
    header = (b"HEAPSCOPE-SNAPSHOT\n"
              + struct.pack("<HHq6QI", version, flags, limit, *counts,
                            body_size, zlib.crc32(body)))
    return (header + struct.pack("<I", zlib.crc32(header))
            + zlib.compress(body) + stream_suffix)


GOOD_PARTS = dict(
    strings=["a.py", "b.py"],
    frames=[(0, 1), (1, 2), (0, 3)],
    tracebacks=[(0,), (1, 0), (2, 2, 1)],
    traces=[(0, 10, 1, 2), (1, 20, 0, None), (0, 5, 2, 3), (0, 6, 1, 9)],
)


def test_independent_writer_file_loads(tmp_path):
    path = tmp_path / "indep.hsnap"
    path.write_bytes(build_file(limit=7, **GOOD_PARTS))
    snap = H.Snapshot.load(path)
    a1, b2, a3 = ("a.py", 1), ("b.py", 2), ("a.py", 3)
    assert snap.traces._traces == [
        (0, 10, (b2, a1), 2), (1, 20, (a1,), None), (0, 5, (a3, a3, b2), 3),
        (0, 6, (b2, a1), 9)]
    assert snap.traceback_limit == 7
    path.write_bytes(build_file(limit=0, flags=1, **GOOD_PARTS))
    assert H.Snapshot.load(path).traceback_limit is None


def _parts(**changes):
    parts = dict(GOOD_PARTS)
    parts.update(changes)
    return parts


@pytest.mark.parametrize("kwargs, words", [
    (_parts(frames=[(2, 1), (1, 2), (0, 3)]), ["missing filename"]),
    (_parts(tracebacks=[(0,), (1, 3), (2,)]), ["missing frame"]),
    (_parts(traces=[(0, 1, 3, 1)]), ["missing traceback"]),
    (_parts(string_bytes=[b"a.py", b"\xff\xfe"]), ["UTF-8"]),
    (_parts(string_bytes=[b"a.py", b"\xed\xa0"]), ["UTF-8"]),
    (dict(GOOD_PARTS, counts=(2, 3, 3, 5, 4)), ["corrupted"]),     # n_refs
    (dict(GOOD_PARTS, counts=(3, 3, 3, 6, 4)), ["corrupted"]),     # n_strings
    (dict(GOOD_PARTS, counts=(2, 3, 3, 6, 2 ** 60)), ["corrupted"]),
    (dict(GOOD_PARTS, body_size=10), ["corrupted"]),
    (dict(GOOD_PARTS, body_size=2 ** 63), ["corrupted"]),
    (dict(GOOD_PARTS, body_suffix=b"\x00" * 4), ["corrupted"]),
    (dict(GOOD_PARTS, stream_suffix=b"\x00"), ["corrupted"]),
    (dict(GOOD_PARTS, flags=8), ["flags"]),
    (dict(GOOD_PARTS, flags=4), ["attributes", "version 1"]),
    (dict(GOOD_PARTS, flags=4, version=2), ["attributes", "version 2"]),
    (dict(GOOD_PARTS, flags=2), ["count column", "version 1"]),
])
def test_load_inconsistent_content(tmp_path, kwargs, words):
    path = tmp_path / "crafted.hsnap"
    path.write_bytes(build_file(**kwargs))
    assert_load_fails(path, "corrupted", *words)


def test_load_body_size_larger_than_stream(tmp_path):
    data = build_file(**GOOD_PARTS)
    header = bytearray(data[:83])
    size, = struct.unpack_from("<Q", header, 71)
    struct.pack_into("<Q", header, 71, size + 100)
    header = bytes(header)
    path = tmp_path / "short.hsnap"
    path.write_bytes(header + struct.pack("<I", zlib.crc32(header)) + data[87:])
    assert_load_fails(path, "corrupted")


def test_load_random_garbage_never_leaks(tmp_path):
    rng = random.Random(7)
    path = tmp_path / "garbage.hsnap"
    prefix = build_file(**GOOD_PARTS)[:87]
    for _ in range(200):
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 80)))
        path.write_bytes(prefix + body)
        assert_load_fails(path)


def test_snapshot_file_error_pickles():
    err = H.SnapshotFileError("/x/y.hsnap", "file is truncated")
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is H.SnapshotFileError
    assert str(again) == str(err)
    assert again.filename == "/x/y.hsnap" and again.problem == \
        "file is truncated"
    assert "/x/y.hsnap" in str(err) and "truncated" in str(err)


# ---------------------------------------------------------------------------
# End to end (native engine): smoke only; ground truth lives elsewhere
# ---------------------------------------------------------------------------

def test_end_to_end_smoke(tmp_path):
    pytest.importorskip("heapscope._heapscope")
    if H.is_tracing():
        pytest.skip("heapscope already tracing")
    H.start(5)
    try:
        assert H.is_tracing()
        assert H.get_traceback_limit() == 5
        keep = [bytearray(1000) for _ in range(100)]
        snap = H.take_snapshot()
        tb = H.get_object_traceback(keep[0])
    finally:
        H.stop()
    assert not H.is_tracing()
    assert type(snap) is H.Snapshot and snap.traceback_limit == 5
    assert tb is None or type(tb) is H.Traceback
    stats = snap.statistics("lineno")
    assert canon(stats) == canon(T.Snapshot(snap.traces._traces,
                                            5).statistics("lineno"))
    snap.dump(tmp_path / "e2e.hsnap")
    assert H.Snapshot.load(tmp_path / "e2e.hsnap").traces._traces == \
        list(snap.traces._traces)
    gc.collect()


def test_load_refuses_an_endless_file_at_once():
    # /dev/zero is not a snapshot; the reader must say so from its header,
    # without reading the (endless) rest.
    from heapscope.tracemalloc import Snapshot, SnapshotFileError

    with pytest.raises(SnapshotFileError, match="not a heapscope snapshot"):
        Snapshot.load("/dev/zero")


def test_snapshot_classes_import_without_the_engine(tmp_path):
    # Analysing dump files must not need the compiled extension.
    import subprocess
    import sys as _sys

    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'heapscope._heapscope': raise ImportError('blocked')\n"
            "sys.meta_path.insert(0, Block())\n"
            "import heapscope.tracemalloc as tm\n"
            "s = tm.Snapshot([(0, 10, (('a.py', 1),), 1)], 1)\n"
            "print(s.statistics('lineno')[0].size)\n")
    result = subprocess.run([_sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(_sys.path)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "10"
