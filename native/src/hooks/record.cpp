#include "hooks/record.h"

#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <iterator>

#include "common/loaded_object.h"
#include "cpython/python_frames.h"
#include "engine/engine.h"
#include "engine/thread_state.h"
#include "stack/native_unwind.h"

namespace heapscope::hooks {

namespace {
uintptr_t g_own_start = 0, g_own_end = 0;  // see prepare_native_stacks
std::atomic<bool> g_skip_incomplete{false};
thread_local uintptr_t t_last_recorded = 0;
}  // namespace

uintptr_t take_last_recorded_address() {
    uintptr_t address = t_last_recorded;
    t_last_recorded = 0;
    return address;
}

void restamp_block(uintptr_t address) {
    Engine& eng = engine();
    if (!eng.may_have_recorded(address)) return;  // while sampling: not a recorded block
    PyThreadState* tstate = python::gil_holder();
    if (!tstate) return;
    uint32_t limit = eng.traceback_limit();
    ThreadStackCache* cache = thread_stack_cache(limit);
    if (!cache) return;
    uint32_t total_depth = 0;
    uint32_t frames = python::capture_stack(tstate, cache->fresh, limit, &total_depth,
                                            g_skip_incomplete.load(std::memory_order_relaxed), &cache->chain, true);
    if (cache->chain.wanted > cache->chain.capacity) reserve_chain_frames(cache);
    eng.restamp(Engine::kDefaultDomain, address, CapturedStacks{cache, frames, total_depth, true});
}

void set_skip_incomplete_frames(bool skip) { g_skip_incomplete.store(skip, std::memory_order_relaxed); }

namespace {
// The address range of heapscope's own module: native frames inside it (the
// hooks themselves) are dropped from native stacks.
struct OwnRange {
    uintptr_t start = 0, end = 0;
};
OwnRange find_own_range() {
    OwnRange range;
    Dl_info info;
    if (dladdr(reinterpret_cast<void*>(&find_own_range), &info) == 0) return range;
    auto base = reinterpret_cast<uintptr_t>(info.dli_fbase);
    for (const LoadedObject& object : current_loaded_objects()) {
        if (object.load_bias != base) continue;
        range.start = UINTPTR_MAX;
        for (const LoadedSegment& segment : object.segments) {
            range.start = std::min<uintptr_t>(range.start, base + segment.vaddr);
            range.end = std::max<uintptr_t>(range.end, base + segment.vaddr + segment.memsz);
        }
    }
    return range;
}
}  // namespace

bool prepare_native_stacks() {
    if (!load_native_unwinder()) return false;
    static const OwnRange range = find_own_range();
    g_own_start = range.start;
    g_own_end = range.end;
    return true;
}

void record_allocation(uint32_t domain, uintptr_t address, uint64_t size, bool gil_held, bool pooled,
                       Allocator allocator) {
    if (!sampler_admits(size, allocator)) return;  // before any stack is walked
    record_allocation_now(domain, address, size, gil_held, pooled, allocator);
}

namespace {
// Room for the native frames of a thread without a cache (capture_stacks).
struct NativeFallback {
    uintptr_t ips[kInitialNativeFrames + 8];
};

// The calling thread's stacks, as a recorded event carries them: its Python
// frames and, when the engine wants native traces, its native return
// addresses (heapscope's own frames dropped), which may be kept in
// `fallback`. Never calls Python.
__attribute__((always_inline)) inline void capture_stacks(bool gil_held, CapturedStacks* out,
                                                          NativeFallback* fallback) {
    Engine& eng = engine();
    PyThreadState* tstate;
    if (gil_held) {
        tstate = python::gil_holder();
    } else {
        // Without the GIL the thread may still read its own frames: they are
        // suspended and nobody else unlinks them. It may not pin new code.
        tstate = python::this_thread_state();
        gil_held = tstate && tstate == python::gil_holder();
    }
    out->can_pin = gil_held;
    ThreadStackCache* cache = nullptr;
    if (tstate) {
        uint32_t limit = eng.traceback_limit();
        cache = thread_stack_cache(limit);
        if (cache) {
            out->frames = python::capture_stack(tstate, cache->fresh, limit, &out->total_depth,
                                                g_skip_incomplete.load(std::memory_order_relaxed), &cache->chain,
                                                gil_held);
            // A deeper stack than the chain holds: grow it for the next walk.
            if (cache->chain.wanted > cache->chain.capacity) reserve_chain_frames(cache);
        }
    }
    if (eng.native_traces()) {
        // The whole stack, as memray keeps it: the thread's buffer doubles
        // until a walk fits. A thread without a cache (no Python thread
        // state yet: a native thread) gets one for this; if that fails, the
        // innermost frames that fit on this stack.
        if (!cache) cache = thread_stack_cache(0);
        uintptr_t* walked = fallback->ips;
        size_t n = 0;
        if (cache && reserve_native_frames(cache, kInitialNativeFrames)) {
            for (;;) {
                n = capture_native_stack_into(cache->native_fresh, cache->native_capacity);
                if (n + 1 < cache->native_capacity || cache->native_capacity > UINT32_MAX / 2 ||
                    !reserve_native_frames(cache, cache->native_capacity * 2)) {
                    break;
                }
            }
            walked = cache->native_fresh;
        } else {
            n = capture_native_stack(fallback->ips, std::size(fallback->ips), 0);
        }
        size_t skip = 0;
        while (skip < n && walked[skip] >= g_own_start && walked[skip] < g_own_end) ++skip;
        out->native = walked + skip;
        out->native_count = static_cast<uint32_t>(n - skip);
    }
    out->cache = cache;
}
}  // namespace

void record_allocation_now(uint32_t domain, uintptr_t address, uint64_t size, bool gil_held, bool pooled,
                           Allocator allocator) {
    NativeFallback fallback;
    CapturedStacks stacks;
    capture_stacks(gil_held, &stacks, &fallback);
    // A copy the walk never saw (it wrote through a pointer): the compiler
    // can keep its fields in registers through the inlined record_alloc.
    engine().record_alloc(AllocationSite{domain, address, size, allocator, pooled, stacks});
    t_last_recorded = address;
}

void record_object(uintptr_t address, bool created) {
    if (!created) {
        engine().record_object(address, false, CapturedStacks{});
        return;
    }
    NativeFallback fallback;
    CapturedStacks stacks;
    capture_stacks(true, &stacks, &fallback);
    engine().record_object(address, true, stacks);
}

}  // namespace heapscope::hooks
