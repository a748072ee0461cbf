// The engine's side of a capture: what a CaptureSink is told, and in what order.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <thread>
#include <vector>

#include "fork_child.h"
#include "engine/engine.h"
#include "engine/labels.h"
#include "engine/thread_state.h"

using namespace heapscope;

namespace {

// Records every call as a line of text, and keeps size + 1000 as the block's
// state so that frees can be checked against it.
class RecordingSink : public CaptureSink {
  public:
    std::vector<std::string> log;
    void on_thread(uint32_t thread, uint64_t, const std::string* name) override {
        log.push_back("thread " + std::to_string(thread) + (name ? " named " + *name : ""));
    }
    void on_python_node(uint32_t node, uint32_t parent, FrameKey frame) override {
        log.push_back("py " + std::to_string(node) + "<-" + std::to_string(parent) + " code " +
                      std::to_string(frame.code));
    }
    void on_native_node(uint32_t node, uint32_t parent, uintptr_t ip) override {
        log.push_back("native " + std::to_string(node) + "<-" + std::to_string(parent) + " ip " + std::to_string(ip));
    }
    bool keeps_block_state() const override { return true; }
    uint32_t on_alloc(const AllocationEvent& e) override {
        log.push_back("alloc " + std::to_string(e.address) + " " + std::to_string(e.size) + " py " +
                      std::to_string(e.python_node) + " native " + std::to_string(e.native_node) + " kind " +
                      std::to_string(static_cast<int>(e.allocator)));
        return static_cast<uint32_t>(e.size) + 1000;
    }
    void on_free(const DeallocationEvent& e) override {
        log.push_back("free " + std::to_string(e.address) + " " + std::to_string(e.size) + " kept " +
                      std::to_string(e.block.sink_state) + " kind " + std::to_string(static_cast<int>(e.allocator)));
    }
    void on_mappings_changed() override { log.push_back("mappings"); }
};

ThreadStackCache* with_stack(const std::vector<FrameKey>& innermost_first) {
    ThreadStackCache* cache = thread_stack_cache(64);
    for (size_t i = 0; i < innermost_first.size(); ++i) cache->fresh[i] = innermost_first[i];
    return cache;
}

class CaptureTest : public ::testing::Test {
  protected:
    RecordingSink sink;
    void SetUp() override { ASSERT_TRUE(engine().start(64, &sink, true)); }
    void TearDown() override {
        std::vector<FrameKey> unpin;
        engine().stop(&unpin);
    }
    static uint32_t my_thread() { return t_hook_state.thread_id; }
};

}  // namespace

TEST_F(CaptureTest, AnnouncesThreadAndNodesBeforeTheirFirstUse) {
    std::vector<FrameKey> stack{{20, 2}, {10, 1}};  // innermost first
    uintptr_t ips[] = {0xB, 0xA};                   // innermost first
    engine().record_alloc({.address = 0x100, .size = 64, .allocator = Allocator::kCalloc,
                           .stacks = {with_stack(stack), 2, 2, true, ips, 2}});
    engine().record_alloc({.address = 0x200, .size = 32, .stacks = {with_stack(stack), 2, 2, true, ips, 2}});
    std::string t = std::to_string(my_thread());
    std::vector<std::string> expected{
        "py 1<-0 code 10",
        "py 2<-1 code 20",
        "thread " + t,
        "native 1<-0 ip 10",
        "native 2<-1 ip 11",
        "alloc 256 64 py 2 native 2 kind 3",
        "alloc 512 32 py 2 native 2 kind 1",  // nothing new to announce
    };
    EXPECT_EQ(sink.log, expected);
}

