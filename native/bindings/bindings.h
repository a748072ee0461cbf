// What the binding files share. Each file binds one front door's needs.
#pragma once

#include <nanobind/nanobind.h>

#include <string>
#include <vector>

#include "sample/sampler.h"
#include "stack/stack_trie.h"

namespace heapscope::bindings {

// Drops the references the engine took on code objects. Needs the GIL; may
// run Python (a code object's deallocation).
void release_pins(const std::vector<FrameKey>& unpin);

// The engine's sampling from its text form (heapscope/_sampling.py makes it
// from the user's argument); ValueError if it is not valid. The seed comes
// from HEAPSCOPE_SAMPLING_SEED when set (reproducible runs and tests), else
// fresh per session.
SamplingConfig sampling_from_text(const std::string& text);

// capture_start, capture_stop, capture_active, capture_fork_child.
void bind_capture_control(nanobind::module_& m);

}  // namespace heapscope::bindings
