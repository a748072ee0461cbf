/* The floor of a shadow stack kept from CPython 3.11's frame-evaluation hook
 * (PEP 523), for bench/designs/eval_frame_floor.py (issue 17).
 *
 * With a hook installed every Python call goes through it instead of the
 * interpreter's inlined call path; this one does the least a shadow stack
 * needs, a push and a pop of the frame per call, and records nothing. No
 * frame object is made (a profile function's design makes one per call on
 * 3.11). 3.11 only: the hook's signature and the frame struct are 3.11's.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define Py_BUILD_CORE 1
#include <internal/pycore_frame.h>
#include <internal/pycore_interp.h>
#undef Py_BUILD_CORE

#define MAX_DEPTH 8192

static _Thread_local long depth;
static _Thread_local void* stack[MAX_DEPTH];

static PyObject* evaluate(PyThreadState* tstate, _PyInterpreterFrame* frame, int throwflag) {
    if (depth < MAX_DEPTH) stack[depth] = frame;
    depth++;
    PyObject* result = _PyEval_EvalFrameDefault(tstate, frame, throwflag);
    depth--;
    return result;
}

static PyObject* install(PyObject* self, PyObject* unused) {
    (void)self;
    (void)unused;
    _PyInterpreterState_SetEvalFrameFunc(PyInterpreterState_Get(), evaluate);
    Py_RETURN_NONE;
}

static PyObject* uninstall(PyObject* self, PyObject* unused) {
    (void)self;
    (void)unused;
    _PyInterpreterState_SetEvalFrameFunc(PyInterpreterState_Get(), _PyEval_EvalFrameDefault);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"install", install, METH_NOARGS, NULL}, {"uninstall", uninstall, METH_NOARGS, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "eval_frame_floor", NULL, -1, methods};
PyMODINIT_FUNC PyInit_eval_frame_floor(void) { return PyModule_Create(&module); }
