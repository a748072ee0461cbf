"""Benchmark of resource pools (heapscope.pools, heapscope/pools.h): the cost
of registering and releasing a resource, from Python and from C++, with
detailed profiling off and on, and the pool's memory per resource.

Target (issue 5): registering and releasing a resource costs under 1 µs with
details off.

    python bench/run_pools.py [--runs 7] [--n 200000] [--write-results]

Each figure is the median over --runs runs of --n register+release pairs
(interleaved, in one process: the registry is process-wide). The C++ side is
a small extension built here with the header, timed inside C++ without the
GIL. Memory: the registry's malloc'd bytes (glibc mallinfo2) per live
resource, and for Python the objects a tracked object adds (its handle and
weak reference, counted by the stdlib's tracemalloc).
"""

import argparse
import ctypes
import gc
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness  # noqa: E402

import heapscope  # noqa: E402
from heapscope import pools  # noqa: E402

EXTENSION = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <heapscope/pools.h>
#include <chrono>

// ns per track+release pair for `n` pairs, GIL released. by_name: the
// by-name C functions; otherwise a kept pool handle (ResourcePool).
static PyObject* loop(PyObject*, PyObject* args) {
    long long n;
    int by_name;
    const char* name;
    if (!PyArg_ParseTuple(args, "sLp", &name, &n, &by_name)) return NULL;
    heapscope::ResourcePool pool(name);
    if (pool.track(0ull, 1) != 0 || pool.release(0ull) != 0) {
        PyErr_SetString(PyExc_RuntimeError, "heapscope is not loaded");
        return NULL;
    }
    double ns;
    Py_BEGIN_ALLOW_THREADS
    auto start = std::chrono::steady_clock::now();
    if (by_name) {
        for (long long i = 1; i <= n; ++i) {
            heapscope_pool_track(name, (uint64_t)i * 64, 64, nullptr);
            heapscope_pool_release(name, (uint64_t)i * 64);
        }
    } else {
        for (long long i = 1; i <= n; ++i) {
            pool.track((uint64_t)i * 64, 64);
            pool.release((uint64_t)i * 64);
        }
    }
    ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count() / (double)n;
    Py_END_ALLOW_THREADS
    return PyFloat_FromDouble(ns);
}