// Labels (engine/labels.h): the thread's labels are the root its stacks
// hang from while capturing, outer first; a stack interned once under them
// is not interned again, and popping returns to the unlabelled root.
TEST_F(CaptureTest, LabelsRootTheThreadsStacks) {
    const uint32_t outer = intern_label("outer", 5), inner = intern_label("inner", 5);
    ASSERT_NE(outer, 0u);
    ASSERT_NE(inner, outer);
    EXPECT_EQ(intern_label("outer", 5), outer);
    std::string name;
    ASSERT_TRUE(label_name(inner, &name));
    EXPECT_EQ(name, "inner");
    EXPECT_FALSE(label_name(0, &name));
    EXPECT_EQ(intern_label("", 0), 0u);

    // The frames of the stack node the sink was given for the block at `address`.
    auto frames_of = [this](uint32_t address) {
        const std::string prefix = "alloc " + std::to_string(address) + " ";
        auto line = std::find_if(sink.log.begin(), sink.log.end(),
                                 [&](const std::string& entry) { return entry.rfind(prefix, 0) == 0; });
        std::vector<FrameKey> frames;
        EXPECT_NE(line, sink.log.end());
        if (line == sink.log.end()) return frames;
        const uint32_t node = static_cast<uint32_t>(std::stoul(line->substr(line->find(" py ") + 4)));
        engine().frames_of(node, &frames);
        return frames;
    };
    const std::vector<FrameKey> stack{{20, 2}, {10, 1}};  // innermost first
    ASSERT_TRUE(push_label("outer", 5));
    ASSERT_TRUE(push_label("inner", 5));
    EXPECT_EQ(label_depth(), 2u);
    engine().record_alloc({.address = 0x100, .size = 64, .stacks = {with_stack(stack), 2, 2, true}});
    const size_t nodes = engine().stack_node_count();
    engine().record_alloc({.address = 0x200, .size = 64, .stacks = {with_stack(stack), 2, 2, true}});
    EXPECT_EQ(engine().stack_node_count(), nodes);  // the same stack: nothing interned
    // No Python frame: the labels alone.
    engine().record_alloc({.address = 0x300, .size = 8, .stacks = {.can_pin = true}});
    ASSERT_TRUE(pop_label());
    engine().record_alloc({.address = 0x400, .size = 64, .stacks = {with_stack(stack), 2, 2, true}});
    ASSERT_TRUE(pop_label());
    EXPECT_FALSE(pop_label());
    engine().record_alloc({.address = 0x500, .size = 64, .stacks = {with_stack(stack), 2, 2, true}});

    const FrameKey outer_frame{kLabelCode, outer}, inner_frame{kLabelCode, inner};
    EXPECT_EQ(frames_of(0x100), (std::vector<FrameKey>{{20, 2}, {10, 1}, inner_frame, outer_frame}));
    EXPECT_EQ(frames_of(0x200), frames_of(0x100));
    EXPECT_EQ(frames_of(0x300), (std::vector<FrameKey>{inner_frame, outer_frame}));
    EXPECT_EQ(frames_of(0x400), (std::vector<FrameKey>{{20, 2}, {10, 1}, outer_frame}));
    EXPECT_EQ(frames_of(0x500), stack);
    // The sink heard of each label frame once, before its first use, as a stack node.
    EXPECT_EQ(std::count(sink.log.begin(), sink.log.end(), "py 1<-0 code 1"), 1);
    EXPECT_EQ(std::count(sink.log.begin(), sink.log.end(), "py 2<-1 code 1"), 1);
}

// Without a capture (the tracemalloc door), labels change nothing.
TEST(Labels, IgnoredWithoutACapture) {
    ASSERT_TRUE(engine().start(64));
    ASSERT_TRUE(push_label("ignored", 7));
    engine().record_alloc({.address = 0x100, .size = 64, .stacks = {with_stack({{20, 2}}), 1, 1, true}});
    ASSERT_TRUE(pop_label());
    BlockInfo info;
    ASSERT_TRUE(engine().find(0, 0x100, &info));
    std::vector<FrameKey> frames;
    engine().frames_of(info.stack, &frames);
    EXPECT_EQ(frames, (std::vector<FrameKey>{{20, 2}}));
    std::vector<FrameKey> unpin;
    engine().stop(&unpin);
}

TEST_F(CaptureTest, FreeHandsBackWhatTheSinkKept) {
    engine().record_alloc({.address = 0x100, .size = 64, .stacks = {with_stack({{1, 1}}), 1, 1, true}});
    sink.log.clear();
    EXPECT_TRUE(engine().record_free(0, 0x100, nullptr, Allocator::kPymallocFree));
    EXPECT_FALSE(engine().record_free(0, 0x100));  // already gone: no event
    ASSERT_EQ(sink.log.size(), 1u);
    EXPECT_EQ(sink.log[0], "free 256 64 kept 1064 kind 15");
}

