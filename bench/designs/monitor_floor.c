/* The floor of invalidating a cached stack with sys.monitoring (CPython
 * 3.12+), for bench/designs/monitor_floor.py (issue 17).
 *
 * The design: the code objects of the cached (outer) frames get PY_RETURN,
 * PY_UNWIND and PY_YIELD turned on locally; the callback marks the calling
 * thread's cache stale. This callback does the least that needs: it bumps a
 * per-thread generation and returns None. sys.monitoring calls it through
 * vectorcall as a builtin (METH_FASTCALL), the cheapest callable it takes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static _Thread_local unsigned long long generation;

static PyObject* mark(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
    (void)self;
    (void)args;
    (void)nargs;
    ++generation;
    Py_RETURN_NONE;
}

static PyObject* marks(PyObject* self, PyObject* unused) {
    (void)self;
    (void)unused;
    return PyLong_FromUnsignedLongLong(generation);
}

static PyMethodDef methods[] = {
    {"mark", (PyCFunction)(void (*)(void))mark, METH_FASTCALL, "Bumps this thread's generation."},
    {"marks", marks, METH_NOARGS, "This thread's generation."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "monitor_floor", NULL, -1, methods};

PyMODINIT_FUNC PyInit_monitor_floor(void) { return PyModule_Create(&module); }
