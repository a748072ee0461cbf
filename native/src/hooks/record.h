// Recording an allocation with its stacks: what every hook does once it has
// a block to record, whichever way it was seen (PEP 445 hooks, GOT-patched
// native calls, custom domains).
#pragma once

#include <cstdint>

#include "model/allocator.h"

namespace heapscope::hooks {

// Records `address` in `domain` with the calling thread's Python stack (and
// its native stack when the engine wants native traces). The caller holds a
// HookGuard that entered. `gil_held` may be false when unknown: the hook then
// finds out. `pooled`: the block came from pymalloc. Never calls Python.
// While sampling, records it only if the sampler picks it (sample/sampler.h).
void record_allocation(uint32_t domain, uintptr_t address, uint64_t size, bool gil_held, bool pooled = false,
                       Allocator allocator = Allocator::kMalloc);
// The same, already decided by the sampler.
void record_allocation_now(uint32_t domain, uintptr_t address, uint64_t size, bool gil_held, bool pooled,
                           Allocator allocator);
// A capture that tracks object lifetimes: the Python object at `address`
// was made (`created`: with the calling thread's stacks, as an allocation
// has them) or destroyed (no stack). The caller holds the GIL and a
// HookGuard that entered. Never calls Python.
void record_object(uintptr_t address, bool created);
// Files the block recorded at `address` in the default domain under the
// calling thread's Python stack (Engine::restamp): an object reused from a
// free list. The caller holds the GIL and a HookGuard that entered.
void restamp_block(uintptr_t address);
// The address the calling thread recorded last (0 after it was taken):
// a new object's own block is recorded just before the object is made, so
// the reference tracer need not file it again. Takes it, so that the same
// address reused later from a free list is not mistaken for it.
uintptr_t take_last_recorded_address();
// Whether recorded Python stacks leave out the frames that have not started
// running (python::capture_stack's skip_incomplete): the stdlib tracemalloc's
// rule, which the tracemalloc door follows; captures keep those frames, whose
// interpreter-loop calls their native stacks show.
void set_skip_incomplete_frames(bool skip);
// Loads the native unwinder and finds heapscope's own code range once, so
// native stacks can drop the hook frames. Call before a capture with native
// traces starts. May allocate and dlopen. False if libunwind is missing.
bool prepare_native_stacks();

}  // namespace heapscope::hooks
