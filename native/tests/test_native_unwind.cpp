// capture_native_stack through a chain of noinline functions, checked with
// the Symbolizer (function, file, line); and a timing comparison of the
// unwinding methods that prints ns per capture (no timing assertions).
#include "stack/native_unwind.h"

#define UNW_LOCAL_ONLY
#include <gtest/gtest.h>

#include <algorithm>
#include <libunwind.h>
#include <unwind.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "read/symbolizer.h"
#include "common/loaded_object.h"

using heapscope::read::NativeFrame;
using heapscope::read::Symbolizer;

namespace unwind_chain {

struct Capture {
    uintptr_t ips[64];
    size_t depth = 0;
    size_t skip = 0;
};

// The line of each call, recorded by the statement on the same line.
int capture_line = 0;
int level_three_call_line = 0;
int level_two_call_line = 0;

__attribute__((noinline)) void level_three(Capture& capture) {
    asm volatile("" ::: "memory");
    capture.depth = heapscope::capture_native_stack(capture.ips, 64, capture.skip); capture_line = __LINE__;
    asm volatile("" ::: "memory");  // no tail call
}
__attribute__((noinline)) void level_two(Capture& capture) {
    asm volatile("" ::: "memory");
    level_three(capture); level_three_call_line = __LINE__;
    asm volatile("" ::: "memory");
}
__attribute__((noinline)) void level_one(Capture& capture) {
    asm volatile("" ::: "memory");
    level_two(capture); level_two_call_line = __LINE__;
    asm volatile("" ::: "memory");
}

}  // namespace unwind_chain

