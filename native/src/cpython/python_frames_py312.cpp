// CPython 3.12 and 3.13: _PyInterpreterFrame as in 3.11, but the C stack has
// shim frames (owner FRAME_OWNED_BY_CSTACK) to skip; 3.13 renames f_code to
// f_executable, prev_instr to instr_ptr, and moves current_frame onto the
// thread state.
#include <Python.h>
#if PY_VERSION_HEX >= 0x030C0000 && PY_VERSION_HEX < 0x030E0000

#define Py_BUILD_CORE 1
#include <internal/pycore_frame.h>
#undef Py_BUILD_CORE

#include "cpython/python_frames.h"

namespace heapscope::python {

PyThreadState* gil_holder() {
#if PY_VERSION_HEX >= 0x030D0000
    return PyThreadState_GetUnchecked();
#else
    return _PyThreadState_UncheckedGet();
#endif
}

PyThreadState* this_thread_state() { return PyGILState_GetThisThreadState(); }

namespace {
_PyInterpreterFrame* top_frame(PyThreadState* tstate) {
#if PY_VERSION_HEX >= 0x030D0000
    return tstate->current_frame;
#else
    return tstate->cframe ? tstate->cframe->current_frame : nullptr;
#endif
}

PyObject* code_of(_PyInterpreterFrame* frame) {
#if PY_VERSION_HEX >= 0x030D0000
    return frame->f_executable;
#else
    return reinterpret_cast<PyObject*>(frame->f_code);
#endif
}

uintptr_t position_of(_PyInterpreterFrame* frame) {
#if PY_VERSION_HEX >= 0x030D0000
    return reinterpret_cast<uintptr_t>(frame->instr_ptr);
#else
    return reinterpret_cast<uintptr_t>(frame->prev_instr);
#endif
}
}  // namespace

namespace {
struct Frames {
    using Frame = _PyInterpreterFrame;
    static const Frame* previous(const Frame* frame) { return frame->previous; }
    static FrameRole read(const Frame* frame, bool skip_incomplete, FrameKey* key) {
        auto* f = const_cast<Frame*>(frame);
        // A shim frame: the interpreter loop was entered from C here, so the
        // frame just above it is an entry frame (bit 0 of its position).
        if (f->owner == FRAME_OWNED_BY_CSTACK) return FrameRole::kEntry;
        PyObject* code = code_of(f);
        if (!code || !PyCode_Check(code)) return FrameRole::kIgnored;
        if (skip_incomplete && _PyFrame_IsIncomplete(f)) return FrameRole::kSkipped;
        *key = FrameKey{reinterpret_cast<uintptr_t>(code), position_of(f)};
        return FrameRole::kKept;
    }
};
}  // namespace
}  // namespace heapscope::python

#include "cpython/anchored_frames.h"

namespace heapscope::python {

uintptr_t object_block_address(PyObject* obj) {
    PyTypeObject* type = Py_TYPE(obj);
    // PyGC_Head (two words) precedes GC objects; pycore_gc.h clashes with the public headers.
    size_t pre = PyType_IS_GC(type) ? 2 * sizeof(uintptr_t) : 0;
#if PY_VERSION_HEX >= 0x030D0000
    if (PyType_HasFeature(type, Py_TPFLAGS_PREHEADER)) pre += 2 * sizeof(PyObject*);
#else
    if (PyType_HasFeature(type, Py_TPFLAGS_MANAGED_DICT)) pre += 2 * sizeof(PyObject*);
#endif
    return reinterpret_cast<uintptr_t>(obj) - pre;
}

bool frame_is_entry(FrameKey frame) { return frame.instr & 1; }

PyCodeObject* frame_code(FrameKey frame) { return reinterpret_cast<PyCodeObject*>(frame.code); }

int frame_lineno(FrameKey frame) {
    PyCodeObject* code = frame_code(frame);
    if (!code) return 0;
    auto* instr = reinterpret_cast<_Py_CODEUNIT*>(frame.instr & ~uintptr_t{1});  // bit 0: the entry flag
    Py_ssize_t lasti = instr - _PyCode_CODE(code);  // as _PyInterpreterFrame_LASTI
    int lineno = PyCode_Addr2Line(code, static_cast<int>(lasti * sizeof(_Py_CODEUNIT)));
    return lineno < 0 ? 0 : lineno;
}

}  // namespace heapscope::python

#endif
