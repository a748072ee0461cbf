"""Shared by the capture tests: a small C extension that allocates exact sizes
with every hooked function, and helpers to run scripts under a Tracker in a
subprocess and find the lines they marked.

The extension keeps its blocks in numbered slots, and its functions take only
small ints and constants and return None (METH_FASTCALL): a call allocates
nothing from Python, so the only allocation at a calling line is the one asked
for.
"""

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap

import pytest

EXTENSION_NAME = "hs_alloc"

EXTENSION_SOURCE = r"""
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE 1
#include <Python.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>

#define SLOTS 256
static void* slots[SLOTS];
static size_t lengths[SLOTS];  /* mmap'ed slots: the length to unmap; 0 for heap blocks */

static int get_args(PyObject* const* args, Py_ssize_t nargs, Py_ssize_t want, Py_ssize_t* out) {
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "expected %zd arguments, got %zd", want, nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        out[i] = PyLong_AsSsize_t(args[i]);
        if (out[i] == -1 && PyErr_Occurred()) return -1;
    }
    if (out[0] < 0 || out[0] >= SLOTS) {
        PyErr_SetString(PyExc_IndexError, "slot out of range");
        return -1;
    }
    return 0;
}

static PyObject* stored(Py_ssize_t slot, void* block, size_t mapped) {
    if (block == NULL || block == MAP_FAILED) return PyErr_NoMemory();
    slots[slot] = block;
    lengths[slot] = mapped;
    Py_RETURN_NONE;
}

/* Each allocation happens in a named, exported, never-inlined function, so
   that native traces can be checked by name. */
__attribute__((noinline)) void* hs_gt_malloc(size_t n) { return malloc(n); }
__attribute__((noinline)) void* hs_gt_calloc(size_t n, size_t m) { return calloc(n, m); }
__attribute__((noinline)) void* hs_gt_realloc(void* p, size_t n) { return realloc(p, n); }
__attribute__((noinline)) void* hs_gt_posix_memalign(size_t align, size_t n) {
    void* p = NULL;
    return posix_memalign(&p, align, n) == 0 ? p : NULL;
}
__attribute__((noinline)) void* hs_gt_aligned_alloc(size_t align, size_t n) { return aligned_alloc(align, n); }
__attribute__((noinline)) void* hs_gt_memalign(size_t align, size_t n) { return memalign(align, n); }
__attribute__((noinline)) void* hs_gt_valloc(size_t n) { return valloc(n); }
__attribute__((noinline)) void* hs_gt_mmap(size_t n) {
    return mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
}
/* Allocates `depth` native frames down: the frames of a deep C stack. */
__attribute__((noinline)) void* hs_gt_deep(int depth, size_t n) {
    if (depth <= 0) return hs_gt_malloc(n);
    void* volatile p = hs_gt_deep(depth - 1, n);  /* volatile: no tail call */
    return p;
}
__attribute__((noinline)) void* hs_gt_mmap_fixed(void* at, size_t n) {
    return mmap(at, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
}

static PyObject* py_malloc(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
    Py_ssize_t a[2];
    if (get_args(args, nargs, 2, a)) return NULL;
    return stored(a[0], hs_gt_malloc((size_t)a[1]), 0);
}
static PyObject* py_calloc(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
    Py_ssize_t a[3];
    if (get_args(args, nargs, 3, a)) return NULL;
    return stored(a[0], hs_gt_calloc((size_t)a[1], (size_t)a[2]), 0);
}
static PyObject* py_realloc(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
    Py_ssize_t a[2];
    if (get_args(args, nargs, 2, a)) return NULL;
    return stored(a[0], hs_gt_realloc(slots[a[0]], (size_t)a[1]), 0);
}
static PyObject* py_posix_memalign(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
    Py_ssize_t a[3];
    if (get_args(args, nargs, 3, a)) return NULL;
    return stored(a[0], hs_gt_posix_memalign((size_t)a[1], (size_t)a[2]), 0);
}
static PyObject* py_aligned_alloc(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
    Py_ssize_t a[3];
    if (get_args(args, nargs, 3, a)) return NULL;
    return stored(a[0], hs_gt_aligned_alloc((size_t)a[1], (size_t)a[2]), 0);
}
static PyObject* py_memalign(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
    Py_ssize_t a[3];
    if (get_args(args, nargs, 3, a)) return NULL;
    return stored(a[0], hs_gt_memalign((size_t)a[1], (size_t)a[2]), 0);
}
static PyObject* py_valloc(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
    Py_ssize_t a[2];
    if (get_args(args, nargs, 2, a)) return NULL;
    return stored(a[0], hs_gt_valloc((size_t)a[1]), 0);
}
static PyObject* py_mmap(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
    Py_ssize_t a[2];
    if (get_args(args, nargs, 2, a)) return NULL;
    return stored(a[0], hs_gt_mmap((size_t)a[1]), (size_t)a[1]);
}
/* rename(how, ident): names a thread, calling as C code does (through this
   object's PLT): 0 the caller with prctl(PR_SET_NAME), 1 the caller with
   pthread_setname_np, 2 the thread `ident` (its pthread_t) with pthread_setname_np. */
static PyObject* py_rename(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
    Py_ssize_t a[2];
    if (get_args(args, nargs, 2, a)) return NULL;
    int error = 0;
    if (a[0] == 0) error = prctl(PR_SET_NAME, "renamed-prctl", 0, 0, 0) ? errno : 0;
    else if (a[0] == 1) error = pthread_setname_np(pthread_self(), "renamed-pth");
    else error = pthread_setname_np((pthread_t)a[1], "renamed-other");
    if (error) {
        errno = error;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}
/* deep(slot, depth, size): malloc from `depth` frames of hs_gt_deep. */
static PyObject* py_deep(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
    Py_ssize_t a[3];
    if (get_args(args, nargs, 3, a)) return NULL;
    return stored(a[0], hs_gt_deep((int)a[1], (size_t)a[2]), 0);
}
/* mmap_at(slot, base, offset, size): a mapping made over [slots[base] + offset, + size) (MAP_FIXED). */
static PyObject* py_mmap_at(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
    Py_ssize_t a[4];
    if (get_args(args, nargs, 4, a)) return NULL;
    if (a[1] < 0 || a[1] >= SLOTS || !slots[a[1]]) {
        PyErr_SetString(PyExc_IndexError, "no mapping in the base slot");
        return NULL;
    }
    return stored(a[0], hs_gt_mmap_fixed((char*)slots[a[1]] + a[2], (size_t)a[3]), (size_t)a[3]);
}
/* munmap(slot, offset, length): unmaps [slots[slot] + offset, + length), whatever mappings that covers. */
static PyObject* py_munmap(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
    Py_ssize_t a[3];
    if (get_args(args, nargs, 3, a)) return NULL;
    if (munmap((char*)slots[a[0]] + a[1], (size_t)a[2]) != 0) return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}
/* Frees a slot with the call that matches how it was made. */
static PyObject* py_free(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
    Py_ssize_t a[1];
    if (get_args(args, nargs, 1, a)) return NULL;
    if (lengths[a[0]]) munmap(slots[a[0]], lengths[a[0]]);
    else free(slots[a[0]]);
    slots[a[0]] = NULL;
    lengths[a[0]] = 0;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"malloc", (PyCFunction)(void (*)(void))py_malloc, METH_FASTCALL, "malloc(slot, size)"},
    {"calloc", (PyCFunction)(void (*)(void))py_calloc, METH_FASTCALL, "calloc(slot, n, size)"},
    {"realloc", (PyCFunction)(void (*)(void))py_realloc, METH_FASTCALL, "realloc(slot, size)"},
    {"posix_memalign", (PyCFunction)(void (*)(void))py_posix_memalign, METH_FASTCALL, "(slot, align, size)"},
    {"aligned_alloc", (PyCFunction)(void (*)(void))py_aligned_alloc, METH_FASTCALL, "(slot, align, size)"},
    {"memalign", (PyCFunction)(void (*)(void))py_memalign, METH_FASTCALL, "(slot, align, size)"},
    {"valloc", (PyCFunction)(void (*)(void))py_valloc, METH_FASTCALL, "valloc(slot, size)"},
    {"mmap", (PyCFunction)(void (*)(void))py_mmap, METH_FASTCALL, "mmap(slot, size)"},
    {"mmap_at", (PyCFunction)(void (*)(void))py_mmap_at, METH_FASTCALL, "mmap_at(slot, base, offset, size)"},
    {"deep", (PyCFunction)(void (*)(void))py_deep, METH_FASTCALL, "deep(slot, depth, size): malloc, depth frames down"},
    {"rename", (PyCFunction)(void (*)(void))py_rename, METH_FASTCALL, "rename(how, ident): see above"},
    {"munmap", (PyCFunction)(void (*)(void))py_munmap, METH_FASTCALL, "munmap(slot, offset, length)"},
    {"free", (PyCFunction)(void (*)(void))py_free, METH_FASTCALL, "free(slot): free or munmap"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "hs_alloc", NULL, -1, methods};

PyMODINIT_FUNC PyInit_hs_alloc(void) { return PyModule_Create(&module); }
"""


