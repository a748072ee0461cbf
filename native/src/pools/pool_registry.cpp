#include "pools/pool_registry.h"

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

// Name lookups read an immutable table published with release order; making
// a pool or a kind copies the table (rare) and keeps the old one, which a
// reader may still be using, until the registry goes (never, for the process's).
struct Registry::NameTable {
    std::unordered_map<std::string, Pool*> by_name;
};

struct Registry::KindTable {
    std::unordered_map<std::string, uint32_t> by_name;
};

Registry::Registry() : names_(new NameTable), kinds_(new KindTable) {
    for (auto& slot : pools_) slot.store(nullptr, std::memory_order_relaxed);
}

Registry::~Registry() {
    delete names_.load();
    for (const NameTable* table : retired_) delete table;
    delete kinds_.load();
    for (const KindTable* table : retired_kinds_) delete table;
    for (std::string* name : kind_names_) delete name;
    for (uint32_t i = 0; i < count_.load(); ++i) delete pools_[i].load();
}

Pool* Registry::find(std::string_view name) const {
    const NameTable* table = names();
    // A heterogeneous lookup needs C++20's transparent hashing; a pool name is
    // short, so one std::string per lookup costs less than it saves.
    auto it = table->by_name.find(std::string(name));
    return it == table->by_name.end() ? nullptr : it->second;
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
        auto* table = new NameTable(*names());
        table->by_name.emplace(made->name(), made);
        pools_[index].store(made, std::memory_order_release);
        count_.store(index + 1, std::memory_order_release);
        retired_.push_back(names_.exchange(table, std::memory_order_acq_rel));
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
    std::string key(kind);
    {
        const KindTable* table = kinds_.load(std::memory_order_acquire);
        auto it = table->by_name.find(key);
        if (it != table->by_name.end()) return it->second;
    }
    std::lock_guard<std::mutex> lock(create_lock_);
    const KindTable* current = kinds_.load(std::memory_order_acquire);
    auto it = current->by_name.find(key);
    if (it != current->by_name.end()) return it->second;
    try {
        kind_names_.push_back(new std::string(key));
        const auto id = static_cast<uint32_t>(kind_names_.size());
        auto* table = new KindTable(*current);
        table->by_name.emplace(std::move(key), id);
        retired_kinds_.push_back(kinds_.exchange(table, std::memory_order_acq_rel));
        kind_count_.store(id, std::memory_order_release);
        return id;
    } catch (const std::bad_alloc&) {
        return kNoKind;
    }
}

std::string Registry::kind_name(uint32_t kind) const {
    std::lock_guard<std::mutex> lock(create_lock_);
    return kind == kNoKind || kind > kind_names_.size() ? std::string() : *kind_names_[kind - 1];
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
    g_registry->sources_lock_.lock();
    g_pools_locked_for_fork = g_registry->pool_count();
    for (uint32_t i = 0; i < g_pools_locked_for_fork; ++i) g_registry->at(i)->lock_all_shards();
}

void fork_resume() {
    for (uint32_t i = 0; i < g_pools_locked_for_fork; ++i) g_registry->at(i)->unlock_all_shards();
    g_registry->sources_lock_.unlock();
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
