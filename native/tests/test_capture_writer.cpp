// CaptureWriter end to end, without Python: a fake FrameDescriber, events fed
// from several threads (serialised by a lock standing in for the engine's:
// either a mutex the writer knows nothing of, or a SpinLock handed to it as
// CaptureOptions::hook_lock, as the engine does), then the file read back
// with ChunkReader and RecordDecoder.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "fork_child.h"
#include "model/high_water_mark.h"
#include "format/chunk_io.h"
#include "format/records.h"
#include "sink/capture_writer.h"

using namespace heapscope;
using namespace heapscope::format;

namespace {

// --- a describer with known answers ------------------------------------------

constexpr uintptr_t kUnreadableCode = 0xbad0;

bool fake_describe_code(uintptr_t code, std::string* function, std::string* filename, int* first_lineno) {
    if (code == kUnreadableCode) return false;
    *function = "func_" + std::to_string(code);
    *filename = "/src/file_" + std::to_string(code % 7) + ".py";
    *first_lineno = static_cast<int>(code % 100);
    return true;
}
int fake_lineno(FrameKey frame) { return static_cast<int>(frame.instr % 1000); }
bool fake_is_entry(FrameKey frame) { return frame.instr % 2 == 0; }
FrameDescriber fake_describer() { return FrameDescriber{fake_lineno, fake_describe_code, fake_is_entry}; }

// --- reading a capture back ----------------------------------------------------

struct Capture {
    bool header_ok = false;
    FileHeader header;
    std::vector<Record> records;
    bool end_chunk = false;  // stopped cleanly
    bool damaged = false;
    std::string error;
    size_t chunks = 0;

    std::vector<const Record*> of(RecordType type) const {
        std::vector<const Record*> out;
        for (const Record& r : records) {
            if (r.type == type) out.push_back(&r);
        }
        return out;
    }
    std::map<std::string, std::string> metadata() const {
        std::map<std::string, std::string> out;
        for (const Record* r : of(RecordType::kMetadata)) {
            for (const auto& [k, v] : r->metadata.entries) out[k] = v;
        }
        return out;
    }
};

std::string file_bytes(int fd) {
    std::string out;
    char buf[65536];
    for (off_t at = 0;;) {
        ssize_t n = ::pread(fd, buf, sizeof buf, at);
        if (n <= 0) break;
        out.append(buf, static_cast<size_t>(n));
        at += n;
    }
    return out;
}

Capture decode_bytes(const std::string& bytes) {
    const int fd = memfd_create("copy", 0);
    EXPECT_EQ(::write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
    ::lseek(fd, 0, SEEK_SET);
    Capture c;
    ChunkReader reader(fd);
    c.header_ok = reader.read_header(&c.header);
    if (!c.header_ok) {
        c.error = reader.error();
        ::close(fd);
        return c;
    }
    ChunkType type;
    std::string payload;
    for (;;) {
        ChunkReader::Status status = reader.next(&type, &payload);
        if (status != ChunkReader::Status::kChunk) {
            c.damaged = status == ChunkReader::Status::kDamaged;
            if (c.damaged) c.error = reader.error();
            break;
        }
        ++c.chunks;
        if (type == ChunkType::kEnd) c.end_chunk = true;
        RecordDecoder decoder(payload);
        Record r;
        while (decoder.next(&r)) c.records.push_back(r);
        if (!decoder.error().empty()) {
            c.damaged = true;
            c.error = decoder.error();
            break;
        }
    }
    ::close(fd);
    return c;
}

// A capture file: an anonymous file the writer owns a duplicate of.
struct CaptureFile {
    int fd = memfd_create("capture", 0);
    ~CaptureFile() { ::close(fd); }
    int writer_fd() const { return ::dup(fd); }
    Capture read() const { return decode_bytes(file_bytes(fd)); }
};

std::string text(const Record& r) {
    std::string s;
    auto add = [&](uint64_t v) { s += " " + std::to_string(v); };
    switch (r.type) {
        case RecordType::kThread:
            s = "thread", add(r.thread.thread), add(r.thread.os_tid), s += " " + r.thread.name;
            break;
        case RecordType::kCode:
            s = "code", add(r.code.code), s += " " + r.code.function + " " + r.code.filename + " ";
            s += std::to_string(r.code.first_lineno);
            break;
        case RecordType::kPythonNode:
            s = "py", add(r.python_node.node), add(r.python_node.parent), add(r.python_node.code);
            s += " " + std::to_string(r.python_node.lineno), add(r.python_node.is_entry);
            break;
        case RecordType::kNativeNode:
            s = "native", add(r.native_node.node), add(r.native_node.parent), add(r.native_node.ip);
            break;
        case RecordType::kLoadedObjects:
            s = "objects", add(r.loaded_objects.generation);
            break;
        case RecordType::kAllocation: {
            const AllocationRecord& a = r.allocation;
            s = "alloc", add(a.thread), add(a.address), add(a.size), add(static_cast<int>(a.allocator));
            add(a.domain), add(a.python_node), add(a.native_node);
            break;
        }
        case RecordType::kDeallocation: {
            const DeallocationRecord& d = r.deallocation;
            s = "free", add(d.thread), add(d.address), add(d.size), add(static_cast<int>(d.allocator)), add(d.domain);
            break;
        }
        default:
            s = "other " + std::to_string(static_cast<int>(r.type));
    }
    return s;
}

// The records of the kinds the events produce, as text, in file order.
std::vector<std::string> event_text(const Capture& c) {
    std::vector<std::string> out;
    for (const Record& r : c.records) {
        switch (r.type) {
            case RecordType::kMemory:
            case RecordType::kMetadata:
            case RecordType::kCheckpoint:
            case RecordType::kLocation:
                break;
            default:
                out.push_back(text(r));
        }
    }
    return out;
}

uint64_t gettid_now() { return static_cast<uint64_t>(syscall(SYS_gettid)); }

// Aborts the test binary (naming `what`) unless destroyed within `seconds`:
// a deadlock fails instead of hanging.
class Watchdog {
  public:
    Watchdog(const char* what, int seconds)
        : thread_([this, what, seconds] {
              std::unique_lock<std::mutex> lock(mutex_);
              if (!cv_.wait_for(lock, std::chrono::seconds(seconds), [this] { return done_; })) {
                  std::fprintf(stderr, "%s: no progress in %d s (deadlock?)\n", what, seconds);
                  std::abort();
              }
          }) {}
    ~Watchdog() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            done_ = true;
        }
        cv_.notify_one();
        thread_.join();
    }

  private:
    std::mutex mutex_;
    std::condition_variable cv_;
    bool done_ = false;
    std::thread thread_;  // last: starts once the members it uses exist
};

// The "engine lock" a Feeder holds around each call: `hook_lock` when the
// writer was given it (CaptureOptions::hook_lock), else a mutex of its own.
class EngineLock {
  public:
    explicit EngineLock(SpinLock* hook_lock) : hook_lock_(hook_lock) {}
    void lock() {
        if (hook_lock_) {
            hook_lock_->lock();
        } else {
            mutex_.lock();
        }
    }
    void unlock() {
        if (hook_lock_) {
            hook_lock_->unlock();
        } else {
            mutex_.unlock();
        }
    }

  private:
    SpinLock* hook_lock_;
    std::mutex mutex_;
};

// Feeds a CaptureWriter the way the engine does (one "engine lock"), and keeps
// what the capture must then hold. `hook_lock`: the lock the writer was given
// as CaptureOptions::hook_lock, if any.
class Feeder {
  public:
    explicit Feeder(CaptureWriter* writer, bool aggregated = false, SpinLock* hook_lock = nullptr)
        : writer_(writer), aggregated_(aggregated), engine_lock_(hook_lock) {}

    struct Block {
        uintptr_t address;
        uint64_t size;
        uint32_t domain, thread;
        uint32_t kept;  // on_alloc's return value: the block's sink state
        std::tuple<uint32_t, uint32_t, uint32_t, uint32_t, Allocator> key;
    };

