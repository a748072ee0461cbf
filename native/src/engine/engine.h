// Engine: the state every front door shares while tracing.
//
// It owns the live tables (one per domain), the stack trie, the traced-memory
// counters and the lock that serialises them. Hooks hand it events; it never
// formats, writes files or calls Python (the one call-out, FramePinner, is
// installed by the Python layer and only touches reference counts).
//
// Hot path per allocation: compare the captured stack with the thread's last
// one outside the lock, then under the lock intern only the frames that
// changed and insert one table entry.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/spin_lock.h"
#include "model/allocator.h"
#include "sample/sampler.h"
#include "store/block_table.h"
#include "store/mapping_index.h"
#include "sink/capture_sink.h"
#include "stack/frame_walk.h"
#include "stack/stack_trie.h"

namespace heapscope {

// Native frames: every frame of the stack is kept, as memray keeps them. A
// thread's buffers start at this many frames and double when a stack fills
// them (ThreadStackCache::native_capacity).
inline constexpr uint32_t kInitialNativeFrames = 128;

// Set in BlockInfo::total_depth for a block recorded exactly while sampling
// (an mmap, a custom domain's block: see sample/sampler.h). Depths never
// come near it (kMaxTotalDepth).
inline constexpr uint32_t kExactBlockBit = 1u << 31;
inline uint32_t block_depth(const BlockInfo& info) { return info.total_depth & ~kExactBlockBit; }

// A lock-free "may this address hold a recorded block?" filter, for frees
// while sampling: nearly every free is of a block that was not sampled, and
// must not cost a lock and a table lookup. Counters indexed by the address's
// own bits (16-byte granules, wrapping every 1 MiB), changed under the
// engine lock as blocks are recorded and removed, read without it (a free's
// read is ordered after its block's recording by whatever handed the pointer
// from the allocating thread to the freeing one). Direct indexing, not a
// hash, keeps neighbouring blocks -- a pymalloc pool's -- on the same cache
// lines: a hashed index missed L1 on most frees (2% of all cycles on a JSON
// workload). A counter that saturates stays set: its addresses always take
// the slow path.
class RecordedAddressFilter {
  public:
    static constexpr unsigned kBits = 16;
    bool may_contain(uintptr_t address) const {
        return counters_[slot(address)].load(std::memory_order_relaxed) != 0;
    }
    void add(uintptr_t address) {
        auto& counter = counters_[slot(address)];
        uint8_t value = counter.load(std::memory_order_relaxed);
        if (value != kSaturated) counter.store(value + 1, std::memory_order_relaxed);
    }
    void remove(uintptr_t address) {
        auto& counter = counters_[slot(address)];
        uint8_t value = counter.load(std::memory_order_relaxed);
        if (value != kSaturated && value != 0) counter.store(value - 1, std::memory_order_relaxed);
    }
    void clear() {
        for (auto& counter : counters_) counter.store(0, std::memory_order_relaxed);
    }

  private:
    static constexpr uint8_t kSaturated = 0xFF;
    static size_t slot(uintptr_t address) { return static_cast<size_t>(address >> 4) & ((size_t{1} << kBits) - 1); }
    std::atomic<uint8_t> counters_[size_t{1} << kBits] = {};
};

// Per-thread memory of the last stack interned, so that the next allocation
// interns only the frames that differ. Plain calloc'd memory owned by one thread.
struct ThreadStackCache {
    // Direct-mapped memo of (caller node, innermost frame) -> node: a loop
    // that allocates at a few lines of one function never reaches the trie.
    struct InnerMemo {
        FrameKey frame;
        uint32_t parent;
        uint32_t node;
    };
    static constexpr uint32_t kMemoSize = 64;

    uint64_t generation = 0;  // engine generation the node ids belong to
    uint32_t capacity = 0;    // frames each array holds (the traceback limit)
    uint32_t count = 0;       // frames of the last stack
    FrameKey* last = nullptr;   // last stack, innermost first
    uint32_t* last_nodes = nullptr;  // last_nodes[i]: node whose innermost frame is last[i]
    FrameKey* fresh = nullptr;  // where the next stack is captured
    uint32_t* fresh_nodes = nullptr;
    InnerMemo memo[kMemoSize] = {};  // valid for `generation` only
    // The addresses of the frames the thread's last Python stack walk met,
    // which make the next walk cheap (stack/frame_walk.h). Sized to the
    // deepest stack met (reserve_chain_frames), not to the limit.
    FrameChain chain;

