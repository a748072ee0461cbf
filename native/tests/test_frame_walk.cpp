// walk_frames with a chain must give exactly what a plain walk gives, and
// must never read a frame that is no longer on the stack, however the stack
// changed since the chain was made: frames returned and new ones made at the
// same addresses, generator-like frames resumed elsewhere, entry markers.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "stack/frame_anchors.h"
#include "stack/frame_walk.h"

using heapscope::FrameChain;
using heapscope::FrameKey;
using heapscope::FrameRole;

namespace {

struct TestFrame {
    const TestFrame* previous = nullptr;
    uintptr_t code = 0;
    uintptr_t instr = 0;
    FrameRole role = FrameRole::kKept;
    bool live = false;  // on the stack now; a walk must read only live frames
    uintptr_t identity = 0;  // the call's frame object, if it has one (anchored walks)
};

int g_dead_reads = 0;

struct TestFrames {
    using Frame = TestFrame;
    static const Frame* previous(const Frame* frame) {
        if (!frame->live) ++g_dead_reads;
        return frame->previous;
    }
    static FrameRole read(const Frame* frame, bool, FrameKey* key) {
        if (!frame->live) ++g_dead_reads;
        *key = FrameKey{frame->code, frame->instr};
        return frame->role;
    }
};

struct Walk {
    std::vector<FrameKey> frames;
    uint32_t total_depth = 0;
    bool operator==(const Walk& other) const { return frames == other.frames && total_depth == other.total_depth; }
};

template <class Traits = TestFrames>
Walk walk(const TestFrame* top, uint32_t limit, FrameChain* chain) {
    Walk result;
    result.frames.resize(limit);
    uint32_t stored = heapscope::walk_frames<Traits>(top, result.frames.data(), limit, &result.total_depth,
                                                      false, chain);
    result.frames.resize(stored);
    return result;
}

// A thread's stack: frames are taken from a fixed pool, lowest free slot
// first, so that a frame made after a return lands where the returned one was.
class Program {
  public:
    explicit Program(size_t slots) : pool_(slots) {}
    const TestFrame* top() const { return stack_.empty() ? nullptr : stack_.back(); }
    size_t depth() const { return stack_.size(); }
    void call(uintptr_t code, uintptr_t instr, FrameRole role = FrameRole::kKept) {
        TestFrame* frame = nullptr;
        for (auto& slot : pool_) {
            if (!slot.live) {
                frame = &slot;
                break;
            }
        }
        ASSERT_NE(frame, nullptr);
        *frame = TestFrame{top(), code, instr, role, true};
        stack_.push_back(frame);
    }
    // With `object_survives`, something else still holds the frame's object
    // (a traceback, say), which outlives the call.
    void ret(bool object_survives = false) {
        TestFrame* frame = stack_.back();
        frame->live = false;
        if (frame->identity) {
            if (object_survives) {
                survivors_.push_back(frame->identity);
            } else {
                free_identity(frame->identity);
            }
        }
        stack_.pop_back();
    }
    void free_survivors() {
        for (uintptr_t identity : survivors_) free_identity(identity);
        survivors_.clear();
    }
    void move_top(uintptr_t instr) { stack_.back()->instr = instr; }
    // Gives the `count` innermost kept frames a frame object, as CPython
    // makes one on demand; freed objects are reused last-freed first, so a
    // later call at a returned frame's address often gets its object too.
    void give_identities(size_t count) {
        for (auto frame = stack_.rbegin(); frame != stack_.rend() && count > 0; ++frame, --count) {
            if ((*frame)->identity || (*frame)->role != FrameRole::kKept) continue;
            if (free_identities_.empty()) {
                (*frame)->identity = next_identity_ += 16;
            } else {
                (*frame)->identity = free_identities_.back();
                free_identities_.pop_back();
            }
        }
    }

  private:
    // As the object allocator's free hook reports it.
    void free_identity(uintptr_t identity) {
        heapscope::frame_anchors::block_freed(identity);
        free_identities_.push_back(identity);
    }

