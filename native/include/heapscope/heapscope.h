/* heapscope public C API: blocks in custom domains, and labels.
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
#include <string.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef int (*heapscope_track_fn)(unsigned int domain, uintptr_t address, size_t size);
typedef int (*heapscope_untrack_fn)(unsigned int domain, uintptr_t address);

/* Internal: heapscope's entry points, looked up together so that track and
 * untrack never disagree on whether heapscope is there. */
struct heapscope__api {
    heapscope_track_fn track;
    heapscope_untrack_fn untrack;
};

static inline long heapscope__now_ms(void) {
#ifdef CLOCK_MONOTONIC
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
#else
    /* Strict ISO C declares no monotonic clock: count calls instead, so the
     * lookup is retried once every 4096 calls rather than on every one. */
    static long calls; /* atomic */
    return __atomic_add_fetch(&calls, 1, __ATOMIC_RELAXED) / 4096 + 1;
#endif
}

/* Internal: whether a lookup of heapscope may be tried now, at most once a
 * millisecond while heapscope is absent; `last_try_ms` is the caller's
 * (atomic) record of its last try. Shared with heapscope/pools.h. */
static inline int heapscope__may_look_up(long* last_try_ms) {
    long now_ms = heapscope__now_ms();
    long last = __atomic_load_n(last_try_ms, __ATOMIC_RELAXED);
    if (last && now_ms && now_ms - last < 1) return 0;
    __atomic_store_n(last_try_ms, now_ms ? now_ms : 1, __ATOMIC_RELAXED);
    return 1;
}

static inline const struct heapscope__api* heapscope__get_api(void) {
    static struct heapscope__api api;
    static int found;         /* 1 once api is complete (atomic) */
    static long last_try_ms;  /* atomic */
    if (__atomic_load_n(&found, __ATOMIC_ACQUIRE)) return &api;
    if (!heapscope__may_look_up(&last_try_ms)) return NULL;
    void* track = dlsym(RTLD_DEFAULT, "heapscope_track_v1");
    void* untrack = dlsym(RTLD_DEFAULT, "heapscope_untrack_v1");
    if (!track || !untrack) return NULL;
    /* memcpy: converting an object pointer to a function pointer portably */
    memcpy(&api.track, &track, sizeof(track));
    memcpy(&api.untrack, &untrack, sizeof(untrack));
    __atomic_store_n(&found, 1, __ATOMIC_RELEASE);
    return &api;
}

/* Records a block of `size` bytes at `address` in `domain`, with the calling
 * thread's Python stack. Returns 0, or -2 if heapscope is not tracing. */
static inline int heapscope_track(unsigned int domain, uintptr_t address, size_t size) {
    const struct heapscope__api* api = heapscope__get_api();
    return api ? api->track(domain, address, size) : -2;
}

/* Forgets the block at `address` in `domain`. Returns 0, or -2 if heapscope
 * is not tracing. Untracking an unknown block is not an error. */
static inline int heapscope_untrack(unsigned int domain, uintptr_t address) {
    const struct heapscope__api* api = heapscope__get_api();
    return api ? api->untrack(domain, address) : -2;
}

typedef int (*heapscope_label_push_fn)(const char* name);
typedef int (*heapscope_label_pop_fn)(void);

/* Internal: the label entry points, looked up together. */
struct heapscope__label_api {
    heapscope_label_push_fn push;
    heapscope_label_pop_fn pop;
};

static inline const struct heapscope__label_api* heapscope__get_label_api(void) {
    static struct heapscope__label_api api;
    static int found;         /* atomic */
    static long last_try_ms;  /* atomic */
    if (__atomic_load_n(&found, __ATOMIC_ACQUIRE)) return &api;
    if (!heapscope__may_look_up(&last_try_ms)) return NULL;
    void* push = dlsym(RTLD_DEFAULT, "heapscope_label_push_v1");
    void* pop = dlsym(RTLD_DEFAULT, "heapscope_label_pop_v1");
    if (!push || !pop) return NULL;
    memcpy(&api.push, &push, sizeof(push));
    memcpy(&api.pop, &pop, sizeof(pop));
    __atomic_store_n(&found, 1, __ATOMIC_RELEASE);
    return &api;
}

/* Labels: until the matching heapscope_label_pop, every allocation the
 * calling thread makes has the frame "[label] <name>" (file "<label>", line
 * 0) at the root of its stack in captures, under the labels pushed before it
 * (the outer first); the name is copied. The same as Python's
 * `with heapscope.label(name):`. A label costs nothing per allocation: only
 * the push and the pop do work (interning the name, once per distinct name).
 * Returns 0; -1 for a null or empty name, one over 4096 bytes, a pop with no
 * label pushed, or out of memory; -2 if heapscope is not loaded. Pop only
 * after a push that returned 0 (heapscope may load in between). Any thread,
 * with or without the GIL; never calls into Python.
 *
 *     int labelled = heapscope_label_push("decode") == 0;
 *     decode(frame);
 *     if (labelled) heapscope_label_pop();
 */
static inline int heapscope_label_push(const char* name) {
    const struct heapscope__label_api* api = heapscope__get_label_api();
    return api ? api->push(name) : -2;
}

static inline int heapscope_label_pop(void) {
    const struct heapscope__label_api* api = heapscope__get_label_api();
    return api ? api->pop() : -2;
}

#ifdef __cplusplus
}
#endif

#endif /* HEAPSCOPE_HEAPSCOPE_H */
