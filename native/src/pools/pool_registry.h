// Resource pools: named sets of live resources (images, tensors, buffers,
// handles) that a library declares when it hands them out and releases when
// their last reference goes. The registry answers "what is alive, how large,
// made where" (heapscope.pools, native/include/heapscope/pools.h).
//
// A resource is keyed by (pool, id): the id is the library's own (an object's
// address, a handle number). Registering an id that is alive replaces it (the
// old registration counts as released), as heapscope_track does for blocks.
// Each registration gets a serial number, unique in its pool, so that a late
// release of an old registration never drops a newer one with the same id.
//
// Threads: every operation may be called from any thread, with or without
// the GIL. A pool is split in shards, each a spin lock over a hash map and
// its own byte count, so counts and sizes are exact under threads. None of
// this calls Python; what needs Python (describing a Python stack, putting a
// resource in the engine's custom domain) comes through Hooks, which the
// extension module installs and which never call Python either.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/spin_lock.h"

namespace heapscope::pools {

// Pool n (in creation order, from 0) is the engine's custom domain
// kFirstDomain + n: 0x48530000 ("HS") up to 0x48530FFF. Domain 0 is Python's,
// NumPy uses 389047; extensions choosing their own numbers should avoid this range.
inline constexpr uint32_t kFirstDomain = 0x48530000u;
inline constexpr uint32_t kMaxPools = 4096;
// Distinct kinds across all pools; a kind beyond is refused (kind_id returns
// kNoKind, and the Python layer raises ValueError).
inline constexpr uint32_t kMaxKinds = 32768;

// Names with small ids (1, 2, ...), looked up without a lock: a fixed
// open-addressing array of pointers to entries that are never freed, twice
// as many slots as names. Writers are serialised by the caller. (The
// copy-on-write tables this replaces copied the whole table per new name
// and kept every copy: memory quadratic in the number of kinds.)
template <uint32_t kCapacity>
class NameIndex {
  public:
    NameIndex() = default;
    ~NameIndex() {
        for (auto& slot : slots_) delete slot.load(std::memory_order_relaxed);
    }
    NameIndex(const NameIndex&) = delete;
    NameIndex& operator=(const NameIndex&) = delete;

    // The id of `name`, or 0.
    uint32_t find(std::string_view name) const {
        for (uint32_t i = first_slot(name);; i = (i + 1) % kSlots) {
            const Entry* entry = slots_[i].load(std::memory_order_acquire);
            if (entry == nullptr) return 0;
            if (entry->name == name) return entry->id;
        }
    }
    // Adds a name not yet present; false when full. May throw bad_alloc.
    bool add(std::string_view name, uint32_t id) {
        if (size_ >= kCapacity) return false;
        auto* entry = new Entry{std::string(name), id};
        uint32_t i = first_slot(name);
        while (slots_[i].load(std::memory_order_relaxed) != nullptr) i = (i + 1) % kSlots;
        slots_[i].store(entry, std::memory_order_release);
        ++size_;
        return true;
    }
    // The name with id `id` (1 <= id <= size()), found by a scan: for reports only.
    std::string name_of(uint32_t id) const {
        for (const auto& slot : slots_) {
            const Entry* entry = slot.load(std::memory_order_acquire);
            if (entry && entry->id == id) return entry->name;
        }
        return std::string();
    }

  private:
    static constexpr uint32_t kSlots = 2 * kCapacity;
    struct Entry {
        std::string name;
        uint32_t id;
    };
    static uint32_t first_slot(std::string_view name) {
        return static_cast<uint32_t>(std::hash<std::string_view>()(name) % kSlots);
    }
    std::atomic<const Entry*> slots_[kSlots] = {};
    uint32_t size_ = 0;  // guarded by the writers' lock
};
inline constexpr size_t kMaxNameBytes = 1024;

// A Python frame of a resource's source, described when it was registered.
struct SourceFrame {
    std::string function;
    std::string filename;
    int lineno = 0;
    bool is_entry = false;  // outermost frame of one interpreter-loop call (merging with native frames)
    bool operator==(const SourceFrame& other) const {
        return lineno == other.lineno && is_entry == other.is_entry && function == other.function &&
               filename == other.filename;
    }
};

// Where a resource was made: its Python stack and, when registered from C or
// C++, its native return addresses (symbolized when a snapshot is made).
// Both innermost first.
struct Source {
    std::vector<SourceFrame> python;
    std::vector<uintptr_t> native;
};

struct Hooks {
    // Put a resource in / take it out of the engine's custom domain while
    // heapscope traces (domains::track / untrack). Any thread; never call Python.
    int (*track_block)(uint32_t domain, uint64_t id, uint64_t size) = nullptr;
    int (*untrack_block)(uint32_t domain, uint64_t id) = nullptr;
    // Describes the calling thread's Python stack (innermost first) into
    // `out`, up to `limit` frames. Never calls Python.
    void (*python_stack)(std::vector<SourceFrame>* out, uint32_t limit) = nullptr;
};

// One live resource, as a snapshot lists it.
struct ResourceInfo {
    uint32_t pool = 0;  // the pool's index
    uint64_t id = 0;
    uint64_t serial = 0;
    uint64_t size = 0;
    uint32_t kind = 0;     // Registry::kind_name; 0: none
    uint32_t source = 0;   // Registry::source; 0: no details
    int64_t created_ns = 0;  // CLOCK_REALTIME
};

// Told of every pool as it is made (a capture names each pool's domain).
// Called with the registry's creation lock held, from the creating thread.
using PoolObserver = void (*)(void* context, uint32_t domain, const std::string& name);

class Pool {
  public:
    static constexpr size_t kShards = 16;

