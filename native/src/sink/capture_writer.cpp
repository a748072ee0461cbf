// CaptureWriter: engine events -> records -> chunks, off the hooks' path.
//
// Locks. The writer's state (the current buffer, counters, definitions,
// aggregated locations) is guarded by the *state lock*: the caller's
// CaptureOptions::hook_lock when given (the engine's lock, which every on_*
// call already holds, so an event costs one lock, not two), otherwise the
// writer's own `own_lock`, which each on_* call then takes. The queues of
// full (`ready`) and `spare` buffers and the error text have their own small
// `queue_lock`, always taken last. The background thread takes the state lock
// only to add its records (memory, checkpoint) and to hand off a partial
// buffer, with try_lock, giving up while a full buffer waits to be written
// (see lock_state): a hook that waits for a spare buffer holds the state lock,
// so returning buffers needs only queue_lock, and the background thread never
// waits for anything while it holds the state lock. Compression and writes
// happen outside every lock. Why spin locks: they are taken once per event,
// nearly always uncontended; a pthread mutex's lock and unlock were 58% of
// the writer's cost per event (perf, 21 ns/event), and with hook_lock the
// writer adds no atomic read-modify-write per event at all.
//
// Buffers: `current` receives records; once it passes chunk_bytes it joins
// `ready`, and a spare takes its place. There are kBuffers in all, so memory
// stays bounded: when the disk (or a live reader) falls behind and no spare
// is left, the hook waits for the background thread to finish a write. That
// wait holds the state lock (the engine's), so every allocating thread waits
// with it: a slow destination slows the traced program instead of growing
// the heap. After a failed write nothing waits any more and nothing is encoded.
//
// The journal (a regular file opened read-write; docs/capture-format.md,
// "Journal"): a buffer is a *slot*, a window of the file past the chunks,
// mapped shared, and the encoder writes straight into it. After each record
// (after_record_locked) the slot's committed length is stored, so a process
// killed at any instant leaves every record it finished in the page cache,
// hence in the file. Slots get their chunk sequence number when they become
// current. The background thread makes slots (placed past every live slot,
// and far enough past the last chunk that the chunks of every slot before
// them fit below: make_slot), writes a slot's chunk below it, and then
// reuses the slot as the next spare (recycle_slot) or drops its pages. A
// record larger than a slot's room moves the hooks to a fresh slot, a larger
// one made for it if need be (ensure_room_locked); the background thread
// makes room the same way for a checkpoint, outside the lock. finish()
// writes the last slots as chunks and truncates the journal away.
#include "sink/capture_writer.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <atomic>
#include <chrono>
#include <cstring>
#include <unordered_map>

#include "model/high_water_mark.h"
#include "model/location.h"
#include "common/hook_guard.h"
#include "common/loaded_object.h"
#include "common/spin_lock.h"

namespace heapscope {

namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kBuffers = 3;              // current + two in flight
constexpr uint32_t kFlushIntervalMs = 250;  // longest a record waits in memory
// A slot's pages faulted in when it is made: all of them, except in the
// first slot (the rest: by the background thread) and in sampled captures,
// whose few records may never reach the rest (the hooks fault what they use).
constexpr size_t kSlotFaultedAtFirst = 64 << 10;
// Room past chunk_bytes for the record that crosses it, so that a buffer
// rarely grows inside a hook.
constexpr size_t kBufferSlack = 64 * 1024;

// Resident set size from /proc/self/statm (second field, in pages), read with
// plain system calls: no stdio, no allocation. 0 if unreadable.
uint64_t read_rss_bytes() {
    const int fd = ::open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char buf[128];
    const ssize_t n = ::read(fd, buf, sizeof buf - 1);
    ::close(fd);
    if (n <= 0) return 0;
    buf[n] = '\0';
    const char* p = buf;
    while (*p && *p != ' ') ++p;  // skip the total program size
    uint64_t pages = 0;
    for (++p; *p >= '0' && *p <= '9'; ++p) pages = pages * 10 + static_cast<uint64_t>(*p - '0');
    static const uint64_t page_size = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    return pages * page_size;
}

// Holds `lock` if there is one: the hooks' guard, which locks only when the
// caller does not already hold the writer's state lock for it.
class MaybeSpinGuard {
  public:
    explicit MaybeSpinGuard(SpinLock* lock) noexcept : lock_(lock) {
        if (lock_) lock_->lock();
    }
    ~MaybeSpinGuard() {
        if (lock_) lock_->unlock();
    }
    MaybeSpinGuard(const MaybeSpinGuard&) = delete;
    MaybeSpinGuard& operator=(const MaybeSpinGuard&) = delete;

  private:
    SpinLock* lock_;
};

std::string thread_name_of_caller() {
    char name[64] = {};
    // For the calling thread glibc asks prctl(PR_GET_NAME): no file, no allocation.
    if (pthread_getname_np(pthread_self(), name, sizeof name) != 0) return {};
    return name;
}

// The most bytes a variable-size record takes (a journal slot must have room for it).
constexpr size_t kVarint = format::detail::kMaxVarintBytes;
size_t bound_of(const format::ThreadRecord& r) { return 1 + 3 * kVarint + r.name.size(); }
size_t bound_of(const format::CodeRecord& r) { return 1 + 4 * kVarint + r.function.size() + r.filename.size(); }
size_t bound_of(const format::LoadedObjectsRecord& r) {
    size_t n = 1 + 2 * kVarint;
    for (const LoadedObject& o : r.objects) n += 3 * kVarint + o.path.size() + o.segments.size() * 2 * kVarint;
    return n;
}
constexpr size_t kMemoryRecordBound = 1 + 3 * kVarint;
constexpr size_t kObjectRecordBound = 1 + 5 * kVarint;
size_t bound_of(const format::MetadataRecord& r) {
    size_t n = 1 + kVarint;
    for (const auto& [key, value] : r.entries) n += 2 * kVarint + key.size() + value.size();
    return n;
}

}  // namespace

// ForkGate: fork() waits, briefly, until no writer's background thread is
// working. That thread allocates (zstd, checkpoints); had it been inside the
// allocator when another thread forked, the child would inherit the
// allocator's lock held, and the child's first thread set-up would wait on
// it forever (seen under ASan: 31 hangs in 200 forks). The wait is bounded:
// a hook that waits for a spare buffer holds the engine's lock, which the
// background thread needs, so past kForkWaitMs fork() goes ahead as before.
// Handlers are registered once, after the engine's, so they run before the
// engine takes its lock (prepare handlers run in reverse order).
class ForkGate {
  public:
    static ForkGate& instance() {
        static ForkGate* gate = new ForkGate();  // never destroyed: handlers may run at exit
        return *gate;
    }
    // Starts a writer's thread, which must lock `*busy` first and then set
    // `*holding`. The thread's set-up allocates before it holds `busy`, so
    // no fork may happen until it does.
    template <typename Start>
    void start(std::timed_mutex* busy, const std::atomic<bool>* holding, Start&& start_thread) {
        std::lock_guard<std::mutex> guard(mutex_);
        if (!start_thread()) return;
        while (!holding->load(std::memory_order_acquire)) sched_yield();
        gates_.push_back(busy);
        held_.reserve(gates_.size());
    }
    // Joins a writer's thread, whose exit frees memory: no fork meanwhile.
    void join(std::timed_mutex* busy, std::thread* thread) {
        std::lock_guard<std::mutex> guard(mutex_);
        if (thread->joinable()) thread->join();
        std::erase(gates_, busy);
    }