    // The same for native stacks (captures with native traces): where the
    // next stack is captured, the last return addresses interned and their
    // nodes, innermost first, and room for the nodes being interned; each
    // array holds native_capacity frames (reserve_native_frames). Consecutive
    // allocations share their outer native frames, which are then not looked
    // up again.
    uint64_t native_generation = 0;
    uint32_t native_count = 0;
    uint32_t native_capacity = 0;
    uintptr_t* native_fresh = nullptr;
    uintptr_t* native_last = nullptr;
    uint32_t* native_nodes = nullptr;
    uint32_t* native_scratch = nullptr;

    // The node of the thread's labels (engine/labels.h) in a capture's trie:
    // the root its stacks hang from, valid for label_version and
    // label_generation.
    uint64_t label_version = 0;
    uint64_t label_generation = 0;
    uint32_t label_root = 0;
};

// Allocates or resizes `cache` for `capacity` frames; false if memory ran out.
bool reserve_stack_cache(ThreadStackCache* cache, uint32_t capacity);
// Makes the native arrays hold at least `capacity` frames (the last stack
// interned is kept); false if memory ran out.
bool reserve_native_frames(ThreadStackCache* cache, uint32_t capacity);
// Makes `cache->chain` hold the frames its last walk met (chain.wanted),
// up to a bound; false if memory ran out. Calls malloc: from a hook, only
// when chain.wanted > chain.capacity.
bool reserve_chain_frames(ThreadStackCache* cache);
void release_stack_cache(ThreadStackCache* cache);

// The stacks of the thread an event happened on, as a hook captured them
// (hooks/record.cpp): what the engine files the event under.
struct CapturedStacks {
    // The thread's cache: its Python frames were captured into
    // cache->fresh[0..frames), innermost first. Null with frames 0.
    ThreadStackCache* cache = nullptr;
    uint32_t frames = 0;
    uint32_t total_depth = 0;  // the stack's full depth, past the limit too
    // The thread holds the GIL and so may pin a frame's code that no stack
    // refers to yet; otherwise such a frame is recorded as kUnknownFrame,
    // except in a capture, whose sink describes frames as they are first seen.
    bool can_pin = false;
    // Native return addresses native[0..native_count), innermost first: only
    // when the engine wants native traces (a capture asked for them).
    const uintptr_t* native = nullptr;
    uint32_t native_count = 0;
};

// One allocation as a hook saw it: the block, what made it, and where.
struct AllocationSite {
    uint32_t domain = 0;  // Engine::kDefaultDomain, or a custom domain
    uintptr_t address = 0;
    uint64_t size = 0;
    Allocator allocator = Allocator::kMalloc;  // matters only to a capture
    // The block came from pymalloc (the mem and object domains), so that it
    // may be kept by position (see PoolIndex).
    bool pooled = false;
    CapturedStacks stacks;
};

struct TraceRecord {
    uint32_t domain;
    uintptr_t address;
    BlockInfo info;
};

// Called under the engine lock the first time a stack refers to a code object,
// which must then stay alive while any stack does (for Python: Py_INCREF).
// Must not allocate or take locks.
using FramePinner = void (*)(FrameKey frame);

class Engine {
  public:
    // Domain 0: blocks from Python's allocators and from native malloc and
    // mmap (the stdlib's tracemalloc domain 0). Custom domains are the others.
    static constexpr uint32_t kDefaultDomain = 0;