    void thread(uint32_t id) {
        std::lock_guard<EngineLock> lock(engine_lock_);
        const uint64_t tid = gettid_now();
        writer_->on_thread(id, tid, nullptr);
        char name[32] = {};
        pthread_getname_np(pthread_self(), name, sizeof name);
        expected_.push_back("thread " + std::to_string(id) + " " + std::to_string(tid) + " " + name);
    }

    uint32_t python_node(uint32_t parent, FrameKey frame) {
        std::lock_guard<EngineLock> lock(engine_lock_);
        const uint32_t node = ++nodes_;
        uint32_t code = 0;
        int lineno = 0;
        bool entry = false;
        if (frame != FrameKey{0, 0}) {
            auto [it, created] = codes_.try_emplace(frame.code, static_cast<uint32_t>(codes_.size() + 1));
            if (created) {
                std::string f = "<unknown>", file = "<unknown>";
                int first = 0;
                fake_describe_code(frame.code, &f, &file, &first);
                expected_.push_back("code " + std::to_string(it->second) + " " + f + " " + file + " " +
                                    std::to_string(first));
            }
            code = it->second;
            lineno = fake_lineno(frame);
            entry = fake_is_entry(frame);
        }
        writer_->on_python_node(node, parent, frame);
        expected_.push_back("py " + std::to_string(node) + " " + std::to_string(parent) + " " + std::to_string(code) +
                            " " + std::to_string(lineno) + " " + std::to_string(entry ? 1 : 0));
        return node;
    }

    uint32_t native_node(uint32_t parent, uintptr_t ip) {
        std::lock_guard<EngineLock> lock(engine_lock_);
        const uint32_t node = ++native_nodes_;
        writer_->on_native_node(node, parent, ip);
        expected_.push_back("native " + std::to_string(node) + " " + std::to_string(parent) + " " + std::to_string(ip));
        return node;
    }

    void mappings_changed(uint32_t generation) {
        std::lock_guard<EngineLock> lock(engine_lock_);
        writer_->on_mappings_changed();
        expected_.push_back("objects " + std::to_string(generation));
    }

    Block alloc(uint32_t thread, uintptr_t address, uint64_t size, uint32_t python_node, uint32_t native_node = 0,
                Allocator allocator = Allocator::kMalloc, uint32_t domain = 0) {
        std::lock_guard<EngineLock> lock(engine_lock_);
        const uint32_t kept =
            writer_->on_alloc(AllocationEvent{address, size, domain, thread, python_node, native_node, allocator});
        if (!aggregated_) {
            EXPECT_EQ(kept, kNoSinkState);  // only the aggregated format keeps block state
            expected_.push_back("alloc " + std::to_string(thread) + " " + std::to_string(address) + " " +
                                std::to_string(size) + " " + std::to_string(static_cast<int>(allocator)) + " " +
                                std::to_string(domain) + " " + std::to_string(python_node) + " " +
                                std::to_string(native_node));
        }
        ++allocations_;
        heap_ += size;
        peak_ = std::max(peak_, heap_);
        return Block{address, size, domain, thread, kept, {thread, domain, python_node, native_node, allocator}};
    }

    // Frees `block` (all of it, or `length` bytes of a mapping) from `thread`.
    void free(const Block& block, uint32_t thread, Allocator allocator = Allocator::kFree, uint64_t length = 0) {
        std::lock_guard<EngineLock> lock(engine_lock_);
        const uint64_t released = allocator == Allocator::kMunmap && length ? length : block.size;
        // A munmap of less than the mapping takes its start off: the piece stays, smaller.
        const Unmapped how = released < block.size ? Unmapped::kPart : Unmapped::kWhole;
        writer_->on_free(DeallocationEvent{block.address, released, block.domain, thread, allocator,
                                           BlockInfo{.size = block.size, .sink_state = block.kept, .total_depth = 1},
                                           how == Unmapped::kWhole ? 1u : 0u, how});
        if (!aggregated_) {
            expected_.push_back("free " + std::to_string(thread) + " " + std::to_string(block.address) + " " +
                                std::to_string(allocator == Allocator::kMunmap ? released : 0) + " " +
                                std::to_string(static_cast<int>(allocator)) + " " + std::to_string(block.domain));
        }
        ++deallocations_;
        heap_ -= released;
    }

    const std::vector<std::string>& expected() const { return expected_; }
    uint64_t allocations() const { return allocations_; }
    uint64_t deallocations() const { return deallocations_; }
    uint64_t heap() const { return heap_; }
    uint64_t peak() const { return peak_; }

  private:
    CaptureWriter* writer_;
    bool aggregated_;
    EngineLock engine_lock_;
    std::vector<std::string> expected_;
    std::map<uintptr_t, uint32_t> codes_;
    uint32_t nodes_ = 0, native_nodes_ = 0;
    uint64_t allocations_ = 0, deallocations_ = 0, heap_ = 0, peak_ = 0;
};

CaptureOptions options_for(int fd, FileFormat format = FileFormat::kAllAllocations) {
    CaptureOptions o;
    o.fd = fd;
    o.format = format;
    o.compression_level = 1;
    o.memory_interval_ms = 0;
    o.chunk_bytes = 4096;  // many hand-offs
    o.metadata = {{"command", "test"}, {"pid", "1"}};
    o.describer = fake_describer();
    return o;
}

// One thread's share of a workload: stacks, allocations in a loop pattern,
// frees of its own and of others' blocks.
void run_worker(Feeder* feeder, uint32_t thread, int events, bool native, std::vector<Feeder::Block>* shared,
                std::mutex* shared_lock) {
    const std::string name = "worker-" + std::to_string(thread);
    pthread_setname_np(pthread_self(), name.c_str());
    feeder->thread(thread);
    std::mt19937_64 rng(thread);
    std::vector<uint32_t> nodes{0};
    std::vector<uint32_t> native_nodes{0};
    std::vector<Feeder::Block> live;
    const Allocator kinds[] = {Allocator::kMalloc, Allocator::kPymallocMalloc, Allocator::kCalloc,
                               Allocator::kPosixMemalign, Allocator::kMmap, Allocator::kTrack};
    for (int i = 0; i < events; ++i) {
        const uint64_t dice = rng() % 100;
        if (dice < 5 || nodes.size() < 3) {
            // A new frame: known code objects, one unreadable, some unknown frames.
            FrameKey frame{0x1000 + (rng() % 40) * 0x40, rng() % 5000};
            if (rng() % 20 == 0) frame = FrameKey{0, 0};
            if (rng() % 50 == 0) frame.code = kUnreadableCode;
            nodes.push_back(feeder->python_node(nodes[rng() % nodes.size()], frame));
        } else if (native && dice < 8) {
            native_nodes.push_back(feeder->native_node(native_nodes[rng() % native_nodes.size()],
                                                       0x7f0000000000 + rng() % 100000));
        } else if (dice < 55 || live.empty()) {
            const Allocator kind = kinds[rng() % 6];
            const uint32_t domain = kind == Allocator::kTrack ? 1 + static_cast<uint32_t>(rng() % 3) : 0;
            const uintptr_t address = (uintptr_t{thread} << 40) + 0x10000 + static_cast<uintptr_t>(i) * 48;
            live.push_back(feeder->alloc(thread, address, 1 + rng() % 5000, nodes[rng() % nodes.size()],
                                         native ? native_nodes[rng() % native_nodes.size()] : 0, kind, domain));
            if (rng() % 10 == 0) {
                std::lock_guard<std::mutex> lock(*shared_lock);
                shared->push_back(live.back());
                live.pop_back();
            }
        } else {
            Feeder::Block block;
            bool have = false;
            if (rng() % 4 == 0) {
                std::lock_guard<std::mutex> lock(*shared_lock);
                if (!shared->empty()) {
                    block = shared->back();
                    shared->pop_back();
                    have = true;
                }
            }
            if (!have) {
                const size_t victim = rng() % live.size();
                block = live[victim];
                live[victim] = live.back();
                live.pop_back();
            }
            // Blocks freed by the kind that matches how they were made.
            Allocator how = Allocator::kFree;
            uint64_t length = 0;
            if (std::get<4>(block.key) == Allocator::kPymallocMalloc) how = Allocator::kPymallocFree;
            if (std::get<4>(block.key) == Allocator::kTrack) how = Allocator::kUntrack;
            if (std::get<4>(block.key) == Allocator::kMmap) {
                how = Allocator::kMunmap;
                length = block.size;
            }
            feeder->free(block, thread, how, length);
        }
    }
}

}  // namespace