namespace {

std::string basename_of(const std::string& path) { return std::filesystem::path(path).filename().string(); }

// Loaded once, before any test runs, as capture_start() does.
const bool kUnwinderLoaded = heapscope::load_native_unwinder();

TEST(NativeUnwind, TheUnwinderLoads) { EXPECT_TRUE(kUnwinderLoaded); }

TEST(NativeUnwind, ChainOfCallsInOrderWithLines) {
    unwind_chain::Capture capture;
    unwind_chain::level_one(capture);
    ASSERT_GE(capture.depth, 4u);  // the three levels and this test
    Symbolizer symbolizer;
    symbolizer.set_objects(0, heapscope::current_loaded_objects());
    struct Expected {
        const char* function;
        int line;
    };
    const Expected expected[] = {{"unwind_chain::level_three", unwind_chain::capture_line},
                                 {"unwind_chain::level_two", unwind_chain::level_three_call_line},
                                 {"unwind_chain::level_one", unwind_chain::level_two_call_line}};
    for (size_t i = 0; i < 3; ++i) {
        std::vector<NativeFrame> frames = symbolizer.symbolize(capture.ips[i], 0);
        ASSERT_EQ(frames.size(), 1u) << i;
        EXPECT_EQ(frames[0].function.rfind(expected[i].function, 0), 0u) << i << ": " << frames[0].function;
        EXPECT_EQ(basename_of(frames[0].file), "test_native_unwind.cpp") << i;
        EXPECT_EQ(frames[0].line, expected[i].line) << i;
    }
    // Frame 3 is this test's body.
    std::vector<NativeFrame> caller = symbolizer.symbolize(capture.ips[3], 0);
    EXPECT_NE(caller.back().function.find("ChainOfCallsInOrderWithLines"), std::string::npos) << caller.back().function << " " << caller.back().file << ":" << caller.back().line;
}

TEST(NativeUnwind, SkipDropsInnermostFrames) {
    unwind_chain::Capture full;
    unwind_chain::level_one(full);
    unwind_chain::Capture skipped;
    skipped.skip = 2;
    unwind_chain::level_one(skipped);
    ASSERT_EQ(skipped.depth + 2, full.depth);
    // The outer frames are the same call sites (this test calls level_one
    // from two places, so compare from level_one outwards... up to the test).
    EXPECT_EQ(skipped.ips[0], full.ips[2]);
    for (size_t i = 2; i < skipped.depth; ++i) EXPECT_EQ(skipped.ips[i], full.ips[i + 2]) << i;
}

TEST(NativeUnwind, MaxBoundsTheDepth) {
    uintptr_t ips[3] = {0, 0, 0};
    EXPECT_EQ(heapscope::capture_native_stack(ips, 2, 0), 2u);
    EXPECT_EQ(ips[2], 0u);
    EXPECT_EQ(heapscope::capture_native_stack(ips, 0, 0), 0u);
    EXPECT_EQ(heapscope::capture_native_stack(ips, 3, 100000), 0u);
}

TEST(NativeUnwind, OtherThreadsHaveTheirOwnStacks) {
#if defined(__SANITIZE_THREAD__)
    // libunwind frees a thread's cache in a thread-specific-data destructor
    // that locks a mutex after TSan has torn the thread's state down, and
    // TSan crashes there (google/sanitizers#943, open). The plain and ASan
    // builds run this test.
    GTEST_SKIP() << "libunwind's per-thread cache crashes ThreadSanitizer at thread exit (google/sanitizers#943)";
#endif
    // Each thread gets libunwind's per-thread cache on first use.
    unwind_chain::Capture captures[4];
    std::vector<std::thread> threads;
    for (unwind_chain::Capture& capture : captures) threads.emplace_back([&capture] { unwind_chain::level_one(capture); });
    for (std::thread& thread : threads) thread.join();
    Symbolizer symbolizer;
    symbolizer.set_objects(0, heapscope::current_loaded_objects());
    for (const unwind_chain::Capture& capture : captures) {
        ASSERT_GE(capture.depth, 4u);
        EXPECT_EQ(symbolizer.symbolize(capture.ips[0], 0)[0].function.rfind("unwind_chain::level_three", 0), 0u);
        EXPECT_EQ(symbolizer.symbolize(capture.ips[2], 0)[0].function.rfind("unwind_chain::level_one", 0), 0u);
        // The test body is not on these stacks. (What called level_one
        // depends on optimisation: the thread's lambda, or, after a tail
        // call, libstdc++'s thread routine.)
        for (size_t i = 3; i < capture.depth; ++i) {
            std::string function = symbolizer.symbolize(capture.ips[i], 0).back().function;
            EXPECT_FALSE(function.ends_with("::TestBody()")) << function;
        }
    }
}

__attribute__((noinline)) size_t capture_at_depth(int levels, uintptr_t* ips, size_t max) {
    if (levels > 0) {
        size_t depth = capture_at_depth(levels - 1, ips, max);
        asm volatile("" ::: "memory");
        return depth;
    }
    return heapscope::capture_native_stack(ips, max, 0);
}

TEST(NativeUnwind, DeepStacksAreCutAtTheWalkLimit) {
    std::vector<uintptr_t> ips(1000, 0);
    size_t depth = capture_at_depth(400, ips.data(), ips.size());
    EXPECT_EQ(depth, 255u);  // 256 walked, less capture_native_stack's own frame
    EXPECT_EQ(ips[depth], 0u);
    // The innermost frames are the recursion's.
    Symbolizer symbolizer;
    symbolizer.set_objects(0, heapscope::current_loaded_objects());
    EXPECT_NE(symbolizer.symbolize(ips[0], 0)[0].function.find("capture_at_depth"), std::string::npos);
    EXPECT_NE(symbolizer.symbolize(ips[254], 0)[0].function.find("capture_at_depth"), std::string::npos);
    // A skip too large for the limit leaves nothing.
    EXPECT_EQ(capture_at_depth(0, ips.data(), ips.size()) > 0, true);
    EXPECT_EQ(heapscope::capture_native_stack(ips.data(), 10, 255), 0u);
    EXPECT_EQ(heapscope::capture_native_stack(ips.data(), 10, SIZE_MAX), 0u);
}

// Timing --------------------------------------------------------------------

using Method = size_t (*)(uintptr_t* ips, size_t max);

size_t with_heapscope(uintptr_t* ips, size_t max) { return heapscope::capture_native_stack(ips, max, 0); }

size_t with_unw_backtrace(uintptr_t* ips, size_t max) {
    return static_cast<size_t>(unw_backtrace(reinterpret_cast<void**>(ips), static_cast<int>(max)));
}

size_t with_unw_step(uintptr_t* ips, size_t max) {
    unw_context_t context;
    unw_cursor_t cursor;
    unw_getcontext(&context);
    unw_init_local(&cursor, &context);
    size_t depth = 0;
    while (depth < max && unw_step(&cursor) > 0) {
        unw_word_t ip;
        unw_get_reg(&cursor, UNW_REG_IP, &ip);
        ips[depth++] = ip;
    }
    return depth;
}

struct UnwindState {
    uintptr_t* ips;
    size_t max;
    size_t depth;
};

_Unwind_Reason_Code unwind_one(struct _Unwind_Context* context, void* data) {
    auto* state = static_cast<UnwindState*>(data);
    if (state->depth >= state->max) return _URC_END_OF_STACK;
    state->ips[state->depth++] = _Unwind_GetIP(context);
    return _URC_NO_REASON;
}

size_t with_unwind_backtrace(uintptr_t* ips, size_t max) {
    UnwindState state{ips, max, 0};
    _Unwind_Backtrace(unwind_one, &state);
    return state.depth;
}

// Recurses `levels` times, then captures `iterations` times at the bottom.
__attribute__((noinline)) size_t recurse_then_capture(int levels, Method method, int iterations, double* ns_per) {
    if (levels > 0) {
        size_t depth = recurse_then_capture(levels - 1, method, iterations, ns_per);
        asm volatile("" ::: "memory");
        return depth;
    }
    uintptr_t ips[128];
    size_t depth = method(ips, 128);  // warm the caches
    auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < iterations; ++i) {
        depth = method(ips, 128);
        asm volatile("" : : "r"(ips) : "memory");
    }
    auto elapsed = std::chrono::steady_clock::now() - start;
    *ns_per = static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed).count()) / iterations;
    return depth;
}

