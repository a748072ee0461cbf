"""Threads at scale, through the Python extension: 8 threads, each making a
million allocations and frees of known sizes through every hooked allocator
(malloc ... mmap, and PyMem_Raw*/PyMem_*/PyObject_* malloc, calloc and
realloc), each allocator at its own line. A C extension built here runs the
loops (so the 8 x 10^6 workload takes seconds), without the GIL except on
the mem and object domains, which need it. The totals must be exact per
thread and per line in both capture formats, in the live view (the stream
`heapscope live` reads) and in the tracemalloc door's snapshot.

Each line keeps its first KEPT blocks until the end and frees every other
block at once; after the threads are done the main thread makes a block
larger than all the workers could hold at once, so the high-water mark is
that moment whatever the interleaving: the kept blocks and that one.
"""

import json
import socket
import subprocess
import sys
import time

import pytest

from heapscope import FileFormat, FileReader
from capture_helpers import compile_extension, python_env, run_script, write_script

THREADS = 8
KEPT = 4
ALLOCATIONS_PER_THREAD = 1_000_000
FINAL_BLOCK = 64 << 20

# (name, allocator as reported, how many blocks an iteration makes): the
# order is the extension's `kind` numbering. A realloc line makes two blocks an
# iteration: realloc(NULL, first), then realloc(p, second), which frees the first.
KINDS = [
    ("malloc", "MALLOC", 1), ("calloc", "CALLOC", 1), ("realloc", "REALLOC", 2),
    ("posix_memalign", "POSIX_MEMALIGN", 1), ("aligned_alloc", "ALIGNED_ALLOC", 1), ("memalign", "MEMALIGN", 1),
    ("valloc", "VALLOC", 1), ("pvalloc", "PVALLOC", 1), ("mmap", "MMAP", 1),
    ("raw_malloc", "PYMALLOC_MALLOC", 1), ("raw_calloc", "PYMALLOC_CALLOC", 1), ("raw_realloc", "PYMALLOC_REALLOC", 2),
    ("mem_malloc", "PYMALLOC_MALLOC", 1), ("mem_calloc", "PYMALLOC_CALLOC", 1), ("mem_realloc", "PYMALLOC_REALLOC", 2),
    ("obj_malloc", "PYMALLOC_MALLOC", 1), ("obj_calloc", "PYMALLOC_CALLOC", 1), ("obj_realloc", "PYMALLOC_REALLOC", 2),
]
PYTHON_DOMAINS = {name for name, _, _ in KINDS if name.split("_")[0] in ("raw", "mem", "obj")}
ITERATIONS = -(-ALLOCATIONS_PER_THREAD // sum(per for _, _, per in KINDS))


def first_size(worker, kind):
    """Distinct per thread and line; pymalloc-sized (at most 512 bytes) on
    Python's lines; whole pages for mmap; a multiple of the alignment for
    aligned_alloc (C11)."""
    name = KINDS[kind][0]
    if name == "mmap":
        return 4096 * (1 + worker % 3)
    if name == "aligned_alloc":
        return 64 * (2 + worker)
    return 8 + 16 * kind + worker


def second_size(worker, kind):
    return first_size(worker, kind) + 128 if KINDS[kind][2] == 2 else 0


def kept_size(worker, kind):
    return second_size(worker, kind) or first_size(worker, kind)


EXTENSION_SOURCE = r"""
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE 1
#include <Python.h>
#include <malloc.h>
#include <stdlib.h>
#include <sys/mman.h>

enum { MALLOC, CALLOC, REALLOC, POSIX_MEMALIGN, ALIGNED_ALLOC, MEMALIGN, VALLOC, PVALLOC, MMAP,
       RAW_MALLOC, RAW_CALLOC, RAW_REALLOC, MEM_MALLOC, MEM_CALLOC, MEM_REALLOC, OBJ_MALLOC, OBJ_CALLOC, OBJ_REALLOC,
       KINDS };
#define WORKERS 8
#define KEPT 4
static void* kept[WORKERS][KINDS][KEPT];
static size_t kept_size[WORKERS][KINDS][KEPT];
static void* final_block;

static int needs_gil(int kind) { return kind >= MEM_MALLOC; }

static void* make(int kind, size_t size) {
    void* p = NULL;
    switch (kind) {
    case MALLOC: return malloc(size);
    case CALLOC: return calloc(1, size);
    case REALLOC: return realloc(NULL, size);
    case POSIX_MEMALIGN: return posix_memalign(&p, 64, size) == 0 ? p : NULL;
    case ALIGNED_ALLOC: return aligned_alloc(64, size);
    case MEMALIGN: return memalign(128, size);
    case VALLOC: return valloc(size);
    case PVALLOC: return pvalloc(size);
    case MMAP:
        p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        return p == MAP_FAILED ? NULL : p;
    case RAW_MALLOC: return PyMem_RawMalloc(size);
    case RAW_CALLOC: return PyMem_RawCalloc(1, size);
    case RAW_REALLOC: return PyMem_RawRealloc(NULL, size);
    case MEM_MALLOC: return PyMem_Malloc(size);
    case MEM_CALLOC: return PyMem_Calloc(1, size);
    case MEM_REALLOC: return PyMem_Realloc(NULL, size);
    case OBJ_MALLOC: return PyObject_Malloc(size);
    case OBJ_CALLOC: return PyObject_Calloc(1, size);
    case OBJ_REALLOC: return PyObject_Realloc(NULL, size);
    }
    return NULL;
}

static void* grow(int kind, void* p, size_t size) {
    switch (kind) {
    case REALLOC: return realloc(p, size);
    case RAW_REALLOC: return PyMem_RawRealloc(p, size);
    case MEM_REALLOC: return PyMem_Realloc(p, size);
    case OBJ_REALLOC: return PyObject_Realloc(p, size);
    }
    return p;
}

static void release(int kind, void* p, size_t size) {
    if (kind == MMAP) munmap(p, size);
    else if (kind >= OBJ_MALLOC) PyObject_Free(p);
    else if (kind >= MEM_MALLOC) PyMem_Free(p);
    else if (kind >= RAW_MALLOC) PyMem_RawFree(p);
    else free(p);
}

/* `count` iterations from `*done` on: make a block of `size` (and grow it
   to `size2`, if not 0), keep it if it is among the first KEPT and `keep`,
   else free it. 0, or -1 when memory ran out. */
static int iterate(int worker, int kind, long count, long* done, size_t size, size_t size2, int keep) {
    for (long end = *done + count; *done < end; ++*done) {
        void* p = make(kind, size);
        if (p == NULL) return -1;
        size_t final_size = size;
        if (size2) {
            void* q = grow(kind, p, size2);
            if (q == NULL) return -1;
            p = q;
            final_size = size2;
        }
        if (keep && *done < KEPT) {
            kept[worker][kind][*done] = p;
            kept_size[worker][kind][*done] = final_size;
        } else {
            release(kind, p, final_size);
        }
    }
    return 0;
}

/* churn(worker, kind, iterations, size, size2, keep) */
static PyObject* churn(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
    long a[6];
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "churn(worker, kind, iterations, size, size2, keep)");
        return NULL;
    }
    for (int i = 0; i < 6; i++) {
        a[i] = PyLong_AsLong(args[i]);
        if (a[i] == -1 && PyErr_Occurred()) return NULL;
    }
    int worker = (int)a[0], kind = (int)a[1];
    if (worker < 0 || worker >= WORKERS || kind < 0 || kind >= KINDS || a[2] < 0 || a[3] <= 0 || a[4] < 0) {
        PyErr_SetString(PyExc_ValueError, "argument out of range");
        return NULL;
    }
    long done = 0;
    int failed = 0;
    if (needs_gil(kind)) {
        /* The mem and object domains need the GIL: let the other threads
           have it between rounds. */
        while (!failed && done < a[2]) {
            long round = a[2] - done < 512 ? a[2] - done : 512;
            failed = iterate(worker, kind, round, &done, (size_t)a[3], (size_t)a[4], (int)a[5]);
            Py_BEGIN_ALLOW_THREADS
            Py_END_ALLOW_THREADS
        }
    } else {
        Py_BEGIN_ALLOW_THREADS
        failed = iterate(worker, kind, a[2], &done, (size_t)a[3], (size_t)a[4], (int)a[5]);
        Py_END_ALLOW_THREADS
    }
    if (failed) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* make_final(size): a malloc kept until release_all(). */
static PyObject* make_final(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
    if (nargs != 1) return PyErr_Format(PyExc_TypeError, "make_final(size)");
    Py_ssize_t size = PyLong_AsSsize_t(args[0]);
    if (size == -1 && PyErr_Occurred()) return NULL;
    final_block = malloc((size_t)size);
    if (final_block == NULL) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject* release_all(PyObject* self, PyObject* unused) {
    for (int w = 0; w < WORKERS; w++)
        for (int k = 0; k < KINDS; k++)
            for (int i = 0; i < KEPT; i++) {
                if (kept[w][k][i]) release(k, kept[w][k][i], kept_size[w][k][i]);
                kept[w][k][i] = NULL;
            }
    free(final_block);
    final_block = NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"churn", (PyCFunction)(void (*)(void))churn, METH_FASTCALL, "churn(worker, kind, iterations, size, size2, keep)"},
    {"make_final", (PyCFunction)(void (*)(void))make_final, METH_FASTCALL, "make_final(size)"},
    {"release_all", release_all, METH_NOARGS, "frees every kept block and the final one"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "hs_threads", NULL, -1, methods};

PyMODINIT_FUNC PyInit_hs_threads(void) { return PyModule_Create(&module); }
"""

# argv: mode (ALL_ALLOCATIONS, AGGREGATED_ALLOCATIONS, live, door), destination (path or port), iterations.
WORKLOAD = """
import json
import sys
import threading
import hs_threads
from heapscope import FileFormat, SocketDestination, Tracker
import heapscope.tracemalloc as door

mode, destination, iterations = sys.argv[1], sys.argv[2], int(sys.argv[3])
SIZES = json.loads(sys.argv[4])  # SIZES[worker][kind] = [size, size2]: the ints exist before tracing starts
N = iterations
KEEP = 1


def worker(w, start):
    s = SIZES[w]
    if start is not None:
        start.wait()
    hs_threads.churn(w, 0, N, s[0][0], s[0][1], KEEP)     # @malloc
    hs_threads.churn(w, 1, N, s[1][0], s[1][1], KEEP)     # @calloc
    hs_threads.churn(w, 2, N, s[2][0], s[2][1], KEEP)     # @realloc
    hs_threads.churn(w, 3, N, s[3][0], s[3][1], KEEP)     # @posix_memalign
    hs_threads.churn(w, 4, N, s[4][0], s[4][1], KEEP)     # @aligned_alloc
    hs_threads.churn(w, 5, N, s[5][0], s[5][1], KEEP)     # @memalign
    hs_threads.churn(w, 6, N, s[6][0], s[6][1], KEEP)     # @valloc
    hs_threads.churn(w, 7, N, s[7][0], s[7][1], KEEP)     # @pvalloc
    hs_threads.churn(w, 8, N, s[8][0], s[8][1], KEEP)     # @mmap
    hs_threads.churn(w, 9, N, s[9][0], s[9][1], KEEP)     # @raw_malloc
    hs_threads.churn(w, 10, N, s[10][0], s[10][1], KEEP)  # @raw_calloc
    hs_threads.churn(w, 11, N, s[11][0], s[11][1], KEEP)  # @raw_realloc
    hs_threads.churn(w, 12, N, s[12][0], s[12][1], KEEP)  # @mem_malloc
    hs_threads.churn(w, 13, N, s[13][0], s[13][1], KEEP)  # @mem_calloc
    hs_threads.churn(w, 14, N, s[14][0], s[14][1], KEEP)  # @mem_realloc
    hs_threads.churn(w, 15, N, s[15][0], s[15][1], KEEP)  # @obj_malloc
    hs_threads.churn(w, 16, N, s[16][0], s[16][1], KEEP)  # @obj_calloc
    hs_threads.churn(w, 17, N, s[17][0], s[17][1], KEEP)  # @obj_realloc


def run_threads():
    start = threading.Barrier(len(SIZES))
    threads = [threading.Thread(target=worker, args=(w, start), name="worker-%d" % w) for w in range(len(SIZES))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    hs_threads.make_final(FINAL)


# Warm-up, untraced: every line runs once (the interpreter's first run of a
# line may allocate for itself), and the threads' machinery is exercised.
FINAL = int(sys.argv[5])
N, KEEP = 1, 0
worker(0, None)
N, KEEP = iterations, 1
threading.Thread(target=lambda: None).start()

if mode == "door":
    door.start()
    # A thread without the GIL may not pin a code object: its first block in
    # code no stack refers to yet is filed under <unknown> (docs/design.md).
    # So this pins the workers' code first (the mem and object lines hold the
    # GIL), leaving no block behind.
    N, KEEP = 1, 0
    worker(0, None)
    N, KEEP = iterations, 1
    run_threads()
    snapshot = door.take_snapshot()
    door.stop()
    traces = {}
    for trace in snapshot.traces:
        frame = trace.traceback[0]
        if frame.filename == __file__:
            key = "%d %d" % (frame.lineno, trace.size)
            traces[key] = traces.get(key, 0) + 1
    print(json.dumps(traces))
else:
    if mode == "live":
        tracker = Tracker(destination=SocketDestination(server_port=int(destination)), trace_python_allocators=True)
    else:
        tracker = Tracker(destination, file_format=FileFormat[mode], trace_python_allocators=True)
    with tracker:
        run_threads()
hs_threads.release_all()
"""


@pytest.fixture(scope="module")
def workload(tmp_path_factory):
    """The extension and the script: (directory, script path, {marker: line})."""
    directory = tmp_path_factory.mktemp("threads")
    # pvalloc is deprecated, and called all the same: it is hooked.
    compile_extension(str(directory), "hs_threads", EXTENSION_SOURCE, ("-O2", "-Wno-deprecated-declarations"))
    script = directory / "workload.py"
    lines = write_script(script, WORKLOAD)
    return directory, script, lines


def _arguments(mode, destination):
    sizes = [[[first_size(w, k), second_size(w, k)] for k in range(len(KINDS))] for w in range(THREADS)]
    return mode, destination, ITERATIONS, json.dumps(sizes), FINAL_BLOCK


def _expected(lines):
    """{(worker, line): (blocks, bytes)} kept to the end, and temporary
    (freed before the thread's next allocation: every other block)."""
    kept, temporary = {}, {}
    for w in range(THREADS):
        for k, (name, _, per) in enumerate(KINDS):
            line = lines[name]
            kept[w, line] = (KEPT, KEPT * kept_size(w, k))
            made_first = ITERATIONS * first_size(w, k)
            # A realloc line's first blocks are all freed by the realloc.
            freed_bytes = made_first if per == 2 else made_first - KEPT * first_size(w, k)
            freed_bytes += (ITERATIONS - KEPT) * second_size(w, k)
            temporary[w, line] = (ITERATIONS * per - KEPT, freed_bytes)
    return kept, temporary


def _by_thread_and_line(rows, script, lines, worker_of_thread):
    """{(worker, line): (blocks, bytes)} of the rows, given as (thread,
    allocator name, stack, blocks, bytes), made at a marked line of the
    script by the allocator that line calls."""
    allocator_at = {lines[name]: allocator for name, allocator, _ in KINDS}
    totals = {}
    for thread, allocator, stack, blocks, size in rows:
        if not stack or stack[0][1] != str(script) or allocator_at.get(stack[0][2]) != allocator:
            continue
        key = (worker_of_thread.get(thread), stack[0][2])
        had_blocks, had_size = totals.get(key, (0, 0))
        totals[key] = (had_blocks + blocks, had_size + size)
    return totals


def _workers(threads):
    """{thread id: worker index} from the threads' names (worker-N)."""
    return {tid: int(name[len("worker-"):]) for tid, name in threads.items() if name.startswith("worker-")}


@pytest.mark.parametrize("file_format", ["ALL_ALLOCATIONS", "AGGREGATED_ALLOCATIONS"])
def test_captures_are_exact_per_thread_and_line(workload, tmp_path, file_format):
    directory, script, lines = workload
    capture = tmp_path / "threads.hscap"
    run_script(script, *_arguments(file_format, capture), extra_paths=[directory], timeout=240)
    kept, temporary = _expected(lines)
    with FileReader(capture) as reader:
        assert reader.metadata.file_format is FileFormat[file_format]
        workers = _workers({tid: name for tid, (_, name) in reader.threads().items()})
        assert sorted(workers.values()) == list(range(THREADS))

        def tally(records):
            rows = ((r.tid, r.allocator.name, r.stack_trace(), r.n_allocations, r.size) for r in records)
            return _by_thread_and_line(rows, script, lines, workers)

        assert tally(reader.get_high_watermark_allocation_records(merge_threads=False)) == kept
        assert tally(reader.get_leaked_allocation_records(merge_threads=False)) == kept
        if file_format == "ALL_ALLOCATIONS":
            # Every other block was freed before its thread's next allocation.
            assert tally(reader.get_temporary_allocation_records(merge_threads=False, threshold=0)) == temporary
            made = sum(per for _, _, per in KINDS) * ITERATIONS * THREADS
            assert reader.metadata.total_allocations >= made
        # The high-water mark: the kept blocks and the main thread's final block.
        assert reader.metadata.peak_memory >= FINAL_BLOCK + sum(size for _, size in kept.values())


def _serve_and_watch(script, directory, port):
    """Runs the workload serving its capture on `port` and reads the whole
    stream as `heapscope live` does; the stream once it has ended."""
    from heapscope import _heapscope
    from heapscope.tracker import LIVE_HELLO

    program = subprocess.Popen([sys.executable, str(script), *map(str, _arguments("live", port))],
                               env=python_env(directory), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                connection = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline and program.poll() is None, program.communicate()
                time.sleep(0.05)
        stream = _heapscope.CaptureStream()
        with connection:
            connection.settimeout(240)  # a program that stops sending fails the test
            connection.sendall(LIVE_HELLO)
            while not stream.ended and stream.damage is None:
                data = connection.recv(1 << 20)
                if not data:
                    break
                stream.feed(data)
        out, err = program.communicate(timeout=240)
        assert program.returncode == 0, (out, err)
    finally:
        if program.poll() is None:
            program.kill()
            program.wait()
    assert stream.damage is None and stream.ended
    return stream


def test_live_view_is_exact_per_thread_and_line(workload):
    directory, script, lines = workload
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stream = _serve_and_watch(script, directory, port)
    workers = _workers({tid: info.name for tid, info in stream.threads().items()})
    assert sorted(workers.values()) == list(range(THREADS))
    from heapscope import AllocatorType
    from heapscope.reader import frame_tuples

    rows = ((row.thread, AllocatorType(row.allocator).name, frame_tuples(stream.python_stack(row.python_node)),
             row.count, row.size) for row in stream.live(merge_threads=False))
    live = _by_thread_and_line(rows, script, lines, workers)
    kept, _ = _expected(lines)
    assert live == kept
    assert stream.totals.total_allocations >= sum(per for _, _, per in KINDS) * ITERATIONS * THREADS


def test_tracemalloc_door_is_exact_per_thread_and_line(workload):
    """The door traces Python's three domains: each line of theirs holds its
    KEPT blocks per thread, told apart by their sizes."""
    directory, script, lines = workload
    result = run_script(script, *_arguments("door", 0), extra_paths=[directory], timeout=240)
    traces = {tuple(map(int, key.split())): count for key, count in json.loads(result.stdout).items()}
    expected = {}
    for k, (name, _, _) in enumerate(KINDS):
        if name in PYTHON_DOMAINS:
            for w in range(THREADS):
                expected[lines[name], kept_size(w, k)] = KEPT
    assert {key: count for key, count in traces.items() if key[0] in {lines[n] for n in PYTHON_DOMAINS}} == expected
    # The C allocators are not the door's: nothing of theirs is traced.
    assert not [key for key in traces if key[0] in {lines[n] for n, _, _ in KINDS if n not in PYTHON_DOMAINS}]
