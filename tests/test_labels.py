"""heapscope.label and heapscope_label_push/pop: a named frame at the root of
every stack allocated under a label, on that thread only, in captures and in
every report and export made from them. Ground truth: blocks of distinct
known sizes made by the hs_alloc extension at known lines."""

import gzip
import json
import shutil
import subprocess
import sys
import sysconfig

import pytest

import heapscope
from heapscope import FileFormat, FileReader
from capture_helpers import build_extension, run_script, write_script

LABEL_FILE = "<label>"


def label_frame(name):
    return (f"[label] {name}", LABEL_FILE, 0)


@pytest.fixture(scope="module")
def extension_dir(tmp_path_factory):
    return build_extension(str(tmp_path_factory.mktemp("labels_ext")))


def sizes_by_root(records):
    """{(label frames, outermost first): {size: count}} of the peak's records."""
    found = {}
    for record in records:
        stack = list(reversed(record.stack_trace()))  # outermost first
        labels = tuple(frame[0] for frame in stack if frame[1] == LABEL_FILE)
        assert all(frame[1] == LABEL_FILE for frame in stack[:len(labels)]), f"labels not at the root: {stack}"
        sizes = found.setdefault(labels, {})
        sizes[record.size] = sizes.get(record.size, 0) + record.n_allocations
    return found


LABELS_SCRIPT = """
import sys
import threading
import hs_alloc
import heapscope
from heapscope import Tracker, FileFormat

hs_alloc.malloc(255, 16); hs_alloc.free(255)  # warm-up

@heapscope.label("decorated")
def decorated():
    hs_alloc.malloc(4, 400_004)

@heapscope.label("gen")
def generator():
    hs_alloc.malloc(5, 500_005)      # in the body: labelled
    yield
    hs_alloc.malloc(6, 600_006)      # in the body again
    yield

def other_thread(started, release):
    hs_alloc.malloc(7, 700_007)      # another thread: never labelled
    started.set()
    release.wait()

with Tracker(sys.argv[1], file_format=FileFormat[sys.argv[2]], native_traces=sys.argv[3] == "native"):
    hs_alloc.malloc(0, 100_001)                  # no label
    with heapscope.label("outer"):
        hs_alloc.malloc(1, 200_002)
        started, release = threading.Event(), threading.Event()
        thread = threading.Thread(target=other_thread, args=(started, release))
        thread.start()
        started.wait()
        with heapscope.label("inner"):
            hs_alloc.malloc(2, 300_003)
        hs_alloc.malloc(3, 110_011)              # outer again
        release.set()
        thread.join()
    decorated()
    steps = generator()
    next(steps)
    hs_alloc.malloc(8, 800_008)                  # the consumer, between steps: no label
    next(steps)
    print(heapscope._heapscope.label_depth())
"""

EXPECTED = {
    (): {100_001: 1, 700_007: 1, 800_008: 1},
    ("[label] outer",): {200_002: 1, 110_011: 1},
    ("[label] outer", "[label] inner"): {300_003: 1},
    ("[label] decorated",): {400_004: 1},
    ("[label] gen",): {500_005: 1, 600_006: 1},
}


@pytest.mark.parametrize("file_format,native", [("ALL_ALLOCATIONS", "python"),
                                                 ("AGGREGATED_ALLOCATIONS", "python"),
                                                 ("ALL_ALLOCATIONS", "native")])
def test_labels_root_the_stacks_of_their_thread(extension_dir, tmp_path, file_format, native):
    script = tmp_path / "labels.py"
    write_script(script, LABELS_SCRIPT)
    capture = tmp_path / "labels.bin"
    result = run_script(script, capture, file_format, native, extra_paths=[extension_dir])
    assert result.stdout.split() == ["0"]  # every label popped
    with FileReader(capture) as reader:
        known = {size for sizes in EXPECTED.values() for size in sizes}
        records = [r for r in reader.get_high_watermark_allocation_records() if r.size in known]
        found = sizes_by_root(records)
        assert found == EXPECTED
        if native == "native":
            hybrid = [list(reversed(r.hybrid_stack_trace())) for r in records if r.size == 300_003]
            assert [frame[0] for frame in hybrid[0][:2]] == ["[label] outer", "[label] inner"]