    std::vector<TestFrame> pool_;
    std::vector<TestFrame*> stack_;
    std::vector<uintptr_t> free_identities_;
    std::vector<uintptr_t> survivors_;
    uintptr_t next_identity_ = 0x10000;
};

// 20,000 random changes of a 400-slot program that starts 150 frames deep:
// calls, returns, moves of the top frame, entry markers, skipped and ignored
// frames, and now and then a generator frame (they live elsewhere) resumed on
// top of whatever frame runs, at its own address, then gone again.
class RandomStackChanges {
  public:
    // `most`: up to this many changes between two walks.
    RandomStackChanges(std::mt19937_64& random, uint32_t most = 1)
        : random_(random), program_(400), generators_(4), most_(most) {
        for (int i = 0; i < 150; ++i) program_.call(1 + random_() % 4, random_() % 3);
    }
    // One to `most` changes; `leaves` sees each frame about to return or
    // yield. Returns the frame to walk from.
    template <typename Leaves>
    const TestFrame* step(Leaves&& leaves) {
        finish(leaves);
        const uint64_t changes = most_ > 1 ? 1 + random_() % most_ : 1;
        for (uint64_t change = 0; change < changes; ++change) change_once(leaves);
        if (random_() % 8 == 0) {
            generator_ = &generators_[random_() % generators_.size()];
            *generator_ = TestFrame{program_.top(), 50 + random_() % 2, random_() % 3, FrameRole::kKept, true};
            return generator_;
        }
        return program_.top();
    }
    // The generator frame of the last step, if any, yields.
    template <typename Leaves>
    void finish(Leaves&& leaves) {
        if (!generator_) return;
        leaves(generator_);
        generator_->live = false;
        generator_ = nullptr;
    }

  private:
    template <typename Leaves>
    void change_once(Leaves&& leaves) {
        const uint64_t what = random_() % 100;
        if (what < 30 && program_.depth() > 1) {
            leaves(program_.top());
            program_.ret(random_() % 4 == 0);
        } else if (what < 60 && program_.depth() < 390) {
            const uint64_t kind = random_() % 10;
            FrameRole role = kind == 0 ? FrameRole::kEntry : kind == 1 ? FrameRole::kSkipped
                           : kind == 2 ? FrameRole::kIgnored : FrameRole::kKept;
            program_.call(1 + random_() % 4, random_() % 3, role);
            if (random_() % 2) program_.give_identities(1);
        } else if (what < 80 && program_.depth() > 0) {
            program_.move_top(random_() % 3);
        } else if (what < 85) {
            program_.give_identities(random_() % 24);
        } else if (what < 87) {
            program_.free_survivors();
        }
    }

    std::mt19937_64& random_;
    Program program_;
    std::vector<TestFrame> generators_;
    uint32_t most_;
    TestFrame* generator_ = nullptr;
};

}  // namespace

TEST(FrameWalk, WithoutAChainIsAPlainWalk) {
    Program program(16);
    for (uintptr_t i = 1; i <= 5; ++i) program.call(i, 10 * i);
    Walk all = walk(program.top(), 8, nullptr);
    EXPECT_EQ(all.total_depth, 5u);
    ASSERT_EQ(all.frames.size(), 5u);
    EXPECT_EQ(all.frames[0], (FrameKey{5, 50}));
    EXPECT_EQ(all.frames[4], (FrameKey{1, 10}));
    Walk cut = walk(program.top(), 2, nullptr);
    EXPECT_EQ(cut.total_depth, 5u);
    EXPECT_EQ(cut.frames.size(), 2u);
}

TEST(FrameWalk, NewCallsAtTheAddressesOfReturnedOnesAreSeen) {
    // main -> a -> x, then everything above main returns and main -> b -> x
    // is made at the same addresses, x at the same position: the outer part
    // (b, not a) must come from the frames, not from the chain.
    FrameChain chain;
    ASSERT_TRUE(heapscope::reserve_frame_chain(&chain, 64));
    Program program(64);
    program.call(1, 100);       // main
    program.call(2, 200);       // a
    program.call(9, 900);       // x
    walk(program.top(), 64, &chain);
    program.ret();
    program.ret();
    program.call(3, 300);       // b, where a was
    program.call(9, 900);       // x, where x was
    Walk seen = walk(program.top(), 64, &chain);
    EXPECT_EQ(seen, walk(program.top(), 64, nullptr));
    EXPECT_EQ(seen.frames[1], (FrameKey{3, 300}));
    EXPECT_EQ(g_dead_reads, 0);
    heapscope::release_frame_chain(&chain);
}

