// PEP 445 hooks on Python's three allocator domains (raw, mem, object).
//
// Each hook calls the allocator it replaced, then hands the event to the
// engine. Hooks never call back into Python; they take the engine lock only
// with the thread's HookGuard held, so nothing they cause is traced again.
#pragma once

#include <Python.h>

#include <cstdint>

namespace heapscope::pymem {

// Installs the hooks that record allocations on all three domains
// (`record`): the sampled kind when the engine samples (start the engine
// first). With `watch_object_frees`, the object domain's frees and reallocs
// also tell the reference tracer which blocks go (object lifetimes,
// hooks/ref_tracer.h); without `record`, only that hook is installed.
// `frame_anchors`: the anchors (stack/frame_anchors.h) hear of the object
// domain's frees. A sampled session's mem and object frees otherwise go
// straight to pymalloc, no hook called (the picked blocks leave its pools).
// Requires the GIL. Idempotent.
void install(bool record = true, bool watch_object_frees = false, bool frame_anchors = false);
// Restores the allocators the hooks replaced, unless someone has since
// wrapped the hooks in turn (then they stay, passing calls straight through
// while the engine is not tracing). Requires the GIL.
void uninstall();

// Whether every domain's allocations still reach the hooks: another tool
// may have replaced them since install() (the stdlib's tracemalloc.stop()
// restores the allocators it found). Makes and frees one probe block per
// domain. Requires the GIL.
bool hooks_in_chain();

// Whether `domain`'s frees go straight to pymalloc, with no hook (install).
// Requires the GIL.
bool frees_unhooked(PyMemAllocatorDomain domain);

// Keeps the code object of a frame alive while a stack refers to it. These
// touch reference counts only and need the GIL.
void pin_frame_code(uintptr_t code);
void unpin_frame_code(uintptr_t code);

}  // namespace heapscope::pymem