  private:
    static constexpr auto kForkWaitMs = std::chrono::milliseconds(500);
    ForkGate() { pthread_atfork(&ForkGate::prepare, &ForkGate::release, &ForkGate::release); }
    static void prepare() {
        ForkGate& gate = instance();
        gate.mutex_.lock();
        gate.held_.clear();
        // On the system clock: libstdc++ waits for a steady-clock deadline
        // with pthread_mutex_clocklock, which GCC 12's ThreadSanitizer does
        // not intercept, so the TSan build would not see these locks taken
        // and would report their release as the unlock of an unlocked mutex.
        // A wall-clock step during the wait only moves this safety bound.
        const auto deadline = std::chrono::system_clock::now() + kForkWaitMs;
        for (std::timed_mutex* busy : gate.gates_) {
            if (busy->try_lock_until(deadline)) gate.held_.push_back(busy);
        }
    }
    // In the parent and in the child (where the forking thread is the one
    // that locked them all).
    static void release() {
        ForkGate& gate = instance();
        for (std::timed_mutex* busy : gate.held_) busy->unlock();
        gate.held_.clear();
        gate.mutex_.unlock();
    }

    std::mutex mutex_;
    std::vector<std::timed_mutex*> gates_;  // every running writer's
    std::vector<std::timed_mutex*> held_;   // locked by prepare(); reserved by add(), so fork allocates nothing
};

// A chunk-to-be: the encoder, and in journal mode the slot of the file it
// writes into (docs/capture-format.md, "Journal"). The slot's fields are set
// when it is made and never change; `sequence` when it becomes current.
struct Buffer {
    format::RecordEncoder encoder;
    char* map = nullptr;   // the slot: its header, then `capacity` payload bytes
    size_t map_bytes = 0;
    uint64_t offset = 0;   // of the slot in the file
    size_t capacity = 0;
    size_t populated = 0;  // bytes of the mapping faulted in when it was made
    uint32_t sequence = 0;
    // Journal: the records still in the slot (not spilled), with `bound` bytes to spare.
    bool has_room(size_t bound) const { return !encoder.spilled() && encoder.capacity() - encoder.size() >= bound; }
    uint64_t* committed_word() const { return reinterpret_cast<uint64_t*>(map + format::kJournalCommittedOffset); }
};

struct CaptureWriter::Impl {
    CaptureOptions options;
    bool aggregated = false;
    // Records go into journal slots of the file (a regular file opened for
    // reading and writing) instead of memory: a killed process leaves them.
    bool journal = false;
    size_t page_size = 4096;
    Clock::time_point start_time;
    uint64_t start_unix_ms = 0;
    // Written by open() and finish() on the caller's thread, by the
    // background thread in between: never by two at once.
    std::unique_ptr<format::ChunkWriter> chunks;
    std::thread background;
    // Held by the background thread while it works, released while it
    // sleeps: fork() waits for it (see ForkGate), so a child never inherits
    // an allocator lock this thread held.
    std::timed_mutex busy;
    std::atomic<bool> holding_busy{false};  // the background thread has taken `busy` once
    bool finished = false;
    bool abandoned = false;  // a forked child took over: nothing here may be used

    // Wakes the background thread (a buffer is ready, or stop).
    std::mutex wake_mutex;
    std::condition_variable wake_cv;
    bool wake_pending = false;  // guarded by wake_mutex
    // Set by finish() once the hooks are done: the background thread drains and exits.
    std::atomic<bool> stop_requested{false};
    // Bumped when a spare buffer comes back, and on failure: a hook waiting
    // for a spare waits for it to change.
    std::atomic<uint32_t> buffers_returned{0};
    // Journal: the capacity a hook waits for (a record larger than a slot), 0 if none.
    std::atomic<size_t> wanted_capacity{0};
    // Once set, nothing more is encoded or written. Read by the hooks without a lock.
    std::atomic<bool> failed{false};
    std::atomic<int> failed_errno{0};
    std::atomic<uint64_t> bytes_written{0};

    // The state lock: options.hook_lock, or own_lock (see the top).
    SpinLock own_lock;
    SpinLock* state_lock = &own_lock;

    // --- guarded by *state_lock ---
    std::unique_ptr<Buffer> current;
    // Where each record's end is published: the current slot's committed
    // length (journal), or `unpublished` (no journal, or a spilled slot).
    uint64_t* committed = &unpublished;
    uint64_t unpublished = 0;
    uint32_t next_slot_sequence = 0;  // journal: the chunk number the next current slot becomes
    char* unpopulated = nullptr;      // journal: the first slot's pages the background thread faults in
    size_t unpopulated_bytes = 0;
    bool stopping = false;  // finish() began: the hooks record nothing more

    // Accounting (writer's own: what it was told)
    uint64_t allocations = 0, deallocations = 0, heap = 0, peak_heap = 0;

    // Definitions, kept so that a forked child's capture can repeat them.
    std::vector<format::ThreadRecord> threads;
    std::unordered_map<uintptr_t, uint32_t> code_ids;
    std::unordered_map<uint32_t, uint32_t> label_code_ids;  // label id -> code id: "[label] <name>" in "<label>"
    std::vector<format::CodeRecord> codes;  // codes[i].code == i + 1
    std::vector<format::PythonNodeRecord> python_nodes;
    std::vector<format::NativeNodeRecord> native_nodes;
    // Each generation of loaded objects, with the count of native nodes
    // written before it (they resolve against the earlier generations).
    std::vector<std::pair<format::LoadedObjectsRecord, size_t>> generations;
    // Metadata added during the capture (add_metadata), repeated for a forked child.
    std::vector<std::pair<std::string, std::string>> late_metadata;

    // Aggregated format with track_object_lifetimes: the objects made and
    // not yet destroyed, by address; written after the final checkpoint.
    struct LiveObject {
        uint32_t thread, python_node, native_node;
    };
    std::unordered_map<uint64_t, LiveObject> live_objects;

    // Aggregated format
    LocationIndex locations;
    HighWaterMark high_water;
    std::vector<uint32_t> dirty;    // locations changed since the last checkpoint
    std::vector<uint8_t> is_dirty;  // by location id

    // --- guarded by queue_lock (taken after the state lock, never before it) ---
    SpinLock queue_lock;
    // Oldest first. The background thread leaves a buffer here while it
    // writes it: in journal mode its slot stays live until its chunk is whole.
    std::vector<std::unique_ptr<Buffer>> ready;
    std::vector<std::unique_ptr<Buffer>> spare;
    std::string error;                  // why the capture failed
    std::atomic<size_t> ready_count{0};  // ready.size(), for lock_state()

    // The lock a hook takes for itself: none when the caller holds hook_lock.
    SpinLock* hooks_own_lock() { return options.hook_lock ? nullptr : &own_lock; }
    // A hook may record: no failure, no finish() under way. State lock held.
    bool accepting() const { return !stopping && !failed.load(std::memory_order_relaxed); }

