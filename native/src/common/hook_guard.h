// The per-thread re-entrancy guard of the allocator hooks. Plain data in
// initial-exec TLS, so reading it from an allocator hook never allocates (a
// general-dynamic TLS access may call malloc on first use). Lives below
// every stage that allocates on a hook's behalf (the engine, the capture
// writer's thread), so each can mark its own memory untraced.
#pragma once

namespace heapscope {

struct ThreadGuardState {
    bool in_hook;     // set while a hook runs: nested calls only pass through
    bool suppressed;  // the engine is building Python objects: their allocations are not traced
};

// constinit: no dynamic initialisation, so no TLS wrapper call at each use.
extern constinit thread_local ThreadGuardState t_guard_state __attribute__((tls_model("initial-exec")));

// Marks the thread as inside a hook for its lifetime. Allocations made while
// it is held, by the engine or by anything the hook calls, are not traced:
// the engine's own memory stays out of the traces and a nested call (a
// PyObject_Malloc that falls through to PyMem_RawMalloc, or a signal handler
// that allocates) cannot re-enter the engine or its lock.
class HookGuard {
  public:
    HookGuard() noexcept : entered_(!t_guard_state.in_hook) {
        if (entered_) t_guard_state.in_hook = true;
    }
    ~HookGuard() {
        if (entered_) t_guard_state.in_hook = false;
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
    SuppressTracing() noexcept : previous_(t_guard_state.suppressed) { t_guard_state.suppressed = true; }
    ~SuppressTracing() { t_guard_state.suppressed = previous_; }
    SuppressTracing(const SuppressTracing&) = delete;
    SuppressTracing& operator=(const SuppressTracing&) = delete;

  private:
    bool previous_;
};

}  // namespace heapscope
