/* heapscope public C API: blocks in custom domains.
 *
 * What PyTraceMalloc_Track/Untrack offer for the stdlib's tracemalloc, for
 * heapscope: an extension that manages memory outside Python's allocators
 * (GPU buffers, arenas, mmap'd files) reports each block in a numbered domain,
 * and heapscope attributes it to the Python stack that was running.
 *
 * Header-only, with no link-time dependency: the functions look heapscope up
 * in the process at run time, so a library can call them whether or not the
 * heapscope extension is loaded. While it is not loaded (or not tracing) they
 * return -2, as PyTraceMalloc_Track does. While heapscope is absent, the
 * lookup (one dlsym) is retried at most once a millisecond, so a call made
 * within a millisecond of heapscope's import may still miss it.
 *
 * Domain 0 is Python's own memory. NumPy uses 389047. Pick another number.
 * Safe to call from any thread, with or without the GIL; they never call back
 * into Python.
 */
#ifndef HEAPSCOPE_HEAPSCOPE_H
#define HEAPSCOPE_HEAPSCOPE_H

#include <dlfcn.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef int (*heapscope_track_fn)(unsigned int domain, uintptr_t address, size_t size);
typedef int (*heapscope_untrack_fn)(unsigned int domain, uintptr_t address);

static inline void* heapscope__lookup(const char* name, void* volatile* cached, volatile long* last_try_ms) {
    void* fn = *cached;
    if (fn) return fn;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long now_ms = (long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    if (*last_try_ms && now_ms - *last_try_ms < 1) return NULL;
    *last_try_ms = now_ms ? now_ms : 1;
    fn = dlsym(RTLD_DEFAULT, name);
    *cached = fn;
    return fn;
}

/* Records a block of `size` bytes at `address` in `domain`, with the calling
 * thread's Python stack. Returns 0, or -2 if heapscope is not tracing. */
static inline int heapscope_track(unsigned int domain, uintptr_t address, size_t size) {
    static void* volatile fn;
    static volatile long last_try_ms;
    void* f = heapscope__lookup("heapscope_track_v1", &fn, &last_try_ms);
    return f ? ((heapscope_track_fn)f)(domain, address, size) : -2;
}

/* Forgets the block at `address` in `domain`. Returns 0, or -2 if heapscope
 * is not tracing. Untracking an unknown block is not an error. */
static inline int heapscope_untrack(unsigned int domain, uintptr_t address) {
    static void* volatile fn;
    static volatile long last_try_ms;
    void* f = heapscope__lookup("heapscope_untrack_v1", &fn, &last_try_ms);
    return f ? ((heapscope_untrack_fn)f)(domain, address) : -2;
}

#ifdef __cplusplus
}
#endif

#endif /* HEAPSCOPE_HEAPSCOPE_H */
