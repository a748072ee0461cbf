/* heapscope public C and C++ API: resource pools.
 *
 * A library declares the resources it hands out (images, tensors, buffers,
 * handles) in named pools: each with an id of the library's choosing (its
 * address, a handle number), a size in bytes and an optional kind. Python
 * code then sees them with heapscope.pools (make_snapshot, diff, detailed
 * sources), and while heapscope traces each pool is a custom domain of its
 * own in snapshots and captures.
 *
 * Header-only, with no link-time dependency, like heapscope.h: the functions
 * look heapscope up in the process at run time (dlsym), so a library calls
 * them whether or not the heapscope Python package is loaded. While it is not
 * loaded the calls are cheap no-ops returning -2 (the lookup is retried at
 * most once a millisecond). Resources registered while heapscope was absent
 * are not known to it: they never appear in a snapshot, and releasing them
 * later is harmless (1: "not alive").
 *
 * Return values: 0 done; 1 (release) the resource was not alive (or its pool
 * was never made: releasing by name never makes a pool); -1 a bad
 * argument (null or empty pool name, a name over 1024 bytes, more than 4096
 * pools) or out of memory; -2 heapscope is not loaded.
 *
 * Registering an id that is alive in the pool replaces it. Any thread, with
 * or without the GIL; the functions never call back into Python. With
 * detailed profiling on (heapscope.pools.enable_detailed_profiling() from
 * Python), each resource keeps its native stack and its thread's Python
 * stack; otherwise a registration costs a hash-map insert under a
 * per-shard spin lock.
 *
 * C:
 *     heapscope_pool_track("images", (uint64_t)(uintptr_t)image, bytes, "rgb8");
 *     ...
 *     heapscope_pool_release("images", (uint64_t)(uintptr_t)image);
 *
 * C++ (a ref-counted type reporting itself):
 *     static heapscope::ResourcePool images("images");
 *     class Image {
 *         heapscope::PoolResource tracked_{images, this, bytes(), "rgb8"};  // released by ~Image
 *     };
 */
#ifndef HEAPSCOPE_POOLS_H
#define HEAPSCOPE_POOLS_H

#include <dlfcn.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "heapscope.h" /* heapscope__may_look_up: one lookup throttle for both headers */

#ifdef __cplusplus
extern "C" {
#endif

/* A pool, as heapscope_pool_get returns it. Pools live as long as the
 * process, so the pointer may be kept. */
typedef struct heapscope_pool heapscope_pool;

typedef void* (*heapscope_pool_get_fn)(const char* name);
typedef void* (*heapscope_pool_find_fn)(const char* name);
typedef int (*heapscope_pool_track_in_fn)(void* pool, uint64_t id, uint64_t size, const char* kind);
typedef int (*heapscope_pool_release_in_fn)(void* pool, uint64_t id);

/* Internal: heapscope's entry points, looked up together. */
struct heapscope__pools_api {
    heapscope_pool_get_fn get;
    heapscope_pool_find_fn find;
    heapscope_pool_track_in_fn track_in;
    heapscope_pool_release_in_fn release_in;
};

static inline const struct heapscope__pools_api* heapscope__get_pools_api(void) {
    static struct heapscope__pools_api api;
    static int found;         /* 1 once api is complete (atomic) */
    static long last_try_ms;  /* atomic */
    if (__atomic_load_n(&found, __ATOMIC_ACQUIRE)) return &api;
    if (!heapscope__may_look_up(&last_try_ms)) return NULL;
    void* get = dlsym(RTLD_DEFAULT, "heapscope_pool_get_v1");
    void* find = dlsym(RTLD_DEFAULT, "heapscope_pool_find_v1");
    void* track_in = dlsym(RTLD_DEFAULT, "heapscope_pool_track_in_v1");
    void* release_in = dlsym(RTLD_DEFAULT, "heapscope_pool_release_in_v1");
    if (!get || !find || !track_in || !release_in) return NULL;
    /* memcpy: converting an object pointer to a function pointer portably */
    memcpy(&api.get, &get, sizeof(get));
    memcpy(&api.find, &find, sizeof(find));
    memcpy(&api.track_in, &track_in, sizeof(track_in));
    memcpy(&api.release_in, &release_in, sizeof(release_in));
    __atomic_store_n(&found, 1, __ATOMIC_RELEASE);
    return &api;
}

/* The pool named `name` (made on first use), or NULL if heapscope is not
 * loaded or the name is invalid. Keep it to skip the name lookup. */
static inline heapscope_pool* heapscope_pool_get(const char* name) {
    const struct heapscope__pools_api* api = heapscope__get_pools_api();
    return api ? (heapscope_pool*)api->get(name) : NULL;
}

/* Registers resource `id` of `size` bytes in `pool` (kind: a name, or NULL). */
static inline int heapscope_pool_track_in(heapscope_pool* pool, uint64_t id, uint64_t size, const char* kind) {
    const struct heapscope__pools_api* api = heapscope__get_pools_api();
    if (!api) return -2;
    return pool ? api->track_in(pool, id, size, kind) : -1;
}

/* Releases resource `id` of `pool`: 0, or 1 if it was not alive. */
static inline int heapscope_pool_release_in(heapscope_pool* pool, uint64_t id) {
    const struct heapscope__pools_api* api = heapscope__get_pools_api();
    if (!api) return -2;
    return pool ? api->release_in(pool, id) : -1;
}

/* The same by pool name (one name lookup more per call). */
static inline int heapscope_pool_track(const char* pool, uint64_t id, uint64_t size, const char* kind) {
    const struct heapscope__pools_api* api = heapscope__get_pools_api();
    if (!api) return -2;
    void* found = pool ? api->get(pool) : NULL;
    return found ? api->track_in(found, id, size, kind) : -1;
}

/* Releasing in a pool that does not exist yet releases nothing (1). */
static inline int heapscope_pool_release(const char* pool, uint64_t id) {
    const struct heapscope__pools_api* api = heapscope__get_pools_api();
    if (!api) return -2;
    if (!pool || !*pool) return -1;
    void* found = api->find(pool);
    return found ? api->release_in(found, id) : 1;
}

#ifdef __cplusplus
}  /* extern "C" */

