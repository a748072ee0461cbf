// What the journal costs: the capture writer fed the same events with and
// without it (CaptureOptions::journal), into a real file in $TMPDIR (or
// /tmp). Disabled by default; run it on a Release build:
//
//   HEAPSCOPE_BENCH_EVENTS=20000000 build/unit/heapscope_unit_tests
//       --gtest_also_run_disabled_tests --gtest_filter='*WriterBench*'
//
// The events are an allocation loop as a Python program traced with its
// allocators makes them: small blocks from a few hundred stacks, most freed
// soon (LIFO, addresses reused), under one lock as the engine holds it
// (CaptureOptions::hook_lock). Printed per mode, best of 3 runs: ns per
// event on the hooks' side (the time the program sees), the time finish()
// takes (writing what is left), and the file's size.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "common/spin_lock.h"
#include "sink/capture_writer.h"

namespace {

using namespace heapscope;
using Clock = std::chrono::steady_clock;

uint64_t bench_env(const char* name, uint64_t fallback) {
    const char* value = std::getenv(name);
    return value ? std::strtoull(value, nullptr, 10) : fallback;
}

bool describe(uintptr_t code, std::string* function, std::string* filename, int* first_lineno) {
    *function = "function_" + std::to_string(code);
    *filename = "/src/module_" + std::to_string(code % 13) + ".py";
    *first_lineno = 1;
    return true;
}

struct Result {
    double hook_ns = 0;   // per event, as the program sees it
    double finish_ms = 0;
    uint64_t bytes = 0;
};

Result run_once(bool journal, uint64_t events) {
    const char* dir = std::getenv("TMPDIR");
    std::string path = std::string(dir && *dir ? dir : "/tmp") + "/heapscope-writer-bench-XXXXXX";
    const int fd = ::mkstemp(path.data());
    EXPECT_GE(fd, 0);
    SpinLock lock;
    CaptureOptions o;
    o.fd = fd;
    o.journal = journal;
    o.memory_interval_ms = 10;
    o.describer.describe_code = &describe;
    o.hook_lock = &lock;
    std::string error;
    std::unique_ptr<CaptureWriter> writer = CaptureWriter::open(o, &error);
    EXPECT_TRUE(writer) << error;

    std::mt19937_64 rng(7);
    std::vector<uint64_t> live;
    live.reserve(4096);
    uint32_t nodes = 0;
    {
        SpinGuard guard(lock);
        writer->on_thread(1, 1234, nullptr);
        for (; nodes < 300; ++nodes) writer->on_python_node(nodes + 1, nodes / 4, FrameKey{0x1000 + nodes % 50 * 64, nodes});
    }
    // A loop body: three blocks of a few sizes at a few lines, two freed at
    // once (LIFO, so pymalloc hands their addresses back), one kept a while;
    // now and then another line. Compresses about as a real loop does.
    static constexpr uint64_t kSizes[] = {32, 48, 64, 80, 112, 200, 496, 24};
    uint64_t next_address = 0x7f0000000000;
    std::vector<uint64_t> free_addresses;
    auto alloc = [&](uint64_t size, uint32_t node) {
        uint64_t address;
        if (!free_addresses.empty()) {
            address = free_addresses.back();
            free_addresses.pop_back();
        } else {
            address = (next_address += 64);
        }
        AllocationEvent e{};
        e.thread = 1;
        e.address = address;
        e.size = size;
        e.allocator = Allocator::kPymallocMalloc;
        e.python_node = node;
        e.count = 1;
        writer->on_alloc(e);
        return address;
    };
    auto release = [&](uint64_t address) {
        DeallocationEvent e{};
        e.thread = 1;
        e.address = address;
        e.allocator = Allocator::kPymallocFree;
        e.count = 1;
        writer->on_free(e);
        free_addresses.push_back(address);
    };
    const auto start = Clock::now();
    for (uint64_t i = 0; i < events; i += 5) {
        SpinGuard guard(lock);  // the engine's lock (held per event in the engine; per body here)
        const uint64_t dice = rng();
        const uint32_t line = 1 + static_cast<uint32_t>(i / 5 % 7 + ((dice & 0xff) == 0 ? (dice >> 8) % 290 : 0));
        const uint64_t a = alloc(kSizes[i / 5 % 8], line);
        const uint64_t b = alloc(kSizes[(i / 5 + 3) % 8], line + 1);
        live.push_back(alloc(kSizes[(i / 5 + 5) % 8], line + 2));
        release(b);
        release(a);
        if (live.size() > 2000) {
            for (uint64_t address : live) release(address);
            live.clear();
        }
    }
    const auto fed = Clock::now();
    EXPECT_TRUE(writer->finish({}, &error)) << error;
    const auto done = Clock::now();
    Result r;
    r.hook_ns = std::chrono::duration<double, std::nano>(fed - start).count() / static_cast<double>(events);
    r.finish_ms = std::chrono::duration<double, std::milli>(done - fed).count();
    r.bytes = writer->totals().bytes_written;
    ::unlink(path.c_str());
    return r;
}

TEST(WriterBench, DISABLED_JournalAgainstBufferedWriter) {
    const uint64_t events = bench_env("HEAPSCOPE_BENCH_EVENTS", 20'000'000);
    // HEAPSCOPE_BENCH_MODE=journal or buffered: only that one (for perf).
    const char* only = std::getenv("HEAPSCOPE_BENCH_MODE");
    const uint64_t repeats = bench_env("HEAPSCOPE_BENCH_RUNS", 3);
    for (bool journal : {false, true, false, true}) {
        if (only && std::string(only) != (journal ? "journal" : "buffered")) continue;
        std::vector<Result> runs;
        for (uint64_t i = 0; i < repeats; ++i) runs.push_back(run_once(journal, events));
        const Result best = *std::min_element(runs.begin(), runs.end(),
                                              [](const Result& a, const Result& b) { return a.hook_ns < b.hook_ns; });
        std::printf("%-9s %llu events: %.2f ns/event at the hooks (runs:", journal ? "journal" : "buffered",
                    static_cast<unsigned long long>(events), best.hook_ns);
        for (const Result& r : runs) std::printf(" %.2f", r.hook_ns);
        std::printf("), finish %.1f ms, file %llu bytes\n", best.finish_ms, static_cast<unsigned long long>(best.bytes));
    }
}

}  // namespace
