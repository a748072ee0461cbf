// Threads at scale: 8 threads, each making a million allocations and frees
// of known sizes through every allocator the hooks record (malloc ... mmap,
// and the three PEP 445 domains), into the engine as the hooks feed it: a
// block is recorded after its allocator made it and forgotten before it is
// freed, so the allocator hands addresses from thread to thread all the
// time. The totals must come out exact per thread and per line in the
// engine's live table (what the tracemalloc door reports) and in both
// capture formats read back. Run plain, under ASan+UBSan and under TSan
// (scripts/test.sh; the sanitizers make a tenth, see kAllocationsPerThread):
// TSan sees every engine and writer access the threads make.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "analysis/capture_file.h"
#include "engine/engine.h"
#include "engine/thread_state.h"
#include "sink/capture_writer.h"

using namespace heapscope;

namespace {

constexpr uint32_t kThreads = 8;
// At least: whole iterations of every line. Under the sanitizers a tenth,
// to keep the test command within its time: a million took 121 s of CPU for
// the three tests under ASan and 50 s for one under TSan (both passed), and
// what they check is each interleaving and access of the same paths, which
// the volume does not add to. The plain build makes the million.
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
constexpr uint64_t kAllocationsPerThread = 100'000;
#else
constexpr uint64_t kAllocationsPerThread = 1'000'000;
#endif
constexpr uint64_t kKeptPerLine = 4;                   // the first blocks of each line stay live to the end

// How a line allocates: the C allocators, and Python's three domains (raw,
// mem, object) through their malloc, calloc and realloc. The Python domains
// are backed by malloc here; what matters to the engine is how they are
// recorded: the allocator, and whether the block is pooled (pymalloc's
// mem and object domains) and recorded by a thread holding the GIL.
enum class Call { kMalloc, kCalloc, kRealloc, kPosixMemalign, kAlignedAlloc, kMemalign, kValloc, kPvalloc, kMmap };

struct Line {
    const char* name;
    Call call;
    Allocator allocator;
    bool python;  // one of Python's domains: freed as kPymallocFree
    bool pooled;  // the mem or object domain: pymalloc's blocks, recorded with the GIL held
};

const Line kLines[] = {
    {"malloc", Call::kMalloc, Allocator::kMalloc, false, false},
    {"calloc", Call::kCalloc, Allocator::kCalloc, false, false},
    {"realloc", Call::kRealloc, Allocator::kRealloc, false, false},
    {"posix_memalign", Call::kPosixMemalign, Allocator::kPosixMemalign, false, false},
    {"aligned_alloc", Call::kAlignedAlloc, Allocator::kAlignedAlloc, false, false},
    {"memalign", Call::kMemalign, Allocator::kMemalign, false, false},
    {"valloc", Call::kValloc, Allocator::kValloc, false, false},
    {"pvalloc", Call::kPvalloc, Allocator::kPvalloc, false, false},
    {"mmap", Call::kMmap, Allocator::kMmap, false, false},
    {"PyMem_RawMalloc", Call::kMalloc, Allocator::kPymallocMalloc, true, false},
    {"PyMem_RawCalloc", Call::kCalloc, Allocator::kPymallocCalloc, true, false},
    {"PyMem_RawRealloc", Call::kRealloc, Allocator::kPymallocRealloc, true, false},
    {"PyMem_Malloc", Call::kMalloc, Allocator::kPymallocMalloc, true, true},
    {"PyMem_Calloc", Call::kCalloc, Allocator::kPymallocCalloc, true, true},
    {"PyMem_Realloc", Call::kRealloc, Allocator::kPymallocRealloc, true, true},
    {"PyObject_Malloc", Call::kMalloc, Allocator::kPymallocMalloc, true, true},
    {"PyObject_Calloc", Call::kCalloc, Allocator::kPymallocCalloc, true, true},
    {"PyObject_Realloc", Call::kRealloc, Allocator::kPymallocRealloc, true, true},
};
constexpr uint32_t kLineCount = sizeof(kLines) / sizeof(kLines[0]);

// A realloc line makes two blocks an iteration: realloc(NULL, first) and
// realloc(p, second), which frees the first.
uint64_t allocations_per_iteration(const Line& line) { return line.call == Call::kRealloc ? 2 : 1; }

uint64_t iterations_per_line() {
    uint64_t per_round = 0;
    for (const Line& line : kLines) per_round += allocations_per_iteration(line);
    return (kAllocationsPerThread + per_round - 1) / per_round;
}

// Sizes are distinct per thread and line, and small enough for pymalloc's
// pooled blocks (at most 512 bytes) on its lines; a mapping is whole pages.
uint64_t first_size(uint32_t worker, uint32_t line) {
    if (kLines[line].call == Call::kMmap) return 4096 * (1 + worker % 3);
    if (kLines[line].call == Call::kAlignedAlloc) return 64 * (2 + worker);  // C11: a multiple of the alignment
    return 8 + 16 * uint64_t{line} + worker;
}
uint64_t second_size(uint32_t worker, uint32_t line) { return first_size(worker, line) + 128; }  // realloc's
uint64_t kept_size(uint32_t worker, uint32_t line) {
    return kLines[line].call == Call::kRealloc ? second_size(worker, line) : first_size(worker, line);
}

// Allocated by the main thread once the workers are done: larger than all
// the blocks the workers can have in flight at once (one each, at most 12
// KiB), so that the high-water mark is the moment after it, whatever the
// interleaving: every kept block and this one.
constexpr uint64_t kFinalBlock = 1 << 20;

// Stacks: the innermost frame is the line (code kLineCode, line number =
// index + 1), the outer one the worker's function (code kWorkerCode + worker).
constexpr uintptr_t kLineCode = 0x100;
constexpr uintptr_t kWorkerCode = 0x1000;
constexpr uintptr_t kMainCode = 0x2000;
constexpr uintptr_t kNativeLine = 0x7000;    // native frames: one per line ...
constexpr uintptr_t kNativeWorker = 0x8000;  // ... called from one per worker

bool describe_code(uintptr_t code, std::string* function, std::string* filename, int* first_lineno) {
    *function = code == kLineCode   ? "churn"
                : code == kMainCode ? "main"
                                    : "worker_" + std::to_string(code - kWorkerCode);
    *filename = "threads.py";
    *first_lineno = 1;
    return true;
}
int lineno(FrameKey frame) { return static_cast<int>(frame.instr); }
bool is_entry(FrameKey) { return false; }

using Place = std::pair<uint32_t, uint32_t>;  // (worker, line); the main thread's block is (kThreads, 0)
constexpr Place kMainPlace{kThreads, 0};

struct Totals {
    uint64_t count = 0;
    uint64_t bytes = 0;
    bool operator==(const Totals& other) const { return count == other.count && bytes == other.bytes; }
};
using ByPlace = std::map<Place, Totals>;

std::ostream& operator<<(std::ostream& out, const Totals& t) { return out << t.count << " blocks, " << t.bytes << " bytes"; }

// What the workload must leave, worked out from the sizes alone.
struct Expected {
    ByPlace allocated;  // every block made
    ByPlace live;       // outstanding at the end, and at the high-water mark
    uint64_t allocations = 0, deallocations = 0, allocated_bytes = 0, live_bytes = 0;
};

Expected expected_totals() {
    Expected e;
    const uint64_t n = iterations_per_line();
    for (uint32_t w = 0; w < kThreads; ++w) {
        for (uint32_t l = 0; l < kLineCount; ++l) {
            const uint64_t per = allocations_per_iteration(kLines[l]);
            Totals made{n * per, n * first_size(w, l) + (per == 2 ? n * second_size(w, l) : 0)};
            Totals kept{kKeptPerLine, kKeptPerLine * kept_size(w, l)};
            e.allocated[{w, l}] = made;
            e.live[{w, l}] = kept;
            e.allocations += made.count;
            e.allocated_bytes += made.bytes;
            e.deallocations += made.count - kept.count;
            e.live_bytes += kept.bytes;
        }
    }
    e.allocated[kMainPlace] = e.live[kMainPlace] = Totals{1, kFinalBlock};
    e.allocations += 1;
    e.allocated_bytes += kFinalBlock;
    e.live_bytes += kFinalBlock;
    return e;
}

struct Block {
    void* address;
    uint64_t size;
    bool mapped;
};

// One worker thread, feeding the engine the way the hooks do.
class Worker {
  public:
    Worker(uint32_t index, bool native_traces, bool pin_always)
        : index_(index), native_traces_(native_traces), pin_always_(pin_always) {}

