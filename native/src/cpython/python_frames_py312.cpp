// CPython 3.12 and 3.13: _PyInterpreterFrame as in 3.11, but the C stack has
// shim frames (owner FRAME_OWNED_BY_CSTACK) to skip; 3.13 renames f_code to
// f_executable, prev_instr to instr_ptr, and moves current_frame onto the
// thread state. Also the optional anchored walks (sys.monitoring, below).
#include <Python.h>
#if PY_VERSION_HEX >= 0x030C0000 && PY_VERSION_HEX < 0x030E0000

#define Py_BUILD_CORE 1
#include <internal/pycore_frame.h>
#undef Py_BUILD_CORE

#include <atomic>

#include "common/hook_guard.h"
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
// Anchored walks: the code objects whose frames may serve as anchors, each
// instrumented for our tool (PY_RETURN and PY_YIELD locally; PY_UNWIND can
// only be global). Written only under the GIL by the pending call, read by
// any walk: an address not seen yet just means no anchor.
constexpr int kTool = 4;  // sys.monitoring tool ids 0-5 are for tools; 4 is not one CPython names
// sys.monitoring.events values, the same in 3.12 and 3.13 (3.12 keeps the
// PY_MONITORING_EVENT_* numbers in an internal header).
constexpr int kPyReturn = 1 << 2, kPyYield = 1 << 3, kPyUnwind = 1 << 12;
constexpr size_t kCodeSlots = 4096;  // a power of two; at most half of it filled
std::atomic<uintptr_t> g_codes[kCodeSlots];
size_t g_code_count = 0;  // under the GIL
std::atomic<bool> g_anchors_on{false};
std::atomic<bool> g_arm_requested{false};
// Starts at 1: a thread's anchor is live only while its epoch is the current one
// (a stop forgets every anchor, since events are off from then).
std::atomic<uint64_t> g_epoch{1};
// The thread's anchor as the callback sees it. Initial-exec TLS: a plain
// load, where the default model calls __tls_get_addr at each use (that cost
// ~270 instructions per allocation at depth 5).
struct AnchorThreadState {
    uintptr_t anchor;         // 0: none
    uint64_t epoch;           // g_epoch when it was armed
    uint64_t anchored_walks;  // walks that met their anchor
    uint32_t request_backoff;
};
constinit thread_local AnchorThreadState t_state __attribute__((tls_model("initial-exec"))) = {};
constexpr uint32_t kRequestBackoff = 1024;  // walks

size_t code_slot(uintptr_t code) { return (code >> 4) * 0x9E3779B97F4A7C15ull >> 52; }  // 12 bits

bool code_instrumented(uintptr_t code) {
    for (size_t i = code_slot(code);; i = (i + 1) & (kCodeSlots - 1)) {
        uintptr_t at = g_codes[i].load(std::memory_order_acquire);
        if (at == code) return true;
        if (at == 0) return false;
    }
}

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
    // A complete frame of the stack (an incomplete one can leave without an
    // event: RETURN_GENERATOR) whose code reports its leaving.
    static bool anchorable(const Frame* frame) {
        auto* f = const_cast<Frame*>(frame);
        if (f->owner != FRAME_OWNED_BY_THREAD && f->owner != FRAME_OWNED_BY_GENERATOR) return false;
        if (_PyFrame_IsIncomplete(f)) return false;
        return code_instrumented(reinterpret_cast<uintptr_t>(code_of(f)));
    }
};

// The same frames for walks without anchors (the option off, or no chain).
struct PlainFrames {
    using Frame = _PyInterpreterFrame;
    static const Frame* previous(const Frame* frame) { return Frames::previous(frame); }
    static FrameRole read(const Frame* frame, bool skip_incomplete, FrameKey* key) {
        return Frames::read(frame, skip_incomplete, key);
    }
};

PyObject* monitoring() {
    PyObject* sys = PyImport_ImportModule("sys");
    if (!sys) return nullptr;
    PyObject* module = PyObject_GetAttrString(sys, "monitoring");
    Py_DECREF(sys);
    return module;
}