// The tests that run twice: with the writer locking for itself, and with
// the feeder's lock handed over as CaptureOptions::hook_lock (the engine's way).
class CaptureWriterLocks : public ::testing::TestWithParam<bool> {
  protected:
    SpinLock* hook_lock() { return GetParam() ? &hook_lock_ : nullptr; }
    CaptureOptions with_hook_lock(CaptureOptions o) {
        o.hook_lock = hook_lock();
        return o;
    }

  private:
    SpinLock hook_lock_;  // outlives every writer of the test
};
INSTANTIATE_TEST_SUITE_P(, CaptureWriterLocks, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& param_info) {
                             return param_info.param ? "HookLock" : "OwnLock";
                         });

TEST_P(CaptureWriterLocks, AllAllocationsFromFourThreadsReadBackExactly) {
    for (int level : {0, 1, 3}) {
        SCOPED_TRACE("compression level " + std::to_string(level));
        CaptureFile file;
        CaptureOptions o = options_for(file.writer_fd());
        o.hook_lock = hook_lock();
        o.compression_level = level;
        o.native_traces = true;
        std::string error;
        std::unique_ptr<CaptureWriter> writer = CaptureWriter::open(o, &error);
        ASSERT_TRUE(writer) << error;
        Feeder feeder(writer.get(), false, hook_lock());
        std::vector<Feeder::Block> shared;
        std::mutex shared_lock;
        std::vector<std::thread> threads;
        for (uint32_t t = 1; t <= 4; ++t) {
            threads.emplace_back(run_worker, &feeder, t, 20000, true, &shared, &shared_lock);
        }
        for (int i = 0; i < 3; ++i) {
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
            feeder.mappings_changed(2 + i);
        }
        for (std::thread& t : threads) t.join();
        ASSERT_TRUE(writer->finish({{"exit_code", "0"}}, &error)) << error;
        EXPECT_FALSE(writer->failed());

        Capture c = file.read();
        ASSERT_TRUE(c.header_ok) << c.error;
        EXPECT_FALSE(c.damaged) << c.error;
        EXPECT_TRUE(c.end_chunk);
        EXPECT_EQ(c.header.format, FileFormat::kAllAllocations);
        EXPECT_TRUE(c.header.native_traces);
        EXPECT_GT(c.chunks, 50u);  // 4 KiB chunks: the hand-off path ran
        // The opening chunk: metadata, then generation 1 of the loaded objects.
        ASSERT_GE(c.records.size(), 2u);
        EXPECT_EQ(c.records[0].type, RecordType::kMetadata);
        ASSERT_EQ(c.records[1].type, RecordType::kLoadedObjects);
        EXPECT_EQ(c.records[1].loaded_objects.generation, 1u);
        EXPECT_FALSE(c.records[1].loaded_objects.objects.empty());
        // Everything fed, in the order fed.
        std::vector<std::string> got = event_text(c);
        ASSERT_FALSE(got.empty());
        EXPECT_EQ(got.front(), "objects 1");
        got.erase(got.begin());
        ASSERT_EQ(got.size(), feeder.expected().size());
        for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], feeder.expected()[i]) << "record " << i;

        std::map<std::string, std::string> m = c.metadata();
        EXPECT_EQ(m["command"], "test");
        EXPECT_EQ(m["exit_code"], "0");
        EXPECT_EQ(m["file_format"], "all_allocations");
        EXPECT_EQ(m["format_version"], "1");  // exact: readable by version 1 readers
        EXPECT_EQ(m["total_allocations"], std::to_string(feeder.allocations()));
        EXPECT_EQ(m["total_deallocations"], std::to_string(feeder.deallocations()));
        EXPECT_EQ(m["peak_memory"], std::to_string(feeder.peak()));
        EXPECT_EQ(m["end_heap"], std::to_string(feeder.heap()));
        CaptureTotals totals = writer->totals();
        EXPECT_EQ(totals.allocations, feeder.allocations());
        EXPECT_EQ(totals.peak_heap, feeder.peak());
        EXPECT_EQ(totals.bytes_written, file_bytes(file.fd).size());
    }
}

namespace {

using Key = std::tuple<uint32_t, uint32_t, uint32_t, uint32_t, Allocator>;  // thread, domain, py, native, allocator

// The aggregated truth, by location key, replayed from the feeder's events.
struct AggregateTruth {
    std::map<Key, uint32_t> ids;
    heapscope::HighWaterMark hwm;  // checked separately against brute force
    std::map<Key, std::array<uint64_t, 6>> brute;  // current count/bytes, peak count/bytes, total count/bytes
    uint64_t heap = 0, peak = 0;
    void add(const Key& k, uint64_t size) {
        auto& b = brute[k];
        b[0] += 1, b[1] += size, b[4] += 1, b[5] += size;
        heap += size;
        if (heap >= peak) snapshot();  // the latest of equal maxima is the peak
    }
    void remove(const Key& k, uint64_t size, bool whole) {
        auto& b = brute[k];
        b[0] -= whole ? 1 : 0, b[1] -= size;
        heap -= size;
        if (heap >= peak) snapshot();
    }
    void snapshot() {
        peak = heap;
        for (auto& [k, b] : brute) b[2] = b[0], b[3] = b[1];
    }
};

// Location state replayed from a capture's checkpoints, up to the last one.
struct Replayed {
    bool any = false;
    CheckpointRecord checkpoint{};
    std::map<uint32_t, LocationRecord> locations;
    size_t checkpoints = 0;
    bool final = false;
};

Replayed replay(const Capture& c) {
    Replayed out;
    CheckpointRecord pending{};
    std::map<uint32_t, LocationRecord> state;
    uint32_t expected = 0;
    bool in_checkpoint = false;
    for (const Record& r : c.records) {
        if (r.type == RecordType::kCheckpoint) {
            pending = r.checkpoint;
            expected = r.checkpoint.locations;
            in_checkpoint = true;
        } else if (r.type == RecordType::kLocation) {
            EXPECT_TRUE(in_checkpoint);
            state[r.location.location] = r.location;
            --expected;
        } else {
            continue;
        }
        if (in_checkpoint && expected == 0) {  // a whole checkpoint: it counts
            out.any = true;
            out.checkpoint = pending;
            out.locations = state;
            out.final = pending.final;
            ++out.checkpoints;
            in_checkpoint = false;
        }
    }
    return out;
}

void expect_replay_equals(const Replayed& r, const AggregateTruth& truth) {
    ASSERT_TRUE(r.any);
    EXPECT_EQ(r.checkpoint.heap, truth.heap);
    EXPECT_EQ(r.checkpoint.peak_heap, truth.peak);
    std::map<Key, std::array<uint64_t, 6>> got;
    for (const auto& [id, l] : r.locations) {
        Key k{l.thread, l.domain, l.python_node, l.native_node, l.allocator};
        const bool before_peak = l.epoch < r.checkpoint.peak_epoch;
        got[k] = {l.current_count, l.current_bytes, before_peak ? l.current_count : l.at_peak_count,
                  before_peak ? l.current_bytes : l.at_peak_bytes, l.total_count, l.total_bytes};
    }
    for (const auto& [k, b] : truth.brute) {
        auto it = got.find(k);
        ASSERT_NE(it, got.end()) << "location missing";
        EXPECT_EQ(it->second, b) << "python node " << std::get<2>(k);
    }
    EXPECT_EQ(got.size(), truth.brute.size());
}

// Random aggregated traffic through a Feeder, mirrored into `truth`.
void aggregated_traffic(Feeder* feeder, AggregateTruth* truth, std::vector<Feeder::Block>* live, std::mt19937_64& rng,
                        int events, uint32_t first_address) {
    for (int i = 0; i < events; ++i) {
        if (live->empty() || rng() % 100 < 55) {
            const uint32_t thread = 1 + static_cast<uint32_t>(rng() % 2);
            const Allocator kind = rng() % 2 ? Allocator::kMalloc : Allocator::kPymallocMalloc;
            const uint32_t py = 1 + static_cast<uint32_t>(rng() % 30);
            const uint32_t native = static_cast<uint32_t>(rng() % 3);
            const uint32_t domain = rng() % 10 == 0 ? 2 : 0;
            const uint64_t size = 1 + rng() % 3000;
            Feeder::Block b = feeder->alloc(thread, first_address + static_cast<uint32_t>(i) * 16, size, py, native,
                                            kind, domain);
            auto [it, created] = truth->ids.try_emplace(b.key, b.kept);
            EXPECT_EQ(it->second, b.kept) << "one location, one id";
            truth->add(b.key, size);
            live->push_back(b);
        } else {
            const size_t victim = rng() % live->size();
            Feeder::Block b = (*live)[victim];
            (*live)[victim] = live->back();
            live->pop_back();
            feeder->free(b, 1 + static_cast<uint32_t>(rng() % 2));
            truth->remove(b.key, b.size, true);
        }
    }
}

}  // namespace

