#include "pools/pool_registry.h"

#include <memory>

#include <pthread.h>
#include <time.h>

#include <cstring>
#include <new>

#include "engine/thread_state.h"
#include "stack/native_unwind.h"

namespace heapscope::pools {

namespace {

int64_t now_ns() {
    timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// The registry's own memory is never the program's: a capture tracing native
// allocations must not see it, and a hook must not be entered from here.
// Unlike the hooks, the registry runs even when the thread is already inside
// a hook (a pool released from a finalizer a hook triggered): it takes no
// engine lock, so there is nothing to re-enter.
struct Untraced {
    HookGuard guard;
};

}  // namespace

// ---------------------------------------------------------------------------
// Pool

uint64_t Pool::track(uint64_t id, uint64_t size, uint32_t kind, uint32_t source) {
    Untraced untraced;
    Shard& shard = shards_[shard_of(id)];
    const int64_t created = now_ns();
    SpinGuard lock(shard.lock);
    const uint64_t serial = (++shard.registrations << 4) | shard_of(id);
    try {
        auto [it, inserted] = shard.entries.try_emplace(id, Entry{size, serial, created, kind, source});
        if (!inserted) {
            shard.bytes -= it->second.size;
            it->second = Entry{size, serial, created, kind, source};
        }
    } catch (const std::bad_alloc&) {
        return 0;
    }
    shard.bytes += size;
    return serial;
}

bool Pool::release(uint64_t id, uint64_t serial) {
    Untraced untraced;
    Shard& shard = shards_[shard_of(id)];
    SpinGuard lock(shard.lock);
    auto it = shard.entries.find(id);
    if (it == shard.entries.end() || (serial != 0 && it->second.serial != serial)) return false;
    shard.bytes -= it->second.size;
    shard.entries.erase(it);
    return true;
}

void Pool::lock_all_shards() {
    for (Shard& shard : shards_) shard.lock.lock();
}

void Pool::unlock_all_shards() {
    for (Shard& shard : shards_) shard.lock.unlock();
}

void Pool::totals(uint64_t* count, uint64_t* bytes) const {
    uint64_t c = 0, b = 0;
    for (const Shard& shard : shards_) {
        SpinGuard lock(shard.lock);
        c += shard.entries.size();
        b += shard.bytes;
    }
    *count = c;
    *bytes = b;
}

void Pool::collect(std::vector<ResourceInfo>* out) const {
    Untraced untraced;
    for (const Shard& shard : shards_) {
        SpinGuard lock(shard.lock);
        out->reserve(out->size() + shard.entries.size());
        for (const auto& [id, entry] : shard.entries) {
            out->push_back(ResourceInfo{index_, id, entry.serial, entry.size, entry.kind, entry.source,
                                        entry.created_ns});
        }
    }
}

// ---------------------------------------------------------------------------
// Registry

Registry::Registry() {
    for (auto& slot : pools_) slot.store(nullptr, std::memory_order_relaxed);
    for (auto& slot : kind_names_) slot.store(nullptr, std::memory_order_relaxed);
}

Registry::~Registry() {
    for (uint32_t i = 0; i < kind_count_.load(); ++i) delete kind_names_[i].load();
    for (uint32_t i = 0; i < count_.load(); ++i) delete pools_[i].load();
}

Pool* Registry::find(std::string_view name) const {
    const uint32_t id = names_.find(name);
    return id ? pools_[id - 1].load(std::memory_order_acquire) : nullptr;
}

Pool* Registry::at(uint32_t index) const {
    return index < pool_count() ? pools_[index].load(std::memory_order_acquire) : nullptr;
}

Pool* Registry::pool(std::string_view name) {
    if (name.empty() || name.size() > kMaxNameBytes || name.find('\0') != std::string_view::npos) return nullptr;
    Untraced untraced;
    if (Pool* found = find(name)) return found;
    std::lock_guard<std::mutex> lock(create_lock_);
    if (Pool* found = find(name)) return found;
    const uint32_t index = count_.load(std::memory_order_relaxed);
    if (index >= kMaxPools) return nullptr;
    try {
        auto* made = new Pool(std::string(name), index);
        made->set_detailed(detailed_by_default());
        pools_[index].store(made, std::memory_order_release);  // before the name: a reader finds it whole
        names_.add(made->name(), index + 1);
        count_.store(index + 1, std::memory_order_release);
        if (observer_) observer_(observer_context_, made->domain(), made->name());
        return made;
    } catch (const std::bad_alloc&) {
        return nullptr;
    }
}

void Registry::set_observer(PoolObserver observer, void* context) {
    std::lock_guard<std::mutex> lock(create_lock_);
    observer_ = observer;
    observer_context_ = context;
    if (!observer) return;
    for (uint32_t i = 0; i < count_.load(std::memory_order_relaxed); ++i) {
        Pool* each = pools_[i].load(std::memory_order_relaxed);
        observer(context, each->domain(), each->name());
    }
}

uint32_t Registry::kind_id(std::string_view kind) {
    if (kind.empty()) return kNoKind;
    Untraced untraced;
    if (uint32_t id = kinds_.find(kind)) return id;
    std::lock_guard<std::mutex> lock(create_lock_);
    if (uint32_t id = kinds_.find(kind)) return id;
    const uint32_t count = kind_count_.load(std::memory_order_relaxed);
    if (count >= kMaxKinds) return kNoKind;
    try {
        auto name = std::make_unique<std::string>(kind);
        const uint32_t id = count + 1;
        kind_names_[count].store(name.get(), std::memory_order_release);  // before the index finds it
        if (!kinds_.add(kind, id)) {
            kind_names_[count].store(nullptr, std::memory_order_relaxed);
            return kNoKind;
        }
        name.release();
        kind_count_.store(id, std::memory_order_release);
        return id;
    } catch (const std::bad_alloc&) {
        return kNoKind;
    }
}

std::string Registry::kind_name(uint32_t kind) const {
    // Lock-free: a forked child may have inherited create_lock_ held.
    if (kind == kNoKind || kind > kMaxKinds) return std::string();
    const std::string* name = kind_names_[kind - 1].load(std::memory_order_acquire);
    return name ? *name : std::string();
}

uint32_t Registry::intern_source(Source source) {
    if (source.python.empty() && source.native.empty()) return kNoSource;
    Untraced untraced;
    try {
        // One key string per source: frames joined with separators that a
        // file or function name cannot hold unescaped (NUL).
        std::string key;
        for (const SourceFrame& frame : source.python) {
            key += frame.filename;
            key += '\0';
            key += frame.function;
            key += '\0';
            key += std::to_string(frame.lineno);
            key += frame.is_entry ? "e" : "";
            key += '\0';
        }
        key += '\1';
        key.append(reinterpret_cast<const char*>(source.native.data()), source.native.size() * sizeof(uintptr_t));
        std::lock_guard<std::mutex> lock(sources_lock_);
        auto [it, inserted] = source_ids_.try_emplace(std::move(key), static_cast<uint32_t>(sources_.size() + 1));
        if (inserted) sources_.push_back(std::move(source));
        return it->second;
    } catch (const std::bad_alloc&) {
        return kNoSource;
    }
}

Source Registry::source(uint32_t id) const {
    std::lock_guard<std::mutex> lock(sources_lock_);
    return id == kNoSource || id > sources_.size() ? Source{} : sources_[id - 1];
}

__attribute__((noinline)) uint32_t Registry::capture_source(bool native, size_t native_skip) {
    Source source;
    if (native) {
        uintptr_t ips[kSourceDepth];
        // +1: this function's own frame.
        size_t n = capture_native_stack(ips, kSourceDepth, native_skip + 1);
        source.native.assign(ips, ips + n);
    }
    if (hooks_.python_stack) {
        Untraced untraced;
        hooks_.python_stack(&source.python, kSourceDepth);
    }
    return intern_source(std::move(source));
}

namespace {
Registry* g_registry = nullptr;
uint32_t g_pools_locked_for_fork = 0;  // pools whose shards fork_prepare locked
}  // namespace

void fork_prepare() {
    // create_lock_ first, the order pool creation takes it in (then the
    // engine's, through the observer): a fork never leaves it held.
    g_registry->create_lock_.lock();
    g_registry->sources_lock_.lock();
    g_pools_locked_for_fork = g_registry->pool_count();
    for (uint32_t i = 0; i < g_pools_locked_for_fork; ++i) g_registry->at(i)->lock_all_shards();
}

void fork_resume() {
    for (uint32_t i = 0; i < g_pools_locked_for_fork; ++i) g_registry->at(i)->unlock_all_shards();
    g_registry->sources_lock_.unlock();
    g_registry->create_lock_.unlock();
}

Registry& registry() {
    static Registry* instance = [] {
        g_registry = new Registry;  // never destroyed: see the header
        pthread_atfork(&fork_prepare, &fork_resume, &fork_resume);
        return g_registry;
    }();
    return *instance;
}

}  // namespace heapscope::pools