TEST(NativeUnwind, TimingOfMethods) {
    struct Row {
        const char* name;
        Method method;
        unw_caching_policy_t policy;
    };
    const Row rows[] = {{"capture_native_stack (unw_backtrace, per-thread cache)", with_heapscope, UNW_CACHE_PER_THREAD},
                        {"unw_backtrace, no cache", with_unw_backtrace, UNW_CACHE_NONE},
                        {"unw_backtrace, global cache", with_unw_backtrace, UNW_CACHE_GLOBAL},
                        {"unw_init_local + unw_step, per-thread cache", with_unw_step, UNW_CACHE_PER_THREAD},
                        {"_Unwind_Backtrace", with_unwind_backtrace, UNW_CACHE_PER_THREAD}};
    const int iterations = 2000;
    for (int depth_wanted : {10, 50}) {
        // The gtest runner and main sit under the recursion: measure them.
        size_t base = 0;
        double unused;
        {
            unw_set_caching_policy(unw_local_addr_space, UNW_CACHE_PER_THREAD);
            base = recurse_then_capture(0, with_heapscope, 1, &unused);
        }
        int levels = depth_wanted > static_cast<int>(base) ? depth_wanted - static_cast<int>(base) : 0;
        for (const Row& row : rows) {
            unw_set_caching_policy(unw_local_addr_space, row.policy);
            double ns_per = 0;
            size_t depth = recurse_then_capture(levels, row.method, iterations, &ns_per);
            // Every method walks the whole stack (give or take its own frame).
            EXPECT_GE(depth + 2, base + levels) << row.name;
            std::printf("  depth %3zu  %8.0f ns/capture  %s\n", depth, ns_per, row.name);
        }
    }
    unw_set_caching_policy(unw_local_addr_space, UNW_CACHE_PER_THREAD);
}

}  // namespace
