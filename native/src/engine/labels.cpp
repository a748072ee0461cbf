#include "engine/labels.h"

#include <mutex>
#include <unordered_map>
#include <vector>

#include "common/hook_guard.h"
#include "engine/thread_state.h"

namespace heapscope {

namespace {

struct LabelRegistry {
    std::mutex lock;
    std::unordered_map<std::string, uint32_t> ids;
    std::vector<const std::string*> names;  // names[id - 1]: keys of `ids`, which never move
};

// Never destroyed: labels may be pushed or described during interpreter teardown.
LabelRegistry& registry() {
    static LabelRegistry* instance = new LabelRegistry;
    return *instance;
}

}  // namespace

uint32_t intern_label(const char* name, size_t length) {
    if (!name || length == 0 || length > kMaxLabelName) return 0;
    // The registry's allocations must not reach the hooks: a hook waits for
    // the engine lock, whose holder may be waiting for this registry's.
    HookGuard inside;
    LabelRegistry& labels = registry();
    std::lock_guard<std::mutex> guard(labels.lock);
    try {
        auto [it, created] = labels.ids.try_emplace(std::string(name, length), 0);
        if (created) {
            labels.names.reserve(labels.names.size() + 1);  // if this throws, the name stays at id 0: no label
            labels.names.push_back(&it->first);
            it->second = static_cast<uint32_t>(labels.names.size());
        }
        return it->second;
    } catch (const std::exception&) {
        return 0;
    }
}

bool label_name(uint32_t id, std::string* name) {
    LabelRegistry& labels = registry();
    std::lock_guard<std::mutex> guard(labels.lock);
    if (id == 0 || id > labels.names.size()) return false;
    *name = *labels.names[id - 1];
    return true;
}

bool push_label(const char* name, size_t length) {
    const uint32_t id = intern_label(name, length);
    if (id == 0) return false;
    ThreadHookState& state = t_hook_state;
    if (state.label_depth < kMaxLabelDepth) state.labels[state.label_depth] = id;
    ++state.label_depth;
    ++state.label_version;
    // The thread's last stack was interned under the old root: its lock-free
    // reuse (Engine::resolve_from_cache) must not see it again.
    if (state.cache) state.cache->count = 0;
    return true;
}

bool pop_label() {
    ThreadHookState& state = t_hook_state;
    if (state.label_depth == 0) return false;
    --state.label_depth;
    ++state.label_version;
    if (state.cache) state.cache->count = 0;
    return true;
}

uint32_t label_depth() { return t_hook_state.label_depth; }

}  // namespace heapscope

extern "C" __attribute__((visibility("default"))) int heapscope_label_push_v1(const char* name) {
    if (!name) return -1;
    return heapscope::push_label(name, std::char_traits<char>::length(name)) ? 0 : -1;
}

extern "C" __attribute__((visibility("default"))) int heapscope_label_pop_v1(void) {
    return heapscope::pop_label() ? 0 : -1;
}
