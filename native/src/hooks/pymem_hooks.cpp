#include "hooks/pymem_hooks.h"

#include <cstring>

#include "cpython/python_allocators.h"
#include "cpython/python_frames.h"
#include "engine/engine.h"
#include "engine/thread_state.h"
#include "hooks/record.h"
#include "hooks/ref_tracer.h"
#include "stack/frame_anchors.h"

namespace heapscope::pymem {

namespace {
// One installation of the hooks on one domain. Each installation gets a fresh
// context that is never freed: a raw-domain hook running without the GIL may
// still be reading the previous one's `original` while we install anew.
struct DomainHook {
    PyMemAllocatorEx original;  // the allocator we wrap; this struct is our ctx
    bool over_pymalloc;         // `original` is pymalloc itself (python::allocators_are_pymalloc)
    // A sampled session's mem or object domain whose free slot is pymalloc's
    // own free, so that no hook runs on a free: a block the sampler picks
    // from pymalloc's pools moves to raw memory first (moved_out_of_pools).
    bool frees_unhooked;
};

// The contexts of the hooks on top of each domain's chain (null: not ours).
DomainHook* g_top[3] = {nullptr, nullptr, nullptr};
unsigned g_top_kind[3] = {0, 0, 0};  // which kind of hook g_top[i] is (kind_of)

// Object lifetimes (hooks/ref_tracer.h): the object domain's frees and
// reallocs also tell the reference tracer that a block goes, so that an
// object whose destruction CPython did not report is forgotten. A template
// argument (kWatch), chosen at install: hooks without it pay nothing.
template <PyMemAllocatorDomain D, bool kWatch>
inline void watch_block_gone(void* ptr, const HookGuard& guard) {
    if constexpr (kWatch && D == PYMEM_DOMAIN_OBJ) {
        if (ptr) reftrace::forget_freed_block(reinterpret_cast<uintptr_t>(ptr), guard.entered());
    }
}

// Frame objects come from the object domain: the anchor (if any) that a
// freed block identifies falls before its memory can be reused, re-entrant
// or not (stack/frame_anchors.h).
template <PyMemAllocatorDomain D>
inline void fell_anchor_of(void* ptr) {
    if constexpr (D == PYMEM_DOMAIN_OBJ) frame_anchors::block_freed(reinterpret_cast<uintptr_t>(ptr));
}

// Mem and object domain calls always hold the GIL; raw ones may not.
// The mem and object domains are served by pymalloc (small blocks).
template <PyMemAllocatorDomain D>
inline void on_alloc(void* ptr, size_t size, Allocator allocator) {
    constexpr bool kGilHeld = D != PYMEM_DOMAIN_RAW;
    constexpr bool kPooled = D != PYMEM_DOMAIN_RAW;
    hooks::record_allocation(Engine::kDefaultDomain, reinterpret_cast<uintptr_t>(ptr), size, kGilHeld, kPooled, allocator);
}

inline PyMemAllocatorEx* original(void* ctx) { return &static_cast<DomainHook*>(ctx)->original; }


// The exact hooks below step aside while the engine samples: then the
// sampled ones further down are installed, and an exact hook can only be
// a stale one deeper in a chain another tool built (see install_one).
inline bool exact_hooks_apply() { return !engine().sampling_active(); }

template <PyMemAllocatorDomain D>
void* hook_malloc(void* ctx, size_t size) {
    PyMemAllocatorEx* alloc = original(ctx);
    if (!exact_hooks_apply()) return alloc->malloc(alloc->ctx, size);
    HookGuard guard;
    void* ptr = alloc->malloc(alloc->ctx, size);
    if (ptr && allocation_traced(guard)) on_alloc<D>(ptr, size, Allocator::kPymallocMalloc);
    return ptr;
}

template <PyMemAllocatorDomain D>
void* hook_calloc(void* ctx, size_t nelem, size_t elsize) {
    PyMemAllocatorEx* alloc = original(ctx);
    if (!exact_hooks_apply()) return alloc->calloc(alloc->ctx, nelem, elsize);
    HookGuard guard;
    void* ptr = alloc->calloc(alloc->ctx, nelem, elsize);
    // No overflow: calloc succeeded, so nelem * elsize fits.
    if (ptr && allocation_traced(guard)) on_alloc<D>(ptr, nelem * elsize, Allocator::kPymallocCalloc);
    return ptr;
}

// Forgets the old block and records the new one (as the sampler decides,
// when sampling: hooks::record_allocation). The exact hook's realloc, and the sampled
// hook's when the old block may be recorded.
template <PyMemAllocatorDomain D>
__attribute__((noinline)) void* record_picked(const DomainHook* hook, const HookGuard& guard, void* ptr, size_t size,
                                              Allocator allocator);

template <PyMemAllocatorDomain D, bool kWatch>
void* recording_realloc(const DomainHook* hook, void* old_ptr, size_t new_size) {
    const PyMemAllocatorEx* alloc = &hook->original;
    HookGuard guard;
    watch_block_gone<D, kWatch>(old_ptr, guard);
    fell_anchor_of<D>(old_ptr);
    if (!guard.entered() || !engine().tracing()) return alloc->realloc(alloc->ctx, old_ptr, new_size);
    // Forget the old block before the allocator can hand its address to
    // another thread; put it back if the reallocation fails.
    BlockInfo old_info;
    bool had_old = old_ptr && engine().record_free(Engine::kDefaultDomain, reinterpret_cast<uintptr_t>(old_ptr),
                                                   &old_info, Allocator::kPymallocFree);
    void* new_ptr = alloc->realloc(alloc->ctx, old_ptr, new_size);
    if (!new_ptr) {
        if (had_old) engine().restore(Engine::kDefaultDomain, reinterpret_cast<uintptr_t>(old_ptr), old_info, D != PYMEM_DOMAIN_RAW);
        return nullptr;
    }
    if (t_guard_state.suppressed) return new_ptr;
    if (hook->frees_unhooked) {  // sampled: the new block may have to leave the pools
        return sampler_picks(new_size) ? record_picked<D>(hook, guard, new_ptr, new_size, Allocator::kPymallocRealloc)
                                       : new_ptr;
    }
    on_alloc<D>(new_ptr, new_size, Allocator::kPymallocRealloc);
    return new_ptr;
}

template <PyMemAllocatorDomain D, bool kWatch>
void* hook_realloc(void* ctx, void* old_ptr, size_t new_size) {
    PyMemAllocatorEx* alloc = original(ctx);
    if (!exact_hooks_apply()) return alloc->realloc(alloc->ctx, old_ptr, new_size);
    return recording_realloc<D, kWatch>(static_cast<const DomainHook*>(ctx), old_ptr, new_size);
}

// Forgets the block, then frees it: in this order, so that the allocator
// cannot hand the address to another thread first (see hook_realloc). Both
// kinds of hook free this way; while sampling, record_free itself rules out
// the unsampled majority, inline and without the lock.
template <PyMemAllocatorDomain D, bool kWatch>
inline void forget_then_free(PyMemAllocatorEx* alloc, void* ptr) {
    HookGuard guard;
    watch_block_gone<D, kWatch>(ptr, guard);
    fell_anchor_of<D>(ptr);
    if (guard.entered() && ptr && engine().tracing()) {
        engine().record_free(Engine::kDefaultDomain, reinterpret_cast<uintptr_t>(ptr), nullptr, Allocator::kPymallocFree);
    }
    alloc->free(alloc->ctx, ptr);
}

template <PyMemAllocatorDomain D, bool kWatch>
void hook_free(void* ctx, void* ptr) {
    PyMemAllocatorEx* alloc = original(ctx);
    if (!exact_hooks_apply()) return alloc->free(alloc->ctx, ptr);
    forget_then_free<D, kWatch>(alloc, ptr);
}

// --- while sampling ---
// Installed instead of the exact hooks for a sampled session. The common
// case -- an allocation the sampler passes over, the free of a block that
// was never recorded -- costs the sampler's subtraction or one probe of the
// engine's address filter, besides the guard: no lock, no call into the
// engine. The guard is needed: pymalloc passes large requests on to the raw
// domain and malloc, whose hooks must not sample the same block again.

// A picked block in a domain whose frees are unhooked: pymalloc's free would
// drop a block of its pools unseen, so the block moves to raw memory, whose
// frees and reallocs pymalloc passes on to the raw domain's hook. One copy of
// at most 512 bytes per pick. The new block is asked of pymalloc above its
// largest size, so that pymalloc gets it from the raw domain and counts it,
// as it uncounts it when it is freed (sys.getallocatedblocks stays right).
// The caller holds the guard, so the raw hook does not record the block
// again. Null when memory runs out.
void* moved_out_of_pools(const DomainHook* hook, void* ptr, size_t size) {
    void* moved = hook->original.malloc(hook->original.ctx, python::kPymallocLargest + 1);
    if (!moved) return nullptr;
    std::memcpy(moved, ptr, size);
    hook->original.free(hook->original.ctx, ptr);
    return moved;
}

// Records a block the sampler picked; returns where the block now is.
template <PyMemAllocatorDomain D>
__attribute__((noinline)) void* record_picked(const DomainHook* hook, const HookGuard& guard, void* ptr, size_t size,
                                              Allocator allocator) {
    if (!allocation_traced(guard)) return ptr;  // heapscope's own, or a report's: not traced
    const bool moves = hook->frees_unhooked && size <= python::kPymallocLargest;
    if (moves) {
        void* moved = moved_out_of_pools(hook, ptr, size);
        if (!moved) return ptr;  // left unrecorded: its free would not be seen
        ptr = moved;
    }
    // `pooled` keys the block by its pool (store/block_table.h): not once moved.
    hooks::record_allocation_now(Engine::kDefaultDomain, reinterpret_cast<uintptr_t>(ptr), size, D != PYMEM_DOMAIN_RAW,
                                 D != PYMEM_DOMAIN_RAW && !moves, allocator);
    return ptr;
}

// The unguarded path of the sampled mem and object hooks over pymalloc: a
// request pymalloc serves from its pools calls no other hooked allocator (a
// new arena's map goes through the arena allocator, which set_arena_guard
// guards instead), so an allocation the sampler passes over needs no guard.
// The guarded paths are functions of their own, so that the unguarded one
// saves no registers and ends in a jump to pymalloc.
template <PyMemAllocatorDomain D>
inline bool passes_unguarded(const DomainHook* hook, size_t size) {
    return D != PYMEM_DOMAIN_RAW && hook->over_pymalloc && size <= python::kPymallocLargest &&
           sampler_passes_over(size);
}

template <PyMemAllocatorDomain D>
__attribute__((noinline)) void* guarded_sampled_malloc(const DomainHook* hook, size_t size) {
    HookGuard guard;
    void* ptr = hook->original.malloc(hook->original.ctx, size);
    if (ptr && guard.entered() && sampler_picks(size)) [[unlikely]] {
        ptr = record_picked<D>(hook, guard, ptr, size, Allocator::kPymallocMalloc);
    }
    return ptr;
}

template <PyMemAllocatorDomain D>
void* sampled_malloc(void* ctx, size_t size) {
    PyMemAllocatorEx* alloc = original(ctx);
    if (passes_unguarded<D>(static_cast<DomainHook*>(ctx), size)) [[likely]] return alloc->malloc(alloc->ctx, size);
    return guarded_sampled_malloc<D>(static_cast<const DomainHook*>(ctx), size);
}

template <PyMemAllocatorDomain D>
__attribute__((noinline)) void* guarded_sampled_calloc(const DomainHook* hook, size_t nelem, size_t elsize) {
    HookGuard guard;
    void* ptr = hook->original.calloc(hook->original.ctx, nelem, elsize);
    if (ptr && guard.entered() && sampler_picks(nelem * elsize)) [[unlikely]] {
        ptr = record_picked<D>(hook, guard, ptr, nelem * elsize, Allocator::kPymallocCalloc);
    }
    return ptr;
}

template <PyMemAllocatorDomain D>
void* sampled_calloc(void* ctx, size_t nelem, size_t elsize) {
    PyMemAllocatorEx* alloc = original(ctx);
    size_t size;
    if (!__builtin_mul_overflow(nelem, elsize, &size) && passes_unguarded<D>(static_cast<DomainHook*>(ctx), size))
        [[likely]] {
        return alloc->calloc(alloc->ctx, nelem, elsize);
    }
    return guarded_sampled_calloc<D>(static_cast<const DomainHook*>(ctx), nelem, elsize);
}

template <PyMemAllocatorDomain D, bool kWatch>
void* sampled_realloc(void* ctx, void* old_ptr, size_t new_size) {
    const auto* hook = static_cast<const DomainHook*>(ctx);
    const PyMemAllocatorEx* alloc = &hook->original;
    if (old_ptr && engine().may_have_recorded(reinterpret_cast<uintptr_t>(old_ptr))) [[unlikely]] {
        return recording_realloc<D, kWatch>(hook, old_ptr, new_size);
    }
    HookGuard guard;
    watch_block_gone<D, kWatch>(old_ptr, guard);
    fell_anchor_of<D>(old_ptr);
    void* ptr = alloc->realloc(alloc->ctx, old_ptr, new_size);
    if (ptr && guard.entered() && sampler_picks(new_size)) [[unlikely]] {
        ptr = record_picked<D>(hook, guard, ptr, new_size, Allocator::kPymallocRealloc);
    }
    return ptr;
}

template <PyMemAllocatorDomain D, bool kWatch>
__attribute__((noinline)) void guarded_free(PyMemAllocatorEx* alloc, void* ptr) {
    forget_then_free<D, kWatch>(alloc, ptr);
}

template <PyMemAllocatorDomain D, bool kWatch>
void sampled_free(void* ctx, void* ptr) {
    PyMemAllocatorEx* alloc = original(ctx);
    // A block the engine cannot have recorded is freed without the guard:
    // no free records anything, whichever allocator it reaches.
    if constexpr (!kWatch) {
        if (!engine().may_have_recorded(reinterpret_cast<uintptr_t>(ptr))) [[likely]] {
            fell_anchor_of<D>(ptr);
            return alloc->free(alloc->ctx, ptr);
        }
    }
    guarded_free<D, kWatch>(alloc, ptr);
}

// pymalloc's arena allocator, wrapped while sampled hooks are installed: a
// new arena mapped under the unguarded path above must stay out of the
// traces, as under a guarded hook (its blocks are what is traced). Once
// wrapped it stays in the chain (another tool may have wrapped it since),
// guarding only while g_arena_guard is set.
PyObjectArenaAllocator g_arena_below{};
bool g_arena_wrapped = false;
bool g_arena_guard = false;

void* guarded_arena_alloc(void*, size_t size) {
    if (!g_arena_guard) return g_arena_below.alloc(g_arena_below.ctx, size);
    HookGuard guard;
    return g_arena_below.alloc(g_arena_below.ctx, size);
}

void guarded_arena_free(void*, void* ptr, size_t size) {
    if (!g_arena_guard) return g_arena_below.free(g_arena_below.ctx, ptr, size);
    HookGuard guard;
    g_arena_below.free(g_arena_below.ctx, ptr, size);
}

void set_arena_guard(bool on) {
    if (on && !g_arena_wrapped) {
        PyObject_GetArenaAllocator(&g_arena_below);
        PyObjectArenaAllocator ours{nullptr, guarded_arena_alloc, guarded_arena_free};
        PyObject_SetArenaAllocator(&ours);
        g_arena_wrapped = true;
    }
    g_arena_guard = on;
}

// --- object lifetimes without traced Python allocators ---
// Only the object domain is hooked, and only its frees and reallocs do
// anything: they tell the reference tracer which blocks go.

void* passing_malloc(void* ctx, size_t size) {
    PyMemAllocatorEx* alloc = original(ctx);
    return alloc->malloc(alloc->ctx, size);
}

void* passing_calloc(void* ctx, size_t nelem, size_t elsize) {
    PyMemAllocatorEx* alloc = original(ctx);
    return alloc->calloc(alloc->ctx, nelem, elsize);
}

void* watching_realloc(void* ctx, void* old_ptr, size_t new_size) {
    PyMemAllocatorEx* alloc = original(ctx);
    {
        HookGuard guard;
        watch_block_gone<PYMEM_DOMAIN_OBJ, true>(old_ptr, guard);
    }
    return alloc->realloc(alloc->ctx, old_ptr, new_size);
}

void watching_free(void* ctx, void* ptr) {
    PyMemAllocatorEx* alloc = original(ctx);
    {
        HookGuard guard;
        watch_block_gone<PYMEM_DOMAIN_OBJ, true>(ptr, guard);
    }
    alloc->free(alloc->ctx, ptr);
}

int slot_of(PyMemAllocatorDomain domain) {
    return domain == PYMEM_DOMAIN_RAW ? 0 : domain == PYMEM_DOMAIN_MEM ? 1 : 2;
}

// The kind of hook install_one puts on a domain: recording (exact or
// sampled) or not, watching frees for object lifetimes or not.
enum Kind : unsigned { kSampled = 1, kWatching = 2, kRecording = 4, kFreesMayGoUnhooked = 8 };

template <PyMemAllocatorDomain D, bool kWatch>
PyMemAllocatorEx recording_hooks(DomainHook* hook, bool sampled) {
    // pymalloc's free ignores its context, so it can take ours.
    return sampled ? PyMemAllocatorEx{hook, sampled_malloc<D>, sampled_calloc<D>, sampled_realloc<D, kWatch>,
                                      hook->frees_unhooked ? hook->original.free : sampled_free<D, kWatch>}
                   : PyMemAllocatorEx{hook, hook_malloc<D>, hook_calloc<D>, hook_realloc<D, kWatch>,
                                      hook_free<D, kWatch>};
}

template <PyMemAllocatorDomain D>
void install_one(bool record, bool watch, bool anchors, bool pymalloc_below) {
    const bool sampled = record && engine().sampling_active();
    // A free records nothing in a sampled session once picked blocks leave
    // pymalloc's pools, unless the reference tracer or the anchors need to
    // hear of the object domain's frees; then the mem domain's frees stay
    // hooked too, for an object block freed there (PyObject_Malloc, then
    // PyMem_Free: misuse, but extensions do it).
    const bool frees_may_go_unhooked = sampled && !watch && !anchors;
    watch = watch && D == PYMEM_DOMAIN_OBJ;
    if (!record && !watch) return;
    PyMemAllocatorEx current;
    PyMem_GetAllocator(D, &current);
    DomainHook*& top = g_top[slot_of(D)];
    const unsigned kind = (sampled ? kSampled : 0u) | (watch ? kWatching : 0u) | (record ? kRecording : 0u) |
                          (frees_may_go_unhooked ? kFreesMayGoUnhooked : 0u);
    unsigned& top_kind = g_top_kind[slot_of(D)];
    if (top && current.ctx == top && top_kind == kind) return;  // already on top of the chain
    // Either never installed, or another tool has since wrapped or replaced
    // our hook (the stdlib's tracemalloc.stop() restores what it found). Wrap
    // what is there now; if our older hook is still deeper in the chain it
    // only passes calls through, since the re-entrancy guard is per thread.
    bool over_pymalloc = pymalloc_below && D != PYMEM_DOMAIN_RAW;
    if (top && current.ctx == top) {  // ours, of the other kind: replace it
        current = top->original;
        over_pymalloc = top->over_pymalloc;
    }
    auto* hook = new DomainHook{current, over_pymalloc, frees_may_go_unhooked && over_pymalloc};
    PyMemAllocatorEx replacement =
        !record ? PyMemAllocatorEx{hook, passing_malloc, passing_calloc, watching_realloc, watching_free}
        : watch ? recording_hooks<D, true>(hook, sampled)
                : recording_hooks<D, false>(hook, sampled);
    PyMem_SetAllocator(D, &replacement);
    top = hook;
    top_kind = kind;
}

template <PyMemAllocatorDomain D>
void uninstall_one() {
    DomainHook*& top = g_top[slot_of(D)];
    if (!top) return;
    PyMemAllocatorEx current;
    PyMem_GetAllocator(D, &current);
    // Wrapped by another tool since: stay in its chain, as a pass-through.
    if (current.ctx == top) PyMem_SetAllocator(D, &top->original);
    top = nullptr;
}

}  // namespace

void install(bool record, bool watch_object_frees, bool frame_anchors) {
    const bool pymalloc_below = python::allocators_are_pymalloc();  // asked before any domain is hooked
    install_one<PYMEM_DOMAIN_RAW>(record, watch_object_frees, frame_anchors, pymalloc_below);
    install_one<PYMEM_DOMAIN_MEM>(record, watch_object_frees, frame_anchors, pymalloc_below);
    install_one<PYMEM_DOMAIN_OBJ>(record, watch_object_frees, frame_anchors, pymalloc_below);
    set_arena_guard(record && engine().sampling_active());
}

void uninstall() {
    uninstall_one<PYMEM_DOMAIN_OBJ>();
    uninstall_one<PYMEM_DOMAIN_MEM>();
    uninstall_one<PYMEM_DOMAIN_RAW>();
    set_arena_guard(false);
}

bool frees_unhooked(PyMemAllocatorDomain domain) {
    const DomainHook* top = g_top[slot_of(domain)];
    PyMemAllocatorEx current;
    PyMem_GetAllocator(domain, &current);
    return top && current.ctx == top && current.free == top->original.free;
}

bool hooks_in_chain() {
    if (!engine().tracing()) return false;
    const PyMemAllocatorDomain domains[] = {PYMEM_DOMAIN_RAW, PYMEM_DOMAIN_MEM, PYMEM_DOMAIN_OBJ};
    for (PyMemAllocatorDomain domain : domains) {
        PyMemAllocatorEx allocator;
        PyMem_GetAllocator(domain, &allocator);
        t_hook_state.record_all = true;  // a sampler must not skip the probe
        void* probe = allocator.malloc(allocator.ctx, 8);
        t_hook_state.record_all = false;
        if (!probe) continue;  // out of memory: no evidence either way
        BlockInfo info;
        bool seen = engine().find(Engine::kDefaultDomain, reinterpret_cast<uintptr_t>(probe), &info);
        allocator.free(allocator.ctx, probe);
        if (!seen) return false;
    }
    return true;
}

void pin_frame_code(uintptr_t code) { Py_INCREF(reinterpret_cast<PyObject*>(code)); }

void unpin_frame_code(uintptr_t code) { Py_DECREF(reinterpret_cast<PyObject*>(code)); }

}  // namespace heapscope::pymem