static PyObject* fill(PyObject*, PyObject* args) {
    long long n;
    int release;
    const char* name;
    if (!PyArg_ParseTuple(args, "sLp", &name, &n, &release)) return NULL;
    heapscope::ResourcePool pool(name);
    for (long long i = 1; i <= n; ++i) {
        if (release) pool.release((uint64_t)i * 64);
        else pool.track((uint64_t)i * 64, 64);
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {{"loop", loop, METH_VARARGS, NULL}, {"fill", fill, METH_VARARGS, NULL},
                                {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "hs_pools_bench", NULL, -1, methods,
                                    NULL, NULL, NULL, NULL};
PyMODINIT_FUNC PyInit_hs_pools_bench(void) { return PyModule_Create(&module); }
"""


def build_extension(directory):
    source = os.path.join(directory, "hs_pools_bench.cpp")
    with open(source, "w") as out:
        out.write(EXTENSION)
    target = os.path.join(directory, "hs_pools_bench" + sysconfig.get_config_var("EXT_SUFFIX"))
    subprocess.run([shutil.which("c++") or "g++", "-std=c++17", "-O2", "-shared", "-fPIC", "-I",
                    sysconfig.get_paths()["include"], "-I", heapscope.get_include(), source, "-o", target],
                   check=True)
    sys.path.insert(0, directory)
    import hs_pools_bench

    return hs_pools_bench


class Thing:
    pass


def python_id_pair(pool, n):
    track = pool.track
    start = time.perf_counter_ns()
    for i in range(n):
        track(i, size=64).release()
    return (time.perf_counter_ns() - start) / n


def python_object_pair(pool, n, things):
    track = pool.track
    start = time.perf_counter_ns()
    for thing in things:
        track(thing, size=64).release()
    return (time.perf_counter_ns() - start) / n


def python_object_dies(pool, n):
    """Registered by track_class at construction, released at collection:
    the construction and death of an instance, minus those of an untracked one."""
    class Tracked:
        pass

    class Plain:
        pass

    pool.track_class(Tracked, size=64)
    timings = []
    for cls in (Tracked, Plain):
        start = time.perf_counter_ns()
        for _ in range(n):
            cls()
        timings.append((time.perf_counter_ns() - start) / n)
    pool.untrack_class(Tracked)
    return timings[0] - timings[1]


def python_id_pair_traced(pool, n):
    """The same while heapscope.tracemalloc traces: each resource is also a
    block in the pool's domain."""
    import heapscope.tracemalloc as hs_tracemalloc

    hs_tracemalloc.start(1)
    try:
        return python_id_pair(pool, n)
    finally:
        hs_tracemalloc.stop()


def empty_loop(n):
    start = time.perf_counter_ns()
    for _ in range(n):
        pass
    return (time.perf_counter_ns() - start) / n


def mallinfo_used():
    class Mallinfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                     "keepcost")]
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = Mallinfo2
    info = libc.mallinfo2()
    return info.uordblks + info.hblkhd


def memory_per_resource(ext, n):
    """(registry bytes per resource from C++, Python objects' bytes per tracked object)."""
    gc.collect()
    before = mallinfo_used()
    ext.fill("bench-memory", n, False)
    registry = (mallinfo_used() - before) / n
    ext.fill("bench-memory", n, True)
    pool = pools.pool("bench-memory-py")
    things = [Thing() for _ in range(n)]
    gc.collect()
    before_malloc = mallinfo_used()
    for thing in things:
        pool.track(thing, size=64)
    total_malloc = (mallinfo_used() - before_malloc) / n
    del things
    gc.collect()
    # Again under the stdlib's tracemalloc, for the Python objects alone
    # (its own records are malloc'd: not mixed into the figure above).
    things = [Thing() for _ in range(n)]
    gc.collect()
    tracemalloc.start()
    before_py = tracemalloc.get_traced_memory()[0]
    for thing in things:
        pool.track(thing, size=64)
    python_objects = (tracemalloc.get_traced_memory()[0] - before_py) / n
    tracemalloc.stop()
    del things
    gc.collect()
    return registry, python_objects, total_malloc


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--write-results", action="store_true")
    options = parser.parse_args()
    n = options.n
    with tempfile.TemporaryDirectory() as directory:
        ext = build_extension(directory)
        plain, detailed = pools.pool("bench-plain"), pools.pool("bench-detailed")
        detailed.enable_detailed_profiling()
        things = [Thing() for _ in range(n)]
        cases = {
            "Python: track(int id) + handle.release()": lambda: python_id_pair(plain, n),
            "Python: track(object) + handle.release()": lambda: python_object_pair(plain, n, things),
            "Python: track_class instance made and collected (extra over an untracked class)":
                lambda: python_object_dies(plain, n),
            "Python: track(int id) + handle.release(), heapscope.tracemalloc tracing (1 frame)":
                lambda: python_id_pair_traced(plain, n),
            "Python: empty loop iteration (included in the lines above)": lambda: empty_loop(n),
            "C++: ResourcePool::track + release (kept pool handle)": lambda: ext.loop("bench-plain", n, False),
            "C++: heapscope_pool_track + heapscope_pool_release (by name)": lambda: ext.loop("bench-plain", n, True),
            "Python, details on: track(int id) + handle.release()": lambda: python_id_pair(detailed, n // 10),
            "C++, details on: ResourcePool::track + release": lambda: ext.loop("bench-detailed", n // 10, False),
        }
        results = {name: [] for name in cases}
        for run, name in _harness.interleave(cases, options.runs):
            results[name].append(cases[name]())
            if name == list(cases)[-1]:
                _harness.progress(f"run {run + 1}/{options.runs}")
        registry_bytes, python_bytes, malloc_bytes = memory_per_resource(ext, n)

    medians = {name: _harness.median(values) for name, values in results.items()}
    rows = [[name, f"{medians[name]:.0f} ns", f"{min(values):.0f}-{max(values):.0f} ns"]
            for name, values in results.items()]
    info = _harness.machine_info()
    body = "\n".join([
        "## Resource pools",
        "",
        f"`python bench/run_pools.py --runs {options.runs} --n {n}` on {_harness.now_utc()}: "
        f"register and release one resource, median of {options.runs} runs of {n:,} pairs "
        f"({n // 10:,} with details on), in one process.",
        "",
        _harness.machine_markdown(info, {"heapscope": heapscope.__version__}),
        "",
        _harness.markdown_table(["operation (register + release)", "median per resource", "range over runs"], rows),
        "",
        "Memory per live resource: "
        f"the registry {registry_bytes:.0f} B (malloc'd: hash-map node and bucket, measured over {n:,} resources "
        f"registered from C++); a Python object tracked with `track(obj)` adds {python_bytes:.0f} B of Python "
        f"objects (its handle, weak reference and bound callback) and {malloc_bytes:.0f} B malloc'd: the "
        "registry's entry and nanobind's table of live instances, which holds each handle that stays alive "
        "(a handle of an id that is dropped at once leaves only the registry's share). Sources (details on) are interned: each distinct stack is stored once.",
        "",
        "Target: under 1 µs with details off, from Python and from C++.",
    ])
    print(body)
    if options.write_results:
        _harness.replace_section("pools", body)
        print(f"\nwrote the 'pools' section of {_harness.RESULTS_MD}")


if __name__ == "__main__":
    main()
