// CPython 3.9 and 3.10: frames are PyFrameObjects linked by f_back, reached
// from tstate->frame; f_lasti is a byte offset (3.9) or an instruction index
// (3.10). Not exercised on this project's machines, which run 3.11.
#include <Python.h>
#if PY_VERSION_HEX >= 0x03090000 && PY_VERSION_HEX < 0x030B0000

#include <frameobject.h>

#include "cpython/python_frames.h"

namespace heapscope::python {

PyThreadState* gil_holder() { return _PyThreadState_UncheckedGet(); }

PyThreadState* this_thread_state() { return PyGILState_GetThisThreadState(); }

namespace {
struct Frames {
    using Frame = PyFrameObject;
    static const Frame* previous(const Frame* frame) { return frame->f_back; }
    static FrameRole read(const Frame* frame, bool /*skip_incomplete: no frame is incomplete here*/, FrameKey* key) {
        *key = FrameKey{reinterpret_cast<uintptr_t>(frame->f_code),
                        static_cast<uintptr_t>(static_cast<intptr_t>(frame->f_lasti))};
        return FrameRole::kKept;
    }
};
}  // namespace

uint32_t capture_stack(PyThreadState* tstate, FrameKey* out, uint32_t limit, uint32_t* total_depth,
                       bool skip_incomplete, FrameChain* chain, bool) {
    return walk_frames<Frames>(tstate->frame, out, limit, total_depth, skip_incomplete, chain);
}

bool start_frame_anchors() { return false; }  // frames are objects that are reused (zombie frames)
void stop_frame_anchors() {}
uint64_t anchored_walks() { return 0; }

uintptr_t object_block_address(PyObject* obj) {
    // PyGC_Head is two words on 3.8+.
    size_t pre = PyType_IS_GC(Py_TYPE(obj)) ? 2 * sizeof(uintptr_t) : 0;
    return reinterpret_cast<uintptr_t>(obj) - pre;
}

bool frame_is_entry(FrameKey) { return true; }

PyCodeObject* frame_code(FrameKey frame) { return reinterpret_cast<PyCodeObject*>(frame.code); }

int frame_lineno(FrameKey frame) {
    PyCodeObject* code = frame_code(frame);
    if (!code) return 0;
    auto lasti = static_cast<int>(static_cast<intptr_t>(frame.instr));
#if PY_VERSION_HEX >= 0x030A0000
    int lineno = lasti < 0 ? code->co_firstlineno : PyCode_Addr2Line(code, lasti * 2);
#else
    int lineno = PyCode_Addr2Line(code, lasti);
#endif
    return lineno < 0 ? 0 : lineno;
}

}  // namespace heapscope::python

#endif