    void run() {
        const std::string name = "hs-worker-" + std::to_string(index_);
        pthread_setname_np(pthread_self(), name.c_str());
        cache_ = thread_stack_cache(64);
        ASSERT_NE(cache_, nullptr);
        const uint64_t n = iterations_per_line();
        // Line by line in rounds, so that every line runs in every thread at once.
        constexpr uint64_t kRound = 512;
        for (uint64_t start = 0; start < n; start += kRound) {
            for (uint32_t l = 0; l < kLineCount; ++l) {
                for (uint64_t i = start; i < start + kRound && i < n; ++i) churn(l, i < kKeptPerLine);
            }
        }
        thread_id_ = t_hook_state.thread_id;  // the id the capture gave this thread (0 without one)
    }

    // Releases the kept blocks, untraced (the engine has stopped).
    void release() {
        for (const Block& block : kept_) {
            if (block.mapped) {
                ::munmap(block.address, block.size);
            } else {
                std::free(block.address);
            }
        }
        kept_.clear();
    }

    uint32_t thread_id() const { return thread_id_; }

  private:
    void churn(uint32_t l, bool keep) {
        const Line& line = kLines[l];
        const uint64_t size = first_size(index_, l);
        void* p = nullptr;
        switch (line.call) {
            case Call::kMalloc: p = std::malloc(size); break;
            case Call::kCalloc: p = std::calloc(1, size); break;
            case Call::kRealloc: p = std::realloc(nullptr, size); break;
            case Call::kPosixMemalign:
                if (posix_memalign(&p, 64, size) != 0) p = nullptr;
                break;
            case Call::kAlignedAlloc: p = aligned_alloc(64, size); break;
            case Call::kMemalign: p = memalign(128, size); break;
            case Call::kValloc: p = valloc(size); break;
            case Call::kPvalloc: p = pvalloc(size); break;
            case Call::kMmap:
                p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                if (p == MAP_FAILED) p = nullptr;
                break;
        }
        ASSERT_NE(p, nullptr) << line.name;
        record(p, size, l);
        uint64_t final_size = size;
        if (line.call == Call::kRealloc) {
            // As the realloc hooks do: forget the old block before realloc may
            // hand its address to another thread, then record the new one.
            final_size = second_size(index_, l);
            forget(p, line);
            void* q = std::realloc(p, final_size);
            ASSERT_NE(q, nullptr);
            p = q;
            record(p, final_size, l);
        }
        if (keep) {
            kept_.push_back(Block{p, final_size, line.call == Call::kMmap});
            return;
        }
        forget(p, line);
        if (line.call == Call::kMmap) {
            ::munmap(p, final_size);
        } else {
            std::free(p);
        }
    }

