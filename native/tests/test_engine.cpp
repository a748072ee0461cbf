#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "fork_child.h"
#include "engine/engine.h"
#include "engine/thread_state.h"

using namespace heapscope;

namespace {
// Fills the thread's cache with a stack given innermost first.
ThreadStackCache* with_stack(const std::vector<FrameKey>& innermost_first) {
    ThreadStackCache* cache = thread_stack_cache(64);
    for (size_t i = 0; i < innermost_first.size(); ++i) cache->fresh[i] = innermost_first[i];
    return cache;
}

std::vector<FrameKey> frames_of(uint32_t node) {
    std::vector<FrameKey> out;
    engine().frames_of(node, &out);
    return out;
}

class EngineTest : public ::testing::Test {
  protected:
    void SetUp() override { ASSERT_TRUE(engine().start(64)); }
    void TearDown() override {
        std::vector<FrameKey> unpin;
        engine().stop(&unpin);
    }
};
}  // namespace

TEST_F(EngineTest, CountsCurrentAndPeak) {
    std::vector<FrameKey> stack{{1, 1}};
    engine().record_alloc({.address = 0x100, .size = 100, .stacks = {with_stack(stack), 1, 1, true}});
    engine().record_alloc({.address = 0x200, .size = 50, .stacks = {with_stack(stack), 1, 1, true}});
    EXPECT_TRUE(engine().record_free(0, 0x100));
    engine().record_alloc({.address = 0x300, .size = 10, .stacks = {with_stack(stack), 1, 1, true}});
    uint64_t current, peak;
    engine().traced_memory(&current, &peak);
    EXPECT_EQ(current, 60u);
    EXPECT_EQ(peak, 150u);
    engine().reset_peak();
    engine().traced_memory(&current, &peak);
    EXPECT_EQ(peak, 60u);
    EXPECT_FALSE(engine().record_free(0, 0x999));  // never traced
}

TEST_F(EngineTest, StacksResolveThroughTheThreadCache) {
    // Same outer frames, innermost frame alternating: the memo path.
    std::vector<FrameKey> a{{3, 1}, {2, 2}, {1, 3}};
    std::vector<FrameKey> b{{3, 9}, {2, 2}, {1, 3}};
    for (uintptr_t round = 0; round < 3; ++round) {
        engine().record_alloc({.address = 0x1000 + round * 32, .size = 8, .stacks = {with_stack(a), 3, 3, true}});
        engine().record_alloc({.address = 0x1010 + round * 32, .size = 8, .stacks = {with_stack(b), 3, 3, true}});
    }
    BlockInfo first, second;
    ASSERT_TRUE(engine().find(0, 0x1000, &first));
    ASSERT_TRUE(engine().find(0, 0x1010, &second));
    EXPECT_EQ(frames_of(first.stack), a);
    EXPECT_EQ(frames_of(second.stack), b);
    for (int round = 1; round < 3; ++round) {
        BlockInfo again;
        ASSERT_TRUE(engine().find(0, 0x1000 + round * 32, &again));
        EXPECT_EQ(again.stack, first.stack);
    }
    EXPECT_EQ(engine().stack_node_count(), 5u);  // root, 1, 2, and the two innermost frames
}

TEST_F(EngineTest, DeeperAndShallowerStacks) {
    std::vector<FrameKey> outer{{1, 1}};
    std::vector<FrameKey> inner{{2, 5}, {1, 1}};
    engine().record_alloc({.address = 0x10, .size = 1, .stacks = {with_stack(outer), 1, 1, true}});
    engine().record_alloc({.address = 0x20, .size = 1, .stacks = {with_stack(inner), 2, 7, true}});
    engine().record_alloc({.address = 0x30, .size = 1, .stacks = {with_stack(outer), 1, 1, true}});
    BlockInfo info;
    ASSERT_TRUE(engine().find(0, 0x20, &info));
    EXPECT_EQ(frames_of(info.stack), inner);
    EXPECT_EQ(info.total_depth, 7u);
    ASSERT_TRUE(engine().find(0, 0x30, &info));
    EXPECT_EQ(frames_of(info.stack), outer);
}