    // --- control (called by a front door, never from a hook) ---
    void set_frame_pinner(FramePinner pinner) { pinner_ = pinner; }
    // Starts tracing with a traceback limit; false if already tracing. With a
    // sink (a capture), every event is also handed to it, and native frames
    // are interned when `native_traces`. The sink must outlive stop().
    // `sampling` must be valid (SamplingConfig::validate); a zero seed is
    // replaced by a fresh one, readable from sampling() afterwards.
    bool start(uint32_t traceback_limit, CaptureSink* sink = nullptr, bool native_traces = false,
               const SamplingConfig& sampling = SamplingConfig{});
    // Stops tracing and forgets every trace. The frames that were pinned are
    // appended to `unpin` so the caller can release them outside the lock.
    void stop(std::vector<FrameKey>* unpin);
    // Forgets every trace and stack but keeps tracing.
    void clear(std::vector<FrameKey>* unpin);

    bool tracing() const { return tracing_.load(std::memory_order_relaxed); }
    // Whether hooks should capture native frames (a capture asked for them).
    bool native_traces() const { return native_traces_.load(std::memory_order_relaxed); }
    bool capturing();
    // Swaps the capture sink; returns the previous one. For a forked child:
    // it first runs without a sink (see after_fork_in_child), then the front
    // door either attaches the child's own writer or stops.
    CaptureSink* replace_sink(CaptureSink* sink);
    // The lock every CaptureSink call is made under. A sink may guard its own
    // state with it (CaptureOptions::hook_lock) instead of a second lock per
    // event; it must then never wait for anything while holding it.
    SpinLock* sink_lock() { return &lock_; }
    uint32_t traceback_limit() const { return limit_.load(std::memory_order_relaxed); }
    // The session's sampling. Set by start() while not tracing and read by
    // hooks without the lock (see kMaxSizeRanges).
    const SamplingConfig& sampling() const { return sampling_; }
    bool sampling_active() const { return sampling_active_.load(std::memory_order_acquire); }
    uint64_t session() const { return session_id_.load(std::memory_order_relaxed); }
    // While sampling: false when no block can be recorded at `address`
    // (lock-free; see RecordedAddressFilter). Always true otherwise.
    bool may_have_recorded(uintptr_t address) const {
        return !sampling_active() || recorded_.may_contain(address);
    }
    // What a recorded block stands for: its size and 1 when exact.
    Estimate estimate(uintptr_t address, const BlockInfo& info) const {
        if (!sampling_active() || (info.total_depth & kExactBlockBit)) return Estimate{info.size, 1};
        return sampling_.estimate(info.size, address);
    }
    uint64_t generation() const { return generation_.load(std::memory_order_acquire); }

    // --- events (called from hooks with the thread's re-entrancy guard set) ---

    // Records a block made at `site`.
    void record_alloc(const AllocationSite& site);
    // Files the block recorded at `address` under `stacks` (their native
    // frames unused), keeping its size: an object reused from a free
    // list, which the allocator never saw again, gets the stack that reused
    // it, as the stdlib's tracemalloc does. Counters are unchanged; nothing
    // happens if no block is recorded there, or while capturing (a capture's
    // records stay as written).
    void restamp(uint32_t domain, uintptr_t address, const CapturedStacks& stacks);
    // While capturing (CaptureSink::on_object, track_object_lifetimes): the
    // Python object at `address` was made, with `stacks`, or destroyed
    // (empty stacks).
    void record_object(uintptr_t address, bool created, const CapturedStacks& stacks);
    // Removes a block; false if it was not traced. `removed` may be null.
    // While sampling, an address the filter rules out returns at once, here,
    // inline: hooks call this for every free without a check of their own.
    bool record_free(uint32_t domain, uintptr_t address, BlockInfo* removed = nullptr,
                     Allocator deallocator = Allocator::kFree) {
        if (!may_have_recorded(address)) return false;  // while sampling: the unsampled majority
        return record_free_slow(domain, address, removed, deallocator);
    }
    // munmap(address, length): releases exactly [address, address + length)
    // from every recorded mapping it overlaps (part of one, a hole in one,
    // several; store/mapping_index.h), telling the sink once per piece.
    // False if it overlapped none.
    bool record_munmap(uintptr_t address, uint64_t length) {
        return has_mappings_.load(std::memory_order_relaxed) && record_munmap_slow(address, length);
    }
    // Puts back a block taken by record_free (a realloc that failed). Not
    // done while capturing: the capture already holds the free, so the block
    // simply stays untraced.
    void restore(uint32_t domain, uintptr_t address, const BlockInfo& info, bool pooled = false);
    // Tells the sink that shared objects were loaded or unloaded.
    void notify_mappings_changed();
    // While capturing: the thread `pthread_id` (pthread_self(), Python's
    // thread ident) is now called `name`. The calling thread's own new name
    // is written at once; another thread's when that thread next allocates
    // (as memray does), or at its first allocation if it has made none.
    // Any thread; holds the calling thread's hook guard meanwhile.
    void name_thread(uint64_t pthread_id, const std::string& name);
    // Interns a stack (`frames[0..count)`, innermost first) as the stacks of
    // allocations are, pinning its code (the caller holds the GIL), and
    // returns its innermost node; kRoot if it cannot (not tracing, no memory).
    // Holds the calling thread's hook guard meanwhile.
    uint32_t intern_stack(const FrameKey* frames, uint32_t count);