TEST_F(CaptureTest, AnAddressReusedWithoutASeenFreeIsFreedFirst) {
    engine().record_alloc({.address = 0x100, .size = 64, .stacks = {with_stack({{1, 1}}), 1, 1, true}});
    sink.log.clear();
    engine().record_alloc({.address = 0x100, .size = 16, .stacks = {with_stack({{1, 1}}), 1, 1, true}});
    ASSERT_EQ(sink.log.size(), 2u);
    EXPECT_EQ(sink.log[0], "free 256 64 kept 1064 kind 2");
    EXPECT_EQ(sink.log[1], "alloc 256 16 py 1 native 0 kind 1");
    uint64_t current, peak;
    engine().traced_memory(&current, &peak);
    EXPECT_EQ(current, 16u);
}

// The capture writer's own kind of sink (the full-event format) keeps no
// state per block: the engine then learns of a stale record from the insert
// itself (BlockTable::replace), in whichever store it was kept.
class StatelessSink : public RecordingSink {
  public:
    bool keeps_block_state() const override { return false; }
};

TEST(StatelessCapture, AnAddressReusedWithoutASeenFreeIsFreedFirstFromEitherStore) {
    StatelessSink sink;
    ASSERT_TRUE(engine().start(64, &sink));
    const uintptr_t address = 0x7f0000010040;
    // Kept by hash (a raw block), then reused by pymalloc with no free seen.
    engine().record_alloc({.address = address, .size = 48, .stacks = {with_stack({{1, 1}}), 1, 1, true}});
    engine().record_alloc({.address = address, .size = 32, .allocator = Allocator::kPymallocMalloc, .pooled = true,
                           .stacks = {with_stack({{1, 1}}), 1, 1, true}});
    // Kept by position, then reused again by pymalloc with no free seen.
    engine().record_alloc({.address = address, .size = 32, .allocator = Allocator::kPymallocMalloc, .pooled = true,
                           .stacks = {with_stack({{1, 1}}), 1, 1, true}});
    const std::string at = std::to_string(address);
    ASSERT_EQ(sink.log.size(), 7u);  // node, thread, alloc, then free + alloc twice
    EXPECT_EQ(sink.log[2], "alloc " + at + " 48 py 1 native 0 kind 1");
    EXPECT_EQ(sink.log[3].substr(0, sink.log[3].find(" kept")), "free " + at + " 48");
    EXPECT_EQ(sink.log[4], "alloc " + at + " 32 py 1 native 0 kind 12");
    EXPECT_EQ(sink.log[5].substr(0, sink.log[5].find(" kept")), "free " + at + " 32");
    EXPECT_EQ(sink.log[6], "alloc " + at + " 32 py 1 native 0 kind 12");
    uint64_t current, peak;
    engine().traced_memory(&current, &peak);
    EXPECT_EQ(current, 32u);
    EXPECT_EQ(engine().trace_count(), 1u);  // one record left, in one store
    sink.log.clear();
    EXPECT_TRUE(engine().record_free(0, address, nullptr, Allocator::kPymallocFree));
    EXPECT_FALSE(engine().record_free(0, address));  // nothing lingers in the other store
    EXPECT_EQ(sink.log.size(), 1u);
    engine().traced_memory(&current, &peak);
    EXPECT_EQ(current, 0u);
    std::vector<FrameKey> unpin;
    engine().stop(&unpin);
}

// How a stale block is found differs between the two kinds of sink, and so
// does where its free falls among the new block's events: a sink that keeps
// per-block state hears it before anything of the new block; one that keeps
// none, after the new block's native frames are interned (the insert that
// reports it comes last). Both as before record_alloc took one path.
TEST_F(CaptureTest, TheStaleFreeComesBeforeTheNewBlocksNativeFrames) {
    uintptr_t first[] = {0xA}, second[] = {0xB};
    engine().record_alloc({.address = 0x100, .size = 64, .stacks = {with_stack({{1, 1}}), 1, 1, true, first, 1}});
    sink.log.clear();
    engine().record_alloc({.address = 0x100, .size = 16, .stacks = {with_stack({{1, 1}}), 1, 1, true, second, 1}});
    EXPECT_EQ(sink.log, (std::vector<std::string>{"free 256 64 kept 1064 kind 2", "native 2<-0 ip 11",
                                                  "alloc 256 16 py 1 native 2 kind 1"}));
}

