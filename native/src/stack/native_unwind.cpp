// Native stack capture with libunwind's unw_backtrace. On x86-64 it walks
// through a per-thread hash of frame shapes keyed by return address (CFA rule
// and where rbp/rsp were saved), filled from .eh_frame on first sight of an
// address; later walks are a few loads a frame. Measured against a plain
// unw_step loop and libgcc's _Unwind_Backtrace (both 9-60 us: they look up and
// interpret the unwind tables for every frame), see test NativeUnwind.TimingOfMethods.
//
// That frame cache lives in libunwind (mmap'ed, one per thread, freed by a
// pthread key destructor) and is not flushed by unw_flush_cache in 1.6: were
// an object unloaded and another mapped over its addresses, the first walks
// through them could use stale frame shapes (heaptrack and memray share this).
//
// libunwind is loaded at run time with RTLD_LOCAL rather than linked: it also
// defines the _Unwind_* functions C++ exceptions use, and linked in, those
// could be bound in place of libgcc's (a crash on the first exception thrown
// once another module, memray's for one, has brought its own unwinder).
#define UNW_LOCAL_ONLY
#include "stack/native_unwind.h"

#include <dlfcn.h>
#include <libunwind.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>

namespace heapscope {

namespace {

struct UnwindApi {
    int (*backtrace)(void**, int) = nullptr;
    int (*set_caching_policy)(unw_addr_space_t, unw_caching_policy_t) = nullptr;
    void (*flush_cache)(unw_addr_space_t, unw_word_t, unw_word_t) = nullptr;
    unw_addr_space_t* local_addr_space = nullptr;
};
UnwindApi g_unwind;
std::atomic<bool> g_unwind_loaded{false};

// Per-thread caching of the DWARF unwind state, for the frames the fast walk
// cannot handle and fills its cache from. Set by whichever thread captures
// first; setting it twice is harmless, so a plain flag (no lock, no static
// guard variable) is enough.
std::atomic<bool> g_caching_policy_set{false};

void set_caching_policy_once() {
    if (g_caching_policy_set.load(std::memory_order_relaxed)) return;
    g_unwind.set_caching_policy(*g_unwind.local_addr_space, UNW_CACHE_PER_THREAD);
    g_caching_policy_set.store(true, std::memory_order_relaxed);
}

// Frames walked into a stack buffer when some must be skipped: the bound on
// skip + max. 256 addresses are 2 KiB of the hook's stack.
constexpr size_t kMaxWalk = 256;

}  // namespace

bool load_native_unwinder() {
    if (g_unwind_loaded.load(std::memory_order_acquire)) return true;
    void* library = dlopen("libunwind.so.8", RTLD_NOW | RTLD_LOCAL);
    if (!library) return false;
    UnwindApi api;
    api.backtrace = reinterpret_cast<int (*)(void**, int)>(dlsym(library, "unw_backtrace"));
    api.set_caching_policy = reinterpret_cast<int (*)(unw_addr_space_t, unw_caching_policy_t)>(
        dlsym(library, "_ULx86_64_set_caching_policy"));
    api.flush_cache = reinterpret_cast<void (*)(unw_addr_space_t, unw_word_t, unw_word_t)>(
        dlsym(library, "_Ux86_64_flush_cache"));
    api.local_addr_space = static_cast<unw_addr_space_t*>(dlsym(library, "_ULx86_64_local_addr_space"));
    if (!api.backtrace || !api.set_caching_policy || !api.flush_cache || !api.local_addr_space) return false;
    g_unwind = api;  // never unloaded: hooks may be walking with it
    g_unwind_loaded.store(true, std::memory_order_release);
    return true;
}

// noinline: its own frame is the one it always drops.
__attribute__((noinline)) size_t capture_native_stack(uintptr_t* ips, size_t max, size_t skip) {
    if (max == 0 || skip >= kMaxWalk - 1 || !g_unwind_loaded.load(std::memory_order_acquire)) return 0;
    set_caching_policy_once();
    // unw_backtrace's first address is inside this function: drop it too.
    size_t drop = skip + 1;
    void* walked[kMaxWalk];
    size_t want = std::min(max, kMaxWalk - drop) + drop;
    int got = g_unwind.backtrace(walked, static_cast<int>(want));
    if (got <= 0 || static_cast<size_t>(got) <= drop) return 0;
    size_t kept = static_cast<size_t>(got) - drop;
    for (size_t i = 0; i < kept; ++i) ips[i] = reinterpret_cast<uintptr_t>(walked[drop + i]);
    return kept;
}

__attribute__((noinline)) size_t capture_native_stack_into(uintptr_t* ips, size_t capacity) {
    if (capacity == 0 || capacity > INT32_MAX || !g_unwind_loaded.load(std::memory_order_acquire)) return 0;
    set_caching_policy_once();
    // unw_backtrace's first address is inside this function: walk one more, drop it.
    const int got = g_unwind.backtrace(reinterpret_cast<void**>(ips), static_cast<int>(capacity));
    if (got <= 1) return 0;
    std::memmove(ips, ips + 1, (static_cast<size_t>(got) - 1) * sizeof(uintptr_t));
    return static_cast<size_t>(got) - 1;
}

void flush_native_unwind_caches() {
    if (g_unwind_loaded.load(std::memory_order_acquire)) g_unwind.flush_cache(*g_unwind.local_addr_space, 0, 0);
}

}  // namespace heapscope