namespace heapscope {

/* A pool by name, looked up once heapscope is there (then kept: pools live
 * as long as the process). Cheap to construct; usable as a static. */
class ResourcePool {
  public:
    explicit ResourcePool(const char* name) noexcept : name_(name), pool_(nullptr) {}
    ResourcePool(const ResourcePool&) = delete;
    ResourcePool& operator=(const ResourcePool&) = delete;

    const char* name() const noexcept { return name_; }
    int track(uint64_t id, uint64_t size, const char* kind = nullptr) noexcept {
        heapscope_pool* pool = get();
        return pool ? heapscope_pool_track_in(pool, id, size, kind) : unavailable();
    }
    /* An object's address as its id. (A template, so that a literal 0 is an id.) */
    template <class T>
    int track(const T* object, uint64_t size, const char* kind = nullptr) noexcept {
        return track(static_cast<uint64_t>(reinterpret_cast<uintptr_t>(object)), size, kind);
    }
    int release(uint64_t id) noexcept {
        heapscope_pool* pool = __atomic_load_n(&pool_, __ATOMIC_ACQUIRE);
        return pool ? heapscope_pool_release_in(pool, id) : heapscope_pool_release(name_, id);
    }
    template <class T>
    int release(const T* object) noexcept {
        return release(static_cast<uint64_t>(reinterpret_cast<uintptr_t>(object)));
    }

  private:
    heapscope_pool* get() noexcept {
        heapscope_pool* pool = __atomic_load_n(&pool_, __ATOMIC_ACQUIRE);
        if (!pool) {
            pool = heapscope_pool_get(name_);
            if (pool) __atomic_store_n(&pool_, pool, __ATOMIC_RELEASE);
        }
        return pool;
    }
    int unavailable() noexcept { return heapscope__get_pools_api() ? -1 : -2; }

    const char* name_;
    heapscope_pool* pool_;
};

/* One registered resource, released when this object is destroyed (or by
 * release()). Movable, not copyable: a member of a ref-counted type, or of
 * the object its last reference owns. Releasing is by id, so ids must be
 * unique among a pool's live resources: an object that uses its own address
 * as the id must not be moved (its old address may hold a new object whose
 * registration the moved one would later release). To change a resource's
 * size, assign a new PoolResource with the same pool and id: the assignment
 * keeps the new registration. */
class PoolResource {
  public:
    PoolResource() noexcept : pool_(nullptr), id_(0) {}
    PoolResource(ResourcePool& pool, uint64_t id, uint64_t size, const char* kind = nullptr) noexcept
        : pool_(&pool), id_(id) {
        if (pool.track(id, size, kind) != 0) pool_ = nullptr;  // nothing to release
    }
    template <class T>
    PoolResource(ResourcePool& pool, const T* object, uint64_t size, const char* kind = nullptr) noexcept
        : PoolResource(pool, static_cast<uint64_t>(reinterpret_cast<uintptr_t>(object)), size, kind) {}
    PoolResource(PoolResource&& other) noexcept : pool_(other.pool_), id_(other.id_) { other.pool_ = nullptr; }
    PoolResource& operator=(PoolResource&& other) noexcept {
        if (this != &other) {
            /* The same resource registered again (a new size) replaced the
             * old registration: releasing "the old one" would drop the new. */
            if (!(pool_ == other.pool_ && id_ == other.id_)) release();
            pool_ = other.pool_;
            id_ = other.id_;
            other.pool_ = nullptr;
        }
        return *this;
    }
    PoolResource(const PoolResource&) = delete;
    PoolResource& operator=(const PoolResource&) = delete;
    ~PoolResource() { release(); }

    /* Whether heapscope registered it (false while heapscope is absent). */
    bool tracked() const noexcept { return pool_ != nullptr; }
    uint64_t id() const noexcept { return id_; }
    void release() noexcept {
        if (pool_) pool_->release(id_);
        pool_ = nullptr;
    }

  private:
    ResourcePool* pool_;
    uint64_t id_;
};

}  // namespace heapscope
#endif /* __cplusplus */

#endif /* HEAPSCOPE_POOLS_H */