TEST(StatelessCapture, TheStaleFreeComesAfterTheNewBlocksNativeFrames) {
    StatelessSink sink;
    ASSERT_TRUE(engine().start(64, &sink, true));
    uintptr_t first[] = {0xA}, second[] = {0xB};
    engine().record_alloc({.address = 0x100, .size = 64, .stacks = {with_stack({{1, 1}}), 1, 1, true, first, 1}});
    sink.log.clear();
    engine().record_alloc({.address = 0x100, .size = 16, .stacks = {with_stack({{1, 1}}), 1, 1, true, second, 1}});
    EXPECT_EQ(sink.log, (std::vector<std::string>{"native 2<-0 ip 11", "free 256 64 kept 1 kind 2",
                                                  "alloc 256 16 py 1 native 2 kind 1"}));
    std::vector<FrameKey> unpin;
    engine().stop(&unpin);
}

TEST_F(CaptureTest, PartialMunmapKeepsTheRest) {
    engine().record_alloc({.address = 0x10000, .size = 3 * 4096, .allocator = Allocator::kMmap,
                           .stacks = {with_stack({{1, 1}}), 1, 1, true}});
    sink.log.clear();
    EXPECT_TRUE(engine().record_munmap(0x10000, 4096));
    EXPECT_EQ(sink.log.back(), "free 65536 4096 kept " + std::to_string(3 * 4096 + 1000) + " kind 11");
    uint64_t current, peak;
    engine().traced_memory(&current, &peak);
    EXPECT_EQ(current, 2u * 4096);
    EXPECT_FALSE(engine().record_munmap(0x10000, 4096));  // no longer a recorded start
    EXPECT_TRUE(engine().record_munmap(0x10000 + 4096, 2 * 4096));
    engine().traced_memory(&current, &peak);
    EXPECT_EQ(current, 0u);
}

TEST_F(CaptureTest, RestoreIsSkippedWhileCapturing) {
    engine().record_alloc({.address = 0x100, .size = 64, .stacks = {with_stack({{1, 1}}), 1, 1, true}});
    BlockInfo info;
    ASSERT_TRUE(engine().record_free(0, 0x100, &info));
    engine().restore(0, 0x100, info);  // a failed realloc: the capture already saw the free
    EXPECT_FALSE(engine().find(0, 0x100, &info));
}

TEST_F(CaptureTest, EachThreadIsAnnouncedOncePerCapture) {
    std::thread other(
        [] { engine().record_alloc({.address = 0x300, .size = 8, .stacks = {with_stack({{1, 1}}), 1, 1, true}}); });
    other.join();
    engine().record_alloc({.address = 0x400, .size = 8, .stacks = {with_stack({{1, 1}}), 1, 1, true}});
    engine().record_alloc({.address = 0x500, .size = 8, .stacks = {with_stack({{1, 1}}), 1, 1, true}});
    int threads = 0;
    for (const std::string& line : sink.log) threads += line.rfind("thread ", 0) == 0;
    EXPECT_EQ(threads, 2);
}

TEST_F(CaptureTest, MappingChangesReachTheSink) {
    engine().notify_mappings_changed();
    EXPECT_EQ(sink.log.back(), "mappings");
}

TEST_F(CaptureTest, AForkedChildSendsNothingToTheParentsSink) {
    pid_t pid = fork();
    if (pid == 0) {
        size_t before = sink.log.size();
        engine().record_alloc({.address = 0x600, .size = 8, .stacks = {with_stack({{5, 1}}), 1, 1, true}});
        BlockInfo info;
        // Detached: nothing is recorded (no sink would hear of its stack nodes).
        if (sink.log.size() != before || engine().capturing() || engine().find(0, 0x600, &info)) end_child(1);
        // The child's own sink then hears of everything it is given, threads and nodes first.
        RecordingSink child_sink;
        engine().replace_sink(&child_sink);
        engine().record_alloc({.address = 0x700, .size = 8, .stacks = {with_stack({{5, 1}}), 1, 1, true}});
        bool announced = child_sink.log.size() == 3 && child_sink.log[0] == "py 1<-0 code 5" &&
                         child_sink.log[1].rfind("thread ", 0) == 0;
        end_child(announced ? 0 : 2);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0);
    EXPECT_TRUE(engine().capturing());
}

