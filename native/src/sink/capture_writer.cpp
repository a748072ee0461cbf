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
#include "sink/capture_writer.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
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
        const auto deadline = std::chrono::steady_clock::now() + kForkWaitMs;
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

struct CaptureWriter::Impl {
    CaptureOptions options;
    bool aggregated = false;
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
    // Once set, nothing more is encoded or written. Read by the hooks without a lock.
    std::atomic<bool> failed{false};
    std::atomic<uint64_t> bytes_written{0};

    // The state lock: options.hook_lock, or own_lock (see the top).
    SpinLock own_lock;
    SpinLock* state_lock = &own_lock;

    // --- guarded by *state_lock ---
    std::unique_ptr<format::RecordEncoder> current;
    bool stopping = false;  // finish() began: the hooks record nothing more

    // Accounting (writer's own: what it was told)
    uint64_t allocations = 0, deallocations = 0, heap = 0, peak_heap = 0;

    // Definitions, kept so that a forked child's capture can repeat them.
    std::vector<format::ThreadRecord> threads;
    std::unordered_map<uintptr_t, uint32_t> code_ids;
    std::vector<format::CodeRecord> codes;  // codes[i].code == i + 1
    std::vector<format::PythonNodeRecord> python_nodes;
    std::vector<format::NativeNodeRecord> native_nodes;
    // Each generation of loaded objects, with the count of native nodes
    // written before it (they resolve against the earlier generations).
    std::vector<std::pair<format::LoadedObjectsRecord, size_t>> generations;
    // Metadata added during the capture (add_metadata), repeated for a forked child.
    std::vector<std::pair<std::string, std::string>> late_metadata;

    // Aggregated format
    LocationIndex locations;
    HighWaterMark high_water;
    std::vector<uint32_t> dirty;    // locations changed since the last checkpoint
    std::vector<uint8_t> is_dirty;  // by location id

    // --- guarded by queue_lock (taken after the state lock, never before it) ---
    SpinLock queue_lock;
    std::vector<std::unique_ptr<format::RecordEncoder>> ready;  // oldest first
    std::vector<std::unique_ptr<format::RecordEncoder>> spare;
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

    // Moves `current` to `ready` and takes a spare in its place; false if no
    // spare is free. State lock held.
    bool swap_current_locked() {
        SpinGuard guard(queue_lock);
        if (spare.empty()) return false;
        ready.push_back(std::move(current));
        ready_count.store(ready.size(), std::memory_order_release);
        current = std::move(spare.back());
        spare.pop_back();
        return true;
    }

    // A hook's record went into `current`: hand it off if it is full.
    void after_record_locked() {
        if (current->size() >= options.chunk_bytes) hand_off_full_locked();
    }

    // Hands the full `current` to the background thread. May wait, holding
    // the state lock (the engine's), for the background thread to return a
    // buffer: see the top.
    __attribute__((noinline)) void hand_off_full_locked() {
        for (;;) {
            const uint32_t seen = buffers_returned.load(std::memory_order_acquire);
            if (swap_current_locked()) break;
            if (failed.load(std::memory_order_acquire)) {
                current->reset();
                return;
            }
            wake_background();
            // A buffer returned (or a failure) after `seen` was read changes the
            // counter, so this cannot miss it.
            buffers_returned.wait(seen, std::memory_order_acquire);
        }
        wake_background();
    }

    void mark_dirty(uint32_t location) {
        if (location >= is_dirty.size()) is_dirty.resize(std::max<size_t>(location + 1, is_dirty.size() * 2), 0);
        if (!is_dirty[location]) {
            is_dirty[location] = 1;
            dirty.push_back(location);
        }
    }

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
    // to be written (false). A hook that holds the state lock may be waiting
    // for exactly that write, so waiting for the lock then could deadlock;
    // the caller writes first and tries again.
    bool lock_state() {
        for (int spins = 0;; ++spins) {
            if (state_lock->try_lock()) return true;
            if (ready_count.load(std::memory_order_acquire) != 0) return false;
            if (spins < 64) {
                cpu_relax();
            } else {
                sched_yield();  // the holder may be descheduled: give it the core
            }
        }
    }