    uint64_t now_ms() const {
        return static_cast<uint64_t>(
            std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start_time).count());
    }

    void wake_background() {
        {
            std::lock_guard<std::mutex> guard(wake_mutex);
            wake_pending = true;
        }
        wake_cv.notify_one();
    }

    void release_waiters() {
        buffers_returned.fetch_add(1, std::memory_order_release);
        buffers_returned.notify_all();
    }

    // Any thread, any locks held but queue_lock.
    void fail(const std::string& why) {
        {
            SpinGuard guard(queue_lock);
            if (failed.load(std::memory_order_relaxed)) return;
            error = why;
            failed.store(true, std::memory_order_release);
        }
        release_waiters();  // nobody waits for a buffer any more
    }

    std::string error_text() {
        SpinGuard guard(queue_lock);
        return error;
    }

    // Makes `buffer` the one records go to. State lock and queue_lock held.
    void make_current_locked(std::unique_ptr<Buffer> buffer) {
        current = std::move(buffer);
        if (!journal) {
            committed = &unpublished;
            return;
        }
        current->sequence = next_slot_sequence++;
        format::init_journal_slot(current->map, current->sequence, static_cast<uint32_t>(current->capacity));
        current->encoder.attach(current->map + format::kJournalHeaderBytes, current->capacity);
        committed = current->committed_word();
    }

    // Moves `current` to `ready` and takes a spare (with room for `need`
    // bytes) in its place; false if there is none. State lock held.
    bool swap_current_locked(size_t need = 0) {
        SpinGuard guard(queue_lock);
        if (spare.empty() || spare.back()->capacity < need) return false;
        ready.push_back(std::move(current));
        ready_count.store(ready.size(), std::memory_order_release);
        std::unique_ptr<Buffer> next = std::move(spare.back());
        spare.pop_back();
        make_current_locked(std::move(next));
        return true;
    }

    // A record went into `current`: publish it (journal) and hand the
    // buffer off if it is full. Hooks only: it may wait.
    void after_record_locked() {
        format::RecordEncoder& out = current->encoder;
        if (__builtin_expect(out.spilled(), 0)) committed = &unpublished;  // the slot no longer holds them
        format::publish_journal(committed, out.size());
        if (out.size() >= options.chunk_bytes || __builtin_expect(out.spilled(), 0)) hand_off_full_locked();
    }

    // Journal: before a record of up to `bound` bytes, makes sure it fits the
    // current slot, moving to another (a larger one if need be) if not.
    void ensure_room_locked(size_t bound) {
        if (!journal) return;
        if (current->encoder.spilled() || current->has_room(bound)) return;
        hand_off_full_locked(bound);
    }

    // Hands the full `current` to the background thread. May wait, holding
    // the state lock (the engine's), for the background thread to return a
    // buffer (or, in journal mode, to make a slot of `need` bytes): see the top.
    __attribute__((noinline)) void hand_off_full_locked(size_t need = 0) {
        for (;;) {
            const uint32_t seen = buffers_returned.load(std::memory_order_acquire);
            if (swap_current_locked(need)) break;
            if (failed.load(std::memory_order_acquire)) {
                current->encoder.reset();
                committed = &unpublished;
                return;
            }
            if (need > options.chunk_bytes) wanted_capacity.store(need, std::memory_order_release);
            wake_background();
            // A buffer returned (or a failure) after `seen` was read changes the
            // counter, so this cannot miss it.
            buffers_returned.wait(seen, std::memory_order_acquire);
        }
        wanted_capacity.store(0, std::memory_order_release);
        wake_background();
    }

    void mark_dirty(uint32_t location) {
        if (location >= is_dirty.size()) is_dirty.resize(std::max<size_t>(location + 1, is_dirty.size() * 2), 0);
        if (!is_dirty[location]) {
            is_dirty[location] = 1;
            dirty.push_back(location);
        }
    }

    // The most a checkpoint and its Location records take.
    size_t checkpoint_bound_locked() const { return 64 + dirty.size() * (2 + 12 * format::detail::kMaxVarintBytes); }

    // Appends to `out` a checkpoint and the locations changed since the last one.
    void encode_checkpoint_locked(bool final, format::RecordEncoder* out) {
        std::sort(dirty.begin(), dirty.end());  // ascending ids: small deltas
        format::CheckpointRecord checkpoint{now_ms(), high_water.peak_epoch(), high_water.heap(),
                                            high_water.peak_heap(), static_cast<uint32_t>(dirty.size()), final};
        out->checkpoint(checkpoint);
        for (uint32_t id : dirty) {
            const LocationKey& key = locations.key(id);
            const LocationCounters& c = high_water.at(id);
            out->location(format::LocationRecord{id, key.thread, key.allocator, key.domain, key.python_node,
                                                     key.native_node, c.current_count, c.current_bytes,
                                                     c.at_peak_count, c.at_peak_bytes, c.epoch, c.total_count,
                                                     c.total_bytes});
            is_dirty[id] = 0;
        }
        dirty.clear();
    }

    // Background thread: takes the state lock, unless a full buffer waits
    // to be written, or a hook waits for a slot (false). A hook that holds
    // the state lock may be waiting for exactly that, so waiting for the
    // lock then could deadlock; the caller does its part first and tries again.
    bool lock_state() {
        for (int spins = 0;; ++spins) {
            if (state_lock->try_lock()) return true;
            if (ready_count.load(std::memory_order_acquire) != 0) return false;
            if (journal && spare_wanted()) return false;
            if (spins < 64) {
                cpu_relax();
            } else {
                sched_yield();  // the holder may be descheduled: give it the core
            }
        }
    }

    // --- journal slots (background thread, and begin()/finish()) ---

    size_t slot_capacity(size_t need) const {
        const size_t normal = options.chunk_bytes + kBufferSlack;
        return std::max(normal, need + kBufferSlack);
    }

    // A spare slot should be made: there is none (or none large enough for
    // a waiting hook) and fewer than kBuffers slots are mapped.
    bool spare_wanted() {
        SpinGuard guard(queue_lock);
        const size_t want = wanted_capacity.load(std::memory_order_acquire);
        if (!spare.empty() && spare.back()->capacity >= want) return false;
        return ready.size() + spare.size() + (current ? 1 : 0) < kBuffers || (!spare.empty() && want != 0);
    }

    // Maps a new slot for `capacity` payload bytes past every live slot and
    // far enough past the last chunk that the chunks of every slot before it
    // (and its own) fit below it: a chunk is never written over a slot
    // whose records it does not yet hold. Null on failure (the capture fails).
    // Where a new slot of `capacity` bytes may start at the earliest: past
    // the chunks of every live slot and its own (they are written first) and,
    // with `past_live`, past every live slot.
    uint64_t lowest_slot_offset(size_t capacity, bool past_live) {
        uint64_t reserve = format::kChunkHeaderBytes + capacity, live_end = 0;
        {
            SpinGuard guard(queue_lock);
            // Written buffers (ready) no longer change; the current one may
            // be written to meanwhile, up to its capacity.
            auto count = [&](const Buffer& b, size_t size) {
                reserve += format::kChunkHeaderBytes + std::max(b.capacity, size);
                live_end = std::max(live_end, b.offset + b.map_bytes);
            };
            for (const auto& b : ready) count(*b, b->encoder.size());
            for (const auto& b : spare) count(*b, 0);
            if (current) count(*current, 0);
        }
        return page_up(std::max(chunks->position() + reserve, past_live ? live_end : 0));
    }

    uint64_t page_up(uint64_t v) const { return (v + page_size - 1) / page_size * page_size; }

    // Maps a new slot; its first `populate_bytes` are faulted in at once.
    std::unique_ptr<Buffer> make_slot(size_t capacity, size_t populate_bytes) {
        auto slot = std::make_unique<Buffer>();
        slot->capacity = capacity;
        slot->map_bytes = page_up(format::kJournalHeaderBytes + capacity);
        slot->offset = lowest_slot_offset(capacity, true);
        const uint64_t end = slot->offset + slot->map_bytes;
        // Blocks now, so that a full disk fails the capture here instead of
        // raising SIGBUS in the program when a hook writes the page. Where
        // it works it also extends the file, which is then not truncated.
        const int allocated = ::posix_fallocate(options.fd, static_cast<off_t>(slot->offset),
                                                static_cast<off_t>(slot->map_bytes));
        if (allocated != 0 && allocated != EOPNOTSUPP && allocated != EINVAL) {
            return slot_failed("reserving disk space", allocated);
        }
        if (allocated != 0) {
            struct stat st {};
            if (::fstat(options.fd, &st) != 0) return slot_failed("fstat", errno);
            if (static_cast<uint64_t>(st.st_size) < end && ::ftruncate(options.fd, static_cast<off_t>(end)) != 0) {
                return slot_failed("extending the file", errno);
            }
        }
        void* map = ::mmap(nullptr, slot->map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, options.fd,
                           static_cast<off_t>(slot->offset));
        if (map == MAP_FAILED) return slot_failed("mapping the file", errno);
        slot->map = static_cast<char*>(map);
        // Its pages are written, never read: no read-around of the file
        // (page_cache_ra) when one is faulted in.
        (void)::madvise(map, slot->map_bytes, MADV_RANDOM);
        // Without reserved blocks a full disk shows only when a page is
        // faulted: all of them here then, so that it fails the capture, not
        // the program (SIGBUS in a hook).
        if (allocated != 0) populate_bytes = SIZE_MAX;
        slot->populated = populate_bytes >= slot->map_bytes ? slot->map_bytes : page_up(populate_bytes);
        if (!populate(slot->map, slot->populated)) {
            unmap_slot(*slot);
            return slot_failed("faulting the file's pages in", errno);
        }
        return slot;
    }

    size_t slot_populate_bytes() const { return options.sampling == "exact" ? SIZE_MAX : kSlotFaultedAtFirst; }

    // Faults `bytes` of a slot's mapping in, so that the hooks do not fault.
    // (MADV_POPULATE_WRITE is Linux 5.14; before it, a write per page does
    // the same.) False with errno on failure.
    bool populate(char* map, size_t bytes) const {
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
        if (bytes == 0 || ::madvise(map, bytes, MADV_POPULATE_WRITE) == 0) return true;
        if (errno != EINVAL) return false;
        for (size_t at = 0; at < bytes; at += page_size) reinterpret_cast<volatile char*>(map)[at] = 0;
        return true;
    }

    std::unique_ptr<Buffer> slot_failed(const char* what, int error_number) {
        fail(std::string("the capture's journal: ") + what + " failed: " + std::strerror(error_number));
        return nullptr;
    }

    void unmap_slot(Buffer& slot) {
        if (slot.map) ::munmap(slot.map, slot.map_bytes);
        slot.map = nullptr;
    }

    // A slot whose chunk is written: its pages are dropped (never written
    // back) unless chunks already cover them.
    void retire_slot(Buffer& slot) {
        unmap_slot(slot);
        const uint64_t from = std::max(slot.offset, chunks->position());
        const uint64_t to = slot.offset + slot.map_bytes;
        if (from < to) {
            (void)::fallocate(options.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(from),
                              static_cast<off_t>(to - from));
        }
    }

    // A slot whose chunk is written serves again as the spare while it is far
    // enough past the chunks (the usual case: chunks grow by the compressed
    // size of a slot, slots are reused in turn): no mapping to make, no
    // pages to fault in or drop. Its old header (an older sequence number)
    // and bytes stay until it becomes current: readers skip them.
    void recycle_slot(std::unique_ptr<Buffer> slot) {
        bool reuse = !failed.load(std::memory_order_acquire) && !stop_requested.load(std::memory_order_acquire) &&
                     slot->capacity == slot_capacity(0) && wanted_capacity.load(std::memory_order_acquire) == 0;
        if (reuse) {
            SpinGuard guard(queue_lock);
            reuse = spare.empty();
        }
        // Checked with the slot out of every list: as if it were being made.
        if (reuse && slot->offset >= lowest_slot_offset(slot->capacity, false)) {
            slot->encoder.reset();
            SpinGuard guard(queue_lock);
            spare.push_back(std::move(slot));
            return;
        }
        retire_slot(*slot);
    }

    // Background thread: makes a spare slot if one is wanted.
    void ensure_spare() {
        if (!journal || failed.load(std::memory_order_acquire) || stop_requested.load(std::memory_order_acquire) ||
            !spare_wanted()) {
            return;
        }
        const size_t want = wanted_capacity.load(std::memory_order_acquire);
        {
            // One too small for a waiting hook goes (it is not live: no hook used it).
            std::unique_ptr<Buffer> small;
            {
                SpinGuard guard(queue_lock);
                if (!spare.empty() && spare.back()->capacity < want) {
                    small = std::move(spare.back());
                    spare.pop_back();
                }
            }
            if (small) unmap_slot(*small);
        }
        std::unique_ptr<Buffer> slot = make_slot(slot_capacity(want), slot_populate_bytes());
        if (!slot) return;
        {
            SpinGuard guard(queue_lock);
            spare.push_back(std::move(slot));
        }
        release_waiters();
    }

    // Writes one buffer's records as a chunk. In journal mode the chunk must
    // not reach a live slot but the buffer's own.
    void write_buffer(const Buffer& buffer) {
        // Called without a lock: only this thread writes `chunks` meanwhile.
        const std::string_view payload = buffer.encoder.view();
        if (journal && buffer.encoder.spilled()) {
            uint64_t lowest = UINT64_MAX;
            {
                SpinGuard guard(queue_lock);
                for (const auto& b : ready) {
                    if (b.get() != &buffer) lowest = std::min(lowest, b->offset);
                }
                for (const auto& b : spare) lowest = std::min(lowest, b->offset);
                if (current) lowest = std::min(lowest, current->offset);
            }
            if (chunks->position() + format::kChunkHeaderBytes + payload.size() > lowest) {
                fail("a record too large for the capture's journal (" + std::to_string(payload.size()) + " bytes)");
                return;
            }
        }
        const bool ok = chunks->write_chunk(format::ChunkType::kRecords, payload);
        bytes_written.store(chunks->bytes_written(), std::memory_order_relaxed);
        if (!ok) {
            failed_errno.store(chunks->error_number(), std::memory_order_relaxed);
            fail(chunks->error());
        }
    }

    // Background thread: writes every ready buffer, oldest first, and
    // returns each to the spares (or, in journal mode, retires its slot).
    void drain() {
        for (;;) {
            Buffer* buffer;
            {
                SpinGuard guard(queue_lock);
                if (ready.empty()) return;
                buffer = ready.front().get();
            }
            if (!failed.load(std::memory_order_acquire)) write_buffer(*buffer);
            std::unique_ptr<Buffer> done;
            {
                SpinGuard guard(queue_lock);
                done = std::move(ready.front());
                ready.erase(ready.begin());
                ready_count.store(ready.size(), std::memory_order_release);
            }
            if (journal) {
                recycle_slot(std::move(done));
            } else {
                done->encoder.reset();
                SpinGuard guard(queue_lock);
                spare.push_back(std::move(done));
            }
            release_waiters();
            ensure_spare();
        }
    }

    // Background thread: every viewer waiting on the listener (a second one)
    // is told the capture has one already, and let go.
    void turn_away_viewers() {
        if (options.listener_fd < 0) return;
        for (;;) {
            const int viewer = ::accept4(options.listener_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (viewer < 0) return;
            (void)::send(viewer, kLiveBusy, sizeof kLiveBusy - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
            ::close(viewer);
        }
    }

    void background_main();
    bool begin(std::string* error_out);
    bool begin_journal();
    void write_definitions(format::RecordEncoder* out) const;
};

// The background thread: writes handed-off buffers, makes journal slots,
// adds memory records and checkpoints, and (without a journal) flushes a
// partial buffer every kFlushIntervalMs. Its HookGuard stays set for its
// whole life, so nothing it allocates (zstd's buffers included) is traced or
// takes the engine lock.
void CaptureWriter::Impl::background_main() {
    HookGuard guard;
    std::unique_lock<std::timed_mutex> working(busy);
    holding_busy.store(true, std::memory_order_release);
    // The first slot's pages that begin_journal() left (its slot is live:
    // only this thread retires slots). Hooks write there already, so only the
    // kernel may fault them in, never a write of ours; where it cannot
    // (before Linux 5.14), the hooks fault them.
    if (unpopulated_bytes != 0) (void)::madvise(unpopulated, unpopulated_bytes, MADV_POPULATE_WRITE);

    const uint64_t memory_every = options.memory_interval_ms;
    const uint64_t checkpoint_every = aggregated ? options.checkpoint_interval_ms : 0;
    uint64_t next_memory = memory_every;
    uint64_t next_checkpoint = checkpoint_every;
    // With a journal every record is in the file as soon as it is encoded;
    // partial slots still become chunks every kFlushIntervalMs, as buffers
    // do without one: a file cut short (a full disk, a copy) loses little.
    const uint64_t flush_every = kFlushIntervalMs;
    uint64_t next_flush = flush_every;

    for (;;) {
        drain();
        ensure_spare();
        turn_away_viewers();
        // finish() set stopping under the state lock before this flag, so no
        // hook hands off anything more; finish() writes what is left.
        if (stop_requested.load(std::memory_order_acquire)) break;

        uint64_t now = now_ms();
        const bool memory_due = memory_every && now >= next_memory;
        const bool checkpoint_due = checkpoint_every && now >= next_checkpoint;
        const bool flush_due = flush_every && now >= next_flush;
        if ((memory_due || checkpoint_due || flush_due) && !failed.load(std::memory_order_acquire)) {
            const uint64_t rss = memory_due ? read_rss_bytes() : 0;  // a system call or three: outside the lock
            if (!lock_state()) continue;  // write the waiting buffer (or make the slot) first
            if (checkpoint_due && journal) {
                // The checkpoint and its locations go into one slot, published
                // together: make room first, outside the lock if a slot must be made.
                const size_t need = checkpoint_bound_locked() + 64;
                if (!current->encoder.spilled() && !current->has_room(need) && !swap_current_locked(need)) {
                    state_lock->unlock();
                    if (need > options.chunk_bytes) wanted_capacity.store(need, std::memory_order_release);
                    drain();
                    ensure_spare();
                    wanted_capacity.store(0, std::memory_order_release);
                    continue;
                }
            }
            now = now_ms();
            if (memory_due) {
                current->encoder.memory(format::MemoryRecord{now, rss, heap});
                next_memory = now + memory_every - (now - next_memory) % memory_every;
            }
            bool flush = flush_due;
            if (checkpoint_due) {
                // A checkpoint is in the file at once, whole: in the journal,
                // and in a chunk written now.
                encode_checkpoint_locked(false, &current->encoder);
                next_checkpoint = now + checkpoint_every;
                flush = true;
            }
            if (journal && !current->encoder.spilled()) format::publish_journal(committed, current->encoder.size());
            bool moved = false;
            if (flush && current->encoder.size() != 0) {
                moved = swap_current_locked();  // no spare: retried after the next write
            } else if (flush) {
                next_flush = now + flush_every;
            }
            state_lock->unlock();
            if (moved) next_flush = now + flush_every;
            if (flush && (moved || ready_count.load(std::memory_order_acquire) != 0)) continue;  // write it now
        }
        std::unique_lock<std::mutex> wait_lock(wake_mutex);
        working.unlock();  // asleep: a fork may go ahead
        if (failed.load(std::memory_order_acquire)) {
            // Nothing is due any more: sleep until finish() (or a hook) wakes us.
            wake_cv.wait(wait_lock, [this] { return wake_pending; });
        } else {
            uint64_t next = UINT64_MAX;
            if (flush_every) next = std::min(next, next_flush);
            if (memory_every) next = std::min(next, next_memory);
            if (checkpoint_every) next = std::min(next, next_checkpoint);
            if (options.listener_fd >= 0) next = std::min(next, now_ms() + 100);  // a second viewer waits little
            if (next == UINT64_MAX) {
                wake_cv.wait(wait_lock, [this] { return wake_pending; });
            } else {
                wake_cv.wait_until(wait_lock, start_time + std::chrono::milliseconds(next),
                                   [this] { return wake_pending; });
            }
        }
        wake_pending = false;
        wait_lock.unlock();
        working.lock();
    }
}

// Definitions in an order a reader can follow: threads and code first, then
// Python nodes (parents before children, as they were first written), then
// each generation of loaded objects followed by the native nodes written
// while it was the latest.
void CaptureWriter::Impl::write_definitions(format::RecordEncoder* out) const {
    for (const format::ThreadRecord& t : threads) out->thread(t);
    for (const format::CodeRecord& c : codes) out->code(c);
    for (const format::PythonNodeRecord& n : python_nodes) out->python_node(n);
    size_t written = 0;
    for (size_t g = 0; g < generations.size(); ++g) {
        const size_t end = g + 1 < generations.size() ? generations[g + 1].second : native_nodes.size();
        out->loaded_objects(generations[g].first);
        for (; written < end; ++written) out->native_node(native_nodes[written]);
    }
    for (; written < native_nodes.size(); ++written) out->native_node(native_nodes[written]);
    if (!late_metadata.empty()) {
        format::MetadataRecord metadata;
        metadata.entries = late_metadata;
        out->metadata(metadata);
    }
}

// Journal mode, after the opening chunk: the first slot becomes current.
// False (and no journal) if the file cannot have one.
bool CaptureWriter::Impl::begin_journal() {
    // The start of a capture waits for its first pages only: the background
    // thread faults in the rest as it starts (a fault in a hook meanwhile
    // costs what it saves here). Faulting the whole slot in was 42% of a
    // start's time.
    std::unique_ptr<Buffer> first = make_slot(slot_capacity(0), kSlotFaultedAtFirst);
    if (!first) {
        // Not worth failing the capture for: write it the way sockets are.
        SpinGuard guard(queue_lock);
        failed.store(false, std::memory_order_relaxed);
        error.clear();
        return false;
    }
    const size_t wanted = std::min(first->map_bytes, slot_populate_bytes());
    unpopulated = first->map + first->populated;
    unpopulated_bytes = wanted > first->populated ? wanted - first->populated : 0;
    SpinGuard guard(*state_lock);
    SpinGuard queue(queue_lock);
    next_slot_sequence = chunks->next_sequence();
    make_current_locked(std::move(first));
    return true;
}

// Writes the header and the opening chunk (metadata, then `definitions`),
// then starts the background thread. On failure closes the descriptor.
bool CaptureWriter::Impl::begin(std::string* error_out) {
    aggregated = options.format == format::FileFormat::kAggregatedAllocations;
    state_lock = options.hook_lock ? options.hook_lock : &own_lock;
    if (options.chunk_bytes == 0) options.chunk_bytes = 1;
    page_size = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
    if (page_size < format::kJournalAlign || page_size % format::kJournalAlign != 0) page_size = format::kJournalAlign;
    start_time = Clock::now();
    start_unix_ms = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count());
    chunks = std::make_unique<format::ChunkWriter>(options.fd, options.compression_level);
    // A journal needs a regular file that can be mapped shared for writing.
    struct stat st {};
    const int mode = ::fcntl(options.fd, F_GETFL);
    const off_t start = ::lseek(options.fd, 0, SEEK_CUR);
    journal = options.journal && ::fstat(options.fd, &st) == 0 && S_ISREG(st.st_mode) && mode >= 0 &&
              (mode & O_ACCMODE) == O_RDWR && !(mode & O_APPEND) && start >= 0;
    if (journal) chunks->set_positional(static_cast<uint64_t>(start));
    if (!journal) {
        for (size_t i = 0; i < kBuffers; ++i) spare.push_back(std::make_unique<Buffer>());
        current = std::move(spare.back());
        spare.pop_back();
    }
    ready.reserve(kBuffers + 1);  // moving buffers never allocates
    spare.reserve(kBuffers + 1);

    format::FileHeader header;
    // The lowest version whose records this capture may hold (older readers read it).
    header.version = options.track_object_lifetimes ? 3 : options.sampling != "exact" ? 2 : 1;
    header.format = options.format;
    header.native_traces = options.native_traces;
    header.trace_python_allocators = options.trace_python_allocators;

    format::MetadataRecord metadata;
    metadata.entries = options.metadata;
    metadata.entries.emplace_back("format_version", std::to_string(header.version));
    metadata.entries.emplace_back("file_format", aggregated ? "aggregated_allocations" : "all_allocations");
    metadata.entries.emplace_back("native_traces", options.native_traces ? "1" : "0");
    metadata.entries.emplace_back("trace_python_allocators", options.trace_python_allocators ? "1" : "0");
    metadata.entries.emplace_back("track_object_lifetimes", options.track_object_lifetimes ? "1" : "0");
    metadata.entries.emplace_back("memory_interval_ms", std::to_string(options.memory_interval_ms));
    if (aggregated) {
        metadata.entries.emplace_back("checkpoint_interval_ms", std::to_string(options.checkpoint_interval_ms));
    }
    metadata.entries.emplace_back("capture_start_unix_ms", std::to_string(start_unix_ms));
    metadata.entries.emplace_back("sampling", options.sampling);
    format::RecordEncoder opening;
    opening.metadata(metadata);
    write_definitions(&opening);
    // A forked child's aggregated capture starts from what it inherited:
    // usable at once, even if the child is killed before its first interval.
    if (aggregated && !dirty.empty()) encode_checkpoint_locked(false, &opening);

    if (!chunks->write_header(header) || !chunks->write_chunk(format::ChunkType::kRecords, opening.view())) {
        *error_out = chunks->error();
        ::close(options.fd);
        return false;
    }
    bytes_written.store(chunks->bytes_written(), std::memory_order_relaxed);
    if (journal && !begin_journal()) {
        journal = false;
        for (size_t i = 0; i < kBuffers; ++i) spare.push_back(std::make_unique<Buffer>());
        current = std::move(spare.back());
        spare.pop_back();
    }
    if (!journal) {
        for (auto& buffer : spare) buffer->encoder.reserve_bytes(options.chunk_bytes + kBufferSlack);
        current->encoder.reserve_bytes(options.chunk_bytes + kBufferSlack);
    }
    // The thread starts with every signal blocked: process signals (SIGINT,
    // a profiler's SIGPROF) go to the program's threads, and a write to a
    // socket or pipe whose reader left gets EPIPE instead of SIGPIPE.
    sigset_t all, previous;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    bool started = true;
    ForkGate::instance().start(&busy, &holding_busy, [&] {
        try {
            background = std::thread([this] { background_main(); });
        } catch (const std::exception& e) {
            *error_out = std::string("cannot start the capture's writer thread: ") + e.what();
            started = false;
        }
        return started;
    });
    pthread_sigmask(SIG_SETMASK, &previous, nullptr);
    if (!started) ::close(options.fd);
    return started;
}

