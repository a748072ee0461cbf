// Native stacks for allocations: the return addresses of the C/C++ frames
// that led to an allocator call, captured inside the allocator hook.
#pragma once

#include <cstddef>
#include <cstdint>

namespace heapscope {

// Fills `ips` with up to `max` return addresses, innermost first, skipping
// `skip` innermost frames (heapscope's own hook frames). Returns how many.
// With skip == 0, ips[0] is the return address into the function that called
// capture_native_stack (its own frame is never reported). Each address points
// after a call instruction: symbolize ip - 1 (the Symbolizer does).
// Async-signal-aware: no lock of ours, no allocation of ours; it is called
// with the thread's HookGuard held, so allocations the unwinder library makes
// on first use pass through untraced. libunwind's unw_backtrace with its
// per-thread frame cache: about 90 ns at depth 14 and 350 ns at depth 50
// (test NativeUnwind.TimingOfMethods); skip + max is capped at 256 frames.
// Returns 0 until load_native_unwinder() has succeeded.
size_t capture_native_stack(uintptr_t* ips, size_t max, size_t skip);

// The same without a bound of its own: walks `capacity` frames straight into
// `ips` and drops the first (this function's own), so it returns at most
// capacity - 1. That many means the walk filled the buffer and may have been
// cut short: walk again with more room.
size_t capture_native_stack_into(uintptr_t* ips, size_t capacity);

// Loads libunwind (libunwind.so.8, privately). False if it is missing. Call
// before native stacks are wanted, never from a hook: it calls dlopen.
bool load_native_unwinder();

// Drops libunwind's cached unwind tables: call after a dlclose (the range of
// an unloaded object may be reused by the next one). libunwind 1.6's fast
// per-thread frame cache, keyed by address, is not flushed by it; see
// native_unwind.cpp. Takes libunwind's locks; do not call from a hook.
void flush_native_unwind_caches();

}  // namespace heapscope
