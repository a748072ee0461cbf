// PEP 445 hooks on Python's three allocator domains (raw, mem, object).
//
// Each hook calls the allocator it replaced, then hands the event to the
// engine. Hooks never call back into Python; they take the engine lock only
// with the thread's HookGuard held, so nothing they cause is traced again.
#pragma once

#include <Python.h>

#include <cstddef>
#include <cstdint>

#include "sink/capture_sink.h"

namespace heapscope::pymem {

// Installs the hooks on all three domains: the sampled kind when the engine
// samples (start the engine first). Requires the GIL. Idempotent.
void install();
// Restores the allocators the hooks replaced, unless someone has since
// wrapped the hooks in turn (then they stay, passing calls straight through
// while the engine is not tracing). Requires the GIL.
void uninstall();

// Whether every domain's allocations still reach the hooks: another tool
// may have replaced them since install() (the stdlib's tracemalloc.stop()
// restores the allocators it found). Makes and frees one probe block per
// domain. Requires the GIL.
bool hooks_in_chain();

// Records `address` in `domain` with the calling thread's Python stack (and
// its native stack when the engine wants native traces). The caller holds a
// HookGuard that entered. `gil_held` may be false when unknown: the hook then
// finds out. `pooled`: the block came from pymalloc. Never calls Python.
// While sampling, records it only if the sampler picks it (sample/sampler.h).
void record_block(uint32_t domain, uintptr_t address, uint64_t size, bool gil_held, bool pooled = false,
                  Allocator allocator = Allocator::kMalloc);
// The same, already decided by the sampler.
void record_block_now(uint32_t domain, uintptr_t address, uint64_t size, bool gil_held, bool pooled,
                      Allocator allocator);
// Loads the native unwinder and finds heapscope's own code range once, so
// native stacks can drop the hook frames. Call before a capture with native
// traces starts. May allocate and dlopen. False if libunwind is missing.
bool prepare_native_stacks();

// Keeps the code object of a frame alive while a stack refers to it. These
// touch reference counts only and need the GIL.
void pin_frame_code(uintptr_t code);
void unpin_frame_code(uintptr_t code);

}  // namespace heapscope::pymem
