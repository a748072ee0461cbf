// What each thread keeps for the hooks: the re-entrancy guard and the stack
// cache. Plain data in initial-exec TLS, so reading it from an allocator hook
// never allocates (a general-dynamic TLS access may call malloc on first use).
#pragma once

#include <cstdint>

#include "engine/engine.h"

namespace heapscope {

struct ThreadHookState {
    bool in_hook;     // set while a hook runs: nested calls only pass through
    bool suppressed;  // the engine is building Python objects: their allocations are not traced
    bool exited;      // the thread is past its TLS teardown: cache nothing
    ThreadStackCache* cache;
    uint32_t thread_id;         // small id for captures, given on first use (0: none yet)
    uint64_t announced_session; // the capture session this thread's id was last announced to
    ThreadSampler sampler;      // sampling decisions (sample/sampler.h)
    bool record_all;            // bypass sampling: heapscope's own probe allocations
};

// constinit: no dynamic initialisation, so no TLS wrapper call at each use.
extern constinit thread_local ThreadHookState t_hook_state __attribute__((tls_model("initial-exec")));

// Marks the thread as inside a hook for its lifetime. Allocations made while
// it is held, by the engine or by anything the hook calls, are not traced:
// the engine's own memory stays out of the traces and a nested call (a
// PyObject_Malloc that falls through to PyMem_RawMalloc, or a signal handler
// that allocates) cannot re-enter the engine or its lock.
class HookGuard {
  public:
    HookGuard() noexcept : entered_(!t_hook_state.in_hook) {
        if (entered_) t_hook_state.in_hook = true;
    }
    ~HookGuard() {
        if (entered_) t_hook_state.in_hook = false;
    }
    HookGuard(const HookGuard&) = delete;
    HookGuard& operator=(const HookGuard&) = delete;
    // False when the thread was already inside a hook: the caller must only
    // pass the call through.
    bool entered() const noexcept { return entered_; }

  private:
    bool entered_;
};

// Leaves the allocations made while it is held untraced, but keeps recording
// frees: a report builds Python objects, and the collections they trigger
// free traced blocks that must leave the table.
class SuppressTracing {
  public:
    SuppressTracing() noexcept : previous_(t_hook_state.suppressed) { t_hook_state.suppressed = true; }
    ~SuppressTracing() { t_hook_state.suppressed = previous_; }
    SuppressTracing(const SuppressTracing&) = delete;
    SuppressTracing& operator=(const SuppressTracing&) = delete;

  private:
    bool previous_;
};

// True when an allocation made now should be traced.
inline bool allocation_traced(const HookGuard& guard) {
    return guard.entered() && !t_hook_state.suppressed && engine().tracing();
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

// Whether an allocation of `size` bytes from `allocator` is to be recorded:
// always unless sampling, then the sampler's decision, for the allocators it
// applies to. Decided before any stack is walked. Call with the guard held.
inline bool sampler_admits(uint64_t size, Allocator allocator) {
    return !engine().sampling_active() || !sampled_allocator(allocator) || sampler_picks(size);
}

// The calling thread's stack cache sized for `limit` frames, or null when it
// cannot have one (memory ran out, or the thread is exiting). May call malloc.
ThreadStackCache* thread_stack_cache(uint32_t limit);

}  // namespace heapscope