    void record(void* p, uint64_t size, uint32_t l) {
        const Line& line = kLines[l];
        cache_->fresh[0] = FrameKey{kLineCode, l + 1};
        cache_->fresh[1] = FrameKey{kWorkerCode + index_, 1};
        const uintptr_t ips[2] = {kNativeLine + l, kNativeWorker + index_};
        // Native and raw-domain allocations come from threads that may not
        // hold the GIL: they may not pin code objects.
        engine().record_alloc({.domain = Engine::kDefaultDomain,
                               .address = reinterpret_cast<uintptr_t>(p),
                               .size = size,
                               .allocator = line.allocator,
                               .pooled = line.pooled,
                               .stacks = {cache_, 2, 2, pin_always_ || line.pooled, native_traces_ ? ips : nullptr,
                                          native_traces_ ? 2u : 0u}});
    }

    void forget(void* p, const Line& line) {
        const auto address = reinterpret_cast<uintptr_t>(p);
        if (line.call == Call::kMmap) {
            ASSERT_TRUE(engine().record_munmap(address, first_size(index_, static_cast<uint32_t>(&line - kLines))));
        } else {
            ASSERT_TRUE(engine().record_free(Engine::kDefaultDomain, address, nullptr,
                                             line.python ? Allocator::kPymallocFree : Allocator::kFree));
        }
    }

    uint32_t index_;
    bool native_traces_;
    bool pin_always_;
    ThreadStackCache* cache_ = nullptr;
    std::vector<Block> kept_;
    uint32_t thread_id_ = 0;
};

// Runs the workload on kThreads threads at once, then makes the main
// thread's final block. Returns the workers (their kept blocks still live)
// and that block.
struct Workload {
    std::vector<std::unique_ptr<Worker>> workers;
    void* final_block = nullptr;
    uint32_t main_thread_id = 0;