TEST(FrameWalk, RandomChangesGiveWhatAPlainWalkGives) {
    std::mt19937_64 random(17);
    for (uint32_t limit : {1u, 5u, 64u, 1024u}) {
        for (uint32_t chain_capacity : {0u, 4u, 300u}) {
            FrameChain chain;
            if (chain_capacity) {
                ASSERT_TRUE(heapscope::reserve_frame_chain(&chain, chain_capacity));
            }
            RandomStackChanges changes(random);
            auto leaves = [](const TestFrame*) {};
            for (int event = 0; event < 20000; ++event) {
                const TestFrame* top = changes.step(leaves);
                ASSERT_EQ(walk(top, limit, &chain), walk(top, limit, nullptr))
                    << "limit " << limit << ", chain " << chain_capacity << ", event " << event;
                EXPECT_LE(chain.count, chain.capacity);
            }
            EXPECT_EQ(g_dead_reads, 0);
            heapscope::release_frame_chain(&chain);
        }
    }
}

TEST(FrameWalk, ChainRemembersWhatItMetAndHowManyItWanted) {
    FrameChain chain;
    ASSERT_TRUE(heapscope::reserve_frame_chain(&chain, 4));
    Program program(16);
    for (uintptr_t i = 1; i <= 10; ++i) program.call(i, i);
    walk(program.top(), 64, &chain);
    EXPECT_EQ(chain.count, 4u);   // the innermost frames, as many as fit
    EXPECT_EQ(chain.wanted, 10u);
    EXPECT_EQ(chain.addresses[0], reinterpret_cast<uintptr_t>(program.top()));
    ASSERT_TRUE(heapscope::reserve_frame_chain(&chain, 16));
    EXPECT_EQ(chain.count, 0u);   // growing forgets the last walk
    heapscope::release_frame_chain(&chain);
}

namespace {
// Frames of calls identified by their frame object (as on 3.11+): a live kept
// frame with one may be an anchor.
struct AnchoredFrames : TestFrames {
    static uintptr_t anchor_identity(const Frame* frame) {
        return frame->live && frame->role == FrameRole::kKept ? frame->identity : 0;
    }
};
}  // namespace

TEST(FrameWalk, AnchoredWalksGiveWhatAPlainWalkGives) {
    // Random calls, returns, moves of the top frame, entry markers, skipped and
    // ignored frames, generator frames resumed on top of any stack, frame
    // objects made on demand, some outliving their call, and reused once
    // freed (Program reports each free, as the object allocator's hook does).
    namespace anchors = heapscope::frame_anchors;
    anchors::enable(true);
    std::mt19937_64 random(23);
    for (uint32_t limit : {1u, 5u, 64u, 1024u}) {
        FrameChain chain;
        ASSERT_TRUE(heapscope::reserve_frame_chain(&chain, 512));
        // Up to 12 changes between two walks: an anchor can return, and a
        // later call take both its address and its freed frame object,
        // before the next walk; only the report of the free keeps the walk
        // from copying a stale tail. A later call at the address of one whose
        // object outlived it is told apart by the object.
        RandomStackChanges changes(random, 12);
        uint64_t anchored = 0;
        auto leaves = [](const TestFrame*) {};
        for (int event = 0; event < 20000; ++event) {
            const TestFrame* top = changes.step(leaves);
            ASSERT_EQ(walk<AnchoredFrames>(top, limit, &chain), walk(top, limit, nullptr))
                << "limit " << limit << ", event " << event;
            anchored += chain.anchored;
        }
        changes.finish(leaves);
        EXPECT_GT(anchored, 1000u) << "limit " << limit;  // else this would test only full walks
        EXPECT_EQ(g_dead_reads, 0);
        heapscope::release_frame_chain(&chain);
    }
    anchors::enable(false);
}

TEST(FrameAnchors, AFreedFrameObjectFellsOnlyItsAnchor) {
    namespace anchors = heapscope::frame_anchors;
    anchors::enable(true);
    uint32_t a = 0, b = 0;
    ASSERT_TRUE(anchors::hold(&a, 0x1000));
    ASSERT_TRUE(anchors::hold(&b, 0x2000));
    EXPECT_NE(a, b);
    anchors::block_freed(0x3000);
    EXPECT_TRUE(anchors::stands(a, 0x1000));
    anchors::block_freed(0x1000);
    EXPECT_FALSE(anchors::stands(a, 0x1000));
    EXPECT_TRUE(anchors::stands(b, 0x2000));
    ASSERT_TRUE(anchors::hold(&b, 0x4000));  // re-armed: the old block no longer matters
    EXPECT_FALSE(anchors::stands(b, 0x2000));
    EXPECT_TRUE(anchors::stands(b, 0x4000));
    anchors::enable(false);  // a session's end fells them all
    EXPECT_FALSE(anchors::stands(b, 0x4000));
    anchors::release(&a);
    anchors::release(&b);
    EXPECT_EQ(a, 0u);
}
