#include "hooks/session.h"

#include <cstdlib>
#include <string_view>

#include "cpython/python_frames.h"
#include "engine/engine.h"
#include "hooks/got_hooks.h"
#include "hooks/pymem_hooks.h"
#include "hooks/record.h"
#include "hooks/ref_tracer.h"

namespace heapscope::session {

namespace {
// Guarded by the GIL, as every caller holds it.
Door g_door = Door::kNone;
bool g_python_allocators = false;
bool g_pymem_hooked = false;  // PEP 445 hooks of some kind are in place
}  // namespace

const char* door_name(Door door) {
    switch (door) {
        case Door::kTracemalloc: return "heapscope.tracemalloc";
        case Door::kTracker: return "a heapscope Tracker";
        case Door::kHeapprof: return "heapprof";
        case Door::kNone: break;
    }
    return "none";
}

bool door_from_name(const std::string& name, Door* door) {
    if (name == "tracemalloc") *door = Door::kTracemalloc;
    else if (name == "tracker") *door = Door::kTracker;
    else if (name == "heapprof") *door = Door::kHeapprof;
    else return false;
    return true;
}

Door running() { return engine().tracing() ? g_door : Door::kNone; }

std::string refusal(Door door) {
    const Door now = running();
    if (now == Door::kNone) return {};
    if (now == door) {
        switch (door) {
            case Door::kTracemalloc: return {};  // the stdlib ignores a second start()
            case Door::kTracker: return "No more than one Tracker instance can be active at the same time";  // memray's words
            case Door::kHeapprof: return "heapprof is already running: call heapprof.stop() first";
            case Door::kNone: break;
        }
    }
    return std::string("cannot start ") + door_name(door) + ": " + door_name(now) +
           " is active in this process; stop it first";
}

bool begin(Door door, const Options& options) {
    if (!engine().start(options.traceback_limit, options.sink, options.native_traces, options.sampling)) return false;
    g_door = door;
    hooks::set_skip_incomplete_frames(door == Door::kTracemalloc);
    g_python_allocators = options.python_allocators;
    // Object lifetimes watch the object allocator's frees (hooks/ref_tracer.h).
    const bool watch_object_frees = options.object_lifetimes && reftrace::available();
    g_pymem_hooked = g_python_allocators || watch_object_frees;
    // Deep stacks walked only down to an anchor (3.11+; issue 17,
    // bench/RESULTS.md "Depth"). Anchors fall when their frame object is
    // freed, which only a hook on the object domain's frees sees. A sampled
    // session walks once per pick, too seldom to pay for that hook on every
    // free: its frees go unhooked unless HEAPSCOPE_FRAME_ANCHORS=1 (tests).
    // HEAPSCOPE_FRAME_ANCHORS=0 turns them off (for benchmarks).
    const char* anchors_env = std::getenv("HEAPSCOPE_FRAME_ANCHORS");
    const std::string_view anchors_asked = anchors_env ? anchors_env : "";
    const bool anchors = g_python_allocators && anchors_asked != "0" &&
                         (!engine().sampling_active() || anchors_asked == "1");
    if (g_pymem_hooked) pymem::install(g_python_allocators, watch_object_frees, anchors);
    got::install(options.sink != nullptr);
    // The stdlib's tracemalloc semantics: an object from a free list gets the
    // stack that reused it. A capture's object lifetimes: every object made.
    reftrace::install((door == Door::kTracemalloc ? reftrace::kRestamp : 0u) |
                      (options.object_lifetimes ? reftrace::kObjectLifetimes : 0u));
    if (anchors) python::start_frame_anchors();
    return true;
}

void end(std::vector<FrameKey>* unpin) {
    if (g_door == Door::kNone && !engine().tracing()) return;
    python::stop_frame_anchors();
    reftrace::uninstall();
    got::uninstall();
    if (g_pymem_hooked) pymem::uninstall();
    g_python_allocators = g_pymem_hooked = false;
    g_door = Door::kNone;
    engine().stop(unpin);
    hooks::set_skip_incomplete_frames(false);
}

}  // namespace heapscope::session