def test_label_arguments_are_checked():
    with pytest.raises(TypeError):
        heapscope.label(b"bytes")
    with pytest.raises(ValueError):
        heapscope.label("")
    with pytest.raises(ValueError):
        heapscope.label("x" * 4097)
    with pytest.raises(ValueError, match="no label is pushed"):
        heapscope._heapscope.label_pop()


COROUTINES_SCRIPT = """
import asyncio
import sys
import hs_alloc
import heapscope
from heapscope import Tracker

hs_alloc.malloc(255, 16); hs_alloc.free(255)

@heapscope.label("task-a")
async def task_a(gate_a, gate_b):
    hs_alloc.malloc(1, 111_111)
    gate_b.set()
    await gate_a.wait()       # task_b runs meanwhile: not under task-a
    hs_alloc.malloc(2, 222_222)

@heapscope.label("task-b")
async def task_b(gate_a, gate_b):
    await gate_b.wait()
    hs_alloc.malloc(3, 333_333)
    gate_a.set()

async def main():
    gate_a, gate_b = asyncio.Event(), asyncio.Event()
    await asyncio.gather(task_a(gate_a, gate_b), task_b(gate_a, gate_b))
    hs_alloc.malloc(4, 444_444)

@heapscope.label("agen")
async def numbers():
    hs_alloc.malloc(5, 555_555)
    yield 1
    hs_alloc.malloc(6, 666_666)
    yield 2

async def consume():
    async for _ in numbers():
        hs_alloc.malloc(7 + _, 777_777 + _)   # the consumer: not labelled

with Tracker(sys.argv[1]):
    asyncio.run(main())
    asyncio.run(consume())
print(heapscope._heapscope.label_depth())
"""


def test_coroutines_are_labelled_only_while_they_run(extension_dir, tmp_path):
    script = tmp_path / "coroutines.py"
    write_script(script, COROUTINES_SCRIPT)
    capture = tmp_path / "coroutines.bin"
    result = run_script(script, capture, extra_paths=[extension_dir])
    assert result.stdout.split() == ["0"]
    with FileReader(capture) as reader:
        # Only the script's blocks: the event loop makes large blocks of its own (3.9: a 256 KiB one).
        found = sizes_by_root(r for r in reader.get_high_watermark_allocation_records()
                              if r.size in (111_111, 222_222, 333_333, 444_444, 555_555, 666_666,
                                            777_778 + 777_779))
    assert found == {
        (): {444_444: 1, 777_778 + 777_779: 2},  # one line: one record
        ("[label] task-a",): {111_111: 1, 222_222: 1},
        ("[label] task-b",): {333_333: 1},
        ("[label] agen",): {555_555: 1, 666_666: 1},
    }


C_EXTENSION = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>
#include <heapscope/heapscope.h>

void* hs_labels_block;  /* visible: the compiler may not drop the malloc */

/* Allocates `size` bytes under the label `name`, from C. */
static PyObject* labelled_malloc(PyObject* self, PyObject* args) {
    const char* name;
    unsigned long long size;
    if (!PyArg_ParseTuple(args, "sK", &name, &size)) return NULL;
    int pushed = heapscope_label_push(name);
    hs_labels_block = malloc((size_t)size);
    int popped = pushed == 0 ? heapscope_label_pop() : -3;
    return Py_BuildValue("ii", pushed, popped);
}

static PyObject* pop(PyObject* self, PyObject* args) { return PyLong_FromLong(heapscope_label_pop()); }
static PyObject* push_null(PyObject* self, PyObject* args) { return PyLong_FromLong(heapscope_label_push(NULL)); }

