#include <gtest/gtest.h>

#include <vector>

#include "stack/stack_trie.h"

using heapscope::FrameKey;
using heapscope::StackTrie;

namespace {
uint32_t intern_stack(StackTrie& trie, const std::vector<FrameKey>& outermost_first) {
    uint32_t node = StackTrie::kRoot;
    for (const FrameKey& frame : outermost_first) {
        bool created;
        node = trie.intern(node, frame, &created);
    }
    return node;
}
}  // namespace

TEST(StackTrie, SameStackSameId) {
    StackTrie trie;
    uint32_t a = intern_stack(trie, {{1, 10}, {2, 20}, {3, 30}});
    uint32_t b = intern_stack(trie, {{1, 10}, {2, 20}, {3, 30}});
    EXPECT_EQ(a, b);
    EXPECT_EQ(trie.node_count(), 4u);  // root + 3 frames, stored once
}

TEST(StackTrie, SharedCallersAreStoredOnce) {
    StackTrie trie;
    uint32_t a = intern_stack(trie, {{1, 10}, {2, 20}, {3, 30}});
    uint32_t b = intern_stack(trie, {{1, 10}, {2, 20}, {4, 40}});
    EXPECT_NE(a, b);
    EXPECT_EQ(trie.node_count(), 5u);
    EXPECT_EQ(trie.node(a).parent, trie.node(b).parent);
    EXPECT_EQ(trie.node(a).depth, 3u);
}

TEST(StackTrie, SameFrameUnderDifferentCallersDiffers) {
    StackTrie trie;
    uint32_t a = intern_stack(trie, {{1, 10}, {3, 30}});
    uint32_t b = intern_stack(trie, {{2, 20}, {3, 30}});
    EXPECT_NE(a, b);
}

TEST(StackTrie, WalkBackGivesInnermostFirst) {
    StackTrie trie;
    uint32_t id = intern_stack(trie, {{1, 10}, {2, 20}, {3, 30}});
    std::vector<uintptr_t> codes;
    for (uint32_t n = id; n != StackTrie::kRoot; n = trie.node(n).parent) codes.push_back(trie.node(n).frame.code);
    EXPECT_EQ(codes, (std::vector<uintptr_t>{3, 2, 1}));
}

TEST(StackTrie, FindDoesNotCreate) {
    StackTrie trie;
    EXPECT_EQ(trie.find(StackTrie::kRoot, FrameKey{1, 1}), StackTrie::kNoNode);
    EXPECT_EQ(trie.node_count(), 1u);
    bool created;
    uint32_t id = trie.intern(StackTrie::kRoot, FrameKey{1, 1}, &created);
    EXPECT_TRUE(created);
    EXPECT_EQ(trie.find(StackTrie::kRoot, FrameKey{1, 1}), id);
    trie.intern(StackTrie::kRoot, FrameKey{1, 1}, &created);
    EXPECT_FALSE(created);
}

TEST(StackTrie, GrowsPastInitialCapacityAndClears) {
    StackTrie trie;
    std::vector<uint32_t> ids;
    for (uintptr_t i = 0; i < 50000; ++i) {
        bool created;
        ids.push_back(trie.intern(StackTrie::kRoot, FrameKey{i, i * 3}, &created));
    }
    for (uintptr_t i = 0; i < 50000; ++i) EXPECT_EQ(trie.find(StackTrie::kRoot, FrameKey{i, i * 3}), ids[i]);
    EXPECT_EQ(trie.node_count(), 50001u);
    trie.clear();
    EXPECT_EQ(trie.node_count(), 1u);
    EXPECT_EQ(trie.find(StackTrie::kRoot, FrameKey{5, 15}), StackTrie::kNoNode);
}