TEST_F(EngineTest, WithoutPinningOnlyUnseenCodeIsUnknown) {
    std::vector<FrameKey> stack{{42, 1}};
    engine().record_alloc({.address = 0x10, .size = 1, .stacks = {with_stack(stack), 1, 1, false}});
    BlockInfo info;
    ASSERT_TRUE(engine().find(0, 0x10, &info));
    EXPECT_EQ(frames_of(info.stack), std::vector<FrameKey>{kUnknownFrame});
    // Once a thread that may pin has seen the code object, other positions in
    // it and other callers are exact without pinning again.
    engine().record_alloc({.address = 0x20, .size = 1, .stacks = {with_stack(stack), 1, 1, true}});
    std::vector<FrameKey> elsewhere{{42, 7}, {42, 1}};
    engine().record_alloc({.address = 0x30, .size = 1, .stacks = {with_stack(elsewhere), 2, 2, false}});
    ASSERT_TRUE(engine().find(0, 0x30, &info));
    EXPECT_EQ(frames_of(info.stack), elsewhere);
}

TEST_F(EngineTest, EachCodeObjectIsPinnedOnce) {
    int pins = 0;
    static int* counter = nullptr;
    counter = &pins;
    engine().set_frame_pinner([](FrameKey) { ++*counter; });
    std::vector<FrameKey> a{{5, 1}, {6, 1}};
    std::vector<FrameKey> b{{5, 2}, {6, 3}};
    engine().record_alloc({.address = 0x10, .size = 1, .stacks = {with_stack(a), 2, 2, true}});
    engine().record_alloc({.address = 0x20, .size = 1, .stacks = {with_stack(b), 2, 2, true}});
    EXPECT_EQ(pins, 2);  // code 5 and code 6, although four nodes refer to them
    std::vector<FrameKey> unpin;
    engine().clear(&unpin);
    EXPECT_EQ(unpin.size(), 2u);
    engine().set_frame_pinner(nullptr);
}

TEST_F(EngineTest, DomainsAreSeparate) {
    std::vector<FrameKey> stack{{1, 1}};
    engine().record_alloc({.address = 0x10, .size = 5, .stacks = {with_stack(stack), 1, 1, true}});
    engine().record_alloc({.domain = 7, .address = 0x10, .size = 6, .stacks = {with_stack(stack), 1, 1, true}});
    std::vector<TraceRecord> records;
    engine().collect(&records);
    ASSERT_EQ(records.size(), 2u);
    EXPECT_TRUE(engine().record_free(7, 0x10));
    EXPECT_FALSE(engine().record_free(7, 0x10));
    BlockInfo info;
    EXPECT_TRUE(engine().find(0, 0x10, &info));
    EXPECT_EQ(info.size, 5u);
}

TEST_F(EngineTest, RestampFilesABlockUnderTheNewStackOnly) {
    // An object reused from a free list: its block keeps size and counters
    // and takes the stack that reused it, pooled or not; unknown blocks stay unknown.
    std::vector<FrameKey> first{{1, 1}};
    std::vector<FrameKey> again{{2, 5}, {1, 7}};
    engine().record_alloc({.address = 0x4000, .size = 48, .pooled = true, .stacks = {with_stack(first), 1, 1, true}});
    engine().record_alloc({.address = 0x90000, .size = 5000, .stacks = {with_stack(first), 1, 1, true}});
    uint64_t current, peak;
    engine().traced_memory(&current, &peak);
    for (uintptr_t address : {uintptr_t{0x4000}, uintptr_t{0x90000}}) {
        engine().restamp(0, address, {with_stack(again), 2, 9, true});
        BlockInfo info;
        ASSERT_TRUE(engine().find(0, address, &info));
        EXPECT_EQ(frames_of(info.stack), again);
        EXPECT_EQ(info.total_depth, 9u);
    }
    engine().restamp(0, 0x5000, {with_stack(again), 2, 2, true});  // never recorded
    engine().restamp(3, 0x4000, {with_stack(again), 2, 2, true});  // another domain
    BlockInfo info;
    EXPECT_FALSE(engine().find(0, 0x5000, &info));
    EXPECT_FALSE(engine().find(3, 0x4000, &info));
    EXPECT_EQ(engine().trace_count(), 2u);
    uint64_t current2, peak2;
    engine().traced_memory(&current2, &peak2);
    EXPECT_EQ(current2, current);
    EXPECT_EQ(peak2, peak);
    EXPECT_TRUE(engine().record_free(0, 0x4000));
    EXPECT_TRUE(engine().record_free(0, 0x90000));
}