// The callback of PY_RETURN, PY_YIELD and PY_UNWIND: the frame leaving is
// the thread's current one; if it is the anchor, the anchor is gone.
PyObject* frame_leaves(PyObject*, PyObject* const*, Py_ssize_t) {
    if (t_state.anchor && reinterpret_cast<uintptr_t>(top_frame(gil_holder())) == t_state.anchor) t_state.anchor = 0;
    Py_RETURN_NONE;
}
PyMethodDef g_callback_def = {"_heapscope_frame_leaves", reinterpret_cast<PyCFunction>(reinterpret_cast<void*>(frame_leaves)),
                              METH_FASTCALL, nullptr};

// The code objects of the anchor candidates of the walk that asked for
// instrumentation (pointers only: the pending call instruments one only if a
// frame of some thread still runs it, which keeps it alive).
std::atomic<uintptr_t> g_wanted[kAnchorCandidates];

std::atomic<bool> g_fruitless{false};  // the last pending call instrumented nothing

// Stores in `codes` the code of the candidates above `anchor` (all if 0) that
// are not instrumented; returns how many. An anchor nearer the top makes the
// walks shorter.
uint32_t uninstrumented_candidates(_PyInterpreterFrame* top, uintptr_t anchor, bool skip_incomplete,
                                   uintptr_t* codes) {
    uint32_t kept = 0, count = 0;
    uint32_t step = 0;
    for (_PyInterpreterFrame* f = top; f && step < kAnchorOffset + kAnchorCandidates; f = f->previous, ++step) {
        if (reinterpret_cast<uintptr_t>(f) == anchor) break;
        FrameKey key;
        if (Frames::read(f, skip_incomplete, &key) != FrameRole::kKept || kept++ < kAnchorOffset) continue;
        if (!code_instrumented(key.code)) codes[count++] = key.code;
    }
    return count;
}

// Instruments the wanted code objects. A pending call: the GIL is held, at a safe point.
int instrument_anchors(void*) {
    SuppressTracing untraced;  // instrumenting allocates: not the program's memory
    if (!g_anchors_on.load(std::memory_order_relaxed)) {
        g_arm_requested.store(false, std::memory_order_relaxed);
        return 0;
    }
    uintptr_t wanted[kAnchorCandidates];
    for (uint32_t i = 0; i < kAnchorCandidates; ++i) wanted[i] = g_wanted[i].load(std::memory_order_relaxed);
    g_arm_requested.store(false, std::memory_order_relaxed);
    const size_t count_before = g_code_count;
    PyObject* mon = monitoring();
    if (!mon) {
        PyErr_Clear();
        return 0;
    }
    PyInterpreterState* interp = PyInterpreterState_Get();
    for (PyThreadState* ts = PyInterpreterState_ThreadHead(interp); ts; ts = PyThreadState_Next(ts)) {
        for (_PyInterpreterFrame* f = top_frame(ts); f; f = f->previous) {
            if (f->owner == FRAME_OWNED_BY_CSTACK) continue;
            PyObject* code = code_of(f);
            if (!code || !PyCode_Check(code)) continue;
            auto address = reinterpret_cast<uintptr_t>(code);
            bool is_wanted = false;
            for (uintptr_t w : wanted) is_wanted |= w == address;
            if (!is_wanted || code_instrumented(address) || g_code_count >= kCodeSlots / 2) continue;
            PyObject* done = PyObject_CallMethod(mon, "set_local_events", "iOi", kTool, code, kPyReturn | kPyYield);
            if (!done) {
                PyErr_Clear();
                continue;
            }
            Py_DECREF(done);
            Py_INCREF(code);  // kept instrumented, and alive, until stop_frame_anchors
            size_t i = code_slot(address);
            while (g_codes[i].load(std::memory_order_relaxed) != 0) i = (i + 1) & (kCodeSlots - 1);
            g_codes[i].store(address, std::memory_order_release);
            ++g_code_count;
        }
    }
    Py_DECREF(mon);
    g_fruitless.store(g_code_count == count_before, std::memory_order_relaxed);
    return 0;
}

}  // namespace

