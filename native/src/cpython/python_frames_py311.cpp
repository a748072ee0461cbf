// CPython 3.11: frames are _PyInterpreterFrame structs linked by `previous`,
// reached from tstate->cframe->current_frame; `prev_instr` points into the
// code object's adaptive bytecode.
#include <Python.h>
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000

#define Py_BUILD_CORE 1
#include <internal/pycore_frame.h>
#undef Py_BUILD_CORE

#include "cpython/python_frames.h"

namespace heapscope::python {

PyThreadState* gil_holder() { return _PyThreadState_UncheckedGet(); }

PyThreadState* this_thread_state() { return PyGILState_GetThisThreadState(); }

namespace {
struct Frames {
    using Frame = _PyInterpreterFrame;
    static const Frame* previous(const Frame* frame) { return frame->previous; }
    static FrameRole read(const Frame* frame, bool skip_incomplete, FrameKey* key) {
        if (skip_incomplete && _PyFrame_IsIncomplete(const_cast<Frame*>(frame))) return FrameRole::kSkipped;
        *key = FrameKey{reinterpret_cast<uintptr_t>(frame->f_code),
                        reinterpret_cast<uintptr_t>(frame->prev_instr) | (frame->is_entry ? 1u : 0u)};
        return FrameRole::kKept;
    }
};


_PyInterpreterFrame* top_frame(PyThreadState* tstate) { return tstate->cframe ? tstate->cframe->current_frame : nullptr; }
}  // namespace
}  // namespace heapscope::python

#include "cpython/anchored_frames.h"

namespace heapscope::python {

uintptr_t object_block_address(PyObject* obj) {
    PyTypeObject* type = Py_TYPE(obj);
    // PyGC_Head (two words) precedes GC objects; pycore_gc.h clashes with the public headers.
    size_t pre = PyType_IS_GC(type) ? 2 * sizeof(uintptr_t) : 0;
    if (PyType_HasFeature(type, Py_TPFLAGS_MANAGED_DICT)) pre += 2 * sizeof(PyObject*);
    return reinterpret_cast<uintptr_t>(obj) - pre;
}

bool frame_is_entry(FrameKey frame) { return frame.instr & 1; }

PyCodeObject* frame_code(FrameKey frame) { return reinterpret_cast<PyCodeObject*>(frame.code); }

int frame_lineno(FrameKey frame) {
    PyCodeObject* code = frame_code(frame);
    if (!code) return 0;
    auto* instr = reinterpret_cast<_Py_CODEUNIT*>(frame.instr & ~uintptr_t{1});  // bit 0: the entry flag
    // As _PyInterpreterFrame_LASTI: a frame that has not started yet points
    // one unit before its first instruction.
    Py_ssize_t lasti = instr - _PyCode_CODE(code);
    int lineno = PyCode_Addr2Line(code, static_cast<int>(lasti * sizeof(_Py_CODEUNIT)));
    return lineno < 0 ? 0 : lineno;
}

}  // namespace heapscope::python

#endif