TEST_F(EngineTest, ClearForgetsTracesAndInvalidatesThreadCaches) {
    std::vector<FrameKey> stack{{2, 1}, {1, 1}};
    engine().record_alloc({.address = 0x10, .size = 5, .stacks = {with_stack(stack), 2, 2, true}});
    std::vector<FrameKey> unpin;
    engine().clear(&unpin);
    EXPECT_EQ(unpin.size(), 2u);  // every pinned code object is handed back once
    EXPECT_EQ(engine().trace_count(), 0u);
    engine().record_alloc({.address = 0x20, .size = 5, .stacks = {with_stack(stack), 2, 2, true}});
    BlockInfo info;
    ASSERT_TRUE(engine().find(0, 0x20, &info));
    EXPECT_EQ(frames_of(info.stack), stack);
}

TEST_F(EngineTest, ConcurrentThreadsKeepExactTotals) {
    constexpr int kThreads = 4;
    constexpr int kBlocks = 20000;
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([t] {
            std::vector<FrameKey> stack{{static_cast<uintptr_t>(t + 1), 1}, {99, 1}};
            for (int i = 0; i < kBlocks; ++i) {
                uintptr_t address = (static_cast<uintptr_t>(t) << 32) | (static_cast<uintptr_t>(i) << 4);
                engine().record_alloc({.address = address, .size = 3, .stacks = {with_stack(stack), 2, 2, true}});
                if (i % 2) engine().record_free(0, address);
            }
        });
    }
    for (auto& thread : threads) thread.join();
    uint64_t current, peak;
    engine().traced_memory(&current, &peak);
    EXPECT_EQ(current, uint64_t{kThreads} * (kBlocks / 2) * 3);
    EXPECT_EQ(engine().trace_count(), size_t{kThreads} * (kBlocks / 2));
    EXPECT_EQ(engine().stack_node_count(), 1u + 1u + kThreads);
}

TEST(EngineLifecycle, StartTwiceIsRefused) {
    ASSERT_TRUE(engine().start(5));
    EXPECT_FALSE(engine().start(7));
    EXPECT_EQ(engine().traceback_limit(), 5u);
    std::vector<FrameKey> unpin;
    engine().stop(&unpin);
    EXPECT_FALSE(engine().tracing());
    // Events after stop are ignored.
    std::vector<FrameKey> stack{{1, 1}};
    engine().record_alloc({.address = 0x10, .size = 5, .stacks = {with_stack(stack), 1, 1, true}});
    EXPECT_EQ(engine().trace_count(), 0u);
}

// Another thread holds the engine lock when this one forks. The atfork
// handlers make fork() wait for it, so the child starts with a free lock; a
// child that inherited it held would hang on its first event (alarm ends it).
TEST(EngineFork, ChildNeverInheritsAHeldLock) {
    ASSERT_TRUE(engine().start(8));
    std::atomic<bool> holding{false};
    std::thread holder([&] {
        engine().before_fork();  // takes the engine lock, as a hook in progress would
        holding = true;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        engine().after_fork_in_parent();
    });
    while (!holding) std::this_thread::yield();
    pid_t pid = fork();
    if (pid == 0) {
        alarm(5);
        std::vector<FrameKey> stack{{1, 1}};
        engine().record_alloc({.address = 0x10, .size = 5, .stacks = {with_stack(stack), 1, 1, true}});
        end_child(engine().trace_count() == 1 ? 0 : 1);
    }
    holder.join();
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status)) << "the child hung on the engine lock (signal " << WTERMSIG(status) << ")";
    EXPECT_EQ(WEXITSTATUS(status), 0);
    std::vector<FrameKey> unpin;
    engine().stop(&unpin);
}