    // --- queries ---
    void traced_memory(uint64_t* current, uint64_t* peak);
    void reset_peak();
    size_t own_memory();
    bool find(uint32_t domain, uintptr_t address, BlockInfo* out);
    // Copies every outstanding block.
    void collect(std::vector<TraceRecord>* out);
    // Copies the frames of a stack node, innermost first.
    void frames_of(uint32_t node, std::vector<FrameKey>* out);
    // The same for many nodes under one hold of the lock: (*out)[i] belongs to nodes[i].
    void frames_of_many(const std::vector<uint32_t>& nodes, std::vector<std::vector<FrameKey>>* out);
    size_t trace_count();
    size_t stack_node_count();

    // --- fork: the child keeps tracing with its own copy of the tables ---
    void before_fork() { lock_.lock(); }
    void after_fork_in_parent() { lock_.unlock(); }
    // The child must not touch the parent's capture writer (its thread and
    // lock did not survive the fork): events go nowhere until the front door
    // decides (replace_sink or stop).
    void after_fork_in_child() {
        lock_.reset_after_fork();
        if (sink_) detached_ = true;
        sink_ = nullptr;
    }

  private:
    // The default domain's table inline: every event of the hot path asks for it.
    BlockTable* table_for(uint32_t domain, bool create) {
        return domain == kDefaultDomain ? &python_table_ : other_table(domain, create);
    }
    BlockTable* other_table(uint32_t domain, bool create);
    bool record_free_slow(uint32_t domain, uintptr_t address, BlockInfo* removed, Allocator deallocator);
    bool record_munmap_slow(uintptr_t address, uint64_t length);
    // Releases [address, address + length) from the recorded mappings (and
    // tells the sink, as `thread`); the bytes released. Holds lock_.
    uint64_t unmap_locked(uintptr_t address, uint64_t length, uint32_t thread);
    // Stores a block, which stands for `weight` (estimate()), and updates
    // current and peak bytes. True if a block was still recorded at
    // `address` (a free no hook saw); with `replaced`, a record of the
    // address in either store is looked for (BlockTable::replace) and copied
    // there. Holds lock_.
    bool insert_locked(uint32_t domain, uintptr_t address, const BlockInfo& info, const Estimate& weight, bool pooled,
                       BlockInfo* replaced = nullptr);
    // Takes a block out of a table, keeping the counters and the filter; `*was`
    // is what it stood for. Holds lock_.
    bool erase_locked(BlockTable* table, uintptr_t address, BlockInfo* removed, Estimate* was);
    uint32_t resolve_stack_locked(ThreadStackCache* cache, uint32_t frame_count, bool can_pin);
    // The node stacks of the calling thread hang from: its labels' frames
    // (engine/labels.h) while capturing, interned on first use after each
    // push or pop and kept in `cache` (may be null); the trie's root without
    // labels or a sink. Holds lock_.
    uint32_t label_root_locked(ThreadStackCache* cache);
    // A stack about to be filed, named in two steps: from the thread's cache
    // without the lock (begin_stack), then under it (finish_stack_locked) if
    // that failed or a clear came in between.
    struct StackLookup {
        uint32_t node;
        uint64_t generation;
        bool resolved;
    };
    StackLookup begin_stack(const CapturedStacks& stacks);
    uint32_t finish_stack_locked(const StackLookup& lookup, const CapturedStacks& stacks);
    uint32_t intern_frame_locked(uint32_t parent, FrameKey frame, bool can_pin, bool* substituted);
    // Announces the calling thread to the sink once per capture, and again
    // when it was renamed. Holds lock_.
    // Inline (engine.cpp): past a thread's first event, three comparisons.
    uint32_t capture_thread_locked();
    uint32_t announce_thread_locked();
    // Interns native return addresses (innermost first); the innermost's
    // node. Reuses the thread's last native stack when `cache` is given (its
    // native arrays then hold `count` frames; without it, at most
    // kInitialNativeFrames are kept). Holds lock_.
    uint32_t intern_native_locked(ThreadStackCache* cache, const uintptr_t* ips, uint32_t count);
    static bool resolve_from_cache(ThreadStackCache* cache, uint32_t frame_count, uint64_t generation, uint32_t* node);
    void drop_all_locked(std::vector<FrameKey>* unpin);