    Pool(std::string name, uint32_t index) : name_(std::move(name)), index_(index) {}
    Pool(const Pool&) = delete;
    Pool& operator=(const Pool&) = delete;

    const std::string& name() const { return name_; }
    uint32_t index() const { return index_; }
    uint32_t domain() const { return kFirstDomain + index_; }

    // Registers `id`, replacing a live registration of it. Returns the
    // registration's serial (never 0), or 0 if memory ran out. May allocate
    // (the allocation is never traced: it runs under a HookGuard).
    uint64_t track(uint64_t id, uint64_t size, uint32_t kind, uint32_t source);
    // Releases `id` if it is alive and, unless `serial` is 0, registered
    // with that serial. True if it released something.
    bool release(uint64_t id, uint64_t serial = 0);

    // Exact at the moment each shard is read.
    void totals(uint64_t* count, uint64_t* bytes) const;
    void collect(std::vector<ResourceInfo>* out) const;

    // Around fork() (Registry's handlers): no shard is left locked in the
    // child by a thread that does not exist there.
    void lock_all_shards();
    void unlock_all_shards();

    bool detailed() const { return detailed_.load(std::memory_order_relaxed); }
    void set_detailed(bool on) { detailed_.store(on, std::memory_order_relaxed); }

  private:
    struct Entry {
        uint64_t size;
        uint64_t serial;
        int64_t created_ns;
        uint32_t kind;
        uint32_t source;
    };
    struct alignas(64) Shard {
        mutable SpinLock lock;
        std::unordered_map<uint64_t, Entry> entries;
        uint64_t bytes = 0;
        uint64_t registrations = 0;
    };
    static size_t shard_of(uint64_t id) {
        // Addresses are 16-byte aligned: mix the bits before picking a shard.
        uint64_t x = id * 0x9E3779B97F4A7C15ull;
        return static_cast<size_t>(x >> 60);
    }

    const std::string name_;
    const uint32_t index_;
    std::atomic<bool> detailed_{false};
    Shard shards_[kShards];
};

class Registry {
  public:
    static constexpr uint32_t kNoSource = 0;
    static constexpr uint32_t kNoKind = 0;

    Registry();
    ~Registry();
    Registry(const Registry&) = delete;
    Registry& operator=(const Registry&) = delete;

    // The pool of that name, made on first use; pools live as long as the
    // process. Null if the name is empty, longer than kMaxNameBytes or holds
    // a NUL byte, or if kMaxPools pools exist. Lock-free once the pool exists.
    Pool* pool(std::string_view name);
    Pool* find(std::string_view name) const;
    Pool* at(uint32_t index) const;
    uint32_t pool_count() const { return count_.load(std::memory_order_acquire); }

    // Kinds are interned names; 0 stands for "no kind" (and for an empty name).
    uint32_t kind_id(std::string_view kind);
    std::string kind_name(uint32_t kind) const;

    // Sources are interned: identical sources share an id. 0 is "none".
    uint32_t intern_source(Source source);
    Source source(uint32_t id) const;
    // Captures the calling thread's Python stack (through the hook) and, if
    // `native`, its native stack past `native_skip` innermost frames, and
    // interns them. Never calls Python.
    uint32_t capture_source(bool native, size_t native_skip);

    // Detailed profiling of pools made later (set_detailed on each existing one too).
    void set_detailed_by_default(bool on) { detailed_default_.store(on, std::memory_order_relaxed); }
    bool detailed_by_default() const { return detailed_default_.load(std::memory_order_relaxed); }

    void set_hooks(const Hooks& hooks) { hooks_ = hooks; }
    const Hooks& hooks() const { return hooks_; }

    // Installs `observer` (null to remove it) and, if set, calls it at once
    // for every existing pool, under the same lock as pool creation: no pool
    // is missed or announced twice.
    void set_observer(PoolObserver observer, void* context);

    // Frames kept per Python stack and native stack.
    static constexpr uint32_t kSourceDepth = 64;

  private:
    mutable std::mutex create_lock_;  // serialises making pools and kinds
    NameIndex<kMaxPools> names_;      // pool name -> index + 1
    std::atomic<Pool*> pools_[kMaxPools];
    std::atomic<uint32_t> count_{0};
    PoolObserver observer_ = nullptr;
    void* observer_context_ = nullptr;
    std::atomic<bool> detailed_default_{false};
    Hooks hooks_;

    NameIndex<kMaxKinds> kinds_;  // kind -> id
    std::atomic<const std::string*> kind_names_[kMaxKinds];  // by id - 1, for kind_name without a lock
    std::atomic<uint32_t> kind_count_{0};

    friend void fork_prepare();
    friend void fork_resume();
    mutable std::mutex sources_lock_;
    std::vector<Source> sources_;  // by id - 1
    std::unordered_map<std::string, uint32_t> source_ids_;  // serialized source -> id
};

// The process's registry. Never destroyed (resources may be released during
// exit, after static destructors ran). It installs fork handlers that hold
// the creation lock, every shard lock and the sources lock across fork().
// Its prepare handler runs before the engine's (registered earlier, so run
// later): a pool being made, which may wait on the engine's lock through a
// capture, finishes before the engine's lock is taken.
Registry& registry();

}  // namespace heapscope::pools