std::unique_ptr<CaptureWriter> CaptureWriter::open(CaptureOptions options, std::string* error, int* error_number) {
    HookGuard guard;  // the writer's own memory is not traced
    std::unique_ptr<CaptureWriter> writer(new CaptureWriter());
    writer->impl_ = std::make_unique<Impl>();
    Impl& s = *writer->impl_;
    s.options = std::move(options);
    if (s.options.native_traces) {
        s.generations.emplace_back(format::LoadedObjectsRecord{1, current_loaded_objects()}, 0);
    }
    if (!s.begin(error)) {
        if (error_number) *error_number = s.chunks ? s.chunks->error_number() : 0;
        return nullptr;
    }
    return writer;
}

CaptureWriter::~CaptureWriter() {
    if (!impl_) return;
    if (impl_->abandoned) {
        // The parent's state in a forked child: its thread does not exist and
        // its locks may be held by that thread. Leak it rather than touch it.
        (void)impl_.release();
        return;
    }
    if (!impl_->finished) {
        std::string ignored;
        finish({}, &ignored);
    }
}

// ---------------------------------------------------------------------------
// Hook side. State lock held (the caller's hook_lock, or own_lock taken
// here); never calls Python. Exceptions (only std::bad_alloc is possible)
// must not escape into an allocator hook: they end the capture instead.

