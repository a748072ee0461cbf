// Anchored stack walks for CPython 3.11+ (stack/frame_walk.h, stack/frame_anchors.h),
// shared by python_frames_py311.cpp and _py312.cpp, which include it after
// internal/pycore_frame.h and define, in their anonymous namespace:
//   struct Frames (previous, read), _PyInterpreterFrame* top_frame(PyThreadState*).
//
// A call's identity is its frame object. CPython makes one only on demand
// (tracebacks, sys._getframe, PyFrame_GetBack), so a deep walk that finds no
// candidate with one asks for them: a pending call (a safe point, the GIL
// held, never inside a hook) makes the frame objects of the frames it names
// that are still on some thread's stack, through the public API. Those
// objects are heapscope's, not the program's: made untraced, each dies with
// its call.
#pragma once

#include <atomic>

#include "common/hook_guard.h"
#include "stack/frame_anchors.h"
#include "stack/frame_walk.h"

namespace heapscope::python {
namespace {

// The block of the frame object that identifies a frame's call, or 0: only
// a frame the thread's stack owns (a generator's frame is resumed under
// other callers) and that is complete (PyFrame_GetBack skips the others).
uintptr_t identity_of(const _PyInterpreterFrame* frame) {
    auto* f = const_cast<_PyInterpreterFrame*>(frame);
    if (f->owner != FRAME_OWNED_BY_THREAD || !f->frame_obj || _PyFrame_IsIncomplete(f)) return 0;
    return object_block_address(reinterpret_cast<PyObject*>(f->frame_obj));
}

struct AnchoredFrames : Frames {
    static uintptr_t anchor_identity(const Frame* frame) { return identity_of(frame); }
};

// The frames (addresses) of the last request; the pending call makes an
// object only for those it still finds on a thread's stack.
std::atomic<uintptr_t> g_wanted[kAnchorCandidates];
std::atomic<bool> g_requested{false};
std::atomic<bool> g_fruitless{false};  // the last pending call made no identity

struct AnchorThreadState {
    uint64_t anchored_walks;  // walks that met their anchor (for tests)
    int32_t deep_misses;      // full walks of deep stacks since the last request (negative: waiting)
};
// Initial-exec TLS: a plain load, where the default model calls __tls_get_addr.
constinit thread_local AnchorThreadState t_anchor __attribute__((tls_model("initial-exec"))) = {};
// A request makes up to ~kAnchorCandidates frame objects; made after this
// many full deep walks, it pays off if the anchor then stands a few walks.
constexpr int32_t kMissesPerRequest = 4;
constexpr int32_t kMissesAfterFruitless = 1024;

// Makes the frame objects of the wanted frames still on a stack.
int make_identities(void*) {
    SuppressTracing untraced;  // heapscope's objects, not the program's
    uintptr_t wanted[kAnchorCandidates];
    for (uint32_t i = 0; i < kAnchorCandidates; ++i) wanted[i] = g_wanted[i].load(std::memory_order_relaxed);
    g_requested.store(false, std::memory_order_relaxed);
    // An exception already set is the program's: leave it, and the clearing below, alone.
    if (!frame_anchors::enabled() || PyErr_Occurred()) return 0;
    bool made = false;
    PyInterpreterState* interp = PyInterpreterState_Get();
    for (PyThreadState* ts = PyInterpreterState_ThreadHead(interp); ts; ts = PyThreadState_Next(ts)) {
        // The deepest wanted frame on this stack, reached through live links only.
        _PyInterpreterFrame* deepest = nullptr;
        for (_PyInterpreterFrame* f = top_frame(ts); f; f = f->previous) {
            bool is_wanted = false;
            for (uintptr_t w : wanted) is_wanted |= w == reinterpret_cast<uintptr_t>(f);
            if (is_wanted && f->owner == FRAME_OWNED_BY_THREAD && !f->frame_obj && !_PyFrame_IsIncomplete(f)) {
                deepest = f;
            }
        }
        if (!deepest) continue;
        // PyFrame_GetBack makes the object of each frame on its way down.
        PyFrameObject* object = PyThreadState_GetFrame(ts);
        while (object && object->f_frame != deepest) {
            PyFrameObject* back = PyFrame_GetBack(object);
            Py_DECREF(object);
            object = back;
        }
        made |= object != nullptr;
        Py_XDECREF(object);
    }
    PyErr_Clear();  // out of memory: no identity, no harm
    g_fruitless.store(!made, std::memory_order_relaxed);
    return 0;
}

// After a full walk of a deep stack that armed no anchor: names the
// candidates without a frame object, to be given one at the next safe point.
void request_identities(const _PyInterpreterFrame* top, bool skip_incomplete) {
    if (++t_anchor.deep_misses < kMissesPerRequest) return;
    uintptr_t candidates[kAnchorCandidates] = {};
    uint32_t count = 0;
    for_each_anchor_candidate<Frames>(top, skip_incomplete, [&](const _PyInterpreterFrame* f, uint32_t) {
        if (f->owner == FRAME_OWNED_BY_THREAD && !f->frame_obj) candidates[count++] = reinterpret_cast<uintptr_t>(f);
        return false;
    });
    if (count == 0) {  // no candidate can get one (generator frames): look again later
        t_anchor.deep_misses = -kMissesAfterFruitless;
        return;
    }
    if (g_requested.exchange(true)) return;
    for (uint32_t i = 0; i < kAnchorCandidates; ++i) g_wanted[i].store(candidates[i], std::memory_order_relaxed);
    if (Py_AddPendingCall(make_identities, nullptr) != 0) {
        g_requested.store(false);
        return;
    }
    // Wait longer before the next request if the last one made nothing
    // (a thread other than the main one whose frames have moved on).
    t_anchor.deep_misses = g_fruitless.load(std::memory_order_relaxed) ? -kMissesAfterFruitless : 0;
}

// Walks without anchors: anchors off, no chain, or another thread's stack.
uint32_t walk_plain(const _PyInterpreterFrame* top, FrameKey* out, uint32_t limit, uint32_t* total_depth,
                    bool skip_incomplete, FrameChain* chain) {
    if (chain) chain->anchor = 0;
    return walk_frames<Frames>(top, out, limit, total_depth, skip_incomplete, chain);
}

uint32_t walk_anchored(const _PyInterpreterFrame* top, FrameKey* out, uint32_t limit, uint32_t* total_depth,
                       bool skip_incomplete, FrameChain* chain) {
    const uint32_t stored =
        walk_frames<AnchoredFrames>(top, out, limit, total_depth, skip_incomplete, chain);
    t_anchor.anchored_walks += chain->anchored;
    // No anchor, or one met far down that could not be moved up: the frames
    // near the top need identities.
    const bool far = chain->anchored && chain->anchor_far;
    if ((!chain->anchor || far) && *total_depth >= kAnchorMinDepth) request_identities(top, skip_incomplete);
    return stored;
}

}  // namespace

uint32_t capture_stack(PyThreadState* tstate, FrameKey* out, uint32_t limit, uint32_t* total_depth,
                       bool skip_incomplete, FrameChain* chain, bool gil_held) {
    // Anchors need the walk's thread to hold the GIL: it serialises the walk
    // with the frees that fell anchors (frame_anchors.h).
    if (!chain || !gil_held || !frame_anchors::enabled()) {
        return walk_plain(top_frame(tstate), out, limit, total_depth, skip_incomplete, chain);
    }
    return walk_anchored(top_frame(tstate), out, limit, total_depth, skip_incomplete, chain);
}

bool start_frame_anchors() {
    frame_anchors::enable(true);
    return true;
}
void stop_frame_anchors() { frame_anchors::enable(false); }
uint64_t anchored_walks() { return t_anchor.anchored_walks; }

}  // namespace heapscope::python
