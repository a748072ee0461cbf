// The session owner: which front door is tracing, and the one order in which
// a session's hooks go in and come out.
//
// heapscope has three ways in that trace (the tracemalloc door, a Tracker,
// heapprof, which runs a Tracker); one engine serves them, so one runs at a
// time. Every door asks here before it starts, and starts and ends through
// here, so the rules and their messages are written once. Requires the GIL;
// calls no Python.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/frame.h"
#include "sample/sampler.h"

namespace heapscope {
class CaptureSink;
}

namespace heapscope::session {

enum class Door : uint8_t { kNone = 0, kTracemalloc, kTracker, kHeapprof };

// "heapscope.tracemalloc", "a heapscope Tracker", "heapprof"; "none".
const char* door_name(Door door);
// The door from its Python name ("tracemalloc", "tracker", "heapprof"); false if unknown.
bool door_from_name(const std::string& name, Door* door);

// The door tracing now (kNone when none).
Door running();

// Empty when `door` may start now; otherwise why not, as the RuntimeError
// message the door raises. The tracemalloc door starting again is allowed
// (the stdlib ignores a second start(): begin() then returns false).
std::string refusal(Door door);

struct Options {
    uint32_t traceback_limit = 1;
    CaptureSink* sink = nullptr;       // a capture's writer; null for the tracemalloc door
    bool native_traces = false;
    bool python_allocators = true;     // PEP 445 hooks (a capture may trace native calls only)
    bool object_lifetimes = false;     // a capture's track_object_lifetimes (3.13+: hooks/ref_tracer.h)
    SamplingConfig sampling;
};

// Starts the engine and installs the hooks: PEP 445 first, then the GOT
// patches. False if the engine was already tracing (nothing changed).
// Call refusal() first.
bool begin(Door door, const Options& options);
// Removes the hooks in the opposite order and stops the engine; the code
// objects the stacks pinned are appended to `*unpin`. No-op without a session.
void end(std::vector<FrameKey>* unpin);

}  // namespace heapscope::session