TEST_F(CaptureTest, NativeStacksShareTheirOuterFrames) {
    uintptr_t a[] = {0xC, 0xB, 0xA};  // innermost first
    uintptr_t b[] = {0xD, 0xB, 0xA};
    uintptr_t c[] = {0xE, 0xD, 0xB, 0xA};
    ThreadStackCache* cache = with_stack({{1, 1}});
    engine().record_alloc({.address = 0x100, .size = 8, .stacks = {cache, 1, 1, true, a, 3}});
    engine().record_alloc({.address = 0x200, .size = 8, .stacks = {cache, 1, 1, true, b, 3}});
    engine().record_alloc({.address = 0x300, .size = 8, .stacks = {cache, 1, 1, true, a, 3}});
    engine().record_alloc({.address = 0x400, .size = 8, .stacks = {cache, 1, 1, true, c, 4}});
    std::vector<std::string> native, allocs;
    for (const std::string& line : sink.log) {
        if (line.rfind("native ", 0) == 0) native.push_back(line);
        if (line.rfind("alloc ", 0) == 0) allocs.push_back(line.substr(line.find(" native ")));
    }
    std::vector<std::string> expected_nodes{"native 1<-0 ip 10", "native 2<-1 ip 11", "native 3<-2 ip 12",
                                            "native 4<-2 ip 13", "native 5<-4 ip 14"};
    EXPECT_EQ(native, expected_nodes);
    std::vector<std::string> expected_allocs{" native 3 kind 1", " native 4 kind 1", " native 3 kind 1",
                                             " native 5 kind 1"};
    EXPECT_EQ(allocs, expected_allocs);
}

TEST_F(CaptureTest, AThreadWithoutTheGilStillNamesItsFrames) {
    // The tracemalloc door records such a frame as unknown (it cannot pin the
    // code); a capture describes it at once, while the frame keeps it alive.
    engine().record_alloc({.address = 0x100, .size = 8, .stacks = {with_stack({{77, 1}}), 1, 1, false}});
    EXPECT_NE(std::find(sink.log.begin(), sink.log.end(), "py 1<-0 code 77"), sink.log.end());
}

namespace {
// The engine while sampling: what it counts, what it tells a sink.
class SampledEngineTest : public ::testing::Test {
  protected:
    struct CountingSink : RecordingSink {
        std::vector<std::pair<uint64_t, uint64_t>> allocs;  // (bytes, count)
        std::vector<std::pair<uint64_t, uint64_t>> frees;
        uint32_t on_alloc(const AllocationEvent& e) override {
            allocs.emplace_back(e.size, e.count);
            return 7;
        }
        void on_free(const DeallocationEvent& e) override { frees.emplace_back(e.size, e.count); }
    };
    CountingSink sink;
    SamplingConfig config;
    void SetUp() override {
        config.mode = SamplingMode::kSizeRanges;
        config.add_range(1000, 0.25);  // weight 4: small blocks stand for 4
        config.seed = 42;
        ASSERT_TRUE(engine().start(64, &sink, false, config));
    }
    void TearDown() override {
        std::vector<FrameKey> unpin;
        engine().stop(&unpin);
    }
};
}  // namespace

TEST_F(SampledEngineTest, CountsEstimatesAndTellsTheSinkTheWeights) {
    std::vector<FrameKey> stack{{20, 2}};
    engine().record_alloc({.address = 0x1000, .size = 100, .stacks = {with_stack(stack), 1, 1, true}});
    engine().record_alloc({.address = 0x2000, .size = 5000, .stacks = {with_stack(stack), 1, 1, true}});
    // An mmap of a small size would weigh 4 if sampled; it is recorded exactly.
    engine().record_alloc({.address = 0x3000, .size = 500, .allocator = Allocator::kMmap,
                           .stacks = {with_stack(stack), 1, 1, true}});
    ASSERT_EQ(sink.allocs.size(), 3u);
    EXPECT_EQ(sink.allocs[0], std::make_pair(uint64_t{400}, uint64_t{4}));
    EXPECT_EQ(sink.allocs[1], std::make_pair(uint64_t{5000}, uint64_t{1}));
    EXPECT_EQ(sink.allocs[2], std::make_pair(uint64_t{500}, uint64_t{1}));
    uint64_t current = 0, peak = 0;
    engine().traced_memory(&current, &peak);
    EXPECT_EQ(current, 400u + 5000u + 500u);
    // Frees give back exactly what was counted, weights included.
    EXPECT_TRUE(engine().record_free(0, 0x1000));
    EXPECT_FALSE(engine().record_free(0, 0x9000));  // never recorded: ruled out by the filter or the table
    EXPECT_TRUE(engine().record_munmap(0x3000, 100));  // partial: 400 bytes stay
    engine().traced_memory(&current, &peak);
    EXPECT_EQ(current, 5000u + 400u);
    ASSERT_EQ(sink.frees.size(), 2u);
    EXPECT_EQ(sink.frees[0], std::make_pair(uint64_t{400}, uint64_t{4}));
    EXPECT_EQ(sink.frees[1].first, 100u);
    EXPECT_TRUE(engine().record_munmap(0x3000 + 100, 400));
    EXPECT_TRUE(engine().record_free(0, 0x2000));
    engine().traced_memory(&current, &peak);
    EXPECT_EQ(current, 0u);
    EXPECT_EQ(peak, 5900u);
}

