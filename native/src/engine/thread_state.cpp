#include "engine/thread_state.h"

#include <pthread.h>

#include <cstdlib>

namespace heapscope {

constinit thread_local ThreadHookState t_hook_state __attribute__((tls_model("initial-exec"))) = {false, nullptr, 0, 0, {0, 0, 0}, false, 0, 0, {}, 0};

namespace {
pthread_key_t g_cache_key;
pthread_once_t g_cache_key_once = PTHREAD_ONCE_INIT;

// Runs at thread exit: frees the cache and stops the thread from making a new
// one, since frees during the rest of the teardown still reach the hooks.
void destroy_thread_cache(void* cache_ptr) {
    auto* cache = static_cast<ThreadStackCache*>(cache_ptr);
    t_hook_state.exited = true;
    t_hook_state.cache = nullptr;
    release_stack_cache(cache);
    std::free(cache);
}

void create_cache_key() { pthread_key_create(&g_cache_key, destroy_thread_cache); }
}  // namespace

ThreadStackCache* make_thread_stack_cache(uint32_t limit) {
    ThreadHookState& state = t_hook_state;
    if (state.exited) return nullptr;
    if (!state.cache) {
        pthread_once(&g_cache_key_once, create_cache_key);
        auto* cache = static_cast<ThreadStackCache*>(std::calloc(1, sizeof(ThreadStackCache)));
        if (!cache) return nullptr;
        if (pthread_setspecific(g_cache_key, cache) != 0) {
            std::free(cache);
            return nullptr;
        }
        state.cache = cache;
    }
    return reserve_stack_cache(state.cache, limit) ? state.cache : nullptr;
}

}  // namespace heapscope