TEST_P(CaptureWriterLocks, AggregatedFinalCheckpointEqualsBruteForce) {
    CaptureFile file;
    CaptureOptions o = options_for(file.writer_fd(), FileFormat::kAggregatedAllocations);
    o.hook_lock = hook_lock();
    o.checkpoint_interval_ms = 5;  // many intermediate checkpoints
    std::string error;
    std::unique_ptr<CaptureWriter> writer = CaptureWriter::open(o, &error);
    ASSERT_TRUE(writer) << error;
    Feeder feeder(writer.get(), true, hook_lock());
    feeder.thread(1);
    AggregateTruth truth;
    std::vector<Feeder::Block> live;
    std::mt19937_64 rng(42);
    for (int round = 0; round < 20; ++round) {
        aggregated_traffic(&feeder, &truth, &live, rng, 2000, 0x100000 * (round + 1));
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    // A partial munmap: the block stays, smaller.
    Feeder::Block map = feeder.alloc(1, 0x7000000, 1 << 20, 3, 0, Allocator::kMmap);
    truth.add(map.key, 1 << 20);
    feeder.free(map, 1, Allocator::kMunmap, 4096);
    truth.remove(map.key, 4096, false);
    ASSERT_TRUE(writer->finish({}, &error)) << error;

    Capture c = file.read();
    EXPECT_FALSE(c.damaged) << c.error;
    EXPECT_TRUE(c.end_chunk);
    EXPECT_TRUE(c.of(RecordType::kAllocation).empty());
    EXPECT_TRUE(c.of(RecordType::kDeallocation).empty());
    Replayed r = replay(c);
    EXPECT_TRUE(r.final);
    EXPECT_GT(r.checkpoints, 2u);
    expect_replay_equals(r, truth);
    EXPECT_EQ(c.metadata()["file_format"], "aggregated_allocations");
    EXPECT_EQ(c.metadata()["peak_memory"], std::to_string(truth.peak));
}

TEST_P(CaptureWriterLocks, AggregatedCopyTakenMidRunHoldsItsLastCheckpoint) {
    CaptureFile file;
    CaptureOptions o = options_for(file.writer_fd(), FileFormat::kAggregatedAllocations);
    o.hook_lock = hook_lock();
    o.checkpoint_interval_ms = 50;
    o.memory_interval_ms = 10;
    std::string error;
    std::unique_ptr<CaptureWriter> writer = CaptureWriter::open(o, &error);
    ASSERT_TRUE(writer) << error;
    Feeder feeder(writer.get(), true, hook_lock());
    feeder.thread(1);
    AggregateTruth truth;
    std::vector<Feeder::Block> live;
    std::mt19937_64 rng(8);
    aggregated_traffic(&feeder, &truth, &live, rng, 30000, 0x100000);
    // Quiet for several checkpoint intervals: the last checkpoint is on disk.
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
    const std::string copy = file_bytes(file.fd);  // what a SIGKILL now would leave
    AggregateTruth at_copy = truth;
    aggregated_traffic(&feeder, &truth, &live, rng, 30000, 0x90000000);
    ASSERT_TRUE(writer->finish({}, &error)) << error;

    Capture mid = decode_bytes(copy);
    EXPECT_FALSE(mid.damaged) << mid.error;
    EXPECT_FALSE(mid.end_chunk);  // not a clean stop...
    Replayed r = replay(mid);
    EXPECT_FALSE(r.final);  // ...but a usable profile as of its last checkpoint
    expect_replay_equals(r, at_copy);
    EXPECT_FALSE(mid.of(RecordType::kMemory).empty());

    Replayed end = replay(file.read());
    EXPECT_TRUE(end.final);
    expect_replay_equals(end, truth);
}

TEST_P(CaptureWriterLocks, AllAllocationsCopyTakenMidRunHoldsEveryEventUpToTheLastFlush) {
    CaptureFile file;
    CaptureOptions o = options_for(file.writer_fd());
    o.hook_lock = hook_lock();
    o.chunk_bytes = 1 << 20;  // nothing is handed off for being full: only the timed flush writes
    std::string error;
    std::unique_ptr<CaptureWriter> writer = CaptureWriter::open(o, &error);
    ASSERT_TRUE(writer) << error;
    Feeder feeder(writer.get(), false, hook_lock());
    feeder.thread(1);
    uint32_t node = feeder.python_node(0, FrameKey{0x2000, 10});
    for (int i = 0; i < 1000; ++i) feeder.alloc(1, 0x5000 + static_cast<uintptr_t>(i) * 32, 32, node);
    std::this_thread::sleep_for(std::chrono::milliseconds(600));  // two flush intervals
    const std::string copy = file_bytes(file.fd);
    const std::vector<std::string> expected_at_copy = feeder.expected();
    feeder.alloc(1, 0x1, 7, node);
    ASSERT_TRUE(writer->finish({}, &error)) << error;

    Capture mid = decode_bytes(copy);
    EXPECT_FALSE(mid.damaged) << mid.error;
    EXPECT_FALSE(mid.end_chunk);
    EXPECT_EQ(event_text(mid), expected_at_copy);
    EXPECT_EQ(event_text(file.read()), feeder.expected());
}

TEST_P(CaptureWriterLocks, MemoryRecordsAppearAtTheInterval) {
    CaptureFile file;
    CaptureOptions o = options_for(file.writer_fd());
    o.hook_lock = hook_lock();
    o.memory_interval_ms = 20;
    std::string error;
    std::unique_ptr<CaptureWriter> writer = CaptureWriter::open(o, &error);
    ASSERT_TRUE(writer) << error;
    Feeder feeder(writer.get(), false, hook_lock());
    feeder.thread(1);
    feeder.alloc(1, 0x1000, 1000, 0);
    const auto start = std::chrono::steady_clock::now();
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    ASSERT_TRUE(writer->finish({}, &error)) << error;
    const uint64_t elapsed = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count());

    Capture c = file.read();
    std::vector<const Record*> memory = c.of(RecordType::kMemory);
    // One every 20 ms over at least 500 ms, plus the final one; a loaded
    // machine may delay some, never add any.
    EXPECT_GE(memory.size(), 15u);
    EXPECT_LE(memory.size(), elapsed / 20 + 3);
    // A loaded machine may also write a record before the block's
    // allocation: heap 0 then, never after a record that saw it.
    bool seen = false;
    for (size_t i = 0; i < memory.size(); ++i) {
        if (memory[i]->memory.heap == 1000u) seen = true;
        EXPECT_EQ(memory[i]->memory.heap, seen ? 1000u : 0u);
        EXPECT_GT(memory[i]->memory.rss, 1u << 20);
        if (i > 0) {
            // Periodic records are at least a millisecond apart; the final one may share the last's millisecond.
            EXPECT_GE(memory[i]->memory.time_ms, memory[i - 1]->memory.time_ms + (i + 1 < memory.size() ? 1 : 0));
        }
    }
    EXPECT_TRUE(seen);
    EXPECT_GE(memory.back()->memory.time_ms, 500u);
}

