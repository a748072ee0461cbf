// Labels: named frames put at the root of every stack a thread allocates
// under them (heapscope.label from Python, heapscope_label_push from C).
//
// Each distinct name is interned once, process-wide, to a small id. A thread
// keeps the ids it has pushed (outermost first) in its hook state
// (engine/thread_state.h); the engine interns them as the outermost frames of
// a capture's stacks (Engine::label_root_locked), so an allocation under a
// label pays nothing more than one without: the stack trie's root for the
// thread changes only when a label is pushed or popped. The tracemalloc door
// and the pools' sources ignore labels (the stdlib's format has no place for
// them).
//
// A label frame is FrameKey{kLabelCode, id} (model/frame.h). Captures describe it as the function
// "[label] <name>" in the file "<label>", line 0 (label_frame_name).
#pragma once

#include <cstdint>
#include <string>

#include "model/frame.h"

namespace heapscope {

// Labels a thread can nest; deeper ones are counted (so pops match) but not recorded.
inline constexpr uint32_t kMaxLabelDepth = 16;

// The id of `name` (at most kMaxLabelName bytes, not empty), made if new; 0
// if the name is bad or memory ran out. Any thread; may allocate (with the
// hook guard held, so untraced), never calls Python.
inline constexpr size_t kMaxLabelName = 4096;
uint32_t intern_label(const char* name, size_t length);
// The name given to `id`; false for an unknown id. Any thread, also from
// inside a capture's sink (under the engine lock): it takes only the
// registry's own lock, which is never held while waiting for the engine's.
bool label_name(uint32_t id, std::string* name);

// The calling thread's labels. push_label returns false (and pushes nothing)
// for a bad name; pop_label false when no label is pushed. Both only touch
// the thread's own state; never call Python.
bool push_label(const char* name, size_t length);
bool pop_label();
// Labels pushed on this thread and not popped (nested beyond kMaxLabelDepth included).
uint32_t label_depth();

}  // namespace heapscope