void CaptureWriter::on_thread(uint32_t thread, uint64_t os_tid, const std::string* name) {
    Impl& s = *impl_;
    try {
        MaybeSpinGuard guard(s.hooks_own_lock());
        if (!s.accepting()) return;
        auto known = std::find_if(s.threads.begin(), s.threads.end(),
                                  [thread](const format::ThreadRecord& t) { return t.thread == thread; });
        format::ThreadRecord record{thread, os_tid,
                                    name ? *name : known != s.threads.end() ? known->name : thread_name_of_caller()};
        s.ensure_room_locked(bound_of(record));
        s.current->encoder.thread(record);
        // A renamed thread's new record replaces its old one (a forked child repeats the latest).
        if (known != s.threads.end()) {
            *known = std::move(record);
        } else {
            s.threads.push_back(std::move(record));
        }
        s.after_record_locked();
    } catch (const std::exception&) {
        s.fail("out of memory while recording a thread");
    }
}

void CaptureWriter::on_python_node(uint32_t node, uint32_t parent, FrameKey frame) {
    Impl& s = *impl_;
    try {
        MaybeSpinGuard guard(s.hooks_own_lock());
        if (!s.accepting()) return;
        format::PythonNodeRecord record{node, parent, 0, 0, false};
        if (is_label_frame(frame)) {
            const auto id = static_cast<uint32_t>(frame.instr);
            auto [it, created] = s.label_code_ids.try_emplace(id, static_cast<uint32_t>(s.codes.size() + 1));
            if (created) {
                std::string name;
                if (!s.options.describer.label_name || !s.options.describer.label_name(id, &name)) name = "?";
                format::CodeRecord code{it->second, "[label] " + name, "<label>", 0};
                s.ensure_room_locked(bound_of(code));
                s.current->encoder.code(code);
                s.codes.push_back(std::move(code));
            }
            record.code = it->second;
        } else if (frame != kUnknownFrame) {
            // Code objects are pinned by the engine for the capture's life,
            // so an address names one code object throughout.
            auto [it, created] = s.code_ids.try_emplace(frame.code, static_cast<uint32_t>(s.codes.size() + 1));
            if (created) {
                format::CodeRecord code{it->second, {}, {}, 0};
                int first_lineno = 0;
                if (!s.options.describer.describe_code ||
                    !s.options.describer.describe_code(frame.code, &code.function, &code.filename, &first_lineno)) {
                    code.function = "<unknown>";
                    code.filename = "<unknown>";
                    first_lineno = 0;
                }
                code.first_lineno = first_lineno;
                s.ensure_room_locked(bound_of(code));
                s.current->encoder.code(code);
                s.codes.push_back(std::move(code));
            }
            record.code = it->second;
            record.lineno = s.options.describer.lineno ? s.options.describer.lineno(frame) : 0;
            record.is_entry = s.options.describer.is_entry ? s.options.describer.is_entry(frame) : false;
        }
        s.current->encoder.python_node(record);
        s.python_nodes.push_back(record);
        s.after_record_locked();
    } catch (const std::exception&) {
        s.fail("out of memory while recording a stack");
    }
}

