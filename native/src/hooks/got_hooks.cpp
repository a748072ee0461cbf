#include "hooks/got_hooks.h"

#include <Python.h>
#include <dlfcn.h>
#include <link.h>
#include <malloc.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/prctl.h>

#include <cstdarg>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <cstring>
#include <string>

#include "engine/engine.h"
#include "engine/thread_state.h"
#include "hooks/custom_domains.h"
#include "hooks/elf_patcher.h"
#include "hooks/pymem_hooks.h"
#include "hooks/record.h"
#include "stack/native_unwind.h"

namespace heapscope::got {

namespace {

std::atomic<bool> g_allocators{false};
uintptr_t g_libpython_base = 0;

// Calls from this object are never patched (the patcher skips it), so the
// real functions are reached by name.
inline void record(void* ptr, uint64_t size, Allocator allocator) {
    hooks::record_allocation(Engine::kDefaultDomain, reinterpret_cast<uintptr_t>(ptr), size, false, false, allocator);
}

// Forget the block before the allocator may hand its address to another
// thread (see pymem_hooks.cpp).
inline void forget(void* ptr, Allocator deallocator) {
    engine().record_free(Engine::kDefaultDomain, reinterpret_cast<uintptr_t>(ptr), nullptr, deallocator);
}

void* hooked_malloc(size_t size) {
    HookGuard guard;
    void* ptr = ::malloc(size);
    if (ptr && allocation_traced(guard)) record(ptr, size, Allocator::kMalloc);
    return ptr;
}

void* hooked_calloc(size_t count, size_t size) {
    HookGuard guard;
    void* ptr = ::calloc(count, size);
    if (ptr && allocation_traced(guard)) record(ptr, count * size, Allocator::kCalloc);
    return ptr;
}

void* hooked_realloc(void* old_ptr, size_t size) {
    HookGuard guard;
    if (!guard.entered() || !engine().tracing()) return ::realloc(old_ptr, size);
    BlockInfo old_info;
    bool had_old = old_ptr && engine().record_free(Engine::kDefaultDomain, reinterpret_cast<uintptr_t>(old_ptr),
                                                   &old_info, Allocator::kFree);
    void* ptr = ::realloc(old_ptr, size);
    if (!ptr) {
        // realloc(p, 0) may free p and return null; otherwise p is intact.
        if (had_old && size != 0) engine().restore(Engine::kDefaultDomain, reinterpret_cast<uintptr_t>(old_ptr), old_info);
        return nullptr;
    }
    if (!t_guard_state.suppressed) record(ptr, size, Allocator::kRealloc);
    return ptr;
}

void hooked_free(void* ptr) {
    HookGuard guard;
    if (ptr && guard.entered() && engine().tracing()) forget(ptr, Allocator::kFree);
    ::free(ptr);
}

int hooked_posix_memalign(void** out, size_t alignment, size_t size) {
    HookGuard guard;
    int result = ::posix_memalign(out, alignment, size);
    if (result == 0 && *out && allocation_traced(guard)) record(*out, size, Allocator::kPosixMemalign);
    return result;
}

void* hooked_aligned_alloc(size_t alignment, size_t size) {
    HookGuard guard;
    void* ptr = ::aligned_alloc(alignment, size);
    if (ptr && allocation_traced(guard)) record(ptr, size, Allocator::kAlignedAlloc);
    return ptr;
}

void* hooked_memalign(size_t alignment, size_t size) {
    HookGuard guard;
    void* ptr = ::memalign(alignment, size);
    if (ptr && allocation_traced(guard)) record(ptr, size, Allocator::kMemalign);
    return ptr;
}

void* hooked_valloc(size_t size) {
    HookGuard guard;
    void* ptr = ::valloc(size);
    if (ptr && allocation_traced(guard)) record(ptr, size, Allocator::kValloc);
    return ptr;
}

void* hooked_pvalloc(size_t size) {
    HookGuard guard;
    void* ptr = ::pvalloc(size);
    if (ptr && allocation_traced(guard)) record(ptr, size, Allocator::kPvalloc);
    return ptr;
}

void* hooked_mmap(void* address, size_t length, int prot, int flags, int fd, off_t offset) {
    HookGuard guard;
    void* ptr = ::mmap(address, length, prot, flags, fd, offset);
    if (ptr != MAP_FAILED && allocation_traced(guard)) record(ptr, length, Allocator::kMmap);
    return ptr;
}

int hooked_munmap(void* address, size_t length) {
    HookGuard guard;
    if (guard.entered() && engine().tracing()) engine().record_munmap(reinterpret_cast<uintptr_t>(address), length);
    return ::munmap(address, length);
}

// Thread names follow renames: the new name is read back (the kernel keeps
// at most 15 bytes of it) and given to the engine for the capture.
void thread_renamed(pthread_t thread) {
    char name[64] = {};
    if (pthread_getname_np(thread, name, sizeof name) == 0) {
        engine().name_thread(static_cast<uint64_t>(thread), name);
    }
}

int hooked_prctl(int option, ...) {
    // prctl's arguments after the option are unsigned longs, as many as the
    // option takes: pass four on, as glibc's own callers may (memray does the same).
    va_list arguments;
    va_start(arguments, option);
    unsigned long values[4];
    for (unsigned long& value : values) value = va_arg(arguments, unsigned long);
    va_end(arguments);
    const int result = ::prctl(option, values[0], values[1], values[2], values[3]);
    if (result == 0 && option == PR_SET_NAME && engine().capturing()) thread_renamed(pthread_self());
    return result;
}

int hooked_pthread_setname_np(pthread_t thread, const char* name) {
    const int result = ::pthread_setname_np(thread, name);
    if (result == 0 && engine().capturing()) {
        if (pthread_equal(thread, pthread_self())) {
            thread_renamed(thread);  // read back: what the kernel kept
        } else {
            engine().name_thread(static_cast<uint64_t>(thread), name);  // under 16 bytes, or the call failed
        }
    }
    return result;
}

void patch_now();

// dlopen of a bare name searches the calling object's RUNPATH/RPATH, and the
// caller is now this object. So when that fails, search the real caller's
// paths as the loader would have ($ORIGIN expanded), as memray does (#525).
void* dlopen_from_callers_paths(const char* filename, int flags, void* caller) {
    Dl_info info;
    link_map* map = nullptr;
    if (!dladdr1(caller, &info, reinterpret_cast<void**>(&map), RTLD_DL_LINKMAP) || !map || !map->l_ld) return nullptr;
    const char* strings = nullptr;
    const char* paths = nullptr;
    ElfW(Xword) path_offset = 0;
    bool have_path = false;
    for (const ElfW(Dyn)* dyn = map->l_ld; dyn->d_tag != DT_NULL; ++dyn) {
        if (dyn->d_tag == DT_STRTAB) strings = reinterpret_cast<const char*>(dyn->d_un.d_ptr);
        if (dyn->d_tag == DT_RUNPATH || (dyn->d_tag == DT_RPATH && !have_path)) {
            path_offset = dyn->d_un.d_val;
            have_path = true;
        }
    }
    if (!strings || !have_path) return nullptr;
    paths = strings + path_offset;
    std::string origin = info.dli_fname ? info.dli_fname : "";
    origin = origin.substr(0, origin.find_last_of('/') == std::string::npos ? 0 : origin.find_last_of('/'));
    std::string list(paths);
    size_t start = 0;
    while (start <= list.size()) {
        size_t end = list.find(':', start);
        if (end == std::string::npos) end = list.size();
        std::string dir = list.substr(start, end - start);
        for (const char* token : {"$ORIGIN", "${ORIGIN}"}) {
            size_t at = dir.find(token);
            if (at != std::string::npos) dir.replace(at, std::strlen(token), origin);
        }
        if (!dir.empty()) {
            std::string candidate = dir + "/" + filename;
            if (void* handle = ::dlopen(candidate.c_str(), flags)) return handle;
        }
        start = end + 1;
    }
    return nullptr;
}

void* hooked_dlopen(const char* filename, int flags) {
    void* handle = ::dlopen(filename, flags);
    if (!handle && filename && !std::strchr(filename, '/')) {
        handle = dlopen_from_callers_paths(filename, flags, __builtin_return_address(0));
    }
    if (handle && engine().tracing()) {
        // Held across patching: the patcher allocates and frees inside
        // dl_iterate_phdr, where the loader's lock is held, and those calls
        // must not take the engine lock (another thread may hold it while
        // waiting for the loader's lock in notify_mappings_changed).
        HookGuard guard;
        if (guard.entered()) {
            patch_now();
            engine().notify_mappings_changed();
        }
    }
    return handle;
}

int hooked_dlclose(void* handle) {
    int result = ::dlclose(handle);
    if (engine().tracing()) {
        HookGuard guard;
        if (guard.entered()) engine().notify_mappings_changed();
    }
    // The unloaded object's addresses may be reused by the next one.
    if (engine().native_traces()) flush_native_unwind_caches();
    return result;
}

// One list drives patching: name, replacement, and whether it is an
// allocator hook (patched only while a capture wants them).
struct HookEntry {
    const char* name;
    void* replacement;
    bool allocator;
};

#define HEAPSCOPE_HOOK(name) {#name, reinterpret_cast<void*>(&hooked_##name), true}
const HookEntry kAllocatorHooks[] = {
    HEAPSCOPE_HOOK(malloc),        HEAPSCOPE_HOOK(calloc),  HEAPSCOPE_HOOK(realloc), HEAPSCOPE_HOOK(free),
    HEAPSCOPE_HOOK(posix_memalign), HEAPSCOPE_HOOK(aligned_alloc), HEAPSCOPE_HOOK(memalign),
    HEAPSCOPE_HOOK(valloc),        HEAPSCOPE_HOOK(pvalloc), HEAPSCOPE_HOOK(mmap),
    {"mmap64", reinterpret_cast<void*>(&hooked_mmap), true},  // the same function on 64-bit glibc
    HEAPSCOPE_HOOK(munmap),        HEAPSCOPE_HOOK(dlclose),
    // Not allocators, but only a capture needs them: its threads' names.
    HEAPSCOPE_HOOK(prctl),         HEAPSCOPE_HOOK(pthread_setname_np),
};
#undef HEAPSCOPE_HOOK

// Serialises patching with uninstall(), so that a dlopen racing with the end
// of a session cannot patch again after everything was restored.
std::mutex g_patch_mutex;
bool g_installed = false;  // guarded by g_patch_mutex

void patch_now() {
    std::lock_guard<std::mutex> lock(g_patch_mutex);
    if (!g_installed) return;
    elf::SymbolHook hooks[32];
    bool allocators = g_allocators.load(std::memory_order_relaxed);
    // With the allocator hooks on, the memory extensions report through
    // PyTraceMalloc_Track (NumPy's arrays) is already seen at its malloc:
    // redirecting those calls too would count it twice.
    size_t count = allocators ? 0 : domains::stdlib_symbol_hooks(hooks);
    hooks[count++] = elf::SymbolHook{"dlopen", reinterpret_cast<void*>(&hooked_dlopen), allocators ? 0 : g_libpython_base};
    if (allocators) {
        for (const HookEntry& entry : kAllocatorHooks) hooks[count++] = elf::SymbolHook{entry.name, entry.replacement, 0};
    }
    elf::patch_loaded_objects(hooks, count);
}

}  // namespace

void install(bool allocators) {
    if (!g_libpython_base) {
        Dl_info info;
        if (dladdr(reinterpret_cast<void*>(&Py_Initialize), &info) != 0) {
            g_libpython_base = reinterpret_cast<uintptr_t>(info.dli_fbase);
        }
    }
    g_allocators.store(allocators, std::memory_order_relaxed);
    {
        std::lock_guard<std::mutex> lock(g_patch_mutex);
        g_installed = true;
    }
    HookGuard guard;  // see hooked_dlopen: no engine lock inside the loader's
    patch_now();
}

void uninstall() {
    std::lock_guard<std::mutex> lock(g_patch_mutex);
    g_installed = false;
    HookGuard guard;
    elf::unpatch_all();
    g_allocators.store(false, std::memory_order_relaxed);
}

}  // namespace heapscope::got