    void release() {
        for (auto& worker : workers) worker->release();
        std::free(final_block);
    }
};

Workload run_workload(bool native_traces, bool pin_always) {
    Workload run;
    for (uint32_t w = 0; w < kThreads; ++w) run.workers.push_back(std::make_unique<Worker>(w, native_traces, pin_always));
    std::vector<std::thread> threads;
    for (auto& worker : run.workers) threads.emplace_back([&worker] { worker->run(); });
    for (std::thread& thread : threads) thread.join();
    run.final_block = std::malloc(kFinalBlock);
    ThreadStackCache* cache = thread_stack_cache(64);
    cache->fresh[0] = FrameKey{kMainCode, 1};
    engine().record_alloc({.domain = Engine::kDefaultDomain,
                           .address = reinterpret_cast<uintptr_t>(run.final_block),
                           .size = kFinalBlock,
                           .stacks = {cache, 1, 1, true}});
    run.main_thread_id = t_hook_state.thread_id;
    return run;
}

// The (worker, line) of a stack, from its frames (innermost first).
Place place_of_frames(const std::vector<FrameKey>& frames) {
    if (frames.size() == 1 && frames[0].code == kMainCode) return kMainPlace;
    if (frames.size() != 2 || frames[0].code != kLineCode) return {UINT32_MAX, UINT32_MAX};
    return {static_cast<uint32_t>(frames[1].code - kWorkerCode), static_cast<uint32_t>(frames[0].instr - 1)};
}

void expect_engine_counters(const Expected& expected) {
    uint64_t current = 0, peak = 0;
    engine().traced_memory(&current, &peak);
    EXPECT_EQ(current, expected.live_bytes);
    EXPECT_EQ(peak, expected.live_bytes);  // see kFinalBlock
}

std::string temp_path(const std::string& name) {
    return (std::filesystem::temp_directory_path() /
            ("heapscope_test_" + std::to_string(::getpid()) + "_" + name))
        .string();
}

// A capture's rows by (worker, line), checked against the line's allocator
// and the thread's name; rows of any other stack are kept apart as invalid.
ByPlace by_place(const std::vector<LocationTotal>& rows, const read::Definitions& definitions,
                 const std::map<uint32_t, uint32_t>& worker_of_thread, uint32_t main_thread) {
    ByPlace out;
    for (const LocationTotal& row : rows) {
        std::vector<read::PythonFrame> frames;
        Place place{UINT32_MAX, UINT32_MAX};
        if (definitions.python_stack(row.key.python_node, 8, &frames)) {
            if (frames.size() == 1 && frames[0].function == "main") {
                place = kMainPlace;
            } else if (frames.size() == 2 && frames[0].function == "churn" && frames[0].line >= 1 &&
                       frames[0].line <= static_cast<int>(kLineCount)) {
                place = {static_cast<uint32_t>(std::stoul(frames[1].function.substr(7))),
                         static_cast<uint32_t>(frames[0].line - 1)};
            }
        }
        const auto worker = worker_of_thread.find(row.key.thread);
        const bool main = row.key.thread == main_thread && place == kMainPlace;
        const bool right_thread = main || (worker != worker_of_thread.end() && worker->second == place.first);
        const bool right_allocator = place == kMainPlace ? row.key.allocator == Allocator::kMalloc
                                     : place.second < kLineCount && row.key.allocator == kLines[place.second].allocator;
        if (!right_thread || !right_allocator) place = {UINT32_MAX, row.key.thread};
        Totals& totals = out[place];
        totals.count += row.count;
        totals.bytes += row.bytes;
    }
    return out;
}

class ThreadsAtScale : public ::testing::Test {
  protected:
    void TearDown() override {
        std::vector<FrameKey> unpin;
        engine().stop(&unpin);
    }
};

}  // namespace

// The tracemalloc door's view: the engine's live tables, no capture.
TEST_F(ThreadsAtScale, LiveTableIsExactPerThreadAndLine) {
    const Expected expected = expected_totals();
    ASSERT_TRUE(engine().start(64));
    Workload run = run_workload(false, true);
    expect_engine_counters(expected);
    std::vector<TraceRecord> traces;
    engine().collect(&traces);
    ByPlace live;
    for (const TraceRecord& trace : traces) {
        std::vector<FrameKey> frames;
        engine().frames_of(trace.info.stack, &frames);
        Totals& totals = live[place_of_frames(frames)];
        totals.count += 1;
        totals.bytes += trace.info.size;
    }
    EXPECT_EQ(live, expected.live);
    std::vector<FrameKey> unpin;
    engine().stop(&unpin);
    run.release();
}

