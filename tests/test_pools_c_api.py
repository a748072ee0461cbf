"""The C and C++ pool API (native/include/heapscope/pools.h), used by a small
C++ extension built here: a ref-counted image type of the library's own that
reports itself through the RAII PoolResource, plain C calls by pool name,
and eight native threads registering and releasing without the GIL."""

import shutil
import subprocess
import sysconfig

import pytest

import heapscope
from capture_helpers import run_script, write_script

EXTENSION_SOURCE = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <heapscope/pools.h>

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

static heapscope::ResourcePool g_images("native images");

// A library's own ref-counted image: it reports itself, whether or not
// heapscope is loaded, and is released with its last reference.
class Image {
  public:
    explicit Image(size_t bytes) : pixels_(bytes), tracked_(g_images, this, bytes, "native-rgb") {}
    void retain() { refs_.fetch_add(1); }
    void release() {
        if (refs_.fetch_sub(1) == 1) delete this;
    }
    bool tracked() const { return tracked_.tracked(); }

  private:
    std::atomic<int> refs_{1};
    std::vector<unsigned char> pixels_;
    heapscope::PoolResource tracked_;
};

static std::mutex g_lock;
static std::vector<Image*> g_kept;

extern "C" __attribute__((noinline, visibility("default"))) Image* hs_make_image(size_t bytes) {
    return new Image(bytes);
}

static PyObject* make_image(PyObject*, PyObject* arg) {
    size_t bytes = PyLong_AsSize_t(arg);
    if (bytes == (size_t)-1 && PyErr_Occurred()) return NULL;
    Image* image = hs_make_image(bytes);
    std::lock_guard<std::mutex> lock(g_lock);
    g_kept.push_back(image);
    return Py_BuildValue("(nO)", (Py_ssize_t)g_kept.size() - 1, image->tracked() ? Py_True : Py_False);
}

static PyObject* drop_image(PyObject*, PyObject* arg) {
    Py_ssize_t index = PyLong_AsSsize_t(arg);
    if (index == -1 && PyErr_Occurred()) return NULL;
    std::lock_guard<std::mutex> lock(g_lock);
    if (index < 0 || (size_t)index >= g_kept.size() || !g_kept[index]) {
        PyErr_SetString(PyExc_IndexError, "no such image");
        return NULL;
    }
    g_kept[index]->release();
    g_kept[index] = nullptr;
    Py_RETURN_NONE;
}

static PyObject* drop_all(PyObject*, PyObject*) {
    std::lock_guard<std::mutex> lock(g_lock);
    for (Image*& image : g_kept) {
        if (image) image->release();
        image = nullptr;
    }
    Py_RETURN_NONE;
}

static PyObject* c_track(PyObject*, PyObject* args) {
    const char* pool;
    const char* kind;
    unsigned long long id, size;
    if (!PyArg_ParseTuple(args, "zKKz", &pool, &id, &size, &kind)) return NULL;
    return PyLong_FromLong(heapscope_pool_track(pool, id, size, kind));
}

static PyObject* c_release(PyObject*, PyObject* args) {
    const char* pool;
    unsigned long long id;
    if (!PyArg_ParseTuple(args, "zK", &pool, &id)) return NULL;
    return PyLong_FromLong(heapscope_pool_release(pool, id));
}

