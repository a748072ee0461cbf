// Timing of the reader's passes on a large synthetic capture. Disabled by
// default (it writes a file of hundreds of MB); run it on a Release build:
//
//   HEAPSCOPE_BENCH_EVENTS=50000000 build/a-rel/heapscope_unit_tests
//       --gtest_also_run_disabled_tests --gtest_filter='*AnalysisBench*'
//
// The events look like a Python program traced with its allocators: small
// pymalloc blocks from a few thousand stacks (a few of them hot), freed
// mostly soon and in LIFO order, addresses reused the way free lists reuse
// them, a live set that grows to about a million blocks and shrinks again,
// and a memory record every 50,000 events. The generator knows the true
// peak, which the passes must find.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "analysis/analyses.h"
#include "read/capture_reader.h"
#include "format/chunk_io.h"
#include "format/records.h"

namespace {

using namespace heapscope;
using namespace heapscope::analysis;
using namespace heapscope::read;

uint64_t env_or(const char* name, uint64_t fallback) {
    const char* value = std::getenv(name);
    return value ? std::strtoull(value, nullptr, 10) : fallback;
}

struct Written {
    uint64_t events = 0, allocations = 0, peak_heap = 0, end_heap = 0;
};

Written write_synthetic(const std::string& path, uint64_t target_events) {
    Written w;
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    EXPECT_GE(fd, 0);
    format::ChunkWriter writer(fd, 3);
    format::FileHeader header;
    header.trace_python_allocators = true;
    EXPECT_TRUE(writer.write_header(header));
    format::RecordEncoder e;
    auto flush = [&] {
        EXPECT_TRUE(writer.write_chunk(format::ChunkType::kRecords, e.bytes()));
        e.reset();
    };
    constexpr uint32_t kStacks = 5000;
    e.code(format::CodeRecord{1, "f", "bench.py", 1});
    for (uint32_t n = 1; n <= kStacks; ++n) {
        e.python_node(format::PythonNodeRecord{n, n > 100 ? n % 100 + 1 : 0, 1, static_cast<int32_t>(n), n <= 100});
    }
    for (uint32_t t = 1; t <= 4; ++t) e.thread(format::ThreadRecord{t, 100 + t, "t"});

    std::mt19937_64 rng(1234);
    struct Live {
        uint64_t address, size;
    };
    std::vector<Live> live;
    std::vector<uint64_t> free_list;  // recently freed addresses, reused LIFO
    uint64_t next_address = 0x7f0000000000;
    uint64_t heap = 0;
    const uint64_t half = target_events / 2;
    const Allocator kinds[4] = {Allocator::kPymallocMalloc, Allocator::kPymallocMalloc, Allocator::kPymallocCalloc,
                                Allocator::kMalloc};
    uint64_t time_ms = 0;
    while (w.events < target_events) {
        // The live set's target follows the run: up to 1M blocks halfway, then down.
        const uint64_t progress = w.events < half ? w.events : target_events - w.events;
        const uint64_t target_live = 1000 + progress * 1000000 / (half ? half : 1);
        const bool allocate = live.empty() || (live.size() < target_live ? rng() % 100 < 52 : rng() % 100 < 48);
        const uint32_t thread = rng() % 16 == 0 ? 2 + static_cast<uint32_t>(rng() % 3) : 1;
        if (allocate) {
            uint64_t address;
            if (!free_list.empty() && rng() % 10 < 8) {
                address = free_list.back();
                free_list.pop_back();
            } else {
                address = next_address;
                next_address += 512;
            }
            const uint64_t r = rng();
            const uint64_t size = r % 64 == 0 ? 512 + r % 100000 : 16 + (r >> 8) % 496;
            const uint32_t stack = r % 4 != 0 ? 1 + static_cast<uint32_t>((r >> 20) % 64)
                                              : 1 + static_cast<uint32_t>((r >> 20) % kStacks);
            e.allocation(format::AllocationRecord{thread, address, size, kinds[(r >> 40) % 4], 0, stack, 0});
            live.push_back(Live{address, size});
            heap += size;
            ++w.allocations;
            if (heap > w.peak_heap) w.peak_heap = heap;
        } else {
            // Mostly one of the newest blocks; sometimes any.
            const size_t n = live.size();
            const size_t i = rng() % 4 != 0 ? n - 1 - rng() % std::min<size_t>(n, 8) : rng() % n;
            const Live block = live[i];
            live[i] = live.back();
            live.pop_back();
            e.deallocation(format::DeallocationRecord{thread, block.address, 0,
                                                      Allocator::kPymallocFree, 0});
            heap -= block.size;
            free_list.push_back(block.address);
            if (free_list.size() > 4096) free_list.erase(free_list.begin(), free_list.begin() + 2048);
        }
        ++w.events;
        if (w.events % 50000 == 0) e.memory(format::MemoryRecord{time_ms += 10, heap * 2, heap});
        if (e.size() >= (1u << 20)) flush();
    }
    flush();
    EXPECT_TRUE(writer.write_chunk(format::ChunkType::kEnd, {}));
    ::close(fd);
    w.end_heap = heap;
    return w;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

TEST(AnalysisBench, DISABLED_PeakPassOverALargeCapture) {
    const uint64_t events = env_or("HEAPSCOPE_BENCH_EVENTS", 50000000);
    const char* given = std::getenv("HEAPSCOPE_BENCH_FILE");
    const std::string path = given ? given : (std::filesystem::temp_directory_path() / "heapscope_bench.cap").string();
    auto start = std::chrono::steady_clock::now();
    // HEAPSCOPE_BENCH_REUSE=1 reads a file a previous run kept (HEAPSCOPE_BENCH_KEEP=1)
    // for profiling the passes alone; the generator's figures are then unknown.
    const bool reuse = std::getenv("HEAPSCOPE_BENCH_REUSE") != nullptr;
    Written w = reuse ? Written{events, 0, 0, 0} : write_synthetic(path, events);
    const double write_s = seconds_since(start);
    const uint64_t size = std::filesystem::file_size(path);
    std::printf("capture: %llu events (%llu allocations), %.1f MB, %.2f bytes/event, written in %.1f s\n",
                static_cast<unsigned long long>(w.events), static_cast<unsigned long long>(w.allocations),
                size / 1e6, static_cast<double>(size) / static_cast<double>(w.events), write_s);

    CaptureReader::OpenFailure failure;
    auto reader = CaptureReader::open(path, &failure);
    ASSERT_TRUE(reader) << failure.message;
    for (bool prefetch : {true, false, true}) {
        start = std::chrono::steady_clock::now();
        CaptureSummary s = summarize(*reader, nullptr, prefetch);
        auto rows = finish_rows(s.peak, true);
        const double pass_s = seconds_since(start);
        EXPECT_TRUE(s.end.complete) << s.end.damage << s.end.error;
        if (!reuse) {
            EXPECT_EQ(s.peak_heap, w.peak_heap);
            EXPECT_EQ(s.end_heap, w.end_heap);
            EXPECT_EQ(s.total_allocations, w.allocations);
        }
        std::printf("summary pass (peak, leaks, stats), prefetch %s: %.2f s, %.1f M events/s, %zu peak rows\n",
                    prefetch ? "on " : "off", pass_s, static_cast<double>(w.events) / pass_s / 1e6, rows.size());
    }
    start = std::chrono::steady_clock::now();
    TemporaryResult t = temporary_allocations(*reader, 1, nullptr);
    const double temp_s = seconds_since(start);
    std::printf("temporary pass: %.2f s, %.1f M events/s, %zu rows\n", temp_s,
                static_cast<double>(w.events) / temp_s / 1e6, t.rows.size());
    start = std::chrono::steady_clock::now();
    uint64_t n = 0;
    std::string error;
    auto cursor = reader->start_pass(nullptr, true, &error);
    while (cursor->next() != nullptr) ++n;
    const double decode_s = seconds_since(start);
    std::printf("decode only: %.2f s, %.1f M records/s\n", decode_s, static_cast<double>(n) / decode_s / 1e6);
    if (!std::getenv("HEAPSCOPE_BENCH_KEEP")) std::remove(path.c_str());
}

}  // namespace