TEST_F(CaptureTest, MunmapReleasesExactlyThePagesItCovers) {
    struct PieceSink : RecordingSink {
        struct Released {
            uint64_t address, size, count;
            Unmapped how;
            uint32_t kept;
            bool operator==(const Released&) const = default;
        };
        std::vector<Released> released;
        void on_free(const DeallocationEvent& e) override {
            released.push_back(Released{e.address, e.size, e.count, e.how, e.block.sink_state});
        }
    };
    std::vector<FrameKey> unpin;
    engine().stop(&unpin);
    PieceSink pieces;
    ASSERT_TRUE(engine().start(64, &pieces, false));
    constexpr uint64_t P = 4096, A = 0x100000, B = A + 8 * P;
    auto current = [] {
        uint64_t now = 0, peak = 0;
        engine().traced_memory(&now, &peak);
        return now;
    };
    engine().record_alloc({.address = A, .size = 8 * P, .allocator = Allocator::kMmap,
                           .stacks = {with_stack({{1, 1}}), 1, 1, true}});
    engine().record_alloc({.address = B, .size = 4 * P, .allocator = Allocator::kMmap,
                           .stacks = {with_stack({{1, 1}}), 1, 1, true}});
    const uint32_t kept_a = 8 * P + 1000, kept_b = 4 * P + 1000;  // RecordingSink's block states
    using R = PieceSink::Released;
    // A hole in A: two pieces of it stay.
    EXPECT_TRUE(engine().record_munmap(A + 2 * P, 2 * P));
    EXPECT_EQ(pieces.released.back(), (R{A + 2 * P, 2 * P, 0, Unmapped::kHole, kept_a}));
    EXPECT_EQ(current(), 10 * P);
    // Across A's second piece and into B: the end of one, the start of the other.
    pieces.released.clear();
    EXPECT_TRUE(engine().record_munmap(A + 6 * P, 4 * P));
    EXPECT_EQ(pieces.released, (std::vector<R>{{A + 6 * P, 2 * P, 0, Unmapped::kPart, kept_a},
                                               {B, 2 * P, 0, Unmapped::kPart, kept_b}}));
    EXPECT_EQ(current(), 6 * P);
    // A's first piece, whole: a block less.
    pieces.released.clear();
    EXPECT_TRUE(engine().record_munmap(A - P, 3 * P));
    EXPECT_EQ(pieces.released, (std::vector<R>{{A, 2 * P, 1, Unmapped::kWhole, kept_a}}));
    EXPECT_EQ(current(), 4 * P);
    EXPECT_FALSE(engine().record_munmap(A, 2 * P));  // nothing mapped there any more
    // A mapping made over part of a live one (MAP_FIXED) replaces that part.
    pieces.released.clear();
    engine().record_alloc({.address = A + 5 * P, .size = 2 * P, .allocator = Allocator::kMmap,
                           .stacks = {with_stack({{1, 1}}), 1, 1, true}});
    EXPECT_EQ(pieces.released, (std::vector<R>{{A + 5 * P, P, 0, Unmapped::kPart, kept_a}}));
    EXPECT_EQ(current(), 4 * P - P + 2 * P);
    BlockInfo info;
    ASSERT_TRUE(engine().find(0, A + 4 * P, &info));  // what is left of A: one page
    EXPECT_EQ(info.size, P);
    std::vector<TraceRecord> traces;
    engine().collect(&traces);
    uint64_t total = 0;
    for (const TraceRecord& trace : traces) total += trace.info.size;
    EXPECT_EQ(traces.size(), 3u);  // A's piece, C, B's piece
    EXPECT_EQ(total, current());
    engine().stop(&unpin);
    ASSERT_TRUE(engine().start(64, &sink, true));  // TearDown stops it
}