void CaptureWriter::on_native_node(uint32_t node, uint32_t parent, uintptr_t ip) {
    Impl& s = *impl_;
    try {
        MaybeSpinGuard guard(s.hooks_own_lock());
        if (!s.accepting()) return;
        format::NativeNodeRecord record{node, parent, ip};
        s.current->encoder.native_node(record);
        s.native_nodes.push_back(record);
        s.after_record_locked();
    } catch (const std::exception&) {
        s.fail("out of memory while recording a native stack");
    }
}

// Aggregated: each block remembers its location id, for its free.
bool CaptureWriter::keeps_block_state() const { return impl_->aggregated; }

uint32_t CaptureWriter::on_alloc(const AllocationEvent& e) {
    Impl& s = *impl_;
    try {
        MaybeSpinGuard guard(s.hooks_own_lock());
        if (!s.accepting()) return kNoSinkState;
        s.allocations += e.count;  // blocks, estimated when sampled
        s.heap += e.size;
        if (s.heap > s.peak_heap) s.peak_heap = s.heap;
        if (!s.aggregated) {
            s.current->encoder.allocation(format::AllocationRecord{e.thread, e.address, e.size, e.allocator, e.domain,
                                                           e.python_node, e.native_node,
                                                           static_cast<uint32_t>(e.count)});
            s.after_record_locked();
            return kNoSinkState;
        }
        bool created;
        const uint32_t id =
            s.locations.intern(LocationKey{.thread = e.thread, .python_node = e.python_node, .native_node = e.native_node,
                                            .domain = e.domain, .allocator = e.allocator},
                                &created);
        s.high_water.add(id, e.size, e.count);
        s.mark_dirty(id);
        return id;
    } catch (const std::exception&) {
        s.fail("out of memory while recording an allocation");
        return 0;
    }
}