TEST(CaptureWriter, WithHookLockTheBackgroundThreadAddsItsRecordsUnderIt) {
    // Memory records are due every 5 ms, but while the "engine" holds its
    // lock the background thread must not touch the writer's state: the
    // records stop for as long as the lock is held, and the file is whole.
    SpinLock hook_lock;
    CaptureFile file;
    CaptureOptions o = options_for(file.writer_fd());
    o.hook_lock = &hook_lock;
    o.memory_interval_ms = 5;
    std::string error;
    std::unique_ptr<CaptureWriter> writer = CaptureWriter::open(o, &error);
    ASSERT_TRUE(writer) << error;
    Feeder feeder(writer.get(), false, &hook_lock);
    feeder.thread(1);
    feeder.alloc(1, 0x1000, 100, 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    hook_lock.lock();
    const auto held_since = std::chrono::steady_clock::now();
    writer->on_alloc(AllocationEvent{0x2000, 200, 0, 1, 0, 0, Allocator::kMalloc});  // as the engine would
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
    const auto held_for = std::chrono::steady_clock::now() - held_since;
    hook_lock.unlock();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ASSERT_TRUE(writer->finish({}, &error)) << error;

    Capture c = file.read();
    EXPECT_FALSE(c.damaged) << c.error;
    std::vector<const Record*> memory = c.of(RecordType::kMemory);
    ASSERT_GE(memory.size(), 3u);
    uint64_t longest_gap = 0;
    for (size_t i = 1; i < memory.size(); ++i) {
        longest_gap = std::max(longest_gap, memory[i]->memory.time_ms - memory[i - 1]->memory.time_ms);
    }
    EXPECT_GE(longest_gap, static_cast<uint64_t>(
                               std::chrono::duration_cast<std::chrono::milliseconds>(held_for).count() - 10));
    EXPECT_EQ(memory.back()->memory.heap, 300u);
    EXPECT_EQ(c.metadata()["total_allocations"], "2");
}

TEST(CaptureWriter, AggregatedLocationIdsAreDenseAndStable) {
    CaptureFile file;
    std::string error;
    std::unique_ptr<CaptureWriter> writer =
        CaptureWriter::open(options_for(file.writer_fd(), FileFormat::kAggregatedAllocations), &error);
    ASSERT_TRUE(writer) << error;
    auto alloc = [&](uint32_t thread, uint32_t py, uint32_t native, Allocator a, uint32_t domain) {
        return writer->on_alloc(AllocationEvent{0x1000, 16, domain, thread, py, native, a});
    };
    EXPECT_EQ(alloc(1, 5, 0, Allocator::kMalloc, 0), 0u);
    EXPECT_EQ(alloc(2, 5, 0, Allocator::kMalloc, 0), 1u);   // another thread
    EXPECT_EQ(alloc(1, 5, 0, Allocator::kCalloc, 0), 2u);   // another allocator
    EXPECT_EQ(alloc(1, 5, 0, Allocator::kMalloc, 3), 3u);   // another domain
    EXPECT_EQ(alloc(1, 5, 9, Allocator::kMalloc, 0), 4u);   // another native stack
    EXPECT_EQ(alloc(1, 6, 0, Allocator::kMalloc, 0), 5u);   // another python stack
    EXPECT_EQ(alloc(1, 5, 0, Allocator::kMalloc, 0), 0u);   // seen before
    for (uint32_t i = 0; i < 5000; ++i) EXPECT_EQ(alloc(7, 100 + i, 0, Allocator::kMalloc, 0), 6u + i);
    for (uint32_t i = 0; i < 5000; ++i) ASSERT_EQ(alloc(7, 100 + i, 0, Allocator::kMalloc, 0), 6u + i);
    ASSERT_TRUE(writer->finish({}, &error)) << error;
}

TEST_P(CaptureWriterLocks, SlowReaderBlocksTheHooksButLosesNothing) {
    // Three buffers of 4 KiB and a pipe nobody reads for a while: the hooks
    // wait (bounded memory), then everything arrives intact.
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    std::string received;
    std::atomic<bool> reading{false};
    std::thread reader([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(300));
        reading = true;
        char buf[8192];
        ssize_t n;
        while ((n = ::read(fds[0], buf, sizeof buf)) > 0) received.append(buf, static_cast<size_t>(n));
    });
    CaptureOptions o = options_for(fds[1]);
    o.hook_lock = hook_lock();
    o.compression_level = 0;
    // Memory records every millisecond: the background thread keeps wanting
    // the state lock while a hook holds it waiting for a buffer. It must
    // write first, not wait for the lock (a deadlock the watchdog reports).
    o.memory_interval_ms = 1;
    std::string error;
    std::unique_ptr<CaptureWriter> writer = CaptureWriter::open(o, &error);
    ASSERT_TRUE(writer) << error;
    Watchdog watchdog("SlowReaderBlocksTheHooksButLosesNothing", 60);
    Feeder feeder(writer.get(), false, hook_lock());
    feeder.thread(1);
    std::mt19937_64 rng(1);
    for (int i = 0; i < 100000; ++i) feeder.alloc(1, rng(), rng() % 100000, static_cast<uint32_t>(rng() % 1000));
    EXPECT_TRUE(reading) << "100000 random events (~2 MB) fit in a 64 KiB pipe and three 4 KiB buffers?";
    ASSERT_TRUE(writer->finish({}, &error)) << error;  // closes the write end: the reader sees EOF
    reader.join();
    ::close(fds[0]);
    Capture c = decode_bytes(received);
    EXPECT_TRUE(c.end_chunk);
    EXPECT_EQ(event_text(c), feeder.expected());
}

