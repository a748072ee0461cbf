// What each thread keeps for the hooks: the stack cache, its capture id and
// its sampler. Plain data in initial-exec TLS, so reading it from an allocator hook
// never allocates (a general-dynamic TLS access may call malloc on first use).
#pragma once

#include <cstdint>

#include "common/hook_guard.h"
#include "engine/engine.h"
#include "engine/labels.h"

namespace heapscope {

// The guard (common/hook_guard.h) is kept apart, in t_guard_state.
struct ThreadHookState {
    bool exited;      // the thread is past its TLS teardown: cache nothing
    ThreadStackCache* cache;
    uint32_t thread_id;         // small id for captures, given on first use (0: none yet)
    uint64_t announced_session; // the capture session this thread's id was last announced to
    ThreadSampler sampler;      // sampling decisions (sample/sampler.h)
    bool record_all;            // bypass sampling: heapscope's own probe allocations
    uint64_t names_seen;        // Engine's names version when this thread last looked for a new name
    // Labels (engine/labels.h): ids pushed, outermost first; the depth counts
    // those past kMaxLabelDepth too. The version changes at every push and pop.
    uint32_t label_depth;
    uint32_t labels[kMaxLabelDepth];
    uint64_t label_version;
};

// constinit: no dynamic initialisation, so no TLS wrapper call at each use.
extern constinit thread_local ThreadHookState t_hook_state __attribute__((tls_model("initial-exec")));

// True when an allocation made now should be traced.
inline bool allocation_traced(const HookGuard& guard) {
    return guard.entered() && !t_guard_state.suppressed && engine().tracing();
}

// While sampling: whether the sampler picks an allocation of `size` bytes
// just made on the calling thread (one subtraction on Poisson's fast path),
// or the thread records everything (heapscope's own probe, hooks_in_chain).
// Call with the hook guard held.
inline bool sampler_picks(uint64_t size) {
    Engine& eng = engine();
    ThreadHookState& state = t_hook_state;
    return should_sample(eng.sampling(), &state.sampler, eng.session(), size) || state.record_all;
}

// The sampled hooks' fast path: true, with the allocation counted, when the
// sampler certainly passes over `size` bytes on the calling thread; false,
// with nothing counted, when sampler_picks must decide. Needs no guard.
inline bool sampler_passes_over(uint64_t size) {
    Engine& eng = engine();
    ThreadHookState& state = t_hook_state;
    return !state.record_all && passes_over(eng.sampling(), &state.sampler, eng.session(), size);
}

// Whether an allocation of `size` bytes from `allocator` is to be recorded:
// always unless sampling, then the sampler's decision, for the allocators it
// applies to. Decided before any stack is walked. Call with the guard held.
inline bool sampler_admits(uint64_t size, Allocator allocator) {
    return !engine().sampling_active() || !sampled_allocator(allocator) || sampler_picks(size);
}

// The calling thread's stack cache sized for `limit` frames, or null when it
// cannot have one (memory ran out, or the thread is exiting). May call malloc.
ThreadStackCache* make_thread_stack_cache(uint32_t limit);
// The same, inline for the hooks: after a thread's first event, a load and a comparison.
inline ThreadStackCache* thread_stack_cache(uint32_t limit) {
    ThreadStackCache* cache = t_hook_state.cache;
    if (cache && cache->capacity >= limit) [[likely]] return cache;
    return make_thread_stack_cache(limit);
}

}  // namespace heapscope
