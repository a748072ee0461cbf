/* The floor of the "shadow stack" design, for bench/run_designs.py.
 *
 * A profiler that keeps its own stack from call events (memray, Fil) needs a
 * C profile function called on every Python call and return. This one does
 * the least such a profiler can do, pushing and popping (code, frame) pairs
 * on a per-thread array, and records no allocation at all, so its cost is a
 * lower bound for the design on each workload. On 3.11 the interpreter also
 * materialises a frame object for every call it reports.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <frameobject.h>

#define MAX_DEPTH 4096

typedef struct {
    void* code;
    void* frame;
} Entry;

static _Thread_local Entry stack[MAX_DEPTH];
static _Thread_local int depth;

static int on_event(PyObject* obj, PyFrameObject* frame, int what, PyObject* arg) {
    (void)obj;
    (void)arg;
    if (what == PyTrace_CALL) {
        if (depth < MAX_DEPTH) {
            stack[depth].code = (void*)frame;  /* the code pointer would need PyFrame_GetCode (a new ref) */
            stack[depth].frame = (void*)frame;
        }
        depth++;
    } else if (what == PyTrace_RETURN) {
        if (depth > 0) depth--;
    }
    return 0;
}

static PyObject* install(PyObject* self, PyObject* unused) {
    (void)self;
    (void)unused;
    PyEval_SetProfile(on_event, NULL);
    Py_RETURN_NONE;
}

static PyObject* uninstall(PyObject* self, PyObject* unused) {
    (void)self;
    (void)unused;
    PyEval_SetProfile(NULL, NULL);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"install", install, METH_NOARGS, "Install the shadow-stack profile function in this thread."},
    {"uninstall", uninstall, METH_NOARGS, "Remove it from this thread."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "shadow_stack", NULL, -1, methods};

PyMODINIT_FUNC PyInit_shadow_stack(void) { return PyModule_Create(&module); }