TEST_P(CaptureWriterLocks, FailedWritesSetFailedWithoutCrashingOrBlocking) {
    // A pipe whose reader goes away after the opening chunk: EPIPE, never SIGPIPE.
    {
        int fds[2];
        ASSERT_EQ(pipe(fds), 0);
        std::string error;
        std::unique_ptr<CaptureWriter> writer = CaptureWriter::open(with_hook_lock(options_for(fds[1])), &error);
        ASSERT_TRUE(writer) << error;
        ::close(fds[0]);
        Feeder feeder(writer.get(), false, hook_lock());
        feeder.thread(1);
        for (int i = 0; i < 200000; ++i) feeder.alloc(1, static_cast<uintptr_t>(i) * 4096 + 7, 100, 0);
        for (int i = 0; i < 200 && !writer->failed(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
        EXPECT_TRUE(writer->failed());
        for (int i = 0; i < 100000; ++i) feeder.alloc(1, static_cast<uintptr_t>(i) * 4096 + 9, 100, 0);  // no block
        EXPECT_FALSE(writer->finish({}, &error));
        EXPECT_NE(error.find("Broken pipe"), std::string::npos) << error;
    }
    // A socket whose peer closed.
    {
        int fds[2];
        ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
        std::string error;
        std::unique_ptr<CaptureWriter> writer = CaptureWriter::open(with_hook_lock(options_for(fds[0])), &error);
        ASSERT_TRUE(writer) << error;
        ::close(fds[1]);
        Feeder feeder(writer.get(), false, hook_lock());
        for (int i = 0; i < 100000; ++i) feeder.alloc(1, static_cast<uintptr_t>(i) * 4096 + 7, 100, 0);
        EXPECT_FALSE(writer->finish({}, &error));
        EXPECT_TRUE(writer->failed());
        EXPECT_TRUE(error.find("Broken pipe") != std::string::npos ||
                    error.find("Connection reset") != std::string::npos)
            << error;
    }
    // A full disk: open() itself fails, says why, and closes the descriptor.
    {
        const int full = ::open("/dev/full", O_WRONLY);
        ASSERT_GE(full, 0);
        std::string error;
        EXPECT_FALSE(CaptureWriter::open(options_for(full), &error));
        EXPECT_NE(error.find("No space left on device"), std::string::npos) << error;
        EXPECT_EQ(::fcntl(full, F_GETFD), -1);  // closed
    }
}

TEST_P(CaptureWriterLocks, ChildCaptureAfterForkIsSelfContained) {
#if defined(__SANITIZE_THREAD__)
    // The child of a process whose writer thread runs starts a thread of its
    // own: TSan's bookkeeping, copied from the parent, still holds the
    // parent's threads, and it dies ("starting new threads after
    // multi-threaded fork is not supported", or a thread id it thinks is in
    // use). The plain and ASan builds run this test.
    GTEST_SKIP() << "ThreadSanitizer cannot run a thread started after a multi-threaded fork";
#endif
    for (FileFormat format : {FileFormat::kAllAllocations, FileFormat::kAggregatedAllocations}) {
        const bool aggregated = format == FileFormat::kAggregatedAllocations;
        SCOPED_TRACE(aggregated ? "aggregated" : "all allocations");
        CaptureFile parent_file, child_file;
        CaptureOptions o = options_for(parent_file.writer_fd(), format);
        o.hook_lock = hook_lock();
        o.native_traces = true;
        std::string error;
        std::unique_ptr<CaptureWriter> writer = CaptureWriter::open(o, &error);
        ASSERT_TRUE(writer) << error;
        Feeder feeder(writer.get(), aggregated, hook_lock());
        pthread_setname_np(pthread_self(), "forker");
        feeder.thread(1);
        const uint32_t outer = feeder.python_node(0, FrameKey{0x3000, 4});
        const uint32_t inner = feeder.python_node(outer, FrameKey{0x3040, 9});
        const uint32_t native = feeder.native_node(0, 0x7f0000001234);
        Feeder::Block kept = feeder.alloc(1, 0x1000, 100, inner, native);
        Feeder::Block freed_in_child = feeder.alloc(1, 0x2000, 50, outer, native);
        Feeder::Block parent_only = feeder.alloc(1, 0x3000, 25, outer);
        feeder.free(parent_only, 1);
        const int child_fd = child_file.writer_fd();

        // As the engine does: the lock is held across fork(), so no child
        // inherits it held (the parent's background thread may take it).
        if (hook_lock()) hook_lock()->lock();
        const pid_t pid = fork();
        if (hook_lock()) hook_lock()->unlock();
        ASSERT_GE(pid, 0);
        if (pid == 0) {
            // The child: events go to its own capture; exit code 0 only if
            // every step worked (gtest cannot report from here).
            std::string child_error;
            std::unique_ptr<CaptureWriter> child =
                writer->clone_in_child(child_fd, {{"command", "child"}, {"pid", std::to_string(getpid())}}, &child_error);
            if (!child) end_child(2);
            EngineLock child_engine_lock(hook_lock());  // the child's writer keeps hook_lock
            child_engine_lock.lock();
            child->on_free(DeallocationEvent{freed_in_child.address, 50, 0, 1, Allocator::kFree,
                                             BlockInfo{.size = 50, .sink_state = freed_in_child.kept, .total_depth = 1}});
            const uint32_t k = child->on_alloc(AllocationEvent{0x9000, 4000, 0, 1, inner, native, Allocator::kMalloc});
            child->on_alloc(AllocationEvent{0xa000, 10, 0, 1, outer, 0, Allocator::kCalloc});
            child_engine_lock.unlock();
            if (k != (aggregated ? kept.kept : kNoSinkState)) end_child(3);
            if (!child->finish({{"exit_code", "0"}}, &child_error)) end_child(4);
            (void)writer.release();  // abandoned: the parent's writer belongs to the parent
            end_child(0);
        }
        ::close(child_fd);
        int status = 0;
        ASSERT_EQ(waitpid(pid, &status, 0), pid);
        ASSERT_TRUE(WIFEXITED(status));
        ASSERT_EQ(WEXITSTATUS(status), 0);

        // The parent's capture goes on undisturbed.
        feeder.alloc(1, 0x4000, 1, inner);
        ASSERT_TRUE(writer->finish({}, &error)) << error;
        Capture parent = parent_file.read();
        EXPECT_TRUE(parent.end_chunk);
        if (!aggregated) {
            EXPECT_EQ(event_text(parent).back(), "alloc 1 16384 1 1 0 2 0");
        }

        Capture child = child_file.read();
        ASSERT_TRUE(child.header_ok) << child.error;
        EXPECT_FALSE(child.damaged) << child.error;
        EXPECT_TRUE(child.end_chunk);
        EXPECT_EQ(child.metadata()["command"], "child");
        // Every definition the child's records use is in the child's file.
        std::vector<std::string> got = event_text(child);
        std::vector<std::string> definitions(got.begin(), got.begin() + 6);
        EXPECT_EQ(definitions, (std::vector<std::string>{
                                   feeder.expected()[0],  // thread 1 "forker"
                                   "code 1 func_12288 /src/file_3.py 88", "code 2 func_12352 /src/file_4.py 52",
                                   "py 1 0 1 4 1", "py 2 1 2 9 0", "objects 1"}));
        EXPECT_EQ(got[6], "native 1 0 " + std::to_string(0x7f0000001234ULL));
        if (!aggregated) {
            EXPECT_EQ(std::vector<std::string>(got.begin() + 7, got.end()),
                      (std::vector<std::string>{"free 1 8192 0 2 0", "alloc 1 36864 4000 1 0 2 1",
                                                "alloc 1 40960 10 3 0 1 0"}));
            // The child's heap: what it inherited (150 bytes), less 50, plus 4010.
            EXPECT_EQ(child.metadata()["end_heap"], "4110");
            EXPECT_EQ(child.metadata()["peak_memory"], "4110");
            EXPECT_EQ(child.metadata()["total_allocations"], "2");
        } else {
            // Inherited blocks count; the fork is the child's first peak.
            AggregateTruth truth;
            truth.add(kept.key, 100);
            truth.add(freed_in_child.key, 50);
            for (auto& [k, b] : truth.brute) b[4] = b[5] = 0;  // totals count the child's allocations
            truth.remove(freed_in_child.key, 50, true);
            truth.add(kept.key, 4000);
            truth.add(Key{1, 0, outer, 0, Allocator::kCalloc}, 10);
            Replayed r = replay(child);
            EXPECT_TRUE(r.final);
            expect_replay_equals(r, truth);
            // The opening chunk already holds the inherited state, so a child
            // killed at once still leaves a profile.
            std::vector<const Record*> checkpoints = child.of(RecordType::kCheckpoint);
            ASSERT_GE(checkpoints.size(), 2u);
            EXPECT_EQ(checkpoints[0]->checkpoint.heap, 150u);
            EXPECT_EQ(checkpoints[0]->checkpoint.peak_heap, 150u);
            EXPECT_EQ(checkpoints[0]->checkpoint.locations, 2u);  // the location emptied before the fork is not repeated
        }
    }
}

// --- the journal: what a killed process leaves ----------------------------------

namespace {

struct KilledCapture {
    std::string bytes;   // the file as the kill left it
    uint64_t logged = 0;  // events the child had been told were recorded
};

uint64_t expected_address(uint64_t i) { return 0x5000 + i * 48; }
uint64_t expected_size(uint64_t i) { return 1 + i % 700; }

// In a forked child: a writer with `o` that has recorded the first `count`
// expected allocations, each counted in `logged` (if given) once recorded.
std::unique_ptr<CaptureWriter> record_in_child(const CaptureOptions& o, uint64_t count,
                                               std::atomic<uint64_t>* logged = nullptr) {
    std::string error;
    std::unique_ptr<CaptureWriter> writer = CaptureWriter::open(o, &error);
    if (!writer) end_child(3);
    Feeder feeder(writer.get(), o.format == FileFormat::kAggregatedAllocations);
    feeder.thread(1);
    const uint32_t node = feeder.python_node(0, FrameKey{0x2000, 10});
    for (uint64_t i = 0; i < count; ++i) {
        feeder.alloc(1, expected_address(i), expected_size(i), node);
        if (logged) logged->store(i + 1, std::memory_order_release);
    }
    return writer;
}

// A child records allocations, counting each in shared memory once the
// writer has returned, and is SIGKILLed after `delay`.
// It stops recording after `max_events` and waits to be killed.
KilledCapture kill_a_capture(size_t chunk_bytes, FileFormat format, std::chrono::microseconds delay,
                             uint64_t max_events = 200000) {
    CaptureFile file;
    void* shared = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    auto* logged = new (shared) std::atomic<uint64_t>(0);
    const pid_t child = ::fork();
    if (child == 0) {
        CaptureOptions o = options_for(file.writer_fd(), format);
        o.chunk_bytes = chunk_bytes;
        o.memory_interval_ms = 1;
        o.checkpoint_interval_ms = 5;
        std::unique_ptr<CaptureWriter> writer = record_in_child(o, max_events, logged);
        for (;;) ::pause();
    }
    // From the first event on (the child's set-up is not what is measured).
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (logged->load(std::memory_order_acquire) == 0 && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::yield();
    }
    std::this_thread::sleep_for(delay);
    ::kill(child, SIGKILL);
    int status = 0;
    ::waitpid(child, &status, 0);
    KilledCapture out;
    out.logged = logged->load(std::memory_order_acquire);
    out.bytes = file_bytes(file.fd);
    ::munmap(shared, 4096);
    return out;
}

// Checks that `c`'s allocations are the first ones the child made, in order.
size_t expect_prefix_of_the_childs_events(const Capture& c) {
    const std::vector<const Record*> allocations = c.of(RecordType::kAllocation);
    for (size_t i = 0; i < allocations.size(); ++i) {
        const AllocationRecord& a = allocations[i]->allocation;
        if (a.address != expected_address(i) || a.size != expected_size(i)) {
            ADD_FAILURE() << "allocation " << i << " is " << a.address << "/" << a.size;
            break;
        }
    }
    return allocations.size();
}

}  // namespace

TEST(CaptureWriterJournal, EveryEventRecordedBeforeASigkillIsInTheFile) {
    std::mt19937 rng(14);
    for (int round = 0; round < 24; ++round) {
        const size_t chunk_bytes = round % 3 == 0 ? (1 << 20) : (round % 3 == 1 ? 4096 : 100);
        const auto delay = std::chrono::microseconds(rng() % 30000);
        KilledCapture killed = kill_a_capture(chunk_bytes, FileFormat::kAllAllocations, delay);
        Capture c = decode_bytes(killed.bytes);
        ASSERT_TRUE(c.header_ok) << c.error;
        EXPECT_FALSE(c.damaged) << c.error;
        EXPECT_FALSE(c.end_chunk);
        const size_t read = expect_prefix_of_the_childs_events(c);
        EXPECT_GE(read, killed.logged) << "round " << round << ", chunk_bytes " << chunk_bytes;
        EXPECT_GT(killed.logged, 0u);
    }
}

TEST(CaptureWriterJournal, AggregatedCaptureKilledHoldsACheckpointOfTheLastInterval) {
    // 1000 allocations, then 500 ms (a hundred checkpoint intervals) of nothing, then the kill.
    KilledCapture killed =
        kill_a_capture(4096, FileFormat::kAggregatedAllocations, std::chrono::milliseconds(500), 1000);
    ASSERT_EQ(killed.logged, 1000u);
    Capture c = decode_bytes(killed.bytes);
    EXPECT_FALSE(c.damaged) << c.error;
    Replayed r = replay(c);
    EXPECT_FALSE(r.final);
    uint64_t total = 0;
    for (const Record* l : c.of(RecordType::kLocation)) total = std::max(total, l->location.total_count);
    EXPECT_EQ(total, 1000u);  // one location: the last checkpoint counts every allocation
}

// A killed capture cut at any byte (a copy that stopped, a full disk) reads
// as a prefix of the events, and says it is damaged when it lost some.
TEST(CaptureWriterJournal, KilledCaptureCutAtAnyByteReadsAPrefix) {
    KilledCapture killed = kill_a_capture(1024, FileFormat::kAllAllocations, std::chrono::milliseconds(5), 600);
    const std::string& bytes = killed.bytes;
    Capture whole = decode_bytes(bytes);
    ASSERT_FALSE(whole.damaged) << whole.error;
    const size_t all = expect_prefix_of_the_childs_events(whole);
    ASSERT_GE(all, killed.logged);
    // Every byte near the chunks and the slots' headers and ends; a stride elsewhere.
    std::vector<size_t> cuts;
    std::vector<std::pair<size_t, size_t>> dense{{0, 6000}};
    // Cuts from the end of a slot to the end of the next one's header lose
    // that next slot unseen, as a cut at a chunk boundary loses the chunks after it.
    std::vector<std::pair<size_t, size_t>> unseen;
    for (size_t at = 0; at + 64 <= bytes.size(); at += 4096) {
        if (bytes.compare(at, 4, "HSJL") != 0) continue;
        uint64_t committed = 0;
        uint32_t capacity = 0;
        std::memcpy(&committed, bytes.data() + at + 32, 8);
        std::memcpy(&capacity, bytes.data() + at + 12, 4);
        if (!unseen.empty()) unseen.back().second = at + 64;
        unseen.emplace_back(at + 64 + capacity, bytes.size() + 1);
        dense.emplace_back(at > 64 ? at - 64 : 0, at + 128);
        const size_t end = at + 64 + committed;
        dense.emplace_back(end > 200 ? end - 200 : 0, end + 8);
        dense.emplace_back(at + 64 + capacity - 8, at + 64 + capacity + 8);
    }
    for (size_t cut = 0; cut <= bytes.size(); ++cut) {
        bool near = cut % 509 == 0 || cut == bytes.size();
        for (const auto& [from, to] : dense) near = near || (cut >= from && cut < to);
        if (near) cuts.push_back(cut);
    }
    // Where the chunks before the journal end: a file cut there is not
    // damaged, only shorter (as if the process had been killed then).
    std::vector<size_t> boundaries{kFileHeaderBytes};
    for (size_t at = kFileHeaderBytes; at + kChunkHeaderBytes <= bytes.size();) {
        if (bytes.compare(at, 4, "HSCK") != 0) break;
        uint32_t stored = 0;
        std::memcpy(&stored, bytes.data() + at + 16, 4);
        at += kChunkHeaderBytes + stored;
        boundaries.push_back(at);
    }
    size_t previous = 0;
    for (size_t cut : cuts) {
        Capture c = decode_bytes(bytes.substr(0, cut));
        if (!c.header_ok) {
            EXPECT_LT(cut, 40u);
            continue;
        }
        const size_t read = expect_prefix_of_the_childs_events(c);
        EXPECT_GE(read, previous) << "cut at " << cut;  // more bytes never read less
        previous = read;
        bool boundary = std::find(boundaries.begin(), boundaries.end(), cut) != boundaries.end();
        for (const auto& [from, to] : unseen) boundary = boundary || (cut >= from && cut < to);
        if (read < all && !boundary) {
            EXPECT_TRUE(c.damaged) << "cut at " << cut << " lost events without saying so";
        }
        if (::testing::Test::HasFailure()) break;
    }
    EXPECT_EQ(previous, all);
}

TEST(CaptureWriterJournal, AFinishedCaptureHasNoJournalLeft) {
    CaptureFile file;
    std::string error;
    std::unique_ptr<CaptureWriter> writer = CaptureWriter::open(options_for(file.writer_fd()), &error);
    ASSERT_TRUE(writer) << error;
    Feeder feeder(writer.get());
    feeder.thread(1);
    const uint32_t node = feeder.python_node(0, FrameKey{0x2000, 10});
    for (uint64_t i = 0; i < 5000; ++i) feeder.alloc(1, expected_address(i), expected_size(i), node);
    // A record larger than a slot goes through too.
    writer->add_metadata({{"big", std::string(300000, 'x')}});
    ASSERT_TRUE(writer->finish({}, &error)) << error;
    const std::string bytes = file_bytes(file.fd);
    EXPECT_EQ(bytes.size(), writer->totals().bytes_written);
    EXPECT_EQ(bytes.find("HSJL"), std::string::npos);
    Capture c = decode_bytes(bytes);
    EXPECT_FALSE(c.damaged) << c.error;
    EXPECT_TRUE(c.end_chunk);
    EXPECT_EQ(expect_prefix_of_the_childs_events(c), 5000u);
    EXPECT_EQ(c.metadata()["big"].size(), 300000u);
}

// A process killed while finishing (a Pool's terminate() reaching a worker in
// its atexit): the capture reads as not finished, never damaged, with every
// event; the end records too once they are in the journal or a chunk.
namespace {
int g_kill_at_step = -1;
void kill_at_step(int step) {
    if (step == g_kill_at_step) ::raise(SIGKILL);
}
}  // namespace

TEST(CaptureWriterJournal, AKillWhileFinishingLeavesACaptureNotFinishedWithEveryEvent) {
    for (const FileFormat format : {FileFormat::kAllAllocations, FileFormat::kAggregatedAllocations}) {
        // Small end records fit the current slot; 300,000 bytes of them do not.
        for (const size_t end_bytes : {size_t{10}, size_t{300000}}) {
            for (const int step : {0, 1}) {
                SCOPED_TRACE(testing::Message() << "format " << static_cast<int>(format) << ", end records of "
                                                << end_bytes << " bytes, killed at step " << step);
                CaptureFile file;
                const pid_t child = ::fork();
                if (child == 0) {
                    CaptureOptions o = options_for(file.writer_fd(), format);
                    o.finishing_step = kill_at_step;
                    g_kill_at_step = step;
                    std::unique_ptr<CaptureWriter> writer = record_in_child(o, 3000);
                    std::string error;
                    writer->finish({{"end", std::string(end_bytes, 'e')}}, &error);
                    end_child(4);  // not killed: the step was never reached
                }
                int status = 0;
                ::waitpid(child, &status, 0);
                ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "child status " << status;
                const std::string bytes = file_bytes(file.fd);
                ASSERT_NE(bytes.find("HSJL"), std::string::npos);  // the journal was left behind
                Capture c = decode_bytes(bytes);
                EXPECT_FALSE(c.damaged) << c.error;
                EXPECT_FALSE(c.end_chunk);
                const std::map<std::string, std::string> metadata = c.metadata();
                // The end records are lost only when killed before they were anywhere.
                const bool end_records_kept = end_bytes < 1000 || step == 1;
                EXPECT_EQ(metadata.count("end"), end_records_kept ? 1u : 0u);
                if (format == FileFormat::kAllAllocations) {
                    EXPECT_EQ(expect_prefix_of_the_childs_events(c), 3000u);
                    if (end_records_kept) {
                        EXPECT_EQ(metadata.count("total_allocations") ? metadata.at("total_allocations") : "", "3000");
                    }
                } else {
                    Replayed r = replay(c);
                    EXPECT_EQ(r.final, end_records_kept);
                    uint64_t total = 0;
                    for (const Record* l : c.of(RecordType::kLocation)) total = std::max(total, l->location.total_count);
                    if (end_records_kept) {
                        EXPECT_EQ(total, 3000u);
                    }
                }
            }
        }
    }
}

// A descriptor opened write-only cannot be mapped: the writer falls back to
// writing a chunk at a time.
TEST(CaptureWriterJournal, WriteOnlyDescriptorsAreWrittenWithoutAJournal) {
    char path[] = "/tmp/heapscope-journal-XXXXXX";
    const int fd = ::mkstemp(path);
    ASSERT_GE(fd, 0);
    const int write_only = ::open(path, O_WRONLY | O_CLOEXEC);
    ::close(fd);
    std::string error;
    std::unique_ptr<CaptureWriter> writer = CaptureWriter::open(options_for(write_only), &error);
    ASSERT_TRUE(writer) << error;
    Feeder feeder(writer.get());
    feeder.thread(1);
    const uint32_t node = feeder.python_node(0, FrameKey{0x2000, 10});
    for (uint64_t i = 0; i < 3000; ++i) feeder.alloc(1, expected_address(i), expected_size(i), node);
    ASSERT_TRUE(writer->finish({}, &error)) << error;
    const int reader = ::open(path, O_RDONLY | O_CLOEXEC);
    Capture c = decode_bytes(file_bytes(reader));
    ::close(reader);
    ::unlink(path);
    EXPECT_TRUE(c.end_chunk);
    EXPECT_EQ(expect_prefix_of_the_childs_events(c), 3000u);
}

// track_object_lifetimes: every object event in order, version 3, and the
// aggregated format keeps the objects alive at the end (after the final
// checkpoint) with their stacks; without the option no Object record is written.
TEST(CaptureWriter, ObjectEventsAreWrittenInOrderOrAsTheSurvivorsAtTheEnd) {
    for (FileFormat format : {FileFormat::kAllAllocations, FileFormat::kAggregatedAllocations}) {
        for (bool track : {true, false}) {
            CaptureFile file;
            std::string error;
            CaptureOptions options = options_for(file.writer_fd(), format);
            options.track_object_lifetimes = track;
            std::unique_ptr<CaptureWriter> writer = CaptureWriter::open(std::move(options), &error);
            ASSERT_TRUE(writer) << error;
            writer->on_thread(1, 100, nullptr);
            writer->on_python_node(1, 0, FrameKey{0x1000, 2});
            writer->on_object(ObjectEvent{0x5000, 1, true, 1, 0});
            writer->on_object(ObjectEvent{0x6000, 1, true, 1, 0});
            writer->on_object(ObjectEvent{0x5000, 1, false, 0, 0});
            writer->on_object(ObjectEvent{0x7000, 1, true, 1, 0});
            ASSERT_TRUE(writer->finish({}, &error)) << error;
            Capture c = file.read();
            ASSERT_FALSE(c.damaged) << c.error;
            EXPECT_EQ(c.header.version, track ? 3u : 1u);
            EXPECT_EQ(c.metadata()["track_object_lifetimes"], track ? "1" : "0");
            std::vector<std::string> objects;
            for (const Record* r : c.of(RecordType::kObject)) {
                objects.push_back(std::to_string(r->object.address) + (r->object.created ? " made " : " gone ") +
                                  std::to_string(r->object.python_node) + " t" + std::to_string(r->object.thread));
            }
            if (!track) {
                EXPECT_TRUE(objects.empty());
            } else if (format == FileFormat::kAllAllocations) {
                EXPECT_EQ(objects, (std::vector<std::string>{"20480 made 1 t1", "24576 made 1 t1", "20480 gone 0 t1",
                                                             "28672 made 1 t1"}));
            } else {
                std::sort(objects.begin(), objects.end());
                EXPECT_EQ(objects, (std::vector<std::string>{"24576 made 1 t1", "28672 made 1 t1"}));
                // After the final checkpoint.
                ASSERT_FALSE(c.of(RecordType::kCheckpoint).empty());
                EXPECT_GT(c.of(RecordType::kObject).front(), c.of(RecordType::kCheckpoint).back());
            }
        }
    }
}
