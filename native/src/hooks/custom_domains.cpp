#include "hooks/custom_domains.h"

#include <Python.h>
#include <dlfcn.h>

#include "engine/engine.h"
#include "engine/thread_state.h"
#include "hooks/elf_patcher.h"
#include "hooks/pymem_hooks.h"
#include "hooks/record.h"

namespace heapscope::domains {

namespace {
constexpr int kNotTracing = -2;

using TrackFn = int (*)(unsigned int, uintptr_t, size_t);
using UntrackFn = int (*)(unsigned int, uintptr_t);
using GetTracebackFn = PyObject* (*)(unsigned int, uintptr_t);

TrackFn g_stdlib_track = nullptr;
UntrackFn g_stdlib_untrack = nullptr;
GetTracebackFn g_stdlib_get_traceback = nullptr;
TracebackLookup g_lookup = nullptr;

int redirected_track(unsigned int domain, uintptr_t address, size_t size) {
    int ours = track(domain, address, size);
    // The stdlib's tracemalloc may be tracing too: it keeps seeing the call.
    int theirs = g_stdlib_track ? g_stdlib_track(domain, address, size) : kNotTracing;
    return ours == 0 ? 0 : theirs;
}

int redirected_untrack(unsigned int domain, uintptr_t address) {
    int ours = untrack(domain, address);
    int theirs = g_stdlib_untrack ? g_stdlib_untrack(domain, address) : kNotTracing;
    return ours == 0 ? 0 : theirs;
}

// The stdlib's _PyTraceMalloc_GetTraceback: the block's traceback from
// heapscope when it traces the block, else whatever the stdlib's module knows
// (None unless it traces too). The caller holds the GIL.
PyObject* redirected_get_traceback(unsigned int domain, uintptr_t address) {
    if (g_lookup && engine().tracing()) {
        PyObject* ours = g_lookup(domain, address);
        if (ours != Py_None) return ours;  // a traceback, or null with the error set
        Py_DECREF(ours);
    }
    if (g_stdlib_get_traceback) return g_stdlib_get_traceback(domain, address);
    Py_INCREF(Py_None);
    return Py_None;
}

}  // namespace

void set_traceback_lookup(TracebackLookup lookup) { g_lookup = lookup; }

int track(unsigned int domain, uintptr_t address, size_t size) {
    HookGuard guard;
    if (!engine().tracing()) return kNotTracing;
    if (!allocation_traced(guard)) return 0;  // from inside a hook or a report: not traced
    hooks::record_allocation(domain, address, size, false, false, Allocator::kTrack);
    return 0;
}

int untrack(unsigned int domain, uintptr_t address) {
    HookGuard guard;
    if (!engine().tracing()) return kNotTracing;
    if (guard.entered()) engine().record_free(domain, address, nullptr, Allocator::kUntrack);
    return 0;
}

size_t stdlib_symbol_hooks(elf::SymbolHook* out) {
    if (!g_stdlib_track) {
        g_stdlib_track = reinterpret_cast<TrackFn>(dlsym(RTLD_DEFAULT, "PyTraceMalloc_Track"));
        g_stdlib_untrack = reinterpret_cast<UntrackFn>(dlsym(RTLD_DEFAULT, "PyTraceMalloc_Untrack"));
        g_stdlib_get_traceback = reinterpret_cast<GetTracebackFn>(dlsym(RTLD_DEFAULT, "_PyTraceMalloc_GetTraceback"));
    }
    out[0] = elf::SymbolHook{"PyTraceMalloc_Track", reinterpret_cast<void*>(&redirected_track), 0};
    out[1] = elf::SymbolHook{"PyTraceMalloc_Untrack", reinterpret_cast<void*>(&redirected_untrack), 0};
    out[2] = elf::SymbolHook{"_PyTraceMalloc_GetTraceback", reinterpret_cast<void*>(&redirected_get_traceback), 0};
    return 3;
}

void export_c_api() {
    Dl_info info;
    if (dladdr(reinterpret_cast<void*>(&export_c_api), &info) == 0 || !info.dli_fname) return;
    // Python loads extensions RTLD_LOCAL; promote this one so that the
    // header's dlsym(RTLD_DEFAULT, "heapscope_track_v1") can find it.
    void* self = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_GLOBAL);
    if (self) dlclose(self);  // drop the extra reference; the promotion stays
}

}  // namespace heapscope::domains

extern "C" __attribute__((visibility("default"))) int heapscope_track_v1(unsigned int domain, uintptr_t address,
                                                                          size_t size) {
    return heapscope::domains::track(domain, address, size);
}

extern "C" __attribute__((visibility("default"))) int heapscope_untrack_v1(unsigned int domain, uintptr_t address) {
    return heapscope::domains::untrack(domain, address);
}