static PyMethodDef methods[] = {
    {"labelled_malloc", labelled_malloc, METH_VARARGS, NULL},
    {"pop", pop, METH_NOARGS, NULL},
    {"push_null", push_null, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "hs_labels", NULL, -1, methods};

PyMODINIT_FUNC PyInit_hs_labels(void) { return PyModule_Create(&module); }
"""


def test_the_c_api_labels_native_allocations(tmp_path):
    compiler = shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        pytest.skip("no C compiler")
    source = tmp_path / "hs_labels.c"
    source.write_text(C_EXTENSION)
    subprocess.run([compiler, "-shared", "-fPIC", "-O1", "-Wall", "-Werror", "-I", sysconfig.get_paths()["include"],
                    "-I", heapscope.get_include(), str(source), "-o",
                    str(tmp_path / ("hs_labels" + sysconfig.get_config_var("EXT_SUFFIX")))], check=True)
    script = tmp_path / "c_labels.py"
    write_script(script, """
        import sys
        import hs_labels
        print(hs_labels.push_null(), hs_labels.pop())   # before heapscope loads: -2 -2
        import time
        time.sleep(0.002)  # the header looks heapscope up again at most once a millisecond
        from heapscope import Tracker
        with Tracker(sys.argv[1]):
            print(*hs_labels.labelled_malloc("from C <&>", 909_090))
            print(hs_labels.push_null(), hs_labels.pop())
    """)
    capture = tmp_path / "c_labels.bin"
    result = run_script(script, capture, extra_paths=[tmp_path])
    assert result.stdout.split("\n")[:3] == ["-2 -2", "0 0", "-1 -1"]
    with FileReader(capture) as reader:
        found = sizes_by_root(r for r in reader.get_high_watermark_allocation_records() if r.size == 909_090)
    assert found == {("[label] from C <&>",): {909_090: 1}}


def test_every_report_and_export_shows_labels_escaped(extension_dir, tmp_path):
    from heapscope.reports import adapters, presenters

    name = "<b>load & \"parse\";x"
    script = tmp_path / "escaped.py"
    write_script(script, f"""
        import sys
        import hs_alloc
        import heapscope
        with heapscope.Tracker(sys.argv[1]):
            with heapscope.label({name!r}):
                hs_alloc.malloc(1, 4_321_987)
    """)
    capture = tmp_path / "escaped.bin"
    run_script(script, capture, extra_paths=[extension_dir])
    with FileReader(capture) as reader:
        profile = adapters.profile_from_capture(reader, "peak")
    labelled = [s for s in profile.samples if s.bytes == 4_321_987]
    assert [frame[:3] for frame in labelled[0].stack[:1]] == [(f"[label] {name}", LABEL_FILE, 0)]
    for fmt in presenters.names():
        if fmt == "timeplot" and not _has_matplotlib() or fmt == "table":
            continue  # the text table shows innermost frames only: its rows are locations
        options = {"kind": "table"} if fmt == "html" else {}
        output = presenters.render(profile, fmt, **options)
        if fmt == "pprof":
            assert f"[label] {name}".encode() in gzip.decompress(output)
        elif fmt == "timeplot":
            assert output.startswith(b"\x89PNG")
        elif fmt == "html":
            # In the page's JSON, where <, > and & are \u escapes (heapscope.reports.html.embed_json).
            escaped = json.dumps(f"[label] {name}", ensure_ascii=False)[1:-1]
            for character, code in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e")):
                escaped = escaped.replace(character, code)
            assert "<b>load" not in output and escaped in output
        elif fmt == "dot":
            assert "<b>load" not in output and "[label] &lt;b&gt;load &amp;" in output
        else:
            assert "[label]" in output, fmt
    collapsed = presenters.render(profile, "collapsed")
    line = next(line for line in collapsed.splitlines() if line.endswith(" 4321987"))
    assert line.split(";")[0].startswith("[label] ")  # the label frame is the root
    assert line.count(";") == line[:-len(" 4321987")].count(";")  # the name's ';' is escaped, not a frame boundary


def _has_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def test_a_tracker_entered_in_a_function_cuts_its_callers_but_keeps_labels(extension_dir, tmp_path):
    script = tmp_path / "entered.py"
    lines = write_script(script, """
        import sys
        import hs_alloc
        import heapscope

        def profiled():
            with heapscope.Tracker(sys.argv[1]):
                hs_alloc.malloc(1, 123_123)             # @unlabelled
                with heapscope.label("phase"):
                    hs_alloc.malloc(2, 321_321)         # @labelled

        profiled()                                      # @caller
    """)
    capture = tmp_path / "entered.bin"
    run_script(script, capture, extra_paths=[extension_dir])
    with FileReader(capture) as reader:
        stacks = {r.size: [(f, line) for f, _, line in reversed(r.stack_trace())]
                  for r in reader.get_high_watermark_allocation_records() if r.size in (123_123, 321_321)}
    assert stacks == {123_123: [("profiled", lines["unlabelled"])],
                      321_321: [("[label] phase", 0), ("profiled", lines["labelled"])]}