namespace {

// A capture of the workload in `file_format`, read back: every total
// exact per thread and line, at the high-water mark, at the end, and over
// the whole run.
void expect_capture_exact(format::FileFormat file_format, const std::string& name) {
    const Expected expected = expected_totals();
    const std::string path = temp_path(name);
    CaptureOptions options;
    options.fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ASSERT_GE(options.fd, 0);
    options.format = file_format;
    options.native_traces = true;
    options.trace_python_allocators = true;
    options.compression_level = 1;
    options.memory_interval_ms = 5;       // the writer's thread works while the hooks do
    options.checkpoint_interval_ms = 20;  // aggregated: many checkpoints taken mid-run
    options.metadata = {{"command_line", "threads at scale"}, {"pid", std::to_string(::getpid())}};
    options.describer = FrameDescriber{lineno, describe_code, is_entry};
    options.hook_lock = engine().sink_lock();  // as the bindings do
    std::string error;
    std::unique_ptr<CaptureWriter> writer = CaptureWriter::open(options, &error);
    ASSERT_TRUE(writer) << error;
    ASSERT_TRUE(engine().start(64, writer.get(), true));
    Workload run = run_workload(true, false);
    expect_engine_counters(expected);
    std::vector<FrameKey> unpin;
    engine().stop(&unpin);
    ASSERT_TRUE(writer->finish({{"exit_code", "0"}}, &error)) << error;
    const CaptureTotals written = writer->totals();
    EXPECT_EQ(written.allocations, expected.allocations);
    EXPECT_EQ(written.deallocations, expected.deallocations);
    EXPECT_EQ(written.peak_heap, expected.live_bytes);
    EXPECT_EQ(written.heap, expected.live_bytes);
    writer.reset();

    std::map<uint32_t, uint32_t> worker_of_thread;
    for (uint32_t w = 0; w < kThreads; ++w) {
        ASSERT_NE(run.workers[w]->thread_id(), 0u);
        worker_of_thread[run.workers[w]->thread_id()] = w;
    }
    EXPECT_EQ(worker_of_thread.size(), kThreads);
    run.release();

    read::CaptureReader::OpenFailure failure;
    std::unique_ptr<analysis::CaptureFile> file = analysis::CaptureFile::open(path, &failure);
    ASSERT_TRUE(file) << failure.message;
    analysis::PassEnd end;
    const analysis::CaptureSummary* summary = file->summary(nullptr, &end);
    ASSERT_NE(summary, nullptr) << end.error;
    EXPECT_TRUE(summary->end.complete);
    EXPECT_EQ(summary->end.damage, "");
    EXPECT_EQ(summary->total_allocations, expected.allocations);
    EXPECT_EQ(summary->total_bytes, expected.allocated_bytes);
    EXPECT_EQ(summary->peak_heap, expected.live_bytes);
    EXPECT_EQ(summary->end_heap, expected.live_bytes);
    if (file_format == format::FileFormat::kAllAllocations) {
        EXPECT_EQ(summary->deallocations, expected.deallocations);
    } else {
        EXPECT_TRUE(summary->final_checkpoint);
        EXPECT_GT(summary->checkpoint_times.size(), 1u);
    }
    // Each worker's thread is known by the name it gave itself.
    for (const auto& [thread, info] : file->definitions().threads()) {
        const auto worker = worker_of_thread.find(thread);
        if (worker != worker_of_thread.end()) {
            EXPECT_EQ(info.name, "hs-worker-" + std::to_string(worker->second));
        }
    }
    const read::Definitions& definitions = file->definitions();
    EXPECT_EQ(by_place(summary->totals, definitions, worker_of_thread, run.main_thread_id), expected.allocated);
    EXPECT_EQ(by_place(summary->leaks, definitions, worker_of_thread, run.main_thread_id), expected.live);
    EXPECT_EQ(by_place(summary->peak, definitions, worker_of_thread, run.main_thread_id), expected.live);
    file.reset();
    std::remove(path.c_str());
}

}  // namespace

TEST_F(ThreadsAtScale, AllAllocationsCaptureIsExactPerThreadAndLine) {
    expect_capture_exact(format::FileFormat::kAllAllocations, "threads_all.hscap");
}

TEST_F(ThreadsAtScale, AggregatedCaptureIsExactPerThreadAndLine) {
    expect_capture_exact(format::FileFormat::kAggregatedAllocations, "threads_aggregated.hscap");
}
