#include "hooks/pymem_hooks.h"

#include "engine/engine.h"
#include "engine/thread_state.h"
#include "stack/python_frames.h"

namespace heapscope::pymem {

namespace {

struct DomainHook {
    PyMemAllocatorDomain domain;
    PyMemAllocatorEx original;  // the allocator we wrap; its address is our ctx
    bool installed;
};

DomainHook g_raw{PYMEM_DOMAIN_RAW, {}, false};
DomainHook g_mem{PYMEM_DOMAIN_MEM, {}, false};
DomainHook g_obj{PYMEM_DOMAIN_OBJ, {}, false};

// Mem and object domain calls always hold the GIL; raw ones may not.
// The mem and object domains are served by pymalloc (small blocks).
template <PyMemAllocatorDomain D>
inline void on_alloc(void* ptr, size_t size) {
    constexpr bool kGilHeld = D != PYMEM_DOMAIN_RAW;
    constexpr bool kPooled = D != PYMEM_DOMAIN_RAW;
    record_block(Engine::kPythonDomain, reinterpret_cast<uintptr_t>(ptr), size, kGilHeld, kPooled);
}

inline PyMemAllocatorEx* original(void* ctx) { return &static_cast<DomainHook*>(ctx)->original; }

template <PyMemAllocatorDomain D>
void* hook_malloc(void* ctx, size_t size) {
    PyMemAllocatorEx* alloc = original(ctx);
    HookGuard guard;
    void* ptr = alloc->malloc(alloc->ctx, size);
    if (ptr && allocation_traced(guard)) on_alloc<D>(ptr, size);
    return ptr;
}

template <PyMemAllocatorDomain D>
void* hook_calloc(void* ctx, size_t nelem, size_t elsize) {
    PyMemAllocatorEx* alloc = original(ctx);
    HookGuard guard;
    void* ptr = alloc->calloc(alloc->ctx, nelem, elsize);
    // No overflow: calloc succeeded, so nelem * elsize fits.
    if (ptr && allocation_traced(guard)) on_alloc<D>(ptr, nelem * elsize);
    return ptr;
}

template <PyMemAllocatorDomain D>
void* hook_realloc(void* ctx, void* old_ptr, size_t new_size) {
    PyMemAllocatorEx* alloc = original(ctx);
    HookGuard guard;
    if (!guard.entered() || !engine().tracing()) return alloc->realloc(alloc->ctx, old_ptr, new_size);
    // Forget the old block before the allocator can hand its address to
    // another thread; put it back if the reallocation fails.
    BlockInfo old_info;
    bool had_old = old_ptr && engine().record_free(Engine::kPythonDomain, reinterpret_cast<uintptr_t>(old_ptr), &old_info);
    void* new_ptr = alloc->realloc(alloc->ctx, old_ptr, new_size);
    if (!new_ptr) {
        if (had_old) engine().restore(Engine::kPythonDomain, reinterpret_cast<uintptr_t>(old_ptr), old_info, D != PYMEM_DOMAIN_RAW);
        return nullptr;
    }
    if (!t_hook_state.suppressed) on_alloc<D>(new_ptr, new_size);
    return new_ptr;
}

template <PyMemAllocatorDomain D>
void hook_free(void* ctx, void* ptr) {
    PyMemAllocatorEx* alloc = original(ctx);
    HookGuard guard;
    // Forget the block before it is freed (see hook_realloc).
    if (guard.entered() && ptr && engine().tracing()) {
        engine().record_free(Engine::kPythonDomain, reinterpret_cast<uintptr_t>(ptr));
    }
    alloc->free(alloc->ctx, ptr);
}

template <PyMemAllocatorDomain D>
PyMemAllocatorEx hooks_for(DomainHook* hook) {
    return PyMemAllocatorEx{hook, hook_malloc<D>, hook_calloc<D>, hook_realloc<D>, hook_free<D>};
}

void install_one(DomainHook* hook, PyMemAllocatorEx replacement) {
    if (hook->installed) return;
    PyMem_GetAllocator(hook->domain, &hook->original);
    PyMem_SetAllocator(hook->domain, &replacement);
    hook->installed = true;
}

void uninstall_one(DomainHook* hook) {
    if (!hook->installed) return;
    PyMemAllocatorEx current;
    PyMem_GetAllocator(hook->domain, &current);
    if (current.ctx != hook) return;  // wrapped by someone else since: stay, as a pass-through
    PyMem_SetAllocator(hook->domain, &hook->original);
    hook->installed = false;
}

}  // namespace

void install() {
    install_one(&g_raw, hooks_for<PYMEM_DOMAIN_RAW>(&g_raw));
    install_one(&g_mem, hooks_for<PYMEM_DOMAIN_MEM>(&g_mem));
    install_one(&g_obj, hooks_for<PYMEM_DOMAIN_OBJ>(&g_obj));
}

void uninstall() {
    uninstall_one(&g_obj);
    uninstall_one(&g_mem);
    uninstall_one(&g_raw);
}

void record_block(uint32_t domain, uintptr_t address, uint64_t size, bool gil_held, bool pooled) {
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
    uint32_t frames = 0;
    uint32_t total_depth = 0;
    ThreadStackCache* cache = nullptr;
    if (tstate) {
        uint32_t limit = eng.traceback_limit();
        cache = thread_stack_cache(limit);
        if (cache) frames = python::capture_stack(tstate, cache->fresh, limit, &total_depth);
    }
    eng.record_alloc(domain, address, size, cache, frames, total_depth, gil_held, pooled);
}

void pin_frame_code(uintptr_t code) { Py_INCREF(reinterpret_cast<PyObject*>(code)); }

void unpin_frame_code(uintptr_t code) { Py_DECREF(reinterpret_cast<PyObject*>(code)); }

}  // namespace heapscope::pymem
