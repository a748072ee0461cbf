// What the binding files share. Each file binds one front door's needs.
#pragma once

#include <nanobind/nanobind.h>

#include <vector>

#include "stack/stack_trie.h"

namespace heapscope::bindings {

// Drops the references the engine took on code objects. Needs the GIL; may
// run Python (a code object's deallocation).
void release_pins(const std::vector<FrameKey>& unpin);

// capture_start, capture_stop, capture_active, capture_fork_child.
void bind_capture_control(nanobind::module_& m);

}  // namespace heapscope::bindings