void CaptureWriter::on_free(const DeallocationEvent& e) {
    Impl& s = *impl_;
    try {
        MaybeSpinGuard guard(s.hooks_own_lock());
        if (!s.accepting()) return;
        ++s.deallocations;
        s.heap -= std::min(s.heap, e.size);
        if (!s.aggregated) {
            const uint64_t size = e.allocator == Allocator::kMunmap ? e.size : 0;
            s.current->encoder.deallocation(format::DeallocationRecord{e.thread, e.address, size, e.allocator, e.domain});
            s.after_record_locked();
            return;
        }
        const uint32_t id = e.block.sink_state;
        if (id == kNoSinkState || id >= s.locations.size()) return;  // not a location of this capture
        if (e.allocator == Allocator::kMunmap) {
            s.high_water.unmap(id, e.size, e.how);  // a piece of a mapping: gone, smaller, or cut in two
        } else {
            s.high_water.remove(id, e.size, e.count);
        }
        s.mark_dirty(id);
    } catch (const std::exception&) {
        s.fail("out of memory while recording a deallocation");
    }
}

void CaptureWriter::on_object(const ObjectEvent& e) {
    Impl& s = *impl_;
    try {
        MaybeSpinGuard guard(s.hooks_own_lock());
        if (!s.accepting() || !s.options.track_object_lifetimes) return;
        if (!s.aggregated) {
            s.current->encoder.object(format::ObjectRecord{e.thread, e.address, e.created, e.python_node, e.native_node});
            s.after_record_locked();
        } else if (e.created) {
            s.live_objects[e.address] = Impl::LiveObject{e.thread, e.python_node, e.native_node};
        } else {
            s.live_objects.erase(e.address);
        }
    } catch (const std::exception&) {
        s.fail("out of memory while recording an object");
    }
}

// dl_iterate_phdr is called here with the engine lock held. That is safe on
// glibc: it takes dl_load_write_lock, which dlopen and dlclose hold only
// while linking or unlinking an object in the list, never while running
// constructors or calling through a patched GOT (ld.so's own malloc calls do
// not go through any patched table), so no thread holding it waits for the
// engine lock. Taking it here keeps the record in order: every native node
// written after it may point into the objects just loaded.
void CaptureWriter::on_mappings_changed() {
    Impl& s = *impl_;
    if (!s.options.native_traces) return;
    try {
        std::vector<LoadedObject> objects = current_loaded_objects();
        MaybeSpinGuard guard(s.hooks_own_lock());
        if (!s.accepting()) return;
        const uint32_t generation = s.generations.empty() ? 1 : s.generations.back().first.generation + 1;
        s.generations.emplace_back(format::LoadedObjectsRecord{generation, std::move(objects)}, s.native_nodes.size());
        s.ensure_room_locked(bound_of(s.generations.back().first));
        s.current->encoder.loaded_objects(s.generations.back().first);
        s.after_record_locked();
    } catch (const std::exception&) {
        s.fail("out of memory while recording loaded objects");
    }
}

void CaptureWriter::add_metadata(std::vector<std::pair<std::string, std::string>> entries) {
    Impl& s = *impl_;
    if (s.abandoned || entries.empty()) return;
    HookGuard untraced;  // the caller holds no hook lock: encoding may allocate
    try {
        format::MetadataRecord record;
        record.entries = std::move(entries);
        SpinGuard guard(*s.state_lock);
        if (!s.accepting()) return;
        s.ensure_room_locked(bound_of(record));
        s.current->encoder.metadata(record);
        s.late_metadata.insert(s.late_metadata.end(), record.entries.begin(), record.entries.end());
        s.after_record_locked();
    } catch (const std::exception&) {
        s.fail("out of memory while recording metadata");
    }
}

// ---------------------------------------------------------------------------