    SpinLock lock_;
    std::atomic<bool> tracing_{false};
    SamplingConfig sampling_;
    std::atomic<bool> sampling_active_{false};
    std::atomic<uint64_t> session_id_{0};  // tracing sessions started, for per-thread sampler state
    RecordedAddressFilter recorded_;  // maintained while sampling only
    // Diagnostic: HEAPSCOPE_NO_STACK_CACHE=1 at start() interns every stack in
    // full, to measure what the thread cache saves (bench/run_designs.py).
    std::atomic<bool> use_stack_cache_{true};
    std::atomic<uint64_t> generation_{1};
    // Read without the lock by hooks (GIL-free ones included): each hook reads
    // it once and sizes both its cache and its walk from that one value.
    std::atomic<uint32_t> limit_{1};
    FramePinner pinner_ = nullptr;
    CaptureSink* sink_ = nullptr;  // guarded by lock_
    // A forked child of a capture before the front door decides: nothing new
    // is recorded (no sink would hear of its stack nodes), frees still leave
    // the tables. Guarded by lock_.
    bool detached_ = false;
    std::atomic<bool> native_traces_{false};
    uint64_t session_ = 0;             // captures started; thread ids are announced once per session
    uint32_t next_thread_id_ = 0;
    // Names given to threads that have not allocated since (name_thread), by
    // pthread id, and how many were given: a thread looks in the map only
    // when that count moved since it last looked.
    std::unordered_map<uint64_t, std::string> pending_names_;
    uint64_t names_version_ = 0;
    StackTrie trie_;
    StackTrie native_trie_;  // frames are {return address, 0}
    LiveTable pinned_codes_;  // a set: each code object stacks refer to, pinned once
    BlockTable python_table_;
    std::vector<std::pair<uint32_t, BlockTable>> other_tables_;
    // Blocks made by mmap (domain 0), by range: not in python_table_, so
    // that a munmap finds every mapping it overlaps. Each piece's BlockInfo
    // is the mapping's, its size the piece's length.
    MappingIndex<BlockInfo> mappings_;
    std::atomic<bool> has_mappings_{false};  // !mappings_.empty(), read by munmap hooks without the lock
    uint64_t current_bytes_ = 0;
    uint64_t peak_bytes_ = 0;
    std::atomic<size_t> cache_bytes_{0};
    friend bool reserve_stack_cache(ThreadStackCache*, uint32_t);
    friend bool reserve_native_frames(ThreadStackCache*, uint32_t);
    friend bool reserve_chain_frames(ThreadStackCache*);
    friend void release_stack_cache(ThreadStackCache*);
};

namespace detail {
extern Engine* const g_engine;
}

// The process-wide engine: constructed when the library loads, before any
// hook can run, and never destroyed (hooks may run during interpreter
// teardown, after static destructors).
inline Engine& engine() { return *detail::g_engine; }

}  // namespace heapscope