// `threads` threads each make `per_thread` images of (i % 50 + 1) * 16
// bytes, keep every third (shared: retained, then released once by the
// maker) and release the rest at once. Without the GIL.
static PyObject* run_threads(PyObject*, PyObject* args) {
    int threads, per_thread;
    if (!PyArg_ParseTuple(args, "ii", &threads, &per_thread)) return NULL;
    Py_BEGIN_ALLOW_THREADS
    std::vector<std::thread> running;
    for (int t = 0; t < threads; ++t) {
        running.emplace_back([per_thread] {
            std::vector<Image*> mine;
            for (int i = 0; i < per_thread; ++i) {
                Image* image = hs_make_image((size_t)(i % 50 + 1) * 16);
                if (i % 3 == 0) {
                    image->retain();  // a second owner...
                    image->release();  // ...and the first one lets go
                    mine.push_back(image);
                } else {
                    image->release();
                }
            }
            std::lock_guard<std::mutex> lock(g_lock);
            g_kept.insert(g_kept.end(), mine.begin(), mine.end());
        });
    }
    for (std::thread& thread : running) thread.join();
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"make_image", make_image, METH_O, NULL},
    {"drop_image", drop_image, METH_O, NULL},
    {"drop_all", drop_all, METH_NOARGS, NULL},
    {"c_track", c_track, METH_VARARGS, NULL},
    {"c_release", c_release, METH_VARARGS, NULL},
    {"run_threads", run_threads, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "hs_pools_ext", NULL, -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit_hs_pools_ext(void) { return PyModule_Create(&module); }
"""


@pytest.fixture(scope="module")
def extension_dir(tmp_path_factory):
    compiler = shutil.which("c++") or shutil.which("g++")
    if not compiler:
        pytest.skip("no C++ compiler")
    build = tmp_path_factory.mktemp("pools_ext")
    source = build / "hs_pools_ext.cpp"
    source.write_text(EXTENSION_SOURCE)
    target = build / ("hs_pools_ext" + sysconfig.get_config_var("EXT_SUFFIX"))
    subprocess.run([compiler, "-std=c++17", "-shared", "-fPIC", "-O1", "-g", "-fno-omit-frame-pointer", "-pthread",
                    "-Wall", "-Wextra", "-Werror", "-I", sysconfig.get_paths()["include"],
                    "-I", heapscope.get_include(), str(source), "-o", str(target)], check=True)
    return build


def run(tmp_path, extension_dir, source):
    lines = write_script(tmp_path / "script.py", source)
    result = run_script(tmp_path / "script.py", tmp_path / "out.hscap", extra_paths=[extension_dir])
    return result.stdout.split("\n"), lines


def test_a_native_type_reports_itself_once_heapscope_is_loaded(tmp_path, extension_dir):
    out, _ = run(tmp_path, extension_dir, """
        import sys, time
        import hs_pools_ext as ext
        assert "heapscope" not in sys.modules
        print(ext.c_track("p", 1, 10, None), ext.c_release("p", 1))   # heapscope absent: no-ops, -2
        before, tracked = ext.make_image(1000)                         # made before heapscope: unknown to it
        print(tracked)
        from heapscope import pools
        time.sleep(0.01)                                               # the header looks again after 1 ms
        index, tracked = ext.make_image(4096)
        print(tracked)
        snap = pools.pool("native images").make_snapshot()
        print([(r.pool, r.size, r.kind, r.source) for r in snap.resources])
        ext.drop_image(before)                                         # released: harmless
        ext.drop_image(index)
        print(pools.pool("native images").count)
        print(ext.c_track("by name", 7, 70, "k"), ext.c_track("by name", 8, 80, None),
              [(r.id, r.size, r.kind) for r in sorted(pools.pool("by name").make_snapshot().resources, key=lambda r: r.id)])
        print(ext.c_release("by name", 7), ext.c_release("by name", 7), pools.pool("by name").total_size)
        print(ext.c_track(None, 1, 1, None), ext.c_track("", 1, 1, None), ext.c_release(None, 1))
        print(ext.c_release("never made", 1), "never made" in pools.domain_names().values())
    """)
    assert out[0] == "-2 -2"
    assert out[1] == "False"
    assert out[2] == "True"
    assert out[3] == "[('native images', 4096, 'native-rgb', None)]"
    assert out[4] == "0"
    assert out[5] == "0 0 [(7, 70, 'k'), (8, 80, None)]"
    assert out[6] == "0 1 80"
    assert out[7] == "-1 -1 -1"
    assert out[8] == "1 False"  # releasing by name never makes a pool


def test_eight_native_threads_without_the_gil_give_exact_totals(tmp_path, extension_dir):
    out, _ = run(tmp_path, extension_dir, """
        from heapscope import pools
        import hs_pools_ext as ext
        ext.make_image(1)            # the header finds heapscope
        ext.drop_all()
        ext.run_threads(8, 6000)
        pool = pools.pool("native images")
        snap = pool.make_snapshot()
        print(pool.count, pool.total_size, snap.count, snap.total_size)
        ext.drop_all()
        print(pool.count, pool.total_size)
    """)
    kept = [i for i in range(6000) if i % 3 == 0]
    assert out[0] == f"{8 * len(kept)} {8 * sum((i % 50 + 1) * 16 for i in kept)} " \
                     f"{8 * len(kept)} {8 * sum((i % 50 + 1) * 16 for i in kept)}"
    assert out[1] == "0 0"


def test_detailed_sources_from_cpp_hold_the_native_and_the_python_stack(tmp_path, extension_dir):
    out, lines = run(tmp_path, extension_dir, """
        from heapscope import pools
        import hs_pools_ext as ext
        pools.enable_detailed_profiling()

        def load():
            return ext.make_image(512)   # @made

        load()
        (resource,) = pools.pool("native images").make_snapshot().resources
        source = resource.source
        print(source.python[0][:3])
        print([f.function for f in source.native[:8]])
        print([(f.filename.endswith("hs_pools_ext.cpp"), f.function) for f in source.native[:2]])
        print(any("_heapscope" in f.filename for f in source.native))
        python_in_merged = [(f.lineno, f.function) for f in source.frames if not f.is_native]
        print(python_in_merged[:2])
        first_python = next(i for i, f in enumerate(source.frames) if not f.is_native)
        below = [f.function for f in source.frames[:first_python]]
        print("hs_make_image" in below, any(name.startswith("make_image(") for name in below))
    """)
    script = str(tmp_path / "script.py")
    assert out[0] == str((script, lines["made"], "load"))
    assert "hs_make_image" in out[1]
    # The stack starts in the library's code: heapscope's own frames, and the
    # header's functions inlined into the library, are left out.
    assert out[2] == "[(True, 'Image::Image(unsigned long)'), (True, 'hs_make_image')]"
    assert out[3] == "False"
    assert out[4] == f"[({lines['made']}, 'load'), ({lines['made'] + 2}, '<module>')]"
    # Merged: the library's frames, then the Python frames that called it.
    assert out[5] == "True True"


def test_a_pool_made_from_cpp_during_a_capture_is_named_in_it(tmp_path, extension_dir):
    out, lines = run(tmp_path, extension_dir, """
        import sys
        import heapscope
        import hs_pools_ext as ext
        with heapscope.Tracker(sys.argv[1]):
            print(ext.c_track("made in C++", 99, 12345, None))   # @track
        reader = heapscope.FileReader(sys.argv[1])
        names = reader.pool_names
        domain = [d for d, n in names.items() if n == "made in C++"][0]
        records = [r for r in reader.get_leaked_allocation_records() if r.domain == domain]
        print([(r.size, r.stack_trace()[0][2]) for r in records])
    """)
    assert out[0] == "0"
    assert out[1] == f"[(12345, {lines['track']})]"


def test_fork_while_native_threads_register_leaves_no_lock_held(tmp_path, extension_dir):
    out, _ = run(tmp_path, extension_dir, """
        import os, signal, threading, time
        from heapscope import pools
        import hs_pools_ext as ext
        ext.make_image(1)
        stop = False

        def churn():
            while not stop:
                ext.run_threads(2, 20000)   # without the GIL
                ext.drop_all()

        worker = threading.Thread(target=churn)
        worker.start()
        hung = 0
        for _ in range(100):
            pid = os.fork()
            if pid == 0:
                # Every shard of the pool the threads hammer (count reads them
                # all), and with details on the sources lock.
                import warnings
                warnings.simplefilter("ignore")
                pools.pool("native images").count
                pools.enable_detailed_profiling()
                ext.c_track("native images", 1, 1, None)
                os._exit(0)
            deadline = time.monotonic() + 10
            while os.waitpid(pid, os.WNOHANG) == (0, 0):
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    hung += 1
                    break
                time.sleep(0.001)
        stop = True
        worker.join()
        print("hung", hung)
    """)
    assert out[0] == "hung 0"


@pytest.mark.parametrize("compiler, standard, suffix", [("cc", "-std=c11", ".c"), ("cc", "-std=gnu99", ".c"),
                                                         ("c++", "-std=c++17", ".cpp")])
def test_pools_header_compiles_cleanly_and_is_a_no_op_without_heapscope(tmp_path, compiler, standard, suffix):
    if not shutil.which(compiler):
        pytest.skip(f"no {compiler}")
    source = tmp_path / ("use" + suffix)
    body = ("int main(void) { return heapscope_pool_track(\"p\", 1, 2, NULL) == -2 && "
            "heapscope_pool_release(\"p\", 1) == -2 && heapscope_pool_get(\"p\") == NULL ? 0 : 1; }\n")
    if suffix == ".cpp":
        body = ("int main() { heapscope::ResourcePool pool(\"p\"); heapscope::PoolResource r(pool, 1, 2);\n"
                "  return !r.tracked() && pool.track(3, 4) == -2 && heapscope_pool_track(\"p\", 1, 2, nullptr) == -2 ? 0 : 1; }\n")
    # With heapscope.h too: the two headers' internals do not collide.
    source.write_text("#include <heapscope/heapscope.h>\n#include <heapscope/pools.h>\n" + body)
    binary = tmp_path / "use"
    subprocess.run([compiler, standard, "-Wall", "-Wextra", "-Wpedantic", "-Werror", "-I", heapscope.get_include(),
                    str(source), "-o", str(binary), "-ldl"], check=True)
    assert subprocess.run([str(binary)]).returncode == 0