def compile_extension(directory, name, source, flags=("-O1", "-g", "-fno-omit-frame-pointer")):
    """Compiles the C extension module *name* from *source* into *directory*
    (-fno-builtin: the compiler must not turn realloc(NULL, n) into malloc(n)
    or drop a malloc it can see is freed); skips the test when there is no C
    compiler. Returns *directory*."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        pytest.skip("no C compiler")
    path = os.path.join(directory, name + ".c")
    with open(path, "w") as out:
        out.write(source)
    target = os.path.join(directory, name + sysconfig.get_config_var("EXT_SUFFIX"))
    subprocess.run([compiler, "-shared", "-fPIC", *flags, "-fno-builtin", "-Wall", "-Werror",
                    "-I", sysconfig.get_paths()["include"], path, "-o", target], check=True)
    return directory


def build_extension(directory):
    """Compiles hs_alloc into *directory* (with symbols, so native traces can
    name its functions)."""
    return compile_extension(directory, EXTENSION_NAME, EXTENSION_SOURCE)


def python_env(*extra_paths):
    """The environment for a subprocess that imports heapscope (from where this
    process found it) and the given directories."""
    import heapscope

    package_root = os.path.dirname(os.path.dirname(os.path.abspath(heapscope.__file__)))
    paths = [str(p) for p in extra_paths] + [package_root] + [p for p in sys.path if p]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def run_script(path, *args, extra_paths=(), timeout=120, check=True, cwd=None):
    """Runs a Python script in a subprocess; returns the CompletedProcess."""
    result = subprocess.run([sys.executable, str(path), *map(str, args)], capture_output=True, text=True,
                            env=python_env(*extra_paths), timeout=timeout, cwd=cwd)
    if check:
        assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def heapscope_cli(*args, extra_paths=(), cwd=None, timeout=180):
    """``python -m heapscope ARGS`` in a subprocess."""
    return subprocess.run([sys.executable, "-m", "heapscope", *map(str, args)], capture_output=True, text=True,
                          env=python_env(*extra_paths), cwd=cwd, timeout=timeout)


def write_script(path, source):
    """Writes a dedented script; returns {marker: line number} for every
    ``# @name`` comment in it."""
    text = textwrap.dedent(source).lstrip("\n")
    with open(path, "w") as out:
        out.write(text)
    return marked_lines(text)


def marked_lines(text):
    lines = {}
    for number, line in enumerate(text.splitlines(), 1):
        for name in re.findall(r"#\s*@(\w+)", line):
            assert name not in lines, f"marker {name} used twice"
            lines[name] = number
    return lines


def by_line(records, filename, allocators=None):
    """{lineno: (bytes, count)} of records made under a line of *filename*
    (the innermost frame of the stack in that file: a block NumPy allocates
    for ``np.ones(...)`` belongs to the line that called it), optionally only
    those made by *allocators* (names)."""
    totals = {}
    filename = str(filename)
    for record in records:
        if allocators is not None and record.allocator.name not in allocators:
            continue
        line = next((frame[2] for frame in record.stack_trace() if frame[1] == filename), None)
        if line is None:
            continue
        size, count = totals.get(line, (0, 0))
        totals[line] = (size + record.size, count + record.n_allocations)
    return totals