bool CaptureWriter::finish(const std::vector<std::pair<std::string, std::string>>& end_metadata, std::string* error) {
    Impl& s = *impl_;
    if (s.abandoned) {
        *error = "this capture was abandoned in a forked child";
        return false;
    }
    if (s.finished) {
        *error = s.error_text();
        return !s.failed.load(std::memory_order_acquire);
    }
    HookGuard untraced;
    {
        // With hook_lock this is the engine's lock: the engine has stopped
        // sending events, so it is free.
        SpinGuard guard(*s.state_lock);
        s.stopping = true;
    }
    s.stop_requested.store(true, std::memory_order_release);
    s.wake_background();
    ForkGate::instance().join(&s.busy, &s.background);
    s.finished = true;

    // Single-threaded from here: the engine sends nothing more. The locks
    // are taken only to keep the rule that guarded fields are read under them.
    SpinGuard guard_state(*s.state_lock);
    s.drain();  // anything handed off after the background thread's last pass
    if (!s.failed.load(std::memory_order_acquire)) {
        const uint64_t now = s.now_ms();
        format::MetadataRecord metadata;
        metadata.entries = end_metadata;
        metadata.entries.emplace_back("total_allocations", std::to_string(s.allocations));
        metadata.entries.emplace_back("total_deallocations", std::to_string(s.deallocations));
        metadata.entries.emplace_back("peak_memory", std::to_string(s.peak_heap));
        metadata.entries.emplace_back("end_heap", std::to_string(s.heap));
        metadata.entries.emplace_back("duration_ms", std::to_string(now));
        // With a journal the end records go into the current slot when they
        // fit, so that a process killed while finishing (a Pool's terminate()
        // reaching a worker in its atexit) loses none of them: the slot holds
        // them until its chunk is whole. Else the slot becomes its chunk and
        // they follow in a chunk of their own.
        const size_t end_bound = bound_of(metadata) + kMemoryRecordBound +
                                 (s.aggregated ? s.checkpoint_bound_locked() + s.live_objects.size() * kObjectRecordBound
                                               : 0);
        format::RecordEncoder& slot_records = s.current->encoder;
        const bool in_slot = s.journal && s.current->has_room(end_bound);
        // Marked before any last chunk is written: a kill from here on is
        // one while finishing, not damage (ChunkReader::next).
        if (s.journal) format::mark_journal_finishing(s.current->map);
        format::RecordEncoder end_records;
        if (s.journal && !in_slot && slot_records.size() != 0) s.write_buffer(*s.current);
        format::RecordEncoder& out = s.journal && !in_slot ? end_records : slot_records;
        if (s.options.memory_interval_ms) out.memory(format::MemoryRecord{now, read_rss_bytes(), s.heap});
        out.metadata(metadata);
        if (s.aggregated) {
            s.encode_checkpoint_locked(true, &out);
            for (const auto& [address, object] : s.live_objects) {
                out.object(format::ObjectRecord{object.thread, address, true, object.python_node, object.native_node});
            }
        }
        if (in_slot) format::publish_journal(s.committed, out.size());
        auto step = [&](int number) {
            if (s.options.finishing_step) s.options.finishing_step(number);
            return true;
        };
        if (s.failed.load(std::memory_order_acquire) || !step(0) ||
            !s.chunks->write_chunk(format::ChunkType::kRecords, out.view()) || !step(1) ||
            !s.chunks->write_chunk(format::ChunkType::kEnd, {})) {
            if (!s.failed.load(std::memory_order_acquire)) s.fail(s.chunks->error());
        } else if (s.journal && ::ftruncate(s.options.fd, static_cast<off_t>(s.chunks->position())) != 0) {
            // Everything is in chunks now: the journal's slots go.
            s.fail(std::string("truncating the capture failed: ") + std::strerror(errno));
        }
        s.bytes_written.store(s.chunks->bytes_written(), std::memory_order_relaxed);
        out.reset();
    }
    if (s.journal) {
        // After a failure the slots stay in the file: a reader finds what they hold.
        SpinGuard queue(s.queue_lock);
        s.unmap_slot(*s.current);
        for (auto& buffer : s.spare) s.unmap_slot(*buffer);
        for (auto& buffer : s.ready) s.unmap_slot(*buffer);
        s.committed = &s.unpublished;
    }
    if (s.options.listener_fd >= 0) {
        ::close(s.options.listener_fd);
        s.options.listener_fd = -1;
    }
    if (::close(s.options.fd) != 0 && !s.failed.load(std::memory_order_acquire)) {
        s.fail(std::string("closing the capture failed: ") + std::strerror(errno));
    }
    *error = s.error_text();
    return !s.failed.load(std::memory_order_acquire);
}

std::unique_ptr<CaptureWriter> CaptureWriter::clone_in_child(
    int fd, std::vector<std::pair<std::string, std::string>> metadata, std::string* error) {
    HookGuard guard;
    // No lock: the parent's background thread is gone and may have died
    // holding own_lock or queue_lock. Nothing else runs: the engine sends
    // this writer nothing after the fork, and hooks were excluded during it
    // by the engine lock, so every field the hooks write is whole. Of the
    // fields the background thread writes, only the buffers and the dirty
    // list could be torn without hook_lock, and they are not read. The
    // child's writer keeps hook_lock: the engine's, reset in the child.
    Impl& parent = *impl_;
    parent.abandoned = true;

    std::unique_ptr<CaptureWriter> child(new CaptureWriter());
    child->impl_ = std::make_unique<Impl>();
    Impl& s = *child->impl_;
    s.options = parent.options;
    s.options.fd = fd;
    s.options.listener_fd = -1;  // the parent's viewers are the parent's
    s.options.metadata = std::move(metadata);
    s.threads = parent.threads;
    s.code_ids = parent.code_ids;
    s.label_code_ids = parent.label_code_ids;
    s.codes = parent.codes;
    s.python_nodes = parent.python_nodes;
    s.native_nodes = parent.native_nodes;
    s.generations = parent.generations;
    s.late_metadata = parent.late_metadata;
    // The engine's tables carry over into the child (docs/design.md, fork):
    // so does the heap they hold, and the child's peak starts from it. Event
    // counts restart: they count the child's events.
    s.heap = s.peak_heap = parent.heap;
    s.locations = parent.locations;
    s.live_objects = parent.live_objects;
    if (parent.options.format == format::FileFormat::kAggregatedAllocations) {
        // Each location keeps what is outstanding; the fork is the child's
        // first peak (epoch 0 < peak_epoch 1: "current" at that peak), and
        // totals restart like the event counts.
        for (uint32_t id = 0; id < parent.high_water.size(); ++id) {
            LocationCounters c = parent.high_water.at(id);
            LocationCounters& out = s.high_water.mutable_at(id);
            out.current_count = out.at_peak_count = c.current_count;
            out.current_bytes = out.at_peak_bytes = c.current_bytes;
            out.epoch = 0;
            if (c.current_count || c.current_bytes) s.mark_dirty(id);
        }
        s.high_water.restore(1, parent.high_water.heap(), parent.high_water.heap());
    }
    if (!s.begin(error)) return nullptr;
    return child;
}

CaptureTotals CaptureWriter::totals() {
    Impl& s = *impl_;
    CaptureTotals t;
    if (s.abandoned) return t;
    SpinGuard guard(*s.state_lock);  // the caller must not hold hook_lock
    t.allocations = s.allocations;
    t.deallocations = s.deallocations;
    t.peak_heap = s.peak_heap;
    t.heap = s.heap;
    t.bytes_written = s.bytes_written.load(std::memory_order_relaxed);
    t.python_nodes = s.python_nodes.size();
    t.native_nodes = s.native_nodes.size();
    return t;
}

bool CaptureWriter::failed() { return impl_->failed.load(std::memory_order_acquire); }

int CaptureWriter::error_number() { return impl_->failed_errno.load(std::memory_order_relaxed); }

}  // namespace heapscope
