"""The public C header (native/include/heapscope/heapscope.h), used from a
small extension built here, and stdlib PyTraceMalloc_* calls made by
extensions loaded after tracing started."""

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap

import pytest

import heapscope

EXTENSION_SOURCE = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <heapscope/heapscope.h>

/* A pretend device allocator: reports its blocks in domain 4242. */
static PyObject* device_alloc(PyObject* self, PyObject* args) {
    unsigned long long address, size;
    if (!PyArg_ParseTuple(args, "KK", &address, &size)) return NULL;
    return PyLong_FromLong(heapscope_track(4242, (uintptr_t)address, (size_t)size));
}

static PyObject* device_free(PyObject* self, PyObject* args) {
    unsigned long long address;
    if (!PyArg_ParseTuple(args, "K", &address)) return NULL;
    return PyLong_FromLong(heapscope_untrack(4242, (uintptr_t)address));
}

/* The same through the stdlib's API, as NumPy does. */
static PyObject* stdlib_track(PyObject* self, PyObject* args) {
    unsigned long long address, size;
    if (!PyArg_ParseTuple(args, "KK", &address, &size)) return NULL;
    return PyLong_FromLong(PyTraceMalloc_Track(77, (uintptr_t)address, (size_t)size));
}

/* The stdlib's private query (3.13 declares it in an internal header only). */
PyObject* _PyTraceMalloc_GetTraceback(unsigned int domain, uintptr_t ptr);

static PyObject* stdlib_traceback(PyObject* self, PyObject* args) {
    unsigned int domain;
    unsigned long long address;
    if (!PyArg_ParseTuple(args, "IK", &domain, &address)) return NULL;
    return _PyTraceMalloc_GetTraceback(domain, (uintptr_t)address);
}

static PyMethodDef methods[] = {
    {"stdlib_traceback", stdlib_traceback, METH_VARARGS, NULL},
    {"device_alloc", device_alloc, METH_VARARGS, NULL},
    {"device_free", device_free, METH_VARARGS, NULL},
    {"stdlib_track", stdlib_track, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "hs_device", NULL, -1, methods};

PyMODINIT_FUNC PyInit_hs_device(void) { return PyModule_Create(&module); }
"""


@pytest.fixture(scope="module")
def extension_dir(tmp_path_factory):
    compiler = shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        pytest.skip("no C compiler")
    build = tmp_path_factory.mktemp("ext")
    source = build / "hs_device.c"
    source.write_text(EXTENSION_SOURCE)
    target = build / ("hs_device" + sysconfig.get_config_var("EXT_SUFFIX"))
    subprocess.run([compiler, "-shared", "-fPIC", "-O1", "-Wall", "-Werror",
                    "-I", sysconfig.get_paths()["include"], "-I", heapscope.get_include(),
                    str(source), "-o", str(target)], check=True)
    return build


def run_python(code, extension_dir):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(extension_dir), *sys.path])}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_header_reports_blocks_with_the_calling_line(extension_dir):
    out = run_python("""
        import hs_device
        print(hs_device.device_alloc(0x5000, 64))          # not tracing yet: -2
        import heapscope.tracemalloc as tm
        tm.start(4)
        rc = hs_device.device_alloc(0x5000, 1 << 20)
        line = 6
        traces = [t for t in tm.take_snapshot().traces if t.domain == 4242]
        print(rc, [(t.size, t.traceback[-1].lineno) for t in traces])
        print(hs_device.device_free(0x5000), [t for t in tm.take_snapshot().traces if t.domain == 4242])
        tm.stop()
        print(hs_device.device_alloc(0x6000, 1))           # stopped: -2 again
    """, extension_dir)
    assert out.split("\n")[:4] == ["-2", "0 [(1048576, 6)]", "0 []", "-2"]


def test_stdlib_track_calls_from_an_extension_loaded_after_start(extension_dir):
    out = run_python("""
        import heapscope.tracemalloc as tm
        tm.start(4)
        import hs_device                                   # dlopen'ed while tracing
        rc = hs_device.stdlib_track(0x7000, 4096)
        print(rc, [(t.size, t.traceback[-1].lineno) for t in tm.take_snapshot().traces if t.domain == 77])
        tm.stop()
        print(hs_device.stdlib_track(0x7000, 1))           # restored: the stdlib says not tracing
    """, extension_dir)
    assert out.split("\n")[:2] == ["0 [(4096, 5)]", "-2"]


def test_stdlib_get_traceback_calls_get_heapscopes_traceback(extension_dir):
    # _PyTraceMalloc_GetTraceback (CPython's TestCAPI asks it through
    # _testcapi) answers from heapscope while the tracemalloc door traces:
    # the stdlib's form, most recent frame first; None for an unknown block.
    out = run_python("""
        import hs_device
        import heapscope.tracemalloc as tm
        def track():
            return hs_device.stdlib_track(0x7000, 4096)
        tm.start(3)
        track()
        print(hs_device.stdlib_traceback(77, 0x7000))
        print(hs_device.stdlib_traceback(77, 0x8000), hs_device.stdlib_traceback(78, 0x7000))
        obj = bytearray(1000)
        print(hs_device.stdlib_traceback(0, id(obj)) == tm._get_object_traceback(obj))
        tm.stop()
        print(hs_device.stdlib_traceback(77, 0x7000))       # restored: the stdlib's own answer
    """, extension_dir)
    lines = out.split("\n")
    assert lines[0] == "(('<string>', 5), ('<string>', 7))"
    assert lines[1:4] == ["None None", "True", "None"]


def test_a_tracker_leaves_the_stdlib_get_traceback_alone(extension_dir, tmp_path):
    out = run_python("""
        import hs_device, heapscope
        with heapscope.Tracker(%r):
            print(hs_device.stdlib_track(0x7000, 4096), hs_device.stdlib_traceback(77, 0x7000))
    """ % str(tmp_path / "t.hscap"), extension_dir)
    assert out.split("\n")[0] == "-2 None"


def test_numpy_imported_after_start_is_seen():
    pytest.importorskip("numpy")
    out = run_python("""
        import heapscope.tracemalloc as tm
        tm.start(2)
        import numpy as np
        a = np.zeros(123_456, dtype=np.uint8)
        print([t.size for t in tm.take_snapshot().traces if t.domain == 389047 and t.size == 123_456])
    """, "")
    assert out.strip() == "[123456]"


@pytest.mark.parametrize("compiler, standard, suffix", [("cc", "-std=c11", ".c"), ("cc", "-std=gnu99", ".c"),
                                                         ("c++", "-std=c++17", ".cpp")])
def test_header_compiles_cleanly_in_strict_modes(tmp_path, compiler, standard, suffix):
    if not shutil.which(compiler):
        pytest.skip(f"no {compiler}")
    source = tmp_path / ("use" + suffix)
    source.write_text("#include <heapscope/heapscope.h>\n"
                      "int main(void) { return heapscope_track(1, 2, 3) == -2 && heapscope_untrack(1, 2) == -2 ? 0 : 1; }\n")
    binary = tmp_path / "use"
    subprocess.run([compiler, standard, "-Wall", "-Wextra", "-Wpedantic", "-Werror", "-I", heapscope.get_include(),
                    str(source), "-o", str(binary), "-ldl"], check=True)
    # Without heapscope in the process, both calls report "not tracing".
    assert subprocess.run([str(binary)]).returncode == 0