bool start_frame_anchors() {
    SuppressTracing untraced;
    PyObject* mon = monitoring();
    if (!mon) {
        PyErr_Clear();
        return false;
    }
    PyObject* callback = PyCFunction_New(&g_callback_def, nullptr);
    bool ok = callback != nullptr;
    PyObject* r = ok ? PyObject_CallMethod(mon, "use_tool_id", "is", kTool, "heapscope") : nullptr;
    ok = r != nullptr;
    Py_XDECREF(r);
    for (int event : {kPyReturn, kPyYield, kPyUnwind}) {
        if (!ok) break;
        r = PyObject_CallMethod(mon, "register_callback", "iiO", kTool, event, callback);
        ok = r != nullptr;
        Py_XDECREF(r);
    }
    if (ok) {
        r = PyObject_CallMethod(mon, "set_events", "ii", kTool, kPyUnwind);
        ok = r != nullptr;
        Py_XDECREF(r);
    }
    Py_XDECREF(callback);
    if (!ok) PyErr_Clear();
    Py_DECREF(mon);
    if (ok) {
        g_epoch.fetch_add(1, std::memory_order_relaxed);
        g_anchors_on.store(true, std::memory_order_release);
    }
    return ok;
}

void stop_frame_anchors() {
    if (!g_anchors_on.exchange(false)) return;
    SuppressTracing untraced;
    g_epoch.fetch_add(1, std::memory_order_relaxed);  // every anchor armed so far is dead
    PyObject* mon = monitoring();
    for (auto& slot : g_codes) {
        uintptr_t code = slot.exchange(0);
        if (!code) continue;
        if (mon) Py_XDECREF(PyObject_CallMethod(mon, "set_local_events", "iOi", kTool, reinterpret_cast<PyObject*>(code), 0));
        Py_DECREF(reinterpret_cast<PyObject*>(code));
    }
    g_code_count = 0;
    if (mon) {
        Py_XDECREF(PyObject_CallMethod(mon, "set_events", "ii", kTool, 0));
        Py_XDECREF(PyObject_CallMethod(mon, "free_tool_id", "i", kTool));
        Py_DECREF(mon);
    }
    PyErr_Clear();
}

uint64_t anchored_walks() { return t_state.anchored_walks; }

uint32_t capture_stack(PyThreadState* tstate, FrameKey* out, uint32_t limit, uint32_t* total_depth,
                       bool skip_incomplete, FrameChain* chain) {
    if (!g_anchors_on.load(std::memory_order_relaxed) || !chain || tstate != gil_holder()) {
        // Anchors need the walk's thread to be the one whose events its callback sees.
        if (chain) chain->anchor = 0;
        return walk_frames<PlainFrames>(top_frame(tstate), out, limit, total_depth, skip_incomplete, chain);
    }
    const uint64_t epoch = g_epoch.load(std::memory_order_relaxed);
    if (t_state.epoch != epoch) t_state.request_backoff = 0;  // a new session: ask at once
    const bool live = t_state.anchor != 0 && t_state.anchor == chain->anchor && t_state.epoch == epoch;
    uint32_t stored = walk_frames<Frames>(top_frame(tstate), out, limit, total_depth, skip_incomplete, chain, live);
    t_state.anchored_walks += chain->anchored;
    t_state.anchor = chain->anchor;  // what the callback watches: 0 if the walk armed none
    t_state.epoch = epoch;
    // A full walk of a deep stack whose candidates above the anchor (if any)
    // are not instrumented: ask for their code to be, at the next safe point.
    // If the last such request instrumented nothing, wait a while first.
    if (!chain->anchored && *total_depth >= kAnchorMinDepth && t_state.request_backoff == 0) {
        uintptr_t codes[kAnchorCandidates];
        const uint32_t count = uninstrumented_candidates(top_frame(tstate), chain->anchor, skip_incomplete, codes);
        if (count && !g_arm_requested.exchange(true)) {
            for (uint32_t i = 0; i < kAnchorCandidates; ++i) {
                g_wanted[i].store(i < count ? codes[i] : 0, std::memory_order_relaxed);
            }
            if (Py_AddPendingCall(instrument_anchors, nullptr) != 0) g_arm_requested.store(false);
            if (g_fruitless.load(std::memory_order_relaxed)) t_state.request_backoff = kRequestBackoff;
        }
    } else if (t_state.request_backoff) {
        --t_state.request_backoff;
    }
    return stored;
}

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
