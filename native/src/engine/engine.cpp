#include "engine/engine.h"
#include "engine/thread_state.h"

#include <pthread.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <new>
#include <tuple>
#include <utility>

namespace heapscope {

namespace {
alignas(Engine) unsigned char g_engine_storage[sizeof(Engine)];

Engine& stored_engine() { return *std::launder(reinterpret_cast<Engine*>(g_engine_storage)); }

// fork() copies the tables into the child, which goes on tracing with its
// own copy. The lock is held across fork so that no other thread is halfway
// through changing them; in the child the thread that held it is gone. The
// forking thread counts as inside a hook meanwhile, so that an allocation by
// another atfork handler passes through instead of waiting for our own lock.
void prepare_fork() {
    t_guard_state.in_hook = true;
    stored_engine().before_fork();
}
void parent_after_fork() {
    stored_engine().after_fork_in_parent();
    t_guard_state.in_hook = false;
}
void child_after_fork() {
    stored_engine().after_fork_in_child();
    t_guard_state.in_hook = false;
    reseed_sampler_streams_in_child();
    t_hook_state.sampler.rng = 0;  // the only thread left: its next draw reseeds from the child's stream
}

Engine* construct_engine() {
    auto* instance = new (g_engine_storage) Engine();
    pthread_atfork(prepare_fork, parent_after_fork, child_after_fork);
    return instance;
}
}  // namespace

Engine* const detail::g_engine = construct_engine();

namespace {
size_t cache_bytes_for(uint32_t capacity) {
    return 2 * capacity * (sizeof(FrameKey) + sizeof(uint32_t));
}
}  // namespace

namespace {
// Frees the Python-frame arrays of `cache`.
void release_python_arrays(ThreadStackCache* cache, std::atomic<size_t>* accounted) {
    if (cache->capacity) accounted->fetch_sub(cache_bytes_for(cache->capacity), std::memory_order_relaxed);
    // The two arrays of each kind were allocated as one block; free the base.
    std::free(cache->last < cache->fresh ? cache->last : cache->fresh);
    std::free(cache->last_nodes < cache->fresh_nodes ? cache->last_nodes : cache->fresh_nodes);
    cache->last = cache->fresh = nullptr;
    cache->last_nodes = cache->fresh_nodes = nullptr;
    cache->capacity = cache->count = 0;
    cache->generation = 0;
}
}  // namespace

bool reserve_stack_cache(ThreadStackCache* cache, uint32_t capacity) {
    if (cache->capacity >= capacity) return true;
    release_python_arrays(cache, &engine().cache_bytes_);
    auto* keys = static_cast<FrameKey*>(std::calloc(2 * size_t{capacity}, sizeof(FrameKey)));
    auto* nodes = static_cast<uint32_t*>(std::calloc(2 * size_t{capacity}, sizeof(uint32_t)));
    if (!keys || !nodes) {
        std::free(keys);
        std::free(nodes);
        return false;
    }
    cache->last = keys;
    cache->fresh = keys + capacity;
    cache->last_nodes = nodes;
    cache->fresh_nodes = nodes + capacity;
    cache->capacity = capacity;
    cache->count = 0;
    cache->generation = 0;
    for (auto& entry : cache->memo) entry = ThreadStackCache::InnerMemo{};
    engine().cache_bytes_.fetch_add(cache_bytes_for(capacity), std::memory_order_relaxed);
    return true;
}

namespace {
size_t native_bytes_for(uint32_t capacity) { return size_t{capacity} * 2 * (sizeof(uintptr_t) + sizeof(uint32_t)); }
}  // namespace

bool reserve_native_frames(ThreadStackCache* cache, uint32_t capacity) {
    if (cache->native_capacity >= capacity) return true;
    auto* fresh = static_cast<uintptr_t*>(std::calloc(capacity, sizeof(uintptr_t)));
    auto* last = static_cast<uintptr_t*>(std::calloc(capacity, sizeof(uintptr_t)));
    auto* nodes = static_cast<uint32_t*>(std::calloc(capacity, sizeof(uint32_t)));
    auto* scratch = static_cast<uint32_t*>(std::calloc(capacity, sizeof(uint32_t)));
    if (!fresh || !last || !nodes || !scratch) {
        std::free(fresh);
        std::free(last);
        std::free(nodes);
        std::free(scratch);
        return false;
    }
    if (cache->native_count) {  // keep the last stack: the next one shares its outer frames
        std::memcpy(last, cache->native_last, cache->native_count * sizeof(uintptr_t));
        std::memcpy(nodes, cache->native_nodes, cache->native_count * sizeof(uint32_t));
    }
    std::free(cache->native_fresh);
    std::free(cache->native_last);
    std::free(cache->native_nodes);
    std::free(cache->native_scratch);
    engine().cache_bytes_.fetch_add(native_bytes_for(capacity) - native_bytes_for(cache->native_capacity),
                                    std::memory_order_relaxed);
    cache->native_fresh = fresh;
    cache->native_last = last;
    cache->native_nodes = nodes;
    cache->native_scratch = scratch;
    cache->native_capacity = capacity;
    return true;
}

namespace {
// Frames a thread's chain grows to at most: deeper stacks walk their outer
// part without prediction.
constexpr uint32_t kMaxChainFrames = 1u << 16;

size_t chain_bytes_for(uint32_t capacity) {
    // Two address arrays and the anchor's tail (stack/frame_walk.h).
    return capacity ? (size_t{capacity} + kChainSlack) * (2 * sizeof(uintptr_t) + sizeof(FrameKey)) : 0;
}
}  // namespace

bool reserve_chain_frames(ThreadStackCache* cache) {
    FrameChain& chain = cache->chain;
    if (chain.wanted <= chain.capacity || chain.capacity >= kMaxChainFrames) return true;
    uint32_t capacity = 64;
    while (capacity < chain.wanted && capacity < kMaxChainFrames) capacity *= 2;
    const size_t before = chain_bytes_for(chain.capacity);
    if (!reserve_frame_chain(&chain, capacity)) return false;
    engine().cache_bytes_.fetch_add(chain_bytes_for(capacity) - before, std::memory_order_relaxed);
    return true;
}

void release_stack_cache(ThreadStackCache* cache) {
    release_python_arrays(cache, &engine().cache_bytes_);
    engine().cache_bytes_.fetch_sub(chain_bytes_for(cache->chain.capacity), std::memory_order_relaxed);
    release_frame_chain(&cache->chain);
    if (cache->native_capacity) {
        engine().cache_bytes_.fetch_sub(native_bytes_for(cache->native_capacity), std::memory_order_relaxed);
    }
    std::free(cache->native_fresh);
    std::free(cache->native_last);
    std::free(cache->native_nodes);
    std::free(cache->native_scratch);
    cache->native_fresh = cache->native_last = nullptr;
    cache->native_nodes = cache->native_scratch = nullptr;
    cache->native_capacity = cache->native_count = 0;
}

bool Engine::start(uint32_t traceback_limit, CaptureSink* sink, bool native_traces, const SamplingConfig& sampling) {
    SpinGuard guard(lock_);
    if (tracing_.load(std::memory_order_relaxed)) return false;
    limit_.store(traceback_limit, std::memory_order_relaxed);
    sampling_ = sampling;
    if (sampling_.seed == 0) {
        timespec now{};
        clock_gettime(CLOCK_MONOTONIC, &now);
        sampling_.seed = (uint64_t(now.tv_sec) * 1000000000u + uint64_t(now.tv_nsec)) ^ (uint64_t(getpid()) << 40);
        if (sampling_.seed == 0) sampling_.seed = 1;
    }
    session_id_.fetch_add(1, std::memory_order_relaxed);
    recorded_.clear();
    // Release: a hook that sees the flag sees the configuration written above.
    sampling_active_.store(!sampling_.exact(), std::memory_order_release);
    sink_ = sink;
    native_traces_.store(sink && native_traces, std::memory_order_relaxed);
    ++session_;
    const char* no_cache = std::getenv("HEAPSCOPE_NO_STACK_CACHE");
    use_stack_cache_.store(!(no_cache && *no_cache && *no_cache != '0'), std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
    current_bytes_ = peak_bytes_ = 0;
    tracing_.store(true, std::memory_order_release);
    return true;
}

void Engine::drop_all_locked(std::vector<FrameKey>* unpin) {
    pinned_codes_.for_each([unpin](uintptr_t code, const BlockInfo&) { unpin->push_back(FrameKey{code, 0}); });
    pinned_codes_.clear();
    trie_.clear();
    native_trie_.clear();
    python_table_.clear();
    other_tables_.clear();
    mappings_.clear();
    has_mappings_.store(false, std::memory_order_relaxed);
    if (sampling_active()) recorded_.clear();
    other_tables_.shrink_to_fit();
    current_bytes_ = peak_bytes_ = 0;
    // Thread caches hold node ids of the old trie: invalidate them.
    generation_.fetch_add(1, std::memory_order_release);
}

void Engine::stop(std::vector<FrameKey>* unpin) {
    SpinGuard guard(lock_);
    tracing_.store(false, std::memory_order_release);
    sink_ = nullptr;
    detached_ = false;
    pending_names_.clear();
    native_traces_.store(false, std::memory_order_relaxed);
    drop_all_locked(unpin);
    sampling_active_.store(false, std::memory_order_relaxed);
}

bool Engine::capturing() {
    SpinGuard guard(lock_);
    return sink_ != nullptr;
}

CaptureSink* Engine::replace_sink(CaptureSink* sink) {
    SpinGuard guard(lock_);
    CaptureSink* previous = sink_;
    sink_ = sink;
    detached_ = false;
    ++session_;  // threads are announced again: a forked child's tids are its own
    if (!sink) native_traces_.store(false, std::memory_order_relaxed);
    return previous;
}

void Engine::notify_mappings_changed() {
    SpinGuard guard(lock_);
    if (sink_) sink_->on_mappings_changed();
}

inline uint32_t Engine::capture_thread_locked() {
    const ThreadHookState& state = t_hook_state;
    if (state.thread_id != 0 && state.announced_session == session_ && state.names_seen == names_version_) [[likely]] {
        return state.thread_id;
    }
    return announce_thread_locked();
}

__attribute__((noinline)) uint32_t Engine::announce_thread_locked() {
    ThreadHookState& state = t_hook_state;
    if (state.thread_id == 0) state.thread_id = ++next_thread_id_;
    const bool first = state.announced_session != session_;
    if (first || state.names_seen != names_version_) {
        state.names_seen = names_version_;
        auto pending = pending_names_.find(static_cast<uint64_t>(pthread_self()));
        const uint64_t os_tid = static_cast<uint64_t>(syscall(SYS_gettid));
        if (pending != pending_names_.end()) {
            sink_->on_thread(state.thread_id, os_tid, &pending->second);
            pending_names_.erase(pending);
        } else if (first) {
            sink_->on_thread(state.thread_id, os_tid, nullptr);
        }
        state.announced_session = session_;
    }
    return state.thread_id;
}

void Engine::name_thread(uint64_t pthread_id, const std::string& name) {
    HookGuard inside;  // the map and the record allocate: untraced, and no free may take the lock again
    SpinGuard guard(lock_);
    if (!sink_ || detached_) return;
    const ThreadHookState& state = t_hook_state;
    if (pthread_id == static_cast<uint64_t>(pthread_self()) && state.thread_id != 0 &&
        state.announced_session == session_) {
        sink_->on_thread(state.thread_id, static_cast<uint64_t>(syscall(SYS_gettid)), &name);
        return;
    }
    pending_names_[pthread_id] = name;
    ++names_version_;
}

uint32_t Engine::intern_native_locked(ThreadStackCache* cache, const uintptr_t* ips, uint32_t count) {
    uint32_t fallback[kInitialNativeFrames];
    if (cache && cache->native_capacity < count) cache = nullptr;  // cannot hold it: intern without the cache
    if (!cache && count > kInitialNativeFrames) count = kInitialNativeFrames;
    const uint64_t gen = generation_.load(std::memory_order_relaxed);
    uint32_t last = cache && cache->native_generation == gen ? cache->native_count : 0;
    // Outer frames shared with the last stack keep their nodes.
    uint32_t same = 0;
    while (same < count && same < last && ips[count - 1 - same] == cache->native_last[last - 1 - same]) ++same;
    if (same == count && count == last) return count ? cache->native_nodes[0] : StackTrie::kRoot;
    uint32_t* nodes = cache ? cache->native_scratch : fallback;
    for (uint32_t j = 0; j < same; ++j) nodes[count - 1 - j] = cache->native_nodes[last - 1 - j];
    uint32_t parent = same ? nodes[count - same] : StackTrie::kRoot;
    for (uint32_t k = count - same; k-- > 0;) {
        bool created = false;
        uint32_t node = native_trie_.intern(parent, FrameKey{ips[k], 0}, &created);
        if (node == StackTrie::kNoNode) {  // out of memory: keep the outer part, cache nothing
            if (cache) cache->native_count = 0;
            return parent;
        }
        if (created) sink_->on_native_node(node, parent, ips[k]);
        nodes[k] = parent = node;
    }
    if (cache) {
        std::memmove(cache->native_last, ips, count * sizeof(uintptr_t));
        std::swap(cache->native_nodes, cache->native_scratch);
        cache->native_count = count;
        cache->native_generation = gen;
    }
    return parent;
}

void Engine::clear(std::vector<FrameKey>* unpin) {
    SpinGuard guard(lock_);
    drop_all_locked(unpin);
}

BlockTable* Engine::other_table(uint32_t domain, bool create) {
    for (auto& [d, table] : other_tables_) {
        if (d == domain) return &table;
    }
    if (!create) return nullptr;
    other_tables_.emplace_back(std::piecewise_construct, std::forward_as_tuple(domain), std::forward_as_tuple());
    return &other_tables_.back().second;
}

namespace {
inline uint32_t memo_slot(uint32_t parent, FrameKey frame) {
    uint64_t h = (frame.instr ^ (frame.code >> 4) ^ (uint64_t{parent} << 20)) * 0x9E3779B97F4A7C15ull;
    return static_cast<uint32_t>(h >> 58);  // kMemoSize == 64
}
static_assert(ThreadStackCache::kMemoSize == 64, "memo_slot takes the top 6 bits");
}  // namespace

inline bool same_frames(const FrameKey* a, const FrameKey* b, uint32_t count) {
    if (count > 8) return std::memcmp(a, b, count * sizeof(FrameKey)) == 0;
    for (uint32_t i = 0; i < count; ++i) {  // short stacks: cheaper than calling memcmp
        if (a[i] != b[i]) return false;
    }
    return true;
}

// The lock-free fast path: the thread's own cache answers when the stack has
// the depth of the last one and differs at most in its innermost frame, as
// in a loop. Reads only thread-owned memory.
bool Engine::resolve_from_cache(ThreadStackCache* cache, uint32_t n, uint64_t generation, uint32_t* node) {
    if (cache->generation != generation || n != cache->count) return false;
    FrameKey* fresh = cache->fresh;
    FrameKey* last = cache->last;
    if (!same_frames(fresh + 1, last + 1, n - 1)) return false;
    if (fresh[0] == last[0]) {
        *node = cache->last_nodes[0];
        return true;
    }
    uint32_t parent = n > 1 ? cache->last_nodes[1] : StackTrie::kRoot;
    const ThreadStackCache::InnerMemo& memo = cache->memo[memo_slot(parent, fresh[0])];
    if (memo.node == 0 || memo.parent != parent || memo.frame != fresh[0]) return false;
    last[0] = fresh[0];
    cache->last_nodes[0] = *node = memo.node;
    return true;
}

// The node of `frame` called from `parent`, made if new (and announced to
// the sink); kNoNode if memory ran out. A frame whose code no stack refers
// to yet is pinned if `can_pin`; a thread that may not pin records it as
// kUnknownFrame (setting `*substituted`), except in a capture.
uint32_t Engine::intern_frame_locked(uint32_t parent, FrameKey frame, bool can_pin, bool* substituted) {
    uint32_t node = trie_.find(parent, frame);
    if (node != StackTrie::kNoNode) return node;
    if (frame != kUnknownFrame && !pinned_codes_.find(frame.code)) {
        if (can_pin) {
            bool ok = true;
            pinned_codes_.insert(frame.code, BlockInfo{}, nullptr, &ok);
            if (ok && pinner_) pinner_(frame);
            if (!ok) {  // cannot remember the pin: do not take it
                frame = kUnknownFrame;
                *substituted = true;
            }
        } else if (!sink_) {
            frame = kUnknownFrame;  // only a thread with the GIL may pin
            *substituted = true;
        }
        // A capture keeps the frame unpinned: the sink describes it
        // now, while the allocating thread's own frame holds its code
        // alive, and a later stack seen with the GIL pins it.
    }
    bool created = false;
    node = trie_.intern(parent, frame, &created);
    if (created && sink_) sink_->on_python_node(node, parent, frame);
    return node;
}

uint32_t Engine::label_root_locked(ThreadStackCache* cache) {
    const ThreadHookState& state = t_hook_state;
    if (state.label_depth == 0 || !sink_) return StackTrie::kRoot;
    const uint64_t gen = generation_.load(std::memory_order_relaxed);
    if (cache && cache->label_root != StackTrie::kRoot && cache->label_version == state.label_version &&
        cache->label_generation == gen) {
        return cache->label_root;
    }
    uint32_t node = StackTrie::kRoot;
    const uint32_t depth = state.label_depth < kMaxLabelDepth ? state.label_depth : kMaxLabelDepth;
    for (uint32_t i = 0; i < depth; ++i) {
        const FrameKey frame{kLabelCode, state.labels[i]};
        bool created = false;
        const uint32_t child = trie_.intern(node, frame, &created);
        if (child == StackTrie::kNoNode) return node;  // out of memory: the outer labels only
        if (created) sink_->on_python_node(child, node, frame);
        node = child;
    }
    if (cache) {
        cache->label_root = node;
        cache->label_version = state.label_version;
        cache->label_generation = gen;
    }
    return node;
}

uint32_t Engine::intern_stack(const FrameKey* frames, uint32_t count) {
    // The trie may grow: a free of its old memory reaching a hook must pass
    // through, not take the lock again.
    HookGuard inside;
    SpinGuard guard(lock_);
    if (!tracing_.load(std::memory_order_relaxed)) return StackTrie::kRoot;
    uint32_t parent = StackTrie::kRoot;
    bool substituted = false;
    for (uint32_t k = count; k-- > 0;) {
        const uint32_t node = intern_frame_locked(parent, frames[k], true, &substituted);
        if (node == StackTrie::kNoNode) return StackTrie::kRoot;
        parent = node;
    }
    return parent;
}

// The fresh stack is compared with the last one from the outermost frame in:
// the common outer part keeps its node ids, and only the inner frames that
// differ are looked up in the trie. Loops that allocate at one line intern
// nothing at all.
uint32_t Engine::resolve_stack_locked(ThreadStackCache* cache, uint32_t n, bool can_pin) {
    uint64_t gen = generation_.load(std::memory_order_relaxed);
    if (cache->generation != gen) {
        cache->count = 0;
        for (auto& entry : cache->memo) entry = ThreadStackCache::InnerMemo{};
    }
    bool use_cache = use_stack_cache_.load(std::memory_order_relaxed);
    uint32_t m = cache->generation == gen && use_cache ? cache->count : 0;
    const FrameKey* fresh = cache->fresh;
    const FrameKey* last = cache->last;
    uint32_t same = 0;
    while (same < n && same < m && fresh[n - 1 - same] == last[m - 1 - same]) ++same;

    uint32_t* fresh_nodes = cache->fresh_nodes;
    for (uint32_t j = 0; j < same; ++j) fresh_nodes[n - 1 - j] = cache->last_nodes[m - 1 - j];
    // Labels change the root, and push_label/pop_label empty the cache, so
    // a common outer part is always under the same root.
    uint32_t parent = same ? cache->last_nodes[m - same] : label_root_locked(cache);
    bool complete = true;
    bool substituted = false;
    for (uint32_t k = n - same; k-- > 0;) {
        const uint32_t node = intern_frame_locked(parent, fresh[k], can_pin, &substituted);
        if (node == StackTrie::kNoNode) {  // out of memory: keep the part we have
            complete = false;
            break;
        }
        fresh_nodes[k] = parent = node;
    }
    if (!complete || substituted) {
        // Substituted or missing frames: do not let this stack seed the cache.
        cache->count = 0;
        return parent;
    }
    // The fresh stack becomes the last one: swap the buffers.
    std::swap(cache->fresh, cache->last);
    std::swap(cache->fresh_nodes, cache->last_nodes);
    cache->count = n;
    cache->generation = gen;
    uint32_t caller = n > 1 ? cache->last_nodes[1] : StackTrie::kRoot;
    cache->memo[memo_slot(caller, cache->last[0])] = ThreadStackCache::InnerMemo{cache->last[0], caller, parent};
    return parent;
}

void Engine::record_alloc(const AllocationSite& site) {
    const CapturedStacks& stacks = site.stacks;
    const StackLookup lookup = begin_stack(stacks);
    SpinGuard guard(lock_);
    if (!tracing_.load(std::memory_order_relaxed) || detached_) return;
    const uint32_t node = finish_stack_locked(lookup, stacks);
    const uint32_t domain = site.domain;
    const uintptr_t address = site.address;
    const uint64_t size = site.size;
    const Allocator allocator = site.allocator;
    uint32_t total_depth = stacks.total_depth;
    bool pooled = site.pooled;
    // While sampling, mmaps and custom domains are recorded exactly: say so
    // in the block, so that its estimate is its size (see sample/sampler.h).
    // So is heapscope's own probe (hooks_in_chain), recorded whatever the sampler says.
    if (sampling_active() && (!sampled_allocator(allocator) || t_hook_state.record_all)) {
        total_depth |= kExactBlockBit;
        pooled = false;  // PoolIndex keeps 16 bits of depth: the flag would be lost
    }
    BlockInfo info{size, node, total_depth};
    const Estimate weight = estimate(address, info);
    const bool mapping = allocator == Allocator::kMmap && domain == kDefaultDomain;
    uint32_t thread = 0;
    if (sink_) thread = capture_thread_locked();
    // A block still recorded at this address was freed where no hook saw
    // it: the capture must see that free before the new block. A sink that
    // keeps state per block must answer on_alloc before the block is stored,
    // so the stale block is erased first; for one that keeps none, the
    // insert itself reports it (one table operation). Only this differs.
    const bool erase_first = sink_ && sink_->keeps_block_state();
    const bool insert_reports = sink_ && !erase_first;
    if (mapping) {
        unmap_locked(address, size, thread);  // a mapping made over live ones (MAP_FIXED) replaces them
    } else if (erase_first) {
        BlockInfo stale;
        Estimate was;
        if (erase_locked(table_for(domain, true), address, &stale, &was)) {
            sink_->on_free(DeallocationEvent{address, was.bytes, domain, thread, Allocator::kFree, stale, was.count});
        }
    }
    const uint32_t native =
        sink_ && stacks.native_count ? intern_native_locked(stacks.cache, stacks.native, stacks.native_count) : 0;
    // Made only for a sink: the tracemalloc door's path stays as short as it was.
    const auto event = [&] {
        return AllocationEvent{address, weight.bytes, domain, thread, node, native, allocator, weight.count};
    };
    if (erase_first) info.sink_state = sink_->on_alloc(event());
    if (mapping) {
        if (insert_reports) sink_->on_alloc(event());
        if (size == 0) return;  // nothing mapped
        // Mappings are recorded exactly, even while sampling: their sizes are true extents.
        mappings_.map(address, size, info, [](uint64_t, uint64_t, Unmapped, const BlockInfo&) {});
        has_mappings_.store(true, std::memory_order_relaxed);
        current_bytes_ += size;
        if (current_bytes_ > peak_bytes_) peak_bytes_ = current_bytes_;
        return;
    }
    if (!insert_reports) {  // no sink, or one that was told already
        insert_locked(domain, address, info, weight, pooled);
        return;
    }
    BlockInfo stale;
    if (insert_locked(domain, address, info, weight, pooled, &stale)) {
        const Estimate was = estimate(address, stale);
        sink_->on_free(DeallocationEvent{address, was.bytes, domain, thread, Allocator::kFree, stale, was.count});
    }
    sink_->on_alloc(event());
}

void Engine::restamp(uint32_t domain, uintptr_t address, const CapturedStacks& stacks) {
    const StackLookup lookup = begin_stack(stacks);
    SpinGuard guard(lock_);
    if (!tracing_.load(std::memory_order_relaxed) || detached_ || sink_) return;
    BlockTable* table = table_for(domain, false);
    BlockInfo info;
    if (!table || !table->find(address, &info)) return;
    info.stack = finish_stack_locked(lookup, stacks);
    // The exact flag stays: the block's estimate, and so the counters, must not change.
    info.total_depth = stacks.total_depth | (info.total_depth & kExactBlockBit);
    table->update(address, info);
}

Engine::StackLookup Engine::begin_stack(const CapturedStacks& stacks) {
    StackLookup lookup{StackTrie::kRoot, generation_.load(std::memory_order_acquire), false};
    if (stacks.frames != 0 && use_stack_cache_.load(std::memory_order_relaxed)) {
        lookup.resolved = resolve_from_cache(stacks.cache, stacks.frames, lookup.generation, &lookup.node);
    }
    return lookup;
}

uint32_t Engine::finish_stack_locked(const StackLookup& lookup, const CapturedStacks& stacks) {
    // A clear between the lock-free lookup and here makes its node stale.
    if (lookup.resolved && generation_.load(std::memory_order_relaxed) == lookup.generation) return lookup.node;
    // No Python frame: the labels alone.
    return stacks.frames ? resolve_stack_locked(stacks.cache, stacks.frames, stacks.can_pin)
                         : label_root_locked(stacks.cache);
}

void Engine::record_object(uintptr_t address, bool created, const CapturedStacks& stacks) {
    const StackLookup lookup = begin_stack(stacks);
    SpinGuard guard(lock_);
    if (!tracing_.load(std::memory_order_relaxed) || detached_ || !sink_) return;
    const uint32_t node = finish_stack_locked(lookup, stacks);
    const uint32_t thread = capture_thread_locked();
    const uint32_t native =
        stacks.native_count ? intern_native_locked(stacks.cache, stacks.native, stacks.native_count) : 0;
    sink_->on_object(ObjectEvent{address, thread, created, node, native});
}

bool Engine::insert_locked(uint32_t domain, uintptr_t address, const BlockInfo& info, const Estimate& weight,
                           bool pooled, BlockInfo* replaced_out) {
    BlockInfo replaced;
    bool ok = true;
    BlockTable* table = table_for(domain, true);
    const bool existed = replaced_out ? table->replace(address, info, &replaced, &ok, pooled)
                                      : table->insert(address, info, &replaced, &ok, pooled);
    if (existed) {
        current_bytes_ -= estimate(address, replaced).bytes;  // a free we never saw
        if (replaced_out) *replaced_out = replaced;
    }
    if (!ok) {  // the table could not grow: this block goes untraced
        if (existed && sampling_active()) recorded_.remove(address);
        return existed;
    }
    if (!existed && sampling_active()) recorded_.add(address);
    current_bytes_ += weight.bytes;
    if (current_bytes_ > peak_bytes_) peak_bytes_ = current_bytes_;
    return existed;
}

bool Engine::erase_locked(BlockTable* table, uintptr_t address, BlockInfo* removed, Estimate* was) {
    if (!table->erase(address, removed)) return false;
    *was = estimate(address, *removed);
    current_bytes_ -= was->bytes;
    if (sampling_active()) recorded_.remove(address);
    return true;
}

bool Engine::record_free_slow(uint32_t domain, uintptr_t address, BlockInfo* removed, Allocator deallocator) {
    SpinGuard guard(lock_);
    if (!tracing_.load(std::memory_order_relaxed)) return false;
    BlockTable* table = table_for(domain, false);
    BlockInfo info;
    Estimate was;
    if (!table || !erase_locked(table, address, &info, &was)) return false;
    if (removed) *removed = info;
    if (sink_) {
        sink_->on_free(
            DeallocationEvent{address, was.bytes, domain, capture_thread_locked(), deallocator, info, was.count});
    }
    return true;
}

bool Engine::record_munmap_slow(uintptr_t address, uint64_t length) {
    SpinGuard guard(lock_);
    if (!tracing_.load(std::memory_order_relaxed)) return false;
    return unmap_locked(address, length, sink_ ? capture_thread_locked() : 0) != 0;
}

uint64_t Engine::unmap_locked(uintptr_t address, uint64_t length, uint32_t thread) {
    if (mappings_.empty()) return 0;
    const uint64_t released = mappings_.unmap(
        address, length, [this, thread](uint64_t start, uint64_t bytes, Unmapped how, const BlockInfo& piece) {
            current_bytes_ -= bytes < current_bytes_ ? bytes : current_bytes_;
            if (sink_) {
                sink_->on_free(DeallocationEvent{start, bytes, kDefaultDomain, thread, Allocator::kMunmap, piece,
                                                 how == Unmapped::kWhole ? 1u : 0u, how});
            }
        });
    has_mappings_.store(!mappings_.empty(), std::memory_order_relaxed);
    return released;
}

void Engine::restore(uint32_t domain, uintptr_t address, const BlockInfo& info, bool pooled) {
    SpinGuard guard(lock_);
    if (!tracing_.load(std::memory_order_relaxed) || sink_ || detached_) return;
    insert_locked(domain, address, info, estimate(address, info), pooled);
}

void Engine::traced_memory(uint64_t* current, uint64_t* peak) {
    SpinGuard guard(lock_);
    *current = current_bytes_;
    *peak = peak_bytes_;
}

void Engine::reset_peak() {
    SpinGuard guard(lock_);
    peak_bytes_ = current_bytes_;
}

size_t Engine::own_memory() {
    SpinGuard guard(lock_);
    size_t total = sizeof(Engine) + trie_.memory_bytes() + pinned_codes_.memory_bytes() + python_table_.memory_bytes() +
                   mappings_.memory_bytes();
    total += other_tables_.capacity() * sizeof(other_tables_[0]);
    for (auto& entry : other_tables_) total += entry.second.memory_bytes();
    return total + cache_bytes_.load(std::memory_order_relaxed);
}

bool Engine::find(uint32_t domain, uintptr_t address, BlockInfo* out) {
    SpinGuard guard(lock_);
    BlockTable* table = table_for(domain, false);
    if (table && table->find(address, out)) return true;
    const auto* piece = domain == kDefaultDomain ? mappings_.find(address) : nullptr;
    if (!piece) return false;
    *out = piece->payload;
    out->size = piece->length;
    return true;
}

void Engine::collect(std::vector<TraceRecord>* out) {
    // Reserve outside the lock: the vector's malloc must not run while other
    // threads spin, and the count only needs to be close.
    size_t expected = trace_count();
    out->reserve(out->size() + expected + expected / 8 + 16);
    SpinGuard guard(lock_);
    auto append = [out](uint32_t domain) {
        return [out, domain](uintptr_t address, const BlockInfo& info) {
            out->push_back(TraceRecord{domain, address, info});
        };
    };
    python_table_.for_each(append(kDefaultDomain));
    for (auto& [domain, table] : other_tables_) table.for_each(append(domain));
    mappings_.for_each([out](uint64_t start, uint64_t length, const BlockInfo& mapping) {
        BlockInfo piece = mapping;
        piece.size = length;
        out->push_back(TraceRecord{kDefaultDomain, start, piece});
    });
}

size_t Engine::trace_count() {
    SpinGuard guard(lock_);
    size_t n = python_table_.size() + mappings_.size();
    for (auto& entry : other_tables_) n += entry.second.size();
    return n;
}

size_t Engine::stack_node_count() {
    SpinGuard guard(lock_);
    return trie_.node_count();
}

void Engine::frames_of_many(const std::vector<uint32_t>& nodes, std::vector<std::vector<FrameKey>>* out) {
    out->assign(nodes.size(), {});
    SpinGuard guard(lock_);
    for (size_t i = 0; i < nodes.size(); ++i) {
        if (nodes[i] >= trie_.node_count()) continue;
        auto& frames = (*out)[i];
        frames.reserve(trie_.node(nodes[i]).depth);
        for (uint32_t id = nodes[i]; id != StackTrie::kRoot; id = trie_.node(id).parent) {
            frames.push_back(trie_.node(id).frame);
        }
    }
}

void Engine::frames_of(uint32_t node, std::vector<FrameKey>* out) {
    std::vector<std::vector<FrameKey>> one;
    frames_of_many({node}, &one);
    *out = std::move(one[0]);
}

}  // namespace heapscope