    void write_buffer(const format::RecordEncoder& buffer) {
        // Called without a lock: only this thread writes `chunks` meanwhile.
        const bool ok = chunks->write_chunk(format::ChunkType::kRecords, buffer.view());
        bytes_written.store(chunks->bytes_written(), std::memory_order_relaxed);
        if (!ok) fail(chunks->error());
    }

    // Background thread: writes every ready buffer, oldest first, and
    // returns each to the spares.
    void drain() {
        for (;;) {
            std::unique_ptr<format::RecordEncoder> buffer;
            {
                SpinGuard guard(queue_lock);
                if (ready.empty()) return;
                buffer = std::move(ready.front());
                ready.erase(ready.begin());
                ready_count.store(ready.size(), std::memory_order_release);
            }
            if (!failed.load(std::memory_order_acquire)) write_buffer(*buffer);
            buffer->reset();
            {
                SpinGuard guard(queue_lock);
                spare.push_back(std::move(buffer));
            }
            release_waiters();
        }
    }

    void background_main();
    bool begin(std::string* error_out);
    void write_definitions(format::RecordEncoder* out) const;
};

// The background thread: writes handed-off buffers, adds memory records and
// checkpoints, and flushes a partial buffer every kFlushIntervalMs. Its
// HookGuard stays set for its whole life, so nothing it allocates (zstd's
// buffers included) is traced or takes the engine lock.
void CaptureWriter::Impl::background_main() {
    HookGuard guard;
    std::unique_lock<std::timed_mutex> working(busy);
    holding_busy.store(true, std::memory_order_release);

    const uint64_t memory_every = options.memory_interval_ms;
    const uint64_t checkpoint_every = aggregated ? options.checkpoint_interval_ms : 0;
    uint64_t next_memory = memory_every;
    uint64_t next_checkpoint = checkpoint_every;
    uint64_t next_flush = kFlushIntervalMs;

    for (;;) {
        drain();
        // finish() set stopping under the state lock before this flag, so no
        // hook hands off anything more; finish() writes what is left.
        if (stop_requested.load(std::memory_order_acquire)) break;

        uint64_t now = now_ms();
        const bool memory_due = memory_every && now >= next_memory;
        const bool checkpoint_due = checkpoint_every && now >= next_checkpoint;
        const bool flush_due = now >= next_flush;
        if ((memory_due || checkpoint_due || flush_due) && !failed.load(std::memory_order_acquire)) {
            const uint64_t rss = memory_due ? read_rss_bytes() : 0;  // a system call or three: outside the lock
            if (!lock_state()) continue;  // write the waiting buffer first
            now = now_ms();
            if (memory_due) {
                current->memory(format::MemoryRecord{now, rss, heap});
                next_memory = now + memory_every - (now - next_memory) % memory_every;
            }
            bool flush = flush_due;
            if (checkpoint_due) {
                // A checkpoint is written out at once, whole in one chunk, so
                // a killed process leaves it readable.
                encode_checkpoint_locked(false, current.get());
                next_checkpoint = now + checkpoint_every;
                flush = true;
            }
            bool moved = false;
            if (flush && current->size() != 0) {
                moved = swap_current_locked();  // no spare: retried after the next write
            } else if (flush) {
                next_flush = now + kFlushIntervalMs;
            }
            state_lock->unlock();
            if (moved) next_flush = now + kFlushIntervalMs;
            if (flush && (moved || ready_count.load(std::memory_order_acquire) != 0)) continue;  // write it now
        }
        std::unique_lock<std::mutex> wait_lock(wake_mutex);
        working.unlock();  // asleep: a fork may go ahead
        if (failed.load(std::memory_order_acquire)) {
            // Nothing is due any more: sleep until finish() (or a hook) wakes us.
            wake_cv.wait(wait_lock, [this] { return wake_pending; });
        } else {
            uint64_t next = next_flush;
            if (memory_every) next = std::min(next, next_memory);
            if (checkpoint_every) next = std::min(next, next_checkpoint);
            wake_cv.wait_until(wait_lock, start_time + std::chrono::milliseconds(next),
                               [this] { return wake_pending; });
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

// Writes the header and the opening chunk (metadata, then `definitions`),
// then starts the background thread. On failure closes the descriptor.
bool CaptureWriter::Impl::begin(std::string* error_out) {
    aggregated = options.format == format::FileFormat::kAggregatedAllocations;
    state_lock = options.hook_lock ? options.hook_lock : &own_lock;
    if (options.chunk_bytes == 0) options.chunk_bytes = 1;
    start_time = Clock::now();
    start_unix_ms = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count());
    chunks = std::make_unique<format::ChunkWriter>(options.fd, options.compression_level);
    for (size_t i = 0; i < kBuffers; ++i) {
        auto buffer = std::make_unique<format::RecordEncoder>();
        buffer->reset();
        spare.push_back(std::move(buffer));
    }
    current = std::move(spare.back());
    spare.pop_back();
    ready.reserve(kBuffers);  // moving buffers never allocates (spare has room for all)

    format::FileHeader header;
    header.version = options.sampling != "exact" ? format::kFormatVersion : 1;
    header.format = options.format;
    header.native_traces = options.native_traces;
    header.trace_python_allocators = options.trace_python_allocators;

    format::MetadataRecord metadata;
    metadata.entries = options.metadata;
    metadata.entries.emplace_back("format_version", std::to_string(header.version));
    metadata.entries.emplace_back("file_format", aggregated ? "aggregated_allocations" : "all_allocations");
    metadata.entries.emplace_back("native_traces", options.native_traces ? "1" : "0");
    metadata.entries.emplace_back("trace_python_allocators", options.trace_python_allocators ? "1" : "0");
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
    for (auto& buffer : spare) buffer->reserve_bytes(options.chunk_bytes + kBufferSlack);
    current->reserve_bytes(options.chunk_bytes + kBufferSlack);
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

std::unique_ptr<CaptureWriter> CaptureWriter::open(CaptureOptions options, std::string* error) {
    HookGuard guard;  // the writer's own memory is not traced
    std::unique_ptr<CaptureWriter> writer(new CaptureWriter());
    writer->impl_ = std::make_unique<Impl>();
    Impl& s = *writer->impl_;
    s.options = std::move(options);
    if (s.options.native_traces) {
        s.generations.emplace_back(format::LoadedObjectsRecord{1, current_loaded_objects()}, 0);
    }
    if (!s.begin(error)) return nullptr;
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
        s.current->thread(record);
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
        if (frame != kUnknownFrame) {
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
                s.current->code(code);
                s.codes.push_back(std::move(code));
            }
            record.code = it->second;
            record.lineno = s.options.describer.lineno ? s.options.describer.lineno(frame) : 0;
            record.is_entry = s.options.describer.is_entry ? s.options.describer.is_entry(frame) : false;
        }
        s.current->python_node(record);
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
        s.current->native_node(record);
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
            s.current->allocation(format::AllocationRecord{e.thread, e.address, e.size, e.allocator, e.domain,
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
            s.current->deallocation(format::DeallocationRecord{e.thread, e.address, size, e.allocator, e.domain});
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
        s.current->loaded_objects(s.generations.back().first);
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
        s.current->metadata(record);
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
        format::RecordEncoder& out = *s.current;
        const uint64_t now = s.now_ms();
        if (s.options.memory_interval_ms) out.memory(format::MemoryRecord{now, read_rss_bytes(), s.heap});
        format::MetadataRecord metadata;
        metadata.entries = end_metadata;
        metadata.entries.emplace_back("total_allocations", std::to_string(s.allocations));
        metadata.entries.emplace_back("total_deallocations", std::to_string(s.deallocations));
        metadata.entries.emplace_back("peak_memory", std::to_string(s.peak_heap));
        metadata.entries.emplace_back("end_heap", std::to_string(s.heap));
        metadata.entries.emplace_back("duration_ms", std::to_string(now));
        out.metadata(metadata);
        if (s.aggregated) s.encode_checkpoint_locked(true, &out);
        if (!s.chunks->write_chunk(format::ChunkType::kRecords, out.view()) ||
            !s.chunks->write_chunk(format::ChunkType::kEnd, {})) {
            s.fail(s.chunks->error());
        }
        s.bytes_written.store(s.chunks->bytes_written(), std::memory_order_relaxed);
        out.reset();
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
    s.options.metadata = std::move(metadata);
    s.threads = parent.threads;
    s.code_ids = parent.code_ids;
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

}  // namespace heapscope
